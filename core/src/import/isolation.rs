//! Finding the rows a warehouse refuses, so the others of the batch load (contract 4: one bad
//! row never sinks the good rows of its batch).
//!
//! The importer starts a [`RowIsolation`] when a load fails with a [row
//! error](super::ErrorClass::Row) and asks it, step by step, what to try next:
//!
//! - [`Step::Load`]: load the batch without the rows refused so far. When the warehouse names the
//!   row it refused (PostgreSQL's COPY says which line; Redshift's `stl_load_errors` too), that
//!   row is refused and the load tried again without it: one attempt per bad row.
//! - [`Step::Probe`]: when the warehouse does not say which row, bisect: probe (load and roll
//!   back) halves of the batch, then halves of the halves that fail, down to single rows.
//!   Nothing is committed until the final [`Step::Load`], which carries the batch's manifest row,
//!   so a crash in the middle leaves nothing behind and a redelivery starts over.
//! - [`Step::GiveUp`]: more than `max_refused` rows refused (the table, not the rows, is wrong:
//!   a type changed under the catalog), or bisection found nothing to blame: the batch is
//!   dead-lettered as before.

use std::collections::BTreeMap;
use std::ops::Range;

use super::classify::{ErrorClass, WarehouseError, classify};

/// What to try next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Load (and commit) the batch without these rows.
    Load { skip: Vec<u64> },
    /// Load only `rows` (without the refused ones) and roll back: does the warehouse take them?
    Probe { rows: Range<u64>, skip: Vec<u64> },
    /// Stop isolating; dead-letter with this reason.
    GiveUp { reason: String },
}

/// How a step went.
#[derive(Clone, Debug)]
pub enum Outcome<'e> {
    Ok,
    Failed(&'e WarehouseError),
}

/// Where the isolation of one batch stands.
#[derive(Clone, Debug)]
pub struct RowIsolation {
    rows: u64,
    max_refused: usize,
    /// Refused rows and the warehouse's reason for each.
    refused: BTreeMap<u64, String>,
    /// Ranges still to probe, the next on top.
    probes: Vec<Range<u64>>,
    /// A load failed without naming a row, so the ranges are being probed.
    bisecting: bool,
    /// Bisection rounds done; a load that fails unnamed after a full round gives up.
    rounds: u32,
    gave_up: Option<String>,
}

impl RowIsolation {
    /// Starts from the failure of the batch's first load (`rows` rows, none refused yet).
    pub fn new(rows: u64, max_refused: usize, first_failure: &WarehouseError) -> Self {
        let mut isolation = RowIsolation {
            rows,
            max_refused,
            refused: BTreeMap::new(),
            probes: Vec::new(),
            bisecting: false,
            rounds: 0,
            gave_up: None,
        };
        isolation.load_failed(first_failure);
        isolation
    }

    /// The rows refused so far, with the warehouse's reasons.
    pub fn refused(&self) -> &BTreeMap<u64, String> {
        &self.refused
    }

    fn skip(&self) -> Vec<u64> {
        self.refused.keys().copied().collect()
    }

    /// What to do now.
    pub fn next(&self) -> Step {
        if let Some(reason) = &self.gave_up {
            return Step::GiveUp {
                reason: reason.clone(),
            };
        }
        match self.probes.last() {
            Some(rows) => Step::Probe {
                rows: rows.clone(),
                skip: self.skip(),
            },
            None => Step::Load { skip: self.skip() },
        }
    }

    /// Feeds back how the step [`next`](Self::next) gave went; `Err` carries an error that is
    /// not a row's (transient or permanent): the caller leaves isolation and handles it as any
    /// other load failure.
    pub fn record(&mut self, outcome: Outcome<'_>) -> Result<(), WarehouseError> {
        let probing = self.probes.last().cloned();
        match (outcome, probing) {
            (Outcome::Ok, Some(_)) => {
                self.probes.pop();
                Ok(())
            }
            // The final load committed: done (the caller stops asking).
            (Outcome::Ok, None) => Ok(()),
            (Outcome::Failed(e), _) if classify(e) != ErrorClass::Row => Err(e.clone()),
            (Outcome::Failed(e), Some(range)) => {
                match e.row {
                    // Named: refuse it and probe the same range again.
                    Some(row) if range.contains(&row) && !self.refused.contains_key(&row) => {
                        self.refuse(row, e);
                    }
                    _ => {
                        self.probes.pop();
                        let live: Vec<u64> =
                            range.clone().filter(|r| !self.refused.contains_key(r)).collect();
                        match live.len() {
                            0 => {}
                            1 => self.refuse(live[0], e),
                            n => {
                                let mid = live[n / 2];
                                // The upper half on top of the lower, so the lower is probed first.
                                self.probes.push(mid..range.end);
                                self.probes.push(range.start..mid);
                            }
                        }
                    }
                }
                Ok(())
            }
            (Outcome::Failed(e), None) => {
                self.load_failed(e);
                Ok(())
            }
        }
    }

    fn load_failed(&mut self, e: &WarehouseError) {
        match e.row {
            Some(row) if row < self.rows && !self.refused.contains_key(&row) => self.refuse(row, e),
            _ if self.bisecting && self.rounds >= 2 => {
                self.gave_up = Some(format!(
                    "the warehouse refuses the batch without naming a row, and no row alone is refused: {e}"
                ));
            }
            _ => {
                self.bisecting = true;
                self.rounds += 1;
                if self.rows > 0 {
                    self.probes.push(0..self.rows);
                } else {
                    self.gave_up = Some(format!("the warehouse refuses an empty batch: {e}"));
                }
            }
        }
    }

    fn refuse(&mut self, row: u64, e: &WarehouseError) {
        self.refused.insert(row, super::one_line(&e.to_string()));
        if self.refused.len() > self.max_refused {
            self.gave_up = Some(format!(
                "the warehouse refused more than {} of its {} rows (the table's definition, not the rows, \
                 is likely wrong); last: {}",
                self.max_refused,
                self.rows,
                super::one_line(&e.to_string())
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bad_value() -> WarehouseError {
        WarehouseError::with_sqlstate("22P02", "invalid input syntax for type bigint")
    }

    /// Runs an isolation against a warehouse that refuses `bad` rows, naming them or not.
    fn isolate(rows: u64, bad: &[u64], named: bool, max: usize) -> (Step, Vec<u64>, usize) {
        let refuses = |selected: &mut dyn Iterator<Item = u64>| -> Option<WarehouseError> {
            let first_bad = Iterator::find(&mut &mut *selected, |r| bad.contains(r))?;
            Some(if named {
                bad_value().at_row(first_bad)
            } else {
                bad_value()
            })
        };
        let first = refuses(&mut (0..rows)).expect("the batch has a bad row");
        let mut iso = RowIsolation::new(rows, max, &first);
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "isolation does not terminate");
            let step = iso.next();
            let failure = match &step {
                Step::Load { skip } => refuses(&mut (0..rows).filter(|r| !skip.contains(r))),
                Step::Probe { rows: range, skip } => {
                    refuses(&mut range.clone().filter(|r| !skip.contains(r)))
                }
                Step::GiveUp { .. } => return (step, iso.refused().keys().copied().collect(), steps),
            };
            match (&step, failure) {
                (Step::Load { .. }, None) => return (step, iso.refused().keys().copied().collect(), steps),
                (_, None) => iso.record(Outcome::Ok).unwrap(),
                (_, Some(e)) => iso.record(Outcome::Failed(&e)).unwrap(),
            }
        }
    }

    #[test]
    fn named_rows_cost_one_attempt_each() {
        let (step, refused, steps) = isolate(1000, &[3, 500, 999], true, 10);
        assert_eq!(
            step,
            Step::Load {
                skip: vec![3, 500, 999]
            }
        );
        assert_eq!(refused, [3, 500, 999]);
        assert_eq!(
            steps, 3,
            "two retries after the first failure, then the load that commits"
        );
    }

    #[test]
    fn unnamed_rows_are_found_by_bisection() {
        let (step, refused, steps) = isolate(1000, &[3, 500], false, 10);
        assert_eq!(step, Step::Load { skip: vec![3, 500] });
        assert_eq!(refused, [3, 500]);
        assert!(steps < 60, "{steps} steps: logarithmic per bad row");
    }

    #[test]
    fn too_many_refused_rows_give_up() {
        let bad: Vec<u64> = (0..50).collect();
        let (step, _, _) = isolate(100, &bad, true, 10);
        let Step::GiveUp { reason } = step else {
            panic!("expected to give up")
        };
        assert!(reason.contains("more than 10 of its 100 rows"), "{reason}");
    }

    #[test]
    fn a_batch_no_row_of_which_is_to_blame_gives_up() {
        // The warehouse refuses the whole batch, but every range probed alone loads.
        let mut iso = RowIsolation::new(4, 10, &bad_value());
        let mut steps = 0;
        while let step @ (Step::Load { .. } | Step::Probe { .. }) = iso.next() {
            steps += 1;
            assert!(steps < 100);
            match step {
                Step::Probe { .. } => iso.record(Outcome::Ok).unwrap(),
                _ => iso.record(Outcome::Failed(&bad_value())).unwrap(),
            }
        }
        assert!(matches!(iso.next(), Step::GiveUp { .. }));
        assert!(iso.refused().is_empty());
    }

    #[test]
    fn other_errors_leave_isolation() {
        let mut iso = RowIsolation::new(10, 10, &bad_value().at_row(2));
        let transient = WarehouseError::with_sqlstate("40001", "could not serialize access");
        assert_eq!(iso.record(Outcome::Failed(&transient)), Err(transient));
    }

    proptest! {
        #[test]
        fn finds_exactly_the_bad_rows(
            rows in 1u64..300,
            picks in prop::collection::btree_set(0u64..300, 1..6),
            named in any::<bool>(),
        ) {
            let bad: Vec<u64> = picks.into_iter().filter(|r| *r < rows).collect();
            prop_assume!(!bad.is_empty());
            let (step, refused, _) = isolate(rows, &bad, named, 10);
            prop_assert_eq!(step, Step::Load { skip: bad.clone() });
            prop_assert_eq!(refused, bad);
        }
    }
}
