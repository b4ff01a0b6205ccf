//! The whole system in one process: a backend (embedded, wired from `infra/template.yaml`; or AWS,
//! e.g. provisioned on moto from the same template), every function of the template as a poller over
//! its queue, and the reference ERP and loyalty simulators in-process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use retail_sync_channels::Platform;
use retail_sync_connectors::{
    ClientAuth, ErpKind, HttpConfig, LoyaltyKind, SalesforceLoyalty, SalesforceMapping, SapErp, SapMapping,
};
use retail_sync_contracts::ChannelPlatform;
use retail_sync_contracts::IngestLimits;
use retail_sync_contracts::values::{MemberId, Points};
use retail_sync_core::guard::{BreakerSettings, Downstream, GuardedErp, GuardedLoyalty};
use retail_sync_core::idempotency::IdempotencyPolicy;
use retail_sync_core::members::{Enrolment, Ownership};
use retail_sync_core::memory::CountingMetrics;
use retail_sync_core::ports::{
    ChannelOutcomes, Clock, Erp, ErpBooks, Loyalty, LoyaltyBooks, LoyaltyMembers, MemberSync, MemberSystems,
    Outgoing, Publisher, QueueConsumer, SystemClock,
};
use retail_sync_core::reconcile::{Reconciliation, RepairMode, Settings, Sources, Window};
use retail_sync_core::runner::{Backoff, Consumer, LocalRunner};
use retail_sync_core::settlement::{Confirmed, ReturnWindows, confirm_due};
use retail_sync_core::steps::{Base, ConnectMapping, Wiring, connected, downstream_of};
use retail_sync_embedded::{Embedded, Topology};
use retail_sync_redemption::{ApiRequest, Caller, RedemptionApi, RedemptionConfig};
use retail_sync_simulators::access::Access;
use retail_sync_simulators::{
    AdobeCommerceSimulator, CrmSimulator, Dialects, ErpSimulator, InProcessCrm, InProcessErp,
    InProcessLoyalty, LoyaltySimulator, ShopifyAdminSimulator,
};
use retail_sync_testkit::sims;
use retail_sync_topology::CHANNEL_BUS;

use crate::backends::Backend;
use crate::input::{ApiCall, Input};
use crate::report::{Facts, Report};

/// How long the rounds of a local run may share one commit (see `run_until_idle`).
const GROUP_WINDOW: Duration = Duration::from_millis(200);

/// Where a local run keeps its state, and how it is wired.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub template: PathBuf,
    /// The SQLite file of the embedded backend.
    pub state: PathBuf,
    /// Start from empty state instead of resuming.
    pub fresh: bool,
    /// Replaces the template's visibility timeouts (minutes, sized for Lambda) so that a retry happens
    /// within the run.
    pub visibility_timeout: Duration,
    /// The return windows; `None`: `RETURN_WINDOWS` from the environment, as the functions read it.
    pub return_windows: Option<ReturnWindows>,
}

impl LocalOptions {
    pub const DEFAULT_VISIBILITY: Duration = Duration::from_millis(500);

    pub fn new(template: PathBuf, state: PathBuf) -> Self {
        Self {
            template,
            state,
            fresh: false,
            visibility_timeout: Self::DEFAULT_VISIBILITY,
            return_windows: None,
        }
    }
}

/// The ERP and loyalty platform a local run talks to.
#[derive(Clone, Default)]
pub struct Simulators {
    pub erp: ErpSimulator,
    pub loyalty: LoyaltySimulator,
    /// The ecommerce platforms' order APIs the outcomes of their orders are told to.
    pub shopify: ShopifyAdminSimulator,
    pub adobe_commerce: AdobeCommerceSimulator,
    /// The reference CRM members' contacts are kept current in.
    pub crm: CrmSimulator,
    /// Set by [`Simulators::speaking`]: the real connectors, talking to the simulators' dialects.
    speaking: Option<Arc<Speaking>>,
}

/// Which dialect each system speaks in a local run (`ERP_KIND`, `LOYALTY_KIND`, as on AWS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub erp: ErpKind,
    pub loyalty: LoyaltyKind,
}

impl Default for Kinds {
    fn default() -> Self {
        Self {
            erp: ErpKind::SystemApi,
            loyalty: LoyaltyKind::SystemApi,
        }
    }
}

impl Kinds {
    /// From `ERP_KIND` and `LOYALTY_KIND`; the system API when unset.
    pub fn from_env() -> anyhow::Result<Self> {
        let lookup = |name: &str| std::env::var(name).ok();
        Ok(Self {
            erp: ErpKind::from_lookup(lookup)?,
            loyalty: LoyaltyKind::from_lookup(lookup)?,
        })
    }
}

/// The connectors of [`Simulators::speaking`] and the server they talk to (stopped when dropped).
struct Speaking {
    erp: Option<Arc<dyn Erp>>,
    loyalty: Option<Arc<dyn Loyalty>>,
    /// The same connectors reading the books back, for reconciliation.
    erp_books: Option<Arc<dyn ErpBooks>>,
    loyalty_books: Option<Arc<dyn LoyaltyBooks>>,
    dialects: Dialects,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Speaking {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Members the sample streams redeem points of, and their opening balances.
pub const SAMPLE_MEMBERS: [(&str, i64); 2] = [("m-3001", 10_000), ("m-3002", 10_000)];

impl Simulators {
    /// The calls both systems applied since the last take, as `(system, entry)`.
    fn take_journal(&self) -> Vec<(&'static str, String)> {
        let erp = self.erp.take_journal().into_iter().map(|e| ("erp", e));
        let loyalty = self.loyalty.take_journal().into_iter().map(|e| ("loyalty", e));
        let crm = self.crm.take_journal().into_iter().map(|e| ("crm", e));
        erp.chain(loyalty).chain(crm).collect()
    }

    /// Serves the simulators with their SAP and Salesforce dialects on a loopback port and talks to
    /// them through the connectors `kinds` names — the same adapters, mapping files and credentials
    /// flow as a deployment's. A system of kind `system-api` keeps the in-process adapter (the same
    /// rules, without HTTP). The mappings come from `ERP_SAP_MAPPING(_FILE)` /
    /// `LOYALTY_SALESFORCE_MAPPING(_FILE)`, else the samples in `mappings` (`infra/connectors`).
    pub async fn speaking(self, kinds: Kinds, mappings: &std::path::Path) -> anyhow::Result<Self> {
        self.speaking_with(
            kinds,
            mappings,
            HttpConfig::new("http://127.0.0.1").request_timeout,
        )
        .await
    }

    /// [`Simulators::speaking`] with the connectors giving up on an answer after `timeout` (tests with
    /// injected timeouts keep it short).
    pub async fn speaking_with(
        mut self,
        kinds: Kinds,
        mappings: &std::path::Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        if kinds == Kinds::default() {
            return Ok(self);
        }
        let dialects = Dialects::over(&self.erp, &self.loyalty);
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, server) = retail_sync_simulators::serve_with(
            self.erp.clone(),
            self.loyalty.clone(),
            dialects.clone(),
            Access::local(),
            loopback,
        )
        .await
        .context("cannot serve the simulators on a loopback port")?;
        let base = format!("http://{addr}");
        let config = HttpConfig {
            request_timeout: timeout,
            ..HttpConfig::new(base.clone())
        };
        let lookup = |var: &str, file: &str| env_or_sample(var, Some(mappings.join(file)));
        let sap = match kinds.erp {
            ErpKind::SystemApi => None,
            ErpKind::SapS4Hana => {
                let mapping =
                    SapMapping::from_lookup("ERP", lookup("ERP_SAP_MAPPING_FILE", "sap-s4hana.json"))?;
                // The SAP communication user: HTTP Basic with the simulators' local client.
                Some(Arc::new(SapErp::new(&config, sims::basic(), mapping)?))
            }
        };
        let salesforce = match kinds.loyalty {
            LoyaltyKind::SystemApi => None,
            LoyaltyKind::SalesforceLoyalty => {
                let mapping = SalesforceMapping::from_lookup(
                    "LOYALTY",
                    lookup("LOYALTY_SALESFORCE_MAPPING_FILE", "salesforce-loyalty.json"),
                )?;
                // The Salesforce connected app: client credentials in the form body, as Salesforce documents.
                let auth = sims::oauth_at(&format!("{base}/services/oauth2/token"), ClientAuth::Body);
                Some(Arc::new(SalesforceLoyalty::new(&config, auth, mapping)?))
            }
        };
        self.speaking = Some(Arc::new(Speaking {
            erp: sap.clone().map(|c| c as Arc<dyn Erp>),
            loyalty: salesforce.clone().map(|c| c as Arc<dyn Loyalty>),
            erp_books: sap.map(|c| c as Arc<dyn ErpBooks>),
            loyalty_books: salesforce.map(|c| c as Arc<dyn LoyaltyBooks>),
            dialects,
            server,
        }));
        Ok(self)
    }

    /// The dialects being spoken to, when [`Simulators::speaking`] set any up.
    pub fn dialects(&self) -> Option<&Dialects> {
        self.speaking.as_ref().map(|s| &s.dialects)
    }

    /// The ERP port of a run: the connector of the ERP's kind, or the in-process adapter.
    pub fn erp_port(&self) -> Arc<dyn Erp> {
        match self.speaking.as_ref().and_then(|s| s.erp.clone()) {
            Some(erp) => erp,
            None => Arc::new(InProcessErp(self.erp.clone())),
        }
    }

    /// The loyalty port of a run: the connector of the platform's kind, or the in-process adapter.
    pub fn loyalty_port(&self) -> Arc<dyn Loyalty> {
        match self.speaking.as_ref().and_then(|s| s.loyalty.clone()) {
            Some(loyalty) => loyalty,
            None => Arc::new(InProcessLoyalty(self.loyalty.clone())),
        }
    }

    /// The systems that keep members: the reference loyalty platform and ERP when the run speaks their
    /// system APIs (the SAP and Salesforce connectors do not carry members), and the reference CRM.
    pub fn member_systems(&self) -> MemberSystems {
        let speaking = self.speaking.as_ref();
        MemberSystems {
            loyalty: speaking
                .is_none_or(|s| s.loyalty.is_none())
                .then(|| Arc::new(InProcessLoyalty(self.loyalty.clone())) as Arc<dyn LoyaltyMembers>),
            erp: speaking
                .is_none_or(|s| s.erp.is_none())
                .then(|| Arc::new(InProcessErp(self.erp.clone())) as Arc<dyn MemberSync>),
            crm: Some(Arc::new(InProcessCrm(self.crm.clone()))),
        }
    }

    /// What the reference loyalty platform, ERP and CRM hold of each member, for the report.
    pub fn members(&self) -> BTreeMap<String, crate::report::MemberReport> {
        use crate::report::{MemberCopy, MemberReport};
        let mut out: BTreeMap<String, MemberReport> = BTreeMap::new();
        for m in self.loyalty.members() {
            let mut copy = m.profile.as_ref().map(MemberCopy::of).unwrap_or_default();
            // The platform's own status (merged) over the profile's; an erasure is in the profile.
            if m.profile.is_none() || m.status != retail_sync_contracts::MemberStatus::Active {
                copy.status = m.status.as_str().to_owned();
            }
            copy.merged_into = m.merged_into.as_ref().map(|s| s.to_string());
            copy.balance = Some(m.balance.get().unsigned_abs());
            out.entry(m.member_id.to_string()).or_default().loyalty = Some(copy);
        }
        for c in self.erp.customers() {
            out.entry(c.member_id.to_string()).or_default().erp = Some(MemberCopy::of(&c));
        }
        for c in self.crm.contacts() {
            out.entry(c.member.member_id.to_string()).or_default().crm = Some(MemberCopy::of(&c.member));
        }
        out
    }

    /// The reference systems with the sample members' opening balances (outside the loyalty ledger).
    pub fn with_sample_members() -> Self {
        let sims = Self::default();
        for (member, points) in SAMPLE_MEMBERS {
            sims.loyalty
                .seed_balance(member, Points::new(points).expect("a small positive balance"));
        }
        sims
    }
}

/// A call of the redemption API made while feeding, and its answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ApiExchange {
    pub request: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub status: u16,
    pub response: Value,
}

/// What feeding did.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Fed {
    /// Envelopes put on the bus.
    pub events: usize,
    /// Inputs that were not envelopes, sent to the ingest queue as they were.
    pub raw: usize,
    /// Envelopes no rule matched (EventBridge would drop them silently; we count them).
    pub unrouted: usize,
    /// Calls of the redemption API.
    #[serde(default)]
    pub api_calls: usize,
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    /// Messages handled so far (every step counts).
    pub handled: u64,
    /// Messages waiting or in flight.
    pub pending: u64,
}

/// How the runner protects the downstream systems and paces retries.
#[derive(Debug, Clone, Copy)]
pub struct Protection {
    pub breaker: BreakerSettings,
    pub backoff: Backoff,
}

impl Protection {
    /// The default breaker, and retries paced from the run's visibility timeout: the first after it,
    /// doubling per receive up to 60 times it (0.5 s → 30 s for a local run).
    pub fn paced(visibility: Duration) -> Self {
        Self {
            breaker: BreakerSettings::default(),
            backoff: Backoff {
                first: visibility,
                factor: 2,
                max: visibility * 60,
            },
        }
    }
}

impl Default for Protection {
    fn default() -> Self {
        Self::paced(LocalOptions::DEFAULT_VISIBILITY)
    }
}

/// The breaker and cap of each downstream system.
#[derive(Clone)]
pub struct Guards {
    pub erp: Arc<Downstream>,
    pub loyalty: Arc<Downstream>,
}

impl Guards {
    fn get(&self, system: &str) -> Arc<Downstream> {
        if system == "erp" {
            self.erp.clone()
        } else {
            self.loyalty.clone()
        }
    }
}

/// The channel bus as the platform mappers publish to it: PutEvents as a channel does, so the mapped
/// events meet the same rules (ingest, the archive) as any channel's.
struct ChannelBus<B: Backend>(Arc<B>);

#[async_trait::async_trait]
impl<B: Backend> Publisher for ChannelBus<B> {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), retail_sync_core::Error>> {
        let entries: Vec<(String, String, Value)> = events
            .iter()
            .map(|o| {
                let detail = serde_json::to_value(&o.event).expect("events serialize");
                (o.source.to_owned(), o.detail_type().to_owned(), detail)
            })
            .collect();
        match self.0.put_channel_events(&entries).await {
            Ok(_) => events.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                let message = e.to_string();
                events
                    .iter()
                    .map(|_| {
                        Err(retail_sync_core::Error::unavailable(
                            "channel bus",
                            message.clone(),
                        ))
                    })
                    .collect()
            }
        }
    }
}

/// The environment for reading a mapping: a variable set there wins; else `file_var` (the mapping's
/// `…_FILE`) names `sample`, the sample mapping beside the template.
fn env_or_sample(file_var: &str, sample: Option<PathBuf>) -> impl Fn(&str) -> Option<String> + use<> {
    let file_var = file_var.to_owned();
    let sample = sample.map(|p| p.to_string_lossy().into_owned());
    move |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| (name == file_var).then(|| sample.clone()).flatten())
    }
}

/// The platforms' mappings: `SHOPIFY_MAPPING(_FILE)` / `ADOBE_COMMERCE_MAPPING(_FILE)` when set, else the
/// samples beside the template (`infra/channels/<platform>.json`).
fn channel_mappings(template_dir: Option<PathBuf>) -> ConnectMapping {
    Arc::new(move |platform: Platform| {
        let default = template_dir
            .as_ref()
            .map(|d| d.join("channels").join(format!("{}.json", platform.name())));
        let lookup = env_or_sample(&format!("{}_FILE", platform.mapping_var()), default);
        Ok(retail_sync_channels::mapper_from_lookup(platform, lookup)?)
    })
}

pub struct LocalSystem<B: Backend> {
    pub backend: Arc<B>,
    pub guards: Guards,
    pub topology: Topology,
    pub simulators: Simulators,
    pub metrics: Arc<CountingMetrics>,
    runner: LocalRunner,
    /// The experience API channels call at checkout, over the same idempotency table.
    redemption: RedemptionApi,
    api_log: std::sync::Mutex<Vec<ApiExchange>>,
    /// The queues the functions consume (not their DLQs).
    work_queues: Vec<String>,
    ingest_queue: String,
    /// What the runner handed the steps since the last [`LocalSystem::take_invocations`], once
    /// [`LocalSystem::record_invocations`] asked for it (a cost estimate; a long run keeps nothing).
    invocations: Option<std::sync::Mutex<Invocations>>,
}

/// The steps' invocations as Lambda would bill them: one per batch, with the time the step took.
#[derive(Debug, Default, Clone)]
pub struct Invocations {
    pub durations: Vec<Duration>,
    /// Messages delivered into the work queues (first receives).
    pub deliveries: u64,
}

/// Opens (or, with `fresh`, recreates) the embedded backend's state and wires the system over it.
pub fn open_embedded(
    options: &LocalOptions,
    simulators: Simulators,
) -> anyhow::Result<LocalSystem<Embedded>> {
    let topology = Topology::load(&options.template)?;
    if options.fresh {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = options.state.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", options.state.display()));
                }
                _ => {}
            }
        }
    }
    let store = Embedded::open(&options.state, topology.clone(), Arc::new(SystemClock))
        .with_context(|| {
            format!(
                "cannot open the state {} (a retail-sync state is an SQLite file; to replace this one, \
                 run again with --fresh, which deletes it)",
                options.state.display()
            )
        })?
        .with_visibility_timeout(options.visibility_timeout);
    let protection = Protection::paced(options.visibility_timeout);
    match &options.return_windows {
        Some(windows) => {
            LocalSystem::configured(Arc::new(store), topology, simulators, protection, windows.clone())
        }
        None => LocalSystem::protected(Arc::new(store), topology, simulators, protection),
    }
}

impl<B: Backend> LocalSystem<B> {
    /// Wires the system. The simulators are brought to where the backend's state left them (their
    /// journal, replayed; nothing on a fresh state) and keep their journal from then on.
    pub fn new(backend: Arc<B>, topology: Topology, simulators: Simulators) -> anyhow::Result<Self> {
        Self::protected(backend, topology, simulators, Protection::default())
    }

    /// [`LocalSystem::new`] with other breaker and backoff settings (the chaos harness's, tests').
    pub fn protected(
        backend: Arc<B>,
        topology: Topology,
        simulators: Simulators,
        protection: Protection,
    ) -> anyhow::Result<Self> {
        // As the functions read it: RETURN_WINDOWS from the environment (none when unset).
        let windows = ReturnWindows::from_lookup(|v| std::env::var(v).ok()).map_err(anyhow::Error::msg)?;
        Self::configured(backend, topology, simulators, protection, windows)
    }

    /// [`LocalSystem::protected`] with the return windows given, not read from the environment.
    pub fn configured(
        backend: Arc<B>,
        topology: Topology,
        simulators: Simulators,
        protection: Protection,
        return_windows: ReturnWindows,
    ) -> anyhow::Result<Self> {
        let replay = |system: &str, replay: &dyn Fn(&[String]) -> Result<(), String>| {
            let entries = backend.journal(system)?;
            replay(&entries).map_err(|e| {
                anyhow::anyhow!(
                    "the state's {system} simulator journal does not replay ({e}); start again with --fresh"
                )
            })
        };
        replay("erp", &|e| simulators.erp.replay(e))?;
        replay("loyalty", &|e| simulators.loyalty.replay(e))?;
        replay("crm", &|e| simulators.crm.replay(e))?;
        simulators.erp.keep_journal();
        simulators.loyalty.keep_journal();
        simulators.crm.keep_journal();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(CountingMetrics::default());
        // The template's caps of concurrent calls per downstream hold here too, shared by every step
        // that calls the system, with each system's breaker.
        let cap = |parameter: &str| {
            topology
                .parameter_default(parameter)
                .and_then(|n| usize::try_from(n).ok())
        };
        let guards = Guards {
            erp: Downstream::new("erp", protection.breaker, cap("ErpMaxConcurrency")),
            loyalty: Downstream::new("loyalty", protection.breaker, cap("LoyaltyMaxConcurrency")),
        };
        let unguarded_loyalty: Arc<dyn Loyalty> = simulators.loyalty_port();
        let erp: Arc<dyn Erp> = Arc::new(GuardedErp {
            inner: simulators.erp_port(),
            guard: guards.erp.clone(),
        });
        let loyalty: Arc<dyn Loyalty> = Arc::new(GuardedLoyalty {
            inner: unguarded_loyalty.clone(),
            guard: guards.loyalty.clone(),
        });
        let redemption = RedemptionApi {
            // Checkout has its own outage policy (answer at once, sale allowed or not): no breaker.
            loyalty: unguarded_loyalty,
            idempotency: backend.clone(),
            members: backend.clone(),
            clock: clock.clone(),
            policy: IdempotencyPolicy::default(),
            config: RedemptionConfig::default(),
        };
        let wiring = Wiring {
            base: Base {
                idempotency: backend.clone(),
                sagas: backend.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                policy: IdempotencyPolicy::default(),
            },
            limits: IngestLimits::default(),
            erp: connected(erp),
            loyalty: connected(loyalty),
            publisher: backend.clone(),
            channel_bus: connected(Arc::new(ChannelBus(backend.clone()))),
            channel_mapping: channel_mappings(topology.dir.clone()),
            channel_outcomes: {
                let (shopify, adobe) = (simulators.shopify.clone(), simulators.adobe_commerce.clone());
                Arc::new(move |platform| -> Option<Arc<dyn ChannelOutcomes>> {
                    Some(match platform {
                        ChannelPlatform::Shopify => Arc::new(shopify.clone()),
                        ChannelPlatform::AdobeCommerce => Arc::new(adobe.clone()),
                    })
                })
            },
            member_systems: {
                let systems = simulators.member_systems().guarded(&guards.loyalty, &guards.erp);
                Arc::new(move || Ok(systems.clone()))
            },
            ownership: Arc::new(
                Ownership::from_lookup(|v| std::env::var(v).ok()).map_err(anyhow::Error::msg)?,
            ),
            enrolment: Enrolment::from_lookup(|v| std::env::var(v).ok()).map_err(anyhow::Error::msg)?,
            return_windows,
            quarantine: backend.clone(),
        };
        let mut consumers = Vec::new();
        for f in &topology.functions {
            let runner = wiring
                .runner(&f.binary)
                .with_context(|| format!("the template's function {} runs {}", f.id, f.binary))?;
            consumers.push(Arc::new(Consumer {
                queue: f.queue.clone(),
                batch_size: f.batch_size,
                runner,
                backoff: protection.backoff,
                downstream: downstream_of(&f.binary).map(|d| guards.get(d)),
            }));
        }
        let ingest_queue = topology
            .function("ingest")
            .map(|f| f.queue.clone())
            .context("the template has no function whose binary is `ingest`")?;
        let work_queues = consumers.iter().map(|c| c.queue.clone()).collect();
        Ok(Self {
            guards,
            runner: LocalRunner {
                queues: backend.clone(),
                consumers,
                patience: Default::default(),
            },
            backend,
            topology,
            simulators,
            metrics,
            redemption,
            api_log: Default::default(),
            work_queues,
            ingest_queue,
            invocations: None,
        })
    }

    /// Puts `wrap` around the queues the functions consume (the chaos harness loses acknowledgements
    /// there, as a process killed between a side effect and its acknowledgement would).
    pub fn wrap_queues(&mut self, wrap: impl FnOnce(Arc<dyn QueueConsumer>) -> Arc<dyn QueueConsumer>) {
        self.runner.queues = wrap(self.runner.queues.clone());
    }

    /// Puts the inputs on the bus (envelopes, in PutEvents-sized batches) or on the ingest queue
    /// (anything else), in input order.
    pub async fn feed(&self, inputs: &[Input]) -> anyhow::Result<Fed> {
        let mut fed = Fed::default();
        let mut batch: Vec<(String, String, Value)> = Vec::with_capacity(10);
        for input in inputs {
            match input {
                Input::Event {
                    source,
                    detail_type,
                    detail,
                } => {
                    batch.push((source.clone(), detail_type.clone(), detail.clone()));
                    if batch.len() == 10 {
                        self.put(&mut batch, &mut fed).await?;
                    }
                }
                Input::Api(call) => {
                    // In input order: a checkout happens before the order that uses its hold.
                    self.put(&mut batch, &mut fed).await?;
                    self.call_api(call).await?;
                    fed.api_calls += 1;
                }
                Input::Raw(body) => {
                    self.put(&mut batch, &mut fed).await?;
                    self.backend.send_raw(&self.ingest_queue, body).await?;
                    fed.raw += 1;
                }
            }
        }
        self.put(&mut batch, &mut fed).await?;
        Ok(fed)
    }

    async fn call_api(&self, call: &ApiCall) -> anyhow::Result<()> {
        let mut caller = Caller::local(call.client.as_deref().unwrap_or("local"));
        caller.member = call.member_id.clone();
        let mut request = ApiRequest::new(call.method.clone(), call.path.clone()).with_caller(caller);
        if let Some(key) = &call.idempotency_key {
            request = request.with_header("Idempotency-Key", key.clone());
        }
        if let Some(body) = &call.body {
            request = request.with_body(body.to_string());
        }
        let response = self.redemption.handle(request).await;
        // Outside a group each write commits on its own: keep the hold with the answer just stored (a
        // failure stops the run: the state must not hold an answer whose hold it cannot replay).
        self.keep_journal()?;
        let exchange = ApiExchange {
            request: format!("{} {}", call.method, call.path),
            idempotency_key: call.idempotency_key.clone(),
            status: response.status,
            response: serde_json::from_str(&response.body).unwrap_or(Value::String(response.body)),
        };
        self.api_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(exchange);
        Ok(())
    }

    async fn put(&self, batch: &mut Vec<(String, String, Value)>, fed: &mut Fed) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let delivered = match self.backend.put_channel_events(batch).await? {
            Some(delivered) => delivered,
            // The bus does not say; evaluate the template's rules the way it does.
            None => batch
                .iter()
                .map(|(source, detail_type, detail)| {
                    let event = json!({"source": source, "detail-type": detail_type, "detail": detail});
                    self.topology
                        .rules_on(CHANNEL_BUS)
                        .filter(|r| r.pattern.matches(&event))
                        .count()
                })
                .collect(),
        };
        fed.events += batch.len();
        fed.unrouted += delivered.iter().filter(|&&n| n == 0).count();
        batch.clear();
        Ok(())
    }

    /// Stores what the simulators applied since the last call with the backend's state. A member erased
    /// on a system is erased from the journal too: the entries that told any system their name, e-mail or
    /// phone keep none (replayed, they still lead to the erased member).
    fn keep_journal(&self) -> anyhow::Result<()> {
        let entries = self.simulators.take_journal();
        self.backend.keep_journal(&entries)?;
        let erased: BTreeSet<MemberId> = entries
            .iter()
            .filter_map(|(_, entry)| retail_sync_simulators::erased_in_journal(entry))
            .collect();
        for member in erased {
            self.backend
                .rewrite_journal(&format!("\"member_id\":\"{member}\""), &|entry| {
                    retail_sync_simulators::without_personal_data(entry, &member)
                })?;
        }
        Ok(())
    }

    /// Messages waiting or in flight on the functions' queues.
    pub async fn pending(&self) -> anyhow::Result<u64> {
        let mut pending = 0;
        for q in &self.work_queues {
            let (visible, in_flight) = self.backend.depth(q).await?;
            pending += visible + in_flight;
        }
        Ok(pending)
    }

    /// Polls every function until all their queues are empty: handled, quarantined, or moved to a DLQ
    /// after maxReceiveCount failed deliveries.
    pub async fn run_until_idle(&self, mut on_progress: impl FnMut(Progress)) -> anyhow::Result<Progress> {
        let mut progress = Progress {
            handled: 0,
            pending: self.pending().await?,
        };
        on_progress(progress);
        // Rounds are committed together for up to GROUP_WINDOW: a saga's record and its neighbours'
        // are then written once per window instead of once per step, which is most of the disk traffic.
        let mut group_started: Option<Instant> = None;
        loop {
            if group_started.is_none() {
                self.backend.begin_group()?;
                group_started = Some(Instant::now());
            }
            let round = self.runner.round().await;
            let idle = round.as_ref().map_or(true, |r| r.received == 0);
            if idle || group_started.is_some_and(|t| t.elapsed() >= GROUP_WINDOW) {
                // The simulators' new journal entries commit with the round that caused them.
                self.keep_journal()?;
                self.backend.end_group()?;
                group_started = None;
            }
            let round = round?;
            progress.handled += round.received as u64;
            if let Some(seen) = &self.invocations {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.durations.extend(round.invocations);
                seen.deliveries += round.first_receives as u64;
            }
            if round.received == 0 {
                progress.pending = self.pending().await?;
                on_progress(progress);
                if progress.pending == 0 {
                    return Ok(progress);
                }
                // Only messages waiting out a visibility timeout remain.
                tokio::time::sleep(Duration::from_millis(20)).await;
            } else if progress.handled % 200 < round.received as u64 {
                progress.pending = self.pending().await?;
                on_progress(progress);
            }
        }
    }

    /// From now on, keeps the steps' invocations for [`LocalSystem::take_invocations`].
    pub fn record_invocations(&mut self) {
        self.invocations.get_or_insert_with(Default::default);
    }

    /// The invocations since the last call (see [`Invocations`]); none unless recorded.
    pub fn take_invocations(&self) -> Invocations {
        self.invocations
            .as_ref()
            .map(|seen| std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }

    /// Reconciles `window` (see `retail_sync_core::reconcile`): the backend's sagas against the reference
    /// ERP's and loyalty platform's books, read through their `ErpBooks` and `LoyaltyBooks` ports.
    /// Repairs go to the loyalty platform and are kept in the simulators' journal with the state;
    /// `announce` puts a `ReconciliationMismatch` on the internal bus for each difference left.
    pub async fn reconcile(
        &self,
        window: Window,
        settings: Settings,
        mode: RepairMode,
        announce: bool,
    ) -> anyhow::Result<Reconciliation> {
        let sagas = self.backend.all_sagas().await?;
        // The books as the run's connectors read them back (SAP, Salesforce), else the reference
        // systems' own.
        let speaking = self.simulators.speaking.as_ref();
        let erp: Arc<dyn ErpBooks> = speaking
            .and_then(|s| s.erp_books.clone())
            .unwrap_or_else(|| Arc::new(InProcessErp(self.simulators.erp.clone())));
        let loyalty_books: Arc<dyn LoyaltyBooks> = speaking
            .and_then(|s| s.loyalty_books.clone())
            .unwrap_or_else(|| Arc::new(InProcessLoyalty(self.simulators.loyalty.clone())));
        let loyalty = self.simulators.loyalty_port();
        let publisher: &dyn Publisher = &*self.backend;
        let report = retail_sync_core::reconcile::run(
            window,
            SystemClock.now(),
            settings,
            mode,
            Sources {
                sagas: &sagas,
                erp: &*erp,
                loyalty_books: &*loyalty_books,
                loyalty: &*loyalty,
                store: &*self.backend,
                publisher: announce.then_some(publisher),
                metrics: &*self.metrics,
            },
        )
        .await?;
        self.keep_journal()?;
        Ok(report)
    }

    /// The scheduled `confirm-points` step, run now as of `now` (see `retail_sync_core::settlement`):
    /// every pending accrual whose return window ended is confirmed on the loyalty platform the run
    /// speaks to, once; the simulators' journal keeps it.
    pub async fn confirm_points(&self, now: jiff::Timestamp) -> anyhow::Result<Confirmed> {
        let sagas = self.backend.all_sagas().await?;
        let loyalty = self.simulators.loyalty_port();
        let done = confirm_due(&sagas, &*loyalty, &*self.backend, &*self.metrics, now).await;
        self.keep_journal()?;
        Ok(done)
    }

    /// Everything the run left behind, as a report.
    pub async fn report(&self, input: Fed) -> anyhow::Result<Report> {
        let dlqs = self.topology.dead_letter_queues();
        let peeked = self.backend.dead_letters_of(&dlqs).await?;
        let dead_letters: BTreeMap<_, _> = dlqs.iter().map(|d| (*d).to_owned()).zip(peeked).collect();
        Ok(Report::build(Facts {
            input,
            sagas: self.backend.all_sagas().await?,
            quarantine: self.backend.list(usize::MAX).await?,
            dead_letters,
            balances: self.simulators.loyalty.balances(),
            erp_postings: self
                .simulators
                .erp
                .postings()
                .iter()
                .map(|p| serde_json::to_value(p).expect("postings serialize"))
                .collect(),
            metrics: self.metrics.snapshot(),
            api: self.api_log.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            members: self.simulators.members(),
        }))
    }
}
