//! Benchmarks that print figures (never timed tests): end-to-end sale sagas per second on the embedded
//! backend with the in-process simulators, and AWS API requests per sale saga on an emulator (moto).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;

use retail_sync_aws::{
    AwsBackend, AwsClients, AwsSettings, Bill, BillingMeter, ProvisionOptions, emulator_sdk_config, items,
    provision,
};
use retail_sync_core::saga::Saga;
use retail_sync_topology::Topology;

use crate::cost::{Costed, Prices, Usage};
use crate::input::Input;
use crate::local::{LocalOptions, LocalSystem, Simulators, open_embedded};

/// A benchmark's figures count only if every saga it fed completed; otherwise it names what happened
/// to them.
fn all_completed(summary: &crate::report::Summary, n: usize) -> anyhow::Result<()> {
    let completed = summary.sagas_by_status.get("completed").copied().unwrap_or(0);
    ensure!(
        completed == n,
        "not every saga completed: {completed} of {n} ({} sagas by status {:?}, {} quarantined, {} dead-lettered)",
        summary.sagas,
        summary.sagas_by_status,
        summary.quarantined,
        summary.dead_lettered
    );
    Ok(())
}

/// The members of [`synthetic_sales`] and the orders (`m-0` to `m-999`), enrolled before a run that counts
/// AWS requests: a member's purchases after their first. The first enrols them on the loyalty platform
/// and reads their record to tell the platform (see `members::StepLoyalty`): one `GetItem` more for that
/// one sale of each member, which 1,000 members over a few hundred sales would make most sales.
fn enrolled_members() -> Simulators {
    let sims = Simulators::default();
    for i in 0..1000 {
        sims.loyalty
            .seed_balance(&format!("m-{i}"), retail_sync_contracts::values::Points::ZERO);
    }
    sims
}

/// `n` distinct, valid POS sales: members and anonymous, one to three lines, some paid partly in points.
pub fn synthetic_sales(n: usize) -> Vec<Input> {
    (0..n)
        .map(|i| {
            let lines: Vec<_> = (1..=1 + i % 3)
                .map(|no| {
                    let (qty, unit) = (1 + (i + no) % 3, 199 + 100 * ((i * 7 + no) % 50));
                    let net = qty * unit;
                    json!({"line_no": no, "sku": format!("SKU-{}", (i + no) % 500), "quantity": qty,
                        "unit_price_minor": unit, "discount_minor": 0, "net_minor": net,
                        "tax_minor": net / 5, "loyalty_eligible": no != 3})
                })
                .collect();
            let net: usize = lines.iter().map(|l| l["net_minor"].as_u64().unwrap_or(0) as usize).sum();
            let tax: usize = lines.iter().map(|l| l["tax_minor"].as_u64().unwrap_or(0) as usize).sum();
            let mut data = json!({
                "store_id": format!("store-{:03}", i % 40), "receipt_id": format!("b-{i:08}"), "currency": "EUR",
                "lines": lines, "totals": {"net_minor": net, "tax_minor": tax, "gross_minor": net + tax},
                "tenders": [{"method": "card", "amount_minor": net + tax}],
            });
            if i % 5 != 0 {
                data["member_id"] = json!(format!("m-{}", i % 1000));
            }
            Input::Event {
                source: "retail.pos".into(),
                detail_type: "SaleCompleted".into(),
                detail: json!({
                    "metadata": {"event_id": format!("bench-{i}"), "schema_version": 1,
                        "correlation_id": format!("bench-{i}"), "occurred_at": "2026-11-20T10:00:00Z",
                        "channel": "pos"},
                    "data": data,
                }),
            }
        })
        .collect()
}

pub struct LocalFigures {
    pub sagas: usize,
    pub elapsed: Duration,
    pub messages: u64,
}

impl fmt::Display for LocalFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "embedded end to end: {} sale sagas ({} messages) in {:.2}s = {:.0} sagas/s",
            self.sagas,
            self.messages,
            secs,
            self.sagas as f64 / secs
        )
    }
}

/// Feeds `n` sales and runs them to completion; the clock covers feeding and processing.
pub async fn local(options: &LocalOptions, n: usize) -> anyhow::Result<LocalFigures> {
    let inputs = synthetic_sales(n);
    let mut options = options.clone();
    options.fresh = true;
    let system = open_embedded(&options, Simulators::default())?;
    let started = Instant::now();
    system.feed(&inputs).await?;
    let progress = system.run_until_idle(|_| {}).await?;
    let elapsed = started.elapsed();
    let report = system.report(Default::default()).await?;
    all_completed(&report.summary, n)?;
    Ok(LocalFigures {
        sagas: n,
        elapsed,
        messages: progress.handled,
    })
}

/// AWS API requests of sale sagas on an emulator, by operation.
pub struct AwsFigures {
    pub sagas: usize,
    /// `--batch-size`: every event source mapping's batch size for the run, instead of the template's.
    pub batch_size: Option<usize>,
    /// Requests the steps made (what the Lambda functions would make), by `service:Operation`.
    pub steps: BTreeMap<String, u64>,
    /// Requests of the local runner's polling (on AWS, Lambda's SQS event source mapping does this).
    pub polling: BTreeMap<String, u64>,
    /// The channel's PutEvents calls feeding the sales.
    pub feed: u64,
    /// With `--cost`: the price table, and a sale saga, then an ecommerce order with a return, metered.
    pub cost: Option<(Prices, Vec<Usage>)>,
    /// With `--cost`: what storing the run's sagas deflated saves and takes.
    pub saga_items: Option<SagaItems>,
}

/// The sagas a run left, as JSON text and as the DynamoDB adapter stores them (`items::saga_item`, the
/// JSON deflated): mean sizes, and mean times to build an item and to read one back.
pub struct SagaItems {
    pub sagas: usize,
    pub text_bytes: f64,
    /// The whole item, as DynamoDB sizes it for its write units.
    pub item_bytes: f64,
    /// Mean µs to build a saga's item (serialize and deflate), and to serialize it alone.
    pub build_us: f64,
    pub serialize_us: f64,
    /// Mean µs to read a saga back from its item (inflate and parse), and to parse its JSON alone.
    pub read_us: f64,
    pub parse_us: f64,
}

impl SagaItems {
    /// Each saga is built and read `ROUNDS` times, so a mean is not one cold call.
    const ROUNDS: u32 = 20;

    pub fn measure(sagas: &[Saga]) -> anyhow::Result<Self> {
        ensure!(!sagas.is_empty(), "no saga to measure");
        let texts = sagas
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let stored: Vec<_> = sagas.iter().map(|s| items::saga_item(s, None)).collect();
        let n = sagas.len() as f64;
        // The mean µs of `op` over every saga (by index), `ROUNDS` times each.
        let mean_us = |op: &mut dyn FnMut(usize) -> anyhow::Result<()>| -> anyhow::Result<f64> {
            let started = Instant::now();
            for _ in 0..Self::ROUNDS {
                (0..sagas.len()).try_for_each(&mut *op)?;
            }
            Ok(started.elapsed().as_secs_f64() * 1e6 / (n * f64::from(Self::ROUNDS)))
        };
        Ok(Self {
            sagas: sagas.len(),
            text_bytes: texts.iter().map(String::len).sum::<usize>() as f64 / n,
            item_bytes: stored
                .iter()
                .map(retail_sync_aws::meter::item_size)
                .sum::<usize>() as f64
                / n,
            build_us: mean_us(&mut |i| {
                std::hint::black_box(items::saga_item(&sagas[i], None));
                Ok(())
            })?,
            serialize_us: mean_us(&mut |i| {
                std::hint::black_box(serde_json::to_string(&sagas[i])?);
                Ok(())
            })?,
            read_us: mean_us(&mut |i| {
                std::hint::black_box(items::saga_of(&stored[i])?);
                Ok(())
            })?,
            parse_us: mean_us(&mut |i| {
                std::hint::black_box(serde_json::from_str::<Saga>(&texts[i])?);
                Ok(())
            })?,
        })
    }
}

impl fmt::Display for SagaItems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saga items ({} sagas of this run): {:.0} B of JSON, stored deflated in items of {:.0} B; \
             building one {:.1} µs (serializing alone {:.1}), reading one back {:.1} µs (parsing alone {:.1})",
            self.sagas,
            self.text_bytes,
            self.item_bytes,
            self.build_us,
            self.serialize_us,
            self.read_us,
            self.parse_us
        )
    }
}

/// SQS operations the local runner (not the steps) makes.
const POLLING: [&str; 3] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessageBatch",
    "sqs:GetQueueAttributes",
];

impl fmt::Display for AwsFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.sagas as f64;
        let batches = match self.batch_size {
            Some(size) => format!(", batches of at most {size}"),
            None => String::new(),
        };
        writeln!(
            f,
            "AWS API requests for {} sale sagas (moto{batches}), per saga:",
            self.sagas
        )?;
        per_saga(f, &self.steps, n, "steps total", "<- the functions' own requests")?;
        per_saga(
            f,
            &self.polling,
            n,
            "polling total",
            "<- Lambda's event source mapping on AWS",
        )?;
        write!(
            f,
            "  {:<36} {:>6.2}   (channel PutEvents, batches of 10)",
            "feed",
            self.feed as f64 / n
        )?;
        if let Some((prices, usages)) = &self.cost {
            for usage in usages {
                write!(f, "\n\n{}", Costed { usage, prices })?;
            }
        }
        if let Some(items) = &self.saga_items {
            write!(f, "\n\n{items}")?;
        }
        Ok(())
    }
}

/// One line per operation, then their total with a note.
fn per_saga(
    f: &mut fmt::Formatter<'_>,
    ops: &BTreeMap<String, u64>,
    n: f64,
    total: &str,
    note: &str,
) -> fmt::Result {
    for (op, count) in ops {
        writeln!(f, "  {op:<36} {:>6.2}", *count as f64 / n)?;
    }
    writeln!(
        f,
        "  {total:<36} {:>6.2}   {note}",
        ops.values().sum::<u64>() as f64 / n
    )
}

/// `bench aws --batch-size`: a batch size SQS can hand Lambda, checked when the option is read, before
/// anything (a moto server) is started for the run.
#[derive(Clone, Copy)]
pub struct BatchSize(usize);

impl BatchSize {
    pub fn new(size: usize) -> anyhow::Result<Self> {
        ensure!(
            (1..=10).contains(&size),
            "--batch-size must be 1 to 10 (SQS hands Lambda at most 10 messages a receive)"
        );
        Ok(Self(size))
    }
}

/// Runs `n` sales through the AWS backend on the emulator at `endpoint` and counts the requests; with
/// `cost`, also meters what they are billed as, for the sales and then for `n` ecommerce orders that are
/// shipped and partly returned. `batch_size` replaces every event source mapping's `BatchSize` (a
/// trickle of sales is a batch of one).
pub async fn aws(
    template: &Path,
    endpoint: &str,
    n: usize,
    cost: bool,
    batch_size: Option<BatchSize>,
) -> anyhow::Result<AwsFigures> {
    let batch_size = batch_size.map(|BatchSize(size)| size);
    let mut topology = Topology::load(template)?;
    if let Some(size) = batch_size {
        for f in &mut topology.functions {
            f.batch_size = size;
        }
    }
    let settings = AwsSettings::default().with_endpoint_url(endpoint);
    let meter = BillingMeter::new();
    let sdk = emulator_sdk_config(&settings).await;
    let clients = if cost {
        AwsClients::metered(&sdk, &meter)
    } else {
        AwsClients::new(&sdk)
    };
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(2));
    let settings = provision(&clients, &topology, &options).await?;
    let backend = Arc::new(AwsBackend::new(&clients, settings));
    let mut system = LocalSystem::new(backend.clone(), topology, enrolled_members())?;
    system.record_invocations();

    let sales = run_metered(&system, &meter, "sale saga", &[synthetic_sales(n)]).await?;
    let feed = sales.feed;
    let (polling, steps) = sales
        .requests
        .into_iter()
        .partition(|(op, _)| POLLING.contains(&op.as_str()));
    let report = system.report(Default::default()).await?;
    all_completed(&report.summary, n)?;
    let (mut usage, mut saga_items) = (None, None);
    if cost {
        // Each phase runs to the end before the next arrives: a return before its shipment would wait
        // out visibility timeouts, which is a different (slower, not costlier) run.
        let phases = synthetic_orders(n);
        let orders = run_metered(&system, &meter, "ecommerce order with a return", &phases).await?;
        usage = Some((Prices::table()?, vec![sales.usage, orders.usage]));
        saga_items = Some(SagaItems::measure(&backend.state().scan_sagas().await?)?);
    }
    Ok(AwsFigures {
        sagas: n,
        batch_size,
        steps,
        polling,
        feed,
        cost: usage,
        saga_items,
    })
}

/// One scenario's requests (by operation, the functions' and the polling's) and what they are billed
/// as.
struct Metered {
    requests: BTreeMap<String, u64>,
    /// The channel's requests feeding the scenario.
    feed: u64,
    usage: Usage,
}

/// Feeds each phase and runs it to the end, metering the channel's events apart from the functions'
/// work.
async fn run_metered(
    system: &LocalSystem<AwsBackend>,
    meter: &BillingMeter,
    scenario: &str,
    phases: &[Vec<Input>],
) -> anyhow::Result<Metered> {
    let (mut channel, mut steps) = (Bill::default(), Bill::default());
    let (mut requests, mut feed) = (BTreeMap::new(), 0);
    let counter = system.backend.counter();
    system.take_invocations();
    for phase in phases {
        meter.reset();
        counter.reset();
        system.feed(phase).await?;
        channel.add(&meter.snapshot());
        feed += counter.total();
        meter.reset();
        counter.reset();
        system.run_until_idle(|_| {}).await?;
        steps.add(&meter.snapshot());
        for (op, count) in counter.snapshot() {
            *requests.entry(op).or_default() += count;
        }
    }
    let topology = &system.topology;
    Ok(Metered {
        requests,
        feed,
        usage: Usage {
            scenario: scenario.to_owned(),
            sagas: phases.first().map_or(0, Vec::len),
            channel,
            steps,
            invocations: system.take_invocations(),
            // Invocations are not told apart by function: priced at the largest queue-fed function's
            // memory (all 128 MB in the template), so a difference would err high, never low.
            memory_mb: topology
                .functions
                .iter()
                .map(|f| f.memory_mb)
                .max()
                .unwrap_or(128),
            queues: topology.functions.len(),
        },
    })
}

/// `n` ecommerce orders in three phases: placed (members, no points paid), shipped whole, and one line
/// of each returned in store. Shapes from `events/samples/OrderPlaced.json`, `OrderShipped.json` and
/// `ReturnReceived.json`.
pub fn synthetic_orders(n: usize) -> Vec<Vec<Input>> {
    let event =
        |source: &str, detail_type: &str, id: String, order: &str, channel: &str, data| Input::Event {
            source: source.into(),
            detail_type: detail_type.into(),
            detail: json!({
                "metadata": {"event_id": id, "schema_version": 1, "correlation_id": format!("web-{order}"),
                    "occurred_at": "2026-11-20T10:00:00Z", "channel": channel},
                "data": data,
            }),
        };
    let (mut placed, mut shipped, mut returned) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let order = format!("ord-b{i:08}");
        let lines: Vec<_> = (1..=2)
            .map(|no| {
                let (qty, unit) = (no, 1000 + 100 * ((i + no) % 40));
                let net = qty * unit;
                json!({"line_no": no, "sku": format!("SKU-{}", (i + no) % 500), "quantity": qty,
                    "unit_price_minor": unit, "discount_minor": 0, "net_minor": net,
                    "tax_minor": net / 5, "loyalty_eligible": true})
            })
            .collect();
        let net: usize = lines
            .iter()
            .map(|l| l["net_minor"].as_u64().unwrap_or(0) as usize)
            .sum();
        let first = lines[0].clone();
        placed.push(event(
            "retail.ecommerce",
            "OrderPlaced",
            format!("bench-o-{i}"),
            &order,
            "ecommerce",
            json!({"order_id": order, "member_id": format!("m-{}", i % 1000), "currency": "EUR",
                "lines": lines, "totals": {"net_minor": net, "tax_minor": net / 5, "gross_minor": net + net / 5}}),
        ));
        shipped.push(event(
            "retail.oms",
            "OrderShipped",
            format!("bench-s-{i}"),
            &order,
            "oms",
            json!({"order_id": order, "shipment_id": format!("shp-{i}"),
                "lines": [{"line_no": 1, "quantity": 1}, {"line_no": 2, "quantity": 2}]}),
        ));
        returned.push(event(
            "retail.pos",
            "ReturnReceived",
            format!("bench-r-{i}"),
            &order,
            "pos",
            json!({"return_id": format!("ret-b{i}"), "original": {"kind": "order", "order_id": order},
                "store_id": "store-042", "currency": "EUR",
                "lines": [{"line_no": 1, "sku": first["sku"], "quantity": 1, "refund_minor": first["net_minor"]}]}),
        ));
    }
    vec![placed, shipped, returned]
}

/// The redemption API's own cost at checkout: what a warm request takes beyond the loyalty platform's
/// call, with the idempotency write, on the embedded backend.
pub struct ApiFigures {
    pub requests: usize,
    pub platform_latency: Duration,
    /// Per operation (`POST /v1/holds`, `POST /v1/holds/{id}/release`): (total, platform, overhead) in
    /// microseconds, one entry per request.
    pub operations: BTreeMap<&'static str, Vec<(u64, u64, u64)>>,
}

impl fmt::Display for ApiFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "redemption API, embedded backend, {} requests per operation after a warm-up, platform latency {} ms:",
            self.requests,
            self.platform_latency.as_millis()
        )?;
        writeln!(
            f,
            "  {:<30} {:>11} {:>11} {:>14} {:>14} {:>14}",
            "operation", "total p50", "total p99", "overhead p50", "overhead p99", "overhead max"
        )?;
        for (op, samples) in &self.operations {
            let sorted = |pick: fn(&(u64, u64, u64)) -> u64| {
                let mut v: Vec<u64> = samples.iter().map(pick).collect();
                v.sort_unstable();
                v
            };
            let (total, overhead) = (sorted(|s| s.0), sorted(|s| s.2));
            writeln!(
                f,
                "  {op:<30} {:>11} {:>11} {:>14} {:>14} {:>14}",
                ms(percentile(&total, 50)),
                ms(percentile(&total, 99)),
                ms(percentile(&overhead, 50)),
                ms(percentile(&overhead, 99)),
                ms(overhead.last().copied().unwrap_or(0)),
            )?;
        }
        write!(
            f,
            "  (overhead = the request's time less the platform's call: routing, validation, the idempotency claim and answer)"
        )
    }
}

/// The `p`-th percentile of sorted samples (nearest rank).
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(micros: u64) -> String {
    format!("{:.3} ms", micros as f64 / 1000.0)
}

/// Times the loyalty platform's calls (and makes each take `latency`, as a real platform's would), so
/// the API's overhead is what is left of a request.
struct TimedLoyalty {
    inner: Arc<dyn retail_sync_core::ports::Loyalty>,
    latency: Duration,
    spent: std::sync::Mutex<Duration>,
}

impl TimedLoyalty {
    async fn timed<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let out = call.await;
        let took = started.elapsed();
        *self.spent.lock().unwrap_or_else(|p| p.into_inner()) += took;
        out
    }

    fn take_spent(&self) -> Duration {
        std::mem::take(&mut *self.spent.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait::async_trait]
impl retail_sync_core::ports::Loyalty for TimedLoyalty {
    async fn accrue(
        &self,
        request: &retail_sync_core::ports::AccrualRequest,
        key: &retail_sync_core::idempotency::IdempotencyKey,
    ) -> Result<retail_sync_core::ports::Accrual, retail_sync_core::Error> {
        self.timed(self.inner.accrue(request, key)).await
    }

    async fn balance(
        &self,
        member_id: &retail_sync_contracts::values::MemberId,
    ) -> Result<retail_sync_core::ports::Balance, retail_sync_core::Error> {
        self.timed(self.inner.balance(member_id)).await
    }

    async fn create_hold(
        &self,
        request: &retail_sync_core::ports::HoldRequest,
        key: &retail_sync_core::idempotency::IdempotencyKey,
    ) -> Result<retail_sync_core::ports::Hold, retail_sync_core::Error> {
        self.timed(self.inner.create_hold(request, key)).await
    }

    async fn get_hold(
        &self,
        hold_id: &retail_sync_contracts::values::HoldId,
    ) -> Result<retail_sync_core::ports::Hold, retail_sync_core::Error> {
        self.timed(self.inner.get_hold(hold_id)).await
    }

    async fn commit_hold(
        &self,
        hold_id: &retail_sync_contracts::values::HoldId,
        request: &retail_sync_core::ports::CommitRequest,
        key: &retail_sync_core::idempotency::IdempotencyKey,
    ) -> Result<retail_sync_core::ports::Hold, retail_sync_core::Error> {
        self.timed(self.inner.commit_hold(hold_id, request, key)).await
    }

    async fn release_hold(
        &self,
        hold_id: &retail_sync_contracts::values::HoldId,
        key: &retail_sync_core::idempotency::IdempotencyKey,
    ) -> Result<retail_sync_core::ports::Hold, retail_sync_core::Error> {
        self.timed(self.inner.release_hold(hold_id, key)).await
    }

    async fn adjust(
        &self,
        request: &retail_sync_core::ports::AdjustmentRequest,
        key: &retail_sync_core::idempotency::IdempotencyKey,
    ) -> Result<retail_sync_core::ports::Adjustment, retail_sync_core::Error> {
        self.timed(self.inner.adjust(request, key)).await
    }
}

/// `n` holds created and released through the redemption API (after as many again to warm up), each
/// request timed whole and in its platform call.
pub async fn api(options: &LocalOptions, n: usize, latency: Duration) -> anyhow::Result<ApiFigures> {
    use retail_sync_redemption::{ApiRequest, Caller, RedemptionApi, RedemptionConfig};
    let topology = Topology::load(&options.template)?;
    let clock = Arc::new(retail_sync_core::ports::SystemClock);
    let store = Arc::new(retail_sync_embedded::Embedded::open(
        &options.state,
        topology,
        clock.clone(),
    )?);
    let sims = Simulators::with_sample_members();
    let loyalty = Arc::new(TimedLoyalty {
        inner: sims.loyalty_port(),
        latency,
        spent: Default::default(),
    });
    let api = RedemptionApi {
        loyalty: loyalty.clone(),
        members: store.clone(),
        idempotency: store,
        clock,
        policy: Default::default(),
        config: RedemptionConfig::default(),
    };
    let mut operations: BTreeMap<&'static str, Vec<(u64, u64, u64)>> = BTreeMap::new();
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    for i in 0..2 * n {
        let caller = Caller::local("bench-checkout");
        let create = ApiRequest::new("POST", "/v1/holds")
            .with_header("idempotency-key", format!("bench-hold-{i}"))
            .with_body(
                json!({"member_id": "m-3001", "points": 10, "currency": "EUR", "basket_net_minor": 5000})
                    .to_string(),
            )
            .with_caller(caller.clone());
        loyalty.take_spent();
        let started = Instant::now();
        let created = api.handle(create).await;
        let (total, platform) = (started.elapsed(), loyalty.take_spent());
        ensure!(
            created.status == 201,
            "a hold was refused: {} {}",
            created.status,
            created.body
        );
        let hold: serde_json::Value = serde_json::from_str(&created.body)?;
        let hold_id = hold["hold_id"].as_str().unwrap_or_default().to_owned();
        let release = ApiRequest::new("POST", format!("/v1/holds/{hold_id}/release"))
            .with_header("idempotency-key", format!("bench-release-{i}"))
            .with_caller(caller);
        let started = Instant::now();
        let released = api.handle(release).await;
        let (release_total, release_platform) = (started.elapsed(), loyalty.take_spent());
        ensure!(
            released.status == 200,
            "a release was refused: {} {}",
            released.status,
            released.body
        );
        if i < n {
            continue; // warm-up
        }
        for (op, total, platform) in [
            ("POST /v1/holds", total, platform),
            ("POST /v1/holds/{id}/release", release_total, release_platform),
        ] {
            operations.entry(op).or_default().push((
                micros(total),
                micros(platform),
                micros(total.saturating_sub(platform)),
            ));
        }
    }
    Ok(ApiFigures {
        requests: n,
        platform_latency: latency,
        operations,
    })
}

/// One function's start: from `spawn` to its first `GET …/runtime/invocation/next`, and its peak
/// resident memory then (`VmHWM`).
pub struct ColdStart {
    pub function: String,
    /// Per run, milliseconds; empty when it never polled.
    pub ready_ms: Vec<f64>,
    pub peak_kib: Vec<u64>,
    /// Of the memory at the first poll (last run), KiB: pages of the binary and libraries mapped in
    /// (`RssFile`), and the process's own (`RssAnon`).
    pub rss_file_kib: Option<u64>,
    pub rss_anon_kib: Option<u64>,
    /// Its threads at the first poll (last run): one, as every function runs on one thread
    /// (`retail_sync_lambda::start`).
    pub threads: Option<u64>,
    /// The binary's size, and deflated as `sam package` zips it (zlib's default level), bytes.
    pub size: u64,
    pub zipped: u64,
    /// Why it did not poll (its last words), when it did not.
    pub failed: Option<String>,
}

pub struct ColdStartFigures {
    pub bin_dir: std::path::PathBuf,
    pub runs: usize,
    /// The root CA bundle the functions were pointed at (`SSL_CERT_FILE`), if any.
    pub ca_bundle: Option<std::path::PathBuf>,
    pub functions: Vec<ColdStart>,
    pub schemas: SchemaCompiles,
}

/// What ingest's first event of a type costs beyond the cold start: compiling that type's JSON Schema
/// (once per process, on the type's first event), measured in this process on the bench's own events.
pub struct SchemaCompiles {
    /// Per channel event type: its first validation (compiling the schema) and a second one.
    pub first: Vec<(&'static str, Duration, Duration)>,
    /// Every event type's schema compiled one after the other: what the first event of any type paid
    /// when all were compiled together.
    pub all: Duration,
}

impl SchemaCompiles {
    /// Run before anything else in this process validates an event (each schema is compiled once).
    pub fn measure() -> Self {
        use retail_sync_contracts::registry::{EventType, SUPPORTED_VERSIONS};
        let mut events: Vec<Input> = synthetic_sales(1);
        events.extend(synthetic_orders(1).into_iter().flatten());
        let mut first: Vec<(&'static str, Duration, Duration)> = Vec::new();
        for input in &events {
            let Input::Event {
                detail_type, detail, ..
            } = input
            else {
                continue;
            };
            let Some(t) = EventType::from_name(detail_type) else {
                continue;
            };
            if first.iter().any(|(name, ..)| *name == t.name()) {
                continue;
            }
            let timed = || {
                let started = Instant::now();
                let valid = t.validate(1, detail).is_ok();
                (started.elapsed(), valid)
            };
            let (cold, valid) = timed();
            let (warm, _) = timed();
            if valid {
                first.push((t.name(), cold, warm));
            }
        }
        let started = Instant::now();
        for &t in EventType::ALL {
            for &v in SUPPORTED_VERSIONS {
                let _ = t.validate(v, &serde_json::Value::Null);
            }
        }
        // The channel types above were compiled already: add what they took.
        let all = started.elapsed()
            + first
                .iter()
                .map(|(_, cold, warm)| cold.saturating_sub(*warm))
                .sum::<Duration>();
        Self { first, all }
    }
}

impl fmt::Display for SchemaCompiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let firsts: Vec<String> = self
            .first
            .iter()
            .map(|(name, cold, warm)| format!("{name} {} (then {} µs)", ms(*cold), warm.as_micros()))
            .collect();
        write!(
            f,
            "  ingest's first event of a type also compiles that type's JSON Schema, once per process (measured in \
             this one): {}; all {} types one after the other {}",
            firsts.join(", "),
            retail_sync_contracts::registry::EventType::ALL.len(),
            ms(self.all)
        )
    }
}

impl fmt::Display for ColdStartFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cold start: process start -> first runtime API poll, {} runs each, binaries in {}",
            self.runs,
            self.bin_dir.display()
        )?;
        match &self.ca_bundle {
            Some(bundle) => writeln!(
                f,
                "  root CAs from {} (SSL_CERT_FILE, as the template sets it)",
                bundle.display()
            )?,
            None => writeln!(f, "  root CAs from the platform's search (no SSL_CERT_FILE)")?,
        }
        writeln!(
            f,
            "  {:<22} {:>10} {:>10} {:>12} {:>10} {:>10} {:>8} {:>9} {:>9}",
            "function", "median", "max", "peak memory", "of binary", "own", "threads", "size", "zipped"
        )?;
        let mib = |kib: Option<u64>| kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0));
        let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
        for c in &self.functions {
            match &c.failed {
                Some(why) => writeln!(f, "  {:<22} did not poll: {why}", c.function)?,
                None => {
                    let mut ready = c.ready_ms.clone();
                    ready.sort_by(f64::total_cmp);
                    let median = ready.get(ready.len() / 2).copied().unwrap_or(0.0);
                    let max = ready.last().copied().unwrap_or(0.0);
                    let peak = c.peak_kib.iter().max().copied().unwrap_or(0);
                    writeln!(
                        f,
                        "  {:<22} {:>7.1} ms {:>7.1} ms {:>8.1} MiB {:>10} {:>10} {:>8} {:>9} {:>9}",
                        c.function,
                        median,
                        max,
                        peak as f64 / 1024.0,
                        mib(c.rss_file_kib).unwrap_or_default(),
                        mib(c.rss_anon_kib).unwrap_or_default(),
                        c.threads.map(|n| n.to_string()).unwrap_or_default(),
                        mb(c.size),
                        mb(c.zipped),
                    )?;
                }
            }
        }
        writeln!(
            f,
            "  (memory and threads at the first poll: of binary = RssFile, own = RssAnon; zipped: deflated as \
             sam package zips it; the harness plays the Lambda runtime API, no cloud)"
        )?;
        write!(f, "{}", self.schemas)
    }
}

/// Where this machine keeps its one-file root CA bundle: the template points the functions at
/// provided.al2023's (`CaBundleFile`); the harness mirrors that with the local equivalent.
pub fn platform_ca_bundle() -> Option<std::path::PathBuf> {
    [
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file())
}

/// The settings every function reads at start, pointing nowhere: nothing is called before the first
/// poll, so nothing needs to answer.
fn cold_start_env(runtime_api: &str, ca_bundle: Option<&Path>) -> Vec<(&'static str, String)> {
    let nowhere = "http://127.0.0.1:9".to_owned();
    let mut env: Vec<(&'static str, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", "cold-start".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_ENDPOINT_URL", nowhere.clone()),
        ("IDEMPOTENCY_TABLE", "idempotency".to_owned()),
        ("SAGA_TABLE", "sagas".to_owned()),
        ("QUARANTINE_TABLE", "quarantine".to_owned()),
        ("EVENT_BUS_NAME", "internal".to_owned()),
        ("CHANNEL_BUS_NAME", "channels".to_owned()),
        ("REPORT_BUCKET", "reports".to_owned()),
        ("ERP_BASE_URL", nowhere.clone()),
        ("ERP_AUTH", "api-key".to_owned()),
        ("ERP_API_KEY", "cold-start".to_owned()),
        ("LOYALTY_BASE_URL", nowhere),
        ("LOYALTY_AUTH", "api-key".to_owned()),
        ("LOYALTY_API_KEY", "cold-start".to_owned()),
        // The platform mappers read their mapping at start (the template's defaults), the webhook
        // ingress its secret's ARN (the secret itself on first use).
        ("SHOPIFY_MAPPING_FILE", "infra/channels/shopify.json".to_owned()),
        (
            "ADOBE_COMMERCE_MAPPING_FILE",
            "infra/channels/adobe-commerce.json".to_owned(),
        ),
        (
            "SHOPIFY_WEBHOOK_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:cold-start".to_owned(),
        ),
    ]
    .into();
    if let Some(bundle) = ca_bundle {
        env.push(("SSL_CERT_FILE", bundle.display().to_string()));
    }
    env
}

/// A number of `/proc/{pid}/status` (Linux): `VmHWM` (peak resident), `RssFile`, `RssAnon` in KiB, and
/// `Threads`, a count.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The binary's size and its deflated size (zlib's default level 6, which `sam package`'s zip uses).
fn sizes(path: &Path) -> std::io::Result<(u64, u64)> {
    let bytes = std::fs::read(path)?;
    let zipped = miniz_oxide::deflate::compress_to_vec(&bytes, 6);
    Ok((bytes.len() as u64, zipped.len() as u64))
}

/// Starts each of `functions` from `bin_dir` `runs` times against a listener that plays the runtime
/// API's `next` endpoint (and never answers), and times the first poll.
pub async fn cold_start(
    bin_dir: &Path,
    functions: &[String],
    runs: usize,
    ca_bundle: Option<&Path>,
) -> anyhow::Result<ColdStartFigures> {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let runtime_api = listener.local_addr()?.to_string();
    let mut out = Vec::new();
    for function in functions {
        let path = bin_dir.join(function);
        ensure!(path.exists(), "{} not found: build it first", path.display());
        let (size, zipped) = sizes(&path)?;
        let mut result = ColdStart {
            function: function.clone(),
            ready_ms: Vec::new(),
            peak_kib: Vec::new(),
            rss_file_kib: None,
            rss_anon_kib: None,
            threads: None,
            size,
            zipped,
            failed: None,
        };
        for _ in 0..runs {
            let mut command = tokio::process::Command::new(&path);
            command
                .env_clear()
                .envs(cold_start_env(&runtime_api, ca_bundle))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let started = Instant::now();
            let mut child = command.spawn()?;
            let polled = async {
                loop {
                    let (mut socket, _) = listener.accept().await?;
                    let mut buf = vec![0_u8; 1024];
                    let n = socket.read(&mut buf).await?;
                    if String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next") {
                        return Ok::<_, std::io::Error>((started.elapsed(), socket));
                    }
                }
            };
            tokio::select! {
                polled = tokio::time::timeout(Duration::from_secs(10), polled) => {
                    let (elapsed, _socket) = polled
                        .map_err(|_| anyhow::anyhow!("{function} did not poll within 10 s"))??;
                    result.ready_ms.push(elapsed.as_secs_f64() * 1000.0);
                    let status = child
                        .id()
                        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
                        .unwrap_or_default();
                    if let Some(kib) = status_kib(&status, "VmHWM") {
                        result.peak_kib.push(kib);
                    }
                    result.rss_file_kib = status_kib(&status, "RssFile");
                    result.rss_anon_kib = status_kib(&status, "RssAnon");
                    result.threads = status_kib(&status, "Threads");
                    child.kill().await?;
                }
                status = child.wait() => {
                    let mut stderr = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        e.read_to_string(&mut stderr).await?;
                    }
                    let last = stderr.lines().last().unwrap_or_default().chars().take(200).collect::<String>();
                    result.failed = Some(format!("exited {status:?}: {last}"));
                    break;
                }
            }
        }
        out.push(result);
    }
    Ok(ColdStartFigures {
        bin_dir: bin_dir.to_owned(),
        runs,
        ca_bundle: ca_bundle.map(Path::to_owned),
        functions: out,
        schemas: SchemaCompiles::measure(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_field_by_field_from_proc_status() {
        let status = "Name:\tingest\nVmHWM:\t   13552 kB\nRssAnon:\t    1740 kB\nRssFile:\t   11812 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(13552));
        assert_eq!(status_kib(status, "RssFile"), Some(11812));
        assert_eq!(status_kib(status, "RssAnon"), Some(1740));
        assert_eq!(status_kib("Threads:\t1\n", "Threads"), Some(1));
        // A field that is a prefix of another is not confused with it; a missing one is none.
        assert_eq!(status_kib("VmHWMX:\t1 kB\n", "VmHWM"), None);
        assert_eq!(status_kib(status, "RssShmem"), None);
    }

    #[test]
    fn the_zipped_size_is_the_deflated_binary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap");
        // Repetitive, like a binary's tables: deflates well; random bytes do not.
        std::fs::write(&path, b"retail-sync ".repeat(10_000)).unwrap();
        let (size, zipped) = sizes(&path).unwrap();
        assert_eq!(size, 120_000);
        assert!(zipped > 0 && zipped < size / 50, "{zipped}");
        // xorshift: bytes without repetition for deflate to find.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        std::fs::write(&path, &noise).unwrap();
        let (size, zipped) = sizes(&path).unwrap();
        assert!(zipped > size * 9 / 10, "{zipped} of {size}");
        assert!(sizes(&dir.path().join("missing")).is_err());
    }
}
