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

/// What an operator reads in a refused event's quarantine entry: each finding names its place under
/// `/detail` and words the violation (the README's examples, "Event contracts"); a missing identifier is
/// its own reason.
#[test]
fn ingest_findings_name_the_place_and_the_violation() {
    let raw = std::fs::read(events_dir().join("samples/SaleCompleted.json")).unwrap();
    let mut envelope: Value = serde_json::from_slice(&raw).unwrap();
    let data = &mut envelope["detail"]["data"];
    data["lines"][0]["quantity"] = 0.into();
    data["currency"] = "XXY".into();
    data["surprise"] = true.into();
    data.as_object_mut().unwrap().remove("receipt_id");
    let refused =
        parse_inbound(&serde_json::to_vec(&envelope).unwrap(), &IngestLimits::default()).unwrap_err();
    assert_eq!(
        refused.reason,
        retail_sync_contracts::ReasonCode::MissingIdentifier
    );
    assert_eq!(
        refused.message,
        "SaleCompleted v1 violates its schema (4 findings)"
    );
    assert_eq!(
        refused.findings,
        [
            "/detail/data: \"receipt_id\" is a required property",
            "/detail/data/currency: \"XXY\" is not one of \"AED\", \"AFN\" or 154 other candidates",
            "/detail/data/lines/0/quantity: 0 is less than the minimum of 1",
            "/detail/data: Additional properties are not allowed ('surprise' was unexpected)",
        ]
    );
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

/// Our schema check (`retail_sync_contracts::schema_check`) against a general JSON Schema validator (the
/// `jsonschema` crate, which ingest used before): on every sample event and every event of the sample
/// days, changed in every place in many ways (each value replaced by values of every JSON type and of the
/// edges our schemas draw, each member removed, a member added to each object, each list emptied or
/// lengthened), both give the same findings, worded the same, in the same order. This is what keeps a
/// quarantine entry's findings, and so its id, what they were. (The general validator turns on
/// serde_json's `float_roundtrip` in this test's build, which only changes how the last digit of a
/// decimal is rounded when parsed; the decimals here are exact in binary and parse the same either way.)
#[test]
fn findings_are_those_of_a_general_json_schema_validator() {
    let mut details: Vec<(EventType, Value)> = Vec::new();
    for &t in EventType::ALL {
        let raw = std::fs::read(events_dir().join("samples").join(format!("{}.json", t.name()))).unwrap();
        let envelope: BusEvent<Value> = serde_json::from_slice(&raw).unwrap();
        details.push((t, envelope.detail));
    }
    for day in ["pos-day", "orders-day", "members-day"] {
        let text = std::fs::read_to_string(events_dir().join(format!("streams/{day}.jsonl"))).unwrap();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(t) = v["detail-type"].as_str().and_then(EventType::from_name) else {
                continue;
            };
            details.push((t, v["detail"].clone()));
        }
    }
    let replacements: Vec<Value> = serde_json::from_str(
        r#"[null, true, false, 0, 1, -1, 1.0, 1.5, -0.5, 9999, 10000, 100000, 100001,
            9007199254740991, 9007199254740992, 18446744073709551615, -9223372036854775808, 1e300,
            "", "x", "a b", "EUR", "pos", "web", "x_y-z.1", "-x", "ä", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "a\n", "ääääääääääääääääääääääääääääääääääääääääääääääääääääääääääääääää", 9007199254740991.0,
            9007199254740992.0, 18446744073709551616.0,
            "2026-11-29T10:00:00Z", "not a date", [], [1], [{}], {}, {"k": 1}]"#,
    )
    .unwrap();

    let mut general = std::collections::HashMap::new();
    let mut compared = 0usize;
    let mut invalid = 0usize;
    let mut differences = Vec::new();
    for (t, detail) in &details {
        let (validator, compiled) = general.entry(*t).or_insert_with(|| {
            let schema = t.schema(1).unwrap();
            (
                jsonschema::validator_for(&schema).expect("the general validator compiles it"),
                retail_sync_contracts::schema_check::Schema::compile(&schema).unwrap(),
            )
        });
        let mut variants = vec![detail.clone()];
        for pointer in pointers(detail) {
            for r in &replacements {
                let mut v = detail.clone();
                *v.pointer_mut(&pointer).unwrap() = r.clone();
                variants.push(v);
            }
            let mut v = detail.clone();
            match v.pointer_mut(&pointer).unwrap() {
                Value::Object(m) => {
                    m.insert("zz_surprise".into(), 1.into());
                    m.insert("aa_surprise".into(), Value::Null);
                }
                Value::Array(a) => {
                    let first = a.first().cloned().unwrap_or(Value::Null);
                    a.extend(std::iter::repeat_n(first, 120));
                }
                _ => continue,
            }
            variants.push(v);
            if let Some((parent, key)) = pointer.rsplit_once('/') {
                let mut v = detail.clone();
                if let Some(Value::Object(m)) = v.pointer_mut(parent) {
                    m.remove(key);
                    variants.push(v);
                }
            }
        }
        for v in variants {
            let ours: Vec<String> = match t.validate(1, &v) {
                Ok(()) => Vec::new(),
                Err(findings) => findings,
            };
            // Ingest asks `is_valid` first: it must agree with the findings.
            assert_eq!(compiled.is_valid(&v), ours.is_empty(), "{}: {v}", t.name());
            let theirs: Vec<String> = validator
                .iter_errors(&v)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            compared += 1;
            invalid += usize::from(!theirs.is_empty());
            if ours != theirs && differences.len() < 5 {
                differences.push(format!(
                    "{}: {v}\n  ours:   {ours:?}\n  theirs: {theirs:?}",
                    t.name()
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The comparison covered every type and a great many refusals, not only valid events.
    assert!(
        compared > 20_000 && invalid > compared / 2,
        "{compared} compared, {invalid} invalid"
    );
}

/// The JSON pointer of every value inside `v` (not `v` itself).
fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m
                .iter()
                .map(|(k, c)| (k.replace('~', "~0").replace('/', "~1"), c))
                .collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, c)| (i.to_string(), c)).collect(),
            _ => return,
        };
        for (k, c) in children {
            let here = format!("{at}/{k}");
            out.push(here.clone());
            walk(c, here, out);
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}
