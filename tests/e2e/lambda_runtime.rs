//! A function binary under the real Lambda runtime API (cargo-lambda's emulator), on the AWS backend
//! (moto) with the loyalty simulator over HTTP: an SQS batch with one record that cannot be processed yet
//! gets a partial batch response naming exactly that record. Also reads the function's peak memory.
//!
//! Needs the function built (`cargo build -p accrue-loyalty`; `scripts/test.sh` does it) and
//! cargo-lambda (`scripts/tools.sh`).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use retail_sync_aws::ProvisionOptions;
use retail_sync_aws::moto::MotoServer;
use retail_sync_contracts::{Event, EventType};
use retail_sync_core::ports::SagaStore;
use retail_sync_core::saga::{Saga, SagaId, SagaStatus};
use retail_sync_simulators::{ErpSimulator, LoyaltySimulator};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accrue_loyalty_under_the_runtime_api_reports_only_the_record_that_must_come_back() {
    let binary = target_dir().join("debug/accrue-loyalty");
    assert!(
        binary.exists(),
        "{} missing: run `cargo build -p accrue-loyalty`",
        binary.display()
    );

    // The AWS side on moto, provisioned from the template, with the sale's saga already started.
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let moto = MotoServer::shared();
    let backend = moto.backend(&topology, &ProvisionOptions::unique()).await;
    let sale = sample("SaleCompleted");
    let event = Event::from_detail(EventType::SaleCompleted, sale["detail"].clone()).unwrap();
    let saga_id = SagaId::from_stored("receipt:store-042:r-000123".into());
    backend
        .create(&Saga::start(saga_id.clone(), &event, jiff::Timestamp::now()))
        .await
        .unwrap();

    // The loyalty platform, over HTTP.
    let loyalty = LoyaltySimulator::new();
    let (sim_addr, _server) = retail_sync_simulators::serve(
        ErpSimulator::new(),
        loyalty.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();

    // cargo-lambda's runtime API emulator; the function runs as Lambda runs it: a bootstrap process
    // polling /runtime/invocation/next.
    let port = free_port();
    let _emulator = Guard(
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
    let s = backend.settings();
    let mut function = Guard(
        Command::new(&binary)
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            // With --only-lambda-apis the emulator serves one function, named `_`.
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("IDEMPOTENCY_TABLE", &s.idempotency_table)
            .env("SAGA_TABLE", &s.saga_table)
            .env("QUARANTINE_TABLE", &s.quarantine_table)
            .env("EVENT_BUS_NAME", &s.event_bus_name)
            .env("ERP_BASE_URL", format!("http://{sim_addr}"))
            .env("LOYALTY_BASE_URL", format!("http://{sim_addr}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the function starts"),
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = function.0.stdout.take().unwrap();
    let collected = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });

    // One record whose saga exists, one for a sale ingest has not seen yet (it must wait, not fail).
    let posted = sample("ErpSalePosted");
    let mut early = posted.clone();
    early["detail"]["data"]["transaction"]["receipt_id"] = "r-not-yet".into();
    early["detail"]["metadata"]["correlation_id"] = "pos-store-042-r-not-yet".into();
    let event = json!({"Records": [sqs_record("m-ok", &posted), sqs_record("m-early", &early)]});
    let data = std::env::temp_dir().join(format!("sqs-event-{port}.json"));
    std::fs::write(&data, event.to_string()).unwrap();

    let output = Command::new(tool("cargo-lambda"))
        .args([
            "lambda",
            "invoke",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
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
    let response: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "m-early"}]})
    );

    // The good record took effect once, on the real backend and the real HTTP connector.
    let saga = backend.load(&saga_id).await.unwrap().unwrap();
    assert_eq!(saga.status, SagaStatus::Completed);
    assert_eq!(loyalty.balance("m-1001").map(|p| p.get()), Some(79));

    // Logs are JSON and carry the correlation id; metrics go out as EMF.
    std::thread::sleep(Duration::from_millis(200));
    let lines = lines.lock().unwrap().clone();
    let logs: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!logs.is_empty(), "no JSON output: {lines:?}");
    assert!(
        logs.iter()
            .any(|l| l["span"]["correlation_id"] == "pos-store-042-r-not-yet"),
        "no log line carries the waiting record's correlation id: {lines:#?}"
    );
    let emf = logs
        .iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF document");
    assert_eq!(emf["step"], "accrue-loyalty");
    assert_eq!(emf["points_accrued"], 79);

    // Peak resident memory of the function process (the figure the 128 MB budget is about).
    let pid = function.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    println!(
        "accrue-loyalty (debug build) peak RSS after one batch: {} KiB",
        hwm_kb
    );
    assert!(
        hwm_kb < 128 * 1024,
        "the function needs {hwm_kb} KiB, more than a 128 MB Lambda has"
    );
}
