//! microbatch-adapters: everything that touches the world, behind the ports of `microbatch-core`.
//!
//! - [`local`]: the embedded stack (SQLite stream, queue and leases; a directory as object store);
//!   [`aws`]: Kinesis, S3, SQS and DynamoDB; [`warehouse`]: PostgreSQL and SQLite warehouses;
//!   [`stack`]: every port opened from the configuration, local or AWS by kind.
//! - [`producer`]: the HTTP service; [`app`]: the three services wired with graceful shutdown;
//!   [`commands`]: the binary's subcommands.
//! - [`config`], [`catalog_dir`], [`runtime`] (clock, entropy, ids), [`telemetry`] (logs, metrics),
//!   [`workload`] (the demo's and tests' realistic traffic).

pub mod app;
pub mod aws;
pub mod catalog_dir;
pub mod commands;
pub mod config;
pub mod inspect;
pub mod local;
pub mod producer;
pub mod runtime;
pub mod stack;
pub mod telemetry;
pub mod warehouse;
pub mod worker_id;
pub mod workload;
