//! Which system an operator command works on: the embedded state of a local run, or a deployed stack on
//! AWS (or an emulator), with the AWS CLI's conventions (`--profile`, `--region`, `--endpoint-url`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use retail_sync_aws::{AwsBackend, AwsClients, AwsSettings, sdk_config};
use retail_sync_core::ports::SystemClock;
use retail_sync_embedded::{Embedded, Topology};
use retail_sync_topology::{CHANNEL_BUS, INTERNAL_BUS};

use crate::backends::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The state file of a local run (`--state`).
    Embedded,
    /// A deployed stack (`--stack`), or resources named by a prefix on an emulator (`--prefix`).
    Aws,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    #[arg(long, value_enum, default_value = "embedded", env = "RETAIL_SYNC_BACKEND")]
    pub backend: BackendKind,
    /// The SAM template the wiring is read from.
    #[arg(long, default_value = "infra/template.yaml", env = "RETAIL_SYNC_TEMPLATE")]
    pub template: PathBuf,
    /// The embedded backend's state file.
    #[arg(long, default_value = ".retail-sync/local.db", env = "RETAIL_SYNC_STATE")]
    pub state: PathBuf,
    /// The CloudFormation stack `sam deploy` created: its resources are looked up by logical id.
    #[arg(long, env = "RETAIL_SYNC_STACK")]
    pub stack: Option<String>,
    /// Instead of a stack: resources named `<prefix><LogicalId>` (how `retail-sync` provisions an
    /// emulator).
    #[arg(long)]
    pub prefix: Option<String>,
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Another endpoint for every AWS service (an emulator such as moto, a VPC endpoint).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

/// An opened target: the backend and the wiring read from the template.
pub struct Opened {
    pub backend: Arc<dyn Backend>,
    pub topology: Topology,
    /// On AWS, the SDK configuration the backend was opened with, for a command's other clients: loaded
    /// once, so credentials are resolved once per command.
    pub sdk: Option<aws_config::SdkConfig>,
}

impl Opened {
    /// The SDK configuration of an AWS target.
    pub fn sdk(&self) -> anyhow::Result<&aws_config::SdkConfig> {
        self.sdk
            .as_ref()
            .context("this command needs the AWS backend (--backend aws)")
    }
}

/// Refuses a local state that does not exist (an operator command never creates one).
pub fn require_state(state: &std::path::Path) -> anyhow::Result<()> {
    if !state.exists() {
        bail!(
            "no local state at {} (run `retail-sync local run` first, or pass --state)",
            state.display()
        );
    }
    Ok(())
}

pub async fn open(args: &TargetArgs) -> anyhow::Result<Opened> {
    let topology = Topology::load(&args.template)?;
    let (backend, sdk): (Arc<dyn Backend>, _) = match args.backend {
        BackendKind::Embedded => {
            require_state(&args.state)?;
            let embedded = Embedded::open(&args.state, topology.clone(), Arc::new(SystemClock))
                .with_context(|| format!("cannot open the state {}", args.state.display()))?;
            (Arc::new(embedded), None)
        }
        BackendKind::Aws => {
            let (backend, sdk) = open_aws(args, &topology).await?;
            (Arc::new(backend), Some(sdk))
        }
    };
    Ok(Opened {
        backend,
        topology,
        sdk,
    })
}

fn base_settings(args: &TargetArgs) -> AwsSettings {
    AwsSettings {
        endpoint_url: args.endpoint_url.clone(),
        region: args.region.clone(),
        profile: args.profile.clone(),
        ..AwsSettings::default()
    }
}

async fn open_aws(
    args: &TargetArgs,
    topology: &Topology,
) -> anyhow::Result<(AwsBackend, aws_config::SdkConfig)> {
    let base = base_settings(args);
    let sdk = sdk_config(&base).await?;
    let found = match (&args.stack, &args.prefix) {
        (Some(stack), None) => by_stack(&sdk, topology, stack).await?,
        (None, Some(prefix)) => by_prefix(&sdk, topology, prefix).await?,
        (Some(_), Some(_)) => bail!("name the stack (--stack) or the prefix (--prefix), not both"),
        (None, None) => bail!(
            "which deployment? name its stack (--stack, or RETAIL_SYNC_STACK), or on an emulator the prefix its resources carry (--prefix)"
        ),
    };
    let settings = AwsSettings {
        endpoint_url: base.endpoint_url,
        region: base.region,
        profile: base.profile,
        ..found
    };
    Ok((AwsBackend::new(&AwsClients::new(&sdk), settings), sdk))
}

/// The stack's resources by logical id (DescribeStackResources).
async fn by_stack(
    sdk: &aws_config::SdkConfig,
    topology: &Topology,
    stack: &str,
) -> anyhow::Result<AwsSettings> {
    let out = aws_sdk_cloudformation::Client::new(sdk)
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(retail_sync_aws::error::sdk_text(&e)))
        .with_context(|| format!("cannot list the resources of stack {stack}"))?;
    let resources: Vec<(&str, &str)> = out
        .stack_resources()
        .iter()
        .filter_map(|r| Some((r.logical_resource_id()?, r.physical_resource_id()?)))
        .collect();
    Ok(AwsSettings::from_stack_resources(topology, resources)?)
}

/// Resources named `<prefix><LogicalId>`; queue URLs asked of SQS.
async fn by_prefix(
    sdk: &aws_config::SdkConfig,
    topology: &Topology,
    prefix: &str,
) -> anyhow::Result<AwsSettings> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut names: Vec<(String, String)> = [
        "IdempotencyTable",
        "SagaTable",
        "QuarantineTable",
        CHANNEL_BUS,
        INTERNAL_BUS,
    ]
    .iter()
    .map(|id| ((*id).to_owned(), format!("{prefix}{id}")))
    .collect();
    for id in topology.queues.keys() {
        let out = sqs
            .get_queue_url()
            .queue_name(format!("{prefix}{id}"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(retail_sync_aws::error::sdk_text(&e)))
            .with_context(|| format!("no queue {prefix}{id}"))?;
        names.push((id.clone(), out.queue_url().unwrap_or_default().to_owned()));
    }
    Ok(AwsSettings::from_stack_resources(
        topology,
        names.iter().map(|(l, p)| (l.as_str(), p.as_str())),
    )?)
}
