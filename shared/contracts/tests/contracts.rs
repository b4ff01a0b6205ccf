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
