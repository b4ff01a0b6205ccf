//! Salesforce Loyalty Management's dialect in front of the reference loyalty platform, as far as the
//! Salesforce connector uses it: realtime transaction journal processing, the credit and debit points
//! program processes, the Cancel Redemption action, SOQL on `TransactionJournal` and `LoyaltyLedger`,
//! an sObject update of a journal's reference field, and the member profile. Errors are Salesforce's
//! `[{"errorCode", "message"}]`; the API request limit is 403 `REQUEST_LIMIT_EXCEEDED`; and there is
//! **no idempotency key**: a journal posted twice is two journals.
//!
//! Each journal is a call of the reference platform (its rules, faults and journal apply) under a key
//! of the sim's own (`sf:{nonce}:{ExternalTransactionNumber}`) that never repeats, and everything the
//! dialect shows is read back from the reference's applied calls, so a replayed local run gets its
//! Salesforce journals back too. Ids are the reference's numbers (see `sf_id`); a member's
//! `LoyaltyProgramMember` id is `LPM-` and their membership number.
//!
//! SOQL (`GET /query?q=…`, the subset of `soql`) reads `TransactionJournal`, `LoyaltyLedger` and
//! `LoyaltyProgramMember` records built from that state, with the columns the connector selects and
//! filters on (an unknown column is `INVALID_FIELD`, a query outside the subset `MALFORMED_QUERY`, as
//! Salesforce answers them). Answers are Salesforce's: `totalSize`, `done`, `records` each with its
//! `attributes`, relationship fields as nested records, dateTimes as `2026-05-28T20:26:40.000+0000`
//! (UTC, to the millisecond, as an org stores them); past [`SalesforceSimulator::set_page_size`]
//! records (2,000 by default, Salesforce's batch) the rest is kept behind a query locator, and
//! `nextRecordsUrl` (`/services/data/vXX.X/query/<locator>-<offset>`) reads the next batch until `done`
//! (a batch asked again is answered again; ten locators are kept, the oldest forgotten first).
//! A journal's `ActivityDate` is the one the connector sent: accruals and adjustments carry it to the
//! reference platform; a hold's is kept in the key of its reference call (`sf:{nonce}@{ms}:{ETN}`).
//! A hold's debit is on the ledger of its journal (a cancellation's credit would be on the
//! cancellation's own journal, which the front does not list). The org has one program,
//! [`SalesforceSettings::program`] (the sample mapping's): a query naming another finds nothing.
//!
//! Members: the first accrual journal of a membership number enrols it on the reference platform,
//! standing in for the org's own sign-up flows (the Salesforce connector does not enrol).
//!
//! Where it departs from Salesforce, and why: a checkout hold (a debit of the hold subtype, see the
//! connector) is a hold of the reference platform, so an expired hold's points come back by
//! themselves here; in Salesforce they stay debited until the connector cancels the debit, which it
//! does whenever it meets the expired hold (read, commit, release, the member's balance or next hold). The journal's reference field
//! (`RetailSync_Reference__c`) carries the transaction the reference platform needs; a real org keeps
//! it as a plain text field. Shapes follow Salesforce's Loyalty Management developer guide (sources in
//! `events/samples/salesforce/README.md`).

mod soql;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{Amount, Currency, HoldId, MemberId, Points};
use retail_sync_core::ports::{
    AccrualRequest, AdjustmentKind, AdjustmentRequest, CommitRequest, HoldRequest, HoldStatus,
};
use retail_sync_core::saga::SagaId;

use crate::dialect::{decimal_minor, parse_query, percent_decode, str_of};
use crate::error::SimError;
use crate::http::HANG;
use crate::loyalty::{LoyaltyAnswer, LoyaltyCall, LoyaltySimulator};
use soql::Cell;

/// The org's setup the simulator assumes (the connector's defaults, the sample mapping's program).
#[derive(Debug, Clone)]
pub struct SalesforceSettings {
    pub program: String,
    pub currency: String,
    pub reference_field: String,
    /// The number field a reversal's or re-credit's asked points are read from (the reference
    /// platform's request; see the connector's `requested_points_field`).
    pub requested_points_field: String,
    pub credit_process: String,
    pub debit_process: String,
    /// Journal type and subtype names of each kind of journal, as `JournalType.Name` and
    /// `JournalSubType.Name` show them.
    pub accrual: (String, String),
    pub reversal: (String, String),
    pub recredit: (String, String),
    pub restore: (String, String),
    pub hold: (String, String),
}

impl Default for SalesforceSettings {
    fn default() -> Self {
        let kind = |t: &str, s: &str| (t.to_owned(), s.to_owned());
        Self {
            program: "RetailSync Rewards".into(),
            currency: "Points".into(),
            reference_field: "RetailSync_Reference__c".into(),
            requested_points_field: "RetailSync_Requested_Points__c".into(),
            credit_process: "Credit Points".into(),
            debit_process: "Debit Points".into(),
            accrual: kind("Accrual", "Purchase"),
            reversal: kind("Redemption", "Return Reversal"),
            recredit: kind("Accrual", "Points Recredit"),
            restore: kind("Accrual", "Return Reversal Correction"),
            hold: kind("Redemption", "Checkout Hold"),
        }
    }
}

/// Salesforce's default query batch.
pub const PAGE_SIZE: usize = 2_000;

/// The Salesforce front. Cheap to clone.
#[derive(Clone)]
pub struct SalesforceSimulator {
    loyalty: LoyaltySimulator,
    settings: Arc<SalesforceSettings>,
    nonce: Arc<AtomicU64>,
    /// Journals posted (every realtime journal and points process received): what a test counts.
    posts: Arc<AtomicU64>,
    page_size: Arc<AtomicUsize>,
    /// The records of each query answered in batches, by query locator.
    cursors: Arc<Mutex<HashMap<String, Cursor>>>,
    locators: Arc<AtomicU64>,
}

/// A query answered in batches: its records, kept so that a batch asked again (a retry) is answered
/// again; at most [`OPEN_LOCATORS`] of them, the oldest forgotten first, as Salesforce keeps a user's.
struct Cursor {
    opened: u64,
    records: Vec<Value>,
    /// Its last batch was read.
    read: bool,
}

/// Query locators kept at once (Salesforce's limit of open cursors a user).
const OPEN_LOCATORS: usize = 10;

/// A journal as the dialect shows it.
#[derive(Debug, Clone)]
struct Journal {
    id: String,
    etn: String,
    status: &'static str,
    reference: String,
    /// Ledger points, signed (credits positive); a hold's is the debit made when it was taken.
    points: Option<i64>,
    /// `ActivityDate`, to the millisecond.
    activity: Timestamp,
    member: MemberId,
    /// `JournalType.Name`, `JournalSubType.Name`.
    kind: (String, String),
    /// Adjustments: the points asked for.
    requested: Option<i64>,
}

/// A member's `LoyaltyProgramMember` record id.
fn member_record(member: &MemberId) -> String {
    format!("LPM-{member}")
}

/// An instant as an org keeps a dateTime: to the millisecond.
fn stored(at: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at)
}

/// A dateTime as the REST API answers it.
fn date_time(at: Timestamp) -> String {
    format!("{}+0000", stored(at).strftime("%Y-%m-%dT%H:%M:%S%.3f"))
}

/// Journal ids are the reference platform's numbers (`LT-00000001`, holds `H-00000001`), so that a
/// sample stream naming a hold works with either dialect; a real org's are 18-character ids.
fn sf_id(reference_id: &str) -> String {
    reference_id.to_owned()
}

fn reference_id(sf: &str) -> Option<String> {
    Some(sf.to_owned())
}

fn transaction_of(id: &str) -> Result<TransactionRef, String> {
    SagaId::from_stored(id.to_owned())
        .transaction()
        .ok_or_else(|| format!("{id:?} is not a transaction"))
}

fn term<'a>(reference: &'a str, name: &str) -> Option<&'a str> {
    reference
        .split(' ')
        .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// One record a query reads.
enum Row<'a> {
    Journal(&'a Journal),
    /// The ledger entry of a journal's points in the program currency.
    Ledger(&'a Journal),
    Member(&'a MemberId),
}

/// A Salesforce error answer.
fn sf_error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!([{"errorCode": code, "message": message}]))).into_response()
}

/// The reference platform's answer to a failed call, as Salesforce answers it.
async fn failure(e: SimError) -> Response {
    match e {
        SimError::Refused { code, message, .. } => sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            format!("{code}: {message}"),
        ),
        SimError::Unavailable { message } => sf_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            message.to_owned(),
        ),
        SimError::Throttled { .. } => sf_error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded. (injected fault)".into(),
        ),
        SimError::TimedOut { .. } => {
            tokio::time::sleep(HANG).await;
            sf_error(StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", "injected timeout".into())
        }
    }
}

impl SalesforceSimulator {
    pub fn new(loyalty: LoyaltySimulator) -> Self {
        Self {
            loyalty,
            settings: Arc::new(SalesforceSettings::default()),
            // Random, so that keys made after a replayed journal never meet the journal's.
            nonce: Arc::new(AtomicU64::new(rand::random::<u64>() >> 1)),
            posts: Arc::default(),
            page_size: Arc::new(AtomicUsize::new(PAGE_SIZE)),
            cursors: Arc::default(),
            locators: Arc::default(),
        }
    }

    /// How many records a query answers at once (at least 1); the rest behind `nextRecordsUrl`.
    pub fn set_page_size(&self, records: usize) {
        self.page_size.store(records.max(1), Ordering::Relaxed);
    }

    /// Query locators whose batches were not read to the end.
    pub fn open_cursors(&self) -> usize {
        let cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        cursors.values().filter(|c| !c.read).count()
    }

    /// Journals posted so far (realtime journals and points processes).
    pub fn posts(&self) -> u64 {
        self.posts.load(Ordering::Relaxed)
    }

    fn key(&self, etn: &str) -> String {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        format!("sf:{nonce:x}:{etn}")
    }

    /// The key of a journal posted with `ActivityDate` `activity`, which it keeps.
    fn journal_key(&self, etn: &str, activity: Timestamp) -> String {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        format!("sf:{nonce:x}@{}:{etn}", activity.as_millisecond())
    }

    // --- journals, read back from the reference platform ---------------------------------------

    fn journals(&self) -> Vec<Journal> {
        let holds = self.loyalty.holds();
        let ledger = self.loyalty.transactions();
        let points_of = |id: &str| {
            ledger
                .iter()
                .find(|t| t.loyalty_transaction_id.as_str() == id)
                .map(|t| t.points)
        };
        let applied = self.loyalty.applied();
        // A hold whose debit was cancelled, even after it had expired (which the reference platform
        // shows as expired, not released).
        let cancelled: Vec<HoldId> = applied
            .iter()
            .filter_map(|(_, call, _)| match call {
                LoyaltyCall::Release(hold) => Some(hold.clone()),
                _ => None,
            })
            .collect();
        let settings = &self.settings;
        let mut journals = Vec::new();
        for (key, call, answer) in applied {
            // `sf:{nonce}[@{ms}]:{ETN}`: the ETN, and the ActivityDate the journal came with.
            let Some((head, etn)) = key.strip_prefix("sf:").and_then(|r| r.split_once(':')) else {
                continue;
            };
            let etn = etn.to_owned();
            let activity = head
                .split_once('@')
                .and_then(|(_, ms)| ms.parse().ok())
                .and_then(|ms| Timestamp::from_millisecond(ms).ok());
            match (call, answer) {
                (LoyaltyCall::Accrue(r), LoyaltyAnswer::Accrual(a)) => journals.push(Journal {
                    id: sf_id(a.loyalty_transaction_id.as_str()),
                    etn,
                    status: "Processed",
                    reference: format!("retail-sync transaction={}", SagaId::of(&r.transaction)),
                    points: points_of(a.loyalty_transaction_id.as_str()),
                    activity: stored(r.occurred_at),
                    member: r.member_id,
                    kind: settings.accrual.clone(),
                    requested: None,
                }),
                (LoyaltyCall::Adjust(r), LoyaltyAnswer::Adjustment(a)) => journals.push(Journal {
                    id: sf_id(a.loyalty_transaction_id.as_str()),
                    etn,
                    status: "Processed",
                    reference: format!(
                        "retail-sync transaction={} reference={}",
                        SagaId::of(&r.transaction),
                        r.reference
                    ),
                    points: points_of(a.loyalty_transaction_id.as_str()),
                    activity: stored(r.occurred_at),
                    member: r.member_id,
                    kind: match r.kind {
                        AdjustmentKind::Reversal => settings.reversal.clone(),
                        AdjustmentKind::Recredit => settings.recredit.clone(),
                        AdjustmentKind::Restore => settings.restore.clone(),
                    },
                    requested: Some(r.points.get()),
                }),
                (LoyaltyCall::CreateHold(r), LoyaltyAnswer::Hold(h)) => {
                    let now = holds.iter().find(|x| x.hold_id == h.hold_id).unwrap_or(&h);
                    let mut reference = format!(
                        "retail-sync hold member={} points={} currency={} basket={} expires={}",
                        r.member_id, r.points, r.currency, r.basket_net_minor, r.expires_at
                    );
                    if let (HoldStatus::Committed, Some(t)) = (now.status, &now.transaction) {
                        reference.push_str(&format!(" order={}", SagaId::of(t)));
                    }
                    // A hold journal kept before its key carried the ActivityDate: the redemption's
                    // instant once committed, else its expiry.
                    let activity = activity.unwrap_or_else(|| {
                        ledger
                            .iter()
                            .find(|t| t.hold_id.as_ref() == Some(&h.hold_id))
                            .map_or(r.expires_at, |t| t.occurred_at)
                    });
                    journals.push(Journal {
                        id: sf_id(h.hold_id.as_str()),
                        etn,
                        status: if now.status == HoldStatus::Released || cancelled.contains(&h.hold_id) {
                            "Cancelled"
                        } else {
                            "Processed"
                        },
                        reference,
                        points: Some(-r.points.get()),
                        activity: stored(activity),
                        member: r.member_id,
                        kind: settings.hold.clone(),
                        requested: None,
                    });
                }
                _ => {}
            }
        }
        journals.sort_by(|a, b| a.id.cmp(&b.id));
        journals
    }

    // --- the routes ------------------------------------------------------------------------------

    async fn handle(
        &self,
        method: Method,
        version: &str,
        rest: &str,
        query: Option<String>,
        body: &[u8],
    ) -> Response {
        if self.loyalty.faults().down {
            return failure(SimError::Unavailable {
                message: "the platform is down (injected fault)",
            })
            .await;
        }
        // The latency fault, before every call, as the reference platform's routes wait it out.
        self.loyalty.delay().await;
        let query = parse_query(query.as_deref().unwrap_or_default());
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return sf_error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", e.to_string()),
            }
        };
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["query"]) => self.query(version, query.get("q").map(String::as_str).unwrap_or_default()),
            ("GET", ["query", locator]) => self.more(version, locator),
            ("GET", ["loyalty-programs", _, "members"]) => {
                self.profile(
                    query
                        .get("membershipNumber")
                        .map(String::as_str)
                        .unwrap_or_default(),
                )
                .await
            }
            ("POST", ["connect", "realtime", "loyalty", "programs", _]) => self.realtime(&body).await,
            ("POST", ["connect", "loyalty", "programs", _, "program-processes", process]) => {
                let process = percent_decode(process);
                self.points_process(&process, &body).await
            }
            ("POST", ["actions", "standard", "cancelRedemption"]) => self.cancel_redemption(&body).await,
            ("PATCH", ["sobjects", "TransactionJournal", id]) => self.update_journal(id, &body).await,
            _ => sf_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist".into(),
            ),
        }
    }

    /// A SOQL query (the subset of [`soql`]) over the records the front shows, answered in batches.
    fn query(&self, version: &str, text: &str) -> Response {
        let query = match soql::parse(text) {
            Ok(q) => q,
            Err(message) => {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_QUERY",
                    format!("unexpected query: {message}: {text}"),
                );
            }
        };
        let journals = self.journals();
        let members = self.loyalty.members();
        let rows: Vec<Row> = match query.object.as_str() {
            "TransactionJournal" => journals.iter().map(Row::Journal).collect(),
            "LoyaltyLedger" => journals
                .iter()
                .filter(|j| j.points.is_some())
                .map(Row::Ledger)
                .collect(),
            "LoyaltyProgramMember" => members.iter().map(|m| Row::Member(&m.member_id)).collect(),
            other => {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    format!("sObject type '{other}' is not supported."),
                );
            }
        };
        // Every column named must exist, whether or not a record is found.
        let probe = |field: &str| match query.object.as_str() {
            "TransactionJournal" => self.journal_column(field),
            "LoyaltyLedger" => {
                matches!(
                    field,
                    "Id" | "TransactionJournalId"
                        | "Points"
                        | "EventType"
                        | "LoyaltyProgramCurrency.Name"
                        | "LoyaltyProgramMemberId"
                ) || field
                    .strip_prefix("TransactionJournal.")
                    .is_some_and(|f| self.journal_column(f))
            }
            _ => matches!(field, "Id" | "MembershipNumber"),
        };
        let names = query
            .fields
            .iter()
            .chain(query.conditions.iter().map(|c| &c.field));
        if let Some(unknown) = names.into_iter().find(|f| !probe(f)) {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                format!("No such column '{unknown}' on entity '{}'", query.object),
            );
        }
        let mut records = Vec::new();
        for row in &rows {
            let mut keep = true;
            for c in &query.conditions {
                match c.matches(&self.cell(row, &c.field)) {
                    Ok(true) => {}
                    Ok(false) => keep = false,
                    Err(message) => return sf_error(StatusCode::BAD_REQUEST, "INVALID_FIELD", message),
                }
            }
            if keep {
                records.push(self.record(version, &query.object, row, &query.fields));
            }
        }
        if let Some(limit) = query.limit {
            records.truncate(limit);
        }
        self.batch(version, records, None)
    }

    /// The next batch behind a query locator (`<locator>-<offset>`).
    fn more(&self, version: &str, locator: &str) -> Response {
        let invalid = || {
            sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator".into(),
            )
        };
        let Some((id, offset)) = locator.rsplit_once('-') else {
            return invalid();
        };
        let Ok(offset) = offset.parse::<usize>() else {
            return invalid();
        };
        let records = {
            let cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
            match cursors.get(id) {
                Some(c) if offset > 0 && offset < c.records.len() => c.records.clone(),
                _ => return invalid(),
            }
        };
        self.batch(version, records, Some((id.to_owned(), offset)))
    }

    /// One batch of `records` from `offset`, behind the locator given, else behind a new one when
    /// there is more than a batch: `totalSize` counts them all.
    fn batch(&self, version: &str, records: Vec<Value>, at: Option<(String, usize)>) -> Response {
        let size = self.page_size.load(Ordering::Relaxed);
        let total = records.len();
        let offset = at.as_ref().map_or(0, |(_, offset)| *offset);
        let end = offset.saturating_add(size).min(total);
        let mut answer = json!({"totalSize": total, "done": end == total,
            "records": records[offset..end].to_vec()});
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        match at {
            Some((locator, _)) => {
                if let Some(c) = cursors.get_mut(&locator) {
                    c.read |= end == total;
                }
                if end < total {
                    answer["nextRecordsUrl"] =
                        Value::String(format!("/services/data/{version}/query/{locator}-{end}"));
                }
            }
            None if end < total => {
                let opened = self.locators.fetch_add(1, Ordering::Relaxed);
                let locator = format!("01gSF{opened:013}");
                answer["nextRecordsUrl"] =
                    Value::String(format!("/services/data/{version}/query/{locator}-{end}"));
                if cursors.len() >= OPEN_LOCATORS
                    && let Some(oldest) = cursors
                        .iter()
                        .min_by_key(|(_, c)| c.opened)
                        .map(|(l, _)| l.clone())
                {
                    cursors.remove(&oldest);
                }
                cursors.insert(
                    locator,
                    Cursor {
                        opened,
                        records,
                        read: false,
                    },
                );
            }
            None => {}
        }
        Json(answer).into_response()
    }

    fn journal_column(&self, field: &str) -> bool {
        matches!(
            field,
            "Id" | "Status"
                | "ExternalTransactionNumber"
                | "ActivityDate"
                | "MemberId"
                | "LoyaltyProgram.Name"
                | "JournalType.Name"
                | "JournalSubType.Name"
        ) || field == self.settings.reference_field
            || field == self.settings.requested_points_field
    }

    /// A record's value of a column (known to exist: see `query`).
    fn cell(&self, row: &Row, field: &str) -> Cell {
        let text = |s: &str| Cell::Text(s.to_owned());
        let settings = &self.settings;
        match row {
            Row::Journal(j) => match field {
                "Id" => text(&j.id),
                "Status" => text(j.status),
                "ExternalTransactionNumber" => text(&j.etn),
                "ActivityDate" => Cell::Time(j.activity),
                "MemberId" => Cell::Text(member_record(&j.member)),
                "LoyaltyProgram.Name" => text(&settings.program),
                "JournalType.Name" => text(&j.kind.0),
                "JournalSubType.Name" => text(&j.kind.1),
                f if f == settings.reference_field => text(&j.reference),
                f if f == settings.requested_points_field => {
                    j.requested.map_or(Cell::Null, |p| Cell::Number(p as f64))
                }
                _ => Cell::Null,
            },
            Row::Ledger(j) => {
                let points = j.points.unwrap_or_default();
                match field {
                    "Id" => Cell::Text(format!("LL-{}", j.id)),
                    "TransactionJournalId" => text(&j.id),
                    "Points" => Cell::Number(points.unsigned_abs() as f64),
                    "EventType" => text(if points < 0 { "Debit" } else { "Credit" }),
                    "LoyaltyProgramCurrency.Name" => text(&settings.currency),
                    "LoyaltyProgramMemberId" => Cell::Text(member_record(&j.member)),
                    f => match f.strip_prefix("TransactionJournal.") {
                        Some(f) => self.cell(&Row::Journal(j), f),
                        None => Cell::Null,
                    },
                }
            }
            Row::Member(m) => match field {
                "Id" => Cell::Text(member_record(m)),
                "MembershipNumber" => text(m.as_str()),
                _ => Cell::Null,
            },
        }
    }

    /// A record as the REST API answers it: `attributes`, then the fields selected, a relationship's
    /// fields nested under its name.
    fn record(&self, version: &str, object: &str, row: &Row, fields: &[String]) -> Value {
        let id = match self.cell(row, "Id") {
            Cell::Text(id) => id,
            _ => String::new(),
        };
        let mut record = json!({"attributes": {"type": object,
            "url": format!("/services/data/{version}/sobjects/{object}/{id}")}});
        for field in fields {
            let value = match self.cell(row, field) {
                Cell::Text(t) => Value::String(t),
                Cell::Time(t) => Value::String(date_time(t)),
                Cell::Number(n) => json!(n),
                Cell::Null => Value::Null,
            };
            let mut path: Vec<&str> = field.split('.').collect();
            let last = path.pop().unwrap_or_default();
            let mut at = &mut record;
            for relationship in path {
                if !at.get(relationship).is_some_and(Value::is_object) {
                    at[relationship] = json!({"attributes": {"type": relationship}});
                }
                at = &mut at[relationship];
            }
            at[last] = value;
        }
        record
    }

    async fn profile(&self, membership_number: &str) -> Response {
        let Ok(member) = MemberId::parse(membership_number) else {
            return sf_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such member".into());
        };
        match self.loyalty.member_balance(&member) {
            Ok(b) => Json(json!({
                "membershipNumber": membership_number,
                "memberStatus": "Active",
                "memberCurrencies": [{
                    "loyaltyMemberCurrencyName": self.settings.currency,
                    "pointsBalance": b.available.get() as f64,
                    "escrowPointsBalance": 0.0,
                }],
            }))
            .into_response(),
            Err(SimError::Refused { message, .. }) => sf_error(StatusCode::NOT_FOUND, "NOT_FOUND", message),
            Err(e) => failure(e).await,
        }
    }

    /// One transaction journal (an accrual) processed in real time.
    async fn realtime(&self, body: &Value) -> Response {
        self.posts.fetch_add(1, Ordering::Relaxed);
        let Some(journal) = body.pointer("/transactionJournals/0") else {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "no transactionJournals".into(),
            );
        };
        let request = match self.accrual_of(journal) {
            Ok(r) => r,
            Err(message) => return sf_error(StatusCode::BAD_REQUEST, "INVALID_INPUT", message),
        };
        let etn = str_of(journal, "ExternalTransactionNumber");
        let key = self.journal_key(etn, request.occurred_at);
        // Members are Salesforce's own (its sign-up flows enrol them; the connector does not): standing
        // in for those flows, the first accrual journal of a membership number the reference platform
        // does not know enrols it there. A number it will not enrol (`unknown-…`) is refused below.
        if self.loyalty.member(&request.member_id).is_none() {
            let _ = self.loyalty.enrol(&request.member_id, &format!("{key}:enrol"));
        }
        match self.loyalty.accrue(&request, &key) {
            Ok(a) => {
                let available = self
                    .loyalty
                    .member_balance(&request.member_id)
                    .map_or(0, |b| b.available.get());
                let member = request.member_id.as_str();
                Json(json!({
                    "message": null,
                    "processResult": {
                        "memberPointsBalance": [{"memberCurrencies": [{"currencyName": self.settings.currency,
                            "currencyType": "NonQualifying", "escrowPointsBalance": 0.0,
                            "pointsBalance": available as f64}], "memberShipNumber": member}],
                        "transactionJournalResult": [{
                            "changeInMemberPoints": [{"changeInMemberCurrencies": [{
                                "changeInPointsBalance": a.points.get() as f64, "currencyName": self.settings.currency,
                                "currencyType": "NonQualifying", "promotionId": "NA"}], "memberShipNumber": member}],
                            "id": sf_id(a.loyalty_transaction_id.as_str()),
                        }],
                    },
                    "programName": str_of(journal, "LoyaltyProgramName"),
                    "simulationResults": null,
                    "status": true,
                }))
                .into_response()
            }
            Err(e) => failure(e).await,
        }
    }

    fn accrual_of(&self, journal: &Value) -> Result<AccrualRequest, String> {
        let reference = str_of(journal, &self.settings.reference_field);
        let transaction =
            transaction_of(term(reference, "transaction").ok_or("the journal names no transaction")?)?;
        let currency = Currency::parse(str_of(journal, "CurrencyIsoCode")).map_err(|e| e.to_string())?;
        Ok(AccrualRequest {
            member_id: MemberId::parse(str_of(journal, "MembershipNumber")).map_err(|e| e.to_string())?,
            transaction,
            currency,
            eligible_minor: Amount::new(
                decimal_minor(str_of(journal, "TransactionAmount"), currency)
                    .ok_or("TransactionAmount is not an amount")?,
            )
            .map_err(|e| e.to_string())?,
            occurred_at: timestamp(str_of(journal, "ActivityDate"))?,
            pending_until: None,
        })
    }

    /// The credit or debit points process: a re-credit, a reversal, or a checkout hold.
    async fn points_process(&self, process: &str, body: &Value) -> Response {
        self.posts.fetch_add(1, Ordering::Relaxed);
        let credit = process == self.settings.credit_process;
        if !credit && process != self.settings.debit_process {
            return sf_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no active process {process}"),
            );
        }
        let Some(parameters) = body.pointer("/processParameters/0") else {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "no processParameters".into(),
            );
        };
        let journal = parameters
            .get("TransactionJournal")
            .cloned()
            .unwrap_or(Value::Null);
        let field = if credit { "PointsToCredit" } else { "PointsToDebit" };
        let Some(points) = parameters.get(field).and_then(Value::as_f64).filter(|p| *p > 0.0) else {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!("{field} is required"),
            );
        };
        let etn = str_of(&journal, "ExternalTransactionNumber");
        let reference = str_of(&journal, &self.settings.reference_field).to_owned();
        let activity = match timestamp(str_of(&journal, "ActivityDate")) {
            Ok(at) => at,
            Err(message) => return sf_error(StatusCode::BAD_REQUEST, "INVALID_INPUT", message),
        };
        let key = self.journal_key(etn, activity);
        let moved = if reference.starts_with("retail-sync hold ") && !credit {
            self.hold(&journal, &reference, &key)
        } else {
            self.adjustment(&journal, &reference, credit, points as i64, &key)
        };
        match moved {
            Ok(Ok(moved)) => {
                let result = if credit { "PointsCredited" } else { "PointsDebited" };
                Json(json!({"message": null,
                    "outputParameters": {"outputParameters": {"results": [{result: moved as f64}]}},
                    "simulationDetails": {}, "status": true}))
                .into_response()
            }
            Ok(Err(e)) => failure(e).await,
            Err(message) => sf_error(StatusCode::BAD_REQUEST, "INVALID_INPUT", message),
        }
    }

    #[allow(clippy::type_complexity)]
    fn hold(&self, journal: &Value, reference: &str, key: &str) -> Result<Result<i64, SimError>, String> {
        let term = |name: &str| term(reference, name).ok_or(format!("the hold names no {name}"));
        let currency = Currency::parse(term("currency")?).map_err(|e| e.to_string())?;
        let request = HoldRequest {
            member_id: MemberId::parse(str_of(journal, "MembershipNumber")).map_err(|e| e.to_string())?,
            points: Points::new(term("points")?.parse().map_err(|_| "points")?).map_err(|e| e.to_string())?,
            currency,
            basket_net_minor: Amount::new(term("basket")?.parse().map_err(|_| "basket")?)
                .map_err(|e| e.to_string())?,
            expires_at: timestamp(term("expires")?)?,
        };
        Ok(self.loyalty.create_hold(&request, key).map(|h| h.points.get()))
    }

    #[allow(clippy::type_complexity)]
    fn adjustment(
        &self,
        journal: &Value,
        reference: &str,
        credit: bool,
        points: i64,
        key: &str,
    ) -> Result<Result<i64, SimError>, String> {
        let request = AdjustmentRequest {
            member_id: MemberId::parse(str_of(journal, "MembershipNumber")).map_err(|e| e.to_string())?,
            // A credit of the restore subtype gives back earned points; any other credit re-credits.
            kind: match (credit, str_of(journal, "JournalSubTypeName")) {
                (true, subtype) if subtype == self.settings.restore.1 => AdjustmentKind::Restore,
                (true, _) => AdjustmentKind::Recredit,
                (false, _) => AdjustmentKind::Reversal,
            },
            transaction: transaction_of(
                term(reference, "transaction").ok_or("the journal names no transaction")?,
            )?,
            reference: term(reference, "reference").unwrap_or("adjustment").to_owned(),
            points: Points::new(points).map_err(|e| e.to_string())?,
            occurred_at: timestamp(str_of(journal, "ActivityDate"))?,
        };
        Ok(self.loyalty.adjust(&request, key).map(|a| a.delta.abs()))
    }

    /// Cancel Redemption of a checkout hold's debit: the reference hold is released.
    async fn cancel_redemption(&self, body: &Value) -> Response {
        let id = body
            .pointer("/inputs/0/TransactionJournalId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(hold) = reference_id(id).and_then(|h| HoldId::parse(h).ok()) else {
            return action_error("INVALID_ID_FIELD", format!("no journal {id}"));
        };
        let key = self.key(&format!("{id}:cancel"));
        match self.loyalty.release_hold(&hold, &key) {
            Ok(_) => Json(
                json!([{"actionName": "cancelRedemption", "errors": null, "isSuccess": true,
                "outputValues": {"CancellationTransactionJournalId": format!("{}C", sf_id(hold.as_str()))}}]),
            )
            .into_response(),
            Err(SimError::Refused { code, message, .. }) => action_error(code, message),
            Err(e) => failure(e).await,
        }
    }

    /// An update of a hold journal's reference field naming the order: the hold is committed to it.
    async fn update_journal(&self, id: &str, body: &Value) -> Response {
        let reference = str_of(body, &self.settings.reference_field);
        let Some(hold) = reference_id(id).and_then(|h| HoldId::parse(h).ok()) else {
            return sf_error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no journal {id}"));
        };
        let commit = (|| {
            let order = transaction_of(term(reference, "order")?).ok()?;
            let points = Points::new(term(reference, "points")?.parse().ok()?).ok()?;
            Some(CommitRequest {
                transaction: order,
                points,
            })
        })();
        let Some(commit) = commit else {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "only a hold's commitment to an order may be written".into(),
            );
        };
        let key = self.key(&format!("{id}:commit"));
        match self.loyalty.commit_hold(&hold, &commit, &key) {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(SimError::Refused { code, message, .. }) => sf_error(
                StatusCode::BAD_REQUEST,
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                format!("{code}: {message}"),
            ),
            Err(e) => failure(e).await,
        }
    }
}

/// A standard action's failure: HTTP 400 and `isSuccess: false` with the reason.
fn action_error(code: &str, message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(
            json!([{"actionName": "cancelRedemption", "isSuccess": false, "outputValues": null,
            "errors": [{"statusCode": code, "message": message}]}]),
        ),
    )
        .into_response()
}

fn timestamp(text: &str) -> Result<Timestamp, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not a dateTime: {e}"))
}

/// The routes, for mounting under the simulators' server (behind its access rules).
pub fn router(sf: SalesforceSimulator) -> axum::Router<()> {
    async fn route(
        State(sf): State<SalesforceSimulator>,
        method: Method,
        Path((version, rest)): Path<(String, String)>,
        RawQuery(query): RawQuery,
        body: Bytes,
    ) -> Response {
        sf.handle(method, &version, &rest, query, &body).await
    }
    axum::Router::new()
        .route("/services/data/{version}/{*rest}", axum::routing::any(route))
        .with_state(sf)
}
