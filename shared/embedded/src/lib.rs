//! The embedded backend: what AWS gives retail-sync (SQS queues with DLQs, DynamoDB tables, an
//! EventBridge bus with rules), in-process and durable on local disk, for laptops, tests and demos.
//!
//! # Layout
//! - [`topology`]: reads `infra/template.yaml` into queues, DLQs, rules and functions, so a local run is
//!   wired exactly as a deployment.
//! - [`pattern`]: EventBridge event-pattern matching, for the operators the template uses.
//! - [`store`]: one SQLite file (WAL, so the CLI can read while a run writes) holding queues, state
//!   tables and the bus archive, and the adapters of the core ports over it.
//!
//! Semantics kept from AWS: visibility timeout, receive count → DLQ after maxReceiveCount, conditional
//! writes, TTL (expired records stop counting), pattern routing of every published event.

pub mod pattern;
pub mod store;
pub mod topology;

pub use store::{Embedded, EmbeddedError};
pub use topology::{Topology, TopologyError};
