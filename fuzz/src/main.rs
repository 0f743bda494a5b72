//! `microbatch-fuzz`: the long run of every edge (`scripts/fuzz --minutes N`), or one edge.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use microbatch_fuzz::edges::{EDGES, edge};
use microbatch_fuzz::{keep, run};

/// Fuzz the parsers at microbatch's edges with mutations of valid samples.
#[derive(Debug, Parser)]
#[command(name = "microbatch-fuzz", version, about)]
struct Cli {
    /// One edge (default: all, the time shared between them).
    #[arg(long)]
    edge: Option<String>,
    /// How long in all.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Inputs per edge at most.
    #[arg(long, default_value_t = u64::MAX)]
    inputs: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where findings are kept (the tests replay them).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/regressions"))]
    save: PathBuf,
}

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    let edges: Vec<_> = match &cli.edge {
        Some(name) => match edge(name) {
            Some(e) => vec![e],
            None => {
                let names: Vec<_> = EDGES.iter().map(|e| e.name).collect();
                eprintln!(
                    "microbatch-fuzz: no edge {name:?}; the edges: {}",
                    names.join(", ")
                );
                return ExitCode::FAILURE;
            }
        },
        None => EDGES.iter().collect(),
    };
    let each = Duration::from_secs_f64(cli.minutes * 60.0 / edges.len() as f64);
    println!("| edge | inputs | accepted | refused | findings |\n|---|---|---|---|---|");
    let mut found = 0;
    for e in edges {
        let (stats, findings) = run(
            e,
            cli.seed,
            cli.inputs,
            Some(Instant::now() + each),
            Some(&cli.save),
        );
        println!(
            "| {} | {} | {} | {} | {} |",
            e.name,
            stats.inputs,
            stats.accepted,
            stats.refused,
            findings.len()
        );
        for f in &findings {
            match keep(&cli.save, f.edge, &f.what, &f.input) {
                Ok(path) => eprintln!("  {}: {} (kept as {})", f.edge, f.what, path.display()),
                Err(err) => eprintln!("  {}: {} (not kept: {err})", f.edge, f.what),
            }
        }
        found += findings.len();
    }
    if found > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
