//! `microbatch-sim`: run seeds of the deterministic simulation.
//!
//! ```text
//! cargo run --release -p microbatch-sim -- --seeds 0..10000     # a progress bar, then a summary
//! cargo run --release -p microbatch-sim -- --seed 42 --trace    # one seed, its event trace
//! ```
//! Exits non-zero when any seed breaks an invariant, naming the seed and the command to replay it.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use microbatch_sim::{Options, Sabotage, run_seed, run_seeds, workload};

#[derive(Debug, Parser)]
#[command(
    name = "microbatch-sim",
    about = "Deterministic simulation of the microbatch pipeline"
)]
struct Cli {
    /// The seeds to run, as START..END (END excluded).
    #[arg(long, default_value = "0..1000", value_parser = parse_range)]
    seeds: std::ops::Range<u64>,
    /// Run this one seed only (and print its violations).
    #[arg(long)]
    seed: Option<u64>,
    /// With --seed: print the run's event trace.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Threads to run seeds on (each run is single-threaded).
    #[arg(long, default_value_t = default_jobs())]
    jobs: usize,
    /// Run every seed without faults.
    #[arg(long)]
    no_faults: bool,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
    /// Test-only: run a deliberately broken variant, to see the simulation catch it.
    #[arg(long, hide = true, default_value = "none", value_parser = parse_sabotage)]
    sabotage: Sabotage,
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected START..END, got {s:?}"))?;
    let a: u64 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if b <= a {
        return Err(format!("empty range {s}"));
    }
    Ok(a..b)
}

fn parse_sabotage(s: &str) -> Result<Sabotage, String> {
    Sabotage::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Sabotage::ALL.iter().map(|s| s.name()).collect();
        format!("unknown sabotage {s:?}; one of none, {}", names.join(", "))
    })
}

fn replay(seed: u64, cli: &Cli) -> String {
    let mut cmd = format!("cargo run --release -p microbatch-sim -- --seed {seed} --trace");
    if cli.no_faults {
        cmd.push_str(" --no-faults");
    }
    if cli.sabotage != Sabotage::None {
        cmd.push_str(&format!(" --sabotage {}", cli.sabotage.name()));
    }
    cmd
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        sabotage: cli.sabotage,
        trace: cli.trace,
        no_faults: cli.no_faults,
    };
    let mut out = std::io::stdout().lock();
    if let Some(seed) = cli.seed {
        let started = Instant::now();
        let report = run_seed(seed, &workload::catalog(), &options);
        for line in &report.trace {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "seed {seed}: {} events, {} accepted, {} rows, {} faults, {:.1}s virtual in {:.0?}; trace hash {:016x}",
            report.events,
            report.outcome.accepted,
            report.outcome.rows,
            report.faults.values().sum::<u64>(),
            report.duration.as_secs_f64(),
            started.elapsed(),
            report.trace_hash
        );
        if report.passed() {
            let _ = writeln!(out, "no violations");
            return ExitCode::SUCCESS;
        }
        for v in &report.violations {
            let _ = writeln!(out, "VIOLATION: {v}");
        }
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let bar = if cli.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cli.seeds.end - cli.seeds.start)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {per_sec}, eta {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let mut failed = 0;
    let summary = run_seeds(cli.seeds.clone(), &options, cli.jobs, |report| {
        bar.inc(1);
        if !report.passed() {
            failed += 1;
            bar.set_message(format!("{failed} failing"));
        }
    });
    bar.finish_and_clear();
    let _ = write!(out, "{}", summary.render());
    let _ = writeln!(
        out,
        "wall time      {:.1}s on {} thread(s)",
        started.elapsed().as_secs_f64(),
        cli.jobs
    );
    if let Some((seed, v)) = summary.failures.first() {
        let _ = writeln!(out, "FAILED: seed {seed}: {v}");
        let _ = writeln!(out, "replay: {}", replay(*seed, &cli));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
