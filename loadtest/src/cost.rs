//! What a million events cost on AWS: microbatch (Kinesis, S3, SQS, DynamoDB, the three ECS
//! services on Fargate) beside Amazon Data Firehose Direct PUT into Redshift, from a dated price
//! table ([`PRICES`], sources in docs/COST.md) and a [`Scenario`] (rate, event size, active
//! tables, flush interval).
//!
//! How the pipeline's calls and CPU scale with the scenario is its [`Shape`]: measured by an
//! emulated-AWS run ([`Shape::measured`]), or assumed from the defaults ([`Shape::assumed`]) where
//! no run reaches the scenario. The warehouse itself is left out of both sides: the same cluster
//! loads the same rows either way (microbatch's extra COPYs cost cluster time, not a bill line;
//! docs/AWS.md models their freshness).

use crate::calls::CallRates;

/// us-east-1 list prices, in US dollars, as of [`Prices::date`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub date: &'static str,
    pub kinesis_shard_hour: f64,
    pub kinesis_put_payload_units_per_million: f64,
    pub kinesis_on_demand_stream_hour: f64,
    pub kinesis_on_demand_ingest_gb: f64,
    pub kinesis_on_demand_retrieval_gb: f64,
    pub s3_puts_per_thousand: f64,
    pub s3_gets_per_thousand: f64,
    pub s3_gb_month: f64,
    pub sqs_requests_per_million: f64,
    pub dynamodb_writes_per_million: f64,
    pub dynamodb_reads_per_million: f64,
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    pub firehose_direct_put_gb: f64,
    /// Firehose bills each record rounded up to this many bytes.
    pub firehose_record_rounding_bytes: f64,
    /// Firehose's buffering interval when none is given (BufferingHints: 0–900 s).
    pub firehose_default_buffer_s: f64,
}

/// The table docs/COST.md cites, line by line.
pub const PRICES: Prices = Prices {
    date: "2026-12-03",
    kinesis_shard_hour: 0.015,
    kinesis_put_payload_units_per_million: 0.014,
    kinesis_on_demand_stream_hour: 0.04,
    kinesis_on_demand_ingest_gb: 0.08,
    kinesis_on_demand_retrieval_gb: 0.04,
    s3_puts_per_thousand: 0.005,
    s3_gets_per_thousand: 0.0004,
    s3_gb_month: 0.023,
    sqs_requests_per_million: 0.40,
    dynamodb_writes_per_million: 0.625,
    dynamodb_reads_per_million: 0.125,
    fargate_vcpu_hour: 0.04048,
    fargate_gb_hour: 0.004445,
    firehose_direct_put_gb: 0.029,
    firehose_record_rounding_bytes: 5.0 * 1024.0,
    firehose_default_buffer_s: 300.0,
};

const GB: f64 = (1u64 << 30) as f64;
const PUT_PAYLOAD_UNIT: f64 = 25.0 * 1024.0;
/// On-demand streams bill each record's ingest rounded up to 1 KB.
const ON_DEMAND_ROUNDING: f64 = 1024.0;
const HOURS_PER_MONTH: f64 = 730.0;

/// A deployment's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    pub events_per_s: f64,
    pub event_bytes: f64,
    pub active_tables: f64,
    pub flush_s: f64,
}

/// Which Kinesis capacity mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    Provisioned,
    OnDemand,
}

/// The three services as `infra/modules/services` deploys them by default: tasks and task size
/// (vCPU, GiB), in the order produce, consume, import.
pub const SERVICES: [(&str, f64, f64, f64); 3] = [
    ("produce", 2.0, 0.5, 1.0),
    ("consume", 2.0, 1.0, 2.0),
    ("import", 1.0, 0.5, 1.0),
];

/// A task is sized so its measured CPU uses at most this share of it.
const CPU_HEADROOM: f64 = 0.7;
/// Fargate's vCPU sizes, and GiB per vCPU kept when a task grows.
const FARGATE_VCPUS: [f64; 7] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
const GIB_PER_VCPU: f64 = 2.0;

/// How the pipeline's calls and CPU scale: per object, per shard, per table flush.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Mean bytes of a Kinesis record (the producer's aggregates: 50 KiB when full).
    pub aggregate_bytes: f64,
    /// Producer tasks × shards × 1 / linger: the record rate when aggregates leave unfilled.
    pub linger_s: f64,
    /// Batch objects per active table per shard per flush interval (the consumer buffers each
    /// table per shard, so a batch names one shard's sequence range), and per 16 MiB beyond.
    pub objects_per_table_shard_flush: f64,
    pub max_batch_bytes: f64,
    /// CSV bytes per event byte, and stored (compressed) bytes per CSV byte.
    pub csv_per_event_byte: f64,
    pub stored_per_csv_byte: f64,
    /// S3 PUTs and GETs per batch object (the object and its schema objects; the importer's
    /// download or Redshift's COPY reading it).
    pub s3_puts_per_object: f64,
    pub s3_gets_per_object: f64,
    /// Redshift's COPY manifests: one per active table per load cycle (about one flush
    /// interval), written by the importer and read by COPY.
    pub copy_manifests_per_table_flush: f64,
    /// SQS calls per batch object (S3's notification, a share of a receive and of a delete) and
    /// with no traffic (long polls).
    pub sqs_per_object: f64,
    pub sqs_idle_per_s: f64,
    /// DynamoDB writes per shard-second (renewals, checkpoints) and reads per second (scans).
    pub dynamodb_writes_per_shard_s: f64,
    pub dynamodb_reads_per_s: f64,
    /// CPU seconds per million events of produce, consume, import (all tasks together), and
    /// each service's CPU with no traffic (per task, seconds per second).
    pub cpu_s_per_million: [f64; 3],
    pub idle_cpu: [f64; 3],
    /// Days `loads/` objects are kept (the batch store's lifecycle default).
    pub retention_days: f64,
}

impl Shape {
    /// The defaults' shape, for scenarios no run measured: 50 KiB aggregates, 100 ms linger,
    /// two consumers, the lease loop every 3 s, and CPU from the embedded loadtest's order of
    /// magnitude (docs/COST.md says which inputs these are).
    pub fn assumed() -> Shape {
        Shape {
            aggregate_bytes: 50.0 * 1024.0,
            linger_s: 0.1,
            objects_per_table_shard_flush: 1.0,
            max_batch_bytes: 16.0 * 1024.0 * 1024.0,
            csv_per_event_byte: 0.8,
            stored_per_csv_byte: 0.25,
            s3_puts_per_object: 1.0,
            s3_gets_per_object: 1.0,
            copy_manifests_per_table_flush: 1.0,
            sqs_per_object: 1.3,
            sqs_idle_per_s: 0.1,
            dynamodb_writes_per_shard_s: 1.0 / 3.0 + 1.0,
            dynamodb_reads_per_s: 2.0 / 3.0,
            cpu_s_per_million: [60.0, 40.0, 20.0],
            idle_cpu: [0.01, 0.02, 0.01],
            retention_days: 30.0,
        }
    }

    /// The shape of a measured run: its calls per object and per shard-second, its CPU per event,
    /// on top of the assumed shape for what the run cannot show (retention, compression, the
    /// COPY manifests of a Redshift importer when the run loads PostgreSQL).
    pub fn measured(run: &RunShape, rates: &CallRates) -> Shape {
        let mut s = Shape::assumed();
        let objects = rates.batches.max(1e-9);
        s.s3_puts_per_object = rates.s3_puts / objects;
        s.s3_gets_per_object = rates.s3_gets / objects;
        let per_s = |per_million: f64| per_million * run.events_per_s / 1e6;
        let flushes = run.secs / run.flush_s * run.active_tables * f64::from(run.shards.max(1));
        s.objects_per_table_shard_flush = objects * run.events / 1e6 / flushes.max(1e-9);
        s.sqs_per_object = rates.sqs_requests / objects;
        s.sqs_idle_per_s = 0.0;
        s.dynamodb_writes_per_shard_s = per_s(rates.dynamodb_writes) / f64::from(run.shards.max(1));
        s.dynamodb_reads_per_s = per_s(rates.dynamodb_reads);
        s.cpu_s_per_million = run.cpu_s.map(|c| c * 1e6 / run.events.max(1.0));
        s.idle_cpu = [0.0; 3];
        s
    }
}

/// What a measured run was: the scenario it ran and its CPU seconds per service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunShape {
    pub events: f64,
    pub secs: f64,
    pub events_per_s: f64,
    pub event_bytes: f64,
    pub active_tables: f64,
    pub flush_s: f64,
    pub shards: u32,
    pub cpu_s: [f64; 3],
}

/// Dollars per million events, by line.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    pub kinesis: f64,
    pub s3: f64,
    pub sqs: f64,
    pub dynamodb: f64,
    pub compute: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.kinesis + self.s3 + self.sqs + self.dynamodb + self.compute
    }
}

/// Provisioned shards a scenario needs: its bytes and records under 80 % of a shard's limits.
pub fn shards_needed(scenario: &Scenario, shape: &Shape) -> f64 {
    let bytes_s = scenario.events_per_s * scenario.event_bytes;
    let records_s = bytes_s / shape.aggregate_bytes;
    (bytes_s / (0.8 * 1024.0 * 1024.0))
        .max(records_s / 800.0)
        .ceil()
        .max(1.0)
}

/// microbatch's cost per million events.
pub fn microbatch(p: &Prices, sc: &Scenario, shape: &Shape, capacity: Capacity) -> Cost {
    let rate = sc.events_per_s.max(1e-9);
    let hours = 1e6 / rate / 3600.0;
    let secs = 1e6 / rate;
    let bytes = 1e6 * sc.event_bytes;
    let shards = shards_needed(sc, shape);
    let producers = SERVICES[0].1;

    // Kinesis: aggregates fill to `aggregate_bytes`, or leave each linger unfilled.
    let full = bytes / shape.aggregate_bytes;
    let by_linger = (producers * shards / shape.linger_s * secs).min(1e6);
    let records = full.max(by_linger);
    let record_bytes = bytes / records;
    let kinesis = match capacity {
        Capacity::Provisioned => {
            shards * hours * p.kinesis_shard_hour
                + records * (record_bytes / PUT_PAYLOAD_UNIT).ceil() * p.kinesis_put_payload_units_per_million
                    / 1e6
        }
        Capacity::OnDemand => {
            let ingested = records * (record_bytes / ON_DEMAND_ROUNDING).ceil() * ON_DEMAND_ROUNDING;
            hours * p.kinesis_on_demand_stream_hour
                + ingested / GB * p.kinesis_on_demand_ingest_gb
                + bytes / GB * p.kinesis_on_demand_retrieval_gb
        }
    };

    // S3: a batch per active table per shard per flush (more when its CSV outgrows a batch).
    let csv = bytes * shape.csv_per_event_byte;
    let buffers_flushed = sc.active_tables * shards * (secs / sc.flush_s);
    let objects = buffers_flushed
        * shape
            .objects_per_table_shard_flush
            .max(csv / buffers_flushed / shape.max_batch_bytes);
    let stored_gb_months =
        csv * shape.stored_per_csv_byte / GB * shape.retention_days * 24.0 / HOURS_PER_MONTH;
    let manifests = sc.active_tables * (secs / sc.flush_s) * shape.copy_manifests_per_table_flush;
    let s3 = (objects * shape.s3_puts_per_object + manifests) * p.s3_puts_per_thousand / 1e3
        + (objects * shape.s3_gets_per_object + manifests) * p.s3_gets_per_thousand / 1e3
        + stored_gb_months * p.s3_gb_month;

    let sqs =
        (objects * shape.sqs_per_object + shape.sqs_idle_per_s * secs) * p.sqs_requests_per_million / 1e6;
    let dynamodb = shape.dynamodb_writes_per_shard_s * shards * secs * p.dynamodb_writes_per_million / 1e6
        + shape.dynamodb_reads_per_s * secs * p.dynamodb_reads_per_million / 1e6;

    let compute = SERVICES
        .iter()
        .enumerate()
        .map(|(i, &(_, tasks, vcpu, gib))| {
            let used = shape.cpu_s_per_million[i] * rate / 1e6 / tasks + shape.idle_cpu[i];
            let (vcpu, gib) = task_size(vcpu, gib, used);
            tasks * hours * (vcpu * p.fargate_vcpu_hour + gib * p.fargate_gb_hour)
        })
        .sum();
    Cost {
        kinesis,
        s3,
        sqs,
        dynamodb,
        compute,
    }
}

/// The task size a service needs: its default, or the smallest Fargate size whose vCPU keeps
/// `used` (vCPU) under the headroom, with memory grown alike.
pub fn task_size(default_vcpu: f64, default_gib: f64, used: f64) -> (f64, f64) {
    let vcpu = FARGATE_VCPUS
        .into_iter()
        .find(|&v| v >= default_vcpu && used <= v * CPU_HEADROOM)
        .unwrap_or(FARGATE_VCPUS[FARGATE_VCPUS.len() - 1]);
    let gib = if vcpu > default_vcpu {
        default_gib.max(vcpu * GIB_PER_VCPU)
    } else {
        default_gib
    };
    (vcpu, gib)
}

/// Firehose Direct PUT's cost per million events, one record per event (its bill rounds each
/// record up to 5 KB; Redshift delivery adds its own S3 staging, left out in its favour).
pub fn firehose(p: &Prices, sc: &Scenario) -> f64 {
    let billed =
        (sc.event_bytes / p.firehose_record_rounding_bytes).ceil() * p.firehose_record_rounding_bytes;
    1e6 * billed / GB * p.firehose_direct_put_gb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(events_per_s: f64, event_bytes: f64, active_tables: f64, flush_s: f64) -> Scenario {
        Scenario {
            events_per_s,
            event_bytes,
            active_tables,
            flush_s,
        }
    }

    #[test]
    fn firehose_bills_every_record_as_at_least_5_kb() {
        let small = firehose(&PRICES, &sc(10_000.0, 200.0, 10.0, 1.0));
        let kib = firehose(&PRICES, &sc(10_000.0, 1024.0, 10.0, 1.0));
        assert_eq!(small, kib, "200 B and 1 KiB both round up to 5 KB");
        // 1e6 × 5 KiB = 4.77 GiB at $0.029.
        assert!((small - 0.1383).abs() < 1e-3, "{small}");
        let six = firehose(&PRICES, &sc(10_000.0, 6000.0, 10.0, 1.0));
        assert!((six / small - 2.0).abs() < 1e-9, "6000 B is two 5 KB units");
    }

    #[test]
    fn fixed_hourly_costs_spread_over_more_events_at_a_higher_rate() {
        let shape = Shape::assumed();
        let slow = microbatch(
            &PRICES,
            &sc(1_000.0, 200.0, 10.0, 1.0),
            &shape,
            Capacity::Provisioned,
        );
        let fast = microbatch(
            &PRICES,
            &sc(10_000.0, 200.0, 10.0, 1.0),
            &shape,
            Capacity::Provisioned,
        );
        assert!(fast.compute < slow.compute / 5.0, "{fast:?} {slow:?}");
        assert!(fast.total() < slow.total(), "{fast:?} {slow:?}");
    }

    #[test]
    fn a_longer_flush_and_fewer_tables_mean_fewer_objects_and_messages() {
        let shape = Shape::assumed();
        let cost = |tables, flush| {
            microbatch(
                &PRICES,
                &sc(10_000.0, 200.0, tables, flush),
                &shape,
                Capacity::Provisioned,
            )
        };
        assert!(cost(10.0, 60.0).s3 < cost(10.0, 1.0).s3);
        assert!(cost(10.0, 60.0).sqs < cost(10.0, 1.0).sqs);
        assert!(cost(500.0, 1.0).s3 > 10.0 * cost(10.0, 1.0).s3 / 2.0);
        // Past the point where a table's batch fills 16 MiB, a longer flush writes no fewer objects.
        let one_table = |flush| cost(1.0, flush).s3;
        assert!(one_table(300.0) > 0.0);
    }

    #[test]
    fn shards_follow_the_write_limit_and_never_drop_below_one() {
        let shape = Shape::assumed();
        assert_eq!(shards_needed(&sc(10.0, 200.0, 1.0, 1.0), &shape), 1.0);
        // 10k × 200 B = 1.9 MiB/s → 3 shards at 80 % of 1 MiB/s.
        assert_eq!(shards_needed(&sc(10_000.0, 200.0, 1.0, 1.0), &shape), 3.0);
    }

    #[test]
    fn tasks_grow_to_the_smallest_fargate_size_that_fits() {
        assert_eq!(task_size(0.5, 1.0, 0.1), (0.5, 1.0));
        assert_eq!(task_size(0.5, 1.0, 0.5), (1.0, 2.0));
        assert_eq!(task_size(1.0, 2.0, 2.5), (4.0, 8.0));
        assert_eq!(task_size(1.0, 2.0, 100.0), (16.0, 32.0));
    }

    #[test]
    fn a_measured_shape_reproduces_the_run_it_came_from() {
        let rates = CallRates {
            put_records_calls: 2000.0,
            kinesis_records: 2000.0,
            payload_units: 4000.0,
            user_records_per_kinesis_record: 500.0,
            get_records_calls_per_shard_s: 4.0,
            busiest_shard_put_bytes_s: 100_000.0,
            busiest_shard_put_records_s: 2.0,
            s3_puts: 2100.0,
            s3_gets: 2000.0,
            sqs_receives: 400.0,
            sqs_deletes: 400.0,
            sqs_visibility: 0.0,
            sqs_requests: 800.0,
            dynamodb_reads: 100.0,
            dynamodb_writes: 300.0,
            commits: 200.0,
            batches: 2000.0,
        };
        let run = RunShape {
            events: 100_000.0,
            secs: 100.0,
            events_per_s: 1000.0,
            event_bytes: 200.0,
            active_tables: 10.0,
            flush_s: 1.0,
            shards: 2,
            cpu_s: [6.0, 4.0, 2.0],
        };
        let s = Shape::measured(&run, &rates);
        // A slow run's unfilled aggregates say nothing of a fast one's: the linger models them.
        assert_eq!(s.aggregate_bytes, Shape::assumed().aggregate_bytes);
        // 2000 objects per million: 200 in the run, over its 2000 table-shard flushes.
        assert!((s.objects_per_table_shard_flush - 0.1).abs() < 1e-9, "{s:?}");
        assert!((s.s3_puts_per_object - 1.05).abs() < 1e-9, "{s:?}");
        assert_eq!(s.s3_gets_per_object, 1.0);
        assert!((s.sqs_per_object - 0.4).abs() < 1e-9, "{s:?}");
        assert!((s.dynamodb_writes_per_shard_s - 0.15).abs() < 1e-9, "{s:?}");
        assert_eq!(s.cpu_s_per_million, [60.0, 40.0, 20.0]);
    }
}
