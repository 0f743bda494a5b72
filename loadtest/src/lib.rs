//! Load and latency tests for microbatch against real components: an open-loop HTTP load
//! generator (no coordinated omission), accept → queryable freshness from the warehouse, the
//! exactly-once check (lost and duplicated events), the baselines every figure is a ratio
//! against, scaling runs, and the report (`report.json`, `report.md`, `timeline.svg`).
//!
//! The pipeline under test sits behind [`target::Target`]: the embedded stack
//! ([`target::Embedded`]) or the emulated AWS one ([`target::EmulatedAws`]), whose AWS calls
//! [`calls`] counts and [`cost`] prices beside Firehose.

pub mod aws_figures;
pub mod bare_kinesis;
pub mod baselines;
pub mod calls;
pub mod cost;
pub mod fresh;
pub mod load;
pub mod probe;
pub mod report;
pub mod suite;
pub mod target;
pub mod workload;
