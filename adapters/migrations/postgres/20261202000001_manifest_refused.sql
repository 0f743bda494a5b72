-- How many rows of a batch the warehouse refused (they are in rejected/rows/ with its reasons):
-- the batch was loaded without them, and a redelivery skips it by its manifest row as usual.
ALTER TABLE microbatch_manifest ADD COLUMN refused bigint NOT NULL DEFAULT 0;
