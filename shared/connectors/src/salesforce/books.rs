//! The loyalty platform's ledger read back for reconciliation ([`LoyaltyBooks`]), from the journals
//! the connector writes (see the module above): the same movements the system API's ledger lists
//! for the same calls, each identified by its journal's id, the id the connector answered when it
//! made it (accrual, adjustment, and the committed hold's).
//!
//! # What is read
//! Three SOQL queries over the REST API (`GET /services/data/vXX.X/query?q=…`), each read to its end:
//! while an answer says `"done": false`, its `nextRecordsUrl` (`/services/data/vXX.X/query/<locator>`)
//! gives the next batch. Every request is retried and authenticated like any other read.
//! 1. The journals: `SELECT Id, Status, ActivityDate, MemberId, JournalType.Name,
//!    JournalSubType.Name, <reference_field>[, <requested_points_field>] FROM TransactionJournal WHERE
//!    LoyaltyProgram.Name = '<program>' AND ActivityDate >= <from> AND ActivityDate < <until> AND
//!    <reference_field> LIKE 'retail-sync %'`. SOQL dateTime literals are to the second, so the
//!    window is widened to whole seconds there (`from` down, `until` up) and cut to the exact `[from,
//!    until)` on the `ActivityDate`s read, which the connector writes to the millisecond, as an org
//!    keeps them.
//! 2. Their points: `SELECT TransactionJournalId, Points, EventType FROM LoyaltyLedger WHERE
//!    LoyaltyProgramCurrency.Name = '<currency>' AND TransactionJournal.ActivityDate >= … AND
//!    TransactionJournal.ActivityDate < … AND TransactionJournal.<reference_field> LIKE 'retail-sync
//!    %'`: a journal's points are its ledger entries' (`Debit` negative, others positive), 0 without
//!    any — the same sum the connector answers for a journal when it posts it.
//! 3. Their members: `SELECT Id, MembershipNumber FROM LoyaltyProgramMember WHERE Id IN (…)`, 200
//!    ids a query. (A journal's `MemberId` is a polymorphic lookup, whose relationship offers no
//!    `MembershipNumber`.)
//!
//! # How each movement is derived
//! Only `Processed` journals count (`Pending` ones moved nothing yet; `Cancelled` and `Error` ones
//! nothing that stays). The reference text (`reference_field`) says which kind of call wrote the
//! journal, and its type and subtype (the mapping's) must agree, else the journal is not one of ours
//! and is left out:
//! - `retail-sync transaction=<t>` of the accrual kind → an accrual of `<t>`, its ledger points;
//!   `pending_points` none (Salesforce's programs hold nothing pending for retail-sync);
//! - `retail-sync transaction=<t> reference=<r>` of the reversal (re-credit) kind → a reversal
//!   (re-credit) of `<t>` caused by `<r>` (the rest of the text), its ledger points; with
//!   `requested_points_field` mapped, what it asked when the ledger took less;
//! - `retail-sync hold … order=<t>` of the hold kind → the redemption of order `<t>`: the hold's
//!   debit, worth what the hold's terms say (`value_minor`, at the program's redemption rate). A hold
//!   not committed (no `order=`) is a checkout in progress, or one its next look cancels: no movement.
//!
//! `occurred_at` is the journal's `ActivityDate`: the business time of an accrual or adjustment, and for
//! a redemption the instant its hold was taken (Salesforce debits the points then; the system API books
//! the redemption when the hold is committed, a checkout later). Merges are not made through this
//! connector and never read. A record that cannot be read (no id, an unparseable date, a member record
//! that is not found, a reference that names no transaction) fails the read: the books are never
//! silently short.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::Value;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::{MemberId, Points};
use retail_sync_core::Error;
use retail_sync_core::ports::{BookedPoints, HoldStatus, LoyaltyBooks, PointsKind};

use super::{Journal, SalesforceLoyalty, external, port_error, refusal, signed_points, term};
use crate::error::ConnectorError;
use crate::wire;

/// Member record ids a `LoyaltyProgramMember` query names (some 25 characters each in the URL).
const IDS_PER_QUERY: usize = 200;

/// The start of every reference text the connector writes.
const OURS: &str = "retail-sync ";

/// SOQL's dateTime range (years 1700 to 4000).
const FIRST_SECOND: i64 = -8_520_336_000;
const LAST_SECOND: i64 = 64_092_211_199;

/// An answer the connector cannot read: a fault of the platform's, never a verdict on the window.
fn malformed(message: String) -> ConnectorError {
    refusal(502, "MALFORMED_ANSWER", message)
}

/// `text` as a quoted SOQL string literal.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' | '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A second as a SOQL dateTime literal (`YYYY-MM-DDThh:mm:ssZ`), within SOQL's range.
fn literal(second: i64) -> String {
    Timestamp::from_second(second.clamp(FIRST_SECOND, LAST_SECOND))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Whether `id` can be a record id in a query (Salesforce's are 15 or 18 alphanumerics): only such
/// reach one.
fn record_id(id: &str) -> bool {
    (1..=80).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// A text field of a record (a relationship's field by its dotted path); `None` when absent or null.
fn text<'a>(record: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.')
        .try_fold(record, |at, name| at.get(name))
        .and_then(Value::as_str)
}

/// One journal of the window as the first query reads it.
struct Read {
    journal: Journal,
    activity: Timestamp,
    member_record: String,
    kind: (String, String),
    requested: Option<i64>,
}

impl SalesforceLoyalty {
    /// One answer of the query resource (a first batch, or the next behind a locator).
    pub(super) async fn page(&self, path_and_query: &str) -> Result<Value, ConnectorError> {
        self.get(path_and_query).await.map_err(|e| match e {
            // The query resource exists in every org: a 404 is a wrong instance URL or API version.
            ConnectorError::Status {
                status: 404, message, ..
            } => ConnectorError::Misrouted {
                path: self.data("/query"),
                status: 404,
                message,
            },
            other => other,
        })
    }

    /// Every record `soql` finds: the first batch, then the batch behind each `nextRecordsUrl` until
    /// one says `done`.
    async fn query_all(&self, soql: &str) -> Result<Vec<Value>, ConnectorError> {
        let mut path = format!("{}?q={}", self.data("/query"), wire::percent(soql));
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let answer = self.caller.retrying("books", None, || self.page(&path)).await?;
            let batch = answer
                .get("records")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("a query answer without records".into()))?;
            records.extend(batch.iter().cloned());
            match answer.get("done") {
                Some(Value::Bool(true)) => return Ok(records),
                Some(Value::Bool(false)) => {}
                other => return Err(malformed(format!("a query answer whose done is {other:?}"))),
            }
            // A path on the same instance, never a URL elsewhere: the token goes with it.
            let next = answer
                .get("nextRecordsUrl")
                .and_then(Value::as_str)
                .filter(|n| n.starts_with("/services/data/") && !n.contains(|c: char| c.is_whitespace()))
                .ok_or_else(|| {
                    malformed(format!(
                        "a batch with more to read and nextRecordsUrl {:?}",
                        answer.get("nextRecordsUrl")
                    ))
                })?;
            if !seen.insert(next.to_owned()) {
                return Err(malformed(format!("nextRecordsUrl {next} came twice")));
            }
            path = next.to_owned();
        }
    }

    async fn books(&self, from: Timestamp, until: Timestamp) -> Result<Vec<BookedPoints>, ConnectorError> {
        let reference = &self.mapping.reference_field;
        // Whole seconds around the window: SOQL's dateTimes have no fraction.
        let low = literal(from.as_second() - i64::from(from.subsec_nanosecond() < 0));
        let high = literal(until.as_second() + i64::from(until.subsec_nanosecond() > 0));
        let requested = self
            .mapping
            .requested_points_field
            .as_ref()
            .map(|f| format!(", {f}"))
            .unwrap_or_default();
        let journals = self
            .query_all(&format!(
                "SELECT Id, Status, ActivityDate, MemberId, JournalType.Name, JournalSubType.Name, \
                 {reference}{requested} FROM TransactionJournal WHERE LoyaltyProgram.Name = {} AND \
                 ActivityDate >= {low} AND ActivityDate < {high} AND {reference} LIKE '{OURS}%' \
                 ORDER BY ActivityDate, Id",
                quoted(&self.mapping.program)
            ))
            .await?;
        let mut read = Vec::new();
        for record in &journals {
            let r = self.read(record)?;
            if r.journal.status == "Processed" && from <= r.activity && r.activity < until {
                read.push(r);
            }
        }
        if read.is_empty() {
            return Ok(Vec::new());
        }
        let ledger = self
            .query_all(&format!(
                "SELECT TransactionJournalId, Points, EventType FROM LoyaltyLedger WHERE \
                 LoyaltyProgramCurrency.Name = {} AND TransactionJournal.ActivityDate >= {low} AND \
                 TransactionJournal.ActivityDate < {high} AND TransactionJournal.{reference} LIKE '{OURS}%'",
                quoted(&self.mapping.currency)
            ))
            .await?;
        let mut points: BTreeMap<&str, i64> = BTreeMap::new();
        for entry in &ledger {
            let id = text(entry, "TransactionJournalId")
                .ok_or_else(|| malformed(format!("a ledger entry without TransactionJournalId: {entry}")))?;
            let sum = points.entry(id).or_default();
            *sum = sum.saturating_add(signed_points(entry));
        }
        let members = self
            .membership_numbers(read.iter().map(|r| r.member_record.as_str()).collect())
            .await?;
        let mut movements = Vec::new();
        for r in &read {
            let member = members.get(r.member_record.as_str()).ok_or_else(|| {
                malformed(format!(
                    "journal {} names member record {}, which LoyaltyProgramMember does not find",
                    r.journal.id, r.member_record
                ))
            })?;
            let taken = points.get(r.journal.id.as_str()).copied().unwrap_or(0);
            if let Some(movement) = self.movement(r, member, taken)? {
                movements.push(movement);
            }
        }
        movements.sort_by(|a, b| {
            (a.occurred_at, a.loyalty_transaction_id.as_str())
                .cmp(&(b.occurred_at, b.loyalty_transaction_id.as_str()))
        });
        Ok(movements)
    }

    /// A journal record of the first query.
    fn read(&self, record: &Value) -> Result<Read, ConnectorError> {
        let journal = self.journal_of(record);
        let bad = |what: &str| malformed(format!("journal {:?} {what}: {record}", journal.id));
        if !super::journal_id(&journal.id) {
            return Err(bad("has no usable Id"));
        }
        let activity = text(record, "ActivityDate")
            .and_then(|t| t.parse::<Timestamp>().ok())
            .ok_or_else(|| bad("has no readable ActivityDate"))?;
        let member_record = text(record, "MemberId")
            .filter(|id| record_id(id))
            .ok_or_else(|| bad("has no usable MemberId"))?
            .to_owned();
        let kind = (
            text(record, "JournalType.Name").unwrap_or_default().to_owned(),
            text(record, "JournalSubType.Name").unwrap_or_default().to_owned(),
        );
        let requested = match &self.mapping.requested_points_field {
            Some(field) => match record.get(field.as_str()) {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_f64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .map(|p| p as i64)
                        .ok_or_else(|| bad(&format!("has a {field} that is no number")))?,
                ),
            },
            None => None,
        };
        Ok(Read {
            journal,
            activity,
            member_record,
            kind,
            requested,
        })
    }

    /// Membership numbers by member record id, `IDS_PER_QUERY` ids a query.
    async fn membership_numbers(
        &self,
        ids: BTreeSet<&str>,
    ) -> Result<BTreeMap<String, MemberId>, ConnectorError> {
        let ids: Vec<&str> = ids.into_iter().collect();
        let mut members = BTreeMap::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list = chunk.iter().map(|id| quoted(id)).collect::<Vec<_>>().join(", ");
            let records = self
                .query_all(&format!(
                    "SELECT Id, MembershipNumber FROM LoyaltyProgramMember WHERE Id IN ({list})"
                ))
                .await?;
            for record in &records {
                let (Some(id), Some(number)) = (text(record, "Id"), text(record, "MembershipNumber")) else {
                    return Err(malformed(format!(
                        "a member record without Id or MembershipNumber: {record}"
                    )));
                };
                let member = MemberId::parse(number).map_err(|e| {
                    malformed(format!(
                        "member record {id} has membership number {number:?}: {e}"
                    ))
                })?;
                members.insert(id.to_owned(), member);
            }
        }
        Ok(members)
    }

    /// The movement a processed journal of the window stands for (see the module's rules); `None` for a
    /// journal that stands for none.
    fn movement(
        &self,
        r: &Read,
        member: &MemberId,
        taken: i64,
    ) -> Result<Option<BookedPoints>, ConnectorError> {
        let m = &self.mapping;
        let is = |kind: &super::mapping::JournalKind| {
            r.kind.0 == kind.journal_type && r.kind.1 == kind.journal_subtype
        };
        let reference = r.journal.reference.as_str();
        let bad = |what: String| malformed(format!("journal {} {what}: {reference:?}", r.journal.id));
        let transaction = || {
            let id = term(reference, "transaction").ok_or_else(|| bad("names no transaction".into()))?;
            super::transaction_of(id).ok_or_else(|| bad(format!("names {id:?}, which is no transaction")))
        };
        let mut movement = BookedPoints {
            loyalty_transaction_id: external(&r.journal.id)?,
            kind: PointsKind::Accrual,
            member_id: member.clone(),
            transaction: None,
            reference: None,
            points: taken,
            requested_points: None,
            value_minor: None,
            pending_points: None,
            occurred_at: r.activity,
        };
        if reference.starts_with("retail-sync hold ") {
            if !is(&m.hold) {
                return Ok(None);
            }
            let Some(hold) = self.hold_of(&r.journal, r.activity) else {
                return Err(bad("is a hold whose terms cannot be read".into()));
            };
            if term(reference, "order").is_some() && hold.transaction.is_none() {
                return Err(bad("names an order that is no transaction".into()));
            }
            if hold.status != HoldStatus::Committed {
                return Ok(None);
            }
            movement.kind = PointsKind::Redemption;
            movement.transaction = hold.transaction;
            movement.value_minor = Some(hold.value_minor);
            return Ok(Some(movement));
        }
        let Some(rest) = reference.strip_prefix(OURS) else {
            return Ok(None);
        };
        match rest.split_once(" reference=") {
            None if is(&m.accrual) => {
                movement.transaction = Some(transaction()?);
            }
            Some((_, caused_by)) if is(&m.reversal) || is(&m.recredit) || is(&m.restore) => {
                movement.kind = if is(&m.reversal) {
                    PointsKind::Reversal
                } else if is(&m.restore) {
                    PointsKind::Restore
                } else {
                    PointsKind::Recredit
                };
                movement.transaction = Some(transaction()?);
                movement.reference = Some(caused_by.to_owned());
                movement.requested_points = r
                    .requested
                    .filter(|asked| *asked != taken.saturating_abs())
                    .map(|asked| Points::new(asked.max(0)))
                    .transpose()
                    .map_err(|e| bad(format!("asked for points that are none: {e}")))?;
            }
            _ => return Ok(None),
        }
        Ok(Some(movement))
    }
}

/// The journals whose business time is in `[from, until)`, as the module describes. An empty or
/// inverted window is refused as the system API refuses it (`invalid_window`), without a call; a
/// platform that does not answer usefully is `Unavailable`.
#[async_trait]
impl LoyaltyBooks for SalesforceLoyalty {
    async fn movements(&self, from: Timestamp, until: Timestamp) -> Result<Vec<BookedPoints>, Error> {
        if from >= until {
            return Err(Error::rejected(
                ReasonCode::LoyaltyRejected,
                format!(
                    "invalid_window: from {from} is not before to {until}: the window [from, to) is empty"
                ),
            ));
        }
        self.books(from, until).await.map_err(port_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted_and_windows_whole_seconds() {
        assert_eq!(quoted("O'Neil \\ x"), "'O\\'Neil \\\\ x'");
        assert_eq!(literal(1_780_000_000), "2026-05-28T20:26:40Z");
        assert_eq!(literal(i64::MIN), "1700-01-01T00:00:00Z");
        assert_eq!(literal(i64::MAX), "4000-12-31T23:59:59Z");
        assert!(record_id("0lMxx0000000JKPEA2") && record_id("LPM-m.1_x"));
        assert!(!record_id("a' OR Id != 'b") && !record_id(""));
    }
}
