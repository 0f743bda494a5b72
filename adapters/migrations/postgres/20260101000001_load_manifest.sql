-- The load manifest (contract 2): one row per batch loaded, written in the load's own transaction,
-- so a batch is either loaded with its manifest row or not at all. The importer skips a batch whose
-- (key, sha256) is here; a second loader racing on the same batch fails on the unique constraint,
-- retries, and then finds the row.
CREATE TABLE microbatch_manifest (
    "key"           text        NOT NULL,
    sha256          text        NOT NULL,
    table_name      text        NOT NULL,
    "rows"          bigint      NOT NULL,
    inserted        bigint      NOT NULL,
    shard           text        NOT NULL,
    first_position  text        NOT NULL,
    last_position   text        NOT NULL,
    catalog_version text        NOT NULL,
    min_received_at timestamptz NOT NULL,
    max_received_at timestamptz NOT NULL,
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT microbatch_manifest_key_sha256 UNIQUE ("key", sha256)
);

-- Freshness per table: the latest loads of a table.
CREATE INDEX microbatch_manifest_table_loaded_at ON microbatch_manifest (table_name, loaded_at);
