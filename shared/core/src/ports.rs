//! The ports: what the workflows need from the outside world, one role per trait. AWS, embedded, HTTP and
//! in-memory adapters implement them in their own crates/modules.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{ReasonCode, TransactionRef};
use retail_sync_contracts::values::*;
use retail_sync_contracts::{Event, LineItem, Totals};

use crate::error::Error;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord};
use crate::saga::{Saga, SagaId};

/// Idempotency records. Adapters make `try_insert` one conditional write.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Writes `record` unless a record that is live at `now` (see `IdempotencyRecord::is_live`) holds the
    /// key; in that case writes nothing and returns the live record.
    async fn try_insert(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, Error>;
    /// Drops our in-progress claim (only if it is still ours and still in progress) after a retryable
    /// failure, so the next delivery need not wait for the lease to lapse.
    async fn release(&self, claim: &IdempotencyRecord) -> Result<(), Error>;
    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, Error>;
}

/// Saga records.
#[async_trait]
pub trait SagaStore: Send + Sync {
    /// Creates the saga unless one with its id exists; returns the existing one then.
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error>;
    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error>;
    /// Finds the saga a correlation id belongs to.
    async fn find_by_correlation(&self, correlation_id: &CorrelationId) -> Result<Option<Saga>, Error>;
    /// Writes `saga` if the stored version is `saga.version - 1` (else `Error::Conflict`), and in the same
    /// atomic write stores `completion` (the step's idempotency record, now completed): a step's effect is
    /// recorded on the timeline and as done, or neither.
    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error>;
}

/// Bad input and permanently failed messages, kept for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineItem {
    /// Stable per message (the queue message id), so a redelivery overwrites instead of duplicating.
    pub id: String,
    pub received_at: Timestamp,
    pub step: String,
    pub reason: ReasonCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The input as received (cut at `QUARANTINE_BODY_LIMIT` bytes; `body_truncated` says so).
    pub body: String,
    #[serde(default)]
    pub body_truncated: bool,
}

/// What a quarantined body is cut to: enough to diagnose, small enough for one DynamoDB item.
pub const QUARANTINE_BODY_LIMIT: usize = 128 * 1024;

#[async_trait]
pub trait QuarantineStore: Send + Sync {
    async fn put(&self, item: &QuarantineItem) -> Result<(), Error>;
    async fn list(&self, limit: usize) -> Result<Vec<QuarantineItem>, Error>;
}

/// An event a step wants on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub source: &'static str,
    pub event: Event,
}

impl Outgoing {
    pub fn detail_type(&self) -> &'static str {
        self.event.event_type().name()
    }
}

/// The event bus. Returns one result per event, in order: PutEvents can fail some entries of a batch.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), Error>>;
}

/// What the ERP receives for a sale (POS receipt or order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpSaleRequest {
    pub transaction: TransactionRef,
    pub currency: Currency,
    pub lines: Vec<LineItem>,
    pub totals: Totals,
    pub occurred_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpDocument {
    pub document_id: ExternalRef,
}

/// The ERP's "system API". Every mutating call carries the idempotency key; the contract obliges the
/// ERP side to return the first result for a repeated key instead of applying twice.
#[async_trait]
pub trait Erp: Send + Sync {
    /// `Err(Error::Rejected)` when the ERP refuses the document for good (validation, closed period).
    async fn post_sale(&self, request: &ErpSaleRequest, key: &IdempotencyKey) -> Result<ErpDocument, Error>;
}

/// What the loyalty platform receives to accrue; it computes the points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccrualRequest {
    pub member_id: MemberId,
    pub transaction: TransactionRef,
    pub currency: Currency,
    /// Net value (before tax, after discounts) of the lines that earn.
    pub eligible_minor: Amount,
    pub occurred_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accrual {
    pub loyalty_transaction_id: ExternalRef,
    pub points: Points,
    pub balance: Points,
}

#[async_trait]
pub trait Loyalty: Send + Sync {
    /// `Err(Error::Rejected)` for e.g. an unknown or closed member.
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error>;
}

/// A queue message handed out by a receive, with the handle that deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub message: crate::steps::Message,
    pub receipt: String,
}

/// Consuming a queue the way Lambda's SQS event source mapping does; the local runner drives the steps
/// through this on backends without Lambda (embedded, an emulator).
#[async_trait]
pub trait QueueConsumer: Send + Sync {
    /// Up to `max` visible messages; each becomes invisible for the queue's visibility timeout.
    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Received>, Error>;
    /// Acknowledges processed messages.
    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), Error>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Business metrics (EMF on Lambda, counters in the local summary).
pub trait Metrics: Send + Sync {
    /// Adds `value` to the counter `name`, optionally split by one dimension (e.g. `reason`).
    fn add(&self, name: &'static str, value: u64, dimension: Option<(&'static str, &str)>);
}

/// Metrics that go nowhere, for callers that do not care.
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn add(&self, _: &'static str, _: u64, _: Option<(&'static str, &str)>) {}
}
