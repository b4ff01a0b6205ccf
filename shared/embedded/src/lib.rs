//! The embedded backend: what AWS gives retail-sync (SQS queues with DLQs, DynamoDB tables, an
//! EventBridge bus with rules), in-process and durable on local disk, for laptops, tests and demos.
//!
//! # Layout
//! - [`store`]: one SQLite file (WAL, so the CLI can read while a run writes) holding queues, state
//!   tables and the bus archive, and the adapters of the core ports over it.
//!
//! Semantics kept from AWS: visibility timeout, receive count → DLQ after maxReceiveCount, conditional
//! writes, TTL (expired records stop counting), pattern routing of every published event. The wiring
//! (queues, DLQs, rules) comes from `retail_sync_topology`, i.e. from `infra/template.yaml`.

pub mod store;

pub use retail_sync_topology::{Topology, TopologyError};
pub use store::{Embedded, EmbeddedError, StoredMessage};
