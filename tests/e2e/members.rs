//! Customers, tiers and consent end to end: the sample members day (`events/streams/members-day.jsonl`)
//! through ingest and sync-member leaves the loyalty platform, the ERP and the CRM holding the same
//! truth — on the embedded backend, on moto server, and with every event delivered twice in a shuffled
//! order. Ownership refusals are quarantined with their findings; the older tier change never wins; a
//! suspected duplicate is announced and merged once; a consent withdrawal reaches every system; an
//! erasure leaves no personal data in any system, nor in retail-sync's records.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use retail_sync_aws::ProvisionOptions;
use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::{ApiCall, Input, read_inputs};
use retail_sync_cli::local::{LocalOptions, LocalSystem, Simulators, open_embedded};
use retail_sync_cli::report::Report;
use retail_sync_core::ports::QuarantineStore;
use retail_sync_testkit::moto::MotoServer;
use retail_sync_tests::workspace;
use retail_sync_topology::Topology;

fn day() -> Vec<Input> {
    read_inputs(&workspace().join("events/streams/members-day.jsonl")).unwrap()
}

/// The operator's merge of the day's suspected duplicate (m-5003 into m-5001), as `retail-sync members
/// merge` puts it on the bus.
fn merge() -> Vec<Input> {
    read_inputs(&workspace().join("events/samples/MemberMergeRequested.json")).unwrap()
}

fn embedded(dir: &tempfile::TempDir) -> (LocalSystem<retail_sync_embedded::Embedded>, Simulators) {
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(100);
    let sims = Simulators::with_sample_members();
    (open_embedded(&options, sims.clone()).unwrap(), sims)
}

/// Feeds each group in turn, each run until idle before the next (the operator's merge comes once the
/// suspected duplicate is there to see, as it does in life).
async fn run<B: Backend>(system: &LocalSystem<B>, groups: &[Vec<Input>]) -> Report {
    let mut fed = Default::default();
    for inputs in groups {
        fed = system.feed(inputs).await.unwrap();
        system.run_until_idle(|_| {}).await.unwrap();
    }
    system.report(fed).await.unwrap()
}

/// The day, then the merge once the suspected duplicate is there to see.
fn with_merge() -> Vec<Vec<Input>> {
    vec![day(), merge()]
}

/// What the comparison of two runs looks at: per member what each system holds, the balances, the
/// suspected duplicates left, and the quarantine's reasons.
fn truth(report: &Report, sims: &Simulators) -> Value {
    let mut reasons: Vec<&str> = report.quarantine.iter().map(|q| q.reason.as_str()).collect();
    reasons.sort();
    json!({
        "members": report.members,
        "duplicates": report.duplicates,
        "balances": sims.loyalty.balances(),
        "quarantine": reasons,
        "dead_lettered": report.summary.dead_lettered,
    })
}

fn copy<'r>(report: &'r Report, member: &str, system: &str) -> &'r retail_sync_cli::report::MemberCopy {
    let m = &report.members[member];
    let c = match system {
        "retail_sync" => &m.retail_sync,
        "loyalty" => &m.loyalty,
        "erp" => &m.erp,
        _ => &m.crm,
    };
    c.as_ref()
        .unwrap_or_else(|| panic!("{system} holds nothing of {member}: {m:?}"))
}

const SYSTEMS: [&str; 4] = ["retail_sync", "loyalty", "erp", "crm"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_day_leaves_every_system_holding_the_same_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (system, _sims) = embedded(&dir);
    let report = run(&system, &with_merge()).await;

    for s in SYSTEMS {
        // Gold (12:00) beats silver (11:00), which arrived after it; the CRM withdrew consent at 14:00 and
        // the app's older grant changed nothing: no system keeps a campaign address.
        let ana = copy(&report, "m-5001", s);
        assert_eq!(ana.tier.as_deref(), Some("gold"), "{s}: {ana:?}");
        assert!(!ana.marketing_consent && !ana.marketing_email, "{s}: {ana:?}");
        assert_eq!(ana.status, "active");
        assert_eq!(ana.home_store_id.as_deref(), Some("store-042"), "{s}");
        // The duplicate is closed as merged into her everywhere.
        let dup = copy(&report, "m-5003", s);
        assert_eq!(
            (dup.status.as_str(), dup.merged_into.as_deref()),
            ("merged", Some("m-5001")),
            "{s}"
        );
        // The duplicate consented in the app; a merged account gets no campaigns, and the survivor's
        // later withdrawal governs the person.
        assert!(!dup.marketing_consent && !dup.marketing_email, "{s}: {dup:?}");
        // Erased: no name, e-mail or phone anywhere, and no consent.
        let carla = copy(&report, "m-5004", s);
        assert_eq!(carla.status, "erased", "{s}");
        assert!(!carla.personal_data && !carla.marketing_consent, "{s}: {carla:?}");
        // The CRM's tier and the web shop's home store were refused: Bruno has neither.
        let bruno = copy(&report, "m-5002", s);
        assert_eq!(
            (bruno.tier.as_ref(), bruno.home_store_id.as_ref()),
            (None, None),
            "{s}: {bruno:?}"
        );
        assert!(bruno.personal_data, "{s}: the CRM's name and phone were taken");
    }
    // Her 120 points and the duplicate's 45, once.
    assert_eq!(copy(&report, "m-5001", "loyalty").balance, Some(165));
    assert_eq!(copy(&report, "m-5003", "loyalty").balance, Some(0));
    // The duplicate was announced, and the merge resolved it.
    assert!(report.duplicates.is_empty(), "{:?}", report.duplicates);
    assert!(
        report
            .metrics
            .iter()
            .any(|(k, v)| k.starts_with("duplicates_suspected") && *v >= 1)
    );

    // Ownership refusals: quarantined with one finding per attribute, nothing applied.
    let not_owner: Vec<_> = report
        .quarantine
        .iter()
        .filter(|q| q.reason == "not_owner")
        .collect();
    assert_eq!(not_owner.len(), 2, "{:?}", report.quarantine);
    let findings: Vec<&str> = not_owner
        .iter()
        .flat_map(|q| q.findings.iter().map(String::as_str))
        .collect();
    assert!(
        findings.contains(&"tier: crm does not own it (owners: loyalty)"),
        "{findings:?}"
    );
    assert!(
        findings.contains(&"home_store: ecommerce does not own it (owners: crm, pos)"),
        "{findings:?}"
    );
    assert_eq!(report.summary.dead_lettered, 0);
    // Members are not transactions: only the two sales are sagas.
    assert_eq!(report.sagas.len(), 2, "{:?}", report.sagas.keys());

    // The consent history keeps every statement, with its source and time, for audit.
    let record = member_record(&*system.backend, "m-5001").await;
    let history: Vec<(bool, &str)> = record["consent_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["granted"].as_bool().unwrap(), c["source"].as_str().unwrap()))
        .collect();
    // Her sign-up at the till (08:00), the duplicate's in the app (09:00, taken over by the merge), the
    // app's grant (13:30), the CRM's withdrawal (14:00), in business time.
    assert_eq!(
        history,
        [(true, "pos"), (true, "mobile"), (true, "mobile"), (false, "crm")]
    );

    // The experience API answers from the same truth.
    let lookup = Input::Api(ApiCall {
        method: "GET".into(),
        path: "/v1/members/m-5001".into(),
        idempotency_key: None,
        body: None,
        client: None,
        member_id: None,
    });
    system.feed(&[lookup]).await.unwrap();
    let answer = &system.report(Default::default()).await.unwrap().api[0];
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.response["tier"], "gold");
    assert_eq!(answer.response["marketing_consent"], false);
    assert_eq!(answer.response["balance"], 165);
    assert!(answer.response.get("email").is_none());
}

async fn member_record<B: Backend>(backend: &B, member: &str) -> Value {
    let saga = backend
        .all_sagas()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id.as_str() == format!("member:{member}"))
        .unwrap();
    serde_json::to_value(saga.member.unwrap()).unwrap()
}

/// Every event twice, shuffled: the same truth (the operator's merge still comes last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_event_twice_in_any_order_gives_the_same_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = embedded(&dir);
    let expected = truth(&run(&system, &with_merge()).await, &sims);
    let events = day();
    for seed in [5_u64, 23] {
        let twice = retail_sync_tests::twice_shuffled(&events, seed);
        let dir = tempfile::tempdir().unwrap();
        let (system, sims) = embedded(&dir);
        let merge_twice: Vec<Input> = merge().into_iter().chain(merge()).collect();
        let report = run(&system, &[twice, merge_twice]).await;
        let got = truth(&report, &sims);
        // Duplicates delivered twice are quarantined twice under one id: the reasons are the same.
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_too() {
    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = embedded(&dir);
    let expected = truth(&run(&system, &with_merge()).await, &sims);
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &options).await);
    let sims = Simulators::with_sample_members();
    let system = LocalSystem::new(backend, topology, sims.clone()).unwrap();
    let report = run(&system, &with_merge()).await;
    assert_eq!(truth(&report, &sims), expected);
}

/// A bad update (its phone no number) is quarantined at ingest with the member's e-mail in its body, and
/// one whose phone the schema refuses with a finding that quotes it; the erasure removes that e-mail and
/// phone from the quarantine (bodies, messages and findings), the member's record, every system and the
/// reference systems' journal kept in the state file, and no idempotency record or archived event ever
/// held them. The state opened again replays the journal to the same erased member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_leaves_no_personal_data_in_any_record() {
    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = embedded(&dir);
    let (erasure, rest): (Vec<Input>, Vec<Input>) = day()
        .into_iter()
        .partition(|i| matches!(i, Input::Event { detail_type, .. } if detail_type == "ErasureRequested"));
    let bad = Input::Event {
        source: "retail.crm".into(),
        detail_type: "CustomerUpdated".into(),
        detail: json!({
            "metadata": {
                "event_id": "evt-bad-phone-5004",
                "schema_version": 1,
                "correlation_id": "crm-m-5004-9",
                "occurred_at": "2026-11-21T15:00:00Z",
                "channel": "crm"
            },
            "data": {"member_id": "m-5004", "email": "carla@example.com", "phone": "call me"}
        }),
    };
    let too_short = Input::Event {
        source: "retail.crm".into(),
        detail_type: "CustomerUpdated".into(),
        detail: json!({
            "metadata": {
                "event_id": "evt-short-phone-5004",
                "schema_version": 1,
                "correlation_id": "crm-m-5004-10",
                "occurred_at": "2026-11-21T15:05:00Z",
                "channel": "crm"
            },
            "data": {"member_id": "m-5004", "phone": "91"}
        }),
    };
    let refused = vec![bad, too_short];
    let report = run(&system, &[rest, refused.clone()]).await;
    let kept = |items: &[retail_sync_core::ports::QuarantineItem]| {
        items.iter().any(|q| {
            q.body.contains("carla@example.com") || q.rejection.findings.iter().any(|f| f.contains("\"91\""))
        })
    };
    let quoted = system.backend.list(usize::MAX).await.unwrap();
    let finding = quoted
        .iter()
        .find(|q| q.rejection.event_id.as_deref() == Some("evt-short-phone-5004"))
        .map(|q| q.rejection.findings.join("; "));
    assert!(
        finding.as_deref().is_some_and(|f| f.contains("\"91\"")),
        "the schema's finding quotes the phone: {finding:?}"
    );
    let journal = || {
        ["erp", "loyalty", "crm"]
            .iter()
            .flat_map(|s| system.backend.journal(s).unwrap())
            .collect::<Vec<String>>()
            .join("\n")
    };
    assert!(journal().contains("carla@example.com"), "the systems were told");
    let quarantined = system.backend.list(usize::MAX).await.unwrap();
    assert!(
        kept(&quarantined),
        "the bad update is kept as received: {:?}",
        report.quarantine
    );
    assert!(format!("{:?}", copy(&report, "m-5004", "crm")).contains("personal_data: true"));

    let report = run(&system, &[erasure]).await;
    let quarantined = system.backend.list(usize::MAX).await.unwrap();
    assert!(!kept(&quarantined), "{quarantined:?}");
    // The refused messages delivered again (a channel's retry): the same entries, still without the data.
    run(&system, &[refused]).await;
    let again = system.backend.list(usize::MAX).await.unwrap();
    assert_eq!(again, quarantined, "the entries stay as the erasure left them");
    assert!(
        quarantined
            .iter()
            .any(|q| q.rejection.event_id.as_deref() == Some("evt-bad-phone-5004")),
        "the entry stays, without the personal data"
    );
    for s in SYSTEMS {
        let carla = copy(&report, "m-5004", s);
        assert!(!carla.personal_data && carla.status == "erased", "{s}: {carla:?}");
    }
    for pii in ["carla@example.com", "Carla Moreno", "5550104"] {
        let sagas = serde_json::to_string(&system.backend.all_sagas().await.unwrap()).unwrap();
        assert!(!sagas.contains(pii), "{pii} in a saga record");
        let idempotency = system.backend.idempotency_items().unwrap().join("\n");
        assert!(!idempotency.contains(pii), "{pii} in an idempotency record");
        let systems = format!(
            "{:?}{:?}{:?}",
            sims.crm.contacts(),
            sims.erp.customers(),
            sims.loyalty.members()
        );
        assert!(!systems.contains(pii), "{pii} still in a system");
    }
    let timeline = serde_json::to_string(&member_record(&*system.backend, "m-5004").await).unwrap();
    assert!(timeline.contains("\"erased\""), "{timeline}");
    let archive = serde_json::to_string(&system.backend.archive().unwrap()).unwrap();
    let journal = journal();
    for pii in ["carla@example.com", "Carla Moreno", "5550104", "\"91\""] {
        assert!(!archive.contains(pii), "{pii} in the archive");
        assert!(!journal.contains(pii), "{pii} in the simulators' journal");
    }
    assert!(
        journal.contains("\"m-5004\""),
        "the calls stay, without the personal data"
    );
    // Only personal data is removed: the refused update keeps its envelope (its time, its id).
    let short = quarantined
        .iter()
        .find(|q| q.rejection.event_id.as_deref() == Some("evt-short-phone-5004"))
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&short.body).unwrap();
    assert_eq!(body["detail"]["data"]["phone"], "[erased]");
    assert!(
        body["time"].as_str().is_some_and(|t| t.starts_with("20")),
        "{body}"
    );
    assert_eq!(
        short.rejection.findings,
        ["/detail/data/phone: \"[erased]\" is shorter than 3 characters"]
    );

    // Opened again, the state replays the journal: the member is erased on every system, as before.
    drop(system);
    let (again, sims) = embedded(&dir);
    let systems = format!(
        "{:?}{:?}{:?}",
        sims.crm.contacts(),
        sims.erp.customers(),
        sims.loyalty.members()
    );
    assert!(
        systems.contains("m-5004") && !systems.contains("carla"),
        "{systems}"
    );
    let report = again.report(Default::default()).await.unwrap();
    for s in SYSTEMS {
        let carla = copy(&report, "m-5004", s);
        assert!(!carla.personal_data && carla.status == "erased", "{s}: {carla:?}");
    }
}

/// The loyalty platform's tier change for a member it has not enrolled yet (the sample POS day's m-1003,
/// enrolled by their first purchase) reaches the platform's copy whether the purchase or the tier change
/// is processed first: the platform's own report enrols the member there before the record is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_from_the_loyalty_platform_reaches_its_copy_before_or_after_the_first_purchase() {
    let day = std::fs::read_to_string(workspace().join("events/streams/pos-day.jsonl")).unwrap();
    let line = |event_id: &str| {
        day.lines()
            .find(|l| l.contains(&format!("\"event_id\": \"{event_id}\"")))
            .unwrap_or_else(|| panic!("{event_id} is not in pos-day.jsonl"))
            .to_owned()
    };
    let (tier, sale) = (line("evt-tierchanged-0143"), line("evt-salecompleted-0106"));
    let mut seen = Vec::new();
    for (order, lines) in [("tier first", [&tier, &sale]), ("sale first", [&sale, &tier])] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("day.jsonl");
        std::fs::write(&file, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        let (system, sims) = embedded(&dir);
        let report = run(&system, &[read_inputs(&file).unwrap()]).await;
        let loyalty = copy(&report, "m-1003", "loyalty");
        assert_eq!(loyalty.tier.as_deref(), Some("gold"), "{order}: {loyalty:?}");
        assert_eq!(report.summary.quarantined, 0, "{order}: {:?}", report.quarantine);
        seen.push(truth(&report, &sims));
    }
    assert_eq!(seen[0], seen[1]);
}

/// One channel event line as a file of a day holds it.
fn member_event(n: u32, detail_type: &str, source: &str, at: &str, data: Value) -> String {
    let channel = source.trim_start_matches("retail.");
    json!({
        "version": "0", "id": format!("00000000-0000-4000-8000-{n:012}"), "detail-type": detail_type,
        "source": source, "time": at, "resources": [],
        "detail": {
            "metadata": {"event_id": format!("evt-merge-index-{n}"), "schema_version": 1,
                         "correlation_id": format!("merge-index-{n}"), "occurred_at": at, "channel": channel},
            "data": data,
        },
    })
    .to_string()
}

/// A sign-up of `member` at the CRM, as event `n` of a day.
fn signup(n: u32, member: &str) -> String {
    let data = json!({"member_id": member});
    member_event(n, "MemberEnrolled", "retail.crm", "2026-12-02T08:00:00Z", data)
}

/// An operator's merge of `duplicate` into `survivor`, as event `n` of a day.
fn merge_request(n: u32, survivor: &str, duplicate: &str) -> String {
    let data = json!({"survivor_id": survivor, "duplicate_id": duplicate});
    member_event(
        n,
        "MemberMergeRequested",
        "retail.operator",
        "2026-12-02T09:00:00Z",
        data,
    )
}

/// Each group of event lines as the inputs of a file of its own in `dir`, fed in turn by [`run`].
fn groups_in(dir: &tempfile::TempDir, groups: &[Vec<&String>]) -> Vec<Vec<Input>> {
    groups
        .iter()
        .enumerate()
        .map(|(i, lines)| {
            let file = dir.path().join(format!("group-{i}.jsonl"));
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            std::fs::write(&file, text).unwrap();
            read_inputs(&file).unwrap()
        })
        .collect()
}

/// The sample sale (`events/samples/SaleCompleted.json`, 7,998 eligible: 79 points) on `member`'s card, as
/// event `n` of a day.
fn sale_on_card(n: u32, member: &str, at: &str) -> String {
    let mut sale: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("events/samples/SaleCompleted.json")).unwrap(),
    )
    .unwrap();
    let mut data = sale["detail"]["data"].take();
    data["member_id"] = json!(member);
    member_event(n, "SaleCompleted", "retail.pos", at, data)
}

/// A merge whose survivor takes the duplicate's verified e-mail moves the survivor in the duplicate index:
/// a member under the duplicate's address is then suspected of being the survivor, and one under the
/// survivor's old address no longer is — whether those members enrolled before or after the merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_moves_the_survivor_to_the_contact_data_it_took() {
    let enrol = |n, member: &str, source, email: &str, verified: bool| {
        let mut data = json!({"member_id": member, "email": email});
        if verified {
            data["contact_verified"] = json!(true);
        }
        member_event(n, "MemberEnrolled", source, "2026-12-02T08:00:00Z", data)
    };
    let pair = [
        enrol(1, "eh-1", "retail.crm", "eh1@example.com", false),
        enrol(2, "eh-2", "retail.mobile", "eh2@example.com", true),
    ];
    let others = [
        enrol(4, "eh-3", "retail.mobile", "EH2@example.com", false),
        enrol(5, "eh-4", "retail.mobile", "eh1@example.com", false),
    ];
    let merge = member_event(
        3,
        "MemberMergeRequested",
        "retail.operator",
        "2026-12-02T09:00:00Z",
        json!({"survivor_id": "eh-1", "duplicate_id": "eh-2"}),
    );
    for others_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let inputs = |lines: Vec<&String>| {
            let file = dir.path().join(format!("{}.jsonl", lines.len()));
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            std::fs::write(&file, text).unwrap();
            read_inputs(&file).unwrap()
        };
        let groups = if others_first {
            vec![inputs(pair.iter().chain(&others).collect()), inputs(vec![&merge])]
        } else {
            vec![
                inputs(pair.iter().chain([&merge]).collect()),
                inputs(others.iter().collect()),
            ]
        };
        let (system, _sims) = embedded(&dir);
        let report = run(&system, &groups).await;
        assert_eq!(
            report.duplicates,
            vec![("eh-3".to_owned(), "eh-1".to_owned())],
            "others enrolled {}",
            if others_first { "first" } else { "after the merge" }
        );
    }
}

/// What is processed for a merged member's card after the merge counts on the member they were merged
/// into, as the merge would have carried it had it been processed first: a sale's points and a return's
/// reversal go to the survivor's balance, a consent statement to the survivor's record. A merge processed
/// before the members' sign-ups waits for them. The same truth in each of the three orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_follows_a_merge_for_the_duplicate_counts_on_the_survivor_whatever_the_order() {
    let enrol = |n, member: &str, source| {
        member_event(
            n,
            "MemberEnrolled",
            source,
            "2026-12-02T08:00:00Z",
            json!({"member_id": member}),
        )
    };
    let signups = [enrol(1, "mf-1", "retail.crm"), enrol(2, "mf-2", "retail.mobile")];
    let merge = merge_request(3, "mf-1", "mf-2");
    // On the duplicate's card: a sale (7,998 eligible: 79 points), a unit of it back, a consent grant.
    let sale = sale_on_card(4, "mf-2", "2026-12-02T10:00:00Z");
    let ret = member_event(
        5,
        "ReturnReceived",
        "retail.pos",
        "2026-12-02T11:00:00Z",
        json!({"return_id": "ret-mf-1",
               "original": {"kind": "receipt", "store_id": "store-042", "receipt_id": "r-000123"},
               "store_id": "store-042", "currency": "EUR",
               "lines": [{"line_no": 1, "sku": "SKU-1001", "quantity": 1, "refund_minor": 1999}]}),
    );
    let consent = member_event(
        6,
        "CustomerUpdated",
        "retail.crm",
        "2026-12-02T12:00:00Z",
        json!({"member_id": "mf-2", "marketing_consent": true}),
    );
    let later = [&sale, &ret, &consent];
    let orders: [(&str, Vec<Vec<&String>>); 3] = [
        (
            "merge last",
            vec![signups.iter().chain(later).collect(), vec![&merge]],
        ),
        (
            "merge between",
            vec![signups.iter().collect(), vec![&merge], later.to_vec()],
        ),
        (
            "merge first",
            vec![[&merge].into_iter().chain(&signups).chain(later).collect()],
        ),
    ];
    let mut seen = Vec::new();
    for (order, groups) in orders {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups_in(&dir, &groups);
        let (system, sims) = embedded(&dir);
        let report = run(&system, &groups).await;
        let balances = sims.loyalty.balances();
        assert_eq!(
            (balances.get("mf-1").copied(), balances.get("mf-2").copied()),
            (Some(60), Some(0)),
            "{order}: 79 points earned, 19 reversed, all on the survivor; {balances:?}"
        );
        let survivor = copy(&report, "mf-1", "retail_sync");
        assert!(survivor.marketing_consent, "{order}: {survivor:?}");
        assert_eq!(report.summary.quarantined, 0, "{order}: {:?}", report.quarantine);
        assert_eq!(report.summary.dead_lettered, 0, "{order}");
        seen.push((order, truth(&report, &sims)));
    }
    for (order, truth) in &seen[1..] {
        assert_eq!(truth, &seen[0].1, "{order} against {}", seen[0].0);
    }
}

/// Two merges in a chain (`mc-3` into `mc-2`, `mc-2` into `mc-1`) give the same books in either order: a
/// merge into a survivor that was merged already moves the points where the survivor's went, and its
/// news travels on along the chain. A sale processed after both follows two merges. The one difference is
/// the loyalty platform's own word on where the first duplicate went: where its points were moved
/// (`mc-2` in the chain's order, else `mc-1`, since the platform merges into no merged member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_merges_in_a_chain_give_the_same_books_in_either_order() {
    let signups = [signup(1, "mc-1"), signup(2, "mc-2"), signup(3, "mc-3")];
    let (into_mc2, into_mc1) = (merge_request(4, "mc-2", "mc-3"), merge_request(5, "mc-1", "mc-2"));
    // On the first duplicate's card: a sale (79 points) and a consent grant.
    let sale = sale_on_card(6, "mc-3", "2026-12-02T10:00:00Z");
    let consent = member_event(
        7,
        "CustomerUpdated",
        "retail.crm",
        "2026-12-02T12:00:00Z",
        json!({"member_id": "mc-3", "marketing_consent": true}),
    );
    let day: Vec<&String> = signups.iter().chain([&sale, &consent]).collect();
    let orders: [(&str, &str, Vec<Vec<&String>>); 3] = [
        (
            "in the chain's order",
            "mc-2",
            vec![day.clone(), vec![&into_mc2], vec![&into_mc1]],
        ),
        (
            "the survivor merged first",
            "mc-1",
            vec![day.clone(), vec![&into_mc1], vec![&into_mc2]],
        ),
        (
            "the sale after both",
            "mc-1",
            vec![
                signups.iter().collect(),
                vec![&into_mc1],
                vec![&into_mc2],
                vec![&sale, &consent],
            ],
        ),
    ];
    let mut seen = Vec::new();
    for (order, moved_to, groups) in orders {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups_in(&dir, &groups);
        let (system, sims) = embedded(&dir);
        let report = run(&system, &groups).await;
        let balances = sims.loyalty.balances();
        let points = ["mc-1", "mc-2", "mc-3"].map(|m| balances.get(m).copied());
        assert_eq!(points, [Some(79), Some(0), Some(0)], "{order}: {balances:?}");
        assert!(copy(&report, "mc-1", "retail_sync").marketing_consent, "{order}");
        for (merged, into) in [("mc-3", "mc-2"), ("mc-2", "mc-1")] {
            let m = copy(&report, merged, "retail_sync");
            assert_eq!(
                (m.status.as_str(), m.merged_into.as_deref()),
                ("merged", Some(into)),
                "{order}: {merged} {m:?}"
            );
        }
        assert_eq!(report.summary.quarantined, 0, "{order}: {:?}", report.quarantine);
        assert_eq!(report.summary.dead_lettered, 0, "{order}");
        let platform = copy(&report, "mc-3", "loyalty").merged_into.as_deref();
        assert_eq!(platform, Some(moved_to), "{order}");
        let mut truth = truth(&report, &sims);
        truth["members"]["mc-3"]["loyalty"]["merged_into"].take();
        seen.push((order, truth));
    }
    for (order, truth) in &seen[1..] {
        assert_eq!(truth, &seen[0].1, "{order} against {}", seen[0].0);
    }
}

/// Which of two members sharing an e-mail is suspected is the later by the business time each gave it,
/// in any order: `md-a` gives the address at 10:00 and again at 12:00, `md-b` at 11:00. Processed with
/// the 12:00 update first, `md-a`'s record keeps its stamp (the same value, the later event), and the
/// 10:00 one still counts for the index: `md-b` is the suspect either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suspected_duplicate_is_the_later_by_business_time_in_any_order() {
    let email = |n, member, at| {
        let data = json!({"member_id": member, "email": "shared@example.com"});
        member_event(n, "CustomerUpdated", "retail.crm", at, data)
    };
    let early = email(1, "md-a", "2026-12-02T10:00:00Z");
    let late = email(2, "md-a", "2026-12-02T12:00:00Z");
    let other = email(3, "md-b", "2026-12-02T11:00:00Z");
    for (order, groups) in [
        ("in business order", vec![vec![&early], vec![&other], vec![&late]]),
        (
            "the early one last",
            vec![vec![&late], vec![&other], vec![&early]],
        ),
        (
            "the early one first",
            vec![vec![&early], vec![&late], vec![&other]],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups_in(&dir, &groups);
        let (system, _sims) = embedded(&dir);
        let report = run(&system, &groups).await;
        assert_eq!(
            report.duplicates,
            [("md-b".to_owned(), "md-a".to_owned())],
            "{order}"
        );
    }
}

/// A merge whose survivor was merged, in the end, into the duplicate would close both: it is refused
/// (`merge_refused`, quarantined with the reason), and the points stay where the first merge put them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_into_a_member_merged_into_the_duplicate_is_refused() {
    let sale = sale_on_card(3, "mk-2", "2026-12-02T08:30:00Z");
    let (forward, back) = (merge_request(4, "mk-1", "mk-2"), merge_request(5, "mk-2", "mk-1"));
    let dir = tempfile::tempdir().unwrap();
    let signups = [signup(1, "mk-1"), signup(2, "mk-2")];
    let first: Vec<&String> = signups.iter().chain([&sale]).collect();
    let groups = [first, vec![&forward], vec![&back]];
    let groups = groups_in(&dir, &groups);
    let (system, sims) = embedded(&dir);
    let report = run(&system, &groups).await;
    let refused: Vec<_> = report
        .quarantine
        .iter()
        .map(|q| (q.reason.as_str(), q.message.as_str()))
        .collect();
    assert_eq!(refused, [("merge_refused", "mk-2 is merged into mk-1")]);
    let balances = sims.loyalty.balances();
    let points = ["mk-1", "mk-2"].map(|m| balances.get(m).copied());
    assert_eq!(points, [Some(79), Some(0)], "{balances:?}");
    assert_eq!(copy(&report, "mk-1", "retail_sync").status, "active");
}

/// A member enrolled by their first purchase (on first earn) is told what the CRM said of them before that
/// purchase was processed: the loyalty platform's copy holds the CRM's consent and e-mail whether the
/// CRM's update or the purchase is processed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_enrolled_by_their_first_purchase_is_told_what_came_before_it() {
    let update = member_event(
        1,
        "CustomerUpdated",
        "retail.crm",
        "2026-12-02T08:00:00Z",
        json!({"member_id": "mg-1", "email": "mg1@example.com", "marketing_consent": true}),
    );
    let sale = sale_on_card(2, "mg-1", "2026-12-02T10:00:00Z");
    let mut seen = Vec::new();
    for (order, lines) in [
        ("update first", [&update, &sale]),
        ("sale first", [&sale, &update]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups_in(&dir, &lines.map(|line| vec![line]));
        let (system, sims) = embedded(&dir);
        let report = run(&system, &groups).await;
        let loyalty = copy(&report, "mg-1", "loyalty");
        assert!(
            loyalty.marketing_consent && loyalty.marketing_email && loyalty.personal_data,
            "{order}: {loyalty:?}"
        );
        assert_eq!(sims.loyalty.balances().get("mg-1"), Some(&79), "{order}");
        seen.push(truth(&report, &sims));
    }
    assert_eq!(seen[0], seen[1]);
}

/// News of a member merged into one merged in turn reaches the member still active: a consent grant for
/// `mh-3`, merged into `mh-2`, itself merged into `mh-1`, is `mh-1`'s whether it is processed before the
/// merges or after both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_of_a_duplicate_follows_a_chain_of_merges() {
    let signups = [signup(1, "mh-1"), signup(2, "mh-2"), signup(3, "mh-3")];
    let (first, second) = (merge_request(4, "mh-2", "mh-3"), merge_request(5, "mh-1", "mh-2"));
    let consent = member_event(
        6,
        "CustomerUpdated",
        "retail.crm",
        "2026-12-02T12:00:00Z",
        json!({"member_id": "mh-3", "marketing_consent": true}),
    );
    let orders = [
        (
            "news first",
            vec![
                signups.iter().chain([&consent]).collect(),
                vec![&first],
                vec![&second],
            ],
        ),
        (
            "news last",
            vec![
                signups.iter().collect(),
                vec![&first],
                vec![&second],
                vec![&consent],
            ],
        ),
    ];
    let mut seen = Vec::new();
    for (order, groups) in orders {
        let dir = tempfile::tempdir().unwrap();
        let (system, sims) = embedded(&dir);
        let report = run(&system, &groups_in(&dir, &groups)).await;
        let active = copy(&report, "mh-1", "retail_sync");
        assert!(active.marketing_consent, "{order}: {active:?}");
        for merged in ["mh-2", "mh-3"] {
            let m = copy(&report, merged, "retail_sync");
            assert_eq!(m.status, "merged", "{order}: {merged} {m:?}");
        }
        seen.push(truth(&report, &sims));
    }
    assert_eq!(seen[0], seen[1]);
}
