//! The one parser of raw inbound bytes. Everything a channel can get wrong ends here as a [`Rejection`]
//! with a machine-readable [`ReasonCode`], so ingest can quarantine it instead of retrying or dropping it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::BusEvent;
use crate::events::ReasonCode;
use crate::registry::{Direction, Event, EventType};

#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest accepted envelope in bytes. EventBridge itself takes entries up to 256 KiB; the contract
    /// keeps well below so a quarantined copy still fits a DynamoDB item (400 KB).
    pub max_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 }
    }
}

/// Why an input was refused, with whatever identity could still be read from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason:?}: {message}")]
pub struct Rejection {
    pub reason: ReasonCode,
    pub message: String,
    /// Individual findings (JSON pointer and message), at most [`MAX_FINDINGS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

pub const MAX_FINDINGS: usize = 20;

impl Rejection {
    /// Boxed: rejections travel in `Err` variants and inside the core error, where a large inline value
    /// would make every `Result` large.
    fn new(reason: ReasonCode, message: impl Into<String>) -> Box<Self> {
        Box::new(Self {
            reason,
            message: message.into(),
            findings: Vec::new(),
            detail_type: None,
            event_id: None,
            correlation_id: None,
        })
    }

    /// Fills in what identity the raw input shows, so an operator can find the sender. Read again from
    /// the bytes: only a refusal pays for it, while an accepted input's tree is taken apart as it is read.
    fn identified_by(mut self: Box<Self>, raw: &[u8]) -> Box<Self> {
        let Ok(raw) = serde_json::from_slice::<Value>(raw) else {
            return self;
        };
        let s = |p: &str| raw.pointer(p).and_then(Value::as_str).map(str::to_owned);
        self.detail_type = s("/detail-type");
        self.event_id = s("/detail/metadata/event_id").or_else(|| s("/id"));
        self.correlation_id = s("/detail/metadata/correlation_id");
        self
    }
}

/// Parses and validates one inbound envelope: size, JSON, envelope shape, known inbound type, supported
/// version, schema, then the typed payload.
pub fn parse_inbound(raw: &[u8], limits: &IngestLimits) -> Result<BusEvent<Event>, Box<Rejection>> {
    if raw.len() > limits.max_bytes {
        return Err(Rejection::new(
            ReasonCode::Oversized,
            format!(
                "{} bytes exceed the limit of {} bytes",
                raw.len(),
                limits.max_bytes
            ),
        ));
    }
    let value: Value = serde_json::from_slice::<Strict>(raw)
        .map_err(|e| Rejection::new(ReasonCode::InvalidJson, format!("not JSON: {e}")))?
        .0;
    let reject = |reason, message: String| Rejection::new(reason, message).identified_by(raw);
    // The tree is moved into the envelope, and its detail into the typed event below: one parse of the
    // text, and no string of it copied on the way (reading from a borrowed tree would copy every one).
    let envelope = BusEvent::<Value>::deserialize(value).map_err(|e| {
        reject(
            ReasonCode::NotAnEnvelope,
            format!("not an EventBridge event: {e}"),
        )
    })?;

    let event_type = EventType::from_name(&envelope.detail_type)
        .filter(|t| t.direction() == Direction::Inbound)
        .ok_or_else(|| {
            reject(
                ReasonCode::UnknownEventType,
                format!("{:?} is not an inbound event type", envelope.detail_type),
            )
        })?;
    let version = envelope
        .detail
        .pointer("/metadata/schema_version")
        .ok_or_else(|| {
            reject(
                ReasonCode::SchemaViolation,
                "detail.metadata.schema_version is missing".into(),
            )
        })?;
    let version = version
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&v| event_type.supports_version(v))
        .ok_or_else(|| {
            reject(
                ReasonCode::UnknownSchemaVersion,
                format!("{} has no schema version {version}", event_type.name()),
            )
        })?;

    let schema = event_type
        .validator(version)
        .expect("supported versions have validators");
    // Most input is valid: `is_valid` words nothing and stops at the first violation; the findings are
    // collected only for input that fails it.
    if !schema.is_valid(&envelope.detail) {
        let findings = schema.findings(&envelope.detail);
        let missing_id = findings
            .iter()
            .any(|f| f.missing.as_deref().is_some_and(|m| m.ends_with("_id")));
        let mut rejection = reject(
            if missing_id {
                ReasonCode::MissingIdentifier
            } else {
                ReasonCode::SchemaViolation
            },
            format!(
                "{} v{version} violates its schema ({} findings)",
                event_type.name(),
                findings.len()
            ),
        );
        rejection.findings = findings
            .iter()
            .take(MAX_FINDINGS)
            .map(|f| format!("/detail{f}"))
            .collect();
        return Err(rejection);
    }

    let detail = Event::from_detail(event_type, envelope.detail)
        .map_err(|e| reject(ReasonCode::SchemaViolation, format!("{}: {e}", event_type.name())))?;
    Ok(BusEvent {
        version: envelope.version,
        id: envelope.id,
        detail_type: envelope.detail_type,
        source: envelope.source,
        account: envelope.account,
        time: envelope.time,
        region: envelope.region,
        resources: envelope.resources,
        detail,
    })
}

/// Parses JSON text as ingest does: duplicate object keys are an error (see `Strict`). What feeds
/// events on a channel's behalf (a local run's input files) reads them this way, so an event ingest
/// would refuse reaches ingest as it was written instead of with one of its duplicates dropped.
pub fn parse_json_strictly(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Strict>(text).map(|Strict(v)| v)
}

/// JSON read into a [`Value`] that refuses duplicate object keys. `serde_json` keeps the last of
/// duplicates silently, so `{"quantity": 1, "quantity": 100}` would mean whatever the last parser in the
/// chain decides; RFC 8259 leaves it undefined and I-JSON (RFC 7493) forbids it, so ingest refuses it as
/// `invalid_json`. One pass, the same work as parsing into a `Value`; nesting stays bounded by
/// `serde_json`'s recursion limit (128).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity, so this is always a number.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}
