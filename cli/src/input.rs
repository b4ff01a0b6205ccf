//! Input files for a local run. A channel puts events on the bus, so every well-formed envelope is fed
//! through the bus (and routed by the template's rules); anything else (broken JSON, no envelope) is
//! what a misbehaving producer could put on the ingest queue, and is fed there raw so that ingest
//! quarantines it — bad input is part of the sample, not an error of the run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// An EventBridge envelope: what PutEvents takes.
    Event {
        source: String,
        detail_type: String,
        detail: Value,
    },
    /// A call of the redemption API (a checkout), as a channel makes it: `{"api": {...}}`.
    Api(ApiCall),
    /// Anything else, byte for byte.
    Raw(String),
}

/// One request to the redemption experience API, in a sample stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiCall {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The calling application (the token's `client_id` on AWS); `local` when absent. A local caller has
    /// every scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// A member's own token: the call may act on this member only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
}

/// Reads a file, or every `.json` / `.jsonl` file of a directory in name order.
pub fn read_inputs(path: &Path) -> anyhow::Result<Vec<Input>> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "jsonl")))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{} holds no .json or .jsonl files", path.display());
        }
        files
    } else {
        vec![path.to_owned()]
    };
    let mut inputs = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        inputs.extend(parse(
            &text,
            file.extension().and_then(|e| e.to_str()) == Some("jsonl"),
        ));
    }
    Ok(inputs)
}

/// JSONL: one input per non-empty line. JSON: one envelope, or an array of them. Each is read as ingest
/// reads it (duplicate object keys refused): one that does not read is fed raw, byte for byte, so ingest
/// quarantines it with its reason.
pub fn parse(text: &str, lines: bool) -> Vec<Input> {
    if !lines {
        if let Ok(items) = serde_json::from_str::<Vec<Box<RawValue>>>(text) {
            return items.iter().map(|item| one(item.get())).collect();
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            return vec![one(text.trim())];
        }
        // Not one JSON document: maybe JSONL under a .json name.
    }
    text.lines().filter(|l| !l.trim().is_empty()).map(one).collect()
}

fn one(text: &str) -> Input {
    match retail_sync_contracts::parse_json_strictly(text) {
        Ok(v) => classify(v, text),
        Err(_) => Input::Raw(text.to_owned()),
    }
}

fn classify(v: Value, raw: &str) -> Input {
    if let Some(Ok(call)) = v.get("api").map(|a| serde_json::from_value::<ApiCall>(a.clone())) {
        return Input::Api(call);
    }
    let field = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    match (field("source"), field("detail-type"), v.get("detail")) {
        (Some(source), Some(detail_type), Some(detail)) if detail.is_object() => Input::Event {
            source,
            detail_type,
            detail: detail.clone(),
        },
        _ => Input::Raw(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_go_to_the_bus_and_everything_else_raw() {
        let text =
            "{\"source\":\"retail.pos\",\"detail-type\":\"SaleCompleted\",\"detail\":{}}\n\n{broken\n[1]\n";
        let inputs = parse(text, true);
        assert_eq!(inputs.len(), 3);
        assert!(matches!(&inputs[0], Input::Event { detail_type, .. } if detail_type == "SaleCompleted"));
        assert_eq!(inputs[1], Input::Raw("{broken".into()));
        assert_eq!(inputs[2], Input::Raw("[1]".into()));
    }

    #[test]
    fn api_lines_are_checkout_calls_and_malformed_ones_stay_raw() {
        let text = "{\"api\":{\"method\":\"POST\",\"path\":\"/v1/holds\",\"idempotency_key\":\"k\",\"body\":{}}}\n{\"api\":{\"verb\":1}}\n";
        let inputs = parse(text, true);
        assert!(
            matches!(&inputs[0], Input::Api(c) if c.path == "/v1/holds" && c.idempotency_key.as_deref() == Some("k"))
        );
        assert!(matches!(&inputs[1], Input::Raw(_)));
    }

    /// Ingest refuses duplicate object keys (`invalid_json`); read leniently, the line would have reached
    /// it with the last of the duplicates alone and been judged on that.
    #[test]
    fn an_input_with_a_duplicate_key_is_fed_raw_as_written() {
        let line = r#"{"source":"retail.pos","detail-type":"SaleCompleted","detail":{"data":{"quantity":1,"quantity":100}}}"#;
        assert_eq!(parse(line, true), [Input::Raw(line.into())]);
        let top =
            r#"{"source":"retail.pos","source":"retail.web","detail-type":"SaleCompleted","detail":{}}"#;
        assert_eq!(parse(top, false), [Input::Raw(top.into())]);
        let array =
            format!(r#"[{{"source":"retail.crm","detail-type":"TierChanged","detail":{{}}}}, {line}]"#);
        let inputs = parse(&array, false);
        assert!(matches!(&inputs[0], Input::Event { .. }));
        assert_eq!(inputs[1], Input::Raw(line.into()));
    }

    #[test]
    fn a_json_array_is_several_envelopes() {
        let text = r#"[{"source":"retail.crm","detail-type":"TierChanged","detail":{}},{"no":"envelope"}]"#;
        let inputs = parse(text, false);
        assert!(matches!(&inputs[0], Input::Event { .. }));
        assert_eq!(inputs[1], Input::Raw(r#"{"no":"envelope"}"#.into()));
    }
}
