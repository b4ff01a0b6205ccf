//! DynamoDB item ↔ record mapping. Every item keeps the whole record as JSON in `item` (the one source
//! of truth when reading back) plus the few attributes conditions, indexes and TTL need as top-level
//! values. A saga's JSON is stored deflated (see [`saga_item`]); the other records as text.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

use retail_sync_core::Error;
use retail_sync_core::idempotency::{IdempotencyRecord, RecordState};
use retail_sync_core::ports::QuarantineItem;
use retail_sync_core::saga::Saga;

pub type Item = HashMap<String, AttributeValue>;

/// Attribute names, shared by the items and the expressions over them.
pub mod attr {
    pub const PK: &str = "pk";
    pub const ITEM: &str = "item";
    pub const STATE: &str = "state";
    /// TTL attribute (whole epoch seconds, as DynamoDB's TTL sweeper reads it).
    pub const EXPIRES_AT: &str = "expires_at";
    /// The exact expiry, in epoch milliseconds, for conditions (see [`super::epoch_ms_exact`]).
    pub const EXPIRES_AT_MS: &str = "expires_at_ms";
    pub const LEASE_UNTIL: &str = "lease_until";
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const VERSION: &str = "version";
    pub const STATUS: &str = "status";
    pub const RECEIVED_AT: &str = "received_at";
}

/// `state` of an in-progress idempotency record, as conditions compare it.
pub const STATE_IN_PROGRESS: &str = "in_progress";
pub const STATE_COMPLETED: &str = "completed";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A timestamp as epoch milliseconds with the sub-millisecond rest as decimals (`1800000000123.456789`).
/// DynamoDB compares numbers exactly (38 digits), so a condition over these values decides exactly as
/// `IdempotencyRecord::is_live` does on the `Timestamp`s themselves; whole milliseconds would let a
/// claim whose lease ends within the same millisecond as `now` be overwritten while it is still live.
pub fn epoch_ms_exact(t: Timestamp) -> String {
    let ns = t.as_nanosecond();
    let (ms, rest) = (ns.div_euclid(1_000_000), ns.rem_euclid(1_000_000));
    if rest == 0 {
        ms.to_string()
    } else {
        format!("{ms}.{rest:06}")
    }
}

/// Epoch seconds rounded up, for the TTL attribute: DynamoDB may delete an item once its TTL has
/// passed, and rounding down would let it delete a record up to a second before it stops being live.
pub fn ttl_seconds(t: Timestamp) -> i64 {
    t.as_second() + i64::from(t.subsec_nanosecond() > 0)
}

pub fn ms_value(t: Timestamp) -> AttributeValue {
    n(epoch_ms_exact(t))
}

fn json<T: Serialize>(record: &T) -> AttributeValue {
    s(serde_json::to_string(record).expect("records serialize"))
}

/// zlib's default level: level 9 saves under 1% more on a saga, level 1 costs 4%.
const DEFLATE_LEVEL: u8 = 6;

/// The most a stored record may inflate to. DynamoDB keeps items up to 400 KB and JSON deflates about
/// 2.5 times here; anything that inflates beyond this is not a record we wrote, and must not take the
/// function's memory with it.
const INFLATED_LIMIT: usize = 4 << 20;

/// A record as deflated JSON (raw deflate, RFC 1951), in a binary attribute.
fn deflated_json<T: Serialize>(record: &T) -> AttributeValue {
    let text = serde_json::to_vec(record).expect("records serialize");
    AttributeValue::B(Blob::new(miniz_oxide::deflate::compress_to_vec(
        &text,
        DEFLATE_LEVEL,
    )))
}

/// Deflated JSON back to its text. Parsed as text, like a string `item`: `from_slice` would instantiate a
/// second deserializer for every record type (about 0.2 MB of each function binary).
fn inflate(deflated: &[u8]) -> Result<String, retail_sync_core::BoxError> {
    let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, INFLATED_LIMIT)
        .map_err(|e| format!("attribute {} does not inflate: {e}", attr::ITEM))?;
    Ok(String::from_utf8(bytes)?)
}

/// The record a stored item holds in its `item` attribute: JSON text, or deflated JSON in a binary
/// attribute. Either is read whatever the record, so items written before sagas were deflated still load.
pub fn record_of<T: DeserializeOwned>(item: &Item, what: impl FnOnce() -> String) -> Result<T, Error> {
    let corrupt = |cause: retail_sync_core::BoxError| Error::corrupt(what(), cause);
    match item.get(attr::ITEM) {
        Some(AttributeValue::S(text)) => serde_json::from_str(text).map_err(|e| corrupt(e.into())),
        Some(AttributeValue::B(deflated)) => inflate(deflated.as_ref())
            .and_then(|text| serde_json::from_str(&text).map_err(Into::into))
            .map_err(corrupt),
        Some(_) => Err(corrupt(
            format!("attribute {} is neither a string nor binary", attr::ITEM).into(),
        )),
        None => Err(corrupt(format!("attribute {} is missing", attr::ITEM).into())),
    }
}

pub fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

pub fn key(pk: &str) -> Item {
    HashMap::from([(attr::PK.to_owned(), s(pk))])
}

/// The serialized form of a record, which `release` compares the stored `item` against.
pub fn idempotency_json(record: &IdempotencyRecord) -> AttributeValue {
    json(record)
}

pub fn idempotency_item(record: &IdempotencyRecord) -> Item {
    let mut item = HashMap::from([
        (attr::PK.to_owned(), s(record.key.as_str())),
        (attr::ITEM.to_owned(), idempotency_json(record)),
        (attr::EXPIRES_AT.to_owned(), n(ttl_seconds(record.expires_at))),
        (attr::EXPIRES_AT_MS.to_owned(), ms_value(record.expires_at)),
    ]);
    let state = match &record.state {
        RecordState::InProgress { lease_until } => {
            item.insert(attr::LEASE_UNTIL.to_owned(), ms_value(*lease_until));
            STATE_IN_PROGRESS
        }
        RecordState::Completed { .. } => STATE_COMPLETED,
    };
    item.insert(attr::STATE.to_owned(), s(state));
    item
}

pub fn idempotency_of(item: &Item) -> Result<IdempotencyRecord, Error> {
    record_of(item, || {
        format!(
            "idempotency record {}",
            string_attr(item, attr::PK).unwrap_or("?")
        )
    })
}

/// A saga is the audit trail of a transaction: with a `retention` it expires that long after its last
/// change (every write moves `expires_at` forward), without one it is kept.
///
/// Its JSON is stored deflated. DynamoDB bills a write unit per KB of the item written (twice inside a
/// transaction) and a sale saga's JSON, which keeps the origin event whole, is about 1.5 KB: deflated to
/// about 0.65 KB the item stays under 1 KB, and every step's write costs half as many units. Nothing
/// compares or indexes the JSON itself (conditions read `version`, the index `correlation_id`), so the
/// only costs are CPU (about 30 µs a write and 10 µs a read, `bench aws --cost`) and that the console
/// shows the saga as binary.
pub fn saga_item(saga: &Saga, retention: Option<Duration>) -> Item {
    let mut item = HashMap::from([
        (attr::PK.to_owned(), s(saga.id.as_str())),
        (attr::CORRELATION_ID.to_owned(), s(saga.correlation_id.as_str())),
        (attr::VERSION.to_owned(), n(saga.version)),
        (attr::STATUS.to_owned(), s(saga.status.as_str())),
        (attr::ITEM.to_owned(), deflated_json(saga)),
    ]);
    if let Some(retention) = retention {
        item.insert(
            attr::EXPIRES_AT.to_owned(),
            n(ttl_seconds(saga.updated_at + retention)),
        );
    }
    item
}

pub fn saga_of(item: &Item) -> Result<Saga, Error> {
    record_of(item, || {
        format!("saga {}", string_attr(item, attr::PK).unwrap_or("?"))
    })
}

pub fn quarantine_item(q: &QuarantineItem, retention: Duration) -> Item {
    HashMap::from([
        (attr::PK.to_owned(), s(q.id.as_str())),
        (attr::ITEM.to_owned(), json(q)),
        (attr::RECEIVED_AT.to_owned(), ms_value(q.received_at)),
        (
            attr::EXPIRES_AT.to_owned(),
            n(ttl_seconds(q.received_at + retention)),
        ),
    ])
}

pub fn quarantine_of(item: &Item) -> Result<QuarantineItem, Error> {
    record_of(item, || {
        format!("quarantine item {}", string_attr(item, attr::PK).unwrap_or("?"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_sync_contracts::Rejection;
    use retail_sync_contracts::events::ReasonCode;
    use retail_sync_contracts::values::ExternalRef;
    use retail_sync_core::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy};
    use retail_sync_core::saga::StepOutcome;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn exact_milliseconds_keep_every_nanosecond_and_whole_ones_stay_integers() {
        assert_eq!(epoch_ms_exact(at(123)), "1800000000123");
        let t = Timestamp::from_nanosecond(1_800_000_000_123_000_456).unwrap();
        assert_eq!(epoch_ms_exact(t), "1800000000123.000456");
        let before_epoch = Timestamp::from_nanosecond(-1_500_000).unwrap();
        assert_eq!(epoch_ms_exact(before_epoch), "-2.500000");
    }

    #[test]
    fn ttl_seconds_round_up_so_the_sweeper_never_deletes_a_live_record() {
        assert_eq!(ttl_seconds(at(0)), 1_800_000_000);
        assert_eq!(ttl_seconds(at(1)), 1_800_000_001);
        assert_eq!(ttl_seconds(at(999)), 1_800_000_001);
    }

    #[test]
    fn an_in_progress_record_round_trips_and_carries_its_lease_and_state() {
        let policy = IdempotencyPolicy::default();
        let record = policy.in_progress(IdempotencyKey::for_step("k", "step"), Fingerprint::of(&1), at(5));
        let item = idempotency_item(&record);
        assert_eq!(idempotency_of(&item).unwrap(), record);
        assert_eq!(string_attr(&item, attr::STATE), Some(STATE_IN_PROGRESS));
        assert_eq!(item[attr::LEASE_UNTIL], AttributeValue::N("1800000060005".into()));
        assert_eq!(
            item[attr::EXPIRES_AT],
            AttributeValue::N((1_800_000_000 + 35 * 24 * 3600 + 1).to_string())
        );
    }

    #[test]
    fn a_completed_record_round_trips_without_a_lease() {
        let policy = IdempotencyPolicy::default();
        let claim = policy.in_progress(IdempotencyKey::for_step("k", "step"), Fingerprint::of(&1), at(0));
        let done = policy.completed(&claim, serde_json::json!({"doc": "D1"}), at(1));
        let item = idempotency_item(&done);
        assert_eq!(idempotency_of(&item).unwrap(), done);
        assert_eq!(string_attr(&item, attr::STATE), Some(STATE_COMPLETED));
        assert!(!item.contains_key(attr::LEASE_UNTIL));
    }

    #[test]
    fn a_quarantine_item_round_trips_and_expires_after_ninety_days() {
        let q = QuarantineItem {
            id: "m-1".into(),
            received_at: at(0),
            step: "ingest".into(),
            rejection: Rejection {
                reason: ReasonCode::SchemaViolation,
                message: "bad".into(),
                findings: vec!["/data: missing".into()],
                detail_type: Some("SaleCompleted".into()),
                event_id: None,
                correlation_id: None,
            },
            body: "{}".into(),
            body_truncated: false,
        };
        let item = quarantine_item(&q, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(quarantine_of(&item).unwrap(), q);
        assert_eq!(
            item[attr::EXPIRES_AT],
            AttributeValue::N((1_800_000_000 + 90 * 24 * 3600).to_string())
        );
    }

    #[test]
    fn a_saga_round_trips_with_its_index_and_condition_attributes() {
        let sample: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/samples/SaleCompleted.json")).unwrap();
        let event_type = retail_sync_contracts::EventType::from_name("SaleCompleted").unwrap();
        let event = retail_sync_contracts::Event::from_detail(event_type, sample["detail"].clone()).unwrap();
        let mut saga = Saga::start(
            retail_sync_core::saga::SagaId::from_stored("receipt:s:r".into()),
            &event,
            at(0),
        );
        saga.version = 7;
        let item = saga_item(&saga, None);
        assert_eq!(saga_of(&item).unwrap(), saga);
        assert!(!item.contains_key(attr::EXPIRES_AT), "kept without a retention");
        // With one, it expires that long after its last change.
        saga.updated_at = at(5_000);
        let item = saga_item(&saga, Some(Duration::from_secs(400 * 24 * 3600)));
        assert_eq!(
            item[attr::EXPIRES_AT],
            AttributeValue::N((1_800_000_005 + 400 * 24 * 3600).to_string())
        );
        assert_eq!(item[attr::VERSION], AttributeValue::N("7".into()));
        assert_eq!(
            string_attr(&item, attr::CORRELATION_ID),
            Some("pos-store-042-r-000123")
        );
        assert_eq!(string_attr(&item, attr::STATUS), Some("running"));
    }

    /// The sample sale's saga as the last step leaves it: origin, ledger and three timeline entries.
    fn completed_sale_saga() -> Saga {
        let sample: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/samples/SaleCompleted.json")).unwrap();
        let event_type = retail_sync_contracts::EventType::from_name("SaleCompleted").unwrap();
        let event = retail_sync_contracts::Event::from_detail(event_type, sample["detail"].clone()).unwrap();
        let id = retail_sync_core::saga::SagaId::from_stored("receipt:store-042:r-000123".into());
        let mut saga = Saga::start(id, &event, at(0));
        saga.record("ingest", StepOutcome::Accepted, "SaleCompleted accepted", at(1));
        saga.record(
            "post-sale-to-erp",
            StepOutcome::Done,
            "ERP document ERP-00000001",
            at(2),
        );
        saga.record(
            "accrue-loyalty",
            StepOutcome::Done,
            "120 points (LT-00000001)",
            at(3),
        );
        saga.ledger.erp_document_id = Some(ExternalRef::parse("ERP-00000001").unwrap());
        saga.ledger.loyalty_transaction_id = Some(ExternalRef::parse("LT-00000001").unwrap());
        saga.version = 3;
        saga
    }

    #[test]
    fn a_sale_saga_is_stored_deflated_in_under_one_write_unit() {
        let saga = completed_sale_saga();
        let json = serde_json::to_string(&saga).unwrap();
        let item = saga_item(&saga, Some(Duration::from_secs(400 * 24 * 3600)));
        assert!(
            matches!(item[attr::ITEM], AttributeValue::B(_)),
            "{:?}",
            item[attr::ITEM]
        );
        let size = crate::meter::item_size(&item);
        // As text the item would take two write units a write; deflated it takes one.
        assert!(json.len() > 1024, "the JSON alone is {} bytes", json.len());
        assert!(size <= 1024, "the stored item is {size} bytes");
        assert_eq!(saga_of(&item).unwrap(), saga);
    }

    #[test]
    fn a_saga_stored_as_text_before_deflating_still_loads() {
        let saga = completed_sale_saga();
        let mut item = saga_item(&saga, None);
        item.insert(attr::ITEM.to_owned(), json(&saga));
        assert_eq!(saga_of(&item).unwrap(), saga);
    }

    #[test]
    fn a_record_that_does_not_inflate_or_inflates_too_far_is_corrupt() {
        let garbage = AttributeValue::B(Blob::new(vec![0xff, 0x00, 0x13, 0x37]));
        let mut item = key("receipt:s:r");
        item.insert(attr::ITEM.to_owned(), garbage);
        let e = saga_of(&item).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("does not inflate"), "{e}");
        // A few KB that inflate past the limit are refused, not inflated into the function's memory.
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![b' '; INFLATED_LIMIT + 1], 6);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        item.insert(attr::ITEM.to_owned(), AttributeValue::B(Blob::new(bomb)));
        let e = saga_of(&item).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        // Deflated bytes that are not text, or text that is not a saga, are corrupt like a text `item`
        // that is not one.
        let not_text = miniz_oxide::deflate::compress_to_vec(&[0xff, 0xfe, 0x00], 6);
        item.insert(attr::ITEM.to_owned(), AttributeValue::B(Blob::new(not_text)));
        let e = saga_of(&item).unwrap_err();
        assert!(
            matches!(e, Error::Corrupt { .. }) && e.to_string().contains("utf-8"),
            "{e}"
        );
        let not_a_saga = miniz_oxide::deflate::compress_to_vec(b"{\"id\": 1}", 6);
        item.insert(attr::ITEM.to_owned(), AttributeValue::B(Blob::new(not_a_saga)));
        assert!(matches!(saga_of(&item).unwrap_err(), Error::Corrupt { .. }));
    }

    #[test]
    fn an_item_without_its_record_is_corrupt_not_missing() {
        let e = saga_of(&key("receipt:s:r")).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("saga receipt:s:r"), "{e}");
    }
}
