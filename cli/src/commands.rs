//! What each subcommand does, in terms of the library.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use retail_sync_cli::bench;
use retail_sync_cli::input::read_inputs;
use retail_sync_cli::local::{LocalOptions, Simulators, open_embedded};
use retail_sync_core::ports::{QuarantineStore, SagaStore};
use retail_sync_core::saga::SagaId;
use retail_sync_embedded::{Embedded, Topology};

use crate::StateArgs;

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

fn options(state: &StateArgs) -> LocalOptions {
    LocalOptions::new(state.template.clone(), state.state.clone())
}

/// Opens the state of a previous run for inspection, without running anything.
fn open_state(state: &StateArgs) -> anyhow::Result<Embedded> {
    if !state.state.exists() {
        bail!(
            "no local state at {} (run `retail-sync local run` first, or pass --state)",
            state.state.display()
        );
    }
    let topology = Topology::load(&state.template)?;
    Ok(Embedded::open(
        &state.state,
        topology,
        std::sync::Arc::new(retail_sync_core::ports::SystemClock),
    )?)
}

pub async fn local_run(
    input: &Path,
    report_path: Option<&Path>,
    fresh: bool,
    quiet: bool,
    state: &StateArgs,
) -> anyhow::Result<ExitCode> {
    let inputs = read_inputs(input)?;
    let mut opts = options(state);
    opts.fresh = fresh;
    let system = open_embedded(&opts, Simulators::with_sample_members())?;
    let started = Instant::now();
    let fed = system.feed(&inputs).await?;

    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} messages {msg}")
            .expect("a valid template"),
    );
    let progress = system
        .run_until_idle(|p| {
            bar.set_length(p.handled + p.pending);
            bar.set_position(p.handled);
        })
        .await?;
    bar.finish_with_message("done");
    let elapsed = started.elapsed();

    let report = system.report(fed).await?;
    println!("{}", report.render());
    println!(
        "{} messages handled in {:.2}s; state in {} (inspect with `retail-sync quarantine list`, `dlq list`, `saga <id>`)",
        progress.handled,
        elapsed.as_secs_f64(),
        state.state.display()
    );
    if let Some(path) = report_path {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn quarantine_list(limit: usize, json: bool, state: &StateArgs) -> anyhow::Result<ExitCode> {
    let store = open_state(state)?;
    let items = store.list(limit).await?;
    for item in &items {
        if json {
            println!("{}", serde_json::to_string(item)?);
        } else {
            println!(
                "{}  {:<10} {:<24} {:<22} {}",
                item.received_at,
                item.step,
                item.rejection.reason.as_str(),
                item.rejection.event_id.as_deref().unwrap_or("-"),
                item.rejection.message
            );
        }
    }
    if !json {
        eprintln!("{} quarantined", items.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn dlq_list(json: bool, state: &StateArgs) -> anyhow::Result<ExitCode> {
    let store = open_state(state)?;
    for dlq in store.topology().dead_letter_queues() {
        let messages = store.messages(dlq)?;
        if json {
            for m in &messages {
                println!("{}", serde_json::to_string(m)?);
            }
        } else {
            println!("{dlq}: {} messages", messages.len());
            for m in &messages {
                println!(
                    "  {}  received {}×  {}",
                    m.id,
                    m.receive_count,
                    m.body.chars().take(120).collect::<String>()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn dlq_redrive(dlq: &str, state: &StateArgs) -> anyhow::Result<ExitCode> {
    let store = open_state(state)?;
    let source = store
        .topology()
        .queues
        .values()
        .find(|q| q.redrive.as_ref().is_some_and(|(d, _)| d == dlq))
        .map(|q| q.id.clone())
        .with_context(|| format!("{dlq} is not the DLQ of any queue in the template"))?;
    let moved = store.redrive(dlq, &source)?;
    println!("{moved} messages moved from {dlq} back to {source}; `retail-sync local run` processes them");
    Ok(ExitCode::SUCCESS)
}

pub async fn saga_show(id: &str, state: &StateArgs) -> anyhow::Result<ExitCode> {
    let store = open_state(state)?;
    let saga = match store.load(&SagaId::from_stored(id.to_owned())).await? {
        Some(s) => Some(s),
        None => match retail_sync_contracts::values::CorrelationId::parse(id.to_owned()) {
            Ok(c) => store.find_by_correlation(&c).await?,
            Err(_) => None,
        },
    };
    let Some(saga) = saga else {
        eprintln!("no saga with id or correlation id {id}");
        return Ok(ExitCode::from(2));
    };
    println!("{}", serde_json::to_string_pretty(&saga)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn bench_local(sagas: usize, state: &StateArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let mut opts = options(state);
    opts.state = dir.path().join("bench.db");
    let figures = bench::local(&opts, sagas).await?;
    println!("{figures}");
    Ok(ExitCode::SUCCESS)
}

pub async fn bench_aws(sagas: usize, endpoint: Option<&str>, template: &Path) -> anyhow::Result<ExitCode> {
    // Started here only when no endpoint is given; stopped when it drops at the end.
    let moto = endpoint
        .is_none()
        .then(retail_sync_testkit::moto::MotoServer::start);
    let endpoint = endpoint
        .or(moto.as_ref().map(|m| m.endpoint()))
        .expect("one of the two is set");
    let figures = bench::aws(template, endpoint, sagas).await?;
    println!("{figures}");
    Ok(ExitCode::SUCCESS)
}
