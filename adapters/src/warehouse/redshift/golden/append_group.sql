BEGIN;
LOCK "analytics"."microbatch_manifest";
CREATE TEMP TABLE "microbatch_group" ("key" VARCHAR(1024) NOT NULL, "sha256" CHAR(64) NOT NULL, "table_name" VARCHAR(127) NOT NULL, "rows" BIGINT NOT NULL, "inserted" BIGINT NOT NULL, "shard" VARCHAR(256) NOT NULL, "first_position" VARCHAR(256) NOT NULL, "last_position" VARCHAR(256) NOT NULL, "catalog_version" VARCHAR(256) NOT NULL, "min_received_at" TIMESTAMPTZ NOT NULL, "max_received_at" TIMESTAMPTZ NOT NULL, "refused" BIGINT NOT NULL, "loaded_at" TIMESTAMPTZ NOT NULL, "first_sequence" VARCHAR(128) NOT NULL, "first_sub" BIGINT NOT NULL, "last_sequence" VARCHAR(128) NOT NULL, "last_sub" BIGINT NOT NULL, "ordinal" INTEGER NOT NULL);
INSERT INTO "microbatch_group" VALUES ('loads/facts/2026/12/02/12/s-1-2.csv.gz', '12b5736baa7b17e712b5736baa7b17e712b5736baa7b17e712b5736baa7b17e7', 'facts', 1, 0, 'shardId-000000000000', '100:1', '100:1', 'test', '2024-05-01T11:00:00.000000Z', '2024-05-01T12:00:00.000001Z', 0, '2026-12-02T12:00:00.000000Z', '100', 1, '100', 1, 0), ('loads/facts/2026/12/02/12/s-3-4.csv.gz', 'f476d835a95708fbf476d835a95708fbf476d835a95708fbf476d835a95708fb', 'facts', 2, 0, 'shardId-000000000000', '100:2', '100:3', 'test', '2024-05-01T11:00:00.000000Z', '2024-05-01T12:00:00.000001Z', 0, '2026-12-02T12:00:00.000000Z', '100', 2, '100', 3, 1);
DELETE FROM "microbatch_group" USING "analytics"."microbatch_manifest" AS m WHERE m."key" = "microbatch_group"."key" AND m."sha256" = "microbatch_group"."sha256";
CREATE TEMP TABLE "microbatch_stage_0" (LIKE "analytics"."facts");
COPY "microbatch_stage_0" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") FROM 's3://events-bucket/copy-manifests/facts/b7acfb5c55715e700d27d0cc27d61f4d.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/microbatch-copy' MANIFEST FORMAT AS CSV NULL AS 'NULL' GZIP TIMEFORMAT 'auto' DATEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF;
SELECT 1 / (CASE WHEN pg_last_copy_count() = 3 THEN 1 ELSE 0 END);
CREATE TEMP TABLE "microbatch_new_0" AS SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM (SELECT CASE WHEN "_event_id" <> 'NULL' AND LTRIM("_event_id", CHR(92)) = 'NULL' THEN SUBSTRING("_event_id" FROM 2) ELSE "_event_id" END AS "_event_id", "_row_index", "_received_at", CASE WHEN "_shard" <> 'NULL' AND LTRIM("_shard", CHR(92)) = 'NULL' THEN SUBSTRING("_shard" FROM 2) ELSE "_shard" END AS "_shard", CASE WHEN "_sequence" <> 'NULL' AND LTRIM("_sequence", CHR(92)) = 'NULL' THEN SUBSTRING("_sequence" FROM 2) ELSE "_sequence" END AS "_sequence", "_sub_sequence", CASE WHEN "txt" <> 'NULL' AND LTRIM("txt", CHR(92)) = 'NULL' THEN SUBSTRING("txt" FROM 2) ELSE "txt" END AS "txt", "n", "x", "flag", "at", "day", "doc", ROW_NUMBER() OVER (PARTITION BY "_event_id", "_row_index" ORDER BY "_received_at") AS "microbatch_rank" FROM "microbatch_stage_0") AS s WHERE s."microbatch_rank" = 1 AND NOT EXISTS (SELECT 1 FROM "analytics"."facts" AS t WHERE t."_event_id" = s."_event_id" AND t."_row_index" = s."_row_index");
UPDATE "microbatch_group" SET "inserted" = c.n FROM (SELECT o."ordinal", COUNT(*) AS n FROM (SELECT MIN(g."ordinal") AS "ordinal" FROM "microbatch_new_0" AS r JOIN "microbatch_group" AS g ON r."_shard" = g."shard" AND (LENGTH(r."_sequence") > LENGTH(g."first_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."first_sequence") AND (r."_sequence" > g."first_sequence" OR (r."_sequence" = g."first_sequence" AND r."_sub_sequence" >= g."first_sub")))) AND (LENGTH(r."_sequence") < LENGTH(g."last_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."last_sequence") AND (r."_sequence" < g."last_sequence" OR (r."_sequence" = g."last_sequence" AND r."_sub_sequence" <= g."last_sub")))) WHERE g."key" IN ('loads/facts/2026/12/02/12/s-1-2.csv.gz', 'loads/facts/2026/12/02/12/s-3-4.csv.gz') GROUP BY r."_event_id", r."_row_index") AS o GROUP BY o."ordinal") AS c WHERE "microbatch_group"."ordinal" = c."ordinal";
INSERT INTO "analytics"."facts" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM "microbatch_new_0";
INSERT INTO "analytics"."microbatch_manifest" ("key", "sha256", "table_name", "rows", "inserted", "shard", "first_position", "last_position", "catalog_version", "min_received_at", "max_received_at", "refused", "loaded_at") SELECT "key", "sha256", "table_name", "rows", "inserted", "shard", "first_position", "last_position", "catalog_version", "min_received_at", "max_received_at", "refused", "loaded_at" FROM "microbatch_group";
SELECT "key", CAST("inserted" AS VARCHAR(32)) FROM "microbatch_group" ORDER BY "key";
DROP TABLE "microbatch_stage_0";
DROP TABLE "microbatch_new_0";
DROP TABLE "microbatch_group";
COMMIT;
-- s3://events-bucket/copy-manifests/facts/b7acfb5c55715e700d27d0cc27d61f4d.manifest
-- {
--   "entries": [
--     {
--       "mandatory": true,
--       "url": "s3://test-bucket/loads/facts/2026/12/02/12/s-1-2.csv.gz"
--     },
--     {
--       "mandatory": true,
--       "url": "s3://test-bucket/loads/facts/2026/12/02/12/s-3-4.csv.gz"
--     }
--   ]
-- }
