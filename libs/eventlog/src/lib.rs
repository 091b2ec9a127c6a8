//! The event log: the single source of truth of promptops.
//!
//! Every service appends facts (events) about its aggregates here and learns
//! about other services by reading their events. Two backends sit behind one
//! API, [`EventLog`]:
//!
//! - **JetStream** ([`jetstream`]) in production: one stream per bounded
//!   context (`EVT_PROMPTS` on `evt.prompts.>`), file storage, deletes and
//!   purges denied; appends use `Nats-Msg-Id` for deduplication and
//!   `Nats-Expected-Last-Subject-Sequence` for optimistic concurrency.
//! - **Embedded** ([`embedded`]) for the single-process default: the same
//!   semantics over one SQLite file.
//!
//! Both are checked by one conformance suite (`tests/conformance.rs`).
//! Read models are built by the [`projection`] runner, which stores its
//! checkpoint in the same transaction as the rows it writes.

pub mod aggregate;
pub mod embedded;
mod error;
mod event;
pub mod jetstream;
mod log;
pub mod projection;
mod subject;

pub use error::{AppendError, StoreError};
pub use event::{Appended, EventDraft, EventMetadata, Expected, RecordedEvent, envelope_for};
pub use log::{ConsumerOptions, Delivery, EventLog, Start, Subscription};
pub use subject::{AggregateRef, Context, SubjectError};

/// The envelope every event travels in (re-exported from the proto crate).
pub use promptops_proto::eventlog::v1::EventEnvelope;
