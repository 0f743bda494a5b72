//! microbatch-adapters: everything that touches the world, behind the ports of `microbatch-core`.

pub mod app;
pub mod catalog_dir;
pub mod config;
pub mod producer;
pub mod runtime;
pub mod telemetry;
pub mod workload;
