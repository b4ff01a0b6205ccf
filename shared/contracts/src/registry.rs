//! Which event types and versions exist, their JSON Schemas, and the typed [`Event`] union.
//!
//! The schemas are generated from the Rust types (schemars) and committed under `events/schemas/`; a test
//! compares the two, so the contract a channel team reads is the one the code enforces.

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::envelope::{Detail, Metadata};
use crate::events::*;
use crate::schema_check::Schema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Emitted by channels and systems, accepted through ingest.
    Inbound,
    /// Emitted by retail-sync.
    Outbound,
}

macro_rules! event_types {
    ($($name:ident => $dir:ident),+ $(,)?) => {
        /// Every event type of the contracts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $($name),+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$name),+];

            /// The EventBridge `detail-type`.
            pub fn name(self) -> &'static str {
                match self { $(EventType::$name => stringify!($name)),+ }
            }

            pub fn direction(self) -> Direction {
                match self { $(EventType::$name => Direction::$dir),+ }
            }

            fn generate_schema(self) -> Value {
                match self {
                    $(EventType::$name => serde_json::to_value(schemars::schema_for!(Detail<$name>))
                        .expect("a generated schema is JSON")),+
                }
            }
        }

        /// A typed event of any type (v1 payloads).
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event { $($name(Detail<$name>)),+ }

        impl Event {
            pub fn event_type(&self) -> EventType {
                match self { $(Event::$name(_) => EventType::$name),+ }
            }

            pub fn metadata(&self) -> &Metadata {
                match self { $(Event::$name(d) => &d.metadata),+ }
            }

            /// Builds the typed event of `event_type` from a `detail` value.
            pub fn from_detail(event_type: EventType, detail: Value) -> Result<Self, serde_json::Error> {
                Ok(match event_type {
                    $(EventType::$name => Event::$name(serde_json::from_value(detail)?)),+
                })
            }

            /// Builds the typed event of `event_type` from the JSON text of a `detail`: straight into the
            /// payload types, without a `Value` tree in between (the hot path of every workflow step).
            pub fn from_detail_str(event_type: EventType, detail: &str) -> Result<Self, serde_json::Error> {
                Ok(match event_type {
                    $(EventType::$name => Event::$name(serde_json::from_str(detail)?)),+
                })
            }

            /// The payload (`data`) alone, serializable as the typed payload is (e.g. to fingerprint it).
            pub fn data(&self) -> EventData<'_> {
                EventData(self)
            }
        }

        impl Serialize for EventData<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 { $(Event::$name(d) => d.data.serialize(s)),+ }
            }
        }

        impl Serialize for Event {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $(Event::$name(d) => d.serialize(s)),+ }
            }
        }

        $(impl From<Detail<$name>> for Event {
            fn from(d: Detail<$name>) -> Self { Event::$name(d) }
        })+
    };
}

/// The `data` of an [`Event`], see [`Event::data`].
#[derive(Debug, Clone, Copy)]
pub struct EventData<'a>(&'a Event);

event_types! {
    SaleCompleted => Inbound,
    OrderPlaced => Inbound,
    OrderShipped => Inbound,
    OrderCancelled => Inbound,
    ReturnReceived => Inbound,
    RefundSettled => Inbound,
    CustomerUpdated => Inbound,
    TierChanged => Inbound,
    MemberEnrolled => Inbound,
    ErasureRequested => Inbound,
    MemberMergeRequested => Inbound,
    ErpSalePosted => Outbound,
    ErpReturnPosted => Outbound,
    LoyaltyAccrued => Outbound,
    LoyaltyReversed => Outbound,
    OrderCancellationApplied => Outbound,
    RedemptionCommitted => Outbound,
    CompensationRequested => Outbound,
    WorkflowException => Outbound,
    DuplicateMemberSuspected => Outbound,
    MemberChanged => Outbound,
    ReconciliationMismatch => Outbound,
}

/// The schema versions each type supports. All types are at v1; a v2 adds its number here and its
/// payload type above.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

impl EventType {
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.name() == name)
    }

    pub fn supports_version(self, version: u32) -> bool {
        SUPPORTED_VERSIONS.contains(&version)
    }

    /// File name of the committed schema, relative to `events/schemas/`.
    pub fn schema_file_name(self, version: u32) -> String {
        format!("{}.v{version}.schema.json", self.name())
    }

    /// The JSON Schema (2020-12) of the `detail` of this type at `version`.
    pub fn schema(self, version: u32) -> Option<Value> {
        if !self.supports_version(version) {
            return None;
        }
        let mut schema = self.generate_schema();
        // The Rust type allows any version; the schema of one version pins it, so a v1 schema never
        // validates a detail that claims v2.
        if let Some(v) = schema.pointer_mut("/$defs/Metadata/properties/schema_version") {
            *v = serde_json::json!({ "type": "integer", "const": version });
        }
        let obj = schema.as_object_mut()?;
        obj.insert(
            "$id".into(),
            format!("urn:retail-sync:event:{}:v{version}", self.name()).into(),
        );
        obj.insert(
            "title".into(),
            format!("{} v{version} (EventBridge detail)", self.name()).into(),
        );
        Some(schema)
    }

    /// Validates a `detail` against this type's schema at `version`; the findings name each violation's
    /// location.
    pub fn validate(self, version: u32, detail: &Value) -> Result<(), Vec<String>> {
        let schema = self
            .validator(version)
            .ok_or_else(|| vec![format!("no schema version {version}")])?;
        let findings: Vec<String> = schema
            .findings(detail)
            .into_iter()
            .map(|f| f.to_string())
            .collect();
        if findings.is_empty() {
            Ok(())
        } else {
            Err(findings)
        }
    }

    /// The compiled schema of this type at `version`, compiled the first time this type is validated and
    /// kept for the process. One cell per type and version, so a container compiles only the types it
    /// meets (compiling is a walk of the generated schema: `retail-sync bench cold-start` prints what each
    /// type's first event costs).
    pub(crate) fn validator(self, version: u32) -> Option<&'static Schema> {
        const TYPES: usize = EventType::ALL.len();
        static VALIDATORS: [OnceLock<Schema>; TYPES * SUPPORTED_VERSIONS.len()] =
            [const { OnceLock::new() }; TYPES * SUPPORTED_VERSIONS.len()];
        let t = EventType::ALL.iter().position(|&t| t == self)?;
        let v = SUPPORTED_VERSIONS.iter().position(|&v| v == version)?;
        let cell = VALIDATORS.get(v * TYPES + t)?;
        Some(cell.get_or_init(|| {
            let schema = self.schema(version).expect("supported version has a schema");
            Schema::compile(&schema).unwrap_or_else(|e| {
                panic!(
                    "generated schema of {} v{version} is not one we check: {e}",
                    self.name()
                )
            })
        }))
    }
}

/// Schema of a payload type alone, for documentation tools.
pub fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a generated schema is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each schema is compiled on its type's first event now, not all at the first event of any type: a
    /// schema that did not compile would otherwise surface only when its type first arrives.
    #[test]
    fn every_supported_schema_compiles_and_is_kept() {
        for &t in EventType::ALL {
            for &v in SUPPORTED_VERSIONS {
                let first = t.validator(v).map(|c| c as *const _);
                assert!(first.is_some(), "{} v{v}", t.name());
                assert_eq!(t.validator(v).map(|c| c as *const _), first, "compiled once");
            }
            assert!(t.validator(0).is_none() && t.validator(99).is_none());
        }
    }
}
