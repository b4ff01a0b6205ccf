//! Canonical event contracts of retail-sync, version 1.
//!
//! # Layout
//! - [`values`]: validated value types shared by every event (identifiers, currency, amounts, points).
//!   They are "parse, don't validate" newtypes: a value that exists is a valid one.
//! - [`envelope`]: the EventBridge envelope and our `detail` shape (`metadata` + `data`).
//! - [`events`]: the payload (`data`) of every inbound and outbound event type.
//! - [`registry`]: which event types and versions exist, their JSON Schemas (generated from the Rust types,
//!   committed under `events/schemas/`, and compared by a test so they cannot drift).
//! - [`schema_check`]: checks a `detail` against its generated schema (the keywords our schemas use).
//! - [`mapping`]: where a mapping file (a connector's, a channel platform's) is read from.
//! - [`ingest`]: the one parser of raw inbound bytes; it returns a typed event or a [`Rejection`] with a
//!   machine-readable [`ReasonCode`] for the quarantine.

pub mod envelope;
pub mod events;
pub mod ingest;
pub mod mapping;
pub mod registry;
pub mod schema_check;
pub mod values;

pub use envelope::{BusEvent, Channel, Detail, Metadata, SOURCE_POLICY, check_source};
pub use events::*;
pub use ingest::{IngestLimits, Rejection, parse_inbound, parse_json_strictly};
pub use registry::{Direction, Event, EventType};
pub use values::*;
