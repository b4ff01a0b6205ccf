//! Building the clients once, and the backend that offers every port over them.

use async_trait::async_trait;
use aws_config::SdkConfig;
use jiff::Timestamp;
use serde_json::Value;

use retail_sync_contracts::values::CorrelationId;
use retail_sync_core::Error;
use retail_sync_core::idempotency::{IdempotencyKey, IdempotencyRecord};
use retail_sync_core::ports::{
    IdempotencyStore, Outgoing, Publisher, QuarantineItem, QuarantineStore, QueueConsumer, Received,
    SagaStore,
};
use retail_sync_core::saga::{Saga, SagaId};

use crate::bus::EventBus;
use crate::counter::RequestCounter;
use crate::dynamo::DynamoState;
use crate::error::AwsError;
use crate::meter::BillingMeter;
use crate::queues::{QueueMessage, SqsQueues};
use crate::settings::AwsSettings;

/// The three SDK clients, each counting its requests into one [`RequestCounter`]. Derive them from one
/// `SdkConfig` per process; clones share connections.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub counter: RequestCounter,
    endpoint_url: Option<String>,
    region: Option<String>,
}

impl AwsClients {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self::build(sdk, None)
    }

    /// Clients that also meter what AWS would bill for their requests (the cost benchmark's).
    pub fn metered(sdk: &SdkConfig, meter: &BillingMeter) -> Self {
        Self::build(sdk, Some(meter))
    }

    fn build(sdk: &SdkConfig, meter: Option<&BillingMeter>) -> Self {
        let counter = RequestCounter::new();
        let mut dynamodb =
            aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(counter.interceptor("dynamodb"));
        let mut sqs = aws_sdk_sqs::config::Builder::from(sdk).interceptor(counter.interceptor("sqs"));
        let mut eventbridge =
            aws_sdk_eventbridge::config::Builder::from(sdk).interceptor(counter.interceptor("eventbridge"));
        if let Some(meter) = meter {
            dynamodb = dynamodb.interceptor(meter.interceptor());
            sqs = sqs.interceptor(meter.interceptor());
            eventbridge = eventbridge.interceptor(meter.interceptor());
        }
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            eventbridge: aws_sdk_eventbridge::Client::from_conf(eventbridge.build()),
            counter,
            endpoint_url: sdk.endpoint_url().map(str::to_owned),
            region: sdk.region().map(|r| r.to_string()),
        }
    }

    /// The endpoint override the clients were built with (an emulator's), if any.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.endpoint_url.as_deref()
    }

    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

/// Every port over AWS: DynamoDB state, the EventBridge bus and the SQS queues. Each part is usable on
/// its own (a Lambda function that needs only the state and the bus can build just those); this is the
/// whole set the local runner and the operator CLI want.
#[derive(Debug, Clone)]
pub struct AwsBackend {
    state: DynamoState,
    /// The internal bus (the steps' publisher).
    bus: EventBus,
    channel_bus: Option<EventBus>,
    queues: SqsQueues,
    settings: AwsSettings,
    counter: RequestCounter,
}

impl AwsBackend {
    pub fn new(clients: &AwsClients, settings: AwsSettings) -> Self {
        Self {
            state: DynamoState::new(clients.dynamodb.clone(), &settings),
            bus: EventBus::new(clients.eventbridge.clone(), &settings),
            channel_bus: EventBus::channels(clients.eventbridge.clone(), &settings),
            queues: SqsQueues::new(clients.sqs.clone(), &settings),
            counter: clients.counter.clone(),
            settings,
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// Requests sent so far by this backend's clients.
    pub fn counter(&self) -> &RequestCounter {
        &self.counter
    }

    pub fn state(&self) -> &DynamoState {
        &self.state
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn queues(&self) -> &SqsQueues {
        &self.queues
    }

    pub async fn send_raw(&self, queue: &str, body: &str) -> Result<String, Error> {
        self.queues.send_raw(queue, body).await
    }

    pub async fn queue_depth(&self, queue: &str) -> Result<(u64, u64), Error> {
        self.queues.queue_depth(queue).await
    }

    pub async fn dlq_messages(&self, queue: &str, max: usize) -> Result<Vec<QueueMessage>, Error> {
        self.queues.dlq_messages(queue, max).await
    }

    /// [`AwsBackend::dlq_messages`] of each of `queues`, in their order, all peeked at once.
    pub async fn dlqs_messages(&self, queues: &[&str], max: usize) -> Result<Vec<Vec<QueueMessage>>, Error> {
        self.queues.dlqs_messages(queues, max).await
    }

    pub async fn redrive(&self, from_dlq: &str, to_queue: &str) -> Result<usize, Error> {
        self.queues.redrive(from_dlq, to_queue).await
    }

    pub async fn redrive_where(
        &self,
        from_dlq: &str,
        to_queue: &str,
        pick: &(dyn Fn(&QueueMessage) -> bool + Sync),
        limit: usize,
    ) -> Result<usize, Error> {
        self.queues.redrive_where(from_dlq, to_queue, pick, limit).await
    }

    /// PutEvents on the channel bus, as a channel does.
    pub async fn put_channel_events(
        &self,
        entries: &[(String, String, Value)],
    ) -> Result<Vec<String>, Error> {
        match &self.channel_bus {
            Some(bus) => bus.put_raw_events(entries).await,
            None => Err(Error::unavailable(
                "eventbridge",
                AwsError::MissingEnv("CHANNEL_BUS_NAME"),
            )),
        }
    }

    /// Replays the channel bus's archive for `[from, to)` (see [`EventBus::start_replay`]) and waits up to
    /// `wait` for it to finish. Returns the replay's name and its last state.
    pub async fn replay(
        &self,
        from: Timestamp,
        to: Timestamp,
        wait: std::time::Duration,
    ) -> Result<(String, String), Error> {
        let archive = self.settings.archive_name.as_deref().ok_or_else(|| {
            Error::unavailable(
                "eventbridge",
                AwsError::MissingResource("the channel bus's archive"),
            )
        })?;
        let name = self.bus.start_replay(archive, from, to).await?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            let (state, reason) = self.bus.replay_state(&name).await?;
            match state.as_str() {
                "COMPLETED" => return Ok((name, state)),
                "FAILED" | "CANCELLED" => {
                    let why = reason.unwrap_or_default();
                    return Err(Error::unavailable(
                        "eventbridge",
                        format!("replay {name} {state}: {why}"),
                    ));
                }
                _ if std::time::Instant::now() >= deadline => return Ok((name, state)),
                _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        }
    }

    /// PutEvents on the internal bus with any content: what a principal inside the internal zone could
    /// send. Only tests of the steps' guards use it (on AWS the bus's policy admits the functions alone).
    pub async fn put_internal_events(
        &self,
        entries: &[(String, String, Value)],
    ) -> Result<Vec<String>, Error> {
        self.bus.put_raw_events(entries).await
    }

    pub async fn scan_sagas(&self) -> Result<Vec<Saga>, Error> {
        self.state.scan_sagas().await
    }
}

#[async_trait]
impl IdempotencyStore for AwsBackend {
    async fn try_insert(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        self.state.try_insert(record, now).await
    }

    async fn release(&self, claim: &IdempotencyRecord) -> Result<(), Error> {
        self.state.release(claim).await
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, Error> {
        self.state.get(key).await
    }
}

#[async_trait]
impl SagaStore for AwsBackend {
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error> {
        self.state.create(saga).await
    }

    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error> {
        self.state.load(id).await
    }

    async fn load_many(&self, ids: &[SagaId]) -> Result<Vec<Saga>, Error> {
        self.state.load_many(ids).await
    }

    async fn find_by_correlation(&self, correlation_id: &CorrelationId) -> Result<Option<Saga>, Error> {
        self.state.find_by_correlation(correlation_id).await
    }

    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error> {
        self.state.save(saga, completion).await
    }
}

#[async_trait]
impl QuarantineStore for AwsBackend {
    async fn put(&self, item: &QuarantineItem) -> Result<(), Error> {
        self.state.put(item).await
    }

    async fn keep(&self, item: &QuarantineItem) -> Result<(), Error> {
        self.state.keep(item).await
    }

    async fn list(&self, limit: usize) -> Result<Vec<QuarantineItem>, Error> {
        self.state.list(limit).await
    }
}

#[async_trait]
impl Publisher for AwsBackend {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), Error>> {
        self.bus.publish(events).await
    }
}

#[async_trait]
impl QueueConsumer for AwsBackend {
    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Received>, Error> {
        self.queues.receive(queue, max).await
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), Error> {
        self.queues.delete(queue, receipts).await
    }

    async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        wait: std::time::Duration,
    ) -> Result<(), Error> {
        self.queues.change_visibility(queue, receipt, wait).await
    }
}
