//! The loyalty port on Salesforce Loyalty Management (`LOYALTY_KIND=salesforce-loyalty`), over its
//! Connect REST API, standard actions and the REST API's SOQL:
//! - an accrual → a transaction journal processed in real time (`POST
//!   /connect/realtime/loyalty/programs/{program}`): the program's rules compute the points;
//! - a reversal / re-credit → the program's debit / credit points process (`POST
//!   /connect/loyalty/programs/{program}/program-processes/{process}`) with explicit points;
//! - a hold → Salesforce has none for points, so a checkout's hold is a debit journal of the hold
//!   subtype whose terms (points, value, basket, expiry) are written in the reference field; releasing
//!   it, or finding it expired (reading it, committing it, or reading the member's balance or making
//!   them a new hold), cancels the debit (`actions/standard/cancelRedemption`); committing it writes the
//!   order in its reference field (the points stay spent);
//! - the balance → the member profile's points currency (`GET /loyalty-programs/{program}/members`);
//! - the books, for reconciliation (`LoyaltyBooks`) → SOQL over the journals whose `ActivityDate`
//!   falls in the window, their ledger entries and their members, every batch read (see [`books`]).
//!
//! # Exactly once without an idempotency key
//! Every journal carries `ExternalTransactionNumber` = the stamp of the call's idempotency key
//! ([`crate::wire::stamp`], 40 characters at most), and every attempt first looks it up with SOQL
//! (`SELECT … FROM TransactionJournal WHERE ExternalTransactionNumber = '…'`, an indexed field): a
//! journal posted by an attempt that timed out is found, never posted twice.

pub mod books;
#[cfg(test)]
mod contract;
pub mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::{Value, json};

use retail_sync_contracts::events::{ReasonCode, TransactionRef};
use retail_sync_contracts::values::{Amount, Currency, ExternalRef, HoldId, MemberId, Points};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{
    Accrual, AccrualRequest, Adjustment, AdjustmentKind, AdjustmentRequest, Balance, CommitRequest, Hold,
    HoldRequest, HoldStatus, Loyalty,
};
use retail_sync_core::saga::SagaId;

use crate::api::{Auth, Caller, json_of, status_error};
use crate::config::HttpConfig;
use crate::error::ConnectorError;
use crate::wire;
pub use mapping::SalesforceMapping;

/// `ExternalTransactionNumber` is a Text(40).
pub const ETN_MAX: usize = 40;

/// Cheap to clone: clones share the connection pool and the token.
#[derive(Clone)]
pub struct SalesforceLoyalty {
    caller: Caller,
    mapping: Arc<SalesforceMapping>,
}

/// A Salesforce REST or Connect error body: `[{"errorCode", "message"}]` (an action's failure:
/// `[{"isSuccess": false, "errors": [{"statusCode", "message"}]}]`).
pub fn error_of(bytes: &[u8]) -> Option<(String, String)> {
    let body: Value = serde_json::from_slice(bytes).ok()?;
    let first = body.as_array()?.first()?;
    let (code, message) = match first
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        Some(e) => (e.get("statusCode"), e.get("message")),
        None => (first.get("errorCode"), first.get("message")),
    };
    Some((
        code.and_then(Value::as_str).unwrap_or("UNKNOWN").to_owned(),
        message.and_then(Value::as_str).unwrap_or_default().to_owned(),
    ))
}

/// Salesforce's back-pressure and contention, retried like a 503: the org's API request limit
/// (`REQUEST_LIMIT_EXCEEDED`, answered with 403) and a record locked by another transaction.
const BUSY: &[&str] = &[
    "REQUEST_LIMIT_EXCEEDED",
    "UNABLE_TO_LOCK_ROW",
    "SERVER_UNAVAILABLE",
    "QUERY_TIMEOUT",
];

/// A non-2xx answer as the connector's error, back-pressure told apart from refusals.
pub fn classify(error: ConnectorError) -> ConnectorError {
    error.busy_when(|_, code| BUSY.contains(&code))
}

/// Whether `id` can be a journal id (Salesforce's are 15 or 18 alphanumerics): only such reach a query.
fn journal_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 40 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A journal as SOQL shows it.
#[derive(Debug, Clone)]
struct Journal {
    id: String,
    status: String,
    reference: String,
}

fn refusal(status: u16, code: &str, message: String) -> ConnectorError {
    ConnectorError::Status {
        status,
        code: code.to_owned(),
        message,
        retry_after: None,
    }
}

/// One `key=value` of a reference text.
fn term<'a>(reference: &'a str, name: &str) -> Option<&'a str> {
    reference
        .split(' ')
        .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

impl SalesforceLoyalty {
    pub fn new(config: &HttpConfig, auth: Auth, mapping: SalesforceMapping) -> Result<Self, ConnectorError> {
        Ok(Self {
            caller: Caller::new(config, auth, "loyalty")?,
            mapping: Arc::new(mapping),
        })
    }

    /// Tokens fetched from the token endpoint so far by this connector and its clones.
    pub fn tokens_fetched(&self) -> u64 {
        self.caller.tokens_fetched()
    }

    fn data(&self, path: &str) -> String {
        format!("/services/data/{}{path}", self.mapping.api_version)
    }

    // --- the wire ---------------------------------------------------------------------------------

    async fn get(&self, path_and_query: &str) -> Result<Value, ConnectorError> {
        let response = self.caller.get_json(&self.caller.url(path_and_query)).await?;
        json_of(response, error_of).await.map_err(classify)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<Value, ConnectorError> {
        let url = self.caller.url(path);
        let response = self
            .caller
            .authorized(|| {
                self.caller
                    .client()
                    .request(method.clone(), &url)
                    .header("accept", "application/json")
                    .json(body)
            })
            .await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        // Every POST and PATCH goes to a resource that exists in a well-set-up org (the program, its
        // processes, the standard actions, a journal just read): a 404 is the setup's fault.
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            let (_, message) = error_of(&response.bytes().await.unwrap_or_default())
                .unwrap_or_else(|| (String::new(), "not found".into()));
            return Err(ConnectorError::Misrouted {
                path: path.to_owned(),
                status: 404,
                message,
            });
        }
        if !response.status().is_success() {
            return Err(classify(status_error(response, error_of).await));
        }
        let answer: Value = response.json().await.map_err(ConnectorError::Body)?;
        // The loyalty engine answers some refusals with a 2xx and `"status": false`.
        if answer.get("status") == Some(&Value::Bool(false)) {
            let message = answer
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the loyalty engine refused the request")
                .to_owned();
            if let Some(code) = BUSY.iter().find(|c| message.contains(*c)) {
                return Err(ConnectorError::Busy {
                    status: 200,
                    code: (*code).to_owned(),
                    message,
                });
            }
            return Err(refusal(422, "LOYALTY_ENGINE", message));
        }
        Ok(answer)
    }

    /// The first batch of what `soql` finds (the lookups here find one or two records).
    async fn query(&self, soql: &str) -> Result<Vec<Value>, ConnectorError> {
        let found = self
            .page(&format!("{}?q={}", self.data("/query"), wire::percent(soql)))
            .await?;
        Ok(found
            .get("records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    async fn journal_where(&self, field: &str, value: &str) -> Result<Option<Journal>, ConnectorError> {
        let reference = &self.mapping.reference_field;
        let records = self
            .query(&format!(
                "SELECT Id, Status, ExternalTransactionNumber, {reference} FROM TransactionJournal \
                 WHERE {field} = '{value}' ORDER BY CreatedDate LIMIT 2"
            ))
            .await?;
        if records.len() > 1 {
            tracing::error!(system = "loyalty", field, "two journals carry one identity");
        }
        Ok(records.first().map(|r| self.journal_of(r)))
    }

    fn journal_of(&self, record: &Value) -> Journal {
        let text = |f: &str| {
            record
                .get(f)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Journal {
            id: text("Id"),
            status: text("Status"),
            reference: text(&self.mapping.reference_field),
        }
    }

    /// Salesforce keeps an expired hold's points debited until someone cancels the debit: before a
    /// member's balance is read or a new hold is made, the member's holds still debited past their
    /// expiry are cancelled (Cancel Redemption). So the points of an abandoned checkout come back by
    /// the member's next look at them at the latest.
    async fn release_expired(&self, member: &MemberId) {
        if let Err(e) = self.try_release_expired(member).await {
            // Best effort: the next look retries; the balance or hold asked for must not wait on it.
            tracing::warn!(system = "loyalty", error = %retail_sync_core::error::describe(&e), "expired holds not released this time");
        }
    }

    async fn try_release_expired(&self, member: &MemberId) -> Result<(), ConnectorError> {
        let reference = &self.mapping.reference_field;
        // Member ids hold no quote or `%`; `_` is SOQL's one-character wildcard, escaped.
        let prefix = format!("retail-sync hold member={member} ").replace('_', "\\_");
        let records = self
            .query(&format!(
                "SELECT Id, Status, ExternalTransactionNumber, {reference} FROM TransactionJournal \
                 WHERE {reference} LIKE '{prefix}%' AND Status = 'Processed'"
            ))
            .await?;
        let now = Timestamp::now();
        for journal in records.iter().map(|r| self.journal_of(r)) {
            if self
                .hold_of(&journal, now)
                .is_some_and(|h| h.status == HoldStatus::Expired)
            {
                self.cancel(&journal, "Checkout hold expired").await?;
            }
        }
        Ok(())
    }

    async fn journal_by_stamp(&self, stamp: &str) -> Result<Option<Journal>, ConnectorError> {
        self.journal_where("ExternalTransactionNumber", stamp).await
    }

    /// A journal by its id; ids are checked first so that nothing else reaches the query.
    async fn journal_by_id(&self, id: &str) -> Result<Option<Journal>, ConnectorError> {
        if !journal_id(id) {
            return Ok(None);
        }
        self.journal_where("Id", id).await
    }

    /// The points a journal moved (its ledger entries), signed: credits positive.
    async fn journal_points(&self, id: &str) -> Result<i64, ConnectorError> {
        if !journal_id(id) {
            return Err(refusal(
                502,
                "BAD_ID",
                format!("Salesforce answered a journal id {id:?}"),
            ));
        }
        let records = self
            .query(&format!(
                "SELECT Points, EventType FROM LoyaltyLedger WHERE TransactionJournalId = '{id}' \
                 AND LoyaltyProgramCurrency.Name = '{}'",
                self.mapping.currency
            ))
            .await?;
        Ok(records.iter().map(signed_points).fold(0_i64, i64::saturating_add))
    }

    /// The member's points in the program currency.
    async fn points_balance(&self, member: &MemberId) -> Result<i64, ConnectorError> {
        let path = format!(
            "{}?membershipNumber={}",
            self.data(&format!(
                "/loyalty-programs/{}/members",
                wire::percent(&self.mapping.program)
            )),
            wire::percent(member.as_str())
        );
        let profile = self.get(&path).await?;
        Ok(profile_points(&profile, &self.mapping.currency))
    }

    fn transaction_journal(
        &self,
        kind: &mapping::JournalKind,
        stamp: &str,
        member: &MemberId,
        amount: Option<(i64, Currency)>,
        at: Timestamp,
        reference: String,
    ) -> Value {
        // To the millisecond, as an org keeps a dateTime: what is read back is what was sent.
        let at = Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at);
        let mut journal = json!({
            "ActivityDate": at.to_string(),
            "ExternalTransactionNumber": stamp,
            "JournalTypeName": kind.journal_type,
            "JournalSubTypeName": kind.journal_subtype,
            "LoyaltyProgramName": self.mapping.program,
            "MembershipNumber": member.as_str(),
            "Status": "Pending",
        });
        if let Some((minor, currency)) = amount {
            journal["TransactionAmount"] = Value::String(wire::decimal(minor, currency));
            journal["CurrencyIsoCode"] = Value::String(currency.as_str().to_owned());
        }
        journal[self.mapping.reference_field.as_str()] = Value::String(reference);
        journal
    }

    /// Runs the credit or debit points process for `points` with `journal`; answers the points moved.
    async fn points_process(&self, credit: bool, journal: Value, points: i64) -> Result<i64, ConnectorError> {
        let (process, field, result) = if credit {
            (&self.mapping.credit_process, "PointsToCredit", "PointsCredited")
        } else {
            (&self.mapping.debit_process, "PointsToDebit", "PointsDebited")
        };
        let path = self.data(&format!(
            "/connect/loyalty/programs/{}/program-processes/{}",
            wire::percent(&self.mapping.program),
            wire::percent(process)
        ));
        let body = json!({"processParameters": [{"TransactionJournal": journal, field: points as f64}]});
        let answer = self.send(reqwest::Method::POST, &path, &body).await?;
        Ok(process_points(&answer, result).unwrap_or(points))
    }

    /// Cancels a hold's debit (Cancel Redemption), unless it is cancelled already.
    async fn cancel(&self, journal: &Journal, reason: &str) -> Result<(), ConnectorError> {
        if journal.status == "Cancelled" {
            return Ok(());
        }
        let body = json!({"inputs": [{"TransactionJournalId": journal.id, "CancellationReason": reason}]});
        let answer = self
            .send(
                reqwest::Method::POST,
                &self.data("/actions/standard/cancelRedemption"),
                &body,
            )
            .await?;
        let failed = answer
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(|r| r.get("isSuccess") == Some(&Value::Bool(false)));
        if failed {
            let (code, message) = error_of(&serde_json::to_vec(&answer).unwrap_or_default())
                .unwrap_or_else(|| ("CANCEL_FAILED".into(), "Cancel Redemption failed".into()));
            return Err(refusal(422, &code, message));
        }
        Ok(())
    }

    /// A hold as its journal shows it (`None`: the journal is not a hold of ours).
    fn hold_of(&self, journal: &Journal, now: Timestamp) -> Option<Hold> {
        let r = &journal.reference;
        if !r.starts_with("retail-sync hold ") {
            return None;
        }
        let member = MemberId::parse(term(r, "member")?).ok()?;
        let points = Points::new(term(r, "points")?.parse().ok()?).ok()?;
        let currency = Currency::parse(term(r, "currency")?).ok()?;
        let expires_at: Timestamp = term(r, "expires")?.parse().ok()?;
        let transaction = term(r, "order").and_then(transaction_of);
        // A cancelled debit past the hold's expiry reads as expired, whoever cancelled it first: the
        // hold had run out either way.
        let status = match (journal.status.as_str(), &transaction) {
            ("Cancelled", _) if expires_at <= now => HoldStatus::Expired,
            ("Cancelled", _) => HoldStatus::Released,
            (_, Some(_)) => HoldStatus::Committed,
            _ if expires_at <= now => HoldStatus::Expired,
            _ => HoldStatus::Held,
        };
        Some(Hold {
            hold_id: HoldId::parse(&journal.id).ok()?,
            member_id: member,
            value_minor: self.value_of(points, currency)?,
            points,
            currency,
            status,
            expires_at,
            loyalty_transaction_id: transaction
                .is_some()
                .then(|| ExternalRef::parse(journal.id.clone()).ok())
                .flatten(),
            transaction,
        })
    }

    /// What points are worth before tax, at the program's redemption rate.
    fn value_of(&self, points: Points, currency: Currency) -> Option<Amount> {
        let value = i128::from(points.get())
            * i128::from(currency.minor_per_major())
            * i128::from(self.mapping.value_of_100_points)
            / 100;
        Amount::new(i64::try_from(value).ok()?).ok()
    }

    async fn hold(&self, hold_id: &HoldId) -> Result<Hold, ConnectorError> {
        let journal = self.journal_by_id(hold_id.as_str()).await?;
        journal
            .and_then(|j| self.hold_of(&j, Timestamp::now()))
            .ok_or_else(|| refusal(404, "hold_not_found", format!("no hold {hold_id}")))
    }

    /// A hold found expired still has its points debited in Salesforce: cancel the debit.
    async fn expire(&self, hold: &Hold) -> Result<(), ConnectorError> {
        if hold.status == HoldStatus::Expired
            && let Some(journal) = self.journal_by_id(hold.hold_id.as_str()).await?
        {
            self.cancel(&journal, "Checkout hold expired").await?;
        }
        Ok(())
    }
}

/// The journal id and the points of `currency` an accrual earned, from the realtime processing answer
/// (`processResult.transactionJournalResult[0]`).
fn accrued(answer: &Value, currency: &str) -> (String, i64) {
    let result = answer.pointer("/processResult/transactionJournalResult/0");
    let id = result
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let earned: f64 = result
        .and_then(|r| r.get("changeInMemberPoints"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|m| {
            m.get("changeInMemberCurrencies")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c.get("currencyName").and_then(Value::as_str) == Some(currency))
        .filter_map(|c| c.get("changeInPointsBalance").and_then(Value::as_f64))
        .sum();
    (id, earned as i64)
}

/// A member's points in `currency`, from the member profile (`memberCurrencies[]`).
fn profile_points(profile: &Value, currency: &str) -> i64 {
    let currencies = profile
        .get("memberCurrencies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ours = currencies.iter().find(|c| {
        [
            "loyaltyMemberCurrencyName",
            "loyaltyProgramCurrencyName",
            "currencyName",
        ]
        .iter()
        .any(|f| c.get(*f).and_then(Value::as_str) == Some(currency))
    });
    ours.and_then(|c| c.get("pointsBalance"))
        .and_then(Value::as_f64)
        .map_or(0, |p| p as i64)
}

/// The points a program process moved (`outputParameters.outputParameters.results[0].<field>`).
fn process_points(answer: &Value, field: &str) -> Option<i64> {
    answer
        .pointer("/outputParameters/outputParameters/results/0")
        .and_then(|r| r.get(field))
        .and_then(Value::as_f64)
        .map(|p| p as i64)
}

fn transaction_of(id: &str) -> Option<TransactionRef> {
    SagaId::from_stored(id.to_owned()).transaction()
}

/// A ledger entry's points, signed: a `Debit` takes, anything else gives. (`as` saturates, and so does
/// every sum of them: no answer can overflow us.)
fn signed_points(entry: &Value) -> i64 {
    let points = entry.get("Points").and_then(Value::as_f64).unwrap_or(0.0) as i64;
    if entry.get("EventType").and_then(Value::as_str) == Some("Debit") {
        points.saturating_neg()
    } else {
        points
    }
}

/// A journal found by its number must have been processed: `Pending` is waited for, `Error` or
/// `Cancelled` is the platform's refusal of it.
fn processed(journal: &Journal) -> Result<(), ConnectorError> {
    match journal.status.as_str() {
        "Processed" => Ok(()),
        "Pending" => Err(ConnectorError::Busy {
            status: 409,
            code: "JOURNAL_PENDING".into(),
            message: format!("journal {} is still pending", journal.id),
        }),
        other => Err(refusal(
            422,
            "JOURNAL_NOT_PROCESSED",
            format!("journal {} is {other}", journal.id),
        )),
    }
}

/// A read made after the journal was posted: whatever it meets, the effect exists, so it is never a
/// refusal — the next delivery finds the journal by its number and reads again.
fn after_effect(e: ConnectorError) -> ConnectorError {
    match e {
        ConnectorError::Status { status, .. }
            if (400..500).contains(&status) && !matches!(status, 408 | 429) =>
        {
            ConnectorError::Unsettled {
                message: format!("posted, but reading it back failed: {e}"),
            }
        }
        other => other,
    }
}

/// A journal posted (2xx) that its number does not find yet: never posted again by this delivery.
fn not_visible(what: &str) -> ConnectorError {
    ConnectorError::Unsettled {
        message: format!("{what} was posted but its number does not find it yet"),
    }
}

fn external(id: &str) -> Result<ExternalRef, ConnectorError> {
    ExternalRef::parse(id.to_owned()).map_err(|e| {
        refusal(
            502,
            "BAD_ID",
            format!("Salesforce answered a journal id {id:?}: {e}"),
        )
    })
}

fn points(n: i64) -> Result<Points, ConnectorError> {
    Points::new(n.max(0)).map_err(|e| refusal(502, "BAD_POINTS", e.to_string()))
}

fn port_error(e: ConnectorError) -> Error {
    e.into_port_error("loyalty", ReasonCode::LoyaltyRejected)
}

/// A hold refused for what it is (expired, released, committed elsewhere, other points): the order
/// workflow fails the order on these, and only these.
fn redemption_refused(code: &str, message: String) -> Error {
    Error::rejected(ReasonCode::RedemptionRefused, format!("{code}: {message}"))
}

#[async_trait]
impl Loyalty for SalesforceLoyalty {
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
        let stamp = wire::stamp(key.as_str(), ETN_MAX);
        let path = self.data(&format!(
            "/connect/realtime/loyalty/programs/{}",
            wire::percent(&self.mapping.program)
        ));
        let reference = format!("retail-sync transaction={}", SagaId::of(&request.transaction));
        let journal = self.transaction_journal(
            &self.mapping.accrual,
            &stamp,
            &request.member_id,
            Some((request.eligible_minor.get(), request.currency)),
            request.occurred_at,
            reference,
        );
        self.caller
            .retrying("accrual", Some(key.as_str()), || async {
                let (id, earned) = match self.journal_by_stamp(&stamp).await? {
                    Some(found) => {
                        processed(&found)?;
                        let earned = self.journal_points(&found.id).await.map_err(after_effect)?;
                        (found.id, earned)
                    }
                    None => {
                        let body = json!({"transactionJournals": [journal.clone()]});
                        let answer = self
                            .send(reqwest::Method::POST, &path, &body)
                            .await
                            .map_err(|e| e.settle_later("posting the accrual journal"))?;
                        accrued(&answer, &self.mapping.currency)
                    }
                };
                let balance = self
                    .points_balance(&request.member_id)
                    .await
                    .map_err(after_effect)?;
                Ok(Accrual {
                    loyalty_transaction_id: external(&id)?,
                    points: points(earned)?,
                    balance: points(balance)?,
                    // The program's own rules decide when points activate; retail-sync holds none.
                    pending: false,
                })
            })
            .await
            .map_err(port_error)
    }

    async fn balance(&self, member_id: &MemberId) -> Result<Balance, Error> {
        // Once per call, not once per attempt: the sweep is best effort and retries itself next time.
        self.release_expired(member_id).await;
        let balance = self
            .caller
            .retrying("balance", None, || self.points_balance(member_id))
            .await
            .and_then(points)
            .map_err(port_error)?;
        // A hold's points are debited in Salesforce when it is made: nothing is held on top.
        Ok(Balance {
            member_id: member_id.clone(),
            balance,
            held: Points::ZERO,
            available: balance,
            pending: Points::ZERO,
        })
    }

    async fn create_hold(&self, request: &HoldRequest, key: &IdempotencyKey) -> Result<Hold, Error> {
        let Some(value) = self.value_of(request.points, request.currency) else {
            return Err(Error::rejected(
                ReasonCode::LoyaltyRejected,
                "invalid_hold: too many points",
            ));
        };
        if value > request.basket_net_minor {
            return Err(Error::rejected(
                ReasonCode::LoyaltyRejected,
                format!(
                    "exceeds_basket: {value} exceeds the basket's {}",
                    request.basket_net_minor
                ),
            ));
        }
        if request.points.get() == 0 || request.expires_at <= Timestamp::now() {
            return Err(Error::rejected(
                ReasonCode::LoyaltyRejected,
                "invalid_hold: no points, or an expiry in the past",
            ));
        }
        let stamp = wire::stamp(key.as_str(), ETN_MAX);
        let reference = format!(
            "retail-sync hold member={} points={} currency={} basket={} expires={}",
            request.member_id,
            request.points,
            request.currency,
            request.basket_net_minor,
            // To the second, so that the terms fit a Text(255) field with the longest ids.
            Timestamp::from_second(request.expires_at.as_second()).unwrap_or(request.expires_at)
        );
        let journal = self.transaction_journal(
            &self.mapping.hold,
            &stamp,
            &request.member_id,
            Some((request.basket_net_minor.get(), request.currency)),
            Timestamp::now(),
            reference,
        );
        self.caller
            .retrying("hold", Some(key.as_str()), || async {
                if self.journal_by_stamp(&stamp).await?.is_none() {
                    self.release_expired(&request.member_id).await;
                    self.points_process(false, journal.clone(), request.points.get())
                        .await
                        .map_err(|e| e.settle_later("debiting the hold"))?;
                }
                let found = self
                    .journal_by_stamp(&stamp)
                    .await
                    .map_err(after_effect)?
                    .ok_or_else(|| not_visible("the hold's debit"))?;
                processed(&found)?;
                self.hold_of(&found, Timestamp::now())
                    .ok_or_else(|| refusal(502, "NOT_A_HOLD", format!("journal {} is not a hold", found.id)))
            })
            .await
            .map_err(port_error)
    }

    async fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, Error> {
        let hold = self
            .caller
            .retrying("hold", None, || self.hold(hold_id))
            .await
            .map_err(port_error)?;
        self.expire(&hold).await.map_err(port_error)?;
        Ok(hold)
    }

    async fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &IdempotencyKey,
    ) -> Result<Hold, Error> {
        let order = SagaId::of(&request.transaction);
        self.caller
            .retrying("commit", Some(key.as_str()), || async {
                let hold = match self.hold(hold_id).await {
                    Err(ConnectorError::Status {
                        status: 404, message, ..
                    }) => {
                        return Ok(Err(redemption_refused("hold_not_found", message)));
                    }
                    other => other?,
                };
                let refused = match hold.status {
                    HoldStatus::Committed if hold.transaction.as_ref() == Some(&request.transaction) => {
                        return Ok(Ok(hold));
                    }
                    HoldStatus::Committed => Some(("hold_committed", "committed to another transaction")),
                    HoldStatus::Released => Some(("hold_released", "released")),
                    HoldStatus::Expired => {
                        self.expire(&hold).await?;
                        Some(("hold_expired", "expired"))
                    }
                    HoldStatus::Held if hold.points != request.points => {
                        Some(("points_mismatch", "held for other points"))
                    }
                    HoldStatus::Held => None,
                };
                if let Some((code, what)) = refused {
                    return Ok(Err(redemption_refused(code, format!("hold {hold_id} is {what}"))));
                }
                let Some(journal) = self.journal_by_id(hold_id.as_str()).await? else {
                    return Ok(Err(redemption_refused(
                        "hold_not_found",
                        format!("no hold {hold_id}"),
                    )));
                };
                let committed = format!("{} order={order}", journal.reference);
                let field = self.mapping.reference_field.clone();
                // `hold_id` was checked by `journal_by_id` before it found the journal.
                self.send(
                    reqwest::Method::PATCH,
                    &self.data(&format!("/sobjects/TransactionJournal/{hold_id}")),
                    &json!({ field: committed }),
                )
                .await
                .map_err(|e| e.settle_later("committing the hold"))?;
                let hold = self.hold(hold_id).await.map_err(after_effect)?;
                match (&hold.status, &hold.transaction) {
                    (HoldStatus::Committed, Some(t)) if *t == request.transaction => Ok(Ok(hold)),
                    (HoldStatus::Expired | HoldStatus::Released, _) => Ok(Err(redemption_refused(
                        "hold_expired",
                        format!("hold {hold_id} ran out while it was committed"),
                    ))),
                    _ => Err(ConnectorError::Unsettled {
                        message: format!("hold {hold_id} reads {} after its commit", hold.status.as_str()),
                    }),
                }
            })
            .await
            .map_err(|e| match e {
                // The platform's own refusal of the commit is a verdict on the redemption; credentials,
                // permissions and limits are not.
                ConnectorError::Status {
                    status,
                    code,
                    message,
                    ..
                } if (400..500).contains(&status) && !matches!(status, 401 | 403 | 407 | 408 | 429) => {
                    redemption_refused(&code, message)
                }
                other => port_error(other),
            })?
    }

    async fn release_hold(&self, hold_id: &HoldId, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.caller
            .retrying("release", Some(key.as_str()), || async {
                let hold = self.hold(hold_id).await?;
                match hold.status {
                    HoldStatus::Committed => Err(refusal(
                        409,
                        "hold_committed",
                        format!("hold {hold_id} is committed: re-credit it instead"),
                    )),
                    HoldStatus::Released => Ok(hold),
                    HoldStatus::Held | HoldStatus::Expired => {
                        if let Some(journal) = self.journal_by_id(hold_id.as_str()).await? {
                            self.cancel(&journal, "Checkout abandoned").await?;
                        }
                        self.hold(hold_id).await
                    }
                }
            })
            .await
            .map_err(port_error)
    }

    async fn adjust(&self, request: &AdjustmentRequest, key: &IdempotencyKey) -> Result<Adjustment, Error> {
        let stamp = wire::stamp(key.as_str(), ETN_MAX);
        let (kind, credit) = match request.kind {
            AdjustmentKind::Reversal => (&self.mapping.reversal, false),
            AdjustmentKind::Recredit => (&self.mapping.recredit, true),
            AdjustmentKind::Restore => (&self.mapping.restore, true),
        };
        let reference = format!(
            "retail-sync transaction={} reference={}",
            SagaId::of(&request.transaction),
            request.reference
        );
        let mut journal = self.transaction_journal(
            kind,
            &stamp,
            &request.member_id,
            None,
            request.occurred_at,
            reference,
        );
        // What it asks, apart from what the platform takes (a reversal may take less).
        if let Some(field) = &self.mapping.requested_points_field {
            journal[field.as_str()] = Value::String(request.points.to_string());
        }
        self.caller
            .retrying("adjustment", Some(key.as_str()), || async {
                let found = match self.journal_by_stamp(&stamp).await? {
                    Some(found) => found,
                    None => {
                        self.points_process(credit, journal.clone(), request.points.get())
                            .await
                            .map_err(|e| e.settle_later("posting the adjustment"))?;
                        self.journal_by_stamp(&stamp)
                            .await
                            .map_err(after_effect)?
                            .ok_or_else(|| not_visible("the adjustment's journal"))?
                    }
                };
                processed(&found)?;
                let delta = self.journal_points(&found.id).await.map_err(after_effect)?;
                let balance = self
                    .points_balance(&request.member_id)
                    .await
                    .map_err(after_effect)?;
                Ok(Adjustment {
                    loyalty_transaction_id: external(&found.id)?,
                    delta,
                    balance: points(balance)?,
                    pending_cancelled: Points::ZERO,
                })
            })
            .await
            .map_err(port_error)
    }
}
