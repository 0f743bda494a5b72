//! Load and latency tests for microbatch. Empty until the loadtest issue (see `issues`):
//! nothing here claims to measure anything yet.
