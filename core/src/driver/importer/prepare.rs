//! Reading one announced object and deciding on it: its metadata, its schema object, the load
//! manifest, the catalog and — when the warehouse loads from the bytes — its content, each
//! checked before anything is loaded.
//!
//! A warehouse that reads the object from the store itself ([`Warehouse::needs_body`] false) is
//! served the metadata alone (`HeadObject`): nothing is downloaded or decompressed here, and the
//! warehouse checks the row count from its own COPY.

use std::sync::Arc;

use super::{Importer, Verdict};
use crate::batch::{BatchMetadata, BatchSchema, MetadataError};
use crate::catalog::Table;
use crate::import::{
    DeadLetterReason, Decision, ImportInput, ObjectRef, WarehouseError, classify, decide, verify,
};
use crate::keys;
use crate::ports::{
    Clock, Entropy, LoadRequest, Message, ObjectLocation, ObjectReader, ObjectWriter, Observation, Observer,
    Queue, Warehouse,
};

/// A batch that passed every check, waiting to be loaded with the others of its receive.
pub(super) struct Ready<'n> {
    /// Its message's index in the receive.
    pub message: usize,
    pub object: &'n ObjectRef,
    pub location: ObjectLocation,
    pub metadata: BatchMetadata,
    pub schema: Arc<BatchSchema>,
    pub table: &'n Table,
    pub expected: Vec<String>,
    /// The uncompressed CSV, checked; `None` for a warehouse that reads the object itself.
    pub csv: Option<Vec<u8>>,
}

impl Ready<'_> {
    pub fn request<'r>(&'r self, skip_rows: &'r [u64]) -> LoadRequest<'r> {
        LoadRequest {
            location: &self.location,
            metadata: &self.metadata,
            table: self.table,
            columns: &self.schema.columns,
            body: self.csv.as_deref(),
            skip_rows,
        }
    }

    /// Bytes of CSV, for the group bound.
    pub fn size(&self) -> usize {
        self.metadata.csv_bytes as usize
    }
}

/// What [`Importer::prepare`] made of an object.
pub(super) enum Prepared<'n> {
    Load(Box<Ready<'n>>),
    Settled(Verdict),
}

fn dead(reason: DeadLetterReason) -> Verdict {
    Verdict::DeadLetter {
        code: reason.code(),
        reason: reason.to_string(),
    }
}

impl<'a, Q, O, W, C, E, B> Importer<'a, Q, O, W, C, E, B>
where
    Q: Queue,
    O: ObjectReader + ObjectWriter,
    W: Warehouse,
    C: Clock,
    E: Entropy,
    B: Observer,
{
    /// Reads one object and its metadata and decides on it; what passes every check (content
    /// included) is ready to load.
    pub(super) async fn prepare<'n>(
        &self,
        message: &Message,
        index: usize,
        object: &'n ObjectRef,
    ) -> Prepared<'n>
    where
        'a: 'n,
    {
        let location = object.location();
        let needs_body = self.warehouse.needs_body();
        let read = if needs_body {
            self.store
                .get(&location)
                .await
                .map(|o| o.map(|o| (o.metadata, Some(o.body))))
        } else {
            self.store.head(&location).await.map(|m| m.map(|m| (m, None)))
        };
        let (pairs, body) = match read {
            Ok(Some((pairs, body))) => (Some(pairs), body),
            Ok(None) => (None, None),
            Err(e) => {
                self.observer.observe(Observation::retry(&e));
                return Prepared::Settled(self.retry_verdict(message.receive_count));
            }
        };
        let metadata: Option<Result<BatchMetadata, MetadataError>> = pairs
            .as_ref()
            .map(|p| BatchMetadata::from_pairs(p.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        let schema = match &metadata {
            Some(Ok(meta)) => match self.schema(&location.bucket, meta).await {
                Ok(schema) => schema,
                Err(verdict) => return Prepared::Settled(verdict),
            },
            _ => None,
        };
        let table = match &metadata {
            Some(Ok(m)) => self.catalog.table_id(&m.table).map(|id| self.catalog.table(id)),
            _ => None,
        };
        let expected: Option<Vec<String>> = table.map(|t| t.column_names().map(str::to_owned).collect());
        let already_loaded = match &metadata {
            Some(Ok(m)) => match self.warehouse.is_loaded(&location.key, &m.sha256).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    return Prepared::Settled(self.after_failure(
                        message,
                        object,
                        metadata.as_ref(),
                        schema.as_ref(),
                        expected.as_deref(),
                        e,
                    ));
                }
            },
            _ => false,
        };
        let input = ImportInput {
            object,
            metadata: metadata.as_ref(),
            schema: schema.as_ref(),
            expected_columns: expected.as_deref(),
            catalog_version: self.catalog.version(),
            already_loaded,
            attempt: message.receive_count,
            last_error: None,
            now: self.clock.now(),
            draw: self.entropy.unit(),
        };
        match decide(&input, &self.config.backoff) {
            Decision::Load => {}
            other => return Prepared::Settled(self.verdict_of(&object.key, other)),
        }
        let (Some(Ok(metadata)), Some(Ok(schema)), Some(table), Some(expected)) =
            (metadata, schema, table, expected)
        else {
            return Prepared::Settled(Verdict::DeadLetter {
                code: "importer_bug",
                reason: "load decided without metadata or schema (importer bug)".into(),
            });
        };
        let csv = match body {
            None if needs_body => {
                return Prepared::Settled(Verdict::DeadLetter {
                    code: "importer_bug",
                    reason: "an object read without its body (importer bug)".into(),
                });
            }
            None => None,
            Some(stored) => {
                let csv = match metadata.compression.decompress(&stored, metadata.csv_bytes) {
                    Ok(csv) => csv,
                    Err(e) => return Prepared::Settled(dead(DeadLetterReason::Decompress(e))),
                };
                if let Err(e) = verify(&metadata, &csv) {
                    return Prepared::Settled(dead(DeadLetterReason::Content(e)));
                }
                Some(csv)
            }
        };
        Prepared::Load(Box::new(Ready {
            message: index,
            object,
            location,
            metadata,
            schema: Arc::new(schema),
            table,
            expected,
            csv,
        }))
    }

    /// The schema object `meta` names, from the cache or the store: `Ok(None)` when it is not
    /// there (yet), `Ok(Some(Err))` when it is not the one named; `Err` with the verdict when the
    /// store could not be read.
    async fn schema(
        &self,
        bucket: &str,
        meta: &BatchMetadata,
    ) -> Result<Option<Result<BatchSchema, MetadataError>>, Verdict> {
        let cache_key = (bucket.to_owned(), meta.columns_sha256.clone());
        if let Some(schema) = self
            .schemas
            .lock()
            .expect("schema cache")
            .get(&cache_key)
            .cloned()
            && schema.table == meta.table
        {
            return Ok(Some(Ok((*schema).clone())));
        }
        let location = ObjectLocation::new(bucket, keys::schema_key(&meta.table, &meta.columns_sha256));
        match self.store.get(&location).await {
            Ok(None) => Ok(None),
            Ok(Some(object)) => {
                let parsed = BatchSchema::from_json(&object.body, meta);
                if let Ok(schema) = &parsed {
                    self.schemas
                        .lock()
                        .expect("schema cache")
                        .insert(cache_key, Arc::new(schema.clone()));
                }
                Ok(Some(parsed))
            }
            Err(e) => {
                self.observer.observe(Observation::retry(&e));
                Err(self.retry_verdict(1))
            }
        }
    }

    /// What to do after the warehouse failed `object` with `error` (not a row's error, or a row's
    /// the importer could not isolate).
    pub(super) fn after_failure(
        &self,
        message: &Message,
        object: &ObjectRef,
        metadata: Option<&Result<BatchMetadata, MetadataError>>,
        schema: Option<&Result<BatchSchema, MetadataError>>,
        expected: Option<&[String]>,
        error: WarehouseError,
    ) -> Verdict {
        let transient = classify(&error) == crate::import::ErrorClass::Transient;
        self.observer.observe(Observation::LoadRetry {
            key: &object.key,
            attempt: message.receive_count,
            error: &error.to_string(),
            transient,
        });
        let input = ImportInput {
            object,
            metadata,
            schema,
            expected_columns: expected,
            catalog_version: self.catalog.version(),
            already_loaded: false,
            attempt: message.receive_count,
            last_error: Some(&error),
            now: self.clock.now(),
            draw: self.entropy.unit(),
        };
        self.verdict_of(&object.key, decide(&input, &self.config.backoff))
    }

    pub(super) fn verdict_of(&self, key: &str, decision: Decision) -> Verdict {
        match decision {
            Decision::Load => Verdict::Done,
            Decision::Skip { reason } => {
                self.observer.observe(Observation::LoadSkipped {
                    key,
                    reason: &reason.to_string(),
                });
                Verdict::Done
            }
            Decision::RetryAt { at, .. } => Verdict::RetryAt(at),
            Decision::DeadLetter { reason } => dead(reason),
        }
    }
}
