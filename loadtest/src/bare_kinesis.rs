//! The emulator's own rates, measured in the same run as the pipeline on it: a minimal SDK
//! client's closed loop of `PutRecords` (500 records of 200 B per call, the call's maximum) and
//! then of `GetRecords` reading them back, on a one-shard stream of its own. Every emulated-AWS
//! figure of the report is read against these: on this machine the emulator, not AWS, bounds
//! what the pipeline can reach.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use microbatch_adapters::aws::Aws;
use microbatch_adapters::aws::provision;

/// Records per `PutRecords` call, and their size.
pub const RECORDS_PER_CALL: usize = 500;
pub const RECORD_BYTES: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct BareKinesis {
    pub put_calls_per_s: f64,
    pub put_records_per_s: f64,
    pub get_calls_per_s: f64,
    pub get_records_per_s: f64,
}

/// Puts for `each`, then reads for `each`, on a stream made for it and deleted after.
pub async fn measure(aws: &Aws, each: Duration) -> anyhow::Result<BareKinesis> {
    let k = aws.kinesis();
    let name = format!("lt-bare-{}", crate::load::unix_us() % 10_000_000_000);
    provision::create_stream(aws, &name, 1).await?;
    let entries: Vec<PutRecordsRequestEntry> = (0..RECORDS_PER_CALL)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(vec![b'x'; RECORD_BYTES]))
                .partition_key(format!("k{i}"))
                .build()
                .expect("data and key set")
        })
        .collect();
    let started = Instant::now();
    let (mut put_calls, mut put_records) = (0u64, 0u64);
    while started.elapsed() < each {
        let out = k
            .put_records()
            .stream_name(&name)
            .set_records(Some(entries.clone()))
            .send()
            .await
            .context("bare PutRecords")?;
        put_calls += 1;
        put_records += (RECORDS_PER_CALL as i32 - out.failed_record_count().unwrap_or(0)) as u64;
    }
    let put_s = started.elapsed().as_secs_f64();

    let shard = k
        .list_shards()
        .stream_name(&name)
        .send()
        .await?
        .shards()
        .first()
        .map(|s| s.shard_id().to_owned())
        .context("the bare stream has no shard")?;
    let mut iterator = k
        .get_shard_iterator()
        .stream_name(&name)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator()
        .map(str::to_owned);
    let started = Instant::now();
    let (mut get_calls, mut get_records) = (0u64, 0u64);
    while let Some(it) = iterator.take() {
        if started.elapsed() >= each {
            break;
        }
        let out = k
            .get_records()
            .shard_iterator(it)
            .limit(10_000)
            .send()
            .await
            .context("bare GetRecords")?;
        get_calls += 1;
        get_records += out.records().len() as u64;
        iterator = out.next_shard_iterator().map(str::to_owned);
    }
    let get_s = started.elapsed().as_secs_f64();
    let _ = k.delete_stream().stream_name(&name).send().await;
    Ok(BareKinesis {
        put_calls_per_s: put_calls as f64 / put_s,
        put_records_per_s: put_records as f64 / put_s,
        get_calls_per_s: get_calls as f64 / get_s,
        get_records_per_s: get_records as f64 / get_s,
    })
}
