//! The port conformance suite: the local adapters and the AWS ones (against the emulator) pass
//! the same tests, so the drivers can rely on the port's contract and not on an adapter.
//!
//! Each `*_conformance` function states one port's contract; each adapter gets one test calling
//! it.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use microbatch_adapters::aws::{DynamoLeases, KinesisStream, S3Store, SqsQueue};
use microbatch_adapters::local::{
    DirStore, Durability, NoNotifier, QueueOptions, SqliteLeases, SqliteQueue, SqliteStream, StreamOptions,
};
use microbatch_core::batch::{BatchMetadata, Compression};
use microbatch_core::kpl::{HashKeyRange, hash_key_of};
use microbatch_core::ports::{
    Bytes, Checkpoint, DeadLetterNote, ErrorKind, Lease, LeaseStore, ObjectLocation, ObjectReader,
    ObjectWriter, PutRecord, Queue, ReadFrom, StreamReader, StreamRecord, StreamWriter,
};
use microbatch_core::position::{Position, SequenceNumber, ShardId};
use microbatch_core::time::Timestamp;

// --- stream ------------------------------------------------------------------------------------

/// Reads `shard` from `from` through its cursors until an empty page at the tip.
async fn read_all<S: StreamReader>(s: &S, shard: &ShardId, from: ReadFrom) -> Vec<StreamRecord> {
    let mut cursor = s.open(shard, &from).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let batch = s.read(shard, &cursor, 7).await.unwrap();
        let empty = batch.records.is_empty();
        out.extend(batch.records);
        match batch.next {
            Some(next) => cursor = next,
            None => return out,
        }
        if empty && batch.millis_behind_latest == Some(0) {
            return out;
        }
    }
    panic!("no end to {shard}");
}

/// Puts land on the shard whose range holds their hash key and read back in order, complete,
/// through cursors of a few records each; `At` and `After` start where they say.
async fn stream_conformance<S: StreamWriter + StreamReader>(s: &S) {
    let shards = s.list_shards().await.unwrap();
    assert!(shards.len() >= 2, "{shards:?}");
    assert_eq!(
        StreamWriter::shards(s).await.unwrap(),
        shards,
        "both halves list alike"
    );
    let records: Vec<PutRecord> = (0..40)
        .map(|i| PutRecord {
            partition_key: format!("key-{i}"),
            explicit_hash_key: None,
            data: format!("record {i}").into_bytes(),
        })
        .collect();
    let acks = s.put_records(records.clone()).await.unwrap();
    assert_eq!(acks.len(), 40);
    let mut expected: BTreeMap<ShardId, Vec<Vec<u8>>> = BTreeMap::new();
    for (record, ack) in records.iter().zip(&acks) {
        let ack = ack.as_ref().unwrap();
        let shard = shards.iter().find(|sh| sh.id == ack.shard).unwrap();
        assert!(
            shard.range.contains(hash_key_of(&record.partition_key)),
            "routed by hash key"
        );
        expected
            .entry(ack.shard.clone())
            .or_default()
            .push(record.data.clone());
    }
    // An explicit hash key wins over the partition key: the last shard's end, inclusive.
    let last = shards.iter().max_by_key(|sh| sh.range.end).unwrap();
    let explicit = s
        .put_records(vec![PutRecord {
            partition_key: "key-0".into(),
            explicit_hash_key: Some(last.range.end.to_string()),
            data: b"explicit".to_vec(),
        }])
        .await
        .unwrap();
    assert_eq!(explicit[0].as_ref().unwrap().shard, last.id);
    expected
        .entry(last.id.clone())
        .or_default()
        .push(b"explicit".to_vec());

    for (shard, data) in &expected {
        let read = read_all(s, shard, ReadFrom::Oldest).await;
        assert_eq!(
            read.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
            *data,
            "{shard}"
        );
        assert!(
            read.windows(2).all(|w| w[0].seq < w[1].seq),
            "ascending sequence numbers"
        );
        assert!(read.iter().all(|r| r.arrived_at > Timestamp::from_millis(0)));
        let k = read.len() / 2;
        let after = read_all(s, shard, ReadFrom::After(read[k].seq.clone())).await;
        assert_eq!(after, read[k + 1..], "After starts past the record");
        let at = read_all(s, shard, ReadFrom::At(read[k].seq.clone())).await;
        assert_eq!(at, read[k..], "At starts on the record");
    }
}

#[tokio::test]
async fn local_stream_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStream::open(
        dir.path().join("stream.db"),
        StreamOptions {
            shards: 3,
            ..StreamOptions::default()
        },
    )
    .await
    .unwrap();
    stream_conformance(&s).await;
}

#[tokio::test]
async fn kinesis_stream_conforms() {
    let aws = support::aws().await;
    let name = support::unique("conform");
    support::create_stream(&aws, &name, 3).await;
    stream_conformance(&KinesisStream::new(&aws, &name)).await;
}

// --- object store ------------------------------------------------------------------------------

fn metadata() -> BatchMetadata {
    let pos = |n| Position::new(SequenceNumber::from_u128(n), 0);
    BatchMetadata {
        table: "orders".into(),
        columns_sha256: "c".repeat(64),
        column_count: 12,
        row_count: 3,
        shard: ShardId::new("shardId-000000000001"),
        first: pos(10),
        last: pos(12),
        catalog_version: "v1".into(),
        sha256: "a".repeat(64),
        csv_bytes: 42,
        min_received_at: Timestamp::from_millis(1),
        max_received_at: Timestamp::from_millis(2),
        compression: Compression::Gzip,
        csv: microbatch_core::csv::CsvEncoding::CURRENT,
    }
}

/// A batch reads back with its bytes and metadata; a plain object has none; a missing object
/// is `None`, not an error; an overwrite replaces.
async fn store_conformance<S: ObjectWriter + ObjectReader>(s: &S) {
    let key = "loads/orders/2026/12/02/10/shardId-000000000001-10-12.csv.gz";
    let at = ObjectLocation::new(s.bucket(), key);
    assert_eq!(s.get(&at).await.unwrap(), None);
    assert_eq!(s.head(&at).await.unwrap(), None);
    let body = Bytes::from_static(b"\x1f\x8b compressed bytes, stored as they are");
    s.put_batch(key, body.clone(), &metadata()).await.unwrap();
    let object = s.get(&at).await.unwrap().unwrap();
    assert_eq!(object.body, body.to_vec());
    let back =
        BatchMetadata::from_pairs(object.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
    assert_eq!(back, metadata());
    let head = s.head(&at).await.unwrap().unwrap();
    assert_eq!(head, object.metadata);
    s.put_batch(key, Bytes::from_static(b"again"), &metadata())
        .await
        .unwrap();
    assert_eq!(s.get(&at).await.unwrap().unwrap().body, b"again");

    let plain = "rejected/2026/12/02/10/x.json";
    s.put(plain, Bytes::from_static(b"{}"), "application/json")
        .await
        .unwrap();
    let object = s
        .get(&ObjectLocation::new(s.bucket(), plain))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((object.body.as_slice(), object.metadata.len()), (&b"{}"[..], 0));
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = DirStore::open(dir.path(), "conform", NoNotifier).await.unwrap();
    store_conformance(&s).await;
}

#[tokio::test]
async fn s3_store_conforms() {
    let aws = support::aws().await;
    let name = support::unique("conform");
    let (queue, _) = support::create_queues(&aws, &name, 30, 5).await;
    support::create_bucket(&aws, &name, &queue).await;
    store_conformance(&S3Store::new(&aws, &name, true)).await;
}

// --- queue -------------------------------------------------------------------------------------

/// Messages are received with their receive counts, hidden while in hand and back when their
/// visibility is set to zero, deleted by ack (one or a batch beyond 10), and dead-lettered with
/// their reason.
async fn queue_conformance<Q, F, Fut>(q: &Q, send: F, dead: impl AsyncFn() -> Vec<(String, String)>)
where
    Q: Queue,
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let wait = Duration::from_secs(1);
    for i in 0..13 {
        send(format!("message {i}")).await;
    }
    let mut got = Vec::new();
    while got.len() < 13 {
        let batch = q.receive(10, wait).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 10, "{}", batch.len());
        got.extend(batch);
    }
    assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
    assert!(
        q.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "all in hand"
    );
    // One back to the queue at once: received again, counted twice.
    let again = got.pop().unwrap();
    q.set_visibility(&again, Duration::ZERO).await.unwrap();
    let back = q.receive(10, wait).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].body.as_str(), back[0].receive_count),
        (again.body.as_str(), 2)
    );
    // Twelve acked in one call (chunked at 10 where the service needs it).
    let refs: Vec<_> = got.iter().collect();
    assert!(q.ack_all(&refs).await.iter().all(Result::is_ok));
    q.dead_letter(
        &back[0],
        DeadLetterNote {
            code: "checksum_mismatch",
            reason: "the object's bytes do not match its sha256",
        },
    )
    .await
    .unwrap();
    assert!(
        q.receive(10, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty(),
        "gone from the queue"
    );
    assert_eq!(
        dead().await,
        [(back[0].body.clone(), "checksum_mismatch".to_owned())],
        "in the dead-letter queue with its code"
    );
}

#[tokio::test]
async fn local_queue_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path().join("queue.db"), QueueOptions::default())
        .await
        .unwrap();
    let dead = async || {
        q.dead_letters(100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.body, d.code))
            .collect()
    };
    queue_conformance(
        &q,
        |body| {
            let q = q.clone();
            async move {
                q.send(body).await.unwrap();
            }
        },
        dead,
    )
    .await;
}

#[tokio::test]
async fn sqs_queue_conforms() {
    let aws = support::aws().await;
    let (url, dlq) = support::create_queues(&aws, &support::unique("conform"), 30, 5).await;
    let q = SqsQueue::new(&aws, &url, &dlq, Duration::from_secs(30));
    let dead = async || {
        q.dead_letters(100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.body, d.code))
            .collect()
    };
    queue_conformance(
        &q,
        |body| {
            let q = q.clone();
            async move {
                q.send(&body).await.unwrap();
            }
        },
        dead,
    )
    .await;
}

// --- leases ------------------------------------------------------------------------------------

fn conflict<T: std::fmt::Debug>(r: Result<T, microbatch_core::ports::PortError>) {
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
}

/// Every write is conditional on the counter (and owner) last seen, and a loser gets a conflict;
/// a lease reads back as written, lineage and hash range included.
async fn leases_conformance<L: LeaseStore>(l: &L) {
    let parent = Lease {
        shard: ShardId::new("shardId-000000000000"),
        owner: None,
        counter: 0,
        checkpoint: Checkpoint::TrimHorizon,
        parents: vec![],
        hash_range: Some(HashKeyRange::FULL),
    };
    let child = Lease {
        shard: ShardId::new("shardId-000000000002"),
        parents: vec![parent.shard.clone()],
        hash_range: Some(HashKeyRange::new(0, u128::MAX / 2).unwrap()),
        ..parent.clone()
    };
    l.create(&parent).await.unwrap();
    l.create(&child).await.unwrap();
    conflict(l.create(&parent).await);
    assert_eq!(
        l.list().await.unwrap(),
        [parent.clone(), child.clone()],
        "sorted, as written"
    );

    let mine = l.take(&parent, "a").await.unwrap();
    assert_eq!((mine.owner.as_deref(), mine.counter), (Some("a"), 1));
    conflict(l.take(&parent, "b").await); // a stale counter
    let mine = l.renew(&mine).await.unwrap();
    assert_eq!(mine.counter, 2);
    conflict(l.renew(&parent).await);
    let at = Checkpoint::At(Position::new(
        SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap(),
        3,
    ));
    let mine = l.checkpoint(&mine, &at).await.unwrap();
    assert_eq!((mine.checkpoint.clone(), mine.counter), (at.clone(), 3));
    // Another worker takes it (the counter it saw is current): the old holder's writes lose.
    let theirs = l.take(&mine, "b").await.unwrap();
    conflict(l.checkpoint(&mine, &Checkpoint::ShardEnd).await);
    conflict(l.release(&mine).await);
    let theirs = l.checkpoint(&theirs, &Checkpoint::ShardEnd).await.unwrap();
    l.release(&theirs).await.unwrap();
    let listed = l.list().await.unwrap();
    let released = &listed[0];
    assert_eq!(
        (released.owner.as_deref(), &released.checkpoint, released.counter),
        (None, &Checkpoint::ShardEnd, 6)
    );
    conflict(l.delete(&theirs).await); // as last seen? no: released since
    l.delete(released).await.unwrap();
    assert_eq!(l.list().await.unwrap(), [child]);
}

#[tokio::test]
async fn local_leases_conform() {
    let dir = tempfile::tempdir().unwrap();
    let l = SqliteLeases::open(dir.path().join("leases.db"), Durability::default())
        .await
        .unwrap();
    leases_conformance(&l).await;
}

#[tokio::test]
async fn dynamodb_leases_conform() {
    let aws = support::aws().await;
    let table = support::unique("conform");
    support::create_lease_table(&aws, &table).await;
    let l = DynamoLeases::new(&aws, &table);
    leases_conformance(&l).await;
    // And every item reads as a KCL lease, the parent named the child's lineage on creation.
    for item in l.items().await.unwrap() {
        microbatch_adapters::aws::check_kcl_item(&item).unwrap();
    }
}
