//! Fix and retry. A step whose effect the ERP or the loyalty platform refused for good (`period_closed`,
//! `member_not_found`, …) stores that refusal as its result, so a plain redelivery or replay gets the
//! same refusal back for the idempotency record's lifetime. Once the cause is fixed in that system (the
//! period reopened, the member enrolled), an operator retries the step:
//!
//! 1. the refusal is found in the quarantine (every refusal has its entry there, with the message that
//!    caused it) and checked: a retryable step, refused by the system it calls, whose effect — the one
//!    the message asks for, by its idempotency key — is at an attempt the system refused (its record
//!    holds the refusal), on a saga not compensated;
//!    and nothing else happened to the transaction since the refusal (a follow-up decided while it
//!    stood refused would be wrong once the step succeeds);
//! 2. the saga records the retry — `retries[effect key]` goes up by one, a failed saga goes back to
//!    `running`, and the timeline says who asked and why (`operator`, `retried`) — in one versioned write
//!    over the attempt read, so two operators retrying at once make one attempt, not two;
//! 3. the quarantined message is sent again to the step's queue. The step, at the saga's attempt
//!    ([`Cx::attempt_of`](crate::steps::Cx::attempt_of)), runs its effect under the key of the new
//!    attempt (`…:retry-1`): nothing is deleted, the refused attempt's record stays, and the new one is
//!    exactly-once like the first — a duplicate of the resent message, or a late redelivery of the
//!    original, finds the new attempt's record.

use jiff::Timestamp;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::CorrelationId;

use crate::error::Error;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord, RecordState};
use crate::ports::{IdempotencyStore, QuarantineItem, QuarantineStore, SagaStore};
use crate::saga::{self, Saga, SagaId, SagaStatus, StepOutcome};
use crate::steps;

/// The steps that can be attempted again after a refusal, with the refusal that can be fixed at the
/// system they call.
pub const RETRYABLE: &[(&str, ReasonCode)] = &[
    ("post-sale-to-erp", ReasonCode::ErpRejected),
    ("accrue-loyalty", ReasonCode::LoyaltyRejected),
];

/// Who wrote the retry on the timeline.
pub const OPERATOR: &str = "operator";

/// How many quarantine entries a lookup reads at most.
const QUARANTINE_SCAN: usize = 10_000;

/// A retry the saga has recorded: send `body` to the queue of `step`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub saga: SagaId,
    pub step: String,
    /// The attempt about to run (2 for the first retry).
    pub attempt: u32,
    pub body: String,
    /// The attempt was recorded before and its message is sent again (nothing new recorded).
    pub resent: bool,
}

/// Why a retry was not recorded. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no saga {0}")]
    NoSaga(String),
    #[error("{0}")]
    NotRetryable(String),
    #[error(transparent)]
    Store(#[from] Error),
}

/// The latest quarantined refusal of `step` (or of any retryable step) of an effect of `saga` (a
/// refused return names its own correlation id, so entries are matched by the effect's saga).
pub async fn find_refusal(
    quarantine: &dyn QuarantineStore,
    saga: &Saga,
    step: Option<&str>,
) -> Result<Option<QuarantineItem>, Error> {
    let items = quarantine.list(QUARANTINE_SCAN).await?;
    Ok(items
        .into_iter()
        .filter(|i| step.is_none_or(|s| i.step == s))
        .filter(|i| {
            RETRYABLE
                .iter()
                .any(|(s, reason)| *s == i.step && *reason == i.rejection.reason)
        })
        .filter(|i| saga_of_item(i).as_ref() == Some(&saga.id))
        .max_by_key(|i| i.received_at))
}

/// The effect a quarantined message asks of its step (its base key), and the saga it belongs to.
fn effect_of(item: &QuarantineItem) -> Option<(IdempotencyKey, SagaId)> {
    let key = steps::effect_key(&item.step, &item.body).ok()??;
    let saga = SagaId::of_key(&key)?;
    Some((key, saga))
}

/// Why no step of `saga` is attempted again whatever was refused: it was compensated.
pub fn not_retried(saga: &Saga) -> Option<String> {
    (saga.status == SagaStatus::Compensated).then(|| {
        format!(
            "saga {} was compensated: what it did was undone, there is nothing to attempt again",
            saga.id
        )
    })
}

fn saga_of_item(item: &QuarantineItem) -> Option<SagaId> {
    effect_of(item).map(|(_, saga)| saga)
}

/// The saga of an id or a correlation id.
pub async fn saga_of(sagas: &dyn SagaStore, id: &str) -> Result<Option<Saga>, Error> {
    if let Some(saga) = sagas.load(&SagaId::from_stored(id.to_owned())).await? {
        return Ok(Some(saga));
    }
    match CorrelationId::parse(id) {
        Ok(correlation) => sagas.find_by_correlation(&correlation).await,
        Err(_) => Ok(None),
    }
}

/// Records a retry of the refusal `item` on its saga (see the module documentation) and returns what
/// to send. Refuses, changing nothing, when the refusal cannot be retried.
pub async fn request(
    sagas: &dyn SagaStore,
    records: &dyn IdempotencyStore,
    item: &QuarantineItem,
    now: Timestamp,
) -> Result<Retry, RetryError> {
    let refuse = |m: String| Err(RetryError::NotRetryable(m));
    // A compensated saga is the reason, whichever of its steps refused: nothing of it is attempted again.
    if let Some(correlation) = item.rejection.correlation_id.as_deref()
        && let Some(why) = saga_of(sagas, correlation).await?.as_ref().and_then(not_retried)
    {
        return refuse(why);
    }
    let step = item.step.as_str();
    let reason = item.rejection.reason;
    let Some((_, fixable)) = RETRYABLE.iter().find(|(s, _)| *s == step) else {
        let steps: Vec<&str> = RETRYABLE.iter().map(|(s, _)| *s).collect();
        return refuse(format!(
            "{step} cannot be retried (retryable: {}); fix the input and send it again instead",
            steps.join(", ")
        ));
    };
    if reason != *fixable {
        return refuse(format!(
            "a {} refusal of {step} is not fixed in the system it calls; only {} is retried",
            reason.as_str(),
            fixable.as_str()
        ));
    }
    if item.body_truncated {
        return refuse(format!(
            "the quarantined message of {step} was cut; it cannot be sent again"
        ));
    }
    let Some((base, saga_id)) = effect_of(item) else {
        return refuse(format!("the quarantined message is not one {step} takes"));
    };
    let saga = sagas
        .load(&saga_id)
        .await?
        .ok_or_else(|| RetryError::NoSaga(saga_id.to_string()))?;
    if let Some(why) = not_retried(&saga) {
        return refuse(why);
    }
    // The attempt the saga is at must be one the system refused: its record holds that refusal.
    let n = saga.retries.get(base.as_str()).copied().unwrap_or(0);
    let current = base.attempt(n);
    match records.get(&current).await? {
        Some(IdempotencyRecord {
            state: RecordState::Completed { result },
            ..
        }) if result.get("outcome").and_then(|o| o.as_str()) == Some("refused") => {}
        Some(IdempotencyRecord {
            state: RecordState::Completed { .. },
            ..
        }) => {
            return refuse(format!(
                "{step} of saga {} was not refused (attempt {}): nothing to retry",
                saga.id,
                n + 1
            ));
        }
        Some(_) => {
            return refuse(format!(
                "attempt {} of {step} on saga {} is running now",
                n + 1,
                saga.id
            ));
        }
        // A retry recorded whose message never ran (the send failed, or it waits in the queue): send it
        // again, under the same attempt; the step runs it once whichever copy comes first.
        None if n > 0 => {
            return Ok(Retry {
                saga: saga.id,
                step: step.to_owned(),
                attempt: n + 1,
                body: item.body.clone(),
                resent: true,
            });
        }
        None => {
            return refuse(format!(
                "{step} of saga {} has no stored outcome (it has not run, or its record expired after the \
                 idempotency retention): a redrive or a replay attempts it again",
                saga.id
            ));
        }
    }
    if let Some(later) = follow_up_since_refusal(&saga, step) {
        return refuse(format!(
            "saga {} went on after the refusal of {step} ({later}): attempting it now would book it \
             against what those steps assumed; settle it in the ERP or the loyalty platform instead",
            saga.id
        ));
    }
    let attempt_text = |n: u32| {
        let message = &item.rejection.message;
        format!("retry of {step} requested (attempt {}) after: {message}", n + 1)
    };
    let mut recorded = false;
    let written = saga::update_from(sagas, saga, None, |s| {
        // Only over the attempt read, and never for a compensated saga: of two concurrent retries, one
        // records.
        let at = s.retries.get(base.as_str()).copied().unwrap_or(0);
        recorded = at == n && s.status != SagaStatus::Compensated;
        if recorded {
            s.retries.insert(base.as_str().to_owned(), n + 1);
            if s.status == SagaStatus::Failed {
                s.status = SagaStatus::Running;
            }
            s.record(OPERATOR, StepOutcome::Retried, attempt_text(n + 1), now);
        }
    })
    .await?;
    if !recorded {
        return refuse(format!(
            "a retry of {step} on saga {} is already under way",
            written.id
        ));
    }
    Ok(Retry {
        saga: written.id,
        step: step.to_owned(),
        attempt: n + 2,
        body: item.body.clone(),
        resent: false,
    })
}

/// The first timeline entry of another step after the latest refusal of `step`: a follow-up (a
/// cancellation, a return, a shipment) that was decided while the transaction stood refused — the
/// sale or order unposted, the points not accrued — and would be wrong once the step succeeds.
fn follow_up_since_refusal(saga: &Saga, step: &str) -> Option<String> {
    let refused = saga
        .steps
        .iter()
        .rposition(|e| e.step == step && e.outcome == StepOutcome::Failed)?;
    saga.steps[refused + 1..]
        .iter()
        .find(|e| e.step != step && e.step != OPERATOR)
        .map(|e| format!("{}: {}", e.step, e.message))
}
