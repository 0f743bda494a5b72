CREATE SCHEMA IF NOT EXISTS "analytics";
CREATE TABLE IF NOT EXISTS "analytics"."microbatch_migrations" ("version" BIGINT NOT NULL, "name" VARCHAR(256) NOT NULL, "applied_at" TIMESTAMPTZ NOT NULL);
-- a fresh schema
LOCK "analytics"."microbatch_migrations";
CREATE TABLE IF NOT EXISTS "analytics"."microbatch_manifest" (
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
);
INSERT INTO "analytics"."microbatch_migrations" VALUES (20261202000001, 'load_manifest', '2026-12-02T12:00:00Z');
CREATE TABLE IF NOT EXISTS "analytics"."facts" ("_event_id" VARCHAR(65535) NOT NULL, "_row_index" BIGINT NOT NULL, "_received_at" TIMESTAMPTZ NOT NULL, "_shard" VARCHAR(65535) NOT NULL, "_sequence" VARCHAR(65535) NOT NULL, "_sub_sequence" BIGINT NOT NULL, "txt" VARCHAR(65535), "n" BIGINT, "x" DOUBLE PRECISION, "flag" BOOLEAN, "at" TIMESTAMPTZ, "day" DATE, "doc" VARCHAR(65535)) DISTSTYLE AUTO SORTKEY ("_received_at");
CREATE TABLE IF NOT EXISTS "analytics"."profiles" ("_event_id" VARCHAR(65535) NOT NULL, "_row_index" BIGINT NOT NULL, "_received_at" TIMESTAMPTZ NOT NULL, "_shard" VARCHAR(65535) NOT NULL, "_sequence" VARCHAR(65535) NOT NULL, "_sub_sequence" BIGINT NOT NULL, "id" VARCHAR(65535) NOT NULL, "name" VARCHAR(65535), "score" BIGINT) DISTSTYLE AUTO SORTKEY ("id");
-- a later start, one column new in the catalog
LOCK "analytics"."microbatch_migrations";
ALTER TABLE "analytics"."facts" ADD COLUMN "doc" VARCHAR(65535);
