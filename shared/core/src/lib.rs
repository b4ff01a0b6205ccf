//! Business rules of retail-sync, written against ports so that the same code runs in a Lambda function
//! (AWS adapters), in the local runner (embedded adapters) and in unit tests (in-memory adapters). The
//! redemption API is its own crate (`retail-sync-redemption`) over the same ports.
//!
//! # Layout
//! - [`error`]: the crate's error, classified retryable (redeliver) or permanent (record, tell, stop).
//! - [`ports`]: role-sized traits the workflows need: state stores, publisher, ERP, loyalty, clock, metrics.
//! - [`idempotency`]: keys, payload fingerprints, records and the claim decision.
//! - [`saga`]: one record per business transaction, versioned, with the step log operators read.
//! - [`ledger`]: what each system holds for a transaction, and the guards of follow-ups (shipments,
//!   cancellations, returns) against it.
//! - [`proration`]: exact integer proration on cumulative values (redemption shares, partial returns).
//! - [`domain`]: retail rules that are ours (sale arithmetic, eligible value, transaction keys).
//! - [`steps`]: the workflow steps, each written on one skeleton (`Workflow`, `Cx`: typed input, effect
//!   once, settle, announce) and built by one `Wiring` with only the ports it uses.
//! - [`batch`]: runs a step over a batch of queue messages, publishes in batches and reports which
//!   messages failed (the SQS partial batch response).
//! - [`retry`]: fix and retry: a step refused by the ERP or the loyalty platform attempted again, under
//!   a new attempt's key, once the cause is fixed there.
//! - [`runner`]: polls queues the way Lambda's SQS event source does, for backends without Lambda.
//! - [`memory`]: in-memory adapters of the ports, for unit tests and benchmarks.

pub mod batch;
pub mod domain;
pub mod error;
pub mod guard;
pub mod idempotency;
pub mod ledger;
pub mod members;
pub mod memory;
pub mod ports;
pub mod proration;
pub mod reconcile;
pub mod retry;
pub mod runner;
pub mod saga;
pub mod settlement;
pub mod steps;

pub use error::{BoxError, Error};
