//! The EventBridge envelope and the `detail` shape every retail-sync event shares.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::registry::EventType;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Pos,
    Ecommerce,
    Mobile,
    Marketplace,
    Oms,
    Crm,
    /// The loyalty platform itself (tier changes, sign-ups in its app).
    Loyalty,
    /// Operators' requests through the `retail-sync` command (member merges, erasures).
    Operator,
    /// Events retail-sync itself emits.
    RetailSync,
}

/// The EventBridge `source` retail-sync uses for its outbound events.
pub const SOURCE_RETAIL_SYNC: &str = "retail-sync";
/// The `source` of inbound events after ingest accepted them (the rules of the workflow steps match it).
pub const SOURCE_INGEST: &str = "retail-sync.ingest";
/// Channels' sources start with this (`retail.pos`, `retail.ecommerce`, …); the inbound rule matches it.
pub const CHANNEL_SOURCE_PREFIX: &str = "retail.";

/// Which channel may send which inbound event types: the source policy ingest enforces (the README's
/// "Security" section prints this table). A channel publishes with `source` `retail.<channel>`; anything
/// else, or a type its channel may not send, is refused as `source_not_allowed`.
pub const SOURCE_POLICY: &[(Channel, &[EventType])] = &[
    (
        Channel::Pos,
        &[
            EventType::SaleCompleted,
            EventType::ReturnReceived,
            EventType::RefundSettled,
            EventType::CustomerUpdated,
            EventType::MemberEnrolled,
        ],
    ),
    (
        Channel::Ecommerce,
        &[
            EventType::OrderPlaced,
            EventType::OrderShipped,
            EventType::OrderCancelled,
            EventType::ReturnReceived,
            EventType::RefundSettled,
            EventType::CustomerUpdated,
            EventType::MemberEnrolled,
        ],
    ),
    (
        Channel::Mobile,
        &[
            EventType::OrderPlaced,
            EventType::OrderCancelled,
            EventType::ReturnReceived,
            EventType::RefundSettled,
            EventType::CustomerUpdated,
            EventType::MemberEnrolled,
        ],
    ),
    (
        Channel::Marketplace,
        &[
            EventType::OrderPlaced,
            EventType::OrderShipped,
            EventType::OrderCancelled,
            EventType::ReturnReceived,
            EventType::RefundSettled,
        ],
    ),
    (
        Channel::Oms,
        &[
            EventType::OrderShipped,
            EventType::OrderCancelled,
            EventType::ReturnReceived,
            EventType::RefundSettled,
        ],
    ),
    (
        Channel::Crm,
        &[
            EventType::CustomerUpdated,
            EventType::TierChanged,
            EventType::MemberEnrolled,
            EventType::ErasureRequested,
            EventType::MemberMergeRequested,
        ],
    ),
    (
        Channel::Loyalty,
        &[
            EventType::CustomerUpdated,
            EventType::TierChanged,
            EventType::MemberEnrolled,
        ],
    ),
    (
        Channel::Operator,
        &[EventType::ErasureRequested, EventType::MemberMergeRequested],
    ),
];

impl Channel {
    /// The channel whose `source` (`retail.<channel>`) this is; `None` for any other source.
    pub fn of_source(source: &str) -> Option<Channel> {
        let name = source.strip_prefix(CHANNEL_SOURCE_PREFIX)?;
        SOURCE_POLICY
            .iter()
            .map(|(channel, _)| *channel)
            .find(|channel| channel.as_str() == name)
    }

    /// The inbound event types this channel may send.
    pub fn may_send(self) -> &'static [EventType] {
        SOURCE_POLICY
            .iter()
            .find(|(channel, _)| *channel == self)
            .map_or(&[], |(_, types)| *types)
    }

    /// The wire name (`pos`, `ecommerce`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pos => "pos",
            Self::Ecommerce => "ecommerce",
            Self::Mobile => "mobile",
            Self::Marketplace => "marketplace",
            Self::Oms => "oms",
            Self::Crm => "crm",
            Self::Loyalty => "loyalty",
            Self::Operator => "operator",
            Self::RetailSync => "retail_sync",
        }
    }
}

/// Checks `source` against the [`SOURCE_POLICY`]: `Err` says why it may not send `event_type`.
pub fn check_source(source: &str, event_type: EventType) -> Result<Channel, String> {
    let Some(channel) = Channel::of_source(source) else {
        let channels: Vec<String> = SOURCE_POLICY
            .iter()
            .map(|(c, _)| format!("{CHANNEL_SOURCE_PREFIX}{}", c.as_str()))
            .collect();
        return Err(format!(
            "source {source:?} is not a channel's ({})",
            channels.join(", ")
        ));
    };
    if channel.may_send().contains(&event_type) {
        return Ok(channel);
    }
    let allowed: Vec<&str> = channel.may_send().iter().map(|t| t.name()).collect();
    Err(format!(
        "source {source} may not send {}; it may send {}",
        event_type.name(),
        allowed.join(", ")
    ))
}
