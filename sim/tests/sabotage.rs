//! The simulation must be able to fail: each deliberately broken variant of the system is caught
//! within a few hundred seeds, by the invariant it breaks.

use microbatch_sim::workload::catalog;
use microbatch_sim::{Options, Sabotage, run_seed};

/// Runs seeds from 0 until one breaks an invariant; returns the seed and its first violation.
fn first_failure(sabotage: Sabotage, limit: u64) -> Option<(u64, String)> {
    let catalog = catalog();
    let options = Options {
        sabotage,
        ..Options::default()
    };
    (0..limit).find_map(|seed| {
        let report = run_seed(seed, &catalog, &options);
        (!report.violations.is_empty()).then(|| (seed, report.violations.join("\n")))
    })
}

fn caught(sabotage: Sabotage, invariant: &str) {
    let Some((seed, violation)) = first_failure(sabotage, 300) else {
        panic!("{} was not caught in 300 seeds", sabotage.name());
    };
    assert!(
        violation.contains(invariant),
        "{} caught at seed {seed}, but by {violation:?} rather than {invariant:?}",
        sabotage.name()
    );
}

#[test]
fn checkpoint_before_flush_is_caught() {
    caught(Sabotage::CheckpointBeforeFlush, "checkpoint safety");
}

#[test]
fn skipping_the_manifest_check_is_caught() {
    caught(Sabotage::SkipManifestCheck, "load manifest");
}

#[test]
fn ack_before_commit_is_caught() {
    caught(Sabotage::AckBeforeCommit, "never loaded");
}

#[test]
fn skipping_the_row_dedupe_is_caught() {
    caught(Sabotage::SkipRowDedupe, "exactly once");
}

#[test]
fn dropping_rejected_events_is_caught() {
    caught(Sabotage::DropRejected, "rejected/");
}

#[test]
fn ignoring_a_write_error_is_caught() {
    caught(Sabotage::IgnoreWriteError, "checkpoint safety");
}

#[test]
fn loading_nothing_of_a_batch_with_one_bad_row_is_caught() {
    caught(
        Sabotage::RefuseWholeBatch,
        "dead-letter queue holds a healthy batch",
    );
}

#[test]
fn dropping_refused_rows_is_caught() {
    caught(Sabotage::DropRefusedRows, "is not in rejected/rows/");
}

#[test]
fn reopening_an_expired_cursor_at_the_tip_is_caught() {
    caught(Sabotage::ReopenAtLatest, "checkpoint safety");
}

#[test]
fn taking_an_empty_page_for_the_end_of_the_shard_is_caught() {
    caught(Sabotage::EmptyPageEndsShard, "SHARD_END while open");
}

#[test]
fn the_unbroken_system_passes_the_same_seeds() {
    let catalog = catalog();
    for seed in 0..10 {
        let report = run_seed(seed, &catalog, &Options::default());
        assert!(report.passed(), "seed {seed}: {:?}", report.violations);
    }
}
