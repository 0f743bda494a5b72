//! The local object store: a directory with objects at their keys, and the batch metadata of a
//! load object in a `<key>.meta.json` sidecar (the [`BatchMetadata::to_pairs`] map).
//!
//! Every file is written to a temporary name in its directory, fsynced, renamed over its key, and
//! the directory fsynced, so a reader (or a restart) sees the old file or the new one, never a
//! part. A batch writes its sidecar first and its object second: an object that is there always
//! has its metadata. Then the store sends the S3 `ObjectCreated:Put` notification body to its
//! [`Notifier`]. A crash between the write and the notification loses nothing: the consumer
//! checkpoints only after `put_batch` returned, so its replay writes the same key again and
//! notifies then.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use microbatch_core::batch::BatchMetadata;
use microbatch_core::import::object_created_message;
use microbatch_core::ports::{Bytes, ObjectLocation, ObjectReader, ObjectWriter, PortError, StoredObject};

use super::queue::SqliteQueue;
use super::sqlite::{io_error, now};

const SERVICE: &str = "store";

/// What a sidecar's name adds to its object's.
const SIDECAR_SUFFIX: &str = ".meta.json";
/// What a temporary file's name has (after a leading dot, which no key component has).
const TEMP_MARKER: &str = ".tmp-";
/// S3's limit on a key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Where a store sends the notification of a new batch object (S3 → SQS, locally).
pub trait Notifier: Send + Sync {
    /// Delivers `body` durably, or fails.
    fn notify(&self, body: String) -> impl Future<Output = Result<(), PortError>> + Send;
}

impl Notifier for SqliteQueue {
    async fn notify(&self, body: String) -> Result<(), PortError> {
        self.send(body).await.map(|_| ())
    }
}

impl<N: Notifier> Notifier for Arc<N> {
    fn notify(&self, body: String) -> impl Future<Output = Result<(), PortError>> + Send {
        (**self).notify(body)
    }
}

/// A notifier that drops every notification: for a store nobody imports from.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    async fn notify(&self, _body: String) -> Result<(), PortError> {
        Ok(())
    }
}

/// A directory as an object store.
#[derive(Debug)]
pub struct DirStore<N> {
    root: PathBuf,
    bucket: String,
    notifier: N,
    /// The last S3-style sequencer handed out: increasing per store, and across restarts as long
    /// as the clock does not go back.
    sequencer: AtomicU64,
    temp_names: AtomicU64,
}

impl<N: Notifier> DirStore<N> {
    /// Opens (creating it if needed) the store under `root`; `bucket` is the name notifications
    /// carry. Temporary files left by a crash are removed.
    pub async fn open(
        root: impl AsRef<Path>,
        bucket: impl Into<String>,
        notifier: N,
    ) -> Result<Self, PortError> {
        let root = root.as_ref().to_path_buf();
        let swept = {
            let root = root.clone();
            blocking(move || {
                fs::create_dir_all(&root)
                    .map_err(|e| io_error(SERVICE, &format!("cannot create {}", root.display()), &e))?;
                let mut swept = 0;
                sweep_temp_files(&root, &mut swept)
                    .map_err(|e| io_error(SERVICE, &format!("cannot clean {}", root.display()), &e))?;
                Ok(swept)
            })
            .await?
        };
        if swept > 0 {
            tracing::info!(root = %root.display(), files = swept, "removed temporary files left by a crash");
        }
        Ok(DirStore {
            root,
            bucket: bucket.into(),
            notifier,
            sequencer: AtomicU64::new(0),
            temp_names: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The keys under `prefix`, sorted (sidecars and temporary files are not objects).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut keys = Vec::new();
            collect_keys(&root, "", &mut keys)
                .map_err(|e| io_error(SERVICE, &format!("cannot list {}", root.display()), &e))?;
            keys.retain(|k| k.starts_with(&prefix));
            keys.sort();
            Ok(keys)
        })
        .await
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, PortError> {
        check_key(key).map_err(|why| {
            PortError::invalid(SERVICE, format!("object key {key:?} is not allowed: {why}"))
        })?;
        Ok(self.root.join(key))
    }

    fn next_sequencer(&self) -> u64 {
        let clock = u64::try_from(now().as_micros()).unwrap_or(0);
        let previous = self
            .sequencer
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(clock.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        clock.max(previous + 1)
    }

    fn temp_name(&self) -> String {
        let n = self.temp_names.fetch_add(1, Ordering::Relaxed);
        format!("{TEMP_MARKER}{}-{n}", std::process::id())
    }

    /// Writes `files` (name in the object's directory, bytes) in order, each atomically, and
    /// syncs the directory once at the end.
    async fn write(&self, key: &str, path: PathBuf, files: Vec<(String, Bytes)>) -> Result<(), PortError> {
        let root = self.root.clone();
        let temp = self.temp_name();
        let context = format!("cannot write object {key:?}");
        blocking(move || {
            let dir = path.parent().unwrap_or(&root).to_path_buf();
            make_dirs(&root, &dir)?;
            for (name, bytes) in &files {
                write_atomic(&dir, name, bytes, &temp)?;
            }
            sync_dir(&dir)
        })
        .await
        .map_err(|e| PortError {
            message: format!("{context}: {}", e.message),
            ..e
        })
    }
}

impl<N: Notifier> ObjectWriter for DirStore<N> {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The body is kept as given (compressed or not: the key's extension says which).
    async fn put_batch(&self, key: &str, body: Bytes, metadata: &BatchMetadata) -> Result<(), PortError> {
        let path = self.path_of(key)?;
        let name = file_name(&path);
        let sidecar = serde_json::to_vec_pretty(&metadata.to_pairs()).map_err(|e| {
            PortError::invalid(SERVICE, format!("cannot encode the metadata of {key:?}: {e}"))
        })?;
        let size = body.len() as u64;
        self.write(
            key,
            path,
            vec![
                (format!("{name}{SIDECAR_SUFFIX}"), Bytes::from(sidecar)),
                (name, body),
            ],
        )
        .await?;
        let message = object_created_message(&self.bucket, key, size, self.next_sequencer(), now());
        self.notifier.notify(message).await
    }

    async fn put(&self, key: &str, body: Bytes, _content_type: &str) -> Result<(), PortError> {
        let path = self.path_of(key)?;
        let sidecar = sidecar_path(&path);
        // Plain objects have no metadata: a sidecar left from an earlier batch at this key goes.
        let context = format!("cannot write object {key:?}");
        blocking(move || match fs::remove_file(&sidecar) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(SERVICE, &context, &e)),
        })
        .await?;
        let name = file_name(&path);
        self.write(key, path, vec![(name, body)]).await
    }
}

impl<N: Notifier> DirStore<N> {
    /// The object at `at`, its body read or not; `Ok(None)` when there is none. Another bucket
    /// than this store's is not found (a notification from elsewhere).
    async fn read(&self, at: &ObjectLocation, body: bool) -> Result<Option<StoredObject>, PortError> {
        if at.bucket != self.bucket {
            return Err(PortError::not_found(
                SERVICE,
                format!("no bucket {:?} here (this store is {:?})", at.bucket, self.bucket),
            ));
        }
        let path = self.path_of(&at.key)?;
        let context = format!("cannot read object {:?}", at.key);
        blocking(move || {
            let body = if body {
                match fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_error(SERVICE, &context, &e)),
                }
            } else {
                match fs::metadata(&path) {
                    Ok(_) => Vec::new(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_error(SERVICE, &context, &e)),
                }
            };
            let metadata = match fs::read(sidecar_path(&path)) {
                Ok(bytes) => serde_json::from_slice::<BTreeMap<String, String>>(&bytes).map_err(|e| {
                    PortError::invalid(
                        SERVICE,
                        format!("{context}: its metadata sidecar is not valid: {e}"),
                    )
                })?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => return Err(io_error(SERVICE, &context, &e)),
            };
            Ok(Some(StoredObject { body, metadata }))
        })
        .await
    }
}

impl<N: Notifier> ObjectReader for DirStore<N> {
    async fn head(&self, at: &ObjectLocation) -> Result<Option<BTreeMap<String, String>>, PortError> {
        Ok(self.read(at, false).await?.map(|o| o.metadata))
    }

    async fn get(&self, at: &ObjectLocation) -> Result<Option<StoredObject>, PortError> {
        self.read(at, true).await
    }
}

/// Why a key cannot be a path under the root, if it cannot. Keys are built from catalog names,
/// but a key must never reach outside the root, whatever it is.
fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("it is empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return Err("it is longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return Err("it is absolute");
    }
    if key.contains('\\') || key.contains('\0') {
        return Err("it contains a backslash or a NUL");
    }
    if key.ends_with(SIDECAR_SUFFIX) {
        return Err("names ending in .meta.json are reserved for metadata sidecars");
    }
    for part in key.split('/') {
        match part {
            "" => return Err("it has an empty path segment"),
            "." | ".." => return Err("it has a `.` or `..` segment"),
            p if p.starts_with('.') => {
                return Err("a segment starts with a dot (reserved for temporary files)");
            }
            _ => {}
        }
    }
    if Path::new(key).is_absolute() {
        return Err("it is absolute");
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    // Checked keys end in a normal, non-empty segment.
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PortError> + Send + 'static,
) -> Result<T, PortError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PortError::unavailable(SERVICE, format!("file task failed: {e}")))?
}

/// Creates the directories from `root` down to `dir`, syncing each parent that got a new entry,
/// so that a new directory survives a crash as surely as the file in it.
fn make_dirs(root: &Path, dir: &Path) -> Result<(), PortError> {
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut current = root.to_path_buf();
    for part in rel.components() {
        let parent = current.clone();
        current.push(part);
        match fs::create_dir(&current) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() => {}
            Err(e) => {
                return Err(io_error(
                    SERVICE,
                    &format!("cannot create {}", current.display()),
                    &e,
                ));
            }
        }
    }
    Ok(())
}

/// Temp file, write, fsync, rename over `name`. The temporary file is removed if anything fails.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], temp: &str) -> Result<(), PortError> {
    let temp_path = dir.join(format!(".{name}{temp}"));
    let target = dir.join(name);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp_path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp_path, &target)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&temp_path);
        io_error(SERVICE, &format!("cannot write {}", target.display()), &e)
    })
}

/// Makes the entries of `dir` (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<(), PortError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(SERVICE, &format!("cannot sync {}", dir.display()), &e))
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened as files here; NTFS journals renames itself.
        let _ = (dir, File::open);
        Ok(())
    }
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

fn sweep_temp_files(dir: &Path, swept: &mut usize) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sweep_temp_files(&entry.path(), swept)?;
        } else if is_temp(&entry.file_name().to_string_lossy()) {
            fs::remove_file(entry.path())?;
            *swept += 1;
        }
    }
    Ok(())
}

fn collect_keys(dir: &Path, prefix: &str, keys: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{prefix}{name}");
        if entry.file_type()?.is_dir() {
            collect_keys(&entry.path(), &format!("{key}/"), keys)?;
        } else if !name.ends_with(SIDECAR_SUFFIX) {
            keys.push(key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use microbatch_core::batch::Compression;
    use microbatch_core::import::parse_message;
    use microbatch_core::ports::Queue;
    use microbatch_core::position::{Position, SequenceNumber, ShardId};
    use microbatch_core::time::Timestamp;

    use super::super::queue::QueueOptions;
    use super::*;

    fn loc(key: &str) -> ObjectLocation {
        ObjectLocation::new("b", key)
    }

    fn metadata() -> BatchMetadata {
        BatchMetadata {
            table: "orders".into(),
            columns_sha256: microbatch_core::batch::columns_digest(&["_event_id", "_row_index", "total"]),
            column_count: 3,
            row_count: 2,
            shard: ShardId::new("shardId-000000000001"),
            first: Position::new(SequenceNumber::from_u128(10), 0),
            last: Position::new(SequenceNumber::from_u128(12), 3),
            catalog_version: "v1".into(),
            sha256: "ab".repeat(32),
            csv_bytes: 8,
            min_received_at: Timestamp::from_millis(1_000),
            max_received_at: Timestamp::from_millis(2_000),
            compression: Compression::None,
            csv: microbatch_core::csv::CsvEncoding::CURRENT,
        }
    }

    const KEY: &str = "loads/orders/2024/05/01/07/shardId-000000000001-10-12.3.csv";

    async fn store_with_queue(dir: &Path) -> (DirStore<Arc<SqliteQueue>>, Arc<SqliteQueue>) {
        let queue = Arc::new(
            SqliteQueue::open(dir.join("queue.db"), QueueOptions::default())
                .await
                .unwrap(),
        );
        let store = DirStore::open(dir.join("objects"), "b", queue.clone())
            .await
            .unwrap();
        (store, queue)
    }

    #[tokio::test]
    async fn batches_round_trip_with_their_sidecar_and_notify() {
        let dir = tempfile::tempdir().unwrap();
        let (store, queue) = store_with_queue(dir.path()).await;
        let body = b"a,1,9.5\nb,0,1\n".to_vec();
        store
            .put_batch(KEY, body.clone().into(), &metadata())
            .await
            .unwrap();

        let object = store.get(&loc(KEY)).await.unwrap().unwrap();
        assert_eq!(object.body, body);
        assert_eq!(object.metadata, metadata().to_pairs());
        let back =
            BatchMetadata::from_pairs(object.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back, metadata());

        // The sidecar is plain JSON next to the object.
        let sidecar = fs::read(store.root().join(format!("{KEY}.meta.json"))).unwrap();
        let pairs: BTreeMap<String, String> = serde_json::from_slice(&sidecar).unwrap();
        assert_eq!(pairs["table"], "orders");

        let messages = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(messages.len(), 1);
        let n = parse_message(&messages[0].body).unwrap();
        assert_eq!(n.objects.len(), 1);
        assert_eq!(n.objects[0].key, KEY);
        assert_eq!(n.objects[0].bucket, "b");
        assert_eq!(n.objects[0].size, Some(body.len() as u64));
        assert_eq!(n.objects[0].key_table(), Some("orders"));

        // A replayed flush overwrites, and notifies again with a later sequencer.
        store
            .put_batch(KEY, body.clone().into(), &metadata())
            .await
            .unwrap();
        let again = queue.receive(10, Duration::ZERO).await.unwrap();
        let second = parse_message(&again[0].body).unwrap();
        assert!(second.objects[0].sequencer > n.objects[0].sequencer);
        assert_eq!(store.keys("loads/").await.unwrap(), [KEY]);
    }

    #[tokio::test]
    async fn plain_objects_and_absent_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path(), "b", NoNotifier).await.unwrap();
        assert_eq!(store.get(&loc("loads/none.csv")).await.unwrap(), None);
        let key = "rejected/orders/2024/05/01/07/shardId-000000000000-5.json";
        store
            .put(key, Bytes::from_static(b"{\"reason\":\"x\"}"), "application/json")
            .await
            .unwrap();
        let object = store.get(&loc(key)).await.unwrap().unwrap();
        assert_eq!(object.body, b"{\"reason\":\"x\"}");
        assert!(object.metadata.is_empty());

        // A plain put over a batch drops the batch's metadata with it.
        store
            .put_batch(KEY, Bytes::from_static(b"x"), &metadata())
            .await
            .unwrap();
        store
            .put(KEY, Bytes::from_static(b"y"), "text/csv")
            .await
            .unwrap();
        let object = store.get(&loc(KEY)).await.unwrap().unwrap();
        assert_eq!(
            (object.body.as_slice(), object.metadata.len()),
            (b"y".as_slice(), 0)
        );
        assert_eq!(store.keys("").await.unwrap(), [KEY, key]);
        assert_eq!(store.keys("rejected/").await.unwrap(), [key]);
    }

    #[tokio::test]
    async fn keys_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("root"), "b", NoNotifier)
            .await
            .unwrap();
        let long = "a/".repeat(600) + "x";
        for bad in [
            "",
            "../escape.csv",
            "loads/../../escape.csv",
            "/etc/passwd",
            "loads//x.csv",
            "loads/./x.csv",
            "loads/x/",
            "loads\\x.csv",
            "loads/.hidden.csv",
            "loads/x.csv.meta.json",
            long.as_str(),
        ] {
            let err = store
                .put(bad, Bytes::from_static(b"x"), "text/plain")
                .await
                .unwrap_err();
            assert!(!err.is_transient());
            assert!(err.message.contains("is not allowed"), "{bad:?}: {err}");
            assert!(store.get(&loc(bad)).await.is_err(), "{bad:?}");
            assert!(
                store
                    .put_batch(bad, Bytes::from_static(b"x"), &metadata())
                    .await
                    .is_err()
            );
        }
        assert!(!dir.path().join("escape.csv").exists());
        assert!(store.keys("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn compressed_batches_are_kept_as_given_and_other_buckets_are_not_here() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path(), "b", NoNotifier).await.unwrap();
        let mut gz = metadata();
        gz.compression = Compression::Gzip;
        let packed = Compression::Gzip.compress(b"a,b\n".to_vec());
        store
            .put_batch("loads/t/x.csv.gz", Bytes::from(packed.clone()), &gz)
            .await
            .unwrap();
        let object = store.get(&loc("loads/t/x.csv.gz")).await.unwrap().unwrap();
        assert_eq!(object.body, packed);
        let head = store.head(&loc("loads/t/x.csv.gz")).await.unwrap().unwrap();
        assert_eq!(head["compression"], "gzip");
        let elsewhere = ObjectLocation::new("other-bucket", "loads/t/x.csv.gz");
        let err = store.get(&elsewhere).await.unwrap_err();
        assert_eq!(err.kind, microbatch_core::ports::ErrorKind::NotFound, "{err}");
        assert_eq!(store.head(&loc("loads/none.csv")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn writes_leave_no_temporary_files_and_a_crash_leftover_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let store = DirStore::open(&root, "b", NoNotifier).await.unwrap();
        store
            .put_batch(KEY, Bytes::from_static(b"complete"), &metadata())
            .await
            .unwrap();
        let object_dir = root.join(KEY).parent().unwrap().to_path_buf();
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let file = Path::new(KEY).file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(names(&object_dir), [file.clone(), format!("{file}.meta.json")]);

        // A crash in the middle of an overwrite leaves a partial temporary file: invisible to
        // readers, which still see the complete old object, and removed at the next open.
        let leftover = object_dir.join(format!(".{file}{TEMP_MARKER}999-0"));
        fs::write(&leftover, b"compl").unwrap();
        assert_eq!(store.get(&loc(KEY)).await.unwrap().unwrap().body, b"complete");
        assert_eq!(store.keys("").await.unwrap(), [KEY]);
        drop(store);
        let store = DirStore::open(&root, "b", NoNotifier).await.unwrap();
        assert!(!leftover.exists());
        assert_eq!(store.get(&loc(KEY)).await.unwrap().unwrap().body, b"complete");

        // A crash after the sidecar and before the object: no object yet, so nothing to load; the
        // replay writes both.
        let other = "loads/orders/2024/05/01/07/shardId-000000000001-13-14.csv";
        fs::write(root.join(format!("{other}.meta.json")), b"{}").unwrap();
        assert_eq!(store.get(&loc(other)).await.unwrap(), None);
        store
            .put_batch(other, Bytes::from_static(b"z"), &metadata())
            .await
            .unwrap();
        assert_eq!(
            store.get(&loc(other)).await.unwrap().unwrap().metadata,
            metadata().to_pairs()
        );
    }

    #[tokio::test]
    async fn a_failed_notification_fails_the_put() {
        #[derive(Debug)]
        struct Down;
        impl Notifier for Down {
            async fn notify(&self, _body: String) -> Result<(), PortError> {
                Err(PortError::unavailable("queue", "down"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path(), "b", Down).await.unwrap();
        let err = store
            .put_batch(KEY, Bytes::from_static(b"x"), &metadata())
            .await
            .unwrap_err();
        assert!(err.is_transient(), "the consumer retries, rewriting the same key");
        assert!(store.get(&loc(KEY)).await.unwrap().is_some());
    }

    #[test]
    fn sequencers_increase() {
        let store = DirStore {
            root: PathBuf::new(),
            bucket: String::new(),
            notifier: NoNotifier,
            sequencer: AtomicU64::new(u64::MAX / 2),
            temp_names: AtomicU64::new(0),
        };
        let a = store.next_sequencer();
        let b = store.next_sequencer();
        assert!(b > a && a > u64::MAX / 2);
    }
}
