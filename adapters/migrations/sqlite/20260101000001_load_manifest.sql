-- The load manifest (contract 2): one row per batch loaded, written in the load's own transaction,
-- so a batch is either loaded with its manifest row or not at all. Timestamps are UTC RFC 3339 text.
CREATE TABLE microbatch_manifest (
    "key"           TEXT    NOT NULL,
    sha256          TEXT    NOT NULL,
    table_name      TEXT    NOT NULL,
    "rows"          INTEGER NOT NULL,
    inserted        INTEGER NOT NULL,
    shard           TEXT    NOT NULL,
    first_position  TEXT    NOT NULL,
    last_position   TEXT    NOT NULL,
    catalog_version TEXT    NOT NULL,
    min_received_at TEXT    NOT NULL,
    max_received_at TEXT    NOT NULL,
    loaded_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT microbatch_manifest_key_sha256 UNIQUE ("key", sha256)
) STRICT;

CREATE INDEX microbatch_manifest_table_loaded_at ON microbatch_manifest (table_name, loaded_at);
