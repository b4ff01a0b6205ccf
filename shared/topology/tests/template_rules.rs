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

/// Every `Action` anywhere under `v` that is granted: a `Deny` statement (the report bucket's TLS-only
/// guard) takes away, so its actions are not counted.
fn actions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if m.get("Effect").and_then(Value::as_str) == Some("Deny") => {}
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
    // SQS-managed SSE, or the customer-managed key when the deployer gives one.
    let with_key = |v: &Value| v["Fn::If"][0] == "HasKmsKey" && v["Fn::If"][1]["Ref"] == "KmsKeyArn";
    for (id, queue) in resources(&t, "AWS::SQS::Queue") {
        let p = &queue["Properties"];
        assert_eq!(
            p["SqsManagedSseEnabled"],
            serde_json::json!({"Fn::If": ["HasKmsKey", false, true]}),
            "{id}"
        );
        assert!(with_key(&p["KmsMasterKeyId"]), "{id}");
    }
    for (id, table) in resources(&t, "AWS::DynamoDB::Table") {
        assert!(
            with_key(&table["Properties"]["SSESpecification"]["KMSMasterKeyId"]),
            "{id}"
        );
    }
    for (id, bus) in resources(&t, "AWS::Events::EventBus") {
        assert!(with_key(&bus["Properties"]["KmsKeyIdentifier"]), "{id}");
    }
}

/// Every statement of every role's policies: (role, statement). `Fn::If` statements (present only
/// with a parameter) count with their "then" branch.
fn statements(t: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (id, role) in resources(t, "AWS::IAM::Role") {
        for policy in role["Properties"]["Policies"].as_array().into_iter().flatten() {
            for st in policy["PolicyDocument"]["Statement"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let st = st.get("Fn::If").map_or(st, |branches| &branches[1]);
                out.push((id.clone(), st.clone()));
            }
        }
    }
    out
}

/// Each function runs under its own role (SAM generates none, so no managed policy such as
/// AWSLambdaSQSQueueExecutionRole, which reads every queue of the account, comes with it), and that
/// role's poller statement names the function's own queue and nothing else.
#[test]
fn each_function_has_its_own_role_reading_only_its_own_queue() {
    let t = template();
    let all = statements(&t);
    for (id, f) in resources(&t, "AWS::Serverless::Function") {
        let p = &f["Properties"];
        assert!(p.get("Policies").is_none(), "{id}: SAM would generate a role");
        let role = p["Role"]["Fn::GetAtt"]
            .as_str()
            .and_then(|r| r.strip_suffix(".Arn"))
            .unwrap_or_else(|| panic!("{id} has no role of its own"))
            .to_owned();
        let queues: Vec<Value> = p["Events"]
            .as_object()
            .unwrap()
            .values()
            .filter(|e| e["Type"] == "SQS")
            .map(|e| e["Properties"]["Queue"].clone())
            .collect();
        let sqs: Vec<&Value> = all
            .iter()
            .filter(|(r, st)| {
                let mut acts = Vec::new();
                actions(st, &mut acts);
                *r == role && acts.iter().any(|a| a.starts_with("sqs:"))
            })
            .map(|(_, st)| &st["Resource"])
            .collect();
        match queues.as_slice() {
            [] => assert!(sqs.is_empty(), "{id} reads queues it is not fed by"),
            [queue] => assert_eq!(sqs, vec![queue], "{id}"),
            _ => panic!("{id} has several queues"),
        }
        // Its logs go to a log group of its own, with a retention, which is all its role may write.
        let group = p["LoggingConfig"]["LogGroup"]["Ref"].as_str().unwrap();
        let logs: Vec<&Value> = all
            .iter()
            .filter(|(r, st)| *r == role && st.to_string().contains("logs:"))
            .map(|(_, st)| &st["Resource"]["Fn::GetAtt"])
            .collect();
        assert_eq!(logs, vec![&Value::from(format!("{group}.Arn"))], "{id}");
        assert!(t["Resources"][group]["Properties"]["RetentionInDays"].is_object());
    }
}

/// The two trust zones: the internal bus denies PutEvents to every principal but the step functions'
/// roles; the channel bus admits, per channel, only the principals the deployer names for it, each only
/// under its own source, and no workflow source at all.
#[test]
fn the_internal_bus_admits_the_functions_and_the_channel_bus_each_channel_its_source() {
    use retail_sync_contracts::{Channel, SOURCE_POLICY};
    let t = template();
    let policy = &resources(&t, "AWS::Events::EventBusPolicy")[0].1["Properties"];
    assert_eq!(policy["EventBusName"]["Ref"], "InternalBus");
    let st = &policy["Statement"];
    assert_eq!(st["Effect"], "Deny");
    assert_eq!(st["Principal"], "*");
    let mut admitted: Vec<String> = st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Fn::GetAtt"].as_str().unwrap().to_owned())
        .collect();
    admitted.sort();
    // Exactly the roles of the functions that publish there. The platform mappers also put what they
    // map on the channel bus, as the ecommerce channel and nothing else.
    let mut publishers = Vec::new();
    for (role, st) in statements(&t)
        .into_iter()
        .filter(|(_, st)| st["Action"] == "events:PutEvents")
    {
        match st["Resource"]["Fn::GetAtt"].as_str() {
            Some("InternalBus.Arn") => publishers.push(format!("{role}.Arn")),
            Some("ChannelBus.Arn") if role == "WebhookIngressRole" => {
                assert_eq!(
                    st["Condition"]["StringEquals"]["events:source"],
                    "retail-sync.webhooks"
                );
            }
            Some("ChannelBus.Arn") => {
                assert!(role.starts_with("Map"), "{role} publishes on the channel bus");
                assert_eq!(
                    st["Condition"]["StringEquals"]["events:source"],
                    "retail.ecommerce"
                );
            }
            other => panic!("{role} publishes on {other:?}"),
        }
    }
    publishers.sort();
    assert_eq!(admitted, publishers);
    assert_eq!(publishers.len(), 13);

    let channel = &t["Resources"]["ChannelBus"]["Properties"]["Policy"]["Statement"];
    let channel = channel.as_array().unwrap();
    assert_eq!(channel[0]["Effect"], "Deny");
    assert_eq!(
        channel[0]["Condition"]["StringNotLike"]["events:source"],
        serde_json::json!(["retail.*", "retail-sync.webhooks"])
    );
    // The ingress's source, from the ingress's role alone.
    assert_eq!(channel[1]["Sid"], "OnlyTheIngressPutsWebhooks");
    assert_eq!(channel[1]["Effect"], "Deny");
    assert_eq!(
        channel[1]["Condition"]["StringEquals"]["events:source"],
        "retail-sync.webhooks"
    );
    assert!(
        t["Resources"]["WebhookIngressRole"]["Properties"]["RoleName"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .ends_with("-webhook-ingress")
    );
    let conditional: Vec<&Value> = channel.iter().filter_map(|s| s.get("Fn::If")).collect();
    for (c, _) in SOURCE_POLICY.iter().filter(|(c, _)| *c != Channel::RetailSync) {
        let source = format!("retail.{}", c.as_str());
        let mine: Vec<&Value> = conditional
            .iter()
            .filter(|s| s[1]["Condition"].to_string().contains(&format!("\"{source}\"")))
            .map(|s| &s[1])
            .collect();
        assert_eq!(mine.len(), 2, "{source}");
        let param = mine[0]["Principal"]["AWS"]["Ref"].as_str().unwrap();
        assert!(t["Parameters"][param].is_object(), "{param}");
        assert_eq!(mine[0]["Effect"], "Allow");
        assert_eq!(
            mine[0]["Condition"]["StringEquals"]["events:source"],
            source.as_str()
        );
        assert_eq!(mine[1]["Effect"], "Deny");
        assert_eq!(mine[1]["Principal"], mine[0]["Principal"]);
        assert_eq!(
            mine[1]["Condition"]["StringNotEquals"]["events:source"],
            source.as_str()
        );
    }
    assert_eq!(
        t["Resources"]["InboundEventsRule"]["Properties"]["EventBusName"]["Ref"],
        "ChannelBus"
    );
}

/// Least privilege as the code uses it: the table actions the adapters call and nothing else (no
/// UpdateItem, ConditionCheckItem, Scan or Query in any function but sync-member's Scan of the
/// quarantine and reconcile's and confirm-points' of the saga table; `BatchGetItem` only on the saga
/// table), and each function publishes only
/// under its own sources (an `events:source` condition on every PutEvents).
#[test]
fn functions_get_the_table_actions_they_call_and_publish_only_their_own_sources() {
    let t = template();
    let allowed = ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"];
    for (id, st) in statements(&t) {
        let mut acts = Vec::new();
        actions(&st, &mut acts);
        // An erasure scrubs the quarantine of the member's personal data: sync-member reads it whole
        // (Scan), on that table only.
        let erasure_scan = id == "SyncMemberRole" && st["Resource"]["Fn::GetAtt"] == "QuarantineTable.Arn";
        // The reconciliation reads every saga (Scan), on that table only.
        let reconcile_scan = (id == "ReconcileRole" || id == "ConfirmPointsRole")
            && st["Resource"]["Fn::GetAtt"] == "SagaTable.Arn";
        // A step that reads its batch's sagas ahead (which functions, the core's workflow tests hold
        // to the steps) batch-reads the saga table, that table only.
        let read_ahead = st["Resource"]["Fn::GetAtt"] == "SagaTable.Arn";
        for a in acts.iter().filter(|a| a.starts_with("dynamodb:")) {
            assert!(
                allowed.contains(&a.as_str())
                    || ((erasure_scan || reconcile_scan) && a == "dynamodb:Scan")
                    || (read_ahead && a == "dynamodb:BatchGetItem"),
                "{id} is granted {a}, which no adapter calls"
            );
        }
        if acts.iter().any(|a| a == "events:PutEvents") {
            let sources = &st["Condition"]["StringEquals"]["events:source"];
            let expected = if id == "IngestRole" {
                serde_json::json!(["retail-sync.ingest", "retail-sync"])
            } else if id == "WebhookIngressRole" {
                serde_json::json!("retail-sync.webhooks")
            } else if st["Resource"]["Fn::GetAtt"] == "ChannelBus.Arn" {
                serde_json::json!("retail.ecommerce")
            } else {
                serde_json::json!("retail-sync")
            };
            assert_eq!(sources, &expected, "{id} may publish under any source");
        }
        if acts.iter().any(|a| a == "secretsmanager:GetSecretValue") {
            // The connector credentials of the systems the step calls, by their parameters.
            let arns: Vec<&str> = match &st["Resource"] {
                Value::Array(a) => a.iter().map(|r| r["Ref"].as_str().unwrap()).collect(),
                r => vec![r["Ref"].as_str().unwrap()],
            };
            assert!(id != "IngestRole", "ingest calls no system");
            if id == "NotifyChannelRole" {
                // The platforms' API tokens, each only when its outcomes are configured.
                for arn in &arns {
                    assert!(
                        [
                            "ShopifyAdminCredentialsSecretArn",
                            "AdobeCommerceCredentialsSecretArn"
                        ]
                        .contains(arn),
                        "{id} reads {arn}"
                    );
                }
                continue;
            }
            if id == "WebhookIngressRole" {
                assert_eq!(
                    arns,
                    ["ShopifyWebhookSecretArn"],
                    "the ingress reads its signing secret only"
                );
                continue;
            }
            for arn in arns {
                // The CRM's, by sync-member alone (it keeps the CRM's contacts current).
                let crm = id == "SyncMemberRole" && arn == "CrmCredentialsSecretArn";
                assert!(
                    crm || ["ErpCredentialsSecretArn", "LoyaltyCredentialsSecretArn"].contains(&arn),
                    "{id} reads {arn}"
                );
            }
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
            "SaleCompleted"
                | "OrderPlaced"
                | "OrderShipped"
                | "OrderCancelled"
                | "ReturnReceived"
                | "RefundSettled"
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

/// Every DLQ raises the dead-letter alarm, every step queue the backlog alarm and every step's
/// quarantine the quarantine alarm; all alarms tell the alarm topic; the dashboard is valid JSON once
/// its names are substituted, and charts every DLQ.
#[test]
fn alarms_watch_every_queue_and_step_and_the_dashboard_charts_them() {
    use retail_sync_topology::Topology;
    let t = template();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let topology = Topology::load(std::path::Path::new(path)).unwrap();
    let watched = |alarm: &str| -> Vec<String> {
        t["Resources"][alarm]["Properties"]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
                    .as_object()
                    .map(|v| (m, v))
            })
            .map(|(_, v)| {
                v["Fn::GetAtt"]
                    .as_str()
                    .unwrap()
                    .trim_end_matches(".QueueName")
                    .to_owned()
            })
            .collect()
    };
    let mut dlqs: Vec<String> = topology
        .dead_letter_queues()
        .into_iter()
        .map(str::to_owned)
        .collect();
    dlqs.sort();
    let mut alarmed = watched("DeadLettersAlarm");
    alarmed.sort();
    assert_eq!(alarmed, dlqs);
    let mut queues: Vec<String> = topology.functions.iter().map(|f| f.queue.clone()).collect();
    queues.sort();
    let mut aged = watched("BacklogAgeAlarm");
    aged.sort();
    assert_eq!(aged, queues);
    let steps: Vec<&str> = t["Resources"]["QuarantineAlarm"]["Properties"]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["MetricStat"]["Metric"]["Dimensions"][0]["Value"].as_str())
        .collect();
    let mut expected: Vec<&str> = topology.functions.iter().map(|f| f.binary.as_str()).collect();
    expected.sort();
    let mut steps = steps;
    steps.sort();
    assert_eq!(steps, expected);
    for (id, alarm) in resources(&t, "AWS::CloudWatch::Alarm") {
        assert_eq!(
            alarm["Properties"]["AlarmActions"],
            serde_json::json!([{"Ref": "AlarmTopic"}]),
            "{id}"
        );
    }
    let body = t["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
        .as_str()
        .unwrap();
    let mut rendered = body.to_owned();
    while let Some(start) = rendered.find("${") {
        let end = start + rendered[start..].find('}').unwrap();
        rendered.replace_range(start..=end, "x");
    }
    let dashboard: Value = serde_json::from_str(&rendered).expect("the dashboard is JSON");
    assert_eq!(dashboard["widgets"].as_array().unwrap().len(), 6);
    for dlq in &dlqs {
        assert!(body.contains(&format!("${{{dlq}}}")), "{dlq} is not charted");
    }
}
