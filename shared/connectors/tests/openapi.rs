//! The OpenAPI documents are the contract between the connectors and the systems: this keeps them
//! well-formed and in step with the Rust types both sides serialize.

use serde_json::{Value, json};

use std::sync::Arc;

use jiff::SignedDuration;
use retail_sync_contracts::Redemption;
use retail_sync_contracts::values::{Amount, HoldId, MemberId, Points};
use retail_sync_core::memory::ManualClock;
use retail_sync_core::ports::{AdjustmentKind, Clock};
use retail_sync_simulators::samples::{
    accrual, adjustment, cancellation, commit, hold, order, order_sale, reinstatement, return_of, sale,
};
use retail_sync_simulators::{ErpSimulator, ErrorBody, Faults, LoyaltySimulator};

fn load(name: &str) -> Value {
    let path = format!("{}/openapi/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.0.")),
        "{path}: not OpenAPI 3.0"
    );
    doc
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// OpenAPI 3.0's `nullable: true` is JSON Schema's `type: [t, "null"]`; the rest of what we use is
/// plain JSON Schema (unknown keywords such as `discriminator` and `x-retryable` are ignored).
fn nullable_to_json_schema(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([t, "null"]));
            }
            map.values_mut().for_each(nullable_to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_json_schema),
        _ => {}
    }
}

/// Validates `instance` against `#/components/schemas/{schema}` of `doc`.
fn check(doc: &Value, schema: &str, instance: &Value) -> Result<(), String> {
    let mut root = doc.clone();
    nullable_to_json_schema(&mut root);
    root["$ref"] = json!(format!("#/components/schemas/{schema}"));
    let validator = jsonschema::validator_for(&root).map_err(|e| format!("{schema}: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{schema}: {errors:?}"))
    }
}

#[test]
fn every_reference_resolves() {
    for name in ["erp.yaml", "loyalty.yaml", "crm.yaml"] {
        let doc = load(name);
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{name}: external ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "{name}: {r} does not resolve");
        }
    }
}

/// Every POST and PUT the connectors send, with the success status the simulator answers.
const MUTATING: &[(&str, &str, &str, &str)] = &[
    ("erp.yaml", "post", "/erp/v1/sales", "201"),
    ("erp.yaml", "post", "/erp/v1/sales/cancellations", "201"),
    ("erp.yaml", "post", "/erp/v1/sales/reinstatements", "201"),
    ("erp.yaml", "post", "/erp/v1/returns", "201"),
    ("erp.yaml", "put", "/erp/v1/customers/{member_id}", "200"),
    ("loyalty.yaml", "post", "/loyalty/v1/accruals", "201"),
    (
        "loyalty.yaml",
        "post",
        "/loyalty/v1/accruals/{loyalty_transaction_id}/confirm",
        "200",
    ),
    ("loyalty.yaml", "post", "/loyalty/v1/members", "201"),
    (
        "loyalty.yaml",
        "put",
        "/loyalty/v1/members/{member_id}/profile",
        "200",
    ),
    (
        "loyalty.yaml",
        "post",
        "/loyalty/v1/members/{member_id}/merge",
        "200",
    ),
    ("loyalty.yaml", "post", "/loyalty/v1/holds", "201"),
    (
        "loyalty.yaml",
        "post",
        "/loyalty/v1/holds/{hold_id}/commit",
        "200",
    ),
    (
        "loyalty.yaml",
        "post",
        "/loyalty/v1/holds/{hold_id}/release",
        "200",
    ),
    ("loyalty.yaml", "post", "/loyalty/v1/adjustments", "201"),
    ("crm.yaml", "put", "/crm/v1/contacts/{member_id}", "200"),
];

/// Every GET the connectors send.
const READS: &[(&str, &str)] = &[
    ("loyalty.yaml", "/loyalty/v1/members/{member_id}/balance"),
    ("loyalty.yaml", "/loyalty/v1/holds/{hold_id}"),
    ("crm.yaml", "/crm/v1/contacts/{member_id}"),
];

/// The reads of the books: a window of business time in the query, a list in the answer.
const WINDOW_READS: &[(&str, &str, &str)] = &[
    ("erp.yaml", "/erp/v1/documents", "DocumentList"),
    ("loyalty.yaml", "/loyalty/v1/transactions", "MovementList"),
];

fn parameter_refs(operation: &Value) -> Vec<String> {
    operation["parameters"]
        .as_array()
        .map(|params| {
            params
                .iter()
                .filter_map(|p| p["$ref"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_called_operations_exist_and_require_an_idempotency_key() {
    for (name, method, path, ok) in MUTATING {
        let doc = load(name);
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{name}: no {method} {path}");
        let parameter = &doc["components"]["parameters"]["IdempotencyKey"];
        assert_eq!(parameter["name"], "Idempotency-Key");
        assert_eq!(parameter["in"], "header");
        assert_eq!(parameter["required"], true);
        assert!(
            parameter_refs(operation).contains(&"#/components/parameters/IdempotencyKey".to_owned()),
            "{name}: {path}"
        );
        assert!(operation["responses"][ok].is_object(), "{name}: {path} {ok}");
        assert!(operation["responses"]["409"].is_object(), "{name}: {path} 409");
        assert!(
            operation["requestBody"]["required"] == true,
            "{name}: {path} body"
        );
        if path.contains("{hold_id}") {
            assert!(
                parameter_refs(operation).contains(&"#/components/parameters/HoldId".to_owned()),
                "{name}: {path} hold_id"
            );
        }
        if path.contains("{loyalty_transaction_id}") {
            assert!(
                parameter_refs(operation)
                    .contains(&"#/components/parameters/LoyaltyTransactionId".to_owned()),
                "{name}: {path} loyalty_transaction_id"
            );
            let p = &doc["components"]["parameters"]["LoyaltyTransactionId"];
            assert_eq!(
                (&p["name"], &p["in"], &p["required"]),
                (&json!("loyalty_transaction_id"), &json!("path"), &json!(true))
            );
        }
    }
    for (name, path) in READS {
        let doc = load(name);
        let operation = &doc["paths"][path]["get"];
        assert!(operation.is_object(), "{name}: no GET {path}");
        assert!(operation["responses"]["200"].is_object(), "{name}: {path} 200");
        assert!(operation["responses"]["404"].is_object(), "{name}: {path} 404");
        assert!(
            !parameter_refs(operation).contains(&"#/components/parameters/IdempotencyKey".to_owned()),
            "{name}: a read needs no key"
        );
    }
}

#[test]
fn what_the_erp_connector_sends_and_the_simulator_answers_match_the_erp_contract() {
    let doc = load("erp.yaml");
    let request = sale("store-1", "r-1");
    check(&doc, "ErpSaleRequest", &serde_json::to_value(&request).unwrap()).unwrap();
    let document = ErpSimulator::new().post_sale(&request, "k").unwrap();
    check(&doc, "ErpDocument", &serde_json::to_value(document).unwrap()).unwrap();
    let error = ErrorBody {
        code: "period_closed".into(),
        message: "closed".into(),
    };
    check(&doc, "Error", &serde_json::to_value(error).unwrap()).unwrap();
    check(&doc, "Faults", &serde_json::to_value(Faults::default()).unwrap()).unwrap();

    let mut bad = serde_json::to_value(&request).unwrap();
    bad["currency"] = json!("eur");
    assert!(
        check(&doc, "ErpSaleRequest", &bad).is_err(),
        "the schema really is checked"
    );
}

#[test]
fn orders_cancellations_and_returns_match_the_erp_contract() {
    let doc = load("erp.yaml");
    let erp = ErpSimulator::new();
    let mut order_request = order_sale("o-1");
    order_request.redemption = Some(Redemption {
        hold_id: HoldId::parse("H-00000001").unwrap(),
        points: Points::new(500).unwrap(),
        value_minor: Amount::new(500).unwrap(),
    });
    check(
        &doc,
        "ErpSaleRequest",
        &serde_json::to_value(&order_request).unwrap(),
    )
    .unwrap();
    erp.post_sale(&order_request, "s").unwrap();

    let whole = cancellation("o-1", "cx-1");
    let mut partial = cancellation("o-1", "cx-2");
    partial.lines = Some(vec![retail_sync_contracts::events::LineQuantity {
        line_no: 1,
        quantity: 1,
    }]);
    for (i, request) in [whole, partial].iter().enumerate() {
        check(&doc, "ErpCancelRequest", &serde_json::to_value(request).unwrap()).unwrap();
        let document = erp.cancel_order(request, &format!("c{i}")).unwrap();
        check(&doc, "ErpDocument", &serde_json::to_value(document).unwrap()).unwrap();
    }

    let request = reinstatement("o-1", "ship-1", "cx-2");
    check(
        &doc,
        "ErpReinstateRequest",
        &serde_json::to_value(&request).unwrap(),
    )
    .unwrap();
    let document = erp.reinstate(&request, "ri").unwrap();
    check(&doc, "ErpDocument", &serde_json::to_value(document).unwrap()).unwrap();
    let unknown = reinstatement("o-1", "ship-2", "cx-9");
    assert!(
        erp.reinstate(&unknown, "ri-2").is_err(),
        "a reinstatement names a posted cancellation"
    );

    for (i, request) in [
        return_of("ret-1", order("o-1"), Some("store-2")),
        return_of("ret-2", order("o-1"), None),
    ]
    .iter()
    .enumerate()
    {
        check(&doc, "ErpReturnRequest", &serde_json::to_value(request).unwrap()).unwrap();
        let document = erp.post_return(request, &format!("r{i}")).unwrap();
        check(&doc, "ErpDocument", &serde_json::to_value(document).unwrap()).unwrap();
    }

    let mut bad = serde_json::to_value(return_of("ret-3", order("o-1"), None)).unwrap();
    bad["lines"][0]["quantity"] = json!(0);
    assert!(
        check(&doc, "ErpReturnRequest", &bad).is_err(),
        "the schema really is checked"
    );
    let mut bad = serde_json::to_value(cancellation("o-1", "cx-3")).unwrap();
    bad["lines"] = json!([]);
    assert!(check(&doc, "ErpCancelRequest", &bad).is_err());
}

#[test]
fn what_the_loyalty_connector_sends_and_the_simulator_answers_match_the_loyalty_contract() {
    let doc = load("loyalty.yaml");
    let request = accrual("m-1", "r-1", 12_345);
    check(&doc, "AccrualRequest", &serde_json::to_value(&request).unwrap()).unwrap();
    // The platform knows enrolled members only.
    let enrolled = || {
        let loyalty = LoyaltySimulator::new();
        loyalty.seed_balance("m-1", Points::ZERO);
        loyalty
    };
    let accrued = enrolled().accrue(&request, "k").unwrap();
    check(&doc, "Accrual", &serde_json::to_value(accrued).unwrap()).unwrap();
    let balance = enrolled()
        .member_balance(&MemberId::parse("m-1").unwrap())
        .unwrap();
    check(&doc, "Balance", &serde_json::to_value(balance).unwrap()).unwrap();
    assert!(
        check(&doc, "Balance", &json!({"member_id": "m-1", "balance": 123})).is_err(),
        "held and available are part of a balance"
    );

    let mut bad = serde_json::to_value(&request).unwrap();
    bad["transaction"] = json!({"kind": "receipt", "order_id": "o-1"});
    assert!(
        check(&doc, "AccrualRequest", &bad).is_err(),
        "the schema really is checked"
    );
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn holds_commits_releases_and_adjustments_match_the_loyalty_contract() {
    let doc = load("loyalty.yaml");
    let loyalty = LoyaltySimulator::new();
    let clock = Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
    loyalty.set_clock(clock.clone());
    loyalty.seed_balance("m-1", Points::new(1_000).unwrap());

    let request = hold("m-1", 300, 5_000, clock.now(), SignedDuration::from_secs(900));
    check(&doc, "HoldRequest", &to_json(&request)).unwrap();
    let held = loyalty.create_hold(&request, "h1").unwrap();
    check(&doc, "Hold", &to_json(&held)).unwrap();

    let commit_request = commit("o-1", 300);
    check(&doc, "CommitRequest", &to_json(&commit_request)).unwrap();
    let committed = loyalty.commit_hold(&held.hold_id, &commit_request, "c1").unwrap();
    check(&doc, "Hold", &to_json(&committed)).unwrap();

    let other = loyalty.create_hold(&request, "h2").unwrap();
    check(&doc, "ReleaseRequest", &json!({})).unwrap();
    assert!(check(&doc, "ReleaseRequest", &json!({"hold_id": "H-1"})).is_err());
    let released = loyalty.release_hold(&other.hold_id, "r1").unwrap();
    check(&doc, "Hold", &to_json(&released)).unwrap();

    for (kind, key) in [(AdjustmentKind::Reversal, "a1"), (AdjustmentKind::Recredit, "a2")] {
        let request = adjustment("m-1", kind, "o-1", "return:ret-1", 120);
        check(&doc, "AdjustmentRequest", &to_json(&request)).unwrap();
        let adjusted = loyalty.adjust(&request, key).unwrap();
        check(&doc, "Adjustment", &to_json(&adjusted)).unwrap();
    }
    let balance = loyalty.member_balance(&MemberId::parse("m-1").unwrap()).unwrap();
    check(&doc, "Balance", &to_json(&balance)).unwrap();

    let mut bad = to_json(&committed);
    bad["status"] = json!("spent");
    assert!(check(&doc, "Hold", &bad).is_err(), "the schema really is checked");
}

/// The member record every system is told is the `MemberSnapshot` of each document, personal data or
/// none (an erasure), and what the systems answer is their `MemberSynced`.
#[test]
fn the_member_snapshot_matches_the_loyalty_erp_and_crm_contracts() {
    use retail_sync_simulators::samples::{erased_snapshot, member_snapshot};
    for name in ["loyalty.yaml", "erp.yaml", "crm.yaml"] {
        let doc = load(name);
        for snapshot in [member_snapshot("m-1", 3), erased_snapshot("m-1", 4)] {
            check(&doc, "MemberSnapshot", &serde_json::to_value(&snapshot).unwrap()).unwrap();
        }
        let answer = retail_sync_simulators::CrmSimulator::new()
            .sync_member(&member_snapshot("m-1", 3), "k")
            .unwrap();
        check(&doc, "MemberSynced", &serde_json::to_value(answer).unwrap()).unwrap();
        let mut bad = serde_json::to_value(member_snapshot("m-1", 3)).unwrap();
        bad["status"] = json!("deleted");
        assert!(
            check(&doc, "MemberSnapshot", &bad).is_err(),
            "{name}: the schema really is checked"
        );
    }
}

/// The members' calls: what the connectors send and the simulators answer.
#[test]
fn enrolments_merges_and_contacts_match_their_contracts() {
    use retail_sync_simulators::CrmSimulator;
    use retail_sync_simulators::samples::member_snapshot;

    let doc = load("loyalty.yaml");
    let enrolment = json!({"member_id": "m-1"});
    check(&doc, "EnrolRequest", &enrolment).unwrap();
    let loyalty = LoyaltySimulator::new();
    let (m1, m2) = (MemberId::parse("m-1").unwrap(), MemberId::parse("m-2").unwrap());
    loyalty.enrol(&m1, "e1").unwrap();
    loyalty.enrol(&m2, "e2").unwrap();
    check(&doc, "MergeRequest", &json!({"survivor_id": "m-2"})).unwrap();
    let outcome = loyalty.merge(&m1, &m2, "m").unwrap();
    check(&doc, "MergeOutcome", &to_json(&outcome)).unwrap();
    let synced = loyalty.sync_member(&member_snapshot("m-1", 1), "s").unwrap();
    check(&doc, "MemberSynced", &to_json(&synced)).unwrap();
    assert!(
        check(&doc, "MergeRequest", &json!({})).is_err(),
        "the schema really is checked"
    );

    let doc = load("crm.yaml");
    let crm = CrmSimulator::new();
    crm.sync_member(&member_snapshot("m-1", 1), "c").unwrap();
    let contact = crm.get_contact(&m1).unwrap();
    check(&doc, "Contact", &to_json(&contact)).unwrap();
}

/// The reads of the books take `from` and `to`, both required RFC 3339 instants in the query, need no
/// key, and answer their list or a 400 in the API's error shape.
#[test]
fn the_reads_of_the_books_take_a_window_and_answer_a_list() {
    for (name, path, list) in WINDOW_READS {
        let doc = load(name);
        let operation = &doc["paths"][path]["get"];
        assert!(operation.is_object(), "{name}: no GET {path}");
        assert_eq!(
            operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{list}"),
            "{name}: {path}"
        );
        assert_eq!(
            operation["responses"]["400"]["$ref"], "#/components/responses/BadWindow",
            "{name}: {path}"
        );
        let bad = &doc["components"]["responses"]["BadWindow"];
        assert_eq!(
            bad["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert_eq!(bad["x-retryable"], false);
        let refs = parameter_refs(operation);
        assert!(
            !refs.contains(&"#/components/parameters/IdempotencyKey".to_owned()),
            "{name}: a read needs no key"
        );
        for (parameter, query_name) in [("WindowFrom", "from"), ("WindowTo", "to")] {
            assert!(
                refs.contains(&format!("#/components/parameters/{parameter}")),
                "{name}: {path} {parameter}"
            );
            let p = &doc["components"]["parameters"][parameter];
            assert_eq!(
                (&p["name"], &p["in"], &p["required"]),
                (&json!(query_name), &json!("query"), &json!(true)),
                "{name}: {parameter}"
            );
            assert_eq!(p["schema"]["format"], "date-time", "{name}: {parameter}");
        }
    }
}

/// Every kind of document the ERP books, as `GET /erp/v1/documents` answers them, is the contract's.
#[test]
fn the_erp_s_books_match_the_erp_contract() {
    use retail_sync_core::ports::DocumentKind;
    use retail_sync_simulators::http::DocumentList;
    use retail_sync_simulators::samples::receipt;

    let doc = load("erp.yaml");
    let erp = ErpSimulator::new();
    let mut order_request = order_sale("o-1");
    order_request.redemption = Some(Redemption {
        hold_id: HoldId::parse("H-00000001").unwrap(),
        points: Points::new(500).unwrap(),
        value_minor: Amount::new(500).unwrap(),
    });
    erp.post_sale(&order_request, "s1").unwrap();
    erp.post_sale(&sale("store-1", "r-1"), "s2").unwrap();
    erp.cancel_order(&cancellation("o-1", "cx-1"), "c1").unwrap();
    erp.reinstate(&reinstatement("o-1", "ship-1", "cx-1"), "ri")
        .unwrap();
    erp.post_return(
        &return_of("ret-1", receipt("store-1", "r-1"), Some("store-2")),
        "r1",
    )
    .unwrap();
    let (from, until) = (
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    );
    let list = DocumentList {
        documents: erp.documents_between(from, until),
    };
    let mut kinds: Vec<_> = list.documents.iter().map(|d| d.kind).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            DocumentKind::Sale,
            DocumentKind::Cancellation,
            DocumentKind::Return,
            DocumentKind::Reinstatement
        ],
        "every kind is checked"
    );
    assert!(list.documents.iter().any(|d| d.redemption_minor.is_some()));
    let answer = to_json(&list);
    check(&doc, "DocumentList", &answer).unwrap();
    check(&doc, "DocumentList", &json!({"documents": []})).unwrap();

    let mut bad = answer.clone();
    bad["documents"][0]["kind"] = json!("refund");
    assert!(
        check(&doc, "DocumentList", &bad).is_err(),
        "the schema really is checked"
    );
    let mut bad = answer;
    bad["documents"][1]["net_minor"] = json!(-1);
    assert!(
        check(&doc, "DocumentList", &bad).is_err(),
        "amounts are never negative"
    );
}

/// Every kind of movement the platform books, as `GET /loyalty/v1/transactions` answers them, is the
/// contract's: signed points, a partial reversal's request, a redemption's value, merges without a
/// transaction.
#[test]
fn the_loyalty_ledger_matches_the_loyalty_contract() {
    use retail_sync_core::ports::PointsKind;
    use retail_sync_simulators::http::MovementList;

    let doc = load("loyalty.yaml");
    let loyalty = LoyaltySimulator::new();
    let clock = Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
    loyalty.set_clock(clock.clone());
    loyalty.seed_balance("m-1", Points::new(1_000).unwrap());
    loyalty.seed_balance("m-2", Points::ZERO);
    loyalty.seed_balance("m-3", Points::new(50).unwrap());
    loyalty.accrue(&accrual("m-1", "r-1", 12_345), "a1").unwrap();
    let held = loyalty
        .create_hold(
            &hold("m-1", 300, 5_000, clock.now(), SignedDuration::from_secs(900)),
            "h1",
        )
        .unwrap();
    loyalty
        .commit_hold(&held.hold_id, &commit("o-1", 300), "c1")
        .unwrap();
    loyalty
        .adjust(
            &adjustment("m-1", AdjustmentKind::Recredit, "o-1", "cancellation:cx-1", 100),
            "a2",
        )
        .unwrap();
    loyalty
        .adjust(
            &adjustment("m-1", AdjustmentKind::Reversal, "o-1", "return:ret-1", 5_000),
            "a3",
        )
        .unwrap();
    let (m2, m3) = (MemberId::parse("m-2").unwrap(), MemberId::parse("m-3").unwrap());
    loyalty.merge(&m3, &m2, "m1").unwrap();
    let (from, until) = (
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    );
    let list = MovementList {
        movements: loyalty.movements(from, until),
    };
    let mut kinds: Vec<_> = list.movements.iter().map(|m| m.kind).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            PointsKind::Accrual,
            PointsKind::Redemption,
            PointsKind::Reversal,
            PointsKind::Recredit,
            PointsKind::Merge
        ],
        "every kind is checked"
    );
    assert!(
        list.movements.iter().any(|m| m.requested_points.is_some()),
        "a partial reversal"
    );
    assert!(list.movements.iter().any(|m| m.transaction.is_none()), "a merge");
    assert!(list.movements.iter().any(|m| m.points < 0));
    let answer = to_json(&list);
    check(&doc, "MovementList", &answer).unwrap();

    let mut bad = answer.clone();
    bad["movements"][0]["kind"] = json!("bonus");
    assert!(
        check(&doc, "MovementList", &bad).is_err(),
        "the schema really is checked"
    );
    let mut bad = answer;
    bad["movements"][0].as_object_mut().unwrap().remove("points");
    assert!(check(&doc, "MovementList", &bad).is_err(), "points are required");
}

/// Pending points: what the connector sends (`pending_until`, an empty confirmation body) and what the
/// simulator answers (`pending` in an accrual and a balance, `pending_cancelled` in a reversal, the
/// confirmation, `pending_points` in the books) are the contract's.
#[test]
fn pending_points_match_the_loyalty_contract() {
    use retail_sync_core::ports::{AccrualRequest, AdjustmentRequest};
    use retail_sync_simulators::http::MovementList;
    use retail_sync_simulators::samples::receipt;

    let doc = load("loyalty.yaml");
    let loyalty = LoyaltySimulator::new();
    let clock = Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
    loyalty.set_clock(clock.clone());
    loyalty.seed_balance("m-1", Points::new(1_000).unwrap());

    let request = AccrualRequest {
        pending_until: Some("2026-12-20T10:00:00Z".parse().unwrap()),
        ..accrual("m-1", "r-1", 12_345)
    };
    let sent = to_json(&request);
    assert_eq!(sent["pending_until"], "2026-12-20T10:00:00Z");
    check(&doc, "AccrualRequest", &sent).unwrap();
    let accrued = loyalty.accrue(&request, "a1").unwrap();
    let answer = to_json(&accrued);
    assert_eq!(answer["pending"], true);
    check(&doc, "Accrual", &answer).unwrap();
    let mut bad = answer;
    bad["pending"] = json!("yes");
    assert!(
        check(&doc, "Accrual", &bad).is_err(),
        "the schema really is checked"
    );

    let balance = to_json(&loyalty.member_balance(&MemberId::parse("m-1").unwrap()).unwrap());
    assert_eq!(balance["pending"], 123);
    check(&doc, "Balance", &balance).unwrap();
    let mut bad = balance;
    bad["pending"] = json!(-1);
    assert!(check(&doc, "Balance", &bad).is_err(), "pending is never negative");

    let reversal = AdjustmentRequest {
        transaction: receipt("store-1", "r-1"),
        ..adjustment("m-1", AdjustmentKind::Reversal, "o-1", "return:ret-1", 100)
    };
    let adjusted = to_json(&loyalty.adjust(&reversal, "x1").unwrap());
    assert_eq!(adjusted["pending_cancelled"], 100);
    check(&doc, "Adjustment", &adjusted).unwrap();
    let mut bad = adjusted;
    bad["pending_cancelled"] = json!(-100);
    assert!(check(&doc, "Adjustment", &bad).is_err());

    check(&doc, "ConfirmRequest", &json!({})).unwrap();
    assert!(check(&doc, "ConfirmRequest", &json!({"points": 23})).is_err());
    let confirmed = to_json(
        &loyalty
            .confirm_accrual(&accrued.loyalty_transaction_id, "c1")
            .unwrap(),
    );
    assert_eq!(
        confirmed,
        json!({"loyalty_transaction_id": "LT-00000001", "points_confirmed": 23, "balance": 1_023})
    );
    check(&doc, "Confirmation", &confirmed).unwrap();
    let mut bad = confirmed;
    bad.as_object_mut().unwrap().remove("points_confirmed");
    assert!(
        check(&doc, "Confirmation", &bad).is_err(),
        "points_confirmed is required"
    );

    let operation = &doc["paths"]["/loyalty/v1/accruals/{loyalty_transaction_id}/confirm"]["post"];
    assert_eq!(
        operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Confirmation"
    );
    assert_eq!(
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ConfirmRequest"
    );
    assert_eq!(
        operation["responses"]["404"]["$ref"],
        "#/components/responses/TransactionNotFound"
    );
    assert_eq!(operation["responses"]["409"]["x-retryable"], false);
    let not_found = &doc["components"]["responses"]["TransactionNotFound"];
    assert_eq!(not_found["x-retryable"], false);

    let (from, until) = (
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    );
    loyalty.accrue(&accrual("m-1", "r-2", 1_000), "a2").unwrap();
    let list = to_json(&MovementList {
        movements: loyalty.movements(from, until),
    });
    assert_eq!(list["movements"][0]["pending_points"], 0, "confirmed");
    assert_eq!(list["movements"][1].get("pending_points"), None, "a reversal");
    assert_eq!(list["movements"][2].get("pending_points"), None, "never pending");
    check(&doc, "MovementList", &list).unwrap();
    let mut bad = list;
    bad["movements"][0]["pending_points"] = json!(-1);
    assert!(check(&doc, "MovementList", &bad).is_err());
}
