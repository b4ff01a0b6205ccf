//! A function binary under the real Lambda runtime API (cargo-lambda's emulator), on the AWS backend
//! (moto) with the loyalty simulator over HTTP: an SQS batch with one record that cannot be processed yet
//! gets a partial batch response naming exactly that record. Also reads the function's peak memory.
//!
//! The scheduled reconcile function too: invoked with its window, it writes its report to the bucket,
//! repairs what it is configured to and prints its metric.
//!
//! Needs the functions built (`cargo build -p accrue-loyalty -p reconcile`; `scripts/test.sh` builds every target)
//! and cargo-lambda (`scripts/tools.sh`).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use retail_sync_aws::ProvisionOptions;
use retail_sync_contracts::{Event, EventType};
use retail_sync_core::ports::{QuarantineStore, SagaStore};
use retail_sync_core::saga::{Saga, SagaId, SagaStatus};
use retail_sync_simulators::access::{Access, LOCAL_API_KEY, LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET};
use retail_sync_simulators::{ErpSimulator, LoyaltySimulator};
use retail_sync_testkit::moto::MotoServer;
use retail_sync_testkit::sims;
use retail_sync_tests::workspace;
use retail_sync_topology::Topology;

/// Kills the child when the test ends, whatever happens.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    let path = workspace().join(".tools/venv/bin").join(name);
    assert!(
        path.exists(),
        "{} missing: run `bash scripts/tools.sh`",
        path.display()
    );
    path
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sample(name: &str) -> Value {
    let path = workspace().join(format!("events/samples/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sqs_record(id: &str, body: &Value) -> Value {
    json!({
        "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body.to_string(),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1763633700000"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:AccrueLoyaltyQueue", "awsRegion": "us-east-1",
    })
}

/// A function binary running under cargo-lambda's runtime API emulator, its stdout collected.
struct Function {
    port: u16,
    process: Guard,
    _emulator: Guard,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Function {
    fn start(binary: &str, env: &[(&str, String)]) -> Self {
        let path = target_dir().join("debug").join(binary);
        assert!(
            path.exists(),
            "{} missing: run `cargo build -p {binary}`",
            path.display()
        );
        let port = free_port();
        let emulator = Guard(
            Command::new(tool("cargo-lambda"))
                .args([
                    "lambda",
                    "watch",
                    "--only-lambda-apis",
                    "-A",
                    "127.0.0.1",
                    "-P",
                    &port.to_string(),
                ])
                .current_dir(workspace())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cargo-lambda starts"),
        );
        wait_for(port);
        let mut command = Command::new(&path);
        command
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            // With --only-lambda-apis the emulator serves one function, named `_`.
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut process = Guard(command.spawn().expect("the function starts"));
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let stdout = process.0.stdout.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            port,
            process,
            _emulator: emulator,
            lines,
        }
    }

    /// `cargo lambda invoke` with an SQS event of `records`; returns the function's response.
    fn invoke(&self, records: Vec<Value>) -> Value {
        self.invoke_with(&json!({ "Records": records }))
    }

    /// `cargo lambda invoke` with `payload`; returns the function's response.
    fn invoke_with(&self, payload: &Value) -> Value {
        let data = std::env::temp_dir().join(format!("event-{}.json", self.port));
        std::fs::write(&data, payload.to_string()).unwrap();
        let output = Command::new(tool("cargo-lambda"))
            .args([
                "lambda",
                "invoke",
                "-A",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--output-format",
                "json",
            ])
            .arg("--data-file")
            .arg(&data)
            .arg("_")
            .current_dir(workspace())
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&data);
        assert!(
            output.status.success(),
            "invoke failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The JSON lines the function printed so far.
    fn logs(&self) -> Vec<Value> {
        std::thread::sleep(Duration::from_millis(200));
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Peak resident memory of the process, KiB.
    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// The environment the template gives every function, for a backend on moto and simulators at `sims`.
/// The ERP connector authenticates with OAuth 2.0, its client's credentials in a Secrets Manager secret
/// on moto (as on AWS); the loyalty connector with an API key from the environment (as in a local run).
async fn function_env(
    backend: &retail_sync_aws::AwsBackend,
    moto: &str,
    sims: &str,
) -> Vec<(&'static str, String)> {
    let s = backend.settings();
    let sdk = retail_sync_aws::emulator_sdk_config(
        &retail_sync_aws::AwsSettings::default().with_endpoint_url(moto),
    )
    .await;
    let secret = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("erp-credentials-{}", uuid::Uuid::now_v7()))
        .secret_string(
            json!({"client_id": LOCAL_CLIENT_ID, "client_secret": LOCAL_CLIENT_SECRET}).to_string(),
        )
        .send()
        .await
        .unwrap();
    vec![
        ("AWS_ENDPOINT_URL", moto.to_owned()),
        ("IDEMPOTENCY_TABLE", s.idempotency_table.clone()),
        ("SAGA_TABLE", s.saga_table.clone()),
        ("QUARANTINE_TABLE", s.quarantine_table.clone()),
        ("EVENT_BUS_NAME", s.event_bus_name.clone()),
        ("ERP_BASE_URL", sims.to_owned()),
        ("ERP_AUTH", "oauth2-client-credentials".to_owned()),
        ("ERP_TOKEN_URL", format!("{sims}/oauth/token")),
        ("ERP_CREDENTIALS_SECRET_ARN", secret.arn().unwrap().to_owned()),
        ("LOYALTY_BASE_URL", sims.to_owned()),
        ("LOYALTY_AUTH", "api-key".to_owned()),
        ("LOYALTY_API_KEY", LOCAL_API_KEY.to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accrue_loyalty_under_the_runtime_api_reports_only_the_record_that_must_come_back() {
    // The AWS side on moto, provisioned from the template, with the sale's saga started and its ERP
    // posting recorded (as post-sale-to-erp leaves it before announcing ErpSalePosted).
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let moto = MotoServer::shared();
    let backend = moto.backend(&topology, &ProvisionOptions::unique()).await;
    let sale = sample("SaleCompleted");
    let event = Event::from_detail(EventType::SaleCompleted, sale["detail"].clone()).unwrap();
    let saga_id = SagaId::from_stored("receipt:store-042:r-000123".into());
    let mut saga = Saga::start(saga_id.clone(), &event, jiff::Timestamp::now());
    backend.create(&saga).await.unwrap();
    let document = sample("ErpSalePosted")["detail"]["data"]["erp_document_id"].clone();
    saga.ledger.erp_document_id = Some(serde_json::from_value(document).unwrap());
    saga.version = 2;
    backend.save(&saga, None).await.unwrap();

    // The loyalty platform, over HTTP.
    let loyalty = LoyaltySimulator::new();
    let erp = ErpSimulator::new();
    let (sims, _server) = sims::serve(erp.clone(), loyalty.clone(), Access::local()).await;
    let function = Function::start(
        "accrue-loyalty",
        &function_env(&backend, moto.endpoint(), &sims).await,
    );

    // One record whose saga exists, one for a sale ingest has not seen yet (it must wait, not fail).
    let posted = sample("ErpSalePosted");
    let mut early = posted.clone();
    early["detail"]["data"]["transaction"]["receipt_id"] = "r-not-yet".into();
    early["detail"]["metadata"]["correlation_id"] = "pos-store-042-r-not-yet".into();
    let response = function.invoke(vec![sqs_record("m-ok", &posted), sqs_record("m-early", &early)]);
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "m-early"}]})
    );

    // The good record took effect once, on the real backend and the real HTTP connector.
    let saga = backend.load(&saga_id).await.unwrap().unwrap();
    assert_eq!(saga.status, SagaStatus::Completed);
    assert_eq!(loyalty.balance("m-1001").map(|p| p.get()), Some(79));

    // Logs are JSON and carry the correlation id; metrics go out as EMF.
    let logs = function.logs();
    assert!(
        logs.iter()
            .any(|l| l["span"]["correlation_id"] == "pos-store-042-r-not-yet"),
        "no log line carries the waiting record's correlation id: {logs:#?}"
    );
    let emf = logs
        .iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF document");
    assert_eq!(emf["step"], "accrue-loyalty");
    assert_eq!(emf["points_accrued"], 79);
}

/// Ten sales through the three functions, one after the other, as the bus would chain them; prints each
/// function's peak memory (the 128 MB Lambda budget) — a figure, and a limit the test holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_handles_a_full_batch_within_128_mb() {
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let moto = MotoServer::shared();
    let backend = moto.backend(&topology, &ProvisionOptions::unique()).await;
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let access = Access::local();
    let (sims, _server) = sims::serve(erp.clone(), loyalty.clone(), access.clone()).await;
    let env = function_env(&backend, moto.endpoint(), &sims).await;

    let sales: Vec<Value> = (0..10)
        .map(|i| {
            let mut sale = sample("SaleCompleted");
            sale["detail"]["data"]["receipt_id"] = format!("r-batch-{i}").into();
            sale["detail"]["metadata"]["event_id"] = format!("evt-batch-{i}").into();
            sale["detail"]["metadata"]["correlation_id"] = format!("batch-{i}").into();
            sale
        })
        .collect();
    let accepted: Vec<Value> = sales
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s["source"] = "retail-sync.ingest".into();
            s
        })
        .collect();
    let posted: Vec<Value> = sales
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut p = sample("ErpSalePosted");
            p["detail"]["data"]["transaction"]["receipt_id"] = s["detail"]["data"]["receipt_id"].clone();
            p["detail"]["data"]["erp_document_id"] = format!("ERP-{:08}", i + 1).into();
            p["detail"]["metadata"]["event_id"] = format!("evt-posted-{i}").into();
            p
        })
        .collect();

    let mut peaks = Vec::new();
    for (binary, events) in [
        ("ingest", &sales),
        ("post-sale-to-erp", &accepted),
        ("accrue-loyalty", &posted),
    ] {
        let function = Function::start(binary, &env);
        let records = events
            .iter()
            .enumerate()
            .map(|(i, e)| sqs_record(&format!("{binary}-{i}"), e))
            .collect();
        let response = function.invoke(records);
        assert_eq!(response, json!({"batchItemFailures": []}), "{binary}");
        peaks.push((binary, function.peak_kib()));
    }
    assert_eq!(erp.postings().len(), 10);
    assert_eq!(loyalty.balance("m-1001").map(|p| p.get()), Some(790));
    // post-sale-to-erp took its OAuth client's credentials from the secret and used one token for the
    // batch; loyalty took the API key; nothing was refused.
    assert_eq!(access.tokens_issued(), 1);
    assert_eq!(access.refused(), 0);
    for (binary, kib) in peaks {
        println!(
            "peak memory of {binary} (debug build, batch of 10): {:.1} MiB",
            kib as f64 / 1024.0
        );
        assert!(
            kib < 128 * 1024,
            "{binary} needs {kib} KiB, more than a 128 MB Lambda has"
        );
    }
}

/// No personal data in any log line: the sample customer's e-mail, in an accepted CustomerUpdated and in
/// one refused for a malformed e-mail and an unknown field, never reaches ingest's logs (the quarantine
/// keeps the body for operators; logs say what and why, not who).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_logs_carry_no_personal_data() {
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let moto = MotoServer::shared();
    let backend = moto.backend(&topology, &ProvisionOptions::unique()).await;
    let (sims, _server) = sims::serve(ErpSimulator::new(), LoyaltySimulator::new(), Access::local()).await;
    let function = Function::start("ingest", &function_env(&backend, moto.endpoint(), &sims).await);
    let customer = sample("CustomerUpdated");
    let email = customer["detail"]["data"]["email"].as_str().unwrap().to_owned();
    let mut malformed = customer.clone();
    malformed["detail"]["metadata"]["event_id"] = "evt-customerupdated-bad".into();
    malformed["detail"]["data"]["email"] = format!("{email} (call +44 20 7946 0958)").into();
    malformed["detail"]["data"]["phone"] = "+44 20 7946 0958".into();
    let response = function.invoke(vec![
        sqs_record("m-customer", &customer),
        sqs_record("m-malformed", &malformed),
    ]);
    assert_eq!(response, json!({"batchItemFailures": []}));
    let logs = function.logs();
    assert!(!logs.is_empty());
    let quarantined = backend.list(10).await.unwrap();
    assert_eq!(quarantined.len(), 1, "the malformed one is kept for operators");
    for line in &logs {
        let text = line.to_string();
        for secret in [email.as_str(), "7946 0958", "ana"] {
            assert!(
                !text.contains(secret),
                "a log line carries personal data ({secret}): {text}"
            );
        }
    }
}

/// `ERP_KIND=sap-s4hana` and `LOYALTY_KIND=salesforce-loyalty` as the template sets them: a sale through
/// ingest, post-sale-to-erp (SAP's OData as an HTTP Basic communication user whose password comes from
/// a Secrets Manager secret; the mapping from `ERP_SAP_MAPPING`) and accrue-loyalty (Salesforce with an
/// OAuth connected app; the mapping from `LOYALTY_SALESFORCE_MAPPING`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_speak_sap_and_salesforce_when_the_template_says_so() {
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let moto = MotoServer::shared();
    let backend = moto.backend(&topology, &ProvisionOptions::unique()).await;
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let dialects = retail_sync_simulators::Dialects::over(&erp, &loyalty);
    let access = Access::local();
    let (sims, _server) =
        sims::serve_with(erp.clone(), loyalty.clone(), dialects.clone(), access.clone()).await;
    let mut env = function_env(&backend, moto.endpoint(), &sims).await;
    env.retain(|(name, _)| !name.starts_with("ERP_") && !name.starts_with("LOYALTY_"));
    let sdk = retail_sync_aws::emulator_sdk_config(
        &retail_sync_aws::AwsSettings::default().with_endpoint_url(moto.endpoint()),
    )
    .await;
    let secret = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("sap-communication-user-{}", uuid::Uuid::now_v7()))
        .secret_string(json!({"username": LOCAL_CLIENT_ID, "password": LOCAL_CLIENT_SECRET}).to_string())
        .send()
        .await
        .unwrap();
    // Minified, as a template parameter carries it.
    let minified = |path: &str| {
        let text = std::fs::read_to_string(workspace().join(path)).unwrap();
        serde_json::from_str::<Value>(&text).unwrap().to_string()
    };
    env.extend([
        ("ERP_KIND", "sap-s4hana".to_owned()),
        ("ERP_SAP_MAPPING", minified("infra/connectors/sap-s4hana.json")),
        ("ERP_BASE_URL", sims.clone()),
        ("ERP_AUTH", "basic".to_owned()),
        ("ERP_CREDENTIALS_SECRET_ARN", secret.arn().unwrap().to_owned()),
        ("LOYALTY_KIND", "salesforce-loyalty".to_owned()),
        (
            "LOYALTY_SALESFORCE_MAPPING",
            minified("infra/connectors/salesforce-loyalty.json"),
        ),
        ("LOYALTY_BASE_URL", sims.clone()),
        ("LOYALTY_AUTH", "oauth2-client-credentials".to_owned()),
        ("LOYALTY_TOKEN_URL", format!("{sims}/services/oauth2/token")),
        ("LOYALTY_TOKEN_AUTH", "body".to_owned()),
        ("LOYALTY_CLIENT_ID", LOCAL_CLIENT_ID.to_owned()),
        ("LOYALTY_CLIENT_SECRET", LOCAL_CLIENT_SECRET.to_owned()),
    ]);

    let sale = sample("SaleCompleted");
    let mut accepted = sale.clone();
    accepted["source"] = "retail-sync.ingest".into();
    for (binary, event) in [("ingest", &sale), ("post-sale-to-erp", &accepted)] {
        let function = Function::start(binary, &env);
        let response = function.invoke(vec![sqs_record(&format!("{binary}-1"), event)]);
        assert_eq!(response, json!({"batchItemFailures": []}), "{binary}");
    }
    assert_eq!(erp.postings().len(), 1);
    assert_eq!(
        dialects.sap.creates(),
        1,
        "one sales order, through SAP's dialect"
    );
    let mut posted = sample("ErpSalePosted");
    posted["detail"]["data"]["erp_document_id"] = "1".into();
    let function = Function::start("accrue-loyalty", &env);
    let response = function.invoke(vec![sqs_record("accrue-1", &posted)]);
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(
        dialects.salesforce.posts(),
        1,
        "one journal, through Salesforce's dialect"
    );
    assert_eq!(loyalty.balance("m-1001").map(|p| p.get()), Some(79));
    assert_eq!(
        access.refused(),
        0,
        "the communication user and the connected app were admitted"
    );
}

/// The reconcile function as EventBridge Scheduler starts it, with a window: a sale whose accrual the
/// platform lost is accrued again (RECONCILE_REPAIR=apply), a document booked by hand in the ERP is
/// reported, the report is in the bucket as JSON and as a table, and the mismatch metric is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_function_reports_to_the_bucket_and_repairs() {
    use retail_sync_contracts::values::{Amount, Currency, ExternalRef, Points, ReceiptId, StoreId};

    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let moto = MotoServer::shared();
    let backend = moto.backend(&topology, &ProvisionOptions::unique()).await;
    let sale = sample("SaleCompleted");
    let event = Event::from_detail(EventType::SaleCompleted, sale["detail"].clone()).unwrap();
    let saga_id = SagaId::from_stored("receipt:store-042:r-000123".into());
    let mut saga = Saga::start(saga_id.clone(), &event, "2026-11-20T10:16:00Z".parse().unwrap());
    saga.status = SagaStatus::Completed;
    saga.ledger.loyalty_transaction_id = Some(ExternalRef::parse("LT-LOST-1").unwrap());
    saga.ledger.points_accrued = Some(Points::new(120).unwrap());
    saga.ledger.eligible_minor = Some(Amount::new(12_000).unwrap());
    backend.create(&saga).await.unwrap();

    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    loyalty.seed_balance("m-1001", Points::ZERO);
    erp.book_by_hand(
        retail_sync_contracts::events::TransactionRef::Receipt {
            store_id: StoreId::parse("store-099").unwrap(),
            receipt_id: ReceiptId::parse("r-hand-1").unwrap(),
        },
        Currency::parse("EUR").unwrap(),
        Amount::new(990).unwrap(),
        "2026-11-20T18:00:00Z".parse().unwrap(),
    );
    let (sims, _server) = sims::serve(erp, loyalty.clone(), Access::local()).await;

    let sdk = retail_sync_aws::emulator_sdk_config(
        &retail_sync_aws::AwsSettings::default().with_endpoint_url(moto.endpoint()),
    )
    .await;
    let bucket_name = format!("reports-{}", uuid::Uuid::now_v7());
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
    .create_bucket()
    .bucket(&bucket_name)
    .send()
    .await
    .unwrap();
    let mut env = function_env(&backend, moto.endpoint(), &sims).await;
    env.push(("REPORT_BUCKET", bucket_name.clone()));
    env.push(("RECONCILE_REPAIR", "apply".to_owned()));
    let function = Function::start("reconcile", &env);

    let answer = function.invoke_with(&json!({"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"}));
    let key = "reconciliation/2026-11-20T00:00:00Z_2026-11-21T00:00:00Z";
    assert_eq!(answer["report"], format!("s3://{bucket_name}/{key}.json"));
    assert_eq!(answer["findings"], 1);
    assert_eq!(answer["repairs"], 1);
    assert_eq!(answer["differences"]["orphan_document"], 1);
    assert_eq!(
        loyalty.balance("m-1001").map(|p| p.get()),
        Some(120),
        "the lost accrual is made again"
    );

    let bucket = retail_sync_aws::ReportBucket::new(&sdk, bucket_name, true);
    let report: Value =
        serde_json::from_slice(&bucket.get(&format!("{key}.json")).await.unwrap().unwrap()).unwrap();
    assert_eq!(report["findings"][0]["transaction"], "receipt:store-099:r-hand-1");
    assert_eq!(report["repairs"][0]["status"], "applied");
    let table = String::from_utf8(bucket.get(&format!("{key}.txt")).await.unwrap().unwrap()).unwrap();
    assert!(table.contains("orphan_document"), "{table}");

    let logs = function.logs();
    let emf = logs
        .iter()
        .find(|l| l.get("reconciliation_mismatches").is_some() && l.get("difference").is_none())
        .unwrap_or_else(|| panic!("no EMF line with the mismatches: {logs:#?}"));
    assert_eq!(emf["step"], "reconcile");
    assert_eq!(emf["reconciliation_mismatches"], 1);

    // A window that is no window is refused, and nothing is written for it.
    let refused = Command::new(tool("cargo-lambda"))
        .args([
            "lambda",
            "invoke",
            "-A",
            "127.0.0.1",
            "-P",
            &function.port.to_string(),
            "--data-ascii",
        ])
        .arg(r#"{"from":"2026-11-21T00:00:00Z","to":"2026-11-20T00:00:00Z"}"#)
        .arg("_")
        .current_dir(workspace())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("window is empty"), "{said}");
}

/// The confirm-points function as EventBridge Scheduler starts it: the pending accrual whose return
/// window has ended is confirmed on the loyalty platform over HTTP and on its saga in DynamoDB; the one
/// still in its window waits; a second run confirms nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirm_points_function_confirms_what_is_due_once() {
    use retail_sync_contracts::values::Points;

    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let moto = MotoServer::shared();
    let backend = moto.backend(&topology, &ProvisionOptions::unique()).await;
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    loyalty.seed_balance("m-1001", Points::ZERO);
    let ended: jiff::Timestamp = "2026-11-20T10:15:00Z".parse().unwrap();
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30);
    let accrue = |receipt: &str, until| sims::pending_accrual(&loyalty, "m-1001", receipt, until);
    let due = accrue("r-due", ended);
    let waiting = accrue("r-waiting", later);
    let sale = sample("SaleCompleted");
    let event = Event::from_detail(EventType::SaleCompleted, sale["detail"].clone()).unwrap();
    let saga_id = SagaId::from_stored("receipt:store-042:r-000123".into());
    let mut saga = Saga::start(saga_id.clone(), &event, ended);
    saga.status = SagaStatus::Completed;
    saga.ledger.pending = vec![due.clone(), waiting];
    backend.create(&saga).await.unwrap();
    let (sims, _server) = sims::serve(erp, loyalty.clone(), Access::local()).await;
    let function = Function::start(
        "confirm-points",
        &function_env(&backend, moto.endpoint(), &sims).await,
    );

    let answer = function.invoke_with(&json!({}));
    assert_eq!(answer["accruals"], 1, "{answer}");
    assert_eq!(answer["points"], 120);
    assert_eq!(answer["waiting"], 1);
    let balance = loyalty
        .member_balance(&retail_sync_contracts::values::MemberId::parse("m-1001").unwrap())
        .unwrap();
    assert_eq!((balance.balance.get(), balance.pending.get()), (120, 120));
    let stored = backend.load(&saga_id).await.unwrap().unwrap();
    assert!(stored.ledger.pending[0].confirmed_at.is_some());
    assert_eq!(stored.ledger.pending[0].points_confirmed, Some(due.points));
    assert!(stored.ledger.pending[1].confirmed_at.is_none());
    assert!(stored.steps.iter().any(|s| s.step == "confirm-points"));

    let again = function.invoke_with(&json!({}));
    assert_eq!(
        (again["accruals"].clone(), again["waiting"].clone()),
        (json!(0), json!(1))
    );
    let balance = loyalty
        .member_balance(&retail_sync_contracts::values::MemberId::parse("m-1001").unwrap())
        .unwrap();
    assert_eq!(balance.balance.get(), 120, "confirmed once");
}
