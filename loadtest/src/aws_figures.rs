//! What a run on the emulated AWS stack adds to the report: its calls per million events and
//! the per-shard limits ([`crate::calls`]), the cost per million events beside Firehose for the
//! issue's four scenarios ([`crate::cost`], on the run's measured shape), and the cost against
//! the flush interval (`cost_vs_flush.svg`).

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::calls::CallRates;
use crate::cost::{self, Capacity, PRICES, Scenario, Shape};
use crate::report::{Report, percentiles_ms};

/// The scenarios of the issue: 200 B and 1 KiB events at 1k and 10k events/s (10 tables, 1 s).
pub const SCENARIOS: [(&str, f64, f64); 4] = [
    ("200b_1k", 200.0, 1_000.0),
    ("200b_10k", 200.0, 10_000.0),
    ("1kib_1k", 1024.0, 1_000.0),
    ("1kib_10k", 1024.0, 10_000.0),
];

/// Flush intervals (s) and active-table counts of the cost curve.
pub const FLUSHES: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0];
pub const TABLES: [f64; 4] = [1.0, 10.0, 100.0, 500.0];

/// The run's calls, as figures (named after `prefix`) and a section. Returns the broken limits.
pub fn calls(report: &mut Report, prefix: &str, rates: &CallRates) -> Vec<String> {
    for (name, value) in rates.figures() {
        report.set(&format!("{prefix}{name}"), value);
    }
    let broken = rates.limit_violations();
    report.set(&format!("{prefix}call_limits_broken"), broken.len() as f64);
    let r = rates;
    report.sections.push((
        format!("AWS calls per million events ({}counted by every process)", prefix.replace('_', " run, ")),
        format!(
            "| calls | per million events |\n|---|---|\n\
             | Kinesis PutRecords calls | {:.0} |\n| Kinesis records (aggregates) | {:.0} ({:.1} events each) |\n\
             | Kinesis PUT payload units (25 KB) | {:.0} |\n| S3 PUT / GET | {:.0} / {:.0} |\n\
             | batch objects | {:.0} |\n| SQS receive / delete / visibility / all | {:.0} / {:.0} / {:.0} / {:.0} |\n\
             | DynamoDB reads / writes | {:.0} / {:.0} |\n| warehouse commits | {:.0} |\n\n\
             Per shard: GetRecords {:.2} calls/s (limit 5); the busiest shard took {:.0} B/s (limit 1 MiB/s) in \
             {:.1} records/s (limit 1,000).{}",
            r.put_records_calls,
            r.kinesis_records,
            r.user_records_per_kinesis_record,
            r.payload_units,
            r.s3_puts,
            r.s3_gets,
            r.batches,
            r.sqs_receives,
            r.sqs_deletes,
            r.sqs_visibility,
            r.sqs_requests,
            r.dynamodb_reads,
            r.dynamodb_writes,
            r.commits,
            r.get_records_calls_per_shard_s,
            r.busiest_shard_put_bytes_s,
            r.busiest_shard_put_records_s,
            if broken.is_empty() {
                String::new()
            } else {
                format!("\n\n**Limits broken:** {}", broken.join("; "))
            }
        ),
    ));
    broken
}

/// `cost_per_million_events` for each scenario beside Firehose's, on `shape`; and the cost
/// plot into `out`.
pub fn costs(report: &mut Report, shape: &Shape, measured: bool, out: &Path) -> anyhow::Result<()> {
    let mut rows = vec![
        "| events | microbatch, provisioned | microbatch, on-demand | Firehose Direct PUT | ratio (provisioned) |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    for (name, bytes, rate) in SCENARIOS {
        let sc = Scenario {
            events_per_s: rate,
            event_bytes: bytes,
            active_tables: 10.0,
            flush_s: 1.0,
        };
        let ours = cost::microbatch(&PRICES, &sc, shape, Capacity::Provisioned);
        let on_demand = cost::microbatch(&PRICES, &sc, shape, Capacity::OnDemand);
        let firehose = cost::firehose(&PRICES, &sc);
        report.set(&format!("cost_per_million_events_{name}"), ours.total());
        report.set(
            &format!("cost_per_million_events_{name}_on_demand"),
            on_demand.total(),
        );
        report.set(&format!("firehose_cost_per_million_events_{name}"), firehose);
        report.set(&format!("cost_vs_firehose_{name}"), ours.total() / firehose);
        rows.push(format!(
            "| {bytes:.0} B at {rate:.0}/s | ${:.4} (Kinesis {:.4}, S3 {:.4}, SQS {:.4}, DynamoDB {:.4}, compute {:.4}) | ${:.4} | ${firehose:.4} | {:.3} |",
            ours.total(),
            ours.kinesis,
            ours.s3,
            ours.sqs,
            ours.dynamodb,
            ours.compute,
            on_demand.total(),
            ours.total() / firehose,
        ));
    }
    // The shortest flush interval at which 200 B events at 10k/s cost a tenth of Firehose's.
    let tenth = FLUSHES.iter().copied().find(|&flush| {
        let sc = Scenario {
            events_per_s: 10_000.0,
            event_bytes: 200.0,
            active_tables: 10.0,
            flush_s: flush,
        };
        cost::microbatch(&PRICES, &sc, shape, Capacity::Provisioned).total()
            <= cost::firehose(&PRICES, &sc) / 10.0
    });
    report.set(
        "flush_s_for_a_tenth_of_firehose_200b_10k",
        tenth.unwrap_or(f64::NAN),
    );
    report.sections.push((
        "Cost per million events beside Firehose".into(),
        format!(
            "us-east-1 list prices of {} (docs/COST.md); 10 active tables, 1 s flush interval; the call and CPU shape is {}.\n\n{}",
            PRICES.date,
            if measured {
                "this run's (calls per object, per shard-second, CPU per event), the rest assumed"
            } else {
                "assumed"
            },
            rows.join("\n")
        ),
    ));
    plot_cost_vs_flush(&out.join("cost_vs_flush.svg"), shape)?;
    Ok(())
}

/// Cost per million 200 B events at 10k/s against the flush interval, one line per active-table
/// count, with Firehose's price and its default buffering interval.
pub fn plot_cost_vs_flush(path: &Path, shape: &Shape) -> anyhow::Result<()> {
    let at = |tables: f64, flush: f64| {
        let sc = Scenario {
            events_per_s: 10_000.0,
            event_bytes: 200.0,
            active_tables: tables,
            flush_s: flush,
        };
        cost::microbatch(&PRICES, &sc, shape, Capacity::Provisioned).total()
    };
    let firehose = cost::firehose(
        &PRICES,
        &Scenario {
            events_per_s: 10_000.0,
            event_bytes: 200.0,
            active_tables: 1.0,
            flush_s: 1.0,
        },
    );
    let y_max = TABLES.iter().map(|&t| at(t, FLUSHES[0])).fold(firehose, f64::max) * 2.0;
    let y_min = TABLES
        .iter()
        .map(|&t| at(t, FLUSHES[FLUSHES.len() - 1]))
        .fold(f64::INFINITY, f64::min)
        / 2.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "cost per million 200 B events at 10k/s vs flush interval",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d((1f64..300f64).log_scale(), (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("flush interval (s)")
            .y_desc("US$ per million events")
            .draw()?;
        let colours = [BLUE, GREEN, MAGENTA, RED];
        for (&tables, colour) in TABLES.iter().zip(colours) {
            chart
                .draw_series(LineSeries::new(
                    FLUSHES.iter().map(|&f| (f, at(tables, f))),
                    colour.stroke_width(2),
                ))?
                .label(format!("microbatch, {tables:.0} active tables"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .draw_series(LineSeries::new(
                [(1.0, firehose), (300.0, firehose)],
                BLACK.stroke_width(2),
            ))?
            .label("Firehose Direct PUT (any buffering)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart.draw_series(std::iter::once(Circle::new(
            (PRICES.firehose_default_buffer_s, firehose),
            6,
            BLACK.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!(
                "Firehose default buffer {:.0} s",
                PRICES.firehose_default_buffer_s
            ),
            (60.0, firehose * 1.25),
            ("sans-serif", 14),
        )))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cost plot: {e}"))
}

/// The events whose freshness the crash costs, by send time: from [`IN_FLIGHT`] before it (their
/// batches were in the killed importer's hands, invisible on the queue until their visibility
/// timeout ends) to [`CRASH_WINDOW`] after it (the killed consumer's shards unread until the
/// failover time hands their leases over).
pub const IN_FLIGHT: Duration = Duration::from_secs(3);
pub const CRASH_WINDOW: Duration = Duration::from_secs(15);

/// Freshness of the events sent before the crash's reach, within it, and after it, from the
/// tracker's per-send-second histograms.
pub fn kill_phases(report: &mut Report, timeline: &[Histogram<u64>], crash_at: Duration) {
    let from = crash_at.saturating_sub(IN_FLIGHT).as_secs() as usize;
    let to = (crash_at + CRASH_WINDOW).as_secs() as usize;
    let merged = |range: std::ops::Range<usize>| {
        let mut h = Histogram::<u64>::new(3).expect("valid histogram");
        let (start, end) = (range.start.min(timeline.len()), range.end.min(timeline.len()));
        for s in &timeline[start..end] {
            let _ = h.add(s);
        }
        h
    };
    let phases = [
        ("before", merged(0..from)),
        ("during", merged(from..to)),
        ("after", merged(to..usize::MAX)),
    ];
    let mut lines = Vec::new();
    for (name, h) in &phases {
        let [p50, _, p99, max] = percentiles_ms(h);
        report.set(&format!("kill_freshness_p99_{name}_ms"), p99);
        report.set(&format!("kill_freshness_max_{name}_ms"), max);
        lines.push(format!(
            "- {name}: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms ({} events)",
            h.len()
        ));
    }
    report.sections.push((
        "Kill: one of two consumers and the importer SIGKILLed".into(),
        format!(
            "At {:.0} s into the load, `consume-a` and `import` were SIGKILLed; the importer restarted at once, \
             the other consumer took the leases after the failover time. Freshness by send time, \"during\" \
             being the events sent from {} s before the kill to {} s after it:\n\n{}",
            crash_at.as_secs_f64(),
            IN_FLIGHT.as_secs(),
            CRASH_WINDOW.as_secs(),
            lines.join("\n")
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_figures_and_plot_come_out_for_every_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::default();
        costs(&mut report, &Shape::assumed(), false, dir.path()).unwrap();
        for (name, _, _) in SCENARIOS {
            let ours = report.get(&format!("cost_per_million_events_{name}")).unwrap();
            let firehose = report
                .get(&format!("firehose_cost_per_million_events_{name}"))
                .unwrap();
            assert!(ours > 0.0 && firehose > 0.0, "{name}: {ours} {firehose}");
        }
        let svg = std::fs::read_to_string(dir.path().join("cost_vs_flush.svg")).unwrap();
        assert!(
            svg.contains("500 active tables") && svg.contains("Firehose"),
            "{svg}"
        );
    }

    #[test]
    fn the_kill_phases_split_the_events_by_send_second() {
        // One event a second for 40 s, 1 s fresh, except 25 s for those sent in seconds 8–24.
        let timeline: Vec<Histogram<u64>> = (0..40u64)
            .map(|s| {
                let mut h = Histogram::<u64>::new(3).unwrap();
                h.record(if (8..25).contains(&s) {
                    25_000_000
                } else {
                    1_000_000
                })
                .unwrap();
                h
            })
            .collect();
        let mut report = Report::default();
        kill_phases(&mut report, &timeline, Duration::from_secs(10));
        let p99 = |name: &str| report.get(&format!("kill_freshness_p99_{name}_ms")).unwrap();
        assert!((p99("before") - 1000.0).abs() < 10.0, "{:?}", report.figures);
        assert!((p99("during") - 25_000.0).abs() < 100.0, "{:?}", report.figures);
        assert!((p99("after") - 1000.0).abs() < 10.0, "{:?}", report.figures);
    }
}
