//! The AWS backend: the core ports over DynamoDB, SQS and EventBridge through the AWS SDK for Rust, with
//! the same semantics as the embedded backend (`retail-sync-embedded`), so a workflow cannot tell them
//! apart except by speed.
//!
//! # Layout
//! - [`settings`]: table, bus and queue names (from the functions' environment) and the SDK config.
//! - [`backend`]: the clients, built once, and [`AwsBackend`], every port over them.
//! - [`dynamo`]: idempotency, saga and quarantine stores; [`items`]: their item ↔ record mapping.
//! - [`bus`]: the publisher over PutEvents.
//! - [`queues`]: the queue consumer over SQS, and the operator's depth / DLQ peek / redrive.
//! - [`counter`]: counts API requests per service and operation (the benchmark's "requests per sale").
//! - [`meter`]: what those requests would be billed as (request units, events, chunks), for the cost
//!   benchmark.
//! - [`provision`](mod@provision): creates what `infra/template.yaml` declares on an emulator.

pub mod backend;
pub mod bus;
pub mod counter;
pub mod dynamo;
pub mod error;
pub mod http;
pub mod items;
pub mod meter;
pub mod provision;
pub mod queues;
pub mod reports;
pub mod settings;

pub use backend::{AwsBackend, AwsClients};
pub use bus::EventBus;
pub use counter::RequestCounter;
pub use dynamo::DynamoState;
pub use error::AwsError;
pub use meter::{Bill, BillingMeter};
pub use provision::{ProvisionOptions, provision};
pub use queues::{QueueMessage, SourceQueues, SqsQueues};
pub use reports::ReportBucket;
pub use settings::{AwsSettings, emulator_sdk_config, sdk_config};
