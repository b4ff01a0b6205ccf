//! Creates on an emulator (moto) what `infra/template.yaml` declares: tables, the bus, queues with their
//! DLQs, rules and their queue targets, each on its bus, and the channel bus's archive. For emulators and
//! local runs only: real deployments go through SAM, which also applies what this leaves out (bus and
//! queue policies, roles, encryption, PITR, alarms).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;

use retail_sync_topology::{CHANNEL_BUS, INTERNAL_BUS, QueueSpec, TableSpec, Topology};

use crate::backend::AwsClients;
use crate::error::{AwsError, EntryFailure};
use crate::settings::AwsSettings;

/// How resources are named and tuned on the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionOptions {
    /// Put before every logical id (`t1a2b-IngestQueue`), so runs and tests sharing one emulator
    /// do not see each other's resources.
    pub prefix: String,
    /// Replaces every queue's visibility timeout (local runs and tests want a retry within seconds).
    pub visibility_timeout: Option<Duration>,
}

impl ProvisionOptions {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            visibility_timeout: None,
        }
    }

    /// A prefix no other caller in this or a concurrent process is using.
    pub fn unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::new(format!("t{:x}{:x}{n}-", std::process::id(), nanos))
    }

    pub fn with_visibility_timeout(mut self, visibility: Duration) -> Self {
        self.visibility_timeout = Some(visibility);
        self
    }

    pub fn name(&self, logical_id: &str) -> String {
        format!("{}{logical_id}", self.prefix)
    }
}

/// The template's logical ids of the tables the functions are configured with.
const IDEMPOTENCY_TABLE: &str = "IdempotencyTable";
const SAGA_TABLE: &str = "SagaTable";
const QUARANTINE_TABLE: &str = "QuarantineTable";

/// Creates everything and returns the settings that address it (with the clients' endpoint). Running
/// it again with the same prefix finds what exists and leaves it be.
pub async fn provision(
    clients: &AwsClients,
    topology: &Topology,
    options: &ProvisionOptions,
) -> Result<AwsSettings, AwsError> {
    let table_name = |id: &'static str| {
        topology
            .tables
            .contains_key(id)
            .then(|| options.name(id))
            .ok_or(AwsError::MissingResource(id))
    };
    let settings = AwsSettings {
        endpoint_url: clients.endpoint_url().map(str::to_owned),
        region: clients.region().map(str::to_owned),
        profile: None,
        idempotency_table: table_name(IDEMPOTENCY_TABLE)?,
        saga_table: table_name(SAGA_TABLE)?,
        quarantine_table: table_name(QUARANTINE_TABLE)?,
        event_bus_name: options.name(INTERNAL_BUS),
        channel_bus_name: Some(options.name(CHANNEL_BUS)),
        archive_name: topology.archives.first().map(|a| options.name(&a.id)),
        queue_urls: BTreeMap::new(),
        saga_retention: None,
        quarantine_retention: crate::settings::days(crate::settings::DEFAULT_QUARANTINE_RETENTION_DAYS),
    };
    for table in topology.tables.values() {
        create_table(clients, table, &options.name(&table.id)).await?;
    }
    let mut bus_arns = BTreeMap::new();
    for bus in [CHANNEL_BUS, INTERNAL_BUS] {
        if !topology.buses.iter().any(|b| b == bus) {
            return Err(AwsError::MissingResource(bus));
        }
        bus_arns.insert(bus, create_bus(clients, &options.name(bus)).await?);
    }
    for archive in &topology.archives {
        let source = bus_arns
            .get(archive.bus.as_str())
            .ok_or(AwsError::MissingResource("the archive's bus"))?;
        create_archive(
            clients,
            &options.name(&archive.id),
            source,
            archive.pattern.as_json(),
        )
        .await?;
    }
    let queues = create_queues(clients, topology, options).await?;
    for rule in &topology.rules {
        let targets = rule.targets.iter().map(|q| (q.as_str(), queues[q].1.as_str()));
        put_rule(
            clients,
            &options.name(&rule.bus),
            &options.name(&rule.id),
            rule.pattern.as_json(),
            targets,
        )
        .await?;
    }
    let queue_urls = queues.into_iter().map(|(id, (url, _))| (id, url)).collect();
    Ok(AwsSettings {
        queue_urls,
        ..settings
    })
}

async fn create_table(clients: &AwsClients, table: &TableSpec, name: &str) -> Result<(), AwsError> {
    let key = |attribute: &str| {
        KeySchemaElement::builder()
            .attribute_name(attribute)
            .key_type(KeyType::Hash)
            .build()
    };
    let mut attributes = vec![table.hash_key.as_str()];
    attributes.extend(
        table
            .indexes
            .iter()
            .map(|(_, k)| k.as_str())
            .filter(|k| *k != table.hash_key),
    );
    attributes.sort_unstable();
    attributes.dedup();
    let definitions = attributes
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(*a)
                .attribute_type(ScalarAttributeType::S)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AwsError::sdk("dynamodb", "CreateTable", e))?;
    let indexes = table
        .indexes
        .iter()
        .map(|(index, k)| {
            GlobalSecondaryIndex::builder()
                .index_name(index)
                .key_schema(key(k)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AwsError::sdk("dynamodb", "CreateTable", e))?;
    let created = clients
        .dynamodb
        .create_table()
        .table_name(name)
        .set_attribute_definitions(Some(definitions))
        .key_schema(key(&table.hash_key).map_err(|e| AwsError::sdk("dynamodb", "CreateTable", e))?)
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(AwsError::sdk("dynamodb", "CreateTable", e)),
    }
    if let Some(attribute) = &table.ttl_attribute {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(attribute)
            .enabled(true)
            .build()
            .map_err(|e| AwsError::sdk("dynamodb", "UpdateTimeToLive", e))?;
        // TTL only cleans up: readers check expiry themselves, so an emulator without it still behaves.
        if let Err(e) = clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            tracing::warn!(table = name, error = %e, "could not enable TTL");
        }
    }
    Ok(())
}

/// Creates the bus (or finds it) and returns its ARN.
async fn create_bus(clients: &AwsClients, name: &str) -> Result<String, AwsError> {
    match clients.eventbridge.create_event_bus().name(name).send().await {
        Ok(out) => {
            if let Some(arn) = out.event_bus_arn {
                return Ok(arn);
            }
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
        Err(e) => return Err(AwsError::sdk("eventbridge", "CreateEventBus", e)),
    }
    let out = clients
        .eventbridge
        .describe_event_bus()
        .name(name)
        .send()
        .await
        .map_err(|e| AwsError::sdk("eventbridge", "DescribeEventBus", e))?;
    out.arn.ok_or(AwsError::MissingField {
        operation: "DescribeEventBus",
        field: "Arn",
    })
}

/// Creates the archive of `source` (a bus ARN) keeping what `pattern` matches, unless it exists.
async fn create_archive(
    clients: &AwsClients,
    name: &str,
    source: &str,
    pattern: &serde_json::Value,
) -> Result<(), AwsError> {
    let created = clients
        .eventbridge
        .create_archive()
        .archive_name(name)
        .event_source_arn(source)
        .event_pattern(pattern.to_string())
        .retention_days(30)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(AwsError::sdk("eventbridge", "CreateArchive", e)),
    }
}

/// Creates every queue, DLQs first (a RedrivePolicy names its DLQ's ARN). Returns (url, arn) by
/// logical id.
async fn create_queues(
    clients: &AwsClients,
    topology: &Topology,
    options: &ProvisionOptions,
) -> Result<BTreeMap<String, (String, String)>, AwsError> {
    let (plain, redriven): (Vec<&QueueSpec>, Vec<&QueueSpec>) =
        topology.queues.values().partition(|q| q.redrive.is_none());
    let mut created = BTreeMap::new();
    for queue in plain.into_iter().chain(redriven) {
        let visibility = options.visibility_timeout.unwrap_or(queue.visibility_timeout);
        let mut request = clients
            .sqs
            .create_queue()
            .queue_name(options.name(&queue.id))
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.as_secs().to_string(),
            );
        if let Some((dlq, max_receives)) = &queue.redrive {
            let (_, dlq_arn) = created
                .get(dlq)
                .ok_or_else(|| AwsError::UnknownQueue(dlq.clone()))?;
            let policy = serde_json::json!({
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": max_receives.to_string(),
            });
            request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let url = request
            .send()
            .await
            .map_err(|e| AwsError::sdk("sqs", "CreateQueue", e))?
            .queue_url
            .ok_or(AwsError::MissingField {
                operation: "CreateQueue",
                field: "QueueUrl",
            })?;
        let arn = queue_arn(clients, &url).await?;
        created.insert(queue.id.clone(), (url, arn));
    }
    Ok(created)
}

async fn queue_arn(clients: &AwsClients, url: &str) -> Result<String, AwsError> {
    let out = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| AwsError::sdk("sqs", "GetQueueAttributes", e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or(AwsError::MissingField {
            operation: "GetQueueAttributes",
            field: "QueueArn",
        })
}

async fn put_rule<'a>(
    clients: &AwsClients,
    bus: &str,
    name: &str,
    pattern: &serde_json::Value,
    targets: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), AwsError> {
    clients
        .eventbridge
        .put_rule()
        .name(name)
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .state(RuleState::Enabled)
        .send()
        .await
        .map_err(|e| AwsError::sdk("eventbridge", "PutRule", e))?;
    let targets = targets
        .map(|(id, arn)| Target::builder().id(id).arn(arn).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AwsError::sdk("eventbridge", "PutTargets", e))?;
    let total = targets.len();
    let out = clients
        .eventbridge
        .put_targets()
        .rule(name)
        .event_bus_name(bus)
        .set_targets(Some(targets))
        .send()
        .await
        .map_err(|e| AwsError::sdk("eventbridge", "PutTargets", e))?;
    let failures: Vec<_> = out
        .failed_entries()
        .iter()
        .map(|f| EntryFailure::new(f.error_code(), f.error_message()))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(AwsError::BatchEntries {
            operation: "PutTargets",
            total,
            failures,
        })
    }
}
