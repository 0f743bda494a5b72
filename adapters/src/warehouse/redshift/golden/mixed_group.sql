BEGIN;
LOCK "analytics"."microbatch_manifest";
CREATE TEMP TABLE "microbatch_group" ("key" VARCHAR(1024) NOT NULL, "sha256" CHAR(64) NOT NULL, "table_name" VARCHAR(127) NOT NULL, "rows" BIGINT NOT NULL, "inserted" BIGINT NOT NULL, "shard" VARCHAR(256) NOT NULL, "first_position" VARCHAR(256) NOT NULL, "last_position" VARCHAR(256) NOT NULL, "catalog_version" VARCHAR(256) NOT NULL, "min_received_at" TIMESTAMPTZ NOT NULL, "max_received_at" TIMESTAMPTZ NOT NULL, "refused" BIGINT NOT NULL, "loaded_at" TIMESTAMPTZ NOT NULL, "first_sequence" VARCHAR(128) NOT NULL, "first_sub" BIGINT NOT NULL, "last_sequence" VARCHAR(128) NOT NULL, "last_sub" BIGINT NOT NULL, "ordinal" INTEGER NOT NULL);
INSERT INTO "microbatch_group" VALUES ('loads/facts/a.csv', '12b5736baa7b17e712b5736baa7b17e712b5736baa7b17e712b5736baa7b17e7', 'facts', 1, 0, 'shardId-000000000000', '100:1', '100:1', 'test', '2024-05-01T11:00:00.000000Z', '2024-05-01T12:00:00.000001Z', 0, '2026-12-02T12:00:00.000000Z', '100', 1, '100', 1, 0), ('loads/profiles/e.csv', '326c1eb5f3426bfd326c1eb5f3426bfd326c1eb5f3426bfd326c1eb5f3426bfd', 'profiles', 1, 0, 'shardId-000000000000', '5:0', '5:0', 'test', '2024-05-01T11:00:00.000000Z', '2024-05-01T12:00:00.000001Z', 0, '2026-12-02T12:00:00.000000Z', '5', 0, '5', 0, 1), ('loads/facts/b.csv.gz', '70a14513a241203170a14513a241203170a14513a241203170a14513a2412031', 'facts', 1, 0, 'shardId-000000000000', '100:2', '100:2', 'test', '2024-05-01T11:00:00.000000Z', '2024-05-01T12:00:00.000001Z', 0, '2026-12-02T12:00:00.000000Z', '100', 2, '100', 2, 2), ('loads/facts/c.csv.zst', '7763b3d91ee8c34f7763b3d91ee8c34f7763b3d91ee8c34f7763b3d91ee8c34f', 'facts', 1, 0, 'shardId-000000000000', '100:3', '100:3', 'test', '2024-05-01T11:00:00.000000Z', '2024-05-01T12:00:00.000001Z', 0, '2026-12-02T12:00:00.000000Z', '100', 3, '100', 3, 3), ('loads/facts/d.csv', '1474d3afdfe6c7d51474d3afdfe6c7d51474d3afdfe6c7d51474d3afdfe6c7d5', 'facts', 1, 0, 'shardId-000000000000', '100:4', '100:4', 'test', '2024-05-01T11:00:00.000000Z', '2024-05-01T12:00:00.000001Z', 0, '2026-12-02T12:00:00.000000Z', '100', 4, '100', 4, 4);
DELETE FROM "microbatch_group" USING "analytics"."microbatch_manifest" AS m WHERE m."key" = "microbatch_group"."key" AND m."sha256" = "microbatch_group"."sha256";
CREATE TEMP TABLE "microbatch_stage_0" (LIKE "analytics"."facts");
COPY "microbatch_stage_0" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") FROM 's3://events-bucket/copy-manifests/facts/b14b09def718f6bd888d7111f057fbc5.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/microbatch-copy' MANIFEST FORMAT AS CSV NULL AS 'NULL' TIMEFORMAT 'auto' DATEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF;
SELECT 1 / (CASE WHEN pg_last_copy_count() = 1 THEN 1 ELSE 0 END);
CREATE TEMP TABLE "microbatch_new_0" AS SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM (SELECT CASE WHEN "_event_id" <> 'NULL' AND LTRIM("_event_id", CHR(92)) = 'NULL' THEN SUBSTRING("_event_id" FROM 2) ELSE "_event_id" END AS "_event_id", "_row_index", "_received_at", CASE WHEN "_shard" <> 'NULL' AND LTRIM("_shard", CHR(92)) = 'NULL' THEN SUBSTRING("_shard" FROM 2) ELSE "_shard" END AS "_shard", CASE WHEN "_sequence" <> 'NULL' AND LTRIM("_sequence", CHR(92)) = 'NULL' THEN SUBSTRING("_sequence" FROM 2) ELSE "_sequence" END AS "_sequence", "_sub_sequence", CASE WHEN "txt" <> 'NULL' AND LTRIM("txt", CHR(92)) = 'NULL' THEN SUBSTRING("txt" FROM 2) ELSE "txt" END AS "txt", "n", "x", "flag", "at", "day", "doc", ROW_NUMBER() OVER (PARTITION BY "_event_id", "_row_index" ORDER BY "_received_at") AS "microbatch_rank" FROM "microbatch_stage_0") AS s WHERE s."microbatch_rank" = 1 AND NOT EXISTS (SELECT 1 FROM "analytics"."facts" AS t WHERE t."_event_id" = s."_event_id" AND t."_row_index" = s."_row_index");
UPDATE "microbatch_group" SET "inserted" = c.n FROM (SELECT o."ordinal", COUNT(*) AS n FROM (SELECT MIN(g."ordinal") AS "ordinal" FROM "microbatch_new_0" AS r JOIN "microbatch_group" AS g ON r."_shard" = g."shard" AND (LENGTH(r."_sequence") > LENGTH(g."first_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."first_sequence") AND (r."_sequence" > g."first_sequence" OR (r."_sequence" = g."first_sequence" AND r."_sub_sequence" >= g."first_sub")))) AND (LENGTH(r."_sequence") < LENGTH(g."last_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."last_sequence") AND (r."_sequence" < g."last_sequence" OR (r."_sequence" = g."last_sequence" AND r."_sub_sequence" <= g."last_sub")))) WHERE g."key" IN ('loads/facts/a.csv') GROUP BY r."_event_id", r."_row_index") AS o GROUP BY o."ordinal") AS c WHERE "microbatch_group"."ordinal" = c."ordinal";
INSERT INTO "analytics"."facts" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM "microbatch_new_0";
CREATE TEMP TABLE "microbatch_stage_1" (LIKE "analytics"."profiles");
COPY "microbatch_stage_1" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "id", "name", "score") FROM 's3://events-bucket/copy-manifests/profiles/a6703778c8ddaec127790d72c17e6671.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/microbatch-copy' MANIFEST FORMAT AS CSV NULL AS 'NULL' TIMEFORMAT 'auto' DATEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF;
SELECT 1 / (CASE WHEN pg_last_copy_count() = 1 THEN 1 ELSE 0 END);
CREATE TEMP TABLE "microbatch_new_1" AS SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "id", "name", "score" FROM (SELECT CASE WHEN "_event_id" <> 'NULL' AND LTRIM("_event_id", CHR(92)) = 'NULL' THEN SUBSTRING("_event_id" FROM 2) ELSE "_event_id" END AS "_event_id", "_row_index", "_received_at", CASE WHEN "_shard" <> 'NULL' AND LTRIM("_shard", CHR(92)) = 'NULL' THEN SUBSTRING("_shard" FROM 2) ELSE "_shard" END AS "_shard", CASE WHEN "_sequence" <> 'NULL' AND LTRIM("_sequence", CHR(92)) = 'NULL' THEN SUBSTRING("_sequence" FROM 2) ELSE "_sequence" END AS "_sequence", "_sub_sequence", CASE WHEN "id" <> 'NULL' AND LTRIM("id", CHR(92)) = 'NULL' THEN SUBSTRING("id" FROM 2) ELSE "id" END AS "id", CASE WHEN "name" <> 'NULL' AND LTRIM("name", CHR(92)) = 'NULL' THEN SUBSTRING("name" FROM 2) ELSE "name" END AS "name", "score", ROW_NUMBER() OVER (PARTITION BY "id" ORDER BY "_received_at" DESC, LENGTH("_sequence") DESC, "_sequence" DESC, "_sub_sequence" DESC) AS "microbatch_rank" FROM "microbatch_stage_1") AS s WHERE s."microbatch_rank" = 1;
DELETE FROM "microbatch_new_1" USING "analytics"."profiles" AS stored WHERE stored."id" = "microbatch_new_1"."id" AND NOT ("microbatch_new_1"."_received_at" > stored."_received_at" OR ("microbatch_new_1"."_received_at" = stored."_received_at" AND (LENGTH("microbatch_new_1"."_sequence") > LENGTH(stored."_sequence") OR (LENGTH("microbatch_new_1"."_sequence") = LENGTH(stored."_sequence") AND ("microbatch_new_1"."_sequence" > stored."_sequence" OR ("microbatch_new_1"."_sequence" = stored."_sequence" AND "microbatch_new_1"."_sub_sequence" > stored."_sub_sequence"))))));
UPDATE "microbatch_group" SET "inserted" = c.n FROM (SELECT o."ordinal", COUNT(*) AS n FROM (SELECT MIN(g."ordinal") AS "ordinal" FROM "microbatch_new_1" AS r JOIN "microbatch_group" AS g ON r."_shard" = g."shard" AND (LENGTH(r."_sequence") > LENGTH(g."first_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."first_sequence") AND (r."_sequence" > g."first_sequence" OR (r."_sequence" = g."first_sequence" AND r."_sub_sequence" >= g."first_sub")))) AND (LENGTH(r."_sequence") < LENGTH(g."last_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."last_sequence") AND (r."_sequence" < g."last_sequence" OR (r."_sequence" = g."last_sequence" AND r."_sub_sequence" <= g."last_sub")))) WHERE g."key" IN ('loads/profiles/e.csv') GROUP BY r."_event_id", r."_row_index") AS o GROUP BY o."ordinal") AS c WHERE "microbatch_group"."ordinal" = c."ordinal";
DELETE FROM "analytics"."profiles" USING "microbatch_new_1" WHERE "analytics"."profiles"."id" = "microbatch_new_1"."id";
INSERT INTO "analytics"."profiles" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "id", "name", "score") SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "id", "name", "score" FROM "microbatch_new_1";
CREATE TEMP TABLE "microbatch_stage_2" (LIKE "analytics"."facts");
COPY "microbatch_stage_2" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") FROM 's3://events-bucket/copy-manifests/facts/9ed3b17c34e6623e272e553a28816490.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/microbatch-copy' MANIFEST FORMAT AS CSV NULL AS 'NULL' GZIP TIMEFORMAT 'auto' DATEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF;
SELECT 1 / (CASE WHEN pg_last_copy_count() = 1 THEN 1 ELSE 0 END);
CREATE TEMP TABLE "microbatch_new_2" AS SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM (SELECT CASE WHEN "_event_id" <> 'NULL' AND LTRIM("_event_id", CHR(92)) = 'NULL' THEN SUBSTRING("_event_id" FROM 2) ELSE "_event_id" END AS "_event_id", "_row_index", "_received_at", CASE WHEN "_shard" <> 'NULL' AND LTRIM("_shard", CHR(92)) = 'NULL' THEN SUBSTRING("_shard" FROM 2) ELSE "_shard" END AS "_shard", CASE WHEN "_sequence" <> 'NULL' AND LTRIM("_sequence", CHR(92)) = 'NULL' THEN SUBSTRING("_sequence" FROM 2) ELSE "_sequence" END AS "_sequence", "_sub_sequence", CASE WHEN "txt" <> 'NULL' AND LTRIM("txt", CHR(92)) = 'NULL' THEN SUBSTRING("txt" FROM 2) ELSE "txt" END AS "txt", "n", "x", "flag", "at", "day", "doc", ROW_NUMBER() OVER (PARTITION BY "_event_id", "_row_index" ORDER BY "_received_at") AS "microbatch_rank" FROM "microbatch_stage_2") AS s WHERE s."microbatch_rank" = 1 AND NOT EXISTS (SELECT 1 FROM "analytics"."facts" AS t WHERE t."_event_id" = s."_event_id" AND t."_row_index" = s."_row_index");
UPDATE "microbatch_group" SET "inserted" = c.n FROM (SELECT o."ordinal", COUNT(*) AS n FROM (SELECT MIN(g."ordinal") AS "ordinal" FROM "microbatch_new_2" AS r JOIN "microbatch_group" AS g ON r."_shard" = g."shard" AND (LENGTH(r."_sequence") > LENGTH(g."first_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."first_sequence") AND (r."_sequence" > g."first_sequence" OR (r."_sequence" = g."first_sequence" AND r."_sub_sequence" >= g."first_sub")))) AND (LENGTH(r."_sequence") < LENGTH(g."last_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."last_sequence") AND (r."_sequence" < g."last_sequence" OR (r."_sequence" = g."last_sequence" AND r."_sub_sequence" <= g."last_sub")))) WHERE g."key" IN ('loads/facts/b.csv.gz') GROUP BY r."_event_id", r."_row_index") AS o GROUP BY o."ordinal") AS c WHERE "microbatch_group"."ordinal" = c."ordinal";
INSERT INTO "analytics"."facts" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM "microbatch_new_2";
CREATE TEMP TABLE "microbatch_stage_3" (LIKE "analytics"."facts");
COPY "microbatch_stage_3" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") FROM 's3://events-bucket/copy-manifests/facts/8418a0d34381e21451d58f3e98344887.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/microbatch-copy' MANIFEST FORMAT AS CSV NULL AS 'NULL' ZSTD TIMEFORMAT 'auto' DATEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF;
SELECT 1 / (CASE WHEN pg_last_copy_count() = 1 THEN 1 ELSE 0 END);
CREATE TEMP TABLE "microbatch_new_3" AS SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM (SELECT CASE WHEN "_event_id" <> 'NULL' AND LTRIM("_event_id", CHR(92)) = 'NULL' THEN SUBSTRING("_event_id" FROM 2) ELSE "_event_id" END AS "_event_id", "_row_index", "_received_at", CASE WHEN "_shard" <> 'NULL' AND LTRIM("_shard", CHR(92)) = 'NULL' THEN SUBSTRING("_shard" FROM 2) ELSE "_shard" END AS "_shard", CASE WHEN "_sequence" <> 'NULL' AND LTRIM("_sequence", CHR(92)) = 'NULL' THEN SUBSTRING("_sequence" FROM 2) ELSE "_sequence" END AS "_sequence", "_sub_sequence", CASE WHEN "txt" <> 'NULL' AND LTRIM("txt", CHR(92)) = 'NULL' THEN SUBSTRING("txt" FROM 2) ELSE "txt" END AS "txt", "n", "x", "flag", "at", "day", "doc", ROW_NUMBER() OVER (PARTITION BY "_event_id", "_row_index" ORDER BY "_received_at") AS "microbatch_rank" FROM "microbatch_stage_3") AS s WHERE s."microbatch_rank" = 1 AND NOT EXISTS (SELECT 1 FROM "analytics"."facts" AS t WHERE t."_event_id" = s."_event_id" AND t."_row_index" = s."_row_index");
UPDATE "microbatch_group" SET "inserted" = c.n FROM (SELECT o."ordinal", COUNT(*) AS n FROM (SELECT MIN(g."ordinal") AS "ordinal" FROM "microbatch_new_3" AS r JOIN "microbatch_group" AS g ON r."_shard" = g."shard" AND (LENGTH(r."_sequence") > LENGTH(g."first_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."first_sequence") AND (r."_sequence" > g."first_sequence" OR (r."_sequence" = g."first_sequence" AND r."_sub_sequence" >= g."first_sub")))) AND (LENGTH(r."_sequence") < LENGTH(g."last_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."last_sequence") AND (r."_sequence" < g."last_sequence" OR (r."_sequence" = g."last_sequence" AND r."_sub_sequence" <= g."last_sub")))) WHERE g."key" IN ('loads/facts/c.csv.zst') GROUP BY r."_event_id", r."_row_index") AS o GROUP BY o."ordinal") AS c WHERE "microbatch_group"."ordinal" = c."ordinal";
INSERT INTO "analytics"."facts" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM "microbatch_new_3";
CREATE TEMP TABLE "microbatch_stage_4" (LIKE "analytics"."facts");
COPY "microbatch_stage_4" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") FROM 's3://events-bucket/copy-manifests/facts/80320b21f1307263ee9924e07645f9c5.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/microbatch-copy' MANIFEST FORMAT AS CSV NULL AS '' TIMEFORMAT 'auto' DATEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF;
SELECT 1 / (CASE WHEN pg_last_copy_count() = 1 THEN 1 ELSE 0 END);
CREATE TEMP TABLE "microbatch_new_4" AS SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM (SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc", ROW_NUMBER() OVER (PARTITION BY "_event_id", "_row_index" ORDER BY "_received_at") AS "microbatch_rank" FROM "microbatch_stage_4") AS s WHERE s."microbatch_rank" = 1 AND NOT EXISTS (SELECT 1 FROM "analytics"."facts" AS t WHERE t."_event_id" = s."_event_id" AND t."_row_index" = s."_row_index");
UPDATE "microbatch_group" SET "inserted" = c.n FROM (SELECT o."ordinal", COUNT(*) AS n FROM (SELECT MIN(g."ordinal") AS "ordinal" FROM "microbatch_new_4" AS r JOIN "microbatch_group" AS g ON r."_shard" = g."shard" AND (LENGTH(r."_sequence") > LENGTH(g."first_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."first_sequence") AND (r."_sequence" > g."first_sequence" OR (r."_sequence" = g."first_sequence" AND r."_sub_sequence" >= g."first_sub")))) AND (LENGTH(r."_sequence") < LENGTH(g."last_sequence") OR (LENGTH(r."_sequence") = LENGTH(g."last_sequence") AND (r."_sequence" < g."last_sequence" OR (r."_sequence" = g."last_sequence" AND r."_sub_sequence" <= g."last_sub")))) WHERE g."key" IN ('loads/facts/d.csv') GROUP BY r."_event_id", r."_row_index") AS o GROUP BY o."ordinal") AS c WHERE "microbatch_group"."ordinal" = c."ordinal";
INSERT INTO "analytics"."facts" ("_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc") SELECT "_event_id", "_row_index", "_received_at", "_shard", "_sequence", "_sub_sequence", "txt", "n", "x", "flag", "at", "day", "doc" FROM "microbatch_new_4";
INSERT INTO "analytics"."microbatch_manifest" ("key", "sha256", "table_name", "rows", "inserted", "shard", "first_position", "last_position", "catalog_version", "min_received_at", "max_received_at", "refused", "loaded_at") SELECT "key", "sha256", "table_name", "rows", "inserted", "shard", "first_position", "last_position", "catalog_version", "min_received_at", "max_received_at", "refused", "loaded_at" FROM "microbatch_group";
SELECT "key", CAST("inserted" AS VARCHAR(32)) FROM "microbatch_group" ORDER BY "key";
DROP TABLE "microbatch_stage_0";
DROP TABLE "microbatch_new_0";
DROP TABLE "microbatch_stage_1";
DROP TABLE "microbatch_new_1";
DROP TABLE "microbatch_stage_2";
DROP TABLE "microbatch_new_2";
DROP TABLE "microbatch_stage_3";
DROP TABLE "microbatch_new_3";
DROP TABLE "microbatch_stage_4";
DROP TABLE "microbatch_new_4";
DROP TABLE "microbatch_group";
COMMIT;
-- s3://events-bucket/copy-manifests/facts/b14b09def718f6bd888d7111f057fbc5.manifest
-- {
--   "entries": [
--     {
--       "mandatory": true,
--       "url": "s3://test-bucket/loads/facts/a.csv"
--     }
--   ]
-- }
-- s3://events-bucket/copy-manifests/profiles/a6703778c8ddaec127790d72c17e6671.manifest
-- {
--   "entries": [
--     {
--       "mandatory": true,
--       "url": "s3://test-bucket/loads/profiles/e.csv"
--     }
--   ]
-- }
-- s3://events-bucket/copy-manifests/facts/9ed3b17c34e6623e272e553a28816490.manifest
-- {
--   "entries": [
--     {
--       "mandatory": true,
--       "url": "s3://test-bucket/loads/facts/b.csv.gz"
--     }
--   ]
-- }
-- s3://events-bucket/copy-manifests/facts/8418a0d34381e21451d58f3e98344887.manifest
-- {
--   "entries": [
--     {
--       "mandatory": true,
--       "url": "s3://test-bucket/loads/facts/c.csv.zst"
--     }
--   ]
-- }
-- s3://events-bucket/copy-manifests/facts/80320b21f1307263ee9924e07645f9c5.manifest
-- {
--   "entries": [
--     {
--       "mandatory": true,
--       "url": "s3://test-bucket/loads/facts/d.csv"
--     }
--   ]
-- }
