//! The one way a saga step is written. A step declares the events it takes ([`Workflow::Input`]) and the
//! idempotency key of its effect ([`Workflow::key`]); the skeleton parses the bus event, turns a wrong
//! type into the `unknown_event_type` rejection, and hands the step a [`Cx`] that knows the key, the
//! cause and the time. With it the step:
//!
//! 1. runs its side effect at most once per key ([`Cx::once`]; a remote refusal is a stored outcome,
//!    [`Refusal::refusal`] separates it from a retryable failure),
//! 2. settles the outcome ([`Cx::settle`]): written on the saga (ledger, status, timeline) in the same
//!    conditional write as the idempotency completion, and counted, only by the delivery that ran it,
//! 3. announces it ([`Cx::emit`], [`Cx::exception`]) on every delivery, with ids derived from the key,
//!    so a republish after a redelivery is recognisably the same event.

use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

use retail_sync_contracts::envelope::{Detail, Metadata};
use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::CorrelationId;
use retail_sync_contracts::{Event, EventType};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy, IdempotencyRecord};
use crate::ledger::{Check, Ledger};
use crate::ports::{Clock, ForChannel, IdempotencyStore, Metrics, Outgoing, SagaStore};
use crate::saga::{self, Saga, SagaId, SagaStatus, StepOutcome};
use crate::steps::{
    Message, Once, Step, Typed, outgoing, parse_internal, run_once, unexpected, workflow_exception,
};

/// What every saga step works with, whatever else it calls: the state stores, the clock, the metrics
/// and the idempotency policy.
#[derive(Clone)]
pub struct Base {
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub sagas: Arc<dyn SagaStore>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
    pub policy: IdempotencyPolicy,
}

/// The events a step takes, typed out of the bus event; `None` for an event of another type.
pub trait Accepts: Sized + Send + Sync {
    fn accept(event: Event) -> Option<Self>;
    /// The accepted event's metadata: the cause of what the step announces.
    fn metadata(&self) -> &Metadata;
}

macro_rules! accepts {
    ($($t:ident),+) => {$(
        impl Accepts for Detail<retail_sync_contracts::events::$t> {
            fn accept(event: Event) -> Option<Self> {
                match event {
                    Event::$t(d) => Some(d),
                    _ => None,
                }
            }

            fn metadata(&self) -> &Metadata {
                &self.metadata
            }
        }
    )+};
}
accepts!(
    OrderPlaced,
    OrderCancelled,
    ReturnReceived,
    ErpReturnPosted,
    CompensationRequested
);

/// A saga step, written against [`Cx`]. Every `Workflow` is a [`Step`] the batch runner can drive.
/// (`run` is a plain `async fn` in the implementations; declared here with its `Send` bound, it is
/// awaited inside `handle` without a second boxed future.)
pub trait Workflow: Send + Sync + 'static {
    /// The step's name as in the template (`post-sale-to-erp`, …): logs, keys, metrics, timelines.
    const NAME: &'static str;
    type Input: Accepts;
    fn base(&self) -> &Base;
    /// The idempotency key of the step's effect on `input`; what the step publishes derives its ids
    /// from it.
    fn key(input: &Self::Input) -> IdempotencyKey;
    /// Whether the step's first read, for every input the rules route to it, is the saga its key names
    /// ([`SagaId::of_key`]). Then a batch of several reads those sagas ahead with one
    /// [`SagaStore::load_many`] (on DynamoDB one `BatchGetItem` instead of a `GetItem` per message), and
    /// each delivery's first load of its saga is answered from it ([`ReadAhead`]). A step that may
    /// stop before reading its saga on routed input leaves this off: a saga read ahead and never used
    /// is a read unit paid for nothing (misrouted input, refused before the load, costs that unit).
    const READS_ITS_SAGA: bool = false;
    fn run(
        &self,
        cx: &mut Cx<'_>,
        input: &Self::Input,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send;
}

#[async_trait]
impl<W: Workflow> Step for W {
    fn name(&self) -> &'static str {
        W::NAME
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        self.handle_in(message, &ReadAhead::default()).await
    }

    fn reads_ahead(&self) -> bool {
        W::READS_ITS_SAGA
    }

    async fn read_ahead(&self, messages: &[Message]) -> ReadAhead {
        if !W::READS_ITS_SAGA || messages.len() < 2 {
            return ReadAhead::default();
        }
        // Each message is parsed once, here: its handling takes the typed input from the read-ahead, by
        // message id. A message that does not parse or is of another type names no saga and is left to
        // its handling, which refuses it as it would without the read-ahead; so are messages under an
        // id that two of the batch carry (no queue delivers so).
        let mut seen = HashSet::with_capacity(messages.len());
        let twice: HashSet<&str> = messages
            .iter()
            .filter(|m| !seen.insert(m.id.as_str()))
            .map(|m| m.id.as_str())
            .collect();
        let mut inputs = HashMap::with_capacity(messages.len());
        let mut ids = BTreeSet::new();
        for message in messages.iter().filter(|m| !twice.contains(m.id.as_str())) {
            let Ok((detail_type, Some(input))) = typed_input::<W::Input>(&message.body) else {
                continue;
            };
            ids.extend(SagaId::of_key(&W::key(&input)));
            inputs.insert(message.id.clone(), Parsed::new(detail_type, input));
        }
        if ids.len() < 2 {
            // One saga: its own load is one read as well.
            return ReadAhead::of(Vec::new(), inputs);
        }
        let ids: Vec<SagaId> = ids.into_iter().collect();
        match self.base().sagas.load_many(&ids).await {
            Ok(sagas) => ReadAhead::of(sagas, inputs),
            Err(e) => {
                tracing::warn!(error = %crate::error::describe(&e), step = W::NAME, "could not read the batch's sagas ahead; each is loaded on its own");
                ReadAhead::of(Vec::new(), inputs)
            }
        }
    }

    async fn handle_in(&self, message: &Message, ahead: &ReadAhead) -> Result<Vec<Outgoing>, Error> {
        let (detail_type, input) = match ahead.input::<W::Input>(&message.id) {
            Some((detail_type, input)) => {
                // Parsed outside this message's span: its logs carry the correlation id all the same.
                super::note_correlation(input.metadata());
                (detail_type, input)
            }
            None => {
                let (detail_type, input) = typed_input::<W::Input>(&message.body)?;
                let input = input.ok_or_else(|| unexpected(W::NAME, detail_type))?;
                (detail_type, input)
            }
        };
        let sagas = Ahead {
            read: ahead,
            store: &*self.base().sagas,
        };
        let mut cx = Cx {
            step: W::NAME,
            base: self.base(),
            sagas: &sagas,
            key: W::key(&input),
            cause: input.metadata(),
            detail_type,
            now: self.base().clock.now(),
            events: Vec::new(),
        };
        self.run(&mut cx, &input).await?;
        Ok(cx.events)
    }
}

/// One delivery of one step: its key, its cause (the input event's metadata), its time, and the events
/// it announces.
pub struct Cx<'a> {
    pub step: &'static str,
    base: &'a Base,
    /// The saga store as this delivery reads it: the base's, answering the first load of a saga the
    /// batch read ahead from that read.
    sagas: &'a dyn SagaStore,
    pub key: IdempotencyKey,
    pub cause: &'a Metadata,
    detail_type: EventType,
    /// Read once per delivery: every record and event of the delivery carries the same time.
    pub now: Timestamp,
    events: Vec<Outgoing>,
}

/// Where [`Cx::settle`] writes: a saga the step has loaded (re-read only on a conflict), or one by id.
// Moved once per delivery: boxing the saga would cost an allocation on every write.
#[allow(clippy::large_enum_variant)]
pub enum At<'s> {
    Loaded(Saga),
    Id(&'s SagaId),
}

impl From<Saga> for At<'_> {
    fn from(saga: Saga) -> Self {
        At::Loaded(saga)
    }
}

impl<'s> From<&'s SagaId> for At<'s> {
    fn from(id: &'s SagaId) -> Self {
        At::Id(id)
    }
}

/// A settled outcome: the result (fresh or stored), and the saga as written when this delivery wrote it.
pub struct Settled<T> {
    pub result: T,
    pub saga: Option<Saga>,
}

impl Cx<'_> {
    /// Announces `data` as caused by the input event.
    pub fn emit<T: Typed>(&mut self, data: T)
    where
        Detail<T>: Into<Event>,
    {
        self.events.push(outgoing(self.key.as_str(), self.cause, data));
    }

    /// Announces `data` under ids derived from `key` rather than the delivery's: the same fact reached
    /// by two deliveries (a member's revision, a suspected pair) is one event.
    pub fn emit_as<T: Typed>(&mut self, key: &str, data: T)
    where
        Detail<T>: Into<Event>,
    {
        self.events.push(outgoing(key, self.cause, data));
    }

    /// Announces that the step stopped for `reason` (a `WorkflowException` for the input event).
    pub fn exception(&mut self, reason: ReasonCode, message: impl Into<String>) {
        let key = self.key.clone();
        self.exception_as(&key, self.step, reason, message);
    }

    /// A `WorkflowException` under another key (a sub-effect's) or on behalf of another step (the one
    /// whose failure is compensated).
    pub fn exception_as(
        &mut self,
        key: &IdempotencyKey,
        step: &str,
        reason: ReasonCode,
        message: impl Into<String>,
    ) {
        self.events.push(workflow_exception(
            key.as_str(),
            step,
            reason,
            message,
            self.cause,
            self.detail_type.name(),
        ));
    }

    /// Moves the delivery to the attempt the saga is at for this effect: after an operator's retry of it
    /// ([`crate::retry`]), it runs under the key of the new attempt. A step that can be retried calls
    /// this once it has loaded the saga, before [`Cx::once`].
    pub fn attempt_of(&mut self, saga: &Saga) {
        self.attempt_in(&saga.retries);
    }

    /// [`Cx::attempt_of`] with the saga's `retries` kept aside (a step that moved its saga on).
    pub fn attempt_in(&mut self, retries: &std::collections::BTreeMap<String, u32>) {
        if let Some(&n) = retries.get(self.key.as_str()) {
            self.key = self.key.attempt(n);
        }
    }

    /// The delivery's key extended by `suffix`: the key of a sub-effect.
    pub fn sub_key(&self, suffix: &str) -> IdempotencyKey {
        IdempotencyKey::for_step(self.key.as_str(), suffix)
    }

    /// Runs `effect` at most once under the delivery's key for a payload with `fingerprint` (see
    /// `run_once`).
    pub async fn once<T, Fut>(
        &self,
        fingerprint: Fingerprint,
        effect: impl FnOnce() -> Fut,
    ) -> Result<Once<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        self.once_as(&self.key, fingerprint, effect).await
    }

    /// [`Cx::once`] under another key (a sub-effect's).
    pub async fn once_as<T, Fut>(
        &self,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        effect: impl FnOnce() -> Fut,
    ) -> Result<Once<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        run_once(self.base, key, fingerprint, effect).await
    }

    /// Settles an effect's outcome. When this delivery ran the effect, `record` writes it on the saga
    /// (ledger, status) and says what the timeline shows; that write carries the idempotency completion,
    /// so the outcome and "done" are stored together or not at all; then `count` adds its metrics. A
    /// stored outcome (a redelivery) writes and counts nothing.
    pub async fn settle<'s, T>(
        &self,
        saga: impl Into<At<'s>>,
        run: Once<T>,
        mut record: impl FnMut(&mut Saga, &T) -> (StepOutcome, String),
        count: impl FnOnce(&T, &dyn Metrics),
    ) -> Result<Settled<T>, Error> {
        let (result, completion) = match run {
            Once::Stored(result) => return Ok(Settled { result, saga: None }),
            Once::Fresh { result, completion } => (result, completion),
        };
        let (step, now) = (self.step, self.now);
        let change = |s: &mut Saga| {
            let (outcome, text) = record(s, &result);
            s.record(step, outcome, text, now);
        };
        let written = self.write(saga.into(), Some(&completion), change).await?;
        match written.channel {
            Some(channel) => count(
                &result,
                &ForChannel {
                    inner: &*self.base.metrics,
                    channel: channel.as_str(),
                },
            ),
            None => count(&result, &*self.base.metrics),
        }
        Ok(Settled {
            result,
            saga: Some(written),
        })
    }

    /// The saga as stored now, read past the batch's read-ahead, if it is still `closed`; else
    /// `NotYet`, so the input waits for a delivery that reads it afresh. A step calls it before a
    /// decision it takes from its saga and does not write back under the saga's version: skipping an
    /// input, or refusing it because the transaction is closed. The saga it loaded may be the
    /// read-ahead's, as old as its batch, and an operator's retry may have reopened the transaction
    /// since; then the input must not be dropped or refused for good. Those paths are rare, so the
    /// extra read is too.
    pub async fn still_closed(&self, id: &SagaId, closed: impl Fn(&Saga) -> bool) -> Result<Saga, Error> {
        let now = saga::load_existing(&*self.base.sagas, id).await?;
        if closed(&now) {
            Ok(now)
        } else {
            Err(Error::NotYet {
                what: format!("{id}, reopened since the batch read it"),
            })
        }
    }

    /// Records a refusal on the saga's timeline and returns the permanent error the runner quarantines
    /// (and announces as a `WorkflowException`).
    pub async fn refuse(&self, saga: &SagaId, reason: ReasonCode, message: String) -> Error {
        let recorded = self
            .note(saga, StepOutcome::Refused, message.clone(), |_| {})
            .await;
        match recorded {
            Ok(_) => Error::rejected(reason, message),
            Err(e) => e,
        }
    }

    /// Refuses a workflow event that does not match what the saga records (a forgery, or a bug): it is
    /// written on the timeline and quarantined as `inconsistent_with_saga`, and never applied.
    pub async fn inconsistent(&self, saga: &SagaId, what: String) -> Error {
        self.refuse(saga, ReasonCode::InconsistentWithSaga, what).await
    }

    /// Writes a timeline entry (and whatever else `change` does) with no effect to settle.
    pub async fn note<'s>(
        &self,
        saga: impl Into<At<'s>>,
        outcome: StepOutcome,
        text: String,
        mut change: impl FnMut(&mut Saga),
    ) -> Result<Saga, Error> {
        let (step, now) = (self.step, self.now);
        let apply = |s: &mut Saga| {
            change(s);
            s.record(step, outcome, text.clone(), now);
        };
        self.write(saga.into(), None, apply).await
    }

    /// One versioned write of `change` to the saga `at`, with `completion` when there is one. The write
    /// that completes the transaction counts it (`sagas_completed`) and its time from the channel's
    /// `occurred_at` to now (`saga_latency_ms`: with the count, the mean end to end), by channel.
    async fn write(
        &self,
        at: At<'_>,
        completion: Option<&IdempotencyRecord>,
        mut change: impl FnMut(&mut Saga),
    ) -> Result<Saga, Error> {
        let sagas = self.sagas;
        let mut completed = false;
        let apply = |s: &mut Saga| {
            let was = s.status;
            change(s);
            completed = was != SagaStatus::Completed && s.status == SagaStatus::Completed;
        };
        let written = match at {
            At::Loaded(saga) => saga::update_from(sagas, saga, completion, apply).await,
            At::Id(id) => saga::update(sagas, id, completion, apply).await,
        }?;
        if completed {
            let metrics = &*self.base.metrics;
            let latency = written
                .occurred_at
                .map(|at| self.now.duration_since(at).as_millis().max(0).unsigned_abs());
            let add = |name, value| match written.channel {
                Some(c) => metrics.add_for(c.as_str(), name, value, None),
                None => metrics.add(name, value, None),
            };
            add("sagas_completed", 1);
            if let Some(ms) = latency {
                add("saga_latency_ms", u64::try_from(ms).unwrap_or(u64::MAX));
            }
        }
        Ok(written)
    }

    /// Checks and reserves a follow-up (shipment, cancellation, return) on the saga's ledger in one
    /// versioned write, so a concurrent follow-up of the same units is counted when the write re-applies
    /// (see `ledger`). `reserve` returns the follow-up's entry from an earlier delivery, or checks it and
    /// pushes a new one. `Wait` becomes a retry. `Refuse` is recorded in the same write — on the
    /// timeline, and as a refusal of `what` with the content's `fingerprint` — and becomes the permanent
    /// error the runner quarantines, its message `what: findings`. A duplicate of a refused follow-up
    /// (same `what`, same content) is refused again with the first refusal, not re-evaluated against
    /// what happened since.
    pub async fn reserve<T>(
        &self,
        saga: Saga,
        reason: ReasonCode,
        what: &str,
        fingerprint: &Fingerprint,
        mut reserve: impl FnMut(&mut Ledger) -> Result<T, Check>,
    ) -> Result<T, Error> {
        let refused = |ledger: &Ledger| {
            ledger
                .refusal(what, fingerprint)
                .map(|r| Error::rejected(r.reason, r.message.clone()))
        };
        if let Some(e) = refused(&saga.ledger) {
            return Err(e);
        }
        let (step, now) = (self.step, self.now);
        let mut verdict = None;
        saga::update_from(self.sagas, saga, None, |s| {
            if let Some(e) = refused(&s.ledger) {
                verdict = Some(Err(e));
                return;
            }
            verdict = Some(match reserve(&mut s.ledger) {
                Ok(entry) => Ok(entry),
                Err(Check::Wait(what)) => Err(Error::NotYet { what }),
                Err(Check::Refuse(findings)) => {
                    let message = format!("{what}: {}", findings.join("; "));
                    s.ledger.remember_refusal(what, fingerprint, reason, &message);
                    s.record(step, StepOutcome::Refused, message.clone(), now);
                    Err(Error::rejected(reason, message))
                }
            });
        })
        .await?;
        // `update_from` runs the change at least once before it returns Ok.
        verdict.unwrap_or_else(|| {
            Err(Error::Conflict {
                what: what.to_owned(),
            })
        })
    }

    /// The input is of a type the step takes, but not in this state of the transaction: a wrong route.
    pub fn unexpected(&self) -> Error {
        unexpected(self.step, self.detail_type)
    }

    pub fn sagas(&self) -> &dyn SagaStore {
        self.sagas
    }

    pub fn metrics(&self) -> &dyn Metrics {
        &*self.base.metrics
    }
}

/// A message's body as a step's input: the type of its event, and the input when the step takes that
/// type. The read-ahead and a delivery parse a body alike.
fn typed_input<I: Accepts>(body: &str) -> Result<(EventType, Option<I>), Error> {
    let (_, event) = parse_internal(body)?;
    let detail_type = event.event_type();
    Ok((detail_type, I::accept(event)))
}

/// What a batch read ahead ([`Step::read_ahead`]): its messages' typed inputs, by message id, and the
/// sagas they name.
///
/// Each saga is handed out once, to the first load of its id; a write of an id drops it. So a second
/// delivery for the same saga in the batch, and a re-read after a version conflict, read the store. A
/// saga read ahead is as fresh as the batch's start, which can be the other messages' remote calls ago.
/// What a step writes from it is safe: every saga write is versioned, so one changed meanwhile fails the
/// write, is read again and the change re-applied. What a step decides from it without writing it back
/// under its version (skipping an input, refusing one because the transaction is closed) it decides on a
/// fresh read ([`Cx::still_closed`]).
#[derive(Default)]
pub struct ReadAhead {
    sagas: Mutex<HashMap<SagaId, Saga>>,
    inputs: Mutex<HashMap<String, Parsed>>,
}

/// A message's input, typed by the step that read it ahead (a `Workflow::Input`), with the type of the
/// event it came as.
struct Parsed {
    detail_type: EventType,
    input: Box<dyn Any + Send>,
}

impl Parsed {
    fn new<I: Accepts + 'static>(detail_type: EventType, input: I) -> Self {
        Self {
            detail_type,
            input: Box::new(input),
        }
    }
}

impl ReadAhead {
    fn of(sagas: Vec<Saga>, inputs: HashMap<String, Parsed>) -> Self {
        Self {
            sagas: Mutex::new(sagas.into_iter().map(|s| (s.id.clone(), s)).collect()),
            inputs: Mutex::new(inputs),
        }
    }

    fn take(&self, id: &SagaId) -> Option<Saga> {
        self.sagas.lock().unwrap_or_else(|p| p.into_inner()).remove(id)
    }

    /// The input read ahead for message `id`, handed out once.
    fn input<I: Accepts + 'static>(&self, id: &str) -> Option<(EventType, I)> {
        let parsed = self.inputs.lock().unwrap_or_else(|p| p.into_inner()).remove(id)?;
        let input = parsed.input.downcast::<I>().ok()?;
        Some((parsed.detail_type, *input))
    }
}

/// A delivery's saga store: the first load of a saga read ahead is answered from the read-ahead, the
/// rest goes to the store.
struct Ahead<'a> {
    read: &'a ReadAhead,
    store: &'a dyn SagaStore,
}

#[async_trait]
impl SagaStore for Ahead<'_> {
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error> {
        self.read.take(&saga.id);
        self.store.create(saga).await
    }

    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error> {
        match self.read.take(id) {
            Some(saga) => Ok(Some(saga)),
            None => self.store.load(id).await,
        }
    }

    async fn find_by_correlation(&self, correlation_id: &CorrelationId) -> Result<Option<Saga>, Error> {
        let found = self.store.find_by_correlation(correlation_id).await?;
        // What was found is newer than a copy read ahead, which must not be handed out after it.
        if let Some(saga) = &found {
            self.read.take(&saga.id);
        }
        Ok(found)
    }

    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error> {
        self.read.take(&saga.id);
        self.store.save(saga, completion).await
    }
}

/// Separates a remote system's refusal (an outcome worth storing) from a failure to retry.
pub trait Refusal<T> {
    /// `Ok(Ok(value))` done, `Ok(Err(message))` refused for good, `Err` retry.
    fn refusal(self) -> Result<Result<T, String>, Error>;
}

impl<T> Refusal<T> for Result<T, Error> {
    fn refusal(self) -> Result<Result<T, String>, Error> {
        match self {
            Ok(value) => Ok(Ok(value)),
            Err(Error::Rejected { message, .. }) => Ok(Err(message)),
            Err(e) => Err(e),
        }
    }
}
