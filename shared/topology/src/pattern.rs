//! EventBridge event patterns, evaluated the way EventBridge does: every field named in the pattern must
//! match; a list of values matches if any entry matches; nested objects match nested fields. Supported
//! operators: exact values, `prefix`, `suffix`, `exists`, `anything-but` (values or `prefix`),
//! `equals-ignore-case` and `numeric`. Anything else is refused when the pattern is compiled, so a
//! template using an operator we do not evaluate fails loudly instead of misrouting.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unsupported event pattern at {path}: {message}")]
pub struct PatternError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Value);

impl Pattern {
    /// Checks the pattern uses only what [`matches`](Self::matches) evaluates.
    pub fn compile(pattern: Value) -> Result<Self, PatternError> {
        check(&pattern, "$")?;
        Ok(Self(pattern))
    }

    /// The pattern as written in the template (what PutRule takes).
    pub fn as_json(&self) -> &Value {
        &self.0
    }

    pub fn matches(&self, event: &Value) -> bool {
        match_object(&self.0, Some(event))
    }
}

fn err(path: &str, message: impl Into<String>) -> PatternError {
    PatternError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn check(pattern: &Value, path: &str) -> Result<(), PatternError> {
    let Value::Object(fields) = pattern else {
        return Err(err(path, "a pattern level must be an object"));
    };
    for (name, spec) in fields {
        let path = format!("{path}.{name}");
        match spec {
            Value::Object(_) => check(spec, &path)?,
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(op) = item {
                        check_operator(op, &path)?;
                    }
                }
            }
            _ => return Err(err(&path, "field must be an array of values or a nested object")),
        }
    }
    Ok(())
}

fn check_operator(op: &serde_json::Map<String, Value>, path: &str) -> Result<(), PatternError> {
    if op.len() != 1 {
        return Err(err(path, "an operator object has exactly one key"));
    }
    let (name, arg) = op.iter().next().expect("one entry");
    let ok = match name.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => arg.is_string(),
        "exists" => arg.is_boolean(),
        "anything-but" => match arg {
            Value::Object(inner) => inner.len() == 1 && inner.get("prefix").is_some_and(Value::is_string),
            Value::Array(vals) => vals.iter().all(|v| v.is_string() || v.is_number()),
            v => v.is_string() || v.is_number(),
        },
        "numeric" => numeric_ops(arg).is_some(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(err(
            path,
            format!("operator {name:?} with {arg} is not supported"),
        ))
    }
}

fn numeric_ops(arg: &Value) -> Option<Vec<(&str, f64)>> {
    let items = arg.as_array()?;
    if items.len() % 2 != 0 || items.is_empty() {
        return None;
    }
    items
        .chunks(2)
        .map(|c| {
            let op = c[0]
                .as_str()
                .filter(|o| matches!(*o, "<" | "<=" | "=" | ">=" | ">"))?;
            Some((op, c[1].as_f64()?))
        })
        .collect()
}

fn match_object(pattern: &Value, event: Option<&Value>) -> bool {
    let Value::Object(fields) = pattern else {
        return false;
    };
    fields.iter().all(|(name, spec)| {
        let field = event.and_then(|e| e.get(name));
        match spec {
            Value::Object(_) => match_object(spec, field),
            Value::Array(allowed) => match_field(allowed, field),
            _ => false,
        }
    })
}

/// A field matches if any allowed entry matches it; an array field matches if any of its elements does.
fn match_field(allowed: &[Value], field: Option<&Value>) -> bool {
    allowed.iter().any(|a| match (a, field) {
        // EventBridge's `exists` only looks at leaves: an object field counts as absent.
        (Value::Object(op), _) if op.contains_key("exists") => {
            op["exists"].as_bool() == Some(field.is_some_and(|f| !f.is_object()))
        }
        (_, None) => false,
        (_, Some(Value::Array(elems))) => elems.iter().any(|e| match_one(a, e)),
        (_, Some(v)) => match_one(a, v),
    })
}

fn match_one(allowed: &Value, value: &Value) -> bool {
    match allowed {
        Value::Object(op) => {
            let (name, arg) = op.iter().next().expect("compiled operators have one key");
            match (name.as_str(), value) {
                ("prefix", Value::String(s)) => arg.as_str().is_some_and(|p| s.starts_with(p)),
                ("suffix", Value::String(s)) => arg.as_str().is_some_and(|p| s.ends_with(p)),
                ("equals-ignore-case", Value::String(s)) => {
                    arg.as_str().is_some_and(|p| s.eq_ignore_ascii_case(p))
                }
                ("anything-but", v) => match arg {
                    Value::Object(inner) => match (inner.get("prefix"), v) {
                        (Some(Value::String(p)), Value::String(s)) => !s.starts_with(p.as_str()),
                        _ => false,
                    },
                    Value::Array(vals) => !vals.contains(v),
                    single => single != v,
                },
                ("numeric", Value::Number(n)) => {
                    let Some(x) = n.as_f64() else { return false };
                    numeric_ops(arg).is_some_and(|ops| {
                        ops.iter().all(|(op, bound)| match *op {
                            "<" => x < *bound,
                            "<=" => x <= *bound,
                            "=" => x == *bound,
                            ">=" => x >= *bound,
                            _ => x > *bound,
                        })
                    })
                }
                _ => false,
            }
        }
        exact => exact == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Pattern {
        Pattern::compile(v).unwrap()
    }

    #[test]
    fn prefix_routes_channel_sources_but_not_our_own() {
        let inbound = p(json!({"source": [{"prefix": "retail."}]}));
        assert!(inbound.matches(&json!({"source": "retail.pos"})));
        assert!(!inbound.matches(&json!({"source": "retail-sync.ingest"})));
        assert!(!inbound.matches(&json!({"detail-type": "x"})));
    }

    #[test]
    fn every_field_must_match_and_any_listed_value_will_do() {
        let rule = p(json!({"source": ["retail-sync"], "detail-type": ["ErpSalePosted", "ErpOrderPosted"]}));
        assert!(rule.matches(&json!({"source": "retail-sync", "detail-type": "ErpSalePosted"})));
        assert!(!rule.matches(&json!({"source": "retail-sync", "detail-type": "LoyaltyAccrued"})));
        assert!(!rule.matches(&json!({"source": "retail.pos", "detail-type": "ErpSalePosted"})));
    }

    #[test]
    fn nested_fields_exists_anything_but_and_numeric() {
        let rule = p(json!({
            "detail": {
                "data": {
                    "member_id": [{"exists": true}],
                    "currency": [{"anything-but": ["XAU"]}],
                    "totals": {"gross_minor": [{"numeric": [">", 0, "<=", 100000]}]},
                    "redemption": [{"exists": false}]
                }
            }
        }));
        let event = |member: bool, gross: i64| {
            let mut data = json!({"currency": "EUR", "totals": {"gross_minor": gross}});
            if member {
                data["member_id"] = json!("m1");
            }
            json!({"detail": {"data": data}})
        };
        assert!(rule.matches(&event(true, 500)));
        assert!(!rule.matches(&event(false, 500)));
        assert!(!rule.matches(&event(true, 0)));
        assert!(!rule.matches(&event(true, 100001)));
    }

    #[test]
    fn exists_looks_at_leaves_only_as_eventbridge_does() {
        let present = p(json!({"detail": {"redemption": [{"exists": true}]}}));
        let absent = p(json!({"detail": {"redemption": [{"exists": false}]}}));
        let object = json!({"detail": {"redemption": {"hold_id": "h-1"}}});
        assert!(!present.matches(&object), "an object is not a leaf");
        assert!(absent.matches(&object));
        let leaf = p(json!({"detail": {"redemption": {"hold_id": [{"exists": true}]}}}));
        assert!(leaf.matches(&object));
    }

    #[test]
    fn array_fields_match_if_any_element_matches() {
        let rule = p(json!({"resources": ["arn:a"]}));
        assert!(rule.matches(&json!({"resources": ["arn:b", "arn:a"]})));
        assert!(!rule.matches(&json!({"resources": []})));
    }

    #[test]
    fn unsupported_operators_are_refused_when_compiled() {
        let e = Pattern::compile(json!({"source": [{"wildcard": "retail.*"}]})).unwrap_err();
        assert!(e.message.contains("wildcard"), "{e}");
        assert!(Pattern::compile(json!({"source": "retail.pos"})).is_err());
        assert!(Pattern::compile(json!({"$or": [{"source": ["a"]}]})).is_err());
    }
}
