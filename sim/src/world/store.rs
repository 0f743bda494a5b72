//! An object store whose batch puts notify the queue, as S3 → SQS does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use microbatch_core::batch::BatchMetadata;
use microbatch_core::import::object_created_message;
use microbatch_core::ports::{Clock, ObjectStore, PortError, StoredObject};

use super::{MemQueue, lock};
use crate::clock::VirtualClock;

/// An in-memory bucket.
#[derive(Debug)]
pub struct MemStore {
    clock: VirtualClock,
    queue: std::sync::Arc<MemQueue>,
    objects: Mutex<BTreeMap<String, StoredObject>>,
    sequencer: Mutex<u64>,
}

impl MemStore {
    pub fn new(clock: VirtualClock, queue: std::sync::Arc<MemQueue>) -> Self {
        MemStore {
            clock,
            queue,
            objects: Mutex::new(BTreeMap::new()),
            sequencer: Mutex::new(0),
        }
    }

    /// Keys under a prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        lock(&self.objects)
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn object(&self, key: &str) -> Option<StoredObject> {
        lock(&self.objects).get(key).cloned()
    }
}

impl ObjectStore for MemStore {
    async fn put_batch(&self, key: &str, body: Vec<u8>, metadata: &BatchMetadata) -> Result<(), PortError> {
        let size = body.len() as u64;
        lock(&self.objects).insert(
            key.to_owned(),
            StoredObject {
                body,
                metadata: metadata.to_pairs(),
            },
        );
        let seq = {
            let mut s = lock(&self.sequencer);
            *s += 1;
            *s
        };
        self.queue.send(object_created_message(
            "sim-bucket",
            key,
            size,
            seq,
            self.clock.now(),
        ));
        Ok(())
    }

    async fn put(&self, key: &str, body: Vec<u8>, _content_type: &str) -> Result<(), PortError> {
        lock(&self.objects).insert(
            key.to_owned(),
            StoredObject {
                body,
                metadata: BTreeMap::new(),
            },
        );
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<StoredObject>, PortError> {
        Ok(lock(&self.objects).get(key).cloned())
    }
}
