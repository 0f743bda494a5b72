//! microbatch-core: the pure heart of microbatch.
//!
//! Everything here is sans-IO: state machines take inputs (a record read, the time now, an ack,
//! an error) and return what to do. The world is reached only through the [`ports`] traits, which
//! the adapters implement for AWS and the embedded stack and the simulation implements in memory.
//! See `DESIGN.md` in the shared notes for the flow these pieces make up.

pub mod batch;
pub mod event;
pub mod position;
pub mod time;
pub mod catalog;
pub mod csv;
pub mod mapping;
pub mod batcher;
pub mod checkpoint;
