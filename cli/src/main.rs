//! `retail-sync`: run the system locally, inspect and repair it. Argument parsing only; the work is in
//! the library (`retail_sync_cli`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

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

#[derive(Subcommand)]
enum Command {
    /// Run on this machine, no cloud.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Bad input and permanently failed messages.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Dead-letter queues: messages that exhausted their deliveries.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// One business transaction's saga and timeline.
    Saga {
        /// A correlation id or a saga id (`receipt:<store>:<receipt>`, `order:<id>`).
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Process events (a .json/.jsonl file or a directory of them) on the embedded backend with the
    /// reference ERP and loyalty simulators, until every queue is drained.
    Run {
        input: PathBuf,
        /// Also write the outcome as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Start from empty state instead of resuming the last run.
        #[arg(long)]
        fresh: bool,
        /// No progress bar (the summary is still printed).
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List quarantined messages with their reasons.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON (one object per line) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Every DLQ of the template with its messages.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Move a DLQ's messages back to the queue it serves (after fixing the cause).
    Redrive {
        /// The DLQ's logical id in the template, e.g. PostSaleToErpDLQ.
        dlq: String,
        #[command(flatten)]
        state: StateArgs,
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
    /// AWS API requests per sale saga, counted on an emulator (moto server): the AWS backend provisioned
    /// from the template, the steps polled locally.
    Aws {
        #[arg(long, default_value_t = 200)]
        sagas: usize,
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
                state,
            }) => commands::local_run(&input, report.as_deref(), fresh, quiet, &state).await,
            Command::Quarantine(QuarantineCommand::List { limit, json, state }) => {
                commands::quarantine_list(limit, json, &state).await
            }
            Command::Dlq(DlqCommand::List { json, state }) => commands::dlq_list(json, &state),
            Command::Dlq(DlqCommand::Redrive { dlq, state }) => commands::dlq_redrive(&dlq, &state),
            Command::Saga { id, state } => commands::saga_show(&id, &state).await,
            Command::Bench(BenchCommand::Local { sagas, state }) => {
                commands::bench_local(sagas, &state).await
            }
            Command::Bench(BenchCommand::Aws {
                sagas,
                endpoint_url,
                template,
            }) => commands::bench_aws(sagas, endpoint_url.as_deref(), &template).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
