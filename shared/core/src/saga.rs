//! One saga record per business transaction: its status, the event that started it, what each system
//! ended up with (the ledger), and the step log operators read as the timeline.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use retail_sync_contracts::envelope::Channel;
use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{CorrelationId, OrderId, ReceiptId, StoreId};
use retail_sync_contracts::{Event, EventType};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyRecord};
pub use crate::ledger::Ledger;
use crate::ports::SagaStore;

/// The business transaction key, e.g. `receipt:store-042:r-1001` or `order:o-77`. Returns and follow-up
/// events name the original transaction, so they find the same saga.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SagaId(String);

impl SagaId {
    pub fn of(transaction: &TransactionRef) -> Self {
        Self(match transaction {
            TransactionRef::Receipt { store_id, receipt_id } => format!("receipt:{store_id}:{receipt_id}"),
            TransactionRef::Order { order_id } => format!("order:{order_id}"),
        })
    }
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
    /// The transaction a saga id names: the inverse of [`SagaId::of`] (systems that keep only our
    /// reference text, as SAP's and Salesforce's documents do, give it back this way). `None` for
    /// anything that is not a saga id of valid identifiers.
    pub fn transaction(&self) -> Option<TransactionRef> {
        let parts: Vec<&str> = self.0.split(':').collect();
        match parts.as_slice() {
            ["receipt", store, receipt] => Some(TransactionRef::Receipt {
                store_id: StoreId::parse(*store).ok()?,
                receipt_id: ReceiptId::parse(*receipt).ok()?,
            }),
            ["order", order] => Some(TransactionRef::Order {
                order_id: OrderId::parse(*order).ok()?,
            }),
            _ => None,
        }
    }
    /// The saga an idempotency key of one of its steps belongs to: every step key starts with its saga
    /// id (`receipt:<store>:<receipt>:…`, `order:<id>:…`), whose identifiers hold no ':'.
    pub fn of_key(key: &crate::idempotency::IdempotencyKey) -> Option<Self> {
        let parts = match key.as_str().split(':').next()? {
            "receipt" => 3,
            "order" => 2,
            _ => return None,
        };
        let id: Vec<&str> = key.as_str().splitn(parts + 1, ':').take(parts).collect();
        (id.len() == parts).then(|| Self(id.join(":")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    Running,
    Completed,
    /// A step failed permanently; nothing earlier needed undoing (or it could not be undone).
    Failed,
    /// A step failed permanently and earlier effects were compensated.
    Compensated,
    /// The order was cancelled before anything shipped.
    Cancelled,
}

impl SagaStatus {
    pub const ALL: [SagaStatus; 5] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Compensated,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Compensated => "compensated",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Ingest accepted the event.
    Accepted,
    /// The step's side effect is done.
    Done,
    /// Nothing to do (e.g. an anonymous sale earns no points).
    Skipped,
    /// The step failed permanently.
    Failed,
    /// An event for this transaction was refused (e.g. same identity, different payload).
    Refused,
    /// An operator asked for a refused step to be attempted again, after fixing its cause.
    Retried,
}

impl StepOutcome {
    /// The wire name (as serialized), for timelines shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Retried => "retried",
        }
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEntry {
    pub step: String,
    pub outcome: StepOutcome,
    pub at: Timestamp,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saga {
    pub id: SagaId,
    pub correlation_id: CorrelationId,
    pub status: SagaStatus,
    /// Bumped by every write; a write succeeds only over the version it read.
    pub version: u64,
    /// `detail-type` of the event that started the saga.
    pub origin_type: String,
    /// Its `detail`, as accepted. Kept as JSON text: every step loads the saga, and only the one that
    /// needs the origin types it (see [`origin_event`](Self::origin_event)); the stored shape is the same.
    pub origin: Box<RawValue>,
    pub fingerprint: Fingerprint,
    #[serde(default)]
    pub ledger: Ledger,
    pub steps: Vec<StepEntry>,
    /// The channel the transaction came from, and when it happened there (the origin's metadata, kept
    /// apart so that metrics can split by channel and measure end to end without reading the origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
    /// Operator retries per effect, by the effect's idempotency key (see [`crate::retry`]): attempt
    /// `n + 1` runs under a key of its own, so the stored refusal of the attempt before does not answer it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, u32>,
    /// For the records of members (`member:<id>`) and of the duplicate index (`contact:…`), which the
    /// saga store keeps too (see `members`); `None` for a transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<crate::members::MemberState>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Saga {
    /// A new saga for an accepted inbound event.
    pub fn start(id: SagaId, event: &Event, now: Timestamp) -> Self {
        Self {
            id,
            correlation_id: event.metadata().correlation_id.clone(),
            status: SagaStatus::Running,
            version: 1,
            origin_type: event.event_type().name().to_owned(),
            // Of the typed payload (fields in declaration order): ingest compares the fingerprints of
            // two sagas it built here, so only consistency with itself matters.
            fingerprint: Fingerprint::of(&event.data()),
            origin: serde_json::value::to_raw_value(event).expect("events serialize"),
            ledger: Ledger::default(),
            steps: vec![StepEntry {
                step: "ingest".into(),
                outcome: StepOutcome::Accepted,
                at: now,
                message: format!("{} accepted", event.event_type().name()),
            }],
            channel: Some(event.metadata().channel),
            occurred_at: Some(event.metadata().occurred_at),
            retries: BTreeMap::new(),
            member: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The event that started the saga, typed again.
    pub fn origin_event(&self) -> Result<Event, Error> {
        let what = || format!("saga {}", self.id);
        let event_type = EventType::from_name(&self.origin_type)
            .ok_or_else(|| Error::corrupt(what(), format!("unknown origin type {}", self.origin_type)))?;
        Event::from_detail_str(event_type, self.origin.get()).map_err(|e| Error::corrupt(what(), e))
    }

    /// Whether `step` has an entry on the timeline whose message starts with `text`: what a step that
    /// writes an entry per fact (not per delivery) checks first.
    pub fn has_entry(&self, step: &str, text: &str) -> bool {
        self.steps
            .iter()
            .any(|e| e.step == step && e.message.starts_with(text))
    }

    pub fn record(&mut self, step: &str, outcome: StepOutcome, message: impl Into<String>, now: Timestamp) {
        self.steps.push(StepEntry {
            step: step.to_owned(),
            outcome,
            at: now,
            message: message.into(),
        });
        self.updated_at = now;
    }

    /// An order whose every unit is either shipped and accrued or cancelled is done: `completed` when
    /// anything shipped, `cancelled` when nothing did (a shipment reinstating cancelled units turns a
    /// cancelled order into a completed one). Failed and compensated orders keep their status.
    pub fn settle_order(&mut self, basis: &crate::ledger::Basis) {
        if matches!(
            self.status,
            SagaStatus::Running | SagaStatus::Cancelled | SagaStatus::Completed
        ) && self.ledger.order_settled(basis)
        {
            self.status = if self.ledger.shipments.is_empty() {
                SagaStatus::Cancelled
            } else {
                SagaStatus::Completed
            };
        }
    }

    pub fn has_step(&self, step: &str, outcome: StepOutcome) -> bool {
        self.steps.iter().any(|e| e.step == step && e.outcome == outcome)
    }
}

// By hand because `RawValue` has no `PartialEq`: the origins compare as JSON text. The destructuring
// makes a new field a compile error here rather than a field silently left out of the comparison.
impl PartialEq for Saga {
    fn eq(&self, other: &Self) -> bool {
        let Saga {
            id,
            correlation_id,
            status,
            version,
            origin_type,
            origin,
            fingerprint,
            ledger,
            steps,
            channel,
            occurred_at,
            retries,
            member,
            created_at,
            updated_at,
        } = self;
        *id == other.id
            && *correlation_id == other.correlation_id
            && *status == other.status
            && *version == other.version
            && *origin_type == other.origin_type
            && origin.get() == other.origin.get()
            && *fingerprint == other.fingerprint
            && *ledger == other.ledger
            && *steps == other.steps
            && *channel == other.channel
            && *occurred_at == other.occurred_at
            && *retries == other.retries
            && *member == other.member
            && *created_at == other.created_at
            && *updated_at == other.updated_at
    }
}

/// How often a versioned update is re-read and re-applied before giving up (retryably).
const UPDATE_ATTEMPTS: usize = 5;

/// Loads the saga, applies `change`, and saves it over the version read, together with `completion`.
/// On a concurrent write it reloads and applies `change` again, so `change` must be a pure function of
/// the saga it is given.
pub async fn update(
    store: &dyn SagaStore,
    id: &SagaId,
    completion: Option<&IdempotencyRecord>,
    change: impl FnMut(&mut Saga),
) -> Result<Saga, Error> {
    let current = load_existing(store, id).await?;
    update_from(store, current, completion, change).await
}

/// [`update`] starting from a saga the caller has just loaded, which saves a read on the common path.
pub async fn update_from(
    store: &dyn SagaStore,
    mut current: Saga,
    completion: Option<&IdempotencyRecord>,
    mut change: impl FnMut(&mut Saga),
) -> Result<Saga, Error> {
    let id = current.id.clone();
    for attempt in 0..UPDATE_ATTEMPTS {
        if attempt > 0 {
            current = load_existing(store, &id).await?;
        }
        let mut saga = current.clone();
        change(&mut saga);
        saga.version += 1;
        match store.save(&saga, completion).await {
            Ok(()) => return Ok(saga),
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        what: format!("saga {id}"),
    })
}

/// The saga, or `NotYet` when it does not exist (yet): a step that runs before ingest has recorded the
/// transaction retries instead of failing.
pub async fn load_existing(store: &dyn SagaStore, id: &SagaId) -> Result<Saga, Error> {
    store.load(id).await?.ok_or_else(|| Error::NotYet {
        what: format!("saga {id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::StepOutcome;

    #[test]
    fn a_step_key_names_its_saga() {
        use super::SagaId;
        use crate::idempotency::IdempotencyKey;
        let of = |k: &str| SagaId::of_key(&IdempotencyKey::from_stored(k.to_owned())).map(|s| s.0);
        assert_eq!(
            of("receipt:store-042:r-1:post-sale-to-erp:retry-1").as_deref(),
            Some("receipt:store-042:r-1")
        );
        assert_eq!(
            of("order:o-1:post-return-to-erp:ret-1").as_deref(),
            Some("order:o-1")
        );
        assert_eq!(of("api:web:k-1:create-hold"), None);
        assert_eq!(of("receipt:store-042"), None);
    }

    #[test]
    fn a_saga_id_gives_its_transaction_back() {
        use super::SagaId;
        for id in ["receipt:store-042:r-1", "order:o-1"] {
            let t = SagaId::from_stored(id.into()).transaction().unwrap();
            assert_eq!(SagaId::of(&t).as_str(), id);
        }
        for not in ["receipt:store-042", "order:o 1", "order:o-1:x", "api:k", ""] {
            assert_eq!(SagaId::from_stored(not.into()).transaction(), None, "{not:?}");
        }
    }

    #[test]
    fn outcome_names_are_the_serialized_ones() {
        use StepOutcome::*;
        for o in [Accepted, Done, Skipped, Failed, Refused, Retried] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
