//! The wiring of the system, read from the SAM template: queues and their DLQs, EventBridge rules and
//! their target queues, functions and the queue each consumes. The embedded backend and the local runner
//! use only this, so there is no second description of the wiring to drift from the deployed one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::pattern::{Pattern, PatternError};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read template {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("template resource {resource}: {message}")]
    Invalid { resource: String, message: String },
    #[error("rule {rule}: {source}")]
    Pattern { rule: String, source: PatternError },
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub id: String,
    pub visibility_timeout: Duration,
    /// Set on queues with a RedrivePolicy: (DLQ logical id, maxReceiveCount).
    pub redrive: Option<(String, u32)>,
}

#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub id: String,
    /// The bus the rule listens on (logical id of its `EventBusName: !Ref <Bus>`).
    pub bus: String,
    pub pattern: Pattern,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub id: String,
    /// The binary (`BuildProperties.Binary`), which is also the step name.
    pub binary: String,
    pub queue: String,
    pub batch_size: usize,
    /// The event source's `ScalingConfig.MaximumConcurrency` (a literal, or a parameter's default).
    pub max_concurrency: Option<usize>,
    /// `MemorySize` in MB: the function's own, else the template's `Globals`, else SAM's 128. What
    /// Lambda bills a millisecond by.
    pub memory_mb: u32,
}

/// A DynamoDB table: its string hash key, its global secondary indexes (name, string hash key) and
/// its TTL attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub id: String,
    pub hash_key: String,
    pub indexes: Vec<(String, String)>,
    pub ttl_attribute: Option<String>,
}

/// An EventBridge archive: the bus it keeps events of and which (its pattern).
#[derive(Debug, Clone)]
pub struct ArchiveSpec {
    pub id: String,
    pub bus: String,
    pub pattern: Pattern,
}

/// The two trust zones' buses (logical ids). Channels put their events on the channel bus, whose only
/// rule feeds ingest; every workflow event (what ingest accepted, what a step did) travels on the
/// internal bus, which only the functions may put events on.
pub const CHANNEL_BUS: &str = "ChannelBus";
pub const INTERNAL_BUS: &str = "InternalBus";

#[derive(Debug, Clone)]
pub struct Topology {
    /// Logical ids of the event buses.
    pub buses: Vec<String>,
    pub archives: Vec<ArchiveSpec>,
    pub queues: BTreeMap<String, QueueSpec>,
    pub tables: BTreeMap<String, TableSpec>,
    pub rules: Vec<RuleSpec>,
    pub functions: Vec<FunctionSpec>,
    /// The template's parameters and their defaults (those that have one).
    pub parameters: BTreeMap<String, Value>,
    /// The directory the template was loaded from (`infra/`), where its companion files are: the
    /// connectors' and the channel platforms' sample mappings. `None` for a template parsed from text.
    pub dir: Option<std::path::PathBuf>,
}

/// SQS's default when a queue does not set one.
const DEFAULT_VISIBILITY: u64 = 30;
/// Lambda's default SQS batch size.
const DEFAULT_BATCH: usize = 10;

impl Topology {
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut topology = Self::parse(&text)?;
        topology.dir = path.parent().map(Path::to_path_buf);
        Ok(topology)
    }

    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        let template = template_json(text)?;
        let resources = template
            .get("Resources")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("Resources", "the template has no Resources mapping"))?;

        let parameters: BTreeMap<String, Value> = template
            .get("Parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, p)| Some((name.clone(), p.get("Default")?.clone())))
            .collect();
        let mut buses = Vec::new();
        let mut archives = Vec::new();
        let mut queues = BTreeMap::new();
        let mut tables = BTreeMap::new();
        let mut rules = Vec::new();
        let mut functions = Vec::new();
        let global_memory = template.pointer("/Globals/Function/MemorySize").and_then(number);
        for (id, resource) in resources {
            let props = resource
                .get("Properties")
                .cloned()
                .unwrap_or(Value::Object(Map::new()));
            match resource.get("Type").and_then(Value::as_str) {
                Some("AWS::SQS::Queue") => {
                    queues.insert(id.clone(), queue(id, &props)?);
                }
                Some("AWS::DynamoDB::Table") => {
                    tables.insert(id.clone(), table(id, &props)?);
                }
                Some("AWS::Events::EventBus") => buses.push(id.clone()),
                Some("AWS::Events::Archive") => archives.push(archive(id, &props)?),
                // A rule on a bus outside the stack (a partner event bus the deployer names by a
                // parameter) exists on AWS only; locally such events are put on the channel bus.
                Some("AWS::Events::Rule") if on_parameter_bus(&props, &template) => {}
                Some("AWS::Events::Rule") => rules.push(rule(id, &props)?),
                Some("AWS::Serverless::Function") => {
                    functions.extend(function(id, resource, &props, &parameters, global_memory)?);
                }
                _ => {}
            }
        }
        let topology = Self {
            buses,
            archives,
            queues,
            tables,
            rules,
            functions,
            parameters,
            dir: None,
        };
        topology.check_references()?;
        Ok(topology)
    }

    fn check_references(&self) -> Result<(), TopologyError> {
        let known = |q: &str| self.queues.contains_key(q);
        for q in self.queues.values() {
            if let Some((dlq, _)) = &q.redrive
                && !known(dlq)
            {
                return Err(invalid(
                    &q.id,
                    format!("dead-letter queue {dlq} is not a queue of the template"),
                ));
            }
        }
        for r in &self.rules {
            if !self.buses.contains(&r.bus) {
                return Err(invalid(
                    &r.id,
                    format!("bus {} is not an event bus of the template", r.bus),
                ));
            }
            if let Some(t) = r.targets.iter().find(|t| !known(t)) {
                return Err(invalid(
                    &r.id,
                    format!("target {t} is not a queue of the template"),
                ));
            }
        }
        for f in &self.functions {
            if !known(&f.queue) {
                return Err(invalid(
                    &f.id,
                    format!("event source {} is not a queue of the template", f.queue),
                ));
            }
        }
        Ok(())
    }

    /// The rules listening on one bus: where an event put on it goes.
    pub fn rules_on<'a>(&'a self, bus: &'a str) -> impl Iterator<Item = &'a RuleSpec> + 'a {
        self.rules.iter().filter(move |r| r.bus == bus)
    }

    pub fn function(&self, binary: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.binary == binary)
    }

    /// The queues that are some queue's DLQ.
    pub fn dead_letter_queues(&self) -> Vec<&str> {
        self.queues
            .values()
            .filter_map(|q| q.redrive.as_ref().map(|(d, _)| d.as_str()))
            .collect()
    }
}

fn invalid(resource: &str, message: impl Into<String>) -> TopologyError {
    TopologyError::Invalid {
        resource: resource.to_owned(),
        message: message.into(),
    }
}

/// The template as JSON, short tags in their long forms: what checks of the template read.
pub fn template_json(text: &str) -> Result<Value, TopologyError> {
    Ok(to_json(yaml_serde::from_str(text)?))
}

/// YAML → JSON, turning CloudFormation short tags into their long forms (`!GetAtt Q.Arn` →
/// `{"Fn::GetAtt": "Q.Arn"}`, `!Ref X` → `{"Ref": "X"}`).
fn to_json(v: yaml_serde::Value) -> Value {
    use yaml_serde::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let long = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            let mut obj = Map::new();
            obj.insert(long, to_json(t.value));
            Value::Object(obj)
        }
    }
}

/// The logical id a `!GetAtt X.Arn` / `!Ref X` points at.
fn referenced(v: &Value) -> Option<String> {
    if let Some(s) = v.get("Fn::GetAtt") {
        return match s {
            Value::String(s) => s.split('.').next().map(str::to_owned),
            Value::Array(parts) => parts.first().and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
    }
    v.get("Ref").and_then(Value::as_str).map(str::to_owned)
}

fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn queue(id: &str, props: &Value) -> Result<QueueSpec, TopologyError> {
    let visibility = match props.get("VisibilityTimeout") {
        None => DEFAULT_VISIBILITY,
        Some(v) => number(v).ok_or_else(|| invalid(id, "VisibilityTimeout must be a literal number"))?,
    };
    let redrive = match props.get("RedrivePolicy") {
        None => None,
        Some(policy) => {
            let dlq = policy
                .get("deadLetterTargetArn")
                .and_then(referenced)
                .ok_or_else(|| {
                    invalid(
                        id,
                        "RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn",
                    )
                })?;
            let max = policy
                .get("maxReceiveCount")
                .and_then(number)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid(id, "RedrivePolicy.maxReceiveCount must be a literal number"))?;
            Some((dlq, max))
        }
    };
    Ok(QueueSpec {
        id: id.to_owned(),
        visibility_timeout: Duration::from_secs(visibility),
        redrive,
    })
}

fn table(id: &str, props: &Value) -> Result<TableSpec, TopologyError> {
    let hash_of = |schema: Option<&Value>| {
        schema
            .and_then(Value::as_array)
            .and_then(|keys| {
                keys.iter()
                    .find(|k| k.get("KeyType").and_then(Value::as_str) == Some("HASH"))
            })
            .and_then(|k| k.get("AttributeName").and_then(Value::as_str))
            .map(str::to_owned)
    };
    let hash_key = hash_of(props.get("KeySchema")).ok_or_else(|| invalid(id, "a table needs a HASH key"))?;
    let indexes = props
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|index| {
            let name = index.get("IndexName").and_then(Value::as_str);
            match (name, hash_of(index.get("KeySchema"))) {
                (Some(name), Some(key)) => Ok((name.to_owned(), key)),
                _ => Err(invalid(
                    id,
                    "a global secondary index needs IndexName and a HASH key",
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    let ttl_attribute = props
        .get("TimeToLiveSpecification")
        .filter(|t| t.get("Enabled").and_then(Value::as_bool) == Some(true))
        .and_then(|t| t.get("AttributeName").and_then(Value::as_str))
        .map(str::to_owned);
    Ok(TableSpec {
        id: id.to_owned(),
        hash_key,
        indexes,
        ttl_attribute,
    })
}

fn archive(id: &str, props: &Value) -> Result<ArchiveSpec, TopologyError> {
    let bus = props
        .get("SourceArn")
        .and_then(referenced)
        .ok_or_else(|| invalid(id, "SourceArn must be !GetAtt <EventBus>.Arn"))?;
    let pattern = props
        .get("EventPattern")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let pattern = Pattern::compile(pattern).map_err(|source| TopologyError::Pattern {
        rule: id.to_owned(),
        source,
    })?;
    Ok(ArchiveSpec {
        id: id.to_owned(),
        bus,
        pattern,
    })
}

/// Whether a rule listens on a bus the template takes as a parameter instead of creating it.
fn on_parameter_bus(props: &Value, template: &Value) -> bool {
    props
        .get("EventBusName")
        .and_then(referenced)
        .is_some_and(|name| template.pointer(&format!("/Parameters/{name}")).is_some())
}

fn rule(id: &str, props: &Value) -> Result<RuleSpec, TopologyError> {
    let bus = props.get("EventBusName").and_then(referenced).ok_or_else(|| {
        invalid(
            id,
            "EventBusName must be !Ref <EventBus> (the default bus is not used)",
        )
    })?;
    let pattern = match props.get("EventPattern") {
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| invalid(id, format!("EventPattern is not JSON: {e}")))?
        }
        Some(p @ Value::Object(_)) => p.clone(),
        _ => return Err(invalid(id, "only rules with an EventPattern are supported")),
    };
    let pattern = Pattern::compile(pattern).map_err(|source| TopologyError::Pattern {
        rule: id.to_owned(),
        source,
    })?;
    let targets = props
        .get("Targets")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(id, "a rule needs Targets"))?
        .iter()
        .map(|t| {
            t.get("Arn")
                .and_then(referenced)
                .ok_or_else(|| invalid(id, "target Arn must be !GetAtt <Queue>.Arn"))
        })
        .collect::<Result<_, _>>()?;
    Ok(RuleSpec {
        id: id.to_owned(),
        bus,
        pattern,
        targets,
    })
}

fn function(
    id: &str,
    resource: &Value,
    props: &Value,
    parameters: &BTreeMap<String, Value>,
    global_memory: Option<u64>,
) -> Result<Vec<FunctionSpec>, TopologyError> {
    let memory_mb = props
        .get("MemorySize")
        .and_then(number)
        .or(global_memory)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(128);
    let binary = resource
        .pointer("/Metadata/BuildProperties/Binary")
        .and_then(Value::as_str);
    let mut specs = Vec::new();
    for event in props
        .get("Events")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|e| e.values())
    {
        if event.get("Type").and_then(Value::as_str) != Some("SQS") {
            continue;
        }
        let binary =
            binary.ok_or_else(|| invalid(id, "an SQS-fed function needs Metadata.BuildProperties.Binary"))?;
        let queue = event
            .pointer("/Properties/Queue")
            .and_then(referenced)
            .ok_or_else(|| invalid(id, "SQS event Queue must be !GetAtt <Queue>.Arn"))?;
        let batch_size = match event.pointer("/Properties/BatchSize") {
            None => DEFAULT_BATCH,
            Some(v) => number(v)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid(id, "BatchSize must be a literal number"))?,
        };
        let max_concurrency = match event.pointer("/Properties/ScalingConfig/MaximumConcurrency") {
            None => None,
            Some(v) => Some(
                parameter_number(v, parameters)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(
                            id,
                            "MaximumConcurrency must be a number or !Ref a parameter with a Default",
                        )
                    })?,
            ),
        };
        specs.push(FunctionSpec {
            id: id.to_owned(),
            binary: binary.to_owned(),
            queue,
            batch_size,
            max_concurrency,
            memory_mb,
        });
    }
    Ok(specs)
}

/// A literal number, or `!Ref` of a parameter whose default is one.
fn parameter_number(v: &Value, parameters: &BTreeMap<String, Value>) -> Option<u64> {
    match v.get("Ref").and_then(Value::as_str) {
        Some(name) => number(parameters.get(name)?),
        None => number(v),
    }
}

impl Topology {
    /// A numeric parameter's default (`ErpMaxConcurrency`, …).
    pub fn parameter_default(&self, name: &str) -> Option<u64> {
        self.parameters.get(name).and_then(number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Resources:
  InQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 180
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt InDLQ.Arn
        maxReceiveCount: 5
  InDLQ:
    Type: AWS::SQS::Queue
  Bus:
    Type: AWS::Events::EventBus
  InRule:
    Type: AWS::Events::Rule
    Properties:
      EventBusName: !Ref Bus
      EventPattern:
        source: [{prefix: "retail."}]
      Targets:
        - Id: InQueue
          Arn: !GetAtt InQueue.Arn
  InFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: ingest
    Properties:
      Events:
        Messages:
          Type: SQS
          Properties:
            Queue: !GetAtt InQueue.Arn
            BatchSize: 10
"#;

    #[test]
    fn reads_queues_dlqs_rules_and_functions_with_short_tags() {
        let t = Topology::parse(TEMPLATE).unwrap();
        let q = &t.queues["InQueue"];
        assert_eq!(q.visibility_timeout, Duration::from_secs(180));
        assert_eq!(q.redrive, Some(("InDLQ".to_owned(), 5)));
        assert_eq!(t.dead_letter_queues(), vec!["InDLQ"]);
        assert_eq!(t.rules[0].targets, vec!["InQueue".to_owned()]);
        assert_eq!(t.rules_on("Bus").count(), 1);
        assert!(
            t.rules[0]
                .pattern
                .matches(&serde_json::json!({"source": "retail.pos"}))
        );
        assert_eq!(t.function("ingest").unwrap().queue, "InQueue");
        assert_eq!(t.function("ingest").unwrap().memory_mb, 128, "SAM's default");
    }

    #[test]
    fn memory_is_the_function_s_own_else_the_globals() {
        let globals = format!("Globals:\n  Function:\n    MemorySize: 256\n{TEMPLATE}");
        assert_eq!(
            Topology::parse(&globals)
                .unwrap()
                .function("ingest")
                .unwrap()
                .memory_mb,
            256
        );
        let own = globals.replace(
            "    Properties:\n      Events:",
            "    Properties:\n      MemorySize: 512\n      Events:",
        );
        assert_eq!(
            Topology::parse(&own)
                .unwrap()
                .function("ingest")
                .unwrap()
                .memory_mb,
            512
        );
    }

    #[test]
    fn the_repository_template_wires_every_step() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let t = Topology::load(Path::new(path)).unwrap();
        for binary in ["ingest", "post-sale-to-erp", "accrue-loyalty"] {
            let f = t
                .function(binary)
                .unwrap_or_else(|| panic!("{binary} is not in the template"));
            assert!(
                t.queues[&f.queue].redrive.is_some(),
                "{binary}'s queue has no DLQ"
            );
        }
        let sagas = &t.tables["SagaTable"];
        assert_eq!(sagas.hash_key, "pk");
        assert_eq!(
            sagas.indexes,
            vec![("by-correlation".to_owned(), "correlation_id".to_owned())]
        );
        assert_eq!(sagas.ttl_attribute.as_deref(), Some("expires_at"));
        // What a cost estimate bills a millisecond by: the Globals' 128 MB.
        assert!(t.functions.iter().all(|f| f.memory_mb == 128));
    }

    /// Words that drift: each function's `main.rs` names the step it runs, and every repository path the
    /// template mentions exists.
    #[test]
    fn each_function_says_what_it_runs_and_the_template_names_files_that_exist() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let template = std::fs::read_to_string(root.join("infra/template.yaml")).unwrap();
        let t = Topology::load(&root.join("infra/template.yaml")).unwrap();
        for f in &t.functions {
            let main = std::fs::read_to_string(root.join(format!("functions/{}/src/main.rs", f.binary)))
                .unwrap_or_else(|e| panic!("functions/{}: {e}", f.binary));
            // `run::<steps::AccrueLoyalty>()` for `accrue-loyalty`: the step type, named as the binary.
            let step_type: String = f
                .binary
                .split('-')
                .flat_map(|w| {
                    let mut chars = w.chars();
                    chars.next().into_iter().flat_map(char::to_uppercase).chain(chars)
                })
                .collect();
            assert!(
                main.contains(&format!("steps::{step_type}>()")),
                "{} runs another step",
                f.binary
            );
            let doc = main.lines().next().unwrap_or_default();
            assert!(
                doc.contains(&format!("`{}`", f.binary)),
                "{}'s doc says: {doc}",
                f.binary
            );
        }
        let paths: Vec<&str> = template
            .split(|c: char| c.is_whitespace() || "()`,;".contains(c))
            .filter(|w| w.starts_with("shared/") || w.starts_with("events/"))
            .map(|w| w.trim_end_matches('.'))
            .collect();
        assert!(!paths.is_empty());
        for path in paths {
            assert!(
                root.join(path).exists(),
                "the template names {path}, which does not exist"
            );
        }
    }

    /// Channels reach ingest and nothing else; every step hears only the internal bus.
    #[test]
    fn the_repository_template_splits_channels_from_workflow_events() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let t = Topology::load(Path::new(path)).unwrap();
        let ingest = &t.function("ingest").unwrap().queue;
        let mappers: Vec<&String> = ["map-shopify", "map-adobe-commerce"]
            .iter()
            .map(|b| &t.function(b).unwrap().queue)
            .collect();
        // On the channel bus: ingest's rule, and one rule per platform mapper, to its queue alone (the
        // partner buses' rules are on buses outside the stack, not in the local topology).
        let channel: Vec<_> = t.rules_on(CHANNEL_BUS).collect();
        assert_eq!(channel.len(), 3);
        for rule in &channel {
            assert_eq!(rule.targets.len(), 1, "{}", rule.id);
            assert!(
                &rule.targets[0] == ingest || mappers.contains(&&rule.targets[0]),
                "{}",
                rule.id
            );
        }
        assert!(t.rules.iter().all(|r| !r.id.ends_with("PartnerRule")));
        let internal: Vec<_> = t.rules_on(INTERNAL_BUS).collect();
        assert_eq!(
            internal.len() + 3,
            t.rules.len(),
            "every rule is on one of the two buses"
        );
        assert!(
            internal
                .iter()
                .all(|r| mappers.iter().all(|m| !r.targets.contains(m)))
        );
        assert!(internal.iter().all(|r| !r.targets.contains(ingest)));
    }

    #[test]
    fn a_rule_on_an_unknown_bus_is_an_error() {
        let broken = TEMPLATE.replace("EventBusName: !Ref Bus", "EventBusName: !Ref Elsewhere");
        let e = Topology::parse(&broken).unwrap_err().to_string();
        assert!(e.contains("Elsewhere"), "{e}");
    }

    #[test]
    fn a_rule_targeting_an_unknown_queue_is_an_error_not_a_silent_drop() {
        let broken = TEMPLATE.replace("Arn: !GetAtt InQueue.Arn", "Arn: !GetAtt Nowhere.Arn");
        let e = Topology::parse(&broken).unwrap_err().to_string();
        assert!(e.contains("Nowhere"), "{e}");
    }
}
