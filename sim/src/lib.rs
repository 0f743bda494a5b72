//! Deterministic simulation of the microbatch pipeline, in the manner of FoundationDB's simulator
//! and TigerBeetle's VOPR.
//!
//! The production driver loops from `microbatch-core` (producer, consumer, importer) run
//! unchanged over in-memory ports ([`world`]) on one thread, in virtual time ([`clock`], [`exec`]):
//! a run is a function of its seed. The seed draws the configuration, the workload
//! ([`workload`]), the fault plan and every fault ([`ctx`]); the [`check`]er holds the run to the
//! contracts of DESIGN.md at every step and at quiescence; [`run`] puts one seed together and
//! [`summary`] many. The `microbatch-sim` binary is the command line.

pub mod check;
pub mod clock;
pub mod ctx;
pub mod exec;
pub mod run;
pub mod summary;
pub mod workload;
pub mod world;

pub use ctx::{Fault, Sabotage};
pub use run::{Options, Report, run_seed};
pub use summary::{Summary, run_seeds};
