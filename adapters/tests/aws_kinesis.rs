//! Kinesis against the emulator: the harness's fixes of moto's faults are in place (each test
//! here fails on a bare `moto_server`), and a closed shard's end is found through the adapter
//! where moto gives no null iterator.

mod support;

use std::collections::HashSet;

use microbatch_adapters::aws::KinesisStream;
use microbatch_core::ports::{PutRecord, ReadFrom, StreamReader, StreamRecord, StreamWriter};
use microbatch_core::position::ShardId;

fn record(key: &str, data: String) -> PutRecord {
    PutRecord {
        partition_key: key.into(),
        explicit_hash_key: None,
        data: data.into_bytes(),
    }
}

/// Every record of `shard` from the oldest, and whether the adapter said the shard ended.
async fn drain(s: &KinesisStream, shard: &ShardId) -> (Vec<StreamRecord>, bool) {
    let mut cursor = s.open(shard, &ReadFrom::Oldest).await.unwrap();
    let mut out = Vec::new();
    let mut empty_pages = 0;
    loop {
        let batch = s.read(shard, &cursor, 500).await.unwrap();
        if batch.records.is_empty() {
            empty_pages += 1;
        }
        out.extend(batch.records);
        match batch.next {
            None => return (out, true),
            Some(next) if empty_pages < 3 => cursor = next,
            Some(_) => return (out, false),
        }
    }
}

async fn update_shard_count(aws: &microbatch_adapters::aws::Aws, name: &str, target: i32) {
    aws_sdk_kinesis::Client::new(aws.sdk())
        .update_shard_count()
        .stream_name(name)
        .target_shard_count(target)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
}

/// Fix 1: moto's unserialised shard append lost records and repeated sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_to_one_shard_lose_nothing_and_repeat_no_sequence_number() {
    let aws = support::aws().await;
    let name = support::unique("harness");
    support::create_stream(&aws, &name, 1).await;
    let stream = std::sync::Arc::new(KinesisStream::new(&aws, &name));
    let (tasks, calls, per_call) = (16, 20, 50);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let stream = stream.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for c in 0..calls {
                let records = (0..per_call)
                    .map(|r| record("p", format!("{t}-{c}-{r}")))
                    .collect();
                for ack in stream.put_records(records).await.unwrap() {
                    seqs.push(ack.unwrap().seq);
                }
            }
            seqs
        }));
    }
    let mut seqs = HashSet::new();
    for h in handles {
        for s in h.await.unwrap() {
            assert!(seqs.insert(s.clone()), "sequence number {s} handed out twice");
        }
    }
    let sent = tasks * calls * per_call;
    assert_eq!(seqs.len(), sent);
    let shard = stream.list_shards().await.unwrap().remove(0).id;
    let (read, _) = drain(&stream, &shard).await;
    let data: HashSet<Vec<u8>> = read.into_iter().map(|r| r.data).collect();
    assert_eq!(data.len(), sent, "every acknowledged record is in the shard");
}

/// Fixes 3 and 4, and the adapter's shard-end rule on moto: after a reshard the parents keep
/// exactly their records and end once they are read; new records go to the children only.
#[tokio::test]
async fn a_reshard_leaves_parents_their_records_and_they_end() {
    let aws = support::aws().await;
    let name = support::unique("harness");
    support::create_stream(&aws, &name, 1).await;
    let stream = KinesisStream::new(&aws, &name);
    let before: Vec<PutRecord> = (0..30)
        .map(|i| record(&format!("k{i}"), format!("before {i}")))
        .collect();
    stream.put_records(before).await.unwrap();
    let parent = stream.list_shards().await.unwrap().remove(0);

    // Split (1 → 2), then put more: they must land in the children, by their ranges.
    update_shard_count(&aws, &name, 2).await;
    let after: Vec<PutRecord> = (0..30)
        .map(|i| record(&format!("k{i}"), format!("after {i}")))
        .collect();
    let acks = stream.put_records(after).await.unwrap();
    let shards = stream.list_shards().await.unwrap();
    let children: Vec<_> = shards
        .iter()
        .filter(|s| s.parent.as_ref() == Some(&parent.id))
        .collect();
    assert_eq!(children.len(), 2, "{shards:?}");
    assert!(shards.iter().find(|s| s.id == parent.id).unwrap().closed);
    for ack in &acks {
        let ack = ack.as_ref().unwrap();
        assert_ne!(ack.shard, parent.id, "a record went into the closed parent");
    }

    let (read, ended) = drain(&stream, &parent.id).await;
    let data: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8(r.data.clone()).unwrap())
        .collect();
    assert_eq!(
        data,
        (0..30).map(|i| format!("before {i}")).collect::<Vec<_>>(),
        "exactly its own"
    );
    assert!(ended, "the closed parent ends once read");
    let mut in_children = 0;
    for child in &children {
        let (read, ended) = drain(&stream, &child.id).await;
        assert!(!ended, "an open shard does not end");
        assert!(
            read.iter().all(|r| r.data.starts_with(b"after")),
            "no parent records copied"
        );
        in_children += read.len();
    }
    assert_eq!(in_children, 30);

    // Merge (2 → 1): the merged children keep theirs, the new shard starts empty.
    update_shard_count(&aws, &name, 1).await;
    let shards = stream.list_shards().await.unwrap();
    let merged = shards.iter().find(|s| !s.closed).unwrap();
    assert!(
        merged.parent.is_some() && merged.adjacent_parent.is_some(),
        "{merged:?}"
    );
    let (read, ended) = drain(&stream, &merged.id).await;
    assert!(
        read.is_empty() && !ended,
        "{} records copied into the merged shard",
        read.len()
    );
    for child in &children {
        let (read, ended) = drain(&stream, &child.id).await;
        assert!(ended && !read.is_empty());
    }
}
