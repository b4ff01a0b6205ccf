//! Operator work, the same on every backend (the embedded state of a local run, or a deployed stack):
//! DLQs listed, inspected, grouped and redriven with filters; the quarantine listed and retried; sagas
//! shown and retried after their cause is fixed. The CLI commands print what these return.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use retail_sync_core::ports::QuarantineItem;
use retail_sync_core::retry::{self, RetryError};
use retail_sync_core::saga::{Saga, SagaStatus};
use retail_sync_topology::Topology;

use crate::backends::Backend;
use crate::report::DeadLetter;

/// What an operator command can come to besides success.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The thing named does not exist (exit code 3).
    #[error("{0}")]
    NotFound(String),
    /// It exists, but the command does not apply to it (exit code 1).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] retail_sync_core::Error),
}

impl From<RetryError> for OpsError {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::NoSaga(id) => Self::NotFound(format!("no saga {id}")),
            RetryError::NotRetryable(m) => Self::Refused(m),
            RetryError::Store(e) => Self::Store(e),
        }
    }
}

/// The queue a DLQ serves, from the template.
pub fn source_of(topology: &Topology, dlq: &str) -> Result<String, OpsError> {
    topology
        .queues
        .values()
        .find(|q| q.redrive.as_ref().is_some_and(|(d, _)| d == dlq))
        .map(|q| q.id.clone())
        .ok_or_else(|| {
            let known = topology.dead_letter_queues().join(", ");
            OpsError::NotFound(format!("{dlq} is not a DLQ of the template (its DLQs: {known})"))
        })
}

/// One DLQ at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqSummary {
    pub dlq: String,
    pub source: String,
    pub messages: u64,
    /// Seconds since the oldest message was first sent (`None`: empty).
    pub oldest_age_seconds: Option<i64>,
}

pub async fn dlq_list(
    backend: &dyn Backend,
    topology: &Topology,
    now: Timestamp,
) -> Result<Vec<DlqSummary>, OpsError> {
    let mut out = Vec::new();
    for dlq in topology.dead_letter_queues() {
        let (visible, in_flight) = backend.depth(dlq).await?;
        let oldest = if visible + in_flight > 0 {
            backend
                .dead_letters(dlq)
                .await?
                .iter()
                .map(|m| m.sent_at)
                .min()
                .map(|t| age(now, t))
        } else {
            None
        };
        out.push(DlqSummary {
            dlq: dlq.to_owned(),
            source: source_of(topology, dlq)?,
            messages: visible + in_flight,
            oldest_age_seconds: oldest,
        });
    }
    Ok(out)
}

fn age(now: Timestamp, then: Timestamp) -> i64 {
    now.duration_since(then).as_secs().max(0)
}

/// A dead letter as an operator reads it: what it is, whose it is, and where its saga stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterView {
    pub id: String,
    pub detail_type: Option<String>,
    pub source: Option<String>,
    pub correlation_id: Option<String>,
    /// Why it is here, as far as the state tells: `waiting_for_saga` (a follow-up whose transaction
    /// never arrived, or not in time), `saga_running` (the step kept failing, e.g. a system down),
    /// `saga_<status>` otherwise, `unreadable` for a body that is not an EventBridge event.
    pub reason: String,
    pub age_seconds: i64,
    pub receive_count: u32,
}

const UNREADABLE: &str = "unreadable";
const WAITING_FOR_SAGA: &str = "waiting_for_saga";

fn saga_reason(status: SagaStatus) -> String {
    format!("saga_{}", status.as_str())
}

/// Every reason [`classify`] gives a dead letter.
pub fn dlq_reasons() -> Vec<String> {
    [UNREADABLE.to_owned(), WAITING_FOR_SAGA.to_owned()]
        .into_iter()
        .chain(SagaStatus::ALL.into_iter().map(saga_reason))
        .collect()
}

/// Reads and classifies one dead letter.
pub async fn classify(
    backend: &dyn Backend,
    m: &DeadLetter,
    now: Timestamp,
) -> Result<(DeadLetterView, Option<Saga>), OpsError> {
    let envelope: Option<Value> = serde_json::from_str(&m.body).ok();
    let field = |path: &str| {
        envelope
            .as_ref()
            .and_then(|e| e.pointer(path))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let correlation_id = field("/detail/metadata/correlation_id");
    let saga = match &correlation_id {
        Some(c) => retry::saga_of(backend, c).await?,
        None => None,
    };
    let reason = match (&envelope, &saga) {
        (None, _) => UNREADABLE.to_owned(),
        (Some(_), None) => WAITING_FOR_SAGA.to_owned(),
        (Some(_), Some(s)) => saga_reason(s.status),
    };
    let view = DeadLetterView {
        id: m.id.clone(),
        detail_type: field("/detail-type"),
        source: field("/source"),
        correlation_id,
        reason,
        age_seconds: age(now, m.sent_at),
        receive_count: m.receive_count,
    };
    Ok((view, saga))
}

/// Every dead letter of `dlq`, classified (peeked, not consumed).
pub async fn dlq_show(
    backend: &dyn Backend,
    topology: &Topology,
    dlq: &str,
    now: Timestamp,
) -> Result<Vec<(DeadLetterView, DeadLetter, Option<Saga>)>, OpsError> {
    source_of(topology, dlq)?;
    let mut out = Vec::new();
    for m in backend.dead_letters(dlq).await? {
        let (view, saga) = classify(backend, &m, now).await?;
        out.push((view, m, saga));
    }
    Ok(out)
}

/// Which dead letters a redrive takes; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DlqFilter {
    pub reason: Option<String>,
    pub detail_type: Option<String>,
    pub correlation_id: Option<String>,
    pub older_than: Option<Duration>,
}

impl DlqFilter {
    pub fn matches(&self, m: &DeadLetterView) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| Some(w) == have.as_ref())
        };
        self.reason.as_ref().is_none_or(|r| *r == m.reason)
            && eq(&self.detail_type, &m.detail_type)
            && eq(&self.correlation_id, &m.correlation_id)
            && self
                .older_than
                .is_none_or(|d| m.age_seconds >= i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// What a redrive selected and moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Redrive {
    pub dlq: String,
    pub to: String,
    pub selected: Vec<DeadLetterView>,
    /// 0 on a dry run.
    pub moved: usize,
}

/// How a redrive goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RedriveOptions {
    /// Move at most this many.
    pub limit: usize,
    /// Say what would move, move nothing.
    pub dry_run: bool,
    /// At most this many messages a second (protects the systems the steps call after an outage).
    pub rate: Option<u32>,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        Self {
            limit: usize::MAX,
            dry_run: false,
            rate: None,
        }
    }
}

impl RedriveOptions {
    /// Nothing narrows the redrive: the DLQ is drained whole, not only what a look saw (on SQS a look
    /// samples).
    pub fn takes_everything(&self, filter: &DlqFilter) -> bool {
        *filter == DlqFilter::default() && self.limit == usize::MAX && self.rate.is_none()
    }
}

/// Moves the dead letters of `dlq` that `filter` selects back to the queue it serves, or only says which
/// on a dry run: [`dlq_select`], then [`dlq_move`].
pub async fn dlq_redrive(
    backend: &dyn Backend,
    topology: &Topology,
    dlq: &str,
    filter: &DlqFilter,
    options: RedriveOptions,
    now: Timestamp,
) -> Result<Redrive, OpsError> {
    let selection = dlq_select(backend, topology, dlq, filter, options.limit, now).await?;
    let moved = if options.dry_run {
        0
    } else {
        dlq_move(backend, &selection, filter, options).await?
    };
    Ok(Redrive { moved, ..selection })
}

/// What a redrive of `dlq` with `filter` would take (at most `limit`), read from the DLQ first so that
/// the filters can look at the sagas; nothing is moved.
pub async fn dlq_select(
    backend: &dyn Backend,
    topology: &Topology,
    dlq: &str,
    filter: &DlqFilter,
    limit: usize,
    now: Timestamp,
) -> Result<Redrive, OpsError> {
    let to = source_of(topology, dlq)?;
    let selected: Vec<DeadLetterView> = dlq_show(backend, topology, dlq, now)
        .await?
        .into_iter()
        .map(|(view, _, _)| view)
        .filter(|v| filter.matches(v))
        .take(limit)
        .collect();
    Ok(Redrive {
        dlq: dlq.to_owned(),
        to,
        selected,
        moved: 0,
    })
}

/// Moves what `selection` took — exactly those messages, `rate` a second when given, each sent before it
/// is removed — or, when nothing narrows the redrive, the whole DLQ. Returns how many moved.
pub async fn dlq_move(
    backend: &dyn Backend,
    selection: &Redrive,
    filter: &DlqFilter,
    options: RedriveOptions,
) -> Result<usize, OpsError> {
    if options.takes_everything(filter) {
        Ok(backend.redrive(&selection.dlq, &selection.to).await?)
    } else {
        move_selected(
            backend,
            &selection.dlq,
            &selection.to,
            &selection.selected,
            options.rate,
        )
        .await
    }
}

/// Moves exactly the dead letters `selected` (by message id) from `dlq` to `to`, `rate` a second when
/// given.
async fn move_selected(
    backend: &dyn Backend,
    dlq: &str,
    to: &str,
    selected: &[DeadLetterView],
    rate: Option<u32>,
) -> Result<usize, OpsError> {
    let mut moved = 0;
    let chunk = rate.map_or(usize::MAX, |r| r.max(1) as usize);
    for part in selected.chunks(chunk.min(selected.len().max(1))) {
        let started = std::time::Instant::now();
        let ids: BTreeSet<&str> = part.iter().map(|v| v.id.as_str()).collect();
        moved += backend
            .redrive_where(dlq, to, &|m: &DeadLetter| ids.contains(m.id.as_str()), part.len())
            .await?;
        if rate.is_some() {
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
        }
    }
    Ok(moved)
}

/// Which quarantine entries to list; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuarantineFilter {
    pub reason: Option<String>,
    pub step: Option<String>,
    pub correlation_id: Option<String>,
}

impl QuarantineFilter {
    pub fn matches(&self, item: &QuarantineItem) -> bool {
        self.reason
            .as_ref()
            .is_none_or(|r| r == item.rejection.reason.as_str())
            && self.step.as_ref().is_none_or(|s| *s == item.step)
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| Some(c.as_str()) == item.rejection.correlation_id.as_deref())
    }
}

/// How many quarantine entries a listing reads at most.
pub const QUARANTINE_SCAN: usize = 10_000;

/// A page of the quarantine: the newest matching entries, and how many matched among those read.
pub struct QuarantineListing {
    pub items: Vec<QuarantineItem>,
    pub matched: usize,
    /// The scan stopped at [`QUARANTINE_SCAN`] entries: more are kept than were read, and the newest may be
    /// among those not read. Said to the operator rather than passed over.
    pub capped: bool,
}

pub async fn quarantine_list(
    backend: &dyn Backend,
    filter: &QuarantineFilter,
    limit: usize,
) -> Result<QuarantineListing, OpsError> {
    let scanned = backend.list(QUARANTINE_SCAN).await?;
    let capped = scanned.len() >= QUARANTINE_SCAN;
    let mut items: Vec<QuarantineItem> = scanned.into_iter().filter(|i| filter.matches(i)).collect();
    items.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.id.cmp(&b.id)));
    let matched = items.len();
    items.truncate(limit);
    Ok(QuarantineListing {
        items,
        matched,
        capped,
    })
}

pub async fn quarantine_item(backend: &dyn Backend, id: &str) -> Result<QuarantineItem, OpsError> {
    backend
        .find(id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("no quarantine entry {id}")))
}

/// A retry recorded on its saga and its message sent to the step's queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retried {
    pub saga: String,
    pub step: String,
    pub attempt: u32,
    pub queue: String,
    /// The attempt had been recorded before; only its message was sent again.
    pub resent: bool,
}

/// Retries the refusal quarantined as `item` (see `retail_sync_core::retry`).
pub async fn retry_item(
    backend: &dyn Backend,
    topology: &Topology,
    item: &QuarantineItem,
    now: Timestamp,
) -> Result<Retried, OpsError> {
    let queue = topology
        .function(&item.step)
        .map(|f| f.queue.clone())
        .ok_or_else(|| OpsError::Refused(format!("no function of the template runs {}", item.step)))?;
    let r = retry::request(backend, backend, item, now).await?;
    backend.send_raw(&queue, &r.body).await?;
    Ok(Retried {
        saga: r.saga.to_string(),
        step: r.step,
        attempt: r.attempt,
        queue,
        resent: r.resent,
    })
}

/// The saga of an id or a correlation id.
pub async fn saga(backend: &dyn Backend, id: &str) -> Result<Saga, OpsError> {
    retry::saga_of(backend, id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("no saga with id or correlation id {id}")))
}

/// Retries the step (`step`, or the one that failed) of the saga `id`.
pub async fn retry_saga(
    backend: &dyn Backend,
    topology: &Topology,
    id: &str,
    step: Option<&str>,
    now: Timestamp,
) -> Result<Retried, OpsError> {
    let saga = saga(backend, id).await?;
    if let Some(why) = retry::not_retried(&saga) {
        return Err(OpsError::Refused(why));
    }
    let item = retry::find_refusal(backend, &saga, step).await?.ok_or_else(|| {
        let which = step.map_or("a retryable step".to_owned(), |s| s.to_owned());
        OpsError::Refused(format!(
            "saga {} has no quarantined refusal of {which} to retry (see `retail-sync saga show {}`)",
            saga.id, saga.id
        ))
    })?;
    retry_item(backend, topology, &item, now).await
}
