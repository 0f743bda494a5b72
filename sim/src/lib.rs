//! Deterministic simulation of the microbatch pipeline. Empty until the simulation issue
//! (see `issues`): nothing here claims to simulate anything yet.
