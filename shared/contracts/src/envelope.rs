//! The EventBridge envelope and the `detail` shape every retail-sync event shares.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{CorrelationId, EventId};

/// An event as EventBridge delivers it to an SQS target (and as `PutEvents` fields map onto it).
/// `account` and `region` are optional: emulators (moto) omit `account`, and local runs have neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent<D> {
    #[serde(default = "default_version")]
    pub version: String,
    pub id: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub time: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    pub detail: D,
}

fn default_version() -> String {
    "0".to_owned()
}

/// The `detail` of every event: who/when/which transaction (`metadata`) and the payload (`data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Detail<T> {
    pub metadata: Metadata,
    pub data: T,
}

/// Envelope metadata. `correlation_id` names the business transaction (e.g. the order), `event_id` this
/// one event; idempotency keys are derived from the business identity in `data`, never from these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub event_id: EventId,
    /// Version of the contract of `data`; together with `detail-type` it selects the schema.
    #[schemars(range(min = 1))]
    pub schema_version: u32,
    pub correlation_id: CorrelationId,
    /// The event that caused this one, for outbound events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<EventId>,
    /// When the business fact happened (RFC 3339), not when it was delivered.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub occurred_at: jiff::Timestamp,
    pub channel: Channel,
}

/// Where an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Pos,
    Ecommerce,
    Mobile,
    Marketplace,
    Oms,
    Crm,
    /// Events retail-sync itself emits.
    RetailSync,
}

/// The EventBridge `source` retail-sync uses for its outbound events.
pub const SOURCE_RETAIL_SYNC: &str = "retail-sync";
/// The `source` of inbound events after ingest accepted them (the rules of the workflow steps match it).
pub const SOURCE_INGEST: &str = "retail-sync.ingest";
/// Channels' sources start with this (`retail.pos`, `retail.ecommerce`, …); the inbound rule matches it.
pub const CHANNEL_SOURCE_PREFIX: &str = "retail.";
