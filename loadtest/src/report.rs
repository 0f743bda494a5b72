//! `report.json` (a flat `figures` object of name → number, plus details), `report.md`, and
//! `timeline.svg` (throughput and latency over time, plotters).

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::{Value, json};

/// Everything a run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: BTreeMap<String, f64>,
    /// Name → (target, met) for the targets of the issue.
    pub targets: Vec<(String, String, Option<bool>)>,
    pub commands: Vec<String>,
    pub notes: Vec<String>,
    pub details: serde_json::Map<String, Value>,
    pub sections: Vec<(String, String)>,
}

/// p50/p90/p99/max of a µs histogram, in ms.
pub fn percentiles_ms(h: &Histogram<u64>) -> [f64; 4] {
    if h.is_empty() {
        return [f64::NAN; 4];
    }
    let ms = |v: u64| v as f64 / 1000.0;
    [
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    ]
}

impl Report {
    pub fn set(&mut self, name: &str, v: f64) {
        self.figures.insert(
            name.to_owned(),
            if v.is_finite() {
                (v * 1000.0).round() / 1000.0
            } else {
                v
            },
        );
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.get(name).copied()
    }

    /// Records a target: `name op bound`.
    pub fn target(&mut self, label: &str, figure: &str, at_least: bool, bound: f64) {
        let met = self
            .get(figure)
            .filter(|v| v.is_finite())
            .map(|v| if at_least { v >= bound } else { v <= bound });
        let op = if at_least { "≥" } else { "≤" };
        let value = self
            .get(figure)
            .map_or("not measured".to_owned(), |v| format!("{v}"));
        self.targets.push((
            label.to_owned(),
            format!("`{figure}` = {value} (target {op} {bound})"),
            met,
        ));
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let figures: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .map(|(k, v)| (k.clone(), if v.is_finite() { json!(v) } else { Value::Null }))
            .collect();
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|(l, d, m)| json!({"target": l, "measured": d, "met": m}))
            .collect();
        let doc = json!({
            "figures": figures,
            "targets": targets,
            "commands": self.commands,
            "notes": self.notes,
            "details": self.details,
        });
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&doc)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("# microbatch loadtest report\n\n");
        if !self.commands.is_empty() {
            s.push_str("Commands:\n\n```sh\n");
            for c in &self.commands {
                s.push_str(c);
                s.push('\n');
            }
            s.push_str("```\n\n");
        }
        if !self.targets.is_empty() {
            s.push_str("## Targets\n\n| target | measured | met |\n|---|---|---|\n");
            for (l, d, m) in &self.targets {
                let m = match m {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "—",
                };
                s.push_str(&format!("| {l} | {d} | {m} |\n"));
            }
            s.push('\n');
        }
        for (title, body) in &self.sections {
            s.push_str(&format!("## {title}\n\n{body}\n\n"));
        }
        s.push_str("## Figures\n\n| figure | value |\n|---|---|\n");
        for (k, v) in &self.figures {
            s.push_str(&format!("| `{k}` | {v} |\n"));
        }
        if !self.notes.is_empty() {
            s.push_str("\n## Notes\n\n");
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }
}

/// One point per second: events acked/s, ack latency p50 and p99 (ms), freshness p99 (ms).
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub second: f64,
    pub events_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub fresh_p99_ms: f64,
}

/// Throughput (top) and latency (bottom, log scale) over the run.
pub fn plot(path: &Path, title: &str, points: &[Point]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(330);
    let x_max = points.iter().map(|p| p.second).fold(1.0, f64::max) + 1.0;
    let tp_max = points.iter().map(|p| p.events_per_s).fold(1.0, f64::max) * 1.15;
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("{title}: events acknowledged per second"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..tp_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("events/s")
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.second, p.events_per_s)),
                &BLUE,
            ))?
            .label("events/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;

        let lat_max = points
            .iter()
            .flat_map(|p| [p.ack_p99_ms, p.fresh_p99_ms])
            .filter(|v| v.is_finite())
            .fold(10.0, f64::max)
            * 1.5;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("latency by second (ms, log scale)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, (0.1f64..lat_max).log_scale())?;
        chart.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
        let series = |f: fn(&Point) -> f64| {
            points
                .iter()
                .filter(|p| f(p).is_finite() && f(p) > 0.0)
                .map(move |p| (p.second, f(p)))
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(LineSeries::new(series(|p| p.ack_p50_ms), &GREEN))?
            .label("ack p50")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        chart
            .draw_series(LineSeries::new(series(|p| p.ack_p99_ms), &RED))?
            .label("ack p99")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(LineSeries::new(series(|p| p.fresh_p99_ms), &MAGENTA))?
            .label("freshness p99 (by send second)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    Ok(())
}
