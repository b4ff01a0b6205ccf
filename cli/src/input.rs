//! Input files for a local run. A channel puts events on the bus, so every well-formed envelope is fed
//! through the bus (and routed by the template's rules); anything else (broken JSON, no envelope) is
//! what a misbehaving producer could put on the ingest queue, and is fed there raw so that ingest
//! quarantines it — bad input is part of the sample, not an error of the run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

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

/// JSONL: one input per non-empty line. JSON: one envelope, or an array of them.
pub fn parse(text: &str, lines: bool) -> Vec<Input> {
    if !lines {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => return items.into_iter().map(|v| classify(v, None)).collect(),
            Ok(v) => return vec![classify(v, Some(text.trim()))],
            // Not one JSON document: maybe JSONL under a .json name.
            Err(_) => {}
        }
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(v) => classify(v, Some(line)),
            Err(_) => Input::Raw(line.to_owned()),
        })
        .collect()
}

fn classify(v: Value, raw: Option<&str>) -> Input {
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
        _ => Input::Raw(raw.map_or_else(|| v.to_string(), str::to_owned)),
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

    #[test]
    fn a_json_array_is_several_envelopes() {
        let text = r#"[{"source":"retail.crm","detail-type":"TierChanged","detail":{}},{"no":"envelope"}]"#;
        let inputs = parse(text, false);
        assert!(matches!(&inputs[0], Input::Event { .. }));
        assert_eq!(inputs[1], Input::Raw(r#"{"no":"envelope"}"#.into()));
    }
}
