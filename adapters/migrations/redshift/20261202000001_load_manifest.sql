-- The load manifest on Redshift (contract 2): one row per batch loaded, written by the load's own
-- script in its transaction. Redshift enforces no unique constraint, so uniqueness on
-- ("key", sha256) is the load script's doing: loaders take turns on `LOCK` of this table and skip
-- the batches it holds. `{schema}` is the warehouse's schema, quoted.
CREATE TABLE IF NOT EXISTS {schema}."microbatch_manifest" (
    "key"             VARCHAR(1024) NOT NULL,
    "sha256"          CHAR(64)      NOT NULL,
    "table_name"      VARCHAR(127)  NOT NULL,
    "rows"            BIGINT        NOT NULL,
    "inserted"        BIGINT        NOT NULL,
    "shard"           VARCHAR(256)  NOT NULL,
    "first_position"  VARCHAR(256)  NOT NULL,
    "last_position"   VARCHAR(256)  NOT NULL,
    "catalog_version" VARCHAR(256)  NOT NULL,
    "min_received_at" TIMESTAMPTZ   NOT NULL,
    "max_received_at" TIMESTAMPTZ   NOT NULL,
    "refused"         BIGINT        NOT NULL,
    "loaded_at"       TIMESTAMPTZ   NOT NULL
)
