//! The Salesforce connector against Salesforce's documented shapes (`events/samples/salesforce`, sources
//! in its README): what it sends uses only documented TransactionJournal fields (or the org's custom
//! reference field); what Salesforce answers in its documentation, it reads.

use serde_json::Value;

use retail_sync_simulators::samples;

use super::*;
use crate::auth::{Credentials, StaticCredentials};

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/samples/salesforce/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn connector() -> SalesforceLoyalty {
    let path = format!(
        "{}/../../infra/connectors/salesforce-loyalty.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mapping = SalesforceMapping::parse(&std::fs::read_to_string(path).unwrap(), "sample").unwrap();
    let auth = Auth {
        method: crate::AuthMethod::Basic,
        credentials: std::sync::Arc::new(StaticCredentials {
            credentials: Credentials::default(),
            origin: "none".into(),
        }),
    };
    SalesforceLoyalty::new(&HttpConfig::new("https://org.my.salesforce.com"), auth, mapping).unwrap()
}

#[test]
fn a_journal_uses_only_documented_fields_and_the_org_s_reference_field() {
    let documented = sample("journal-fields.json");
    let mut allowed: Vec<String> = documented["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    allowed.extend(
        documented["name_alternatives"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_owned()),
    );
    let sf = connector();
    let request = samples::accrual("m-1", "r-1", 12_345);
    let journal = sf.transaction_journal(
        &sf.mapping.accrual,
        &wire::stamp("a:key", ETN_MAX),
        &request.member_id,
        Some((request.eligible_minor.get(), request.currency)),
        request.occurred_at,
        "retail-sync transaction=receipt:store-1:r-1".into(),
    );
    for (field, value) in journal.as_object().unwrap() {
        let custom = field == &sf.mapping.reference_field && field.ends_with("__c");
        assert!(
            custom || allowed.contains(field),
            "TransactionJournal has no field {field}"
        );
        assert!(value.is_string(), "{field} is sent as {value}");
    }
    let statuses = documented["status_values"].as_array().unwrap();
    assert!(statuses.contains(&journal["Status"]));
    // The documented example sends the amount as a string, as we do.
    let example = sample("realtime.request.json");
    assert!(example["transactionJournals"][0]["TransactionAmount"].is_string());
    assert_eq!(journal["TransactionAmount"], "123.45");
    let max = documented["external_transaction_number_max_length"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(ETN_MAX, max);
    let long = wire::stamp("receipt:store-001:r-000001:accrue-loyalty:and-more", ETN_MAX);
    assert!(long.len() <= max);
}

#[test]
fn documented_answers_are_read() {
    let (id, earned) = accrued(&sample("realtime.response.json"), "Coins");
    assert_eq!((id.as_str(), earned), ("0lVRM0000002qnB2AQ", 100));
    assert_eq!(
        accrued(&sample("realtime.response.json"), "Tier Coins").1,
        0,
        "only our currency"
    );
    assert_eq!(
        process_points(&sample("credit-points.response.json"), "PointsCredited"),
        Some(100)
    );
    assert_eq!(
        process_points(&sample("debit-points.response.json"), "PointsDebited"),
        Some(200)
    );
    let profile = sample("member-profile.response.json");
    assert_eq!(profile_points(&profile, "NTO Qualifying Points"), 0);
    assert!(profile["memberCurrencies"][0]["pointsBalance"].is_number());
    let query = sample("query.response.json");
    assert_eq!(query["records"][0]["Status"], "Processed");
    let errors = sample("errors.json");
    let limit = serde_json::to_vec(&errors["request_limit"]).unwrap();
    let (code, _) = error_of(&limit).unwrap();
    let busy = classify(ConnectorError::Status {
        status: 403,
        code,
        message: String::new(),
        retry_after: None,
    });
    assert!(busy.is_retryable(), "REQUEST_LIMIT_EXCEEDED is back-pressure");
    let not_found = serde_json::to_vec(&errors["not_found"]).unwrap();
    assert_eq!(error_of(&not_found).unwrap().0, "NOT_FOUND");
    let cancelled = sample("cancel-redemption.response.json");
    assert_eq!(cancelled[0]["isSuccess"], true);
    assert!(cancelled[0]["outputValues"]["CancellationTransactionJournalId"].is_string());
    let token = sample("token.response.json");
    assert!(
        token.get("expires_in").is_none(),
        "Salesforce tokens carry no expiry: kept until refused"
    );
}

#[test]
fn odd_answers_are_errors_not_panics() {
    for body in [
        &b""[..],
        b"null",
        b"{}",
        b"[]",
        b"[1]",
        b"[{\"errors\": 3}]",
        b"\xff",
    ] {
        let _ = error_of(body);
    }
    for answer in [
        json_value("null"),
        json_value("[]"),
        json_value("{\"processResult\": 5}"),
    ] {
        assert_eq!(accrued(&answer, "Points").1, 0);
        assert_eq!(profile_points(&answer, "Points"), 0);
        assert_eq!(process_points(&answer, "PointsCredited"), None);
    }
    assert!(!journal_id("0lV' OR Id != '"));
    assert!(journal_id("0lVRM0000002qnB2AQ"));
}

fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}
