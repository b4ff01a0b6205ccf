//! What each subcommand does, in terms of the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use jiff::Timestamp;
use retail_sync_cli::bench;
use retail_sync_cli::input::read_inputs;
use retail_sync_cli::local::{Kinds, LocalOptions, Simulators, open_embedded};
use retail_sync_cli::ops::{self, DlqFilter, OpsError, QuarantineFilter};
use retail_sync_cli::target::{self, BackendKind, TargetArgs};
use retail_sync_connectors::{ErpKind, LoyaltyKind};
use retail_sync_contracts::values::MemberId;
use retail_sync_core::reconcile::{RepairMode, Settings, Window};

use crate::{ChaosArgs, OutputArgs, StateArgs};

/// Logs go to stderr, errors only unless `RUST_LOG` asks for more: the progress bar and the summary
/// are the CLI's output.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The progress bar of the local runs (hidden with `--quiet`).
fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} messages {msg}")
            .expect("a valid template"),
    );
    bar
}

/// Makes the directory a report will be written to and opens the file for writing, before the work it
/// reports on: a path that cannot be written (a directory, a read-only file, a place this user may not
/// write) is refused at once, not after a long run has changed the state. The file is left as it was: a
/// file this check made is removed again, an existing one is opened without truncating it.
fn check_report_path(path: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("cannot write the report to {}", path.display()))?;
    if !existed {
        // Only an empty file this check made; failing to remove it leaves an empty report behind.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Writes a report as pretty JSON (its path checked by [`check_report_path`]). Written before the summary is
/// printed, so a reader of the summary that goes away early does not cost the report.
fn write_report(path: &Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    check_report_path(Some(path))?;
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

fn options(state: &StateArgs) -> LocalOptions {
    LocalOptions::new(state.template.clone(), state.state.clone())
}

/// `--erp-kind` (or `ERP_KIND`): a name no connector has is a usage error (exit 2) listing the names.
pub fn parse_erp_kind(text: &str) -> Result<ErpKind, String> {
    ErpKind::from_lookup(|_| Some(text.to_owned())).map_err(|e| e.to_string())
}

/// `--loyalty-kind` (or `LOYALTY_KIND`), as [`parse_erp_kind`].
pub fn parse_loyalty_kind(text: &str) -> Result<LoyaltyKind, String> {
    LoyaltyKind::from_lookup(|_| Some(text.to_owned())).map_err(|e| e.to_string())
}

/// `--step` of a retry: one of the steps (a usage error otherwise, exit 2).
pub fn parse_step(text: &str) -> Result<String, String> {
    if retail_sync_core::steps::STEPS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a step; the steps are {}",
            retail_sync_core::steps::STEPS.join(", ")
        ))
    }
}

pub async fn local_run(
    input: Option<&Path>,
    report_path: Option<&Path>,
    fresh: bool,
    quiet: bool,
    kinds: Kinds,
    state: &StateArgs,
) -> anyhow::Result<ExitCode> {
    let inputs = match input {
        Some(input) => read_inputs(input)?,
        None => Vec::new(),
    };
    check_report_path(report_path)?;
    let mut opts = options(state);
    opts.fresh = fresh;
    let simulators = Simulators::with_sample_members()
        .speaking(kinds, &connector_mappings(&opts))
        .await?;
    let system = open_embedded(&opts, simulators)?;
    if kinds != Kinds::default() {
        outln!(
            "ERP: {} · loyalty: {} (the connectors against the simulators' dialects)",
            kinds.erp.name(),
            kinds.loyalty.name()
        );
    }
    let started = Instant::now();
    let fed = system.feed(&inputs).await?;

    let bar = progress_bar(quiet);
    let progress = system
        .run_until_idle(|p| {
            bar.set_length(p.handled + p.pending);
            bar.set_position(p.handled);
        })
        .await?;
    bar.finish_with_message("done");
    let elapsed = started.elapsed();

    let report = system.report(fed).await?;
    if let Some(path) = report_path {
        write_report(path, &report)?;
    }
    outln!("{}", report.render());
    outln!(
        "{} messages handled in {:.2}s; state in {} (inspect with `retail-sync quarantine list`, `dlq list`, `saga show <id>`)",
        progress.handled,
        elapsed.as_secs_f64(),
        state.state.display()
    );
    if let Some(path) = report_path {
        outln!("report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn local_chaos(args: &ChaosArgs) -> anyhow::Result<ExitCode> {
    use retail_sync_cli::chaos::{self, FaultMix, Mix};
    for (name, rate) in [
        ("--duplicates", args.duplicates),
        ("--resends", args.resends),
        ("--poison", args.poison),
        ("--error-rate", args.error_rate),
        ("--throttle-rate", args.throttle_rate),
        ("--timeout-rate", args.timeout_rate),
        ("--timeout-after-commit-rate", args.timeout_after_commit_rate),
        ("--spike-rate", args.spike_rate),
        ("--ack-loss-rate", args.ack_loss_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            bail!("{name} must be a share within 0..=1, got {rate}");
        }
    }
    let day = chaos::generate(
        args.events,
        args.seed,
        Mix {
            duplicate_rate: args.duplicates,
            resend_rate: args.resends,
            poison_rate: args.poison,
        },
    );
    let faults = if args.no_faults {
        FaultMix::none()
    } else {
        FaultMix {
            error_rate: args.error_rate,
            throttle_rate: args.throttle_rate,
            retry_after_ms: args.retry_after_ms,
            timeout_rate: args.timeout_rate,
            timeout_after_commit_rate: args.timeout_after_commit_rate,
            spike_rate: args.spike_rate,
            spike_ms: args.spike_ms,
            ack_loss_rate: args.ack_loss_rate,
            outage: Duration::from_secs(args.outage_secs),
            outage_at: Duration::from_secs(args.outage_at_secs),
        }
    };
    check_report_path(args.report.as_deref())?;
    let mut options = LocalOptions::new(args.template.clone(), args.state.clone());
    options.fresh = args.fresh;
    if args.fresh {
        let _ = std::fs::remove_file(chaos::fed_marker(&args.state));
    }
    let system = open_embedded(&options, chaos::simulators(&day.plan))?;
    let bar = progress_bar(args.quiet);
    let report = chaos::run(system, &day, args.seed, faults, Some(&args.state), |phase, p| {
        bar.set_message(phase.to_owned());
        bar.set_length(p.handled + p.pending);
        bar.set_position(p.handled);
    })
    .await?;
    bar.finish_and_clear();
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    out!("{}", report.summary());
    Ok(if report.verdict.balanced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Exit codes: 0 done, 1 failure (or refused), 2 usage (clap's), 3 not found.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<OpsError>() {
        Some(OpsError::NotFound(_)) => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

/// `90s`, `30m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not an age such as 90s, 30m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// `10` or `10/s`: messages a second, at least 1.
pub fn parse_rate(text: &str) -> Result<u32, String> {
    let trimmed = text.trim();
    let digits = trimmed.strip_suffix("/s").unwrap_or(trimmed);
    match digits.parse::<u32>() {
        Ok(0) => Err("the rate is at least 1 message a second".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{text:?} is not a rate such as 10 or 10/s (messages a second)"
        )),
    }
}

/// A `--limit`: a whole number, at least 1 (0 would select nothing, without a word).
pub fn parse_limit(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("the limit is at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number of messages")),
    }
}

/// A dead letter's reason as `dlq show` gives it; anything else would select nothing.
pub fn parse_dlq_reason(text: &str) -> Result<String, String> {
    one_of(text, &ops::dlq_reasons(), "no dead letter has the reason")
}

/// A quarantine reason code; anything else would list nothing.
pub fn parse_quarantine_reason(text: &str) -> Result<String, String> {
    use retail_sync_contracts::events::ReasonCode;
    let known: Vec<String> = ReasonCode::ALL.iter().map(|r| r.as_str().to_owned()).collect();
    one_of(text, &known, "no reason code")
}

/// `text` if it is one of `known`; else the refusal `<refused> "<text>" (one of …)`.
fn one_of(text: &str, known: &[String], refused: &str) -> Result<String, String> {
    if known.iter().any(|k| k == text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{refused} {text:?} (one of {})", known.join(", ")))
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Asks before a change, unless `--yes`; without a terminal to ask on, `--yes` is required.
fn confirm(yes: bool, what: &str) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{what}: pass --yes to confirm (no terminal to ask on)");
    }
    eprint!("{what}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn ago(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

pub async fn quarantine_list(
    filter: &QuarantineFilter,
    limit: usize,
    output: OutputArgs,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let listing = ops::quarantine_list(&*t.backend, filter, limit).await?;
    for item in &listing.items {
        if output.json() {
            print_json(item)?;
        } else {
            outln!(
                "{}  {:<34} {:<18} {:<24} {:<28} {}",
                item.received_at,
                item.id,
                item.step,
                item.rejection.reason.as_str(),
                item.rejection.correlation_id.as_deref().unwrap_or("-"),
                item.rejection.message
            );
        }
    }
    if !output.json() {
        let shown = listing.items.len();
        if shown < listing.matched {
            eprintln!("{shown} of {} quarantined (--limit to see more)", listing.matched);
        } else {
            eprintln!("{shown} quarantined");
        }
    }
    if listing.capped {
        // On stderr in both formats: a script reading JSON lines is told too, without a line to skip.
        eprintln!(
            "note: only {} entries of the quarantine were read; it holds more, and the newest may be among \
             those not read (a local run's report lists them all)",
            ops::QUARANTINE_SCAN
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn quarantine_show(id: &str, output: OutputArgs, target: &TargetArgs) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let item = ops::quarantine_item(&*t.backend, id).await?;
    if output.json() {
        print_json(&item)?;
    } else {
        outln!("{}", serde_json::to_string_pretty(&item)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn quarantine_retry(id: &str, yes: bool, target: &TargetArgs) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let item = ops::quarantine_item(&*t.backend, id).await?;
    if !confirm(yes, &format!("retry {} of {}", item.step, id))? {
        return Ok(ExitCode::FAILURE);
    }
    let r = ops::retry_item(&*t.backend, &t.topology, &item, Timestamp::now()).await?;
    print_retried(&r);
    Ok(ExitCode::SUCCESS)
}

fn print_retried(r: &ops::Retried) {
    let what = if r.resent {
        "was recorded before; its message sent again to"
    } else {
        "recorded, its message sent to"
    };
    outln!(
        "{} of saga {}: attempt {} {what} {}; the step runs it exactly once",
        r.step,
        r.saga,
        r.attempt,
        r.queue
    );
}

pub async fn dlq_list(output: OutputArgs, target: &TargetArgs) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    for d in ops::dlq_list(&*t.backend, &t.topology, Timestamp::now()).await? {
        if output.json() {
            print_json(&d)?;
        } else {
            let oldest = d.oldest_age_seconds.map_or("-".to_owned(), ago);
            outln!(
                "{}: {} messages  oldest {oldest}  (serves {})",
                d.dlq,
                d.messages,
                d.source
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq_show(
    dlq: &str,
    message: Option<&str>,
    output: OutputArgs,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let letters = ops::dlq_show(&*t.backend, &t.topology, dlq, Timestamp::now()).await?;
    if let Some(id) = message {
        let Some((view, letter, saga)) = letters.into_iter().find(|(v, _, _)| v.id == id) else {
            return Err(OpsError::NotFound(format!("no message {id} in {dlq}")).into());
        };
        let body: serde_json::Value =
            serde_json::from_str(&letter.body).unwrap_or(serde_json::Value::String(letter.body.clone()));
        let shown = serde_json::json!({"message": view, "body": body, "saga": saga});
        if output.json() {
            print_json(&shown)?;
        } else {
            outln!("{}", serde_json::to_string_pretty(&shown)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if output.json() {
        for (view, _, _) in &letters {
            print_json(view)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bucket = |s: i64| match s {
        s if s < 3_600 => "< 1h",
        s if s < 86_400 => "< 1d",
        _ => ">= 1d",
    };
    let mut groups: std::collections::BTreeMap<(String, String, &str), usize> = Default::default();
    for (v, _, _) in &letters {
        let key = (
            v.reason.clone(),
            v.detail_type.clone().unwrap_or_else(|| "-".into()),
            bucket(v.age_seconds),
        );
        *groups.entry(key).or_default() += 1;
    }
    outln!("{dlq}: {} messages", letters.len());
    outln!(
        "  {:<20} {:<22} {:<6} {:>5}",
        "reason",
        "detail-type",
        "age",
        "count"
    );
    for ((reason, detail_type, age), n) in &groups {
        outln!("  {reason:<20} {detail_type:<22} {age:<6} {n:>5}");
    }
    for (v, _, _) in &letters {
        outln!(
            "  {}  {:<20} {:<22} {:<28} received {}x, {} ago",
            v.id,
            v.reason,
            v.detail_type.as_deref().unwrap_or("-"),
            v.correlation_id.as_deref().unwrap_or("-"),
            v.receive_count,
            ago(v.age_seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)] // one per flag of the command
pub async fn dlq_redrive(
    dlq: &str,
    filter: crate::DlqFilterArgs,
    limit: Option<usize>,
    rate: Option<u32>,
    dry_run: bool,
    yes: bool,
    output: OutputArgs,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let filter = DlqFilter {
        reason: filter.reason,
        detail_type: filter.detail_type,
        correlation_id: filter.correlation_id,
        older_than: filter.older_than,
    };
    let options = ops::RedriveOptions {
        limit: limit.unwrap_or(usize::MAX),
        dry_run,
        rate,
    };
    // The selection is shown and confirmed; the move takes exactly it (everything when nothing narrows it).
    let preview = ops::dlq_select(
        &*t.backend,
        &t.topology,
        dlq,
        &filter,
        options.limit,
        Timestamp::now(),
    )
    .await?;
    let outcome = if dry_run || preview.selected.is_empty() {
        preview
    } else {
        let (n, to) = (preview.selected.len(), &preview.to);
        let what = if options.takes_everything(&filter) {
            format!("move every message of {dlq} ({n} seen) back to {to}")
        } else {
            format!("move {n} messages from {dlq} back to {to}")
        };
        if !confirm(yes, &what)? {
            return Ok(ExitCode::FAILURE);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_message(what);
        bar.enable_steady_tick(Duration::from_millis(200));
        let moved = ops::dlq_move(&*t.backend, &preview, &filter, options).await?;
        bar.finish_and_clear();
        ops::Redrive { moved, ..preview }
    };
    if output.json() {
        print_json(&outcome)?;
    } else {
        let verb = if dry_run { "would move" } else { "moved" };
        let count = if dry_run {
            outcome.selected.len()
        } else {
            outcome.moved
        };
        outln!(
            "{count} messages {verb} from {} back to {}",
            outcome.dlq,
            outcome.to
        );
        for v in &outcome.selected {
            outln!(
                "  {}  {:<20} {:<22} {}",
                v.id,
                v.reason,
                v.detail_type.as_deref().unwrap_or("-"),
                v.correlation_id.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn replay(
    from: Timestamp,
    to: Timestamp,
    detail_type: Option<&str>,
    yes: bool,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    if from >= to {
        bail!("--from {from} is not before --to {to}");
    }
    let t = target::open(target).await?;
    if let Some(wanted) = detail_type {
        // A type the archive does not keep would replay nothing: a typo, or an event that is not a
        // channel's transaction.
        let kept: Vec<&str> = t
            .topology
            .archives
            .first()
            .and_then(|a| a.pattern.as_json()["detail-type"].as_array())
            .map(|types| types.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        if !kept.is_empty() && !kept.contains(&wanted) {
            bail!(
                "the archive keeps no {wanted} events (it keeps {})",
                kept.join(", ")
            );
        }
    }
    if !confirm(yes, &format!("replay the channel events of {from} to {to}"))? {
        return Ok(ExitCode::FAILURE);
    }
    outln!("{}", t.backend.replay(from, to, detail_type).await?);
    outln!("run the steps (`retail-sync local run` on the embedded backend; on AWS they run by themselves)");
    Ok(ExitCode::SUCCESS)
}

/// Where the connectors' sample mapping files are: `connectors/` beside the template.
fn connector_mappings(options: &LocalOptions) -> PathBuf {
    options
        .template
        .parent()
        .unwrap_or(Path::new("."))
        .join("connectors")
}

/// The options of an existing local state (an operator command on what `local run` left).
fn local_options(target: &TargetArgs) -> anyhow::Result<LocalOptions> {
    target::require_state(&target.state)?;
    Ok(LocalOptions::new(target.template.clone(), target.state.clone()))
}

/// The local state's system, with the reference simulators where `local run` left them: what an
/// operator command that calls the systems works on locally.
fn local_system(
    target: &TargetArgs,
) -> anyhow::Result<retail_sync_cli::local::LocalSystem<retail_sync_embedded::Embedded>> {
    open_embedded(&local_options(target)?, Simulators::with_sample_members())
}

#[allow(clippy::too_many_arguments)]
pub async fn reconcile(
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    mode: RepairMode,
    announce: bool,
    settings: Settings,
    report: Option<PathBuf>,
    output: OutputArgs,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let window = match (from, to) {
        (None, None) => Window::day_before(Timestamp::now()),
        (Some(from), Some(to)) => Window::new(from, to).map_err(anyhow::Error::msg)?,
        _ => bail!("name both ends of the window (--from and --to), or neither for yesterday (UTC)"),
    };
    check_report_path(report.as_deref())?;
    let result = match target.backend {
        BackendKind::Embedded => {
            // The books as the run's connectors read them: ERP_KIND / LOYALTY_KIND as `local run` took
            // them (the SAP and Salesforce simulators' state is rebuilt from the replayed journals).
            let options = local_options(target)?;
            let simulators = Simulators::with_sample_members()
                .speaking(Kinds::from_env()?, &connector_mappings(&options))
                .await?;
            open_embedded(&options, simulators)?
                .reconcile(window, settings, mode, announce)
                .await?
        }
        BackendKind::Aws => {
            // The systems as the deployment's functions reach them: the connectors' settings and
            // credentials from this environment (ERP_*, LOYALTY_*), as the reconcile function reads its own.
            let t = target::open(target).await?;
            let systems = retail_sync_lambda::reconcile::Systems::from_env(
                &aws_sdk_secretsmanager::Client::new(t.sdk()?),
            )?;
            let sagas = t.backend.all_sagas().await?;
            let publisher: &dyn retail_sync_core::ports::Publisher = t.backend.as_ref();
            retail_sync_lambda::reconcile::reconcile_with(
                &systems,
                window,
                settings,
                mode,
                &sagas,
                t.backend.as_ref(),
                announce.then_some(publisher),
                &retail_sync_core::ports::NoMetrics,
            )
            .await?
        }
    };
    if let Some(path) = &report {
        write_report(path, &result)?;
    }
    if output.json() {
        outln!("{}", serde_json::to_string(&result)?);
    } else {
        out!("{}", retail_sync_core::reconcile::render(&result));
    }
    Ok(if result.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn points_confirm(
    now: Option<Timestamp>,
    output: OutputArgs,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let now = now.unwrap_or_else(Timestamp::now);
    let done = match target.backend {
        BackendKind::Embedded => local_system(target)?.confirm_points(now).await?,
        BackendKind::Aws => {
            let t = target::open(target).await?;
            let loyalty = retail_sync_lambda::confirm::loyalty_from_env(
                &aws_sdk_secretsmanager::Client::new(t.sdk()?),
            )?;
            let sagas = t.backend.all_sagas().await?;
            retail_sync_core::settlement::confirm_due(
                &sagas,
                loyalty.as_ref(),
                t.backend.as_ref(),
                &retail_sync_core::ports::NoMetrics,
                now,
            )
            .await
        }
    };
    if output.json() {
        outln!("{}", serde_json::to_string(&done)?);
    } else {
        outln!(
            "confirmed {} pending accruals ({} points); {} still in their return window; {} failed",
            done.accruals,
            done.points,
            done.waiting,
            done.failed.len()
        );
        for (saga, message) in &done.failed {
            outln!("  {saga}: {message}");
        }
    }
    Ok(if done.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn member_show(
    member_id: &str,
    output: OutputArgs,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let member = MemberId::parse(member_id).map_err(|e| anyhow::anyhow!("{member_id:?}: {e}"))?;
    let t = target::open(target).await?;
    // A member's record is a saga under the hood; the operator asked for a member.
    let saga = match ops::saga(
        &*t.backend,
        retail_sync_core::members::record_id(&member).as_str(),
    )
    .await
    {
        Err(ops::OpsError::NotFound(_)) => {
            return Err(ops::OpsError::NotFound(format!("no member {member}")).into());
        }
        found => found?,
    };
    let Some(retail_sync_core::members::MemberState::Record(record)) = &saga.member else {
        bail!("{} holds no member record", saga.id);
    };
    if output.json() {
        print_json(&serde_json::json!({"record": record, "timeline": saga.steps}))?;
        return Ok(ExitCode::SUCCESS);
    }
    let snapshot = record.snapshot();
    let source = |v: Option<(String, retail_sync_contracts::Channel, jiff::Timestamp)>| {
        v.map_or("-".to_owned(), |(what, by, at)| {
            format!("{what} ({} at {at})", by.as_str())
        })
    };
    outln!(
        "{}  {}  revision {}",
        record.member_id,
        record.status.as_str(),
        record.revision
    );
    outln!(
        "  tier        {}",
        source(
            record
                .tier
                .as_ref()
                .map(|v| (v.value.to_string(), v.source, v.at))
        )
    );
    outln!(
        "  home store  {}",
        source(
            record
                .home_store
                .as_ref()
                .map(|v| (v.value.to_string(), v.source, v.at))
        )
    );
    // What the member said, and whether it is in force: a merged or erased account sends no campaigns
    // whatever it consented to (the systems are told no consent, as the report shows).
    let unused = if record.consent.as_ref().is_some_and(|c| c.value) && !record.consents() {
        format!(" — not in force: the account is {}", record.status.as_str())
    } else {
        String::new()
    };
    outln!(
        "  consent     {}{unused}",
        source(
            record
                .consent
                .as_ref()
                .map(|v| (v.value.to_string(), v.source, v.at))
        )
    );
    // Which personal data is held and from where, never what it is (terminals are logged and shared).
    for (label, v) in [
        ("name", &record.name),
        ("email", &record.email),
        ("phone", &record.phone),
    ] {
        outln!(
            "  {label:<11} {}",
            source(v.as_ref().map(|v| ("held".to_owned(), v.source, v.at)))
        );
    }
    if let Some(into) = &snapshot.merged_into {
        outln!("  merged into {into}");
    }
    let told: Vec<String> = record.synced.iter().map(|(s, r)| format!("{s} r{r}")).collect();
    outln!("  told        {}", told.join(", "));
    for c in &record.consent_history {
        outln!(
            "  consent {:<9} by {:<10} at {}  ({}{})",
            if c.granted { "granted" } else { "withdrawn" },
            c.source.as_str(),
            c.at,
            c.event_id,
            c.by.as_deref().map(|b| format!(", {b}")).unwrap_or_default()
        );
    }
    for e in &saga.steps {
        // Milliseconds, always three digits: the columns line up (`-o json` keeps the full time).
        outln!(
            "  {:.3}  {:<12} {:<8} {}",
            e.at,
            e.step,
            e.outcome.as_str(),
            e.message
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn member_duplicates(output: OutputArgs, target: &TargetArgs) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let mut pairs = Vec::new();
    for saga in t.backend.all_sagas().await? {
        if let Some(retail_sync_core::members::MemberState::Contact(entry)) = &saga.member {
            let on = entry.kind.map_or("contact", |k| k.as_str());
            pairs.extend(entry.suspects().into_iter().map(|(m, of)| (m, of, on)));
        }
    }
    pairs.sort();
    pairs.dedup();
    for (member, of, on) in &pairs {
        if output.json() {
            print_json(
                &serde_json::json!({"member_id": member, "existing_member_id": of, "matched_on": on}),
            )?;
        } else {
            outln!("{member:<16} suspected duplicate of {of:<16} (same {on})");
        }
    }
    if pairs.is_empty() && !output.json() {
        outln!("no suspected duplicates");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn member_merge(
    survivor: &str,
    duplicate: &str,
    yes: bool,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let parse = |m: &str| MemberId::parse(m).map_err(|e| anyhow::anyhow!("{m:?}: {e}"));
    let (survivor, duplicate) = (parse(survivor)?, parse(duplicate)?);
    if survivor == duplicate {
        bail!("cannot merge {duplicate} into itself");
    }
    let data = retail_sync_contracts::events::MemberMergeRequested {
        survivor_id: survivor.clone(),
        duplicate_id: duplicate.clone(),
    };
    let what = format!("merge member {duplicate} into {survivor} (its points move there, once)");
    operator_request(
        "MemberMergeRequested",
        &format!("merge-{duplicate}-into-{survivor}"),
        serde_json::to_value(data)?,
        &what,
        yes,
        target,
    )
    .await
}

pub async fn member_erase(member_id: &str, yes: bool, target: &TargetArgs) -> anyhow::Result<ExitCode> {
    let member = MemberId::parse(member_id).map_err(|e| anyhow::anyhow!("{member_id:?}: {e}"))?;
    let data = retail_sync_contracts::events::ErasureRequested {
        member_id: member.clone(),
    };
    let what = format!("erase the personal data of member {member} everywhere (this cannot be undone)");
    operator_request(
        "ErasureRequested",
        &format!("erase-{member}"),
        serde_json::to_value(data)?,
        &what,
        yes,
        target,
    )
    .await
}

/// Puts an operator's request on the channel bus (source `retail.operator`), as a channel would: ingest
/// validates it and sync-member applies it once.
async fn operator_request(
    detail_type: &str,
    correlation: &str,
    data: serde_json::Value,
    what: &str,
    yes: bool,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    if !confirm(yes, what)? {
        return Ok(ExitCode::FAILURE);
    }
    let now = jiff::Timestamp::now();
    let event_id = format!("op-{}-{}", now.as_nanosecond(), std::process::id());
    let detail = serde_json::json!({
        "metadata": {
            "event_id": event_id,
            "schema_version": 1,
            "correlation_id": correlation,
            "occurred_at": now.to_string(),
            "channel": "operator"
        },
        "data": data
    });
    t.backend
        .put_channel_events(&[("retail.operator".to_owned(), detail_type.to_owned(), detail)])
        .await?;
    outln!("{detail_type} {event_id} put on the channel bus");
    outln!("run the steps (`retail-sync local run` on the embedded backend; on AWS they run by themselves)");
    Ok(ExitCode::SUCCESS)
}

pub async fn saga_show(id: &str, output: OutputArgs, target: &TargetArgs) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let saga = ops::saga(&*t.backend, id).await?;
    if output.json() {
        print_json(&saga)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{}  {}  correlation {}  version {}",
        saga.id,
        saga.status.as_str(),
        saga.correlation_id,
        saga.version
    );
    for e in &saga.steps {
        // Milliseconds, always three digits: the columns line up (`-o json` keeps the full time).
        outln!(
            "  {:.3}  {:<20} {:<9} {}",
            e.at,
            e.step,
            e.outcome.as_str(),
            e.message
        );
    }
    outln!("ledger: {}", serde_json::to_string(&saga.ledger)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn saga_retry(
    id: &str,
    step: Option<&str>,
    yes: bool,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    let t = target::open(target).await?;
    let saga = ops::saga(&*t.backend, id).await?;
    let what = format!("retry {} of saga {}", step.unwrap_or("the refused step"), saga.id);
    if !confirm(yes, &what)? {
        return Ok(ExitCode::FAILURE);
    }
    let r = ops::retry_saga(&*t.backend, &t.topology, id, step, Timestamp::now()).await?;
    print_retried(&r);
    Ok(ExitCode::SUCCESS)
}

pub async fn bench_local(sagas: usize, state: &StateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(sagas > 0, "--sagas must be at least 1");
    let dir = tempfile::tempdir()?;
    let mut opts = options(state);
    opts.state = dir.path().join("bench.db");
    let figures = bench::local(&opts, sagas).await?;
    outln!("{figures}");
    Ok(ExitCode::SUCCESS)
}

pub async fn bench_api(
    requests: usize,
    platform_latency_ms: u64,
    state: &StateArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(requests > 0, "--requests must be at least 1");
    let dir = tempfile::tempdir()?;
    let mut opts = options(state);
    opts.state = dir.path().join("bench-api.db");
    let latency = std::time::Duration::from_millis(platform_latency_ms);
    let figures = bench::api(&opts, requests, latency).await?;
    outln!("{figures}");
    Ok(ExitCode::SUCCESS)
}

pub async fn bench_cold_start(
    bin_dir: &Path,
    functions: Vec<String>,
    runs: usize,
    ca_bundle: Option<PathBuf>,
    no_ca_bundle: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    // Unset: this machine's bundle, as the template sets provided.al2023's.
    let ca_bundle = match ca_bundle {
        _ if no_ca_bundle => None,
        None => bench::platform_ca_bundle(),
        Some(p) => {
            anyhow::ensure!(p.is_file(), "--ca-bundle {}: no such file", p.display());
            Some(p)
        }
    };
    let functions = if functions.is_empty() {
        // Every function of the workspace: the directories under functions/, each its binary's name.
        let mut names: Vec<String> = std::fs::read_dir("functions")
            .context("functions/ not found: run from the repository's root or name --functions")?
            .filter_map(Result::ok)
            .filter(|e| e.path().join("Cargo.toml").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    } else {
        functions
    };
    let figures = bench::cold_start(bin_dir, &functions, runs, ca_bundle.as_deref()).await?;
    outln!("{figures}");
    Ok(if figures.functions.iter().any(|f| f.failed.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn bench_aws(
    sagas: usize,
    cost: bool,
    batch_size: Option<usize>,
    endpoint: Option<&str>,
    template: &Path,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(sagas > 0, "--sagas must be at least 1");
    let batch_size = batch_size.map(bench::BatchSize::new).transpose()?;
    // Started here only when no endpoint is given; stopped when it drops at the end.
    let moto = endpoint
        .is_none()
        .then(retail_sync_testkit::moto::MotoServer::start);
    let endpoint = endpoint
        .or(moto.as_ref().map(|m| m.endpoint()))
        .expect("one of the two is set");
    let figures = bench::aws(template, endpoint, sagas, cost, batch_size).await?;
    outln!("{figures}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_a_count_a_second_with_or_without_its_unit_and_never_zero() {
        assert_eq!(parse_rate("10"), Ok(10));
        assert_eq!(parse_rate("10/s"), Ok(10));
        assert!(parse_rate("0/s").unwrap_err().contains("at least 1"));
        assert!(parse_rate("10/m").unwrap_err().contains("such as 10 or 10/s"));
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn a_limit_is_a_whole_number_never_zero() {
        assert_eq!(parse_limit("25"), Ok(25));
        assert!(parse_limit("0").unwrap_err().contains("at least 1"));
        assert!(parse_limit("-1").unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn reasons_outside_the_known_sets_are_refused_with_the_set() {
        assert_eq!(parse_dlq_reason("saga_running").as_deref(), Ok("saga_running"));
        assert_eq!(
            parse_dlq_reason("waiting_for_saga").as_deref(),
            Ok("waiting_for_saga")
        );
        assert_eq!(parse_dlq_reason("unreadable").as_deref(), Ok("unreadable"));
        let typo = parse_dlq_reason("saga_runing").unwrap_err();
        assert!(
            typo.contains("saga_running") && typo.contains("saga_cancelled"),
            "{typo}"
        );

        assert_eq!(
            parse_quarantine_reason("erp_rejected").as_deref(),
            Ok("erp_rejected")
        );
        let typo = parse_quarantine_reason("schema_violaton").unwrap_err();
        assert!(typo.contains("schema_violation"), "{typo}");
    }

    #[test]
    fn an_age_has_one_of_four_units() {
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_age("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_age("5x").unwrap_err().contains("the unit is one of"));
        assert!(parse_age("m").is_err());
    }
}
