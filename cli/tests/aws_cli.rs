//! `retail-sync` on the AWS backend beside the real AWS CLI, both against one moto server: what one puts
//! on the queues and the bus, the other sees and moves. The stack is provisioned from the template under
//! a prefix (`--prefix`), as on an emulator; on AWS the same commands take `--stack`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use retail_sync_aws::ProvisionOptions;
use retail_sync_testkit::moto::MotoServer;
use retail_sync_topology::Topology;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The AWS CLI of `scripts/tools.sh`, against moto.
fn aws(moto: &str, args: &[&str]) -> Value {
    let out = Command::new(root().join(".tools/venv/bin/aws"))
        .args(args)
        .args([
            "--endpoint-url",
            moto,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the AWS CLI from scripts/tools.sh");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn retail_sync(moto: &str, prefix: &str, args: &[&str]) -> Output {
    on_moto(
        moto,
        args.iter()
            .copied()
            .chain(["--backend", "aws", "--prefix", prefix, "--region", "us-east-1"]),
    )
}

/// `retail-sync <args>` against the moto server at `moto`, with the repository's template and dummy
/// credentials.
fn on_moto<'a>(moto: &str, args: impl IntoIterator<Item = &'a str>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retail-sync"))
        .args(args)
        .args(["--endpoint-url", moto])
        .arg("--template")
        .arg(root().join("infra/template.yaml"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join(format!("events/samples/{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_and_retail_sync_work_on_the_same_stack() {
    let moto = MotoServer::shared();
    let endpoint = moto.endpoint();
    let topology = Topology::load(&root().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique();
    let backend = moto.backend(&topology, &options).await;
    let settings = backend.settings().clone();
    let prefix = options.prefix.as_str();

    // A dead letter put there with the AWS CLI: an ErpSalePosted whose sale nobody started.
    let mut orphan = sample("ErpSalePosted");
    orphan["detail"]["metadata"]["correlation_id"] = "pos-store-099-r-orphan".into();
    let dlq_url = &settings.queue_urls["AccrueLoyaltyDLQ"];
    aws(
        endpoint,
        &[
            "sqs",
            "send-message",
            "--queue-url",
            dlq_url,
            "--message-body",
            &orphan.to_string(),
        ],
    );

    let dlqs = lines(&retail_sync(endpoint, prefix, &["dlq", "list", "-o", "json"]));
    let accrue = dlqs.iter().find(|d| d["dlq"] == "AccrueLoyaltyDLQ").unwrap();
    assert_eq!(accrue["messages"], 1);
    assert_eq!(accrue["source"], "AccrueLoyaltyQueue");
    let shown = lines(&retail_sync(
        endpoint,
        prefix,
        &["dlq", "show", "AccrueLoyaltyDLQ", "-o", "json"],
    ));
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["reason"], "waiting_for_saga");
    assert_eq!(shown[0]["detail_type"], "ErpSalePosted");

    // Filters that match nothing move nothing; the matching one moves it, and the AWS CLI sees it.
    let none = lines(&retail_sync(
        endpoint,
        prefix,
        &[
            "dlq",
            "redrive",
            "AccrueLoyaltyDLQ",
            "--reason",
            "saga_running",
            "--yes",
            "-o",
            "json",
        ],
    ));
    assert_eq!(none[0]["moved"], 0);
    let moved = lines(&retail_sync(
        endpoint,
        prefix,
        &[
            "dlq",
            "redrive",
            "AccrueLoyaltyDLQ",
            "--correlation-id",
            "pos-store-099-r-orphan",
            "--yes",
            "-o",
            "json",
        ],
    ));
    assert_eq!(moved[0]["moved"], 1);
    let attributes = aws(
        endpoint,
        &[
            "sqs",
            "get-queue-attributes",
            "--queue-url",
            &settings.queue_urls["AccrueLoyaltyQueue"],
            "--attribute-names",
            "ApproximateNumberOfMessages",
        ],
    );
    assert_eq!(attributes["Attributes"]["ApproximateNumberOfMessages"], "1");
    let received = aws(
        endpoint,
        &[
            "sqs",
            "receive-message",
            "--queue-url",
            &settings.queue_urls["AccrueLoyaltyQueue"],
        ],
    );
    let body: Value = serde_json::from_str(received["Messages"][0]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(body, orphan, "moved byte for byte");

    // A channel's event put with `aws events put-events` on the channel bus reaches ingest's queue.
    let sale = sample("SaleCompleted");
    let entries = json!([{
        "EventBusName": settings.channel_bus_name.clone().unwrap(),
        "Source": sale["source"], "DetailType": sale["detail-type"], "Detail": sale["detail"].to_string(),
    }]);
    let put = aws(
        endpoint,
        &["events", "put-events", "--entries", &entries.to_string()],
    );
    assert_eq!(put["FailedEntryCount"], 0);
    let ingest = aws(
        endpoint,
        &[
            "sqs",
            "receive-message",
            "--queue-url",
            &settings.queue_urls["IngestQueue"],
            "--wait-time-seconds",
            "2",
        ],
    );
    let delivered: Value = serde_json::from_str(ingest["Messages"][0]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(delivered["detail"], sale["detail"]);

    // Exit codes: not found is 3; a target that names no deployment is a clear failure.
    let missing = retail_sync(endpoint, prefix, &["saga", "show", "no-such-saga"]);
    assert_eq!(missing.status.code(), Some(3));
    let no_stack = Command::new(env!("CARGO_BIN_EXE_retail-sync"))
        .args([
            "dlq",
            "list",
            "--backend",
            "aws",
            "--stack",
            "no-such-stack",
            "--endpoint-url",
            endpoint,
        ])
        .args(["--region", "us-east-1", "--template"])
        .arg(root().join("infra/template.yaml"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(no_stack.status.code(), Some(1));
    // One line: the service's code and message, without the SDK's dump of the raw response.
    let stderr = String::from_utf8_lossy(&no_stack.stderr);
    assert!(
        stderr.starts_with(
            "error: cannot list the resources of stack no-such-stack: ValidationError: Stack with id no-such-stack does not exist (request id "
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("SdkBody"), "{stderr}");
}

/// A stack provisioned from the template on the shared moto server under a fresh prefix: the server's
/// endpoint, the DynamoDB backend to seed it through, and the prefix the commands name.
async fn stack() -> (&'static str, retail_sync_aws::AwsBackend, String) {
    let moto = MotoServer::shared();
    let topology = Topology::load(&root().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique();
    let backend = moto.backend(&topology, &options).await;
    (moto.endpoint(), backend, options.prefix)
}

/// `retail-sync reconcile --backend aws`: the sagas in DynamoDB (on moto) against the reference ERP and
/// loyalty platform over their system APIs, as a deployment's reconcile function reads them (base URLs
/// and API keys from the environment). A sale whose accrual the platform lost and a document booked by
/// hand are found; `--repair` accrues the lost points again through the connector, once; the hand-booked
/// document stays a difference for a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reads_the_stack_and_the_systems_and_repairs_once() {
    use retail_sync_contracts::values::{Amount, Currency, ExternalRef, Points, ReceiptId, StoreId};
    use retail_sync_contracts::{Event, EventType};
    use retail_sync_core::ports::SagaStore;
    use retail_sync_core::saga::{Saga, SagaId, SagaStatus};
    use retail_sync_simulators::access::{Access, LOCAL_API_KEY};
    use retail_sync_simulators::{ErpSimulator, LoyaltySimulator};

    let (endpoint, backend, prefix) = stack().await;
    let prefix = prefix.as_str();

    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    loyalty.seed_balance("m-1001", Points::ZERO);
    let (systems, _server) =
        retail_sync_testkit::sims::serve(erp.clone(), loyalty.clone(), Access::local()).await;

    // The sample sale, completed with 120 points that the platform has no record of.
    let sale = sample("SaleCompleted");
    let event = Event::from_detail(EventType::SaleCompleted, sale["detail"].clone()).unwrap();
    let id = SagaId::from_stored("receipt:store-042:r-000123".into());
    let mut saga = Saga::start(id.clone(), &event, "2026-11-20T10:16:00Z".parse().unwrap());
    saga.status = SagaStatus::Completed;
    saga.ledger.loyalty_transaction_id = Some(ExternalRef::parse("LT-LOST-1").unwrap());
    saga.ledger.points_accrued = Some(Points::new(120).unwrap());
    saga.ledger.eligible_minor = Some(Amount::new(12_000).unwrap());
    assert!(backend.create(&saga).await.unwrap().is_none());
    erp.book_by_hand(
        retail_sync_contracts::events::TransactionRef::Receipt {
            store_id: StoreId::parse("store-099").unwrap(),
            receipt_id: ReceiptId::parse("r-hand-1").unwrap(),
        },
        Currency::parse("EUR").unwrap(),
        Amount::new(990).unwrap(),
        "2026-11-20T18:00:00Z".parse().unwrap(),
    );

    let reconcile = |extra: &[&str]| {
        let mut args = vec![
            "reconcile",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-21T00:00:00Z",
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_retail-sync"))
            .args(&args)
            .args([
                "--backend",
                "aws",
                "--prefix",
                prefix,
                "--endpoint-url",
                endpoint,
                "--region",
                "us-east-1",
            ])
            .arg("--template")
            .arg(root().join("infra/template.yaml"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env("ERP_BASE_URL", &systems)
            .env("ERP_AUTH", "api-key")
            .env("ERP_API_KEY", LOCAL_API_KEY)
            .env("LOYALTY_BASE_URL", &systems)
            .env("LOYALTY_AUTH", "api-key")
            .env("LOYALTY_API_KEY", LOCAL_API_KEY)
            .output()
            .unwrap()
    };
    let differences = |o: &Output| -> Vec<(String, String)> {
        let report: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["difference"].as_str().unwrap().to_owned(),
                    f["transaction"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };

    let found = reconcile(&[]);
    assert_eq!(found.status.code(), Some(1), "differences exit 1");
    assert_eq!(
        differences(&found),
        [
            ("missing_accrual".to_owned(), id.to_string()),
            (
                "orphan_document".to_owned(),
                "receipt:store-099:r-hand-1".to_owned()
            ),
        ]
    );
    assert!(loyalty.transactions().is_empty(), "a report repairs nothing");

    let repaired = reconcile(&["--repair"]);
    assert_eq!(
        differences(&repaired),
        [(
            "orphan_document".to_owned(),
            "receipt:store-099:r-hand-1".to_owned()
        )]
    );
    assert_eq!(loyalty.transactions().len(), 1);
    assert_eq!(loyalty.balance("m-1001").unwrap().get(), 120);
    let stored = backend.load(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.ledger.loyalty_transaction_id,
        Some(loyalty.transactions()[0].loyalty_transaction_id.clone()),
        "the saga records the new accrual"
    );
    assert!(stored.steps.iter().any(|s| s.step == "reconcile"));

    let again = reconcile(&["--repair"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(loyalty.transactions().len(), 1, "repaired once");

    // Without the systems' settings the command says what is missing.
    let out = Command::new(env!("CARGO_BIN_EXE_retail-sync"))
        .args([
            "reconcile",
            "--backend",
            "aws",
            "--prefix",
            prefix,
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
        ])
        .arg("--template")
        .arg(root().join("infra/template.yaml"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("ERP_BASE_URL")
        .env_remove("LOYALTY_BASE_URL")
        .env_remove("ERP_AUTH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ERP_AUTH"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `retail-sync points confirm --backend aws`: the sagas in DynamoDB (on moto), the loyalty platform as
/// the confirm-points function reaches it (LOYALTY_* from the environment). The accrual whose return
/// window ended is confirmed on the platform and on its saga, once; the one still in its window waits; an
/// unreachable platform is a failed confirmation (exit 1), left for the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_confirm_reads_the_stack_and_confirms_what_is_due_once() {
    use retail_sync_contracts::values::{MemberId, Points};
    use retail_sync_contracts::{Event, EventType};
    use retail_sync_core::ports::SagaStore;
    use retail_sync_core::saga::{Saga, SagaId, SagaStatus};
    use retail_sync_simulators::access::{Access, LOCAL_API_KEY};
    use retail_sync_simulators::{ErpSimulator, LoyaltySimulator};

    let (endpoint, backend, prefix) = stack().await;
    let prefix = prefix.as_str();
    let loyalty = LoyaltySimulator::new();
    loyalty.seed_balance("m-1001", Points::ZERO);
    let (systems, _server) =
        retail_sync_testkit::sims::serve(ErpSimulator::new(), loyalty.clone(), Access::local()).await;

    let ended: jiff::Timestamp = "2026-11-20T10:15:00Z".parse().unwrap();
    let later: jiff::Timestamp = "2027-01-31T00:00:00Z".parse().unwrap();
    let now = "2026-12-10T00:00:00Z";
    let pending =
        |receipt: &str, until| retail_sync_testkit::sims::pending_accrual(&loyalty, "m-1001", receipt, until);
    let sale = sample("SaleCompleted");
    let event = Event::from_detail(EventType::SaleCompleted, sale["detail"].clone()).unwrap();
    let id = SagaId::from_stored("receipt:store-042:r-000123".into());
    let mut saga = Saga::start(id.clone(), &event, ended);
    saga.status = SagaStatus::Completed;
    saga.ledger.pending = vec![pending("r-due", ended), pending("r-waiting", later)];
    assert!(backend.create(&saga).await.unwrap().is_none());

    let confirm = |loyalty_url: &str| {
        Command::new(env!("CARGO_BIN_EXE_retail-sync"))
            .args(["points", "confirm", "--now", now, "-o", "json"])
            .args(["--backend", "aws", "--prefix", prefix])
            .args(["--endpoint-url", endpoint, "--region", "us-east-1"])
            .arg("--template")
            .arg(root().join("infra/template.yaml"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env("LOYALTY_BASE_URL", loyalty_url)
            .env("LOYALTY_AUTH", "api-key")
            .env("LOYALTY_API_KEY", LOCAL_API_KEY)
            .output()
            .unwrap()
    };
    let answer = |o: &Output| -> Value {
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
    };
    let member = MemberId::parse("m-1001").unwrap();

    // The platform cannot be reached: nothing is confirmed, the failure is named, the exit code says so.
    let unreachable = confirm("http://127.0.0.1:9");
    assert_eq!(unreachable.status.code(), Some(1));
    let failed = answer(&unreachable);
    assert_eq!(
        (
            failed["accruals"].clone(),
            failed["failed"].as_array().map(Vec::len)
        ),
        (json!(0), Some(1)),
        "{failed}"
    );
    assert_eq!(loyalty.member_balance(&member).unwrap().balance.get(), 0);

    let done = confirm(&systems);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let done = answer(&done);
    assert_eq!(
        (
            done["accruals"].clone(),
            done["points"].clone(),
            done["waiting"].clone()
        ),
        (json!(1), json!(120), json!(1)),
        "{done}"
    );
    let balance = loyalty.member_balance(&member).unwrap();
    assert_eq!((balance.balance.get(), balance.pending.get()), (120, 120));
    let stored = backend.load(&id).await.unwrap().unwrap();
    assert!(stored.ledger.pending[0].confirmed_at.is_some());
    assert!(stored.ledger.pending[1].confirmed_at.is_none());

    let again = answer(&confirm(&systems));
    assert_eq!(
        (again["accruals"].clone(), again["waiting"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        loyalty.member_balance(&member).unwrap().balance.get(),
        120,
        "confirmed once"
    );
}

/// The figure of one `label` line of a `bench aws --cost` section (the first number after the label).
fn figure(section: &str, label: &str) -> f64 {
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} line in:\n{section}"));
    line[line.find(label).unwrap_or(0) + label.len()..]
        .split_whitespace()
        .find_map(|w| w.trim_start_matches('$').parse().ok())
        .unwrap_or_else(|| panic!("no figure in {line}"))
}

/// `bench aws --cost` meters a sale saga and an ecommerce order with a return on moto and prices them:
/// the units follow from the workflow (three step deliveries per sale, nine per order, one channel
/// event per fact) and from the items' sizes (a saga item is stored deflated, under 1 KB, so each of
/// its writes costs one unit, two in a transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_aws_cost_prices_a_sale_and_an_order_with_a_return() {
    let moto = MotoServer::shared();
    let out = on_moto(moto.endpoint(), ["bench", "aws", "--sagas", "10", "--cost"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, priced) = text
        .split_once("cost of one sale saga")
        .unwrap_or_else(|| panic!("no sale section:\n{text}"));
    let (sale, order) = priced
        .split_once("cost of one ecommerce order with a return")
        .unwrap_or_else(|| panic!("no order section:\n{text}"));
    assert!(sale.contains("list prices as of"), "{sale}");

    // The two steps after ingest each read their batch's sagas ahead: one batch read a batch of 10,
    // no read of a saga alone, and a consistent read unit per saga each (as the reads one by one).
    let (requests, _) = text.split_once("cost of one sale saga").unwrap();
    assert_eq!(figure(requests, "dynamodb:BatchGetItem"), 0.2, "{requests}");
    assert!(!requests.contains("dynamodb:GetItem"), "{requests}");
    assert_eq!(figure(sale, "DynamoDB reads"), 2.0, "{sale}");
    assert_eq!(figure(sale, "EventBridge, channel events"), 1.0);
    assert_eq!(figure(order, "EventBridge, channel events"), 3.0);
    // Ingest, post-sale-to-erp, accrue-loyalty; for the order also accrue-shipment, post-return-to-erp
    // and reverse-loyalty, with an ingest for each of its three facts.
    assert_eq!(figure(sale, "Step Functions Standard"), 3.0, "{sale}");
    assert_eq!(figure(order, "Step Functions Standard"), 9.0, "{order}");
    // Create (one unit and the index entry), then per step a claim (one) and the transaction of the
    // saga (2 × 1) and the completion (2 × 1). As JSON text the saga item was over 1 KB: 17 units.
    let writes = figure(sale, "DynamoDB writes");
    assert!((12.0..13.0).contains(&writes), "{sale}");
    // Apart: creation and claims 3, transactions 8 (4 of them the doubling), the index entry 1, and
    // none because an item is over 1 KB.
    let split: Vec<f64> = sale
        .lines()
        .find(|l| l.trim_start().starts_with("write units:"))
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| w.contains('.'))
        .filter_map(|w| w.trim_end_matches(';').parse().ok())
        .collect();
    assert_eq!(split.len(), 4, "{sale}");
    assert_eq!(split[0] + split[1] + split[2], writes, "{sale}");
    assert_eq!((split[2], split[3]), (1.0, 0.0), "{sale}");
    assert!(figure(order, "DynamoDB writes") > writes, "{order}");
    assert!(figure(sale, "total") > 0.0 && figure(order, "total") > figure(sale, "total"));
    // The run's sagas, as JSON and as stored: deflated, a sale's and an order's items are under 1 KB
    // where their JSON is not.
    let items = order
        .lines()
        .find(|l| l.starts_with("saga items ("))
        .unwrap_or_else(|| panic!("no saga items line:\n{order}"));
    let bytes: Vec<f64> = items
        .split_whitespace()
        .zip(items.split_whitespace().skip(1))
        .filter(|(_, unit)| unit.trim_end_matches([';', ',']) == "B")
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    assert_eq!(bytes.len(), 2, "{items}");
    assert!(bytes[0] > 1024.0 && bytes[1] < 1024.0, "{items}");
    assert!(items.contains("(20 sagas of this run)"), "{items}");
}

/// `bench aws --batch-size 1` runs a trickle of sales: each message a batch of its own, so each step
/// reads its saga alone (a `GetItem`, no batch read). A size SQS cannot hand Lambda
/// is refused before anything runs.
#[tokio::test]
async fn bench_aws_with_batches_of_one_reads_each_saga_alone() {
    let moto = MotoServer::shared();
    let out = on_moto(
        moto.endpoint(),
        ["bench", "aws", "--sagas", "4", "--batch-size", "1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("(moto, batches of at most 1)"), "{text}");
    assert_eq!(figure(&text, "dynamodb:GetItem"), 2.0, "{text}");
    assert!(!text.contains("dynamodb:BatchGetItem"), "{text}");

    let out = on_moto(
        moto.endpoint(),
        ["bench", "aws", "--sagas", "4", "--batch-size", "11"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--batch-size must be 1 to 10"), "{err}");
}
