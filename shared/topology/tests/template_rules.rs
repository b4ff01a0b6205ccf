//! House rules of `infra/template.yaml` that neither cfn-lint nor `sam validate` enforce (both run in
//! the test command too): least privilege, encryption at rest, recovery, and the build shape.

use retail_sync_topology::topology::template_json;
use serde_json::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    template_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn resources(t: &Value, kind: &str) -> Vec<(String, Value)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.clone(), r.clone()))
        .collect()
}

/// Every `Action` anywhere under `v`.
fn actions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "Action" {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        Value::Array(a) => out.extend(a.iter().filter_map(|s| s.as_str().map(str::to_owned))),
                        _ => {}
                    }
                } else {
                    actions(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| actions(v, out)),
        _ => {}
    }
}

#[test]
fn no_policy_grants_a_wildcard_action() {
    let mut all = Vec::new();
    actions(&template(), &mut all);
    assert!(!all.is_empty());
    let wild: Vec<_> = all.iter().filter(|a| a.contains('*')).collect();
    assert!(wild.is_empty(), "wildcard actions: {wild:?}");
}

#[test]
fn functions_are_rust_on_arm64_al2023_and_report_partial_batch_failures() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"], serde_json::json!(["arm64"]));
    let functions = resources(&t, "AWS::Serverless::Function");
    // One function per binary under functions/, and no binary without its function.
    let mut binaries: Vec<String> = functions
        .iter()
        .map(|(_, f)| {
            f["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    binaries.sort();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions");
    let mut crates: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    crates.sort();
    assert_eq!(binaries, crates);
    for (id, f) in functions {
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        let events = f["Properties"]["Events"].as_object().unwrap().values();
        for event in events.filter(|e| e["Type"] == "SQS") {
            assert_eq!(
                event["Properties"]["FunctionResponseTypes"],
                serde_json::json!(["ReportBatchItemFailures"]),
                "{id}"
            );
        }
    }
}

#[test]
fn state_is_encrypted_recoverable_and_expires() {
    let t = template();
    for (id, table) in resources(&t, "AWS::DynamoDB::Table") {
        let p = &table["Properties"];
        assert_eq!(p["SSESpecification"]["SSEEnabled"], true, "{id}");
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{id}"
        );
        assert_eq!(p["TimeToLiveSpecification"]["Enabled"], true, "{id}");
        // Kept whatever happens to the stack.
        assert_eq!(table["DeletionPolicy"], "Retain", "{id}");
        assert_eq!(table["UpdateReplacePolicy"], "Retain", "{id}");
        assert_eq!(p["DeletionProtectionEnabled"], true, "{id}");
    }
    for (id, queue) in resources(&t, "AWS::SQS::Queue") {
        assert_eq!(queue["Properties"]["SqsManagedSseEnabled"], true, "{id}");
    }
}

/// Every statement of every function's policy: (function, statement).
fn statements(t: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (id, f) in resources(t, "AWS::Serverless::Function") {
        for policy in f["Properties"]["Policies"].as_array().into_iter().flatten() {
            for st in policy["Statement"].as_array().into_iter().flatten() {
                out.push((id.clone(), st.clone()));
            }
        }
    }
    out
}

/// Least privilege as the code uses it: the table actions the adapters call and nothing else (no
/// UpdateItem, ConditionCheckItem, Scan or Query in any function), and each function publishes only
/// under its own sources (an `events:source` condition on every PutEvents).
#[test]
fn functions_get_the_table_actions_they_call_and_publish_only_their_own_sources() {
    let t = template();
    let allowed = ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"];
    for (id, st) in statements(&t) {
        let mut acts = Vec::new();
        actions(&st, &mut acts);
        for a in acts.iter().filter(|a| a.starts_with("dynamodb:")) {
            assert!(
                allowed.contains(&a.as_str()),
                "{id} is granted {a}, which no adapter calls"
            );
        }
        if acts.iter().any(|a| a == "events:PutEvents") {
            let sources = &st["Condition"]["StringEquals"]["events:source"];
            let expected = if id == "IngestFunction" {
                serde_json::json!(["retail-sync.ingest", "retail-sync"])
            } else {
                serde_json::json!("retail-sync")
            };
            assert_eq!(sources, &expected, "{id} may publish under any source");
        }
        if acts.iter().any(|a| a == "dynamodb:DeleteItem") {
            assert_eq!(
                st["Resource"]["Fn::GetAtt"],
                serde_json::json!("IdempotencyTable.Arn"),
                "{id}: only claims are deleted"
            );
        }
    }
}

/// The archive keeps what a replay can use — the channels' business transactions — and no personal data
/// nothing consumes (customer and tier events) nor retail-sync's own events.
#[test]
fn the_archive_keeps_only_replayable_channel_transactions() {
    use retail_sync_contracts::{Direction, EventType};
    let t = template();
    let archives = resources(&t, "AWS::Events::Archive");
    assert_eq!(archives.len(), 1);
    let pattern = &archives[0].1["Properties"]["EventPattern"];
    assert_eq!(pattern["source"], serde_json::json!([{"prefix": "retail."}]));
    let kept: Vec<&str> = pattern["detail-type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for t in EventType::ALL {
        let starts_or_follows = matches!(
            t.name(),
            "SaleCompleted" | "OrderPlaced" | "OrderShipped" | "OrderCancelled" | "ReturnReceived"
        );
        assert_eq!(kept.contains(&t.name()), starts_or_follows, "{}", t.name());
        if kept.contains(&t.name()) {
            assert_eq!(t.direction(), Direction::Inbound);
        }
    }
}

/// Retention is the deployer's choice, with defaults: every function gets both settings from parameters.
#[test]
fn retention_of_sagas_and_quarantine_is_a_parameter() {
    let t = template();
    let vars = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(vars["SAGA_RETENTION_DAYS"]["Ref"], "SagaRetentionDays");
    assert_eq!(
        vars["QUARANTINE_RETENTION_DAYS"]["Ref"],
        "QuarantineRetentionDays"
    );
    assert_eq!(t["Parameters"]["SagaRetentionDays"]["Default"], 400);
    assert_eq!(t["Parameters"]["QuarantineRetentionDays"]["Default"], 90);
}
