//! Fix and retry. A step whose effect the ERP or the loyalty platform refused for good (`period_closed`,
//! `member_not_found`, …) stores that refusal as its result, so a plain redelivery or replay gets the
//! same refusal back for the idempotency record's lifetime. Once the cause is fixed in that system (the
//! period reopened, the member enrolled), an operator retries the step:
//!
//! 1. the refusal is found in the quarantine (every refusal has its entry there, with the message that
//!    caused it) and checked: a retryable step, refused by the system it calls, on a saga that failed
//!    there and has not moved on;
//! 2. the saga records the retry — `retries[step]` goes up by one, the status back to `running`, and the
//!    timeline says who asked and why (`operator`, `retried`) — in one versioned write, so two operators
//!    retrying at once make one attempt, not two;
//! 3. the quarantined message is sent again to the step's queue. The step, at the saga's attempt
//!    ([`Cx::attempt_of`](crate::steps::Cx::attempt_of)), runs its effect under the key of the new
//!    attempt (`…:retry-1`): nothing is deleted, the refused attempt's record stays, and the new one is
//!    exactly-once like the first — a duplicate of the resent message, or a late redelivery of the
//!    original, finds the new attempt's record.

use jiff::Timestamp;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::CorrelationId;

use crate::error::Error;
use crate::ports::{QuarantineItem, QuarantineStore, SagaStore};
use crate::saga::{self, Saga, SagaId, SagaStatus, StepOutcome};

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

/// The latest quarantined refusal of `step` (or of any retryable step) for `saga`.
pub async fn find_refusal(
    quarantine: &dyn QuarantineStore,
    saga: &Saga,
    step: Option<&str>,
) -> Result<Option<QuarantineItem>, Error> {
    let correlation = saga.correlation_id.as_str();
    let items = quarantine.list(QUARANTINE_SCAN).await?;
    Ok(items
        .into_iter()
        .filter(|i| i.rejection.correlation_id.as_deref() == Some(correlation))
        .filter(|i| step.is_none_or(|s| i.step == s))
        .filter(|i| {
            RETRYABLE
                .iter()
                .any(|(s, reason)| *s == i.step && *reason == i.rejection.reason)
        })
        .max_by_key(|i| i.received_at))
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
    item: &QuarantineItem,
    now: Timestamp,
) -> Result<Retry, RetryError> {
    let refuse = |m: String| Err(RetryError::NotRetryable(m));
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
    let correlation = item.rejection.correlation_id.as_deref().unwrap_or_default();
    let saga = saga_of(sagas, correlation)
        .await?
        .ok_or_else(|| RetryError::NoSaga(correlation.to_owned()))?;
    check(&saga, step)?;
    let attempt_text = |n: u32| {
        let message = &item.rejection.message;
        format!("retry of {step} requested (attempt {}) after: {message}", n + 1)
    };
    let mut recorded = false;
    let written = saga::update_from(sagas, saga, None, |s| {
        // Re-checked on the saga as it is when written: of two concurrent retries, one records.
        recorded = check(s, step).is_ok();
        if recorded {
            let n = s.retries.entry(step.to_owned()).or_insert(0);
            *n += 1;
            let n = *n;
            s.status = SagaStatus::Running;
            s.record(OPERATOR, StepOutcome::Retried, attempt_text(n), now);
        }
    })
    .await?;
    if !recorded {
        return refuse(format!(
            "a retry of {step} on saga {} is already under way",
            written.id
        ));
    }
    let attempt = written.retries.get(step).copied().unwrap_or(0) + 1;
    Ok(Retry {
        saga: written.id,
        step: step.to_owned(),
        attempt,
        body: item.body.clone(),
    })
}

/// Whether `step` of `saga` is where the saga failed and nothing happened since.
fn check(saga: &Saga, step: &str) -> Result<(), RetryError> {
    if saga.status != SagaStatus::Failed {
        return Err(RetryError::NotRetryable(format!(
            "saga {} is {}, not failed: nothing to retry (a retry may already be under way)",
            saga.id,
            saga.status.as_str()
        )));
    }
    let last = saga.steps.iter().rev().find(|e| e.step == step);
    if last.is_none_or(|e| e.outcome != StepOutcome::Failed) {
        return Err(RetryError::NotRetryable(format!(
            "{step} did not fail on saga {}",
            saga.id
        )));
    }
    Ok(())
}
