//! `retail-sync`: run the system locally, inspect and repair it. Argument parsing only; the work is in
//! the library (`retail_sync_cli`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` for what the commands print. When whoever reads the output has gone
/// (`retail-sync quarantine list | head -1`), the command ends at once with exit code 141, as a Unix tool
/// killed by SIGPIPE does, instead of panicking; any other failure to write is an error line and exit 1.
macro_rules! outln {
    () => { crate::write_out(format_args!(""), true) };
    ($($arg:tt)*) => { crate::write_out(format_args!($($arg)*), true) };
}

/// [`outln!`] without the line end, for a text that brings its own.
macro_rules! out {
    ($($arg:tt)*) => { crate::write_out(format_args!($($arg)*), false) };
}

fn write_out(text: std::fmt::Arguments<'_>, line_end: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(text)
        .and_then(|()| if line_end { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            std::process::exit(1);
        }
    }
}

mod commands;

use retail_sync_cli::target::TargetArgs;
use retail_sync_core::error::describe;
use retail_sync_core::reconcile::{RepairMode, Settings};

#[derive(Parser)]
#[command(
    name = "retail-sync",
    version,
    about = "Keeps the ERP and the loyalty platform telling the same truth."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct StateArgs {
    /// The SAM template the wiring is read from.
    #[arg(long, default_value = "infra/template.yaml", env = "RETAIL_SYNC_TEMPLATE")]
    pub template: PathBuf,
    /// The embedded backend's state file.
    #[arg(long, default_value = ".retail-sync/local.db", env = "RETAIL_SYNC_STATE")]
    pub state: PathBuf,
}

#[derive(clap::Args, Clone, Copy)]
pub struct OutputArgs {
    /// `table` for people, `json` (one object per line) for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
    /// Same as `-o json`.
    #[arg(long, hide = true)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl OutputArgs {
    pub fn json(self) -> bool {
        self.json || self.output == Output::Json
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run on this machine, no cloud.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Bad input and permanent refusals: list, show, retry after a fix.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Dead-letter queues: messages that exhausted their deliveries.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// One business transaction's saga: its timeline, and a retry of a refused step after a fix.
    #[command(subcommand)]
    Saga(SagaCommand),
    /// Puts the archived channel events of a window on the channel bus again (every step is
    /// idempotent: what was processed is recognised).
    Replay {
        /// Start of the window (RFC 3339, e.g. 2026-11-26T08:00:00Z), inclusive.
        #[arg(long)]
        from: jiff::Timestamp,
        /// End of the window, exclusive.
        #[arg(long)]
        to: jiff::Timestamp,
        /// Only this detail-type (embedded backend; EventBridge replays a window whole).
        #[arg(long)]
        detail_type: Option<String>,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Checks a window's books: the sagas against the ERP's documents and the loyalty platform's
    /// ledger, with totals per day, store, channel and currency and every difference classified. Exit
    /// code 0 when the books agree, 1 when differences remain.
    Reconcile {
        /// Start of the window (RFC 3339), inclusive; default: the start of yesterday (UTC).
        #[arg(long, requires = "to")]
        from: Option<jiff::Timestamp>,
        /// End of the window, exclusive; default: the start of today (UTC).
        #[arg(long, requires = "from")]
        to: Option<jiff::Timestamp>,
        /// Repair the safe differences (a missing accrual or reversal is made again, once).
        #[arg(long)]
        repair: bool,
        /// With --repair: list the repairs, change nothing.
        #[arg(long, requires = "repair")]
        dry_run: bool,
        /// Put a ReconciliationMismatch event on the internal bus for each difference left.
        #[arg(long)]
        announce: bool,
        /// A running saga with an unfinished effect is stuck after this long without a change.
        #[arg(long, default_value = "2h")]
        stuck_after: jiff::SignedDuration,
        /// How many points make one major unit of currency (the liability's value).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        points_per_major: i64,
        /// Also write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Members: a record and its timeline, merges of duplicates, erasures.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Points held pending for their sale's return window.
    #[command(subcommand)]
    Points(PointsCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum PointsCommand {
    /// What the scheduled confirm-points function does: confirms every pending accrual whose return
    /// window has ended, once. Exit code 1 when a confirmation failed (run it again).
    Confirm {
        /// Confirm as of this instant (RFC 3339) instead of now: e.g. to settle a past local run's days.
        #[arg(long)]
        now: Option<jiff::Timestamp>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// retail-sync's record of a member (attributes with their sources, consent history, what each
    /// system was told) and its timeline. Personal data is shown only with --json.
    Show {
        member_id: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Suspected duplicate members not merged yet: each member, whom they are suspected of being, and
    /// on what (from the duplicate index; no personal data).
    Duplicates {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Moves the duplicate's points and history to the survivor and closes the duplicate: a
    /// MemberMergeRequested (source retail.operator) on the channel bus, applied once by sync-member.
    Merge {
        #[arg(long)]
        survivor: String,
        #[arg(long)]
        duplicate: String,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Erases a member's personal data in every system and in retail-sync's records: an
    /// ErasureRequested (source retail.operator) on the channel bus.
    Erase {
        member_id: String,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Process events (a .json/.jsonl file or a directory of them) on the embedded backend with the
    /// reference ERP and loyalty simulators, until every queue is drained.
    // An option given again replaces the earlier one: `scripts/run-local.sh` passes `--report` and
    // `--fresh` before the caller's own arguments, which must win rather than be refused.
    #[command(args_override_self = true)]
    Run {
        /// Without one, the run processes what is queued (e.g. an operator's `members merge`).
        input: Option<PathBuf>,
        /// Also write the outcome as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Start from empty state instead of resuming the last run.
        #[arg(long)]
        fresh: bool,
        /// No progress bar (the summary is still printed).
        #[arg(long)]
        quiet: bool,
        /// The ERP connector's dialect: `system-api` (the reference ERP, in-process) or `sap-s4hana`
        /// (the SAP connector against the SAP simulator; mapping `infra/connectors/sap-s4hana.json`
        /// unless ERP_SAP_MAPPING_FILE names another).
        #[arg(long, env = "ERP_KIND", default_value = "system-api", value_parser = commands::parse_erp_kind)]
        erp_kind: retail_sync_connectors::ErpKind,
        /// The loyalty connector's dialect: `system-api` or `salesforce-loyalty` (the Salesforce
        /// connector against the Salesforce simulator; mapping `infra/connectors/salesforce-loyalty.json`
        /// unless LOYALTY_SALESFORCE_MAPPING_FILE names another).
        #[arg(long, env = "LOYALTY_KIND", default_value = "system-api", value_parser = commands::parse_loyalty_kind)]
        loyalty_kind: retail_sync_connectors::LoyaltyKind,
        #[command(flatten)]
        state: StateArgs,
    },
    /// A generated day (POS sales, orders with redemptions, shipments, cancellations, returns,
    /// duplicates, poison) run under injected faults, then the books checked against a model recomputed
    /// from the day. Exit code 0 only when they balance.
    Chaos(ChaosArgs),
}

#[derive(clap::Args, Clone)]
pub struct ChaosArgs {
    /// Inbound events in the day (duplicates and poison included).
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// The same seed and size generate the same day and the same fault draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of events delivered twice (the same event id).
    #[arg(long, default_value_t = 0.07)]
    pub duplicates: f64,
    /// Share of transactions whose every event is sent again under new event ids.
    #[arg(long, default_value_t = 0.03)]
    pub resends: f64,
    /// Share of poison messages (bad input) in the day.
    #[arg(long, default_value_t = 0.005)]
    pub poison: f64,
    /// Share of ERP and loyalty calls answered 503.
    #[arg(long, default_value_t = 0.05)]
    pub error_rate: f64,
    /// Share answered 429 with `Retry-After: --retry-after-ms`.
    #[arg(long, default_value_t = 0.005)]
    pub throttle_rate: f64,
    #[arg(long, default_value_t = 2_000)]
    pub retry_after_ms: u64,
    /// Share not applied and never answered.
    #[arg(long, default_value_t = 0.005)]
    pub timeout_rate: f64,
    /// Share applied, then never answered.
    #[arg(long, default_value_t = 0.01)]
    pub timeout_after_commit_rate: f64,
    /// Share of calls delayed by `--spike-ms`.
    #[arg(long, default_value_t = 0.01)]
    pub spike_rate: f64,
    #[arg(long, default_value_t = 20)]
    pub spike_ms: u64,
    /// Share of processed messages whose acknowledgement is lost (a crash between the effect and the
    /// ack): they come back after the visibility timeout.
    #[arg(long, default_value_t = 0.01)]
    pub ack_loss_rate: f64,
    /// Seconds of one outage of each downstream (0: none).
    #[arg(long, default_value_t = 60)]
    pub outage_secs: u64,
    /// When the ERP's outage starts, seconds into the run (loyalty's starts half an outage later).
    #[arg(long, default_value_t = 2)]
    pub outage_at_secs: u64,
    /// No faults at all (the control run); the day keeps its duplicates and poison.
    #[arg(long)]
    pub no_faults: bool,
    /// Start from empty state instead of resuming a killed run of the same day.
    #[arg(long)]
    pub fresh: bool,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
    /// The SAM template the wiring is read from.
    #[arg(long, default_value = "infra/template.yaml", env = "RETAIL_SYNC_TEMPLATE")]
    pub template: PathBuf,
    /// The embedded backend's state file (not the local run's).
    #[arg(long, default_value = ".retail-sync/chaos.db")]
    pub state: PathBuf,
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Quarantined messages, newest first, with their reasons.
    List {
        /// A reason code, e.g. `schema_violation`, `erp_rejected`.
        #[arg(long, value_parser = commands::parse_quarantine_reason)]
        reason: Option<String>,
        /// A step, e.g. `ingest`, `post-sale-to-erp`.
        #[arg(long, value_parser = commands::parse_step)]
        step: Option<String>,
        #[arg(long)]
        correlation_id: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = commands::parse_limit)]
        limit: usize,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// One entry: its reason, findings and the message as received.
    Show {
        id: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Attempts a refused step again once its cause is fixed in the ERP or the loyalty platform.
    Retry {
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(clap::Args, Clone)]
pub struct DlqFilterArgs {
    /// `waiting_for_saga`, `saga_running`, `saga_failed`, … (see `dlq show`).
    #[arg(long, value_parser = commands::parse_dlq_reason)]
    pub reason: Option<String>,
    #[arg(long)]
    pub detail_type: Option<String>,
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Only messages first sent at least this long ago: `90s`, `30m`, `2h`, `1d`.
    #[arg(long, value_parser = commands::parse_age)]
    pub older_than: Option<std::time::Duration>,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Every DLQ of the template: depth and the age of its oldest message.
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// A DLQ's messages without taking them, grouped by reason, detail-type and age.
    Show {
        /// The DLQ's logical id in the template, e.g. PostSaleToErpDLQ.
        dlq: String,
        /// One message: its body, receive count and its saga's timeline.
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Moves messages back to the queue the DLQ serves (after fixing the cause).
    Redrive {
        dlq: String,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Move at most this many (at least 1).
        #[arg(long, value_parser = commands::parse_limit)]
        limit: Option<usize>,
        /// At most this many messages a second: `10` or `10/s`.
        #[arg(long, value_parser = commands::parse_rate)]
        rate: Option<u32>,
        /// Say what would move, move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand)]
enum SagaCommand {
    /// The saga and its timeline.
    Show {
        /// A correlation id or a saga id (`receipt:<store>:<receipt>`, `order:<id>`).
        id: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Attempts the refused step again (the one that failed, or `--step`) once its cause is fixed.
    Retry {
        id: String,
        #[arg(long, value_parser = commands::parse_step)]
        step: Option<String>,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// End-to-end sale sagas per second on the embedded backend with in-process simulators.
    Local {
        #[arg(long, default_value_t = 20_000)]
        sagas: usize,
        #[command(flatten)]
        state: StateArgs,
    },
    /// The redemption API's overhead at checkout over the loyalty platform's own latency (p50/p99 of
    /// warm hold and release requests, idempotency write included), embedded backend.
    Api {
        #[arg(long, default_value_t = 5_000)]
        requests: usize,
        /// How long each loyalty platform call takes (the in-process simulator answers at once).
        #[arg(long, default_value_t = 0)]
        platform_latency_ms: u64,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Each Lambda function's cold start: process start to its first runtime API poll, and its peak
    /// memory then, against a listener playing the runtime API (no cloud). Build the functions first
    /// (`cargo build --release -p <function>` …).
    ColdStart {
        /// Where the function binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// The functions (binary names); default: every one under `functions/`.
        #[arg(long, value_delimiter = ',')]
        functions: Vec<String>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The root CA bundle the functions load (SSL_CERT_FILE, as the template's CaBundleFile sets
        /// it); default: this machine's one-file bundle.
        #[arg(long, conflicts_with = "no_ca_bundle")]
        ca_bundle: Option<PathBuf>,
        /// No SSL_CERT_FILE: the platform's search for root CAs (what an empty CaBundleFile gives).
        #[arg(long)]
        no_ca_bundle: bool,
    },
    /// AWS API requests per sale saga, counted on an emulator (moto server): the AWS backend provisioned
    /// from the template, the steps polled locally. With --cost, also what a sale saga and an ecommerce
    /// order with a return cost per million, at the list prices of infra/aws-prices.json.
    Aws {
        #[arg(long, default_value_t = 200)]
        sagas: usize,
        /// Meter the billed units (request units, events, SQS requests, Lambda time) and price them.
        #[arg(long)]
        cost: bool,
        /// Replaces the template's BatchSize of every event source mapping (1 to 10): `1` is a
        /// trickle of sales, where each message is a batch of its own.
        #[arg(long)]
        batch_size: Option<usize>,
        /// The emulator; without it a moto server from .tools/ is started for the run.
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        endpoint_url: Option<String>,
        #[arg(long, default_value = "infra/template.yaml")]
        template: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    commands::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Local(LocalCommand::Run {
                input,
                report,
                fresh,
                quiet,
                erp_kind,
                loyalty_kind,
                state,
            }) => {
                let kinds = retail_sync_cli::local::Kinds {
                    erp: erp_kind,
                    loyalty: loyalty_kind,
                };
                commands::local_run(input.as_deref(), report.as_deref(), fresh, quiet, kinds, &state).await
            }
            Command::Local(LocalCommand::Chaos(args)) => commands::local_chaos(&args).await,
            Command::Quarantine(QuarantineCommand::List {
                reason,
                step,
                correlation_id,
                limit,
                output,
                target,
            }) => {
                let filter = retail_sync_cli::ops::QuarantineFilter {
                    reason,
                    step,
                    correlation_id,
                };
                commands::quarantine_list(&filter, limit, output, &target).await
            }
            Command::Quarantine(QuarantineCommand::Show { id, output, target }) => {
                commands::quarantine_show(&id, output, &target).await
            }
            Command::Quarantine(QuarantineCommand::Retry { id, yes, target }) => {
                commands::quarantine_retry(&id, yes, &target).await
            }
            Command::Dlq(DlqCommand::List { output, target }) => commands::dlq_list(output, &target).await,
            Command::Dlq(DlqCommand::Show {
                dlq,
                message,
                output,
                target,
            }) => commands::dlq_show(&dlq, message.as_deref(), output, &target).await,
            Command::Dlq(DlqCommand::Redrive {
                dlq,
                filter,
                limit,
                rate,
                dry_run,
                yes,
                output,
                target,
            }) => commands::dlq_redrive(&dlq, filter, limit, rate, dry_run, yes, output, &target).await,
            Command::Replay {
                from,
                to,
                detail_type,
                yes,
                target,
            } => commands::replay(from, to, detail_type.as_deref(), yes, &target).await,
            Command::Reconcile {
                from,
                to,
                repair,
                dry_run,
                announce,
                stuck_after,
                points_per_major,
                report,
                output,
                target,
            } => {
                let mode = match (repair, dry_run) {
                    (false, _) => RepairMode::Off,
                    (true, true) => RepairMode::DryRun,
                    (true, false) => RepairMode::Apply,
                };
                let settings = Settings {
                    stuck_after,
                    points_per_major,
                };
                commands::reconcile(from, to, mode, announce, settings, report, output, &target).await
            }
            Command::Points(PointsCommand::Confirm { now, output, target }) => {
                commands::points_confirm(now, output, &target).await
            }
            Command::Saga(SagaCommand::Show { id, output, target }) => {
                commands::saga_show(&id, output, &target).await
            }
            Command::Saga(SagaCommand::Retry {
                id,
                step,
                yes,
                target,
            }) => commands::saga_retry(&id, step.as_deref(), yes, &target).await,
            Command::Members(MembersCommand::Show {
                member_id,
                output,
                target,
            }) => commands::member_show(&member_id, output, &target).await,
            Command::Members(MembersCommand::Duplicates { output, target }) => {
                commands::member_duplicates(output, &target).await
            }
            Command::Members(MembersCommand::Merge {
                survivor,
                duplicate,
                yes,
                target,
            }) => commands::member_merge(&survivor, &duplicate, yes, &target).await,
            Command::Members(MembersCommand::Erase {
                member_id,
                yes,
                target,
            }) => commands::member_erase(&member_id, yes, &target).await,
            Command::Bench(BenchCommand::Local { sagas, state }) => {
                commands::bench_local(sagas, &state).await
            }
            Command::Bench(BenchCommand::Api {
                requests,
                platform_latency_ms,
                state,
            }) => commands::bench_api(requests, platform_latency_ms, &state).await,
            Command::Bench(BenchCommand::ColdStart {
                bin_dir,
                functions,
                runs,
                ca_bundle,
                no_ca_bundle,
            }) => commands::bench_cold_start(&bin_dir, functions, runs, ca_bundle, no_ca_bundle).await,
            Command::Bench(BenchCommand::Aws {
                cost,
                sagas,
                batch_size,
                endpoint_url,
                template,
            }) => commands::bench_aws(sagas, cost, batch_size, endpoint_url.as_deref(), &template).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(e.as_ref()));
            commands::exit_code(&e)
        }
    }
}
