//! Deterministic simulation of the microbatch pipeline.
//!
//! The production driver loops from `microbatch-core` run unchanged over in-memory ports
//! ([`world`]) on one thread, in virtual time ([`clock`]): a run is a function of its seed.
//! This crate holds the simulated world; the fault injection, seeded workload, invariant checker
//! and CLI are the simulation issue's work and are not here yet.

pub mod clock;
pub mod world;
