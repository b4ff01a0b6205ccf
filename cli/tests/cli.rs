//! The `retail-sync` binary as an operator uses it: a local run with a report, then the inspection
//! commands on the state it left, and clear errors for wrong input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The binary with `args` on the local state `state` and the repository's template.
fn command(state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_retail-sync"));
    command
        .args(args)
        .arg("--state")
        .arg(state)
        .arg("--template")
        .arg(root().join("infra/template.yaml"));
    command
}

fn retail_sync(state: &Path, args: &[&str]) -> Output {
    command(state, args).output().unwrap()
}

/// The binary started in the background on `state` (to be killed), its output discarded.
fn spawn(state: &Path, args: &[&str]) -> std::process::Child {
    command(state, args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_local_run_reports_and_leaves_state_the_operator_commands_read() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("local.db");
    let report = dir.path().join("out/report.json");
    let stream = root().join("events/streams/pos-day.jsonl");
    let run = retail_sync(
        &state,
        &[
            "local",
            "run",
            stream.to_str().unwrap(),
            "--fresh",
            "--quiet",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary = stdout(&run);
    assert!(
        summary.contains("sagas      42 (40 completed, 2 failed)"),
        "{summary}"
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["report_version"], 1);
    assert_eq!(
        report["summary"]["quarantined"], 9,
        "bad input and the two failed sales"
    );
    assert_eq!(report["sagas"]["pos-store-042-r-000001"]["status"], "completed");
    assert_eq!(report["sagas"]["pos-closed-007-r-000001"]["status"], "failed");
    assert_eq!(report["dead_letter_queues"]["IngestDLQ"], serde_json::json!([]));

    let list = retail_sync(&state, &["quarantine", "list", "--json"]);
    assert!(list.status.success());
    let items: Vec<Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 9);
    assert!(
        items
            .iter()
            .any(|i| i["reason"] == "invalid_json" && i["body"].as_str().unwrap().starts_with('{'))
    );
    // A page says how much it leaves out.
    let few = retail_sync(&state, &["quarantine", "list", "--limit", "2"]);
    assert!(few.status.success());
    assert_eq!(stdout(&few).lines().count(), 2);
    assert_eq!(
        String::from_utf8_lossy(&few.stderr),
        "2 of 9 quarantined (--limit to see more)\n"
    );

    // Output to a reader that has gone (`… | head -1`): ended as SIGPIPE ends a Unix tool, no panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let gone = command(&state, &["quarantine", "list"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(141));
    assert_eq!(String::from_utf8_lossy(&gone.stderr), "");

    let saga = retail_sync(&state, &["saga", "show", "pos-closed-007-r-000001", "-o", "json"]);
    assert!(saga.status.success());
    let saga: Value = serde_json::from_str(&stdout(&saga)).unwrap();
    assert_eq!(saga["id"], "receipt:closed-007:r-000001");
    assert_eq!(saga["status"], "failed");

    // The timeline's times are all as wide (milliseconds), so its columns line up.
    let text = stdout(&retail_sync(&state, &["saga", "show", "pos-closed-007-r-000001"]));
    let timeline: Vec<&str> = text.lines().filter(|l| l.starts_with("  20")).collect();
    assert!(timeline.len() >= 2, "{text}");
    for line in &timeline {
        let at = line.split_whitespace().next().unwrap();
        assert!(
            at.len() == 24 && at.as_bytes()[19] == b'.' && at.ends_with('Z'),
            "{line}"
        );
    }

    let missing = retail_sync(&state, &["saga", "show", "no-such-thing"]);
    assert_eq!(missing.status.code(), Some(3), "not found");
    let usage = retail_sync(&state, &["saga", "show"]);
    assert_eq!(usage.status.code(), Some(2), "usage");
    // A member that is not there is named as a member, not as the saga that would hold it.
    let member = retail_sync(&state, &["members", "show", "m-nobody"]);
    assert_eq!(member.status.code(), Some(3), "not found");
    assert_eq!(
        String::from_utf8_lossy(&member.stderr),
        "error: no member m-nobody\n"
    );

    let dlqs = retail_sync(&state, &["dlq", "list"]);
    assert!(
        stdout(&dlqs).contains("AccrueLoyaltyDLQ: 0 messages"),
        "{}",
        stdout(&dlqs)
    );
    let redrive = retail_sync(&state, &["dlq", "redrive", "AccrueLoyaltyDLQ"]);
    assert!(
        stdout(&redrive).starts_with("0 messages moved from AccrueLoyaltyDLQ back to AccrueLoyaltyQueue")
    );
    // The rate as the README writes it; a reason no dead letter can have is refused, not matched.
    let paced = retail_sync(
        &state,
        &["dlq", "redrive", "AccrueLoyaltyDLQ", "--rate", "5/s", "--yes"],
    );
    assert!(
        paced.status.success(),
        "{}",
        String::from_utf8_lossy(&paced.stderr)
    );
    let typo = retail_sync(
        &state,
        &[
            "dlq",
            "redrive",
            "AccrueLoyaltyDLQ",
            "--reason",
            "saga_runing",
            "--yes",
        ],
    );
    assert_eq!(typo.status.code(), Some(2), "usage");
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("one of unreadable, waiting_for_saga, saga_running")
    );
    let typo = retail_sync(&state, &["quarantine", "list", "--reason", "schema_violaton"]);
    assert_eq!(typo.status.code(), Some(2), "usage");
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no reason code \"schema_violaton\""));
    // A limit of 0 would select nothing without a word: refused, as a rate of 0 is.
    for args in [
        &["dlq", "redrive", "AccrueLoyaltyDLQ", "--limit", "0", "--yes"][..],
        &["quarantine", "list", "--limit", "0"],
    ] {
        let zero = retail_sync(&state, args);
        assert_eq!(zero.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&zero.stderr).contains("the limit is at least 1"));
    }
    // Usage errors, whatever part of the command they are in, exit 2 and say what is allowed.
    for (args, says) in [
        (
            &["local", "run", "--erp-kind", "bogus"][..],
            "\"bogus\" is not one of system-api, sap-s4hana",
        ),
        (
            &["local", "run", "--loyalty-kind", "sf"],
            "\"sf\" is not one of system-api, salesforce-loyalty",
        ),
        (
            &["reconcile", "--from", "2026-11-20T00:00:00Z"],
            "required arguments were not provided:\n  --to",
        ),
        (
            &[
                "saga",
                "retry",
                "pos-closed-007-r-000001",
                "--step",
                "bogus",
                "--yes",
            ],
            "\"bogus\" is not a step; the steps are map-shopify",
        ),
        (
            &["quarantine", "list", "--step", "ingset"],
            "\"ingset\" is not a step; the steps are map-shopify",
        ),
        (
            &["reconcile", "--points-per-major", "0"],
            "invalid value '0' for '--points-per-major",
        ),
        (
            &["saga", "retry", "pos-closed-007-r-000001", "--json", "--yes"],
            "unexpected argument '--json'",
        ),
    ] {
        let usage = retail_sync(&state, args);
        assert_eq!(usage.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&usage.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    let typo = retail_sync(
        &state,
        &[
            "replay",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-22T00:00:00Z",
            "--detail-type",
            "SaleComplete",
            "--yes",
        ],
    );
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&typo.stderr)
            .starts_with("error: the archive keeps no SaleComplete events (it keeps SaleCompleted, "),
        "{}",
        String::from_utf8_lossy(&typo.stderr)
    );

    let wrong = retail_sync(&state, &["dlq", "redrive", "IngestQueue"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not a DLQ of the template"));
    assert_eq!(wrong.status.code(), Some(3));
}

#[test]
fn inspecting_without_a_run_or_running_a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("none.db");
    let list = retail_sync(&state, &["quarantine", "list"]);
    assert!(!list.status.success());
    assert!(String::from_utf8_lossy(&list.stderr).contains("no local state"));
    // A state that is no SQLite file is named in the refusal.
    let not_a_state = dir.path().join("notes.db");
    std::fs::write(&not_a_state, "not a database, just some text that is long enough").unwrap();
    let list = retail_sync(&not_a_state, &["quarantine", "list"]);
    assert_eq!(list.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&list.stderr);
    let named = format!("error: cannot open the state {}: ", not_a_state.display());
    assert!(stderr.starts_with(&named), "{stderr}");

    // A report that cannot be written is refused before the run, not after it.
    let stream = root().join("events/streams/pos-day.jsonl");
    let run_reporting_to = |report: &str| {
        retail_sync(
            &state,
            &["local", "run", stream.to_str().unwrap(), "--report", report],
        )
    };
    let unwritable = run_reporting_to("/dev/null/out/report.json");
    assert_eq!(unwritable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unwritable.stderr).starts_with("error: cannot create /dev/null/out"));
    assert!(!state.exists(), "nothing ran");
    // So is a report path that is a directory: its parent exists, the file cannot be opened.
    let a_directory = dir.path().join("reports");
    std::fs::create_dir(&a_directory).unwrap();
    let unwritable = run_reporting_to(a_directory.to_str().unwrap());
    assert_eq!(unwritable.status.code(), Some(1));
    let named = format!("error: cannot write the report to {}", a_directory.display());
    assert!(String::from_utf8_lossy(&unwritable.stderr).starts_with(&named));
    assert!(!state.exists(), "nothing ran");
    assert!(a_directory.is_dir());
    // An option given twice: the later one wins (run-local.sh puts its own `--report` first).
    let (first, second) = (dir.path().join("first.json"), dir.path().join("second.json"));
    let twice = retail_sync(
        &state,
        &[
            "local",
            "run",
            root().join("events/streams/members-day.jsonl").to_str().unwrap(),
            "--fresh",
            "--quiet",
            "--report",
            first.to_str().unwrap(),
            "--report",
            second.to_str().unwrap(),
            "--fresh",
        ],
    );
    assert!(
        twice.status.success(),
        "{}",
        String::from_utf8_lossy(&twice.stderr)
    );
    assert!(second.exists() && !first.exists());
    std::fs::remove_file(&state).unwrap();

    // A benchmark of nothing is refused before it starts.
    let bench = retail_sync(&state, &["bench", "local", "--sagas", "0"]);
    assert_eq!(bench.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bench.stderr),
        "error: --sagas must be at least 1\n"
    );

    let run = retail_sync(&state, &["local", "run", "/nonexistent/events.jsonl"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("cannot read /nonexistent/events.jsonl"));

    // An error that names its cause does not print the cause a second time.
    let template = Command::new(env!("CARGO_BIN_EXE_retail-sync"))
        .args([
            "local",
            "run",
            "--template",
            "/nonexistent/template.yaml",
            "--state",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(template.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&template.stderr);
    assert!(
        stderr.contains("error: cannot read template /nonexistent/template.yaml: "),
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

/// `n` POS sales made from the sample `SaleCompleted`, for members `m-gen-0` … `m-gen-49`.
fn generated_sales(path: &Path, n: usize) {
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("events/samples/SaleCompleted.json")).unwrap(),
    )
    .unwrap();
    let mut lines = String::new();
    for i in 0..n {
        let mut e = sample.clone();
        e["id"] = format!("00000000-0000-4000-8000-{i:012}").into();
        e["detail"]["metadata"]["event_id"] = format!("evt-gen-{i}").into();
        e["detail"]["metadata"]["correlation_id"] = format!("gen-{i}").into();
        e["detail"]["data"]["receipt_id"] = format!("r-gen-{i}").into();
        e["detail"]["data"]["member_id"] = format!("m-gen-{}", i % 50).into();
        lines.push_str(&e.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

/// `retail-sync local run STREAM --quiet --report DIR/NAME.json` (with `--fresh` when asked) on `state`;
/// the run must succeed. Returns its report.
fn run_day(state: &Path, stream: &str, fresh: bool, report: &Path) -> Value {
    let mut args = vec![
        "local",
        "run",
        stream,
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ];
    if fresh {
        args.push("--fresh");
    }
    let run = retail_sync(state, &args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

/// A run killed (`kill -9`) part-way and resumed without `--fresh` ends with the books of a run that was
/// never stopped: the reference ERP and loyalty platform come back with the state, so nothing the
/// killed run committed is lost or applied twice. The same day run again on that state changes nothing.
#[test]
fn a_killed_run_resumes_with_the_simulators_it_left_and_a_repeated_day_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("sales.jsonl");
    generated_sales(&stream, 2_000);
    let stream = stream.to_str().unwrap();

    let clean = run_day(
        &dir.path().join("clean.db"),
        stream,
        true,
        &dir.path().join("clean.json"),
    );

    let state = dir.path().join("killed.db");
    let mut child = spawn(&state, &["local", "run", stream, "--fresh", "--quiet"]);
    // Kill it once some sagas are committed (the CLI reads the state while the run writes it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !retail_sync(&state, &["saga", "show", "gen-20"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the run committed nothing");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    let killed = child.wait().unwrap();
    assert!(!killed.success(), "the run was stopped part-way");

    let resumed = run_day(&state, stream, false, &dir.path().join("resumed.json"));
    assert_eq!(resumed["balances"], clean["balances"]);
    assert_eq!(resumed["erp_postings"].as_array().unwrap().len(), 2_000);
    assert_eq!(
        resumed["summary"]["sagas_by_status"],
        clean["summary"]["sagas_by_status"]
    );
    assert_eq!(resumed["summary"]["quarantined"], 0);

    // The same day again on that state: every event a duplicate, the books unchanged.
    let again = run_day(&state, stream, false, &dir.path().join("again.json"));
    assert_eq!(again["balances"], clean["balances"]);
    assert_eq!(again["erp_postings"], resumed["erp_postings"]);
}

/// `local chaos` killed with SIGKILL part-way through its faulty run and started again without
/// `--fresh` resumes from its state on disk and ends with balanced books: nothing the killed process
/// committed is lost or applied twice, whatever it was doing when it died.
#[test]
fn a_chaos_run_killed_part_way_resumes_and_its_books_balance() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("chaos.db");
    let args = [
        "local",
        "chaos",
        "--events",
        "1500",
        "--seed",
        "9",
        "--outage-secs",
        "1",
        "--outage-at-secs",
        "1",
        "--quiet",
    ];
    let mut child = spawn(&state, &[&args[..], &["--fresh"]].concat());
    // Kill it a moment after the day is fed (the marker beside the state says so): mid-run.
    let marker = retail_sync_cli::chaos::fed_marker(&state);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "the day was never fed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    child.kill().unwrap();
    let killed = child.wait().unwrap();
    assert!(!killed.success(), "the run was killed part-way, not finished");

    let resumed = retail_sync(&state, &args);
    let out = stdout(&resumed);
    assert!(
        resumed.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(out.contains("lost 0 · doubles 0 · mismatched 0"), "{out}");
    assert!(out.contains("verdict    BALANCED"), "{out}");
}

/// The sample days through the SAP and Salesforce connectors, from the command line as the README shows
/// it: the same sagas and balances as through the system API; a kind that does not exist and a mapping
/// that cannot be read are clear errors.
#[test]
fn the_sample_days_run_through_sap_and_salesforce_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let streams = root().join("events/streams");
    let report = |name: &str, kinds: &[&str]| -> Value {
        let path = dir.path().join(format!("{name}.json"));
        let mut args = vec!["local", "run", streams.to_str().unwrap(), "--fresh", "--quiet"];
        args.extend(["--report", path.to_str().unwrap()]);
        args.extend(kinds);
        let run = retail_sync(&dir.path().join(format!("{name}.db")), &args);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        if !kinds.is_empty() {
            assert!(stdout(&run).contains("ERP: sap-s4hana · loyalty: salesforce-loyalty"));
        }
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let system_api = report("system-api", &[]);
    let dialects = report(
        "dialects",
        &["--erp-kind", "sap-s4hana", "--loyalty-kind", "salesforce-loyalty"],
    );
    // Members holding points (the day's sign-ups are enrolled through the system API only; with
    // Salesforce they are the org's to enrol, and hold nothing yet).
    let holding = |r: &Value| -> Vec<(String, Value)> {
        r["balances"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, p)| p.as_u64() != Some(0))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(holding(&dialects), holding(&system_api));
    let statuses = |r: &Value| -> Vec<(String, Value)> {
        r["sagas"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["status"].clone()))
            .collect()
    };
    assert_eq!(statuses(&dialects), statuses(&system_api));

    // The compensated order is not retried, and the refusal says why.
    let retried = retail_sync(
        &dir.path().join("system-api.db"),
        &["saga", "retry", "reject-1004", "--yes"],
    );
    assert_eq!(retried.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&retried.stderr),
        "error: saga order:reject-1004 was compensated: what it did was undone, there is nothing to attempt again\n"
    );
    // Nor is any of its quarantined refusals, whichever step wrote it: the reason is the same.
    let system_api = dir.path().join("system-api.db");
    let listed = retail_sync(
        &system_api,
        &["quarantine", "list", "--correlation-id", "reject-1004", "--json"],
    );
    let entries: Vec<Value> = stdout(&listed)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!entries.is_empty(), "{}", stdout(&listed));
    for entry in entries {
        let id = entry["id"].as_str().unwrap();
        let retried = retail_sync(&system_api, &["quarantine", "retry", id, "--yes"]);
        assert_eq!(retried.status.code(), Some(1), "{id}");
        assert!(
            String::from_utf8_lossy(&retried.stderr).contains("was compensated: what it did was undone"),
            "{id}: {}",
            String::from_utf8_lossy(&retried.stderr)
        );
    }

    let state = dir.path().join("bad.db");
    let stream = root().join("events/streams/pos-day.jsonl");
    let bad = retail_sync(
        &state,
        &["local", "run", stream.to_str().unwrap(), "--erp-kind", "sap"],
    );
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("ERP_KIND") && e.contains("sap-s4hana"), "{e}");
    let unmapped = command(
        &state,
        &[
            "local",
            "run",
            stream.to_str().unwrap(),
            "--erp-kind",
            "sap-s4hana",
        ],
    )
    .env("ERP_SAP_MAPPING_FILE", dir.path().join("missing.json"))
    .output()
    .unwrap();
    assert!(!unmapped.status.success());
    let e = String::from_utf8_lossy(&unmapped.stderr);
    assert!(
        e.contains("ERP_SAP_MAPPING_FILE") && e.contains("missing.json"),
        "{e}"
    );
}

/// The members day, then an operator's merge of its suspected duplicate and a run that processes what is
/// queued: the duplicate's points reach the survivor once, and `members show` tells the story without a
/// personal value.
#[test]
fn an_operator_merges_the_suspected_duplicate_of_a_members_day() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("local.db");
    let report = dir.path().join("report.json");
    let day = root().join("events/streams/members-day.jsonl");
    let run = retail_sync(
        &state,
        &["local", "run", day.to_str().unwrap(), "--fresh", "--quiet"],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout(&run).contains("m-5003 suspected duplicate of m-5001"),
        "{}",
        stdout(&run)
    );

    let listed = stdout(&retail_sync(&state, &["members", "duplicates"]));
    assert!(
        listed.contains("m-5003") && listed.contains("same email"),
        "{listed}"
    );
    let shown = stdout(&retail_sync(&state, &["members", "show", "m-5003"]));
    assert!(shown.contains("suspected duplicate of m-5001"), "{shown}");

    let refused = retail_sync(
        &state,
        &[
            "members",
            "merge",
            "--survivor",
            "m-5001",
            "--duplicate",
            "m 5003",
            "--yes",
        ],
    );
    assert!(
        !refused.status.success(),
        "a bad id is refused before anything is sent"
    );
    for _ in 0..2 {
        // Asked twice (two operators, or one who was unsure): moved once.
        let merge = retail_sync(
            &state,
            &[
                "members",
                "merge",
                "--survivor",
                "m-5001",
                "--duplicate",
                "m-5003",
                "--yes",
            ],
        );
        assert!(
            merge.status.success(),
            "{}",
            String::from_utf8_lossy(&merge.stderr)
        );
        assert!(
            stdout(&merge).contains("MemberMergeRequested"),
            "{}",
            stdout(&merge)
        );
    }
    let drain = retail_sync(
        &state,
        &["local", "run", "--quiet", "--report", report.to_str().unwrap()],
    );
    assert!(
        drain.status.success(),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["balances"]["m-5001"], 165, "{}", report["balances"]);
    assert_eq!(report["balances"]["m-5003"], 0);
    assert_eq!(report["members"]["m-5003"]["crm"]["status"], "merged");
    assert!(report.get("duplicates").is_none(), "{}", report["duplicates"]);
    let listed = stdout(&retail_sync(&state, &["members", "duplicates"]));
    assert!(listed.contains("no suspected duplicates"), "{listed}");

    // The duplicate consented, but a merged account sends no campaigns: shown as the report says it.
    let duplicate = stdout(&retail_sync(&state, &["members", "show", "m-5003"]));
    let consent = duplicate
        .lines()
        .find(|l| l.starts_with("  consent "))
        .unwrap_or_default();
    assert!(
        consent.starts_with("  consent     true (mobile at ")
            && consent.ends_with(" — not in force: the account is merged"),
        "{duplicate}"
    );
    let show = retail_sync(&state, &["members", "show", "m-5001"]);
    let shown = stdout(&show);
    assert!(shown.contains("absorbed m-5003: 45 points moved here"), "{shown}");
    assert!(shown.contains("consent withdrawn by crm"), "{shown}");
    assert!(
        !shown.to_lowercase().contains("ana.lima@example.com"),
        "no personal value on a terminal: {shown}"
    );
    // The duplicate's address (given later, in other letters) survived the merge.
    let json = retail_sync(&state, &["members", "show", "m-5001", "--json"]);
    assert!(
        stdout(&json).to_lowercase().contains("ana.lima@example.com"),
        "--json is the whole record: {}",
        stdout(&json)
    );
}

/// `bench api` prints the redemption API's figures per operation (not asserted: figures are measured,
/// never tested), and refuses a run of no requests.
#[test]
fn bench_api_prints_the_overhead_per_operation() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("unused.db");
    let out = retail_sync(
        &state,
        &["bench", "api", "--requests", "20", "--platform-latency-ms", "1"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.contains("platform latency 1 ms"), "{text}");
    for op in ["POST /v1/holds ", "POST /v1/holds/{id}/release"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(op))
            .unwrap_or_default();
        assert_eq!(line.matches(" ms").count(), 5, "{text}");
    }
    let none = retail_sync(&state, &["bench", "api", "--requests", "0"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--requests must be at least 1"));
}

/// `bench cold-start` times a function from process start to its first runtime API poll: a real one
/// (the debug `ingest` the test script builds) polls; a binary that exits at start is reported with its
/// last words and the command fails; a missing one is refused.
#[test]
fn bench_cold_start_times_the_first_poll_and_reports_a_function_that_does_not_start() {
    use std::os::unix::fs::PermissionsExt;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let debug = target.join("debug");
    assert!(
        debug.join("ingest").exists(),
        "build the functions first (cargo build -p ingest)"
    );
    let bench = |bin_dir: &Path, functions: &str| {
        Command::new(env!("CARGO_BIN_EXE_retail-sync"))
            .args(["bench", "cold-start", "--runs", "2", "--functions", functions])
            .arg("--bin-dir")
            .arg(bin_dir)
            .current_dir(root())
            .output()
            .unwrap()
    };
    let out = bench(&debug, "ingest");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ingest"))
        .unwrap_or_default();
    assert!(line.contains(" ms") && line.contains("MiB"), "{text}");
    // Peak memory, then the binary's pages and the process's own; its threads; size, then zipped.
    assert_eq!(line.matches("MiB").count(), 3, "{text}");
    assert_eq!(line.matches(" MB").count(), 2, "{text}");
    // A function runs on one thread (`retail_sync_lambda::start`): the column after the three MiB.
    let threads = line.split_whitespace().nth(11);
    assert_eq!(threads, Some("1"), "{text}");
    // What ingest's first event of a type adds: its schema compiled, then validation alone.
    let schemas = text
        .lines()
        .find(|l| l.contains("first event of a type also compiles"))
        .unwrap_or_default();
    for t in ["SaleCompleted", "OrderPlaced", "OrderShipped", "ReturnReceived"] {
        assert!(schemas.contains(&format!("{t} ")), "{text}");
    }
    assert!(schemas.contains(" types one after the other "), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "#!/bin/sh\necho 'FOO_TABLE is not set' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = bench(dir.path(), "broken");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("did not poll") && stdout(&out).contains("FOO_TABLE is not set"),
        "{}",
        stdout(&out)
    );
    let out = bench(dir.path(), "missing");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found: build it first"));

    // The function is pointed at the root CA bundle as the template points it (SSL_CERT_FILE), or at
    // none with --no-ca-bundle; a bundle that does not exist is refused.
    let echo = dir.path().join("echo");
    std::fs::write(
        &echo,
        "#!/bin/sh
echo \"bundle=[$SSL_CERT_FILE]\" >&2
exit 3
",
    )
    .unwrap();
    std::fs::set_permissions(&echo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, "").unwrap();
    let with = |ca: &Path| {
        let choice: Vec<&std::ffi::OsStr> = if ca.as_os_str().is_empty() {
            vec!["--no-ca-bundle".as_ref()]
        } else {
            vec!["--ca-bundle".as_ref(), ca.as_os_str()]
        };
        Command::new(env!("CARGO_BIN_EXE_retail-sync"))
            .args(["bench", "cold-start", "--runs", "1", "--functions", "echo"])
            .args(choice)
            .arg("--bin-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = with(&bundle);
    assert!(
        stdout(&out).contains(&format!("bundle=[{}]", bundle.display())),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("root CAs from"), "{}", stdout(&out));
    let out = with(Path::new(""));
    assert!(
        stdout(&out).contains("bundle=[]") && stdout(&out).contains("no SSL_CERT_FILE"),
        "{}",
        stdout(&out)
    );
    let out = with(&dir.path().join("nowhere.pem"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}

/// A local run through the SAP and Salesforce connectors reconciles through them: `reconcile` with the
/// same kinds reads both systems' books back over their dialects, and they agree.
#[test]
fn a_local_run_speaking_sap_and_salesforce_reconciles_through_their_connectors() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("local.db");
    let run = retail_sync(
        &state,
        &[
            "local",
            "run",
            root().join("events/streams").to_str().unwrap(),
            "--fresh",
            "--quiet",
            "--erp-kind",
            "sap-s4hana",
            "--loyalty-kind",
            "salesforce-loyalty",
        ],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = command(
        &state,
        &[
            "reconcile",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-22T00:00:00Z",
        ],
    )
    .env("ERP_KIND", "sap-s4hana")
    .env("LOYALTY_KIND", "salesforce-loyalty")
    .output()
    .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // How many documents and movements depends on the order of processing (a reinstatement, a refund
    // decided before its return); the sagas and the verdict do not.
    assert!(text.contains(": 51 sagas, "), "{text}");
    assert!(text.contains("differences  none: the books agree"), "{text}");
}

/// A `--state` that is not a state file is refused with what to do about it, and left as it was.
#[test]
fn a_state_that_is_no_sqlite_file_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("notes.txt");
    std::fs::write(&state, "not a database\n").unwrap();
    let run = retail_sync(&state, &["local", "run", "--quiet"]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.starts_with("error: cannot open the state ")
            && stderr.contains("run again with --fresh, which deletes it")
            && stderr.contains("file is not a database"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "not a database\n");
}
