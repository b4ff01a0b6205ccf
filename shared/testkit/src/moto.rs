//! A moto server (AWS API emulator) for adapter and end-to-end tests, reached through the real SDK.
//!
//! `RETAIL_SYNC_MOTO_ENDPOINT` points at a running server; otherwise one is started from the workspace's
//! `.tools/venv` (installed by `scripts/tools.sh`) on a free port. Tests share one server per process
//! ([`MotoServer::shared`]) and isolate themselves by a resource name prefix
//! ([`ProvisionOptions::unique`]); starting moto costs about two seconds of CPU.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

use retail_sync_topology::Topology;

use retail_sync_aws::{
    AwsBackend, AwsClients, AwsSettings, ProvisionOptions, emulator_sdk_config, provision,
};

/// Names a running moto server (`http://127.0.0.1:5000`) to use instead of starting one.
pub const ENDPOINT_ENV: &str = "RETAIL_SYNC_MOTO_ENDPOINT";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs moto and kills it (and removes its log) when its stdin closes. Our end of that pipe closes when
/// the `MotoServer` is dropped and also when this process exits however it exits, so even the
/// never-dropped shared server does not outlive the test binary. (The background job's own stdin is
/// /dev/null, as POSIX requires for `&` without job control, so moto does not hold the pipe open.)
const WATCHDOG: &str = r#""$0" "$@" & server=$!; read -r _ || true; kill "$server" 2>/dev/null; wait "$server"; rm -f "$MOTO_LOG""#;

/// The python of the workspace's tool virtualenv, which has moto.
pub fn moto_python_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.tools/venv/bin/python"
    ))
}

/// The launcher that runs moto's server with its DynamoDB requests applied one at a time, atomically as
/// DynamoDB applies them (plain `moto_server` loses acknowledged writes under concurrent clients; the
/// script says how).
pub fn moto_launcher_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/moto_server.py"
    ))
}

struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A moto server, stopped on drop if this started it.
pub struct MotoServer {
    endpoint: String,
    _process: Option<Process>,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl MotoServer {
    /// Uses `RETAIL_SYNC_MOTO_ENDPOINT` or starts a server. Panics (this is test tooling) if moto is not
    /// installed or does not listen within 20 s.
    pub fn start() -> Self {
        if let Some(endpoint) = std::env::var(ENDPOINT_ENV).ok().filter(|e| !e.is_empty()) {
            return Self {
                endpoint,
                _process: None,
            };
        }
        let (bin, launcher) = (moto_python_path(), moto_launcher_path());
        assert!(
            bin.exists(),
            "moto server not installed: run bash scripts/tools.sh (looked for {})",
            bin.display()
        );
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!("retail-sync-moto-{port}.log"));
        let log =
            File::create(&log_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let err_log = log.try_clone().expect("a log file handle clones");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&bin)
            .arg(&launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_LOG", &log_path)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        let process = Process { child, stdin };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !wait_until_listening(addr, STARTUP_TIMEOUT) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("moto server did not listen on {addr} within {STARTUP_TIMEOUT:?}; its log:\n{log}");
        }
        Self {
            endpoint: format!("http://{addr}"),
            _process: Some(process),
        }
    }

    /// One server for the whole test process, started on first use.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration for this server: its endpoint, dummy credentials, us-east-1.
    pub async fn sdk_config(&self) -> SdkConfig {
        emulator_sdk_config(&AwsSettings::default().with_endpoint_url(self.endpoint.clone())).await
    }

    /// Fresh clients (with their own request counter) for this server.
    pub async fn clients(&self) -> AwsClients {
        AwsClients::new(&self.sdk_config().await)
    }

    /// Provisions the topology under `options`' prefix and returns a backend over it. Panics on failure.
    pub async fn backend(&self, topology: &Topology, options: &ProvisionOptions) -> AwsBackend {
        let clients = self.clients().await;
        let settings = provision(&clients, topology, options)
            .await
            .unwrap_or_else(|e| panic!("provisioning on moto at {} failed: {e:?}", self.endpoint));
        AwsBackend::new(&clients, settings)
    }
}

/// A port nobody listens on now. Another process could take it before moto binds it; the startup
/// timeout then reports moto's log (which says so).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("can bind an ephemeral port on 127.0.0.1");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

fn wait_until_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
