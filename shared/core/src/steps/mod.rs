//! Workflow steps. Each step consumes one queue (wired in `infra/template.yaml`), parses the EventBridge
//! event in the message body, does its one side effect at most once per business identity, records it on
//! the saga and returns the events to publish. Quarantine and publishing are the batch runner's job.
//!
//! # Layout
//! - `skeleton`: how every saga step is written — [`Workflow`] (typed input, key), [`Cx`] (effect once,
//!   settle, emit, exception, reserve, refuse), [`Base`] (what every step works with).
//! - [`Wiring`]: builds a step, or its batch runner, from ports, for the Lambda functions, the local
//!   runner and the tests alike.
//! - one module per step (`ingest`, `commit_redemption`, `post_sale_to_erp`, `accrue_loyalty` with
//!   `accrue_shipment`, `cancel_order`, `post_return_to_erp`, `reverse_loyalty` with `settle_refund`,
//!   `compensate`), and the helpers they share below (event ids derived from keys, the claim, stored
//!   results, when a follow-up may be taken).

mod accrue_loyalty;
mod accrue_shipment;
mod cancel_order;
mod commit_redemption;
mod compensate;
mod ingest;
mod map_channel;
mod notify_channel;
mod post_return_to_erp;
mod post_sale_to_erp;
mod reverse_loyalty;
mod settle_refund;
mod skeleton;
mod sync_member;

pub use accrue_loyalty::AccrueLoyalty;
pub use cancel_order::CancelOrder;
pub use commit_redemption::CommitRedemption;
pub use compensate::Compensate;
pub use ingest::Ingest;
pub use map_channel::MapChannel;
pub use notify_channel::{NotifyChannel, OutcomesFor};
pub use post_return_to_erp::PostReturnToErp;
pub use post_sale_to_erp::PostSaleToErp;
pub use reverse_loyalty::{ReverseLoyalty, ToReverse};
pub use skeleton::{Accepts, At, Base, Cx, ReadAhead, Refusal, Settled, Workflow};
pub use sync_member::SyncMember;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use retail_sync_contracts::envelope::{BusEvent, Channel, Detail, Metadata};
use retail_sync_contracts::events::{ReasonCode, WorkflowException};
use retail_sync_contracts::values::EventId;
use retail_sync_contracts::{Event, EventType, IngestLimits, Rejection};

use retail_sync_channels::{Mapper, Platform};

use crate::batch::BatchRunner;
use crate::error::{BoxError, Error};
use crate::idempotency::{Claim, Fingerprint, IdempotencyKey, IdempotencyPolicy, IdempotencyRecord, decide};
use crate::ports::{
    BySource, Erp, IdempotencyStore, Loyalty, Outgoing, Publisher, QuarantineStore, SagaStore,
};

/// The system each step's effect goes to: the step's queue pauses while that system's breaker is open,
/// and the template caps the step's concurrency with that system's parameter (`ErpMaxConcurrency`,
/// `LoyaltyMaxConcurrency`). `accrue-loyalty` may also call the ERP (a reinstatement), `cancel-order`
/// loyalty (re-credits) and `sync-member` the ERP; those calls pass the other system's breaker and cap.
pub fn downstream_of(step: &str) -> Option<&'static str> {
    match step {
        post_sale_to_erp::STEP | cancel_order::STEP | post_return_to_erp::STEP => Some("erp"),
        // sync-member also tells the ERP and the CRM; the loyalty platform, whose enrolments and merges
        // it makes, is the one it waits for.
        accrue_loyalty::STEP
        | reverse_loyalty::STEP
        | commit_redemption::STEP
        | compensate::STEP
        | sync_member::STEP => Some("loyalty"),
        _ => None,
    }
}

/// How steps are built from ports, the same in a Lambda function, the local runner and the tests: each
/// step takes only the ports it uses, and a port is connected only when a step needs it (the `ingest`
/// function has no ERP or loyalty settings).
#[derive(Clone)]
pub struct Wiring {
    pub base: Base,
    pub limits: IngestLimits,
    pub erp: Connect<dyn Erp>,
    pub loyalty: Connect<dyn Loyalty>,
    /// Where the steps publish: the internal bus.
    pub publisher: Arc<dyn Publisher>,
    /// Where the platform mappers publish: the channel bus, in front of ingest like any channel.
    pub channel_bus: Connect<dyn Publisher>,
    /// A platform's mapping (its file), read when its mapper is built.
    pub channel_mapping: ConnectMapping,
    /// The platforms' order APIs the outcomes are told to (`None` for a platform not configured).
    pub channel_outcomes: OutcomesFor,
    /// The systems that keep members (loyalty, ERP, CRM), as far as connected.
    pub member_systems: ConnectMembers,
    /// Who owns which member attribute.
    pub ownership: Arc<crate::members::Ownership>,
    /// How a member the loyalty platform does not know comes to earn (see `members::enrolment`).
    pub enrolment: crate::members::Enrolment,
    /// How long points wait for returns, per channel (see `settlement`).
    pub return_windows: crate::settlement::ReturnWindows,
    pub quarantine: Arc<dyn QuarantineStore>,
}

/// Connects a port on first need (reads its settings, builds its client).
pub type Connect<T> = Arc<dyn Fn() -> Result<Arc<T>, BoxError> + Send + Sync>;

/// Connects the systems that keep members on first need.
pub type ConnectMembers = Arc<dyn Fn() -> Result<crate::ports::MemberSystems, BoxError> + Send + Sync>;

/// Reads a platform's mapping on first need.
pub type ConnectMapping = Arc<dyn Fn(Platform) -> Result<Arc<dyn Mapper>, BoxError> + Send + Sync>;

/// A wiring part a caller without platform mappers leaves out: building a mapper then says what is
/// missing.
pub fn no_channels(why: &'static str) -> (Connect<dyn Publisher>, ConnectMapping) {
    (
        Arc::new(move || Err(why.into())),
        Arc::new(move |_| Err(why.into())),
    )
}

/// A port that is already connected.
pub fn connected<T: ?Sized + Send + Sync + 'static>(port: Arc<T>) -> Connect<T> {
    Arc::new(move || Ok(port.clone()))
}

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("no step is called {0:?}")]
    UnknownStep(String),
    #[error("{step} needs the {port}: {source}")]
    Connect {
        step: &'static str,
        port: &'static str,
        #[source]
        source: BoxError,
    },
}

/// The ports a step is built from beyond [`Base`], the publisher and the quarantine. A function binary
/// connects only these, so it links only the connectors its step uses (see [`Kind`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    pub erp: bool,
    pub loyalty: bool,
    /// The loyalty platform, the ERP and the CRM as keepers of members.
    pub member_systems: bool,
    /// A platform's mapping and the channel bus (the platform mappers).
    pub channel: bool,
    /// The platforms' order APIs.
    pub channel_outcomes: bool,
}

impl Ports {
    pub const NONE: Ports = Ports {
        erp: false,
        loyalty: false,
        member_systems: false,
        channel: false,
        channel_outcomes: false,
    };
}

/// A step chosen at compile time. A function binary runs `retail_sync_lambda::run::<K>()`: it builds
/// only `K` and connects only `K::PORTS`, so the linker leaves out every other step and the connectors
/// `K` does not use (a binary that chose its step by name at run time linked them all). The local
/// runner and the tests choose by name through [`by_name`].
pub trait Kind {
    /// The binary and step name, as the template's `BuildProperties.Binary`.
    const BINARY: &'static str;
    /// The ports [`Kind::build`] may connect; it touches no other (a test holds every step to it).
    const PORTS: Ports;
    fn build(wiring: &Wiring) -> Result<Arc<dyn Step>, WiringError>;
}

/// Something done with a step chosen by name at run time: [`by_name`] calls it with the step's [`Kind`].
pub trait WithKind {
    type Out;
    fn with<K: Kind>(self) -> Self::Out;
}

/// Every step kind in one list, from which both [`STEPS`] and [`by_name`] are made, so a step added to
/// one is in the other.
macro_rules! every_step {
    ($($kind:ident),+ $(,)?) => {
        /// Every step, by the binary name the template gives it (`BuildProperties.Binary`).
        pub const STEPS: [&str; [$(stringify!($kind)),+].len()] = [$($kind::BINARY),+];

        /// Calls `f` with the step called `name` (one of [`STEPS`]); `None` for a name no step has.
        pub fn by_name<F: WithKind>(name: &str, f: F) -> Option<F::Out> {
            Some(match name {
                $($kind::BINARY => f.with::<$kind>(),)+
                _ => return None,
            })
        }
    };
}

every_step!(
    MapShopify,
    MapAdobeCommerce,
    Ingest,
    CommitRedemption,
    PostSaleToErp,
    AccrueLoyalty,
    CancelOrder,
    PostReturnToErp,
    ReverseLoyalty,
    Compensate,
    NotifyChannel,
    SyncMember,
);

/// The Shopify mapper as a [`Kind`] (both platforms' mappers are one step type, [`MapChannel`]).
pub struct MapShopify;
/// The Adobe Commerce mapper as a [`Kind`].
pub struct MapAdobeCommerce;

const CHANNEL: Ports = Ports {
    channel: true,
    ..Ports::NONE
};
const ERP: Ports = Ports {
    erp: true,
    ..Ports::NONE
};
const LOYALTY: Ports = Ports {
    loyalty: true,
    ..Ports::NONE
};

impl Kind for MapShopify {
    const BINARY: &'static str = Platform::Shopify.step();
    const PORTS: Ports = CHANNEL;
    fn build(wiring: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        wiring.mapper(Platform::Shopify)
    }
}

impl Kind for MapAdobeCommerce {
    const BINARY: &'static str = Platform::AdobeCommerce.step();
    const PORTS: Ports = CHANNEL;
    fn build(wiring: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        wiring.mapper(Platform::AdobeCommerce)
    }
}

impl Kind for Ingest {
    const BINARY: &'static str = ingest::STEP;
    const PORTS: Ports = Ports::NONE;
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(Ingest {
            sagas: w.base.sagas.clone(),
            clock: w.base.clock.clone(),
            metrics: w.base.metrics.clone(),
            limits: w.limits,
        }))
    }
}

impl Kind for PostSaleToErp {
    const BINARY: &'static str = post_sale_to_erp::STEP;
    const PORTS: Ports = ERP;
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(PostSaleToErp {
            erp: w.erp(Self::BINARY)?,
            base: w.base.clone(),
        }))
    }
}

impl Kind for AccrueLoyalty {
    const BINARY: &'static str = accrue_loyalty::STEP;
    /// The ERP for a reinstatement; the member systems to enrol a member the platform does not know.
    const PORTS: Ports = Ports {
        erp: true,
        loyalty: true,
        member_systems: true,
        ..Ports::NONE
    };
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(AccrueLoyalty {
            erp: w.erp(Self::BINARY)?,
            loyalty: w.loyalty_earning(Self::BINARY)?,
            return_windows: w.return_windows.clone(),
            base: w.base.clone(),
        }))
    }
}

impl Kind for CommitRedemption {
    const BINARY: &'static str = commit_redemption::STEP;
    const PORTS: Ports = LOYALTY;
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(CommitRedemption {
            loyalty: w.loyalty(Self::BINARY)?,
            base: w.base.clone(),
        }))
    }
}

impl Kind for CancelOrder {
    const BINARY: &'static str = cancel_order::STEP;
    const PORTS: Ports = Ports {
        erp: true,
        loyalty: true,
        ..Ports::NONE
    };
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(CancelOrder {
            erp: w.erp(Self::BINARY)?,
            loyalty: w.loyalty(Self::BINARY)?,
            base: w.base.clone(),
        }))
    }
}

impl Kind for PostReturnToErp {
    const BINARY: &'static str = post_return_to_erp::STEP;
    const PORTS: Ports = ERP;
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(PostReturnToErp {
            erp: w.erp(Self::BINARY)?,
            base: w.base.clone(),
        }))
    }
}

impl Kind for ReverseLoyalty {
    const BINARY: &'static str = reverse_loyalty::STEP;
    const PORTS: Ports = LOYALTY;
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(ReverseLoyalty {
            loyalty: w.loyalty(Self::BINARY)?,
            base: w.base.clone(),
        }))
    }
}

impl Kind for NotifyChannel {
    const BINARY: &'static str = notify_channel::STEP;
    const PORTS: Ports = Ports {
        channel_outcomes: true,
        ..Ports::NONE
    };
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(NotifyChannel {
            base: w.base.clone(),
            outcomes: w.channel_outcomes.clone(),
        }))
    }
}

impl Kind for SyncMember {
    const BINARY: &'static str = sync_member::STEP;
    const PORTS: Ports = Ports {
        member_systems: true,
        ..Ports::NONE
    };
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(SyncMember {
            systems: w.member_systems(Self::BINARY)?,
            ownership: w.ownership.clone(),
            quarantine: w.quarantine.clone(),
            base: w.base.clone(),
        }))
    }
}

impl Kind for Compensate {
    const BINARY: &'static str = compensate::STEP;
    const PORTS: Ports = LOYALTY;
    fn build(w: &Wiring) -> Result<Arc<dyn Step>, WiringError> {
        Ok(Arc::new(Compensate {
            loyalty: w.loyalty(Self::BINARY)?,
            base: w.base.clone(),
        }))
    }
}

impl Wiring {
    /// The step called `name` (a template function's `BuildProperties.Binary`, one of [`STEPS`]).
    pub fn step(&self, name: &str) -> Result<Arc<dyn Step>, WiringError> {
        struct Build<'a>(&'a Wiring);
        impl WithKind for Build<'_> {
            type Out = Result<Arc<dyn Step>, WiringError>;
            fn with<K: Kind>(self) -> Self::Out {
                K::build(self.0)
            }
        }
        by_name(name, Build(self)).unwrap_or_else(|| Err(WiringError::UnknownStep(name.to_owned())))
    }

    /// The step called `name` under a batch runner that publishes and quarantines through this wiring.
    pub fn runner(&self, name: &str) -> Result<BatchRunner, WiringError> {
        let step = self.step(name)?;
        self.batch_runner(step)
    }

    /// The step `K` under a batch runner: what a function binary runs.
    pub fn runner_of<K: Kind>(&self) -> Result<BatchRunner, WiringError> {
        self.batch_runner(K::build(self)?)
    }

    fn batch_runner(&self, step: Arc<dyn Step>) -> Result<BatchRunner, WiringError> {
        let publisher = match Platform::of_step(step.name()) {
            Some(platform) => Arc::new(BySource {
                channel: (self.channel_bus)().map_err(|source| WiringError::Connect {
                    step: platform.step(),
                    port: "channel bus",
                    source,
                })?,
                internal: self.publisher.clone(),
            }),
            None => self.publisher.clone(),
        };
        Ok(BatchRunner {
            step,
            publisher,
            quarantine: self.quarantine.clone(),
            clock: self.base.clock.clone(),
            metrics: self.base.metrics.clone(),
        })
    }

    fn erp(&self, step: &'static str) -> Result<Arc<dyn Erp>, WiringError> {
        (self.erp)().map_err(|source| WiringError::Connect {
            step,
            port: "ERP",
            source,
        })
    }

    /// The loyalty platform as the steps call it: following merges (see `members::StepLoyalty`).
    fn loyalty(&self, step: &'static str) -> Result<Arc<dyn Loyalty>, WiringError> {
        Ok(Arc::new(self.step_loyalty(step, None)?))
    }

    /// The same for the step that earns, with the enrolment rule: a member the platform does not know is
    /// enrolled on first earn, or waited for (see `members::Enrolment`).
    fn loyalty_earning(&self, step: &'static str) -> Result<Arc<dyn Loyalty>, WiringError> {
        let rule = crate::members::Enrolling {
            members: (self.member_systems)().ok().and_then(|m| m.loyalty),
            enrolment: self.enrolment,
        };
        Ok(Arc::new(self.step_loyalty(step, Some(rule))?))
    }

    fn step_loyalty(
        &self,
        step: &'static str,
        enrolling: Option<crate::members::Enrolling>,
    ) -> Result<crate::members::StepLoyalty, WiringError> {
        let loyalty = (self.loyalty)().map_err(|source| WiringError::Connect {
            step,
            port: "loyalty platform",
            source,
        })?;
        Ok(crate::members::StepLoyalty {
            loyalty,
            sagas: self.base.sagas.clone(),
            enrolling,
        })
    }

    fn member_systems(&self, step: &'static str) -> Result<crate::ports::MemberSystems, WiringError> {
        (self.member_systems)().map_err(|source| WiringError::Connect {
            step,
            port: "member systems",
            source,
        })
    }

    fn mapper(&self, platform: Platform) -> Result<Arc<dyn Step>, WiringError> {
        let mapper = (self.channel_mapping)(platform).map_err(|source| WiringError::Connect {
            step: platform.step(),
            port: "mapping",
            source,
        })?;
        Ok(Arc::new(MapChannel {
            mapper,
            sagas: self.base.sagas.clone(),
            metrics: self.base.metrics.clone(),
        }))
    }
}

/// The idempotency key of the effect `step` has for `body` (a message of its queue), before any retry:
/// what an operator's retry counts attempts of (see [`crate::retry`]). `None` for a step without one
/// effect per message (ingest).
pub fn effect_key(step: &str, body: &str) -> Result<Option<IdempotencyKey>, Error> {
    fn key_of<W: Workflow>(body: &str) -> Result<Option<IdempotencyKey>, Error> {
        let (_, event) = parse_internal(body)?;
        let detail_type = event.event_type();
        let input = W::Input::accept(event).ok_or_else(|| unexpected(W::NAME, detail_type))?;
        Ok(Some(W::key(&input)))
    }
    match step {
        post_sale_to_erp::STEP => key_of::<PostSaleToErp>(body),
        accrue_loyalty::STEP => key_of::<AccrueLoyalty>(body),
        commit_redemption::STEP => key_of::<CommitRedemption>(body),
        cancel_order::STEP => key_of::<CancelOrder>(body),
        post_return_to_erp::STEP => key_of::<PostReturnToErp>(body),
        reverse_loyalty::STEP => key_of::<ReverseLoyalty>(body),
        compensate::STEP => key_of::<Compensate>(body),
        sync_member::STEP => key_of::<SyncMember>(body),
        _ => Ok(None),
    }
}

/// Puts the correlation id on the message's span, so every later log line of the step carries it.
pub(crate) fn note_correlation(metadata: &Metadata) {
    tracing::Span::current().record("correlation_id", metadata.correlation_id.as_str());
}

/// A queue message as every backend delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub body: String,
    /// 1 on first delivery.
    pub receive_count: u32,
}

#[async_trait]
pub trait Step: Send + Sync {
    /// The step's name as in the template (`ingest`, `post-sale-to-erp`, …): logs, keys, metrics.
    fn name(&self) -> &'static str;
    /// Handles one message. `Ok` carries the events to publish. A retryable error leaves the message to
    /// be redelivered; a permanent one makes the runner quarantine it.
    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error>;
    /// Whether [`Step::read_ahead`] reads anything (the function then needs to batch-read the saga
    /// table).
    fn reads_ahead(&self) -> bool {
        false
    }
    /// Reads ahead, for a batch, what handling its messages reads first: the sagas of a
    /// [`Workflow`] that declares [`Workflow::READS_ITS_SAGA`]. Nothing by default. Best effort: what
    /// could not be read ahead is read by the handling itself.
    async fn read_ahead(&self, _messages: &[Message]) -> ReadAhead {
        ReadAhead::default()
    }
    /// [`Step::handle`] with what the batch read ahead.
    async fn handle_in(&self, message: &Message, _ahead: &ReadAhead) -> Result<Vec<Outgoing>, Error> {
        self.handle(message).await
    }
}

/// Parses an event that retail-sync itself put on the bus. It was validated at ingest, so failure here
/// means a wrong route or a bug: permanent, quarantined.
///
/// The `detail` is kept as raw JSON text and typed in one pass: callers only need the typed event, and a
/// `Value` tree of the detail (plus its clone) was most of the cost of a step.
pub(crate) fn parse_internal(body: &str) -> Result<(BusEvent<&RawValue>, Event), Error> {
    let bad = |message: String| {
        Error::BadInput(Box::new(Rejection {
            reason: ReasonCode::NotAnEnvelope,
            message,
            findings: Vec::new(),
            detail_type: None,
            event_id: None,
            correlation_id: None,
        }))
    };
    let envelope: BusEvent<&RawValue> =
        serde_json::from_str(body).map_err(|e| bad(format!("not an EventBridge event: {e}")))?;
    let event_type = EventType::from_name(&envelope.detail_type)
        .ok_or_else(|| bad(format!("unknown detail-type {:?}", envelope.detail_type)))?;
    let event = Event::from_detail_str(event_type, envelope.detail.get())
        .map_err(|e| bad(format!("{}: {e}", envelope.detail_type)))?;
    note_correlation(event.metadata());
    Ok((envelope, event))
}

/// The error for an event that reached a step it is not routed to.
pub(crate) fn unexpected(step: &str, event_type: EventType) -> Error {
    Error::rejected(
        ReasonCode::UnknownEventType,
        format!("{step} does not handle {}", event_type.name()),
    )
}

/// Event ids of what a step publishes are derived from its idempotency key, so a republish after a
/// redelivery carries the same id and consumers can discard it as a duplicate.
pub fn derived_event_id(key: &str, event_type: EventType) -> EventId {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update(b"|");
    hasher.update(event_type.name().as_bytes());
    let digest = hasher.finalize();
    EventId::parse(crate::idempotency::hex(&digest[..16])).expect("hex is a valid id")
}

/// Metadata of an event retail-sync emits in consequence of `cause`. Its `occurred_at` is the cause's
/// business time, not the time of this delivery: a republish after a redelivery is then the same event in
/// every field, and a step that builds a downstream request from it (a loyalty reversal dated by its
/// `ErpReturnPosted`) sends the same request under the same idempotency key, which a platform that
/// compares requests would otherwise refuse as a reused key.
pub(crate) fn outbound_metadata(key: &str, event_type: EventType, cause: &Metadata) -> Metadata {
    Metadata {
        event_id: derived_event_id(key, event_type),
        schema_version: 1,
        correlation_id: cause.correlation_id.clone(),
        causation_id: Some(cause.event_id.clone()),
        occurred_at: cause.occurred_at,
        channel: Channel::RetailSync,
    }
}

/// A WorkflowException for a step that stopped.
pub(crate) fn workflow_exception(
    key: &str,
    step: &str,
    reason: ReasonCode,
    message: impl Into<String>,
    cause: &Metadata,
    detail_type: &str,
) -> Outgoing {
    let metadata = outbound_metadata(key, EventType::WorkflowException, cause);
    Outgoing {
        source: retail_sync_contracts::envelope::SOURCE_RETAIL_SYNC,
        event: Event::WorkflowException(Detail {
            metadata,
            data: WorkflowException {
                step: step.to_owned(),
                reason,
                message: truncate(message.into(), 2000),
                detail_type: Some(detail_type.to_owned()),
                source_event_id: Some(cause.event_id.to_string()),
            },
        }),
    }
}

pub(crate) fn truncate(mut s: String, max_chars: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max_chars) {
        s.truncate(i);
    }
    s
}

/// A claim on a step: either we may do the effect (holding `record`), or the outcome is already known.
pub(crate) enum Claimed {
    Proceed(IdempotencyRecord),
    AlreadyDone(Value),
}

/// Claims `key` for the payload with `fingerprint`. In-progress and reused keys become errors: the
/// first retryable (another delivery is on it), the second permanent.
pub(crate) async fn claim(
    store: &dyn IdempotencyStore,
    policy: &IdempotencyPolicy,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    now: Timestamp,
) -> Result<Claimed, Error> {
    let record = policy.in_progress(key, fingerprint, now);
    let Some(existing) = store.try_insert(&record, now).await? else {
        return Ok(Claimed::Proceed(record));
    };
    match decide(&existing, &record.fingerprint, now) {
        Claim::Proceed => Ok(Claimed::Proceed(record)),
        Claim::AlreadyDone(result) => Ok(Claimed::AlreadyDone(result)),
        Claim::InProgress { retry_after } => Err(Error::InProgress {
            key: record.key.to_string(),
            retry_after,
        }),
        Claim::KeyReused => Err(Error::rejected(
            ReasonCode::IdempotencyKeyReused,
            format!("{} was already used for a different payload", record.key),
        )),
    }
}

/// A step's effect run at most once per key: either it ran now (and `completion` must be saved with the
/// saga update that records it), or an earlier run's stored result is returned.
pub enum Once<T> {
    Fresh {
        result: T,
        completion: IdempotencyRecord,
    },
    Stored(T),
}

impl<T> Once<T> {
    pub fn result(&self) -> &T {
        match self {
            Once::Fresh { result, .. } | Once::Stored(result) => result,
        }
    }

    pub fn completion(&self) -> Option<&IdempotencyRecord> {
        match self {
            Once::Fresh { completion, .. } => Some(completion),
            Once::Stored(_) => None,
        }
    }
}

/// Claims `key` and runs `effect` unless an earlier run finished. `effect` maps the remote systems'
/// refusals into its result (they are outcomes worth storing); an `Err` from it releases the claim so the
/// redelivery may run it again at once.
pub(crate) async fn run_once<T, Fut>(
    deps: &Base,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
    effect: impl FnOnce() -> Fut,
) -> Result<Once<T>, Error>
where
    T: serde::Serialize + for<'de> Deserialize<'de>,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let now = deps.clock.now();
    match claim(&*deps.idempotency, &deps.policy, key.clone(), fingerprint, now).await? {
        Claimed::AlreadyDone(value) => Ok(Once::Stored(stored_result(key.as_str(), value)?)),
        Claimed::Proceed(claim) => match effect().await {
            Ok(result) => {
                let value = serde_json::to_value(&result).expect("results serialize");
                let completion = deps.policy.completed(&claim, value, now);
                Ok(Once::Fresh { result, completion })
            }
            Err(e) => {
                let _ = deps.idempotency.release(&claim).await;
                Err(e)
            }
        },
    }
}

/// An event retail-sync publishes in consequence of `cause`, with an id derived from `key`.
pub(crate) fn outgoing<T>(key: &str, cause: &Metadata, data: T) -> Outgoing
where
    Detail<T>: Into<Event>,
    T: crate::steps::Typed,
{
    let metadata = outbound_metadata(key, T::TYPE, cause);
    Outgoing {
        source: retail_sync_contracts::envelope::SOURCE_RETAIL_SYNC,
        event: Detail { metadata, data }.into(),
    }
}

/// The event type of a payload, for `outgoing`.
pub trait Typed {
    const TYPE: EventType;
}

macro_rules! typed {
    ($($t:ident),+) => {$(
        impl Typed for retail_sync_contracts::events::$t {
            const TYPE: EventType = EventType::$t;
        }
    )+};
}
typed!(
    ErpSalePosted,
    ErpReturnPosted,
    LoyaltyAccrued,
    LoyaltyReversed,
    OrderCancellationApplied,
    RedemptionCommitted,
    CompensationRequested,
    DuplicateMemberSuspected,
    MemberChanged
);

/// The saga of `transaction`'s follow-up, typed with its origin's basis. `NotYet` when it does not exist:
/// the follow-up arrived before the transaction was processed.
pub(crate) async fn load_with_basis(
    sagas: &dyn SagaStore,
    id: &crate::saga::SagaId,
) -> Result<(crate::saga::Saga, crate::ledger::Basis), Error> {
    let saga = crate::saga::load_existing(sagas, id).await?;
    let basis = crate::ledger::Basis::of(&saga.origin_event()?).ok_or_else(|| {
        Error::corrupt(
            format!("saga {id}"),
            format!("{} does not start a transaction", saga.origin_type),
        )
    })?;
    Ok((saga, basis))
}

/// Whether a return or a refund (`what`) of the transaction can be taken now: a POS sale once its
/// accrual is decided, an order once it is in the ERP (a return's units are checked against its
/// shipments line by line); before that it waits (`NotYet`). A transaction compensated, or failed before
/// the ERP booked it, is closed: refused as `transaction_closed`. A cancelled order is not closed: a
/// shipment may still reinstate its units (see `ledger`).
pub(crate) async fn follow_up_allowed(
    cx: &Cx<'_>,
    saga: &crate::saga::Saga,
    basis: &crate::ledger::Basis,
    what: &str,
) -> Result<(), Error> {
    use crate::saga::SagaStatus;
    fn is_closed(saga: &crate::saga::Saga) -> bool {
        saga.status == SagaStatus::Compensated
            || (saga.status == SagaStatus::Failed && saga.ledger.erp_document_id.is_none())
    }
    if is_closed(saga) {
        // Refused for good only on the saga as stored now.
        let now = cx.still_closed(&saga.id, is_closed).await?;
        let message = format!(
            "{what}: the original is {} and was never booked",
            now.status.as_str()
        );
        return Err(cx.refuse(&saga.id, ReasonCode::TransactionClosed, message).await);
    }
    let processed = if basis.is_order {
        saga.ledger.erp_document_id.is_some()
    } else {
        saga.status != SagaStatus::Running
    };
    if processed {
        Ok(())
    } else {
        Err(Error::NotYet {
            what: format!("{} before {what}", saga.id),
        })
    }
}

/// Whether `data` (whose `fingerprint` the step computed for its claim) is what the saga was started
/// with: the fingerprints ingest and the step compute agree (the cheap, usual answer), or else the origin
/// event, typed again, holds equal data (so a change in how payloads serialize never turns a genuine
/// event into an inconsistent one).
pub(crate) fn is_origin<T: PartialEq>(
    saga: &crate::saga::Saga,
    data: &T,
    fingerprint: &Fingerprint,
    of_origin: fn(&Event) -> Option<&T>,
) -> Result<bool, Error> {
    if *fingerprint == saga.fingerprint {
        return Ok(true);
    }
    let origin = saga.origin_event()?;
    Ok(of_origin(&origin).is_some_and(|o| o == data))
}

/// Reads a stored step result back.
pub(crate) fn stored_result<T: for<'de> Deserialize<'de>>(key: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::corrupt(format!("idempotency record {key}"), e))
}

/// Every step's stored result (the idempotency record's `result`) as the steps wrote it before the step
/// skeleton: records live for the retention period, so a new build must read them and write the same.
#[cfg(test)]
mod stored_results {
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    fn same<T: Serialize + DeserializeOwned>(stored: Value) {
        let read: T = serde_json::from_value(stored.clone()).unwrap_or_else(|e| panic!("{stored}: {e}"));
        assert_eq!(serde_json::to_value(&read).unwrap(), stored);
    }

    #[test]
    fn each_steps_stored_result_reads_and_writes_as_before() {
        let refused = || json!({"outcome": "refused", "message": "member_not_found: no member unknown-9999"});
        // Taken from a local run of the sample streams (`scripts/run-local.sh`) at b8e5089.
        same::<super::commit_redemption::Outcome>(
            json!({"outcome": "committed", "loyalty_transaction_id": "LT-00000004"}),
        );
        same::<super::commit_redemption::Outcome>(refused());
        same::<super::post_sale_to_erp::Posted>(json!({"outcome": "posted", "document_id": "ERP-00000002"}));
        same::<super::post_sale_to_erp::Posted>(refused());
        same::<super::accrue_loyalty::Outcome>(json!({
            "outcome": "accrued", "member_id": "m-1004", "loyalty_transaction_id": "LT-00000008",
            "points": 49, "eligible_minor": 4900
        }));
        same::<super::accrue_loyalty::Outcome>(json!({"outcome": "anonymous"}));
        same::<super::accrue_loyalty::Outcome>(refused());
        same::<super::accrue_shipment::Outcome>(
            json!({"outcome": "accrued", "loyalty_transaction_id": "LT-00000039", "points": 149}),
        );
        same::<super::accrue_shipment::Outcome>(json!({"outcome": "anonymous"}));
        same::<super::accrue_shipment::Outcome>(refused());
        same::<super::accrue_shipment::Reinstated>(
            json!({"outcome": "reinstated", "erp_document_id": "ERP-00000051"}),
        );
        same::<super::accrue_shipment::Reinstated>(refused());
        same::<super::cancel_order::Outcome>(
            json!({"outcome": "cancelled", "erp_document_id": "ERP-00000005"}),
        );
        same::<super::cancel_order::Outcome>(json!({"outcome": "nothing_open"}));
        same::<super::cancel_order::Outcome>(refused());
        same::<super::post_return_to_erp::Outcome>(
            json!({"outcome": "posted", "document_id": "ERP-00000052"}),
        );
        same::<super::post_return_to_erp::Outcome>(refused());
        same::<super::reverse_loyalty::Outcome>(json!({
            "outcome": "adjusted", "loyalty_transaction_id": "LT-00000044", "reversed": 23,
            "recredited": 68, "total_reversed": 23, "total_earned": 172
        }));
        same::<super::reverse_loyalty::Outcome>(json!({
            "outcome": "adjusted", "reversed": 0, "recredited": 68, "refused": "member_not_found: gone",
            "total_reversed": 0, "total_earned": 0
        }));
        same::<super::reverse_loyalty::Outcome>(json!({"outcome": "anonymous"}));
        same::<Vec<super::compensate::Undo>>(json!([
            {"undo": "reverse_accrual", "shipment_id": "shp-1", "points": 40},
            {"undo": "recredit_redemption", "hold_id": "H-00000003", "points": 1000}
        ]));
    }
}

#[cfg(test)]
mod origin_tests {
    use retail_sync_contracts::{Event, EventType, SaleCompleted};

    use crate::idempotency::Fingerprint;
    use crate::saga::{Saga, SagaId};

    fn sold(e: &Event) -> Option<&SaleCompleted> {
        match e {
            Event::SaleCompleted(s) => Some(&s.data),
            _ => None,
        }
    }

    /// The message is the origin when the fingerprints agree, and also when they do not but the data
    /// does (a saga fingerprinted by an earlier serialization); other data is not.
    #[test]
    fn the_origin_is_recognised_by_its_data_whatever_its_fingerprint() {
        let envelope: serde_json::Value =
            serde_json::from_str(include_str!("../../../../events/samples/SaleCompleted.json")).unwrap();
        let event = Event::from_detail(EventType::SaleCompleted, envelope["detail"].clone()).unwrap();
        let Event::SaleCompleted(sale) = &event else {
            unreachable!()
        };
        let mut saga = Saga::start(
            SagaId::from_stored("receipt:s:r".into()),
            &event,
            jiff::Timestamp::now(),
        );
        let fingerprint = Fingerprint::of(&sale.data);
        assert!(super::is_origin(&saga, &sale.data, &fingerprint, sold).unwrap());
        saga.fingerprint = Fingerprint::of(&"as an older build computed it");
        assert!(super::is_origin(&saga, &sale.data, &fingerprint, sold).unwrap());
        let mut other = sale.data.clone();
        other.totals.gross_minor = retail_sync_contracts::values::Amount::new(1).unwrap();
        assert!(!super::is_origin(&saga, &other, &Fingerprint::of(&other), sold).unwrap());
    }
}
