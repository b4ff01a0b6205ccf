//! The wiring of retail-sync, read from the one place it is written: `infra/template.yaml`.
//!
//! # Layout
//! - [`topology`]: queues, DLQs, tables, rules and which function consumes which queue, so that the
//!   embedded backend and the emulator provisioning are wired exactly as a deployment.
//! - [`pattern`]: EventBridge event-pattern matching, for the operators the template uses.
//! - [`view`]: an event cut down, straight from its JSON text, to what a set of patterns looks at.

pub mod pattern;
pub mod topology;
pub mod view;

pub use pattern::{Pattern, PatternError};
pub use topology::{
    ArchiveSpec, CHANNEL_BUS, FunctionSpec, INTERNAL_BUS, QueueSpec, RuleSpec, TableSpec, Topology,
    TopologyError,
};
pub use view::Lookups;

/// The template, relative to the workspace root.
pub const TEMPLATE_PATH: &str = "infra/template.yaml";
