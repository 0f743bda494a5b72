//! The driver loops, one per service, written against the [`ports`](crate::ports) only.
//!
//! Each driver owns the pure state machines of its service and feeds them what the ports return,
//! with the time from the [`Clock`](crate::ports::Clock). Production runs them on tokio over the
//! real adapters; the simulation runs the very same code over in-memory ports in virtual time.
//! Each exposes `step` (one bounded unit of work, for a deterministic scheduler) and `run` (steps
//! until told to stop, then drains).

pub mod consumer;
pub mod importer;
pub mod producer;
mod retry;

pub use consumer::{Consumer, ConsumerConfig, ConsumerError};
pub use importer::{Importer, ImporterConfig, ImporterError};
pub use producer::{Producer, ProducerConfig, ProducerHandle, SubmitError};
