//! The committed contracts (`events/schemas`) and samples (`events/samples`) against the Rust types.
//! Set `UPDATE_SCHEMAS=1` to rewrite the schema files after changing a type on purpose.

use std::path::{Path, PathBuf};

use retail_sync_contracts::registry::SUPPORTED_VERSIONS;
use retail_sync_contracts::{BusEvent, Direction, Event, EventType, IngestLimits, parse_inbound};
use serde_json::Value;

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

#[test]
fn committed_schemas_match_the_rust_types() {
    let dir = events_dir().join("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for &t in EventType::ALL {
        for &v in SUPPORTED_VERSIONS {
            let path = dir.join(t.schema_file_name(v));
            let generated = pretty(&t.schema(v).unwrap());
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &generated).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
                drifted.push(path.display().to_string());
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "schemas differ from the Rust types (UPDATE_SCHEMAS=1 rewrites them): {drifted:?}"
    );
    // No stray schema for a type or version that does not exist.
    let expected = EventType::ALL.len() * SUPPORTED_VERSIONS.len();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        expected,
        "unexpected files in {}",
        dir.display()
    );
}

#[test]
fn every_event_type_has_a_sample_that_its_schema_and_type_accept() {
    for &t in EventType::ALL {
        let path = events_dir().join("samples").join(format!("{}.json", t.name()));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let envelope: BusEvent<Value> = serde_json::from_slice(&raw).unwrap();
        assert_eq!(envelope.detail_type, t.name(), "{}", path.display());
        t.validate(1, &envelope.detail)
            .unwrap_or_else(|f| panic!("{}: {f:?}", path.display()));
        let typed = Event::from_detail(t, envelope.detail.clone()).unwrap();
        // Round trip: what we would publish is what the sample says.
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            envelope.detail,
            "{}",
            path.display()
        );
        match t.direction() {
            Direction::Inbound => {
                assert!(envelope.source.starts_with("retail."), "{}", path.display());
                parse_inbound(&raw, &IngestLimits::default())
                    .unwrap_or_else(|r| panic!("{}: {r:?}", path.display()));
            }
            Direction::Outbound => {
                assert!(envelope.source.starts_with("retail-sync"), "{}", path.display());
                // Ingest is for channels: our own events are not accepted as input.
                assert!(parse_inbound(&raw, &IngestLimits::default()).is_err());
            }
        }
    }
}

#[test]
fn the_schema_rejects_what_the_type_rejects() {
    let raw = std::fs::read(events_dir().join("samples/SaleCompleted.json")).unwrap();
    let envelope: BusEvent<Value> = serde_json::from_slice(&raw).unwrap();
    type Mutation = fn(&mut Value);
    let cases: [(&str, Mutation); 5] = [
        ("negative amount", |d| {
            d["data"]["lines"][0]["unit_price_minor"] = (-1).into()
        }),
        ("unknown currency", |d| d["data"]["currency"] = "XXY".into()),
        ("extra field", |d| d["data"]["surprise"] = true.into()),
        ("bad id", |d| d["data"]["receipt_id"] = "has spaces".into()),
        ("no correlation id", |d| {
            d["metadata"].as_object_mut().unwrap().remove("correlation_id");
        }),
    ];
    for (name, mutate) in cases {
        let mut detail = envelope.detail.clone();
        mutate(&mut detail);
        assert!(
            EventType::SaleCompleted.validate(1, &detail).is_err(),
            "schema accepted: {name}"
        );
        assert!(
            Event::from_detail(EventType::SaleCompleted, detail).is_err(),
            "type accepted: {name}"
        );
    }
}

/// The source policy covers exactly the inbound types (each sent by some channel, none outbound), every
/// channel but retail-sync's own has its row, and every inbound sample's source may send it.
#[test]
fn the_source_policy_covers_the_inbound_types_and_the_samples_follow_it() {
    use retail_sync_contracts::{Channel, Direction, EventType, SOURCE_POLICY, check_source};
    for &t in EventType::ALL {
        let senders = SOURCE_POLICY
            .iter()
            .filter(|(_, types)| types.contains(&t))
            .count();
        match t.direction() {
            Direction::Inbound => assert!(senders > 0, "no channel may send {}", t.name()),
            _ => assert_eq!(senders, 0, "{} is retail-sync's own", t.name()),
        }
    }
    assert!(SOURCE_POLICY.iter().all(|(c, _)| *c != Channel::RetailSync));
    assert_eq!(Channel::of_source("retail.oms"), Some(Channel::Oms));
    assert_eq!(Channel::of_source("retail.retail_sync"), None);
    assert_eq!(Channel::of_source("retail-sync"), None);
    for &t in EventType::ALL
        .iter()
        .filter(|t| t.direction() == Direction::Inbound)
    {
        let path = format!(
            "{}/../../events/samples/{}.json",
            env!("CARGO_MANIFEST_DIR"),
            t.name()
        );
        let sample: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let source = sample["source"].as_str().unwrap();
        assert!(check_source(source, t).is_ok(), "{}: {source}", t.name());
    }
    assert_eq!(
        check_source("retail.crm", EventType::OrderCancelled).unwrap_err(),
        "source retail.crm may not send OrderCancelled; it may send CustomerUpdated, TierChanged, MemberEnrolled, ErasureRequested, MemberMergeRequested"
    );
}
