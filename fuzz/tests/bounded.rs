//! The bounded run of `./scripts/test`: every edge, a fixed number of inputs from a fixed seed
//! (the same inputs on every machine), and every kept regression case replayed.

use microbatch_fuzz::edges::{EDGES, edge};
use microbatch_fuzz::{check, run, warm};

/// Inputs per edge: a few seconds each in a debug build.
const INPUTS: u64 = 3_000;

#[test]
fn every_edge_survives_its_bounded_run() {
    let mut report = Vec::new();
    for e in EDGES {
        let (stats, findings) = run(e, 20261203, INPUTS, None, None);
        assert_eq!(stats.inputs, INPUTS);
        assert!(
            stats.refused > 0,
            "{}: no mutation was refused, so none reached its checks",
            e.name
        );
        for f in &findings {
            report.push(format!(
                "{}: {} ({} bytes: {:?})",
                f.edge,
                f.what,
                f.input.len(),
                String::from_utf8_lossy(&f.input[..f.input.len().min(200)])
            ));
        }
    }
    assert!(report.is_empty(), "findings:\n{}", report.join("\n"));
}

#[test]
fn every_kept_regression_case_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let name = entry.file_name().into_string().unwrap();
        let e = edge(&name).unwrap_or_else(|| panic!("regressions/{name}: no such edge"));
        warm(e);
        for case in std::fs::read_dir(entry.path()).unwrap() {
            let path = case.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            if let Err(what) = check(e, &input) {
                panic!("{}: {what}", path.display());
            }
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression cases replayed");
}
