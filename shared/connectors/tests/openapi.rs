//! The OpenAPI documents are the contract between the connectors and the systems: this keeps them
//! well-formed and in step with the Rust types both sides serialize.

use serde_json::{Value, json};

use retail_sync_simulators::samples::{accrual, sale};
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
    for name in ["erp.yaml", "loyalty.yaml"] {
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

#[test]
fn the_called_operations_exist_and_require_an_idempotency_key() {
    for (name, path) in [
        ("erp.yaml", "/erp/v1/sales"),
        ("loyalty.yaml", "/loyalty/v1/accruals"),
    ] {
        let doc = load(name);
        let operation = &doc["paths"][path]["post"];
        assert!(operation.is_object(), "{name}: no POST {path}");
        let parameter = &doc["components"]["parameters"]["IdempotencyKey"];
        assert_eq!(parameter["name"], "Idempotency-Key");
        assert_eq!(parameter["in"], "header");
        assert_eq!(parameter["required"], true);
        let params = operation["parameters"].as_array().unwrap();
        assert!(
            params
                .iter()
                .any(|p| p["$ref"] == "#/components/parameters/IdempotencyKey"),
            "{name}"
        );
        assert!(operation["responses"]["201"].is_object(), "{name}: 201");
        assert!(operation["responses"]["409"].is_object(), "{name}: 409");
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
fn what_the_loyalty_connector_sends_and_the_simulator_answers_match_the_loyalty_contract() {
    let doc = load("loyalty.yaml");
    let request = accrual("m-1", "r-1", 12_345);
    check(&doc, "AccrualRequest", &serde_json::to_value(&request).unwrap()).unwrap();
    let accrued = LoyaltySimulator::new().accrue(&request, "k").unwrap();
    check(&doc, "Accrual", &serde_json::to_value(accrued).unwrap()).unwrap();
    check(&doc, "Balance", &json!({"member_id": "m-1", "balance": 123})).unwrap();

    let mut bad = serde_json::to_value(&request).unwrap();
    bad["transaction"] = json!({"kind": "receipt", "order_id": "o-1"});
    assert!(
        check(&doc, "AccrualRequest", &bad).is_err(),
        "the schema really is checked"
    );
}
