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
//! Salesforce journals back too. Ids are the reference's numbers (see `sf_id`).
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The org's setup the simulator assumes (the connector's defaults).
#[derive(Debug, Clone)]
pub struct SalesforceSettings {
    pub currency: String,
    pub reference_field: String,
    pub credit_process: String,
    pub debit_process: String,
}

impl Default for SalesforceSettings {
    fn default() -> Self {
        Self {
            currency: "Points".into(),
            reference_field: "RetailSync_Reference__c".into(),
            credit_process: "Credit Points".into(),
            debit_process: "Debit Points".into(),
        }
    }
}

/// The Salesforce front. Cheap to clone.
#[derive(Clone)]
pub struct SalesforceSimulator {
    loyalty: LoyaltySimulator,
    settings: Arc<SalesforceSettings>,
    nonce: Arc<AtomicU64>,
    /// Journals posted (every realtime journal and points process received): what a test counts.
    posts: Arc<AtomicU64>,
}

/// A journal as the dialect shows it.
#[derive(Debug, Clone)]
struct Journal {
    id: String,
    etn: String,
    status: &'static str,
    reference: String,
    /// Ledger points, signed (credits positive); none for a hold.
    points: Option<i64>,
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

/// One condition of a SOQL `WHERE`: `<field> = '<value>'` or `<field> LIKE '<prefix>%'`.
struct Condition {
    field: String,
    value: String,
    like: bool,
}

impl Condition {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (field, value, like) = match text.split_once(" LIKE '") {
            Some((field, value)) => (field, value, true),
            None => {
                let (field, value) = text.split_once(" = '")?;
                (field, value, false)
            }
        };
        let value = value.strip_suffix('\'')?;
        // SOQL escapes: `\_` and `\%` are the characters themselves.
        let value = value.replace("\\_", "\u{1}").replace("\\%", "\u{2}");
        Some(Self {
            field: field.trim().to_owned(),
            value,
            like,
        })
    }

    fn matches(&self, actual: &str) -> bool {
        let literal = |s: &str| s.replace('\u{1}', "_").replace('\u{2}', "%");
        match (self.like, self.value.strip_suffix('%')) {
            (true, Some(prefix)) if !prefix.contains(['%', '_']) => actual.starts_with(&literal(prefix)),
            (true, _) => false,
            (false, _) => actual == literal(&self.value),
        }
    }
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
        }
    }

    /// Journals posted so far (realtime journals and points processes).
    pub fn posts(&self) -> u64 {
        self.posts.load(Ordering::Relaxed)
    }

    fn key(&self, etn: &str) -> String {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        format!("sf:{nonce:x}:{etn}")
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
        let mut journals = Vec::new();
        for (key, call, answer) in applied {
            let Some(etn) = key
                .strip_prefix("sf:")
                .and_then(|r| r.split_once(':'))
                .map(|(_, etn)| etn.to_owned())
            else {
                continue;
            };
            match (call, answer) {
                (LoyaltyCall::Accrue(r), LoyaltyAnswer::Accrual(a)) => journals.push(Journal {
                    id: sf_id(a.loyalty_transaction_id.as_str()),
                    etn,
                    status: "Processed",
                    reference: format!("retail-sync transaction={}", SagaId::of(&r.transaction)),
                    points: points_of(a.loyalty_transaction_id.as_str()),
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
                    journals.push(Journal {
                        id: sf_id(h.hold_id.as_str()),
                        etn,
                        status: if now.status == HoldStatus::Released || cancelled.contains(&h.hold_id) {
                            "Cancelled"
                        } else {
                            "Processed"
                        },
                        reference,
                        points: None,
                    });
                }
                _ => {}
            }
        }
        journals.sort_by(|a, b| a.id.cmp(&b.id));
        journals
    }

    // --- the routes ------------------------------------------------------------------------------

    async fn handle(&self, method: Method, rest: &str, query: Option<String>, body: &[u8]) -> Response {
        if self.loyalty.faults().down {
            return failure(SimError::Unavailable {
                message: "the platform is down (injected fault)",
            })
            .await;
        }
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
            ("GET", ["query"]) => self.query(query.get("q").map(String::as_str).unwrap_or_default()),
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

    /// `SELECT <fields> FROM <object> WHERE <field> = '<value>' [AND <field> LIKE '<prefix>%' …] …`: the
    /// shapes the connector sends.
    fn query(&self, soql: &str) -> Response {
        let parsed = (|| {
            let rest = soql.strip_prefix("SELECT ")?;
            let (fields, rest) = rest.split_once(" FROM ")?;
            let (object, rest) = rest.split_once(" WHERE ")?;
            let clause = rest.split(" ORDER BY ").next()?.split(" LIMIT ").next()?;
            let conditions = clause
                .split(" AND ")
                .map(Condition::parse)
                .collect::<Option<Vec<_>>>()?;
            let fields: Vec<String> = fields.split(',').map(|f| f.trim().to_owned()).collect();
            Some((fields, object.trim().to_owned(), conditions))
        })();
        let Some((fields, object, conditions)) = parsed else {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "MALFORMED_QUERY",
                format!("unexpected query: {soql}"),
            );
        };
        let journals = self.journals();
        let reference_field = self.settings.reference_field.as_str();
        let field_of = |j: &Journal, f: &str| -> Option<String> {
            match f {
                "Id" => Some(j.id.clone()),
                "Status" => Some(j.status.to_owned()),
                "ExternalTransactionNumber" => Some(j.etn.clone()),
                f if f == reference_field => Some(j.reference.clone()),
                _ => None,
            }
        };
        let records: Vec<Value> = match object.as_str() {
            "TransactionJournal" => {
                let known = |f: &str| {
                    matches!(f, "Id" | "Status" | "ExternalTransactionNumber") || f == reference_field
                };
                if let Some(c) = conditions.iter().find(|c| !known(&c.field)) {
                    return sf_error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        format!("No such column '{}' on entity 'TransactionJournal'", c.field),
                    );
                }
                journals
                    .iter()
                    .filter(|j| {
                        conditions
                            .iter()
                            .all(|c| field_of(j, &c.field).is_some_and(|v| c.matches(&v)))
                    })
                    .map(|j| {
                        let mut r = json!({"attributes": {"type": "TransactionJournal",
                            "url": format!("/services/data/v62.0/sobjects/TransactionJournal/{}", j.id)}});
                        for f in &fields {
                            r[f.as_str()] = field_of(j, f).map_or(Value::Null, Value::String);
                        }
                        r
                    })
                    .collect()
            }
            "LoyaltyLedger"
                if conditions.iter().all(|c| {
                    matches!(
                        c.field.as_str(),
                        "TransactionJournalId" | "LoyaltyProgramCurrency.Name"
                    )
                }) =>
            {
                journals
                    .iter()
                    .filter(|j| {
                        conditions.iter().all(|c| match c.field.as_str() {
                            "TransactionJournalId" => c.matches(&j.id),
                            _ => c.matches(&self.settings.currency),
                        })
                    })
                    .filter_map(|j| j.points)
                    .map(|p| {
                        json!({"attributes": {"type": "LoyaltyLedger"},
                        "Points": p.unsigned_abs() as f64,
                        "EventType": if p < 0 { "Debit" } else { "Credit" }})
                    })
                    .collect()
            }
            _ => {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    format!("unsupported query on {object}"),
                );
            }
        };
        Json(json!({"totalSize": records.len(), "done": true, "records": records})).into_response()
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
        let key = self.key(etn);
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
        let key = self.key(etn);
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
            kind: if credit {
                AdjustmentKind::Recredit
            } else {
                AdjustmentKind::Reversal
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
        Path((_version, rest)): Path<(String, String)>,
        RawQuery(query): RawQuery,
        body: Bytes,
    ) -> Response {
        sf.handle(method, &rest, query, &body).await
    }
    axum::Router::new()
        .route("/services/data/{version}/{*rest}", axum::routing::any(route))
        .with_state(sf)
}
