//! The outcome of a run: a JSON report other tools can check (`report_version` changes only with an
//! incompatible change) and the human summary printed at the end of `local run`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use retail_sync_core::members::MemberState;
use retail_sync_core::ports::QuarantineItem;
use retail_sync_core::saga::Saga;

use crate::local::Fed;

pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub report_version: u32,
    pub input: Fed,
    pub summary: Summary,
    /// By correlation id; a correlation id several transactions share (the contract gives each its own)
    /// keys each of them as `<correlation id>#<saga id>`, so none is lost.
    pub sagas: BTreeMap<String, SagaReport>,
    /// Loyalty balance per member, as the loyalty platform has it.
    pub balances: BTreeMap<String, u64>,
    /// Documents the ERP posted, in posting order.
    pub erp_postings: Vec<Value>,
    /// Bad input and permanently failed messages, ordered by step, reason and event id.
    pub quarantine: Vec<QuarantineEntry>,
    /// Messages that exhausted their deliveries, by DLQ.
    pub dead_letter_queues: BTreeMap<String, Vec<DeadLetter>>,
    /// Business counters of the run.
    pub metrics: BTreeMap<String, u64>,
    /// Per member, what retail-sync's record and each system hold (no personal data: whether an
    /// e-mail, phone or name is held, not what it is).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, MemberReport>,
    /// Suspected duplicate members: `(member, suspected of being)`, from the duplicate index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<(String, String)>,
    /// Redemption API calls made while feeding (checkouts), with their answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api: Vec<crate::local::ApiExchange>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub sagas: usize,
    pub sagas_by_status: BTreeMap<String, usize>,
    pub quarantined: usize,
    pub quarantined_by_reason: BTreeMap<String, usize>,
    pub dead_lettered: usize,
    pub erp_postings: usize,
    pub points_accrued: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaReport {
    pub saga_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erp_document_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_accrued: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eligible_minor: Option<i64>,
    /// Earned points its returns (and later shipments' corrections) took back, as the platform applied
    /// them; left out when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub points_reversed: i64,
    /// Redeemed points (an order's redemption, a POS sale's points tenders) given back by cancellations,
    /// returns and refunds, as applied; left out when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub points_given_back: i64,
    /// The timeline: `step: outcome — message`.
    pub steps: Vec<String>,
}

/// One member, system by system.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemberReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retail_sync: Option<MemberCopy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loyalty: Option<MemberCopy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erp: Option<MemberCopy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crm: Option<MemberCopy>,
}

/// What one system holds of a member.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemberCopy {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_store_id: Option<String>,
    pub marketing_consent: bool,
    /// Whether a campaign address is held (only with consent).
    pub marketing_email: bool,
    /// Whether any name, e-mail or phone is held (none after an erasure).
    pub personal_data: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Loyalty only: the member's points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<u64>,
}

impl MemberCopy {
    pub fn of(s: &retail_sync_core::ports::MemberSnapshot) -> Self {
        Self {
            status: s.status.as_str().to_owned(),
            tier: s.tier.as_ref().map(|t| t.to_string()),
            home_store_id: s.home_store_id.as_ref().map(|t| t.to_string()),
            marketing_consent: s.marketing_consent,
            marketing_email: s.marketing_email.is_some(),
            personal_data: s.name.is_some() || s.email.is_some() || s.phone.is_some(),
            merged_into: s.merged_into.as_ref().map(|m| m.to_string()),
            balance: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineEntry {
    pub step: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// The queue's message id (stable while the message stays in the DLQ). Not in the report, whose
    /// content is the same from run to run.
    #[serde(skip)]
    pub id: String,
    pub body: String,
    pub receive_count: u32,
    /// When it was first sent to the queue it failed in (SQS keeps `SentTimestamp` across the move).
    #[serde(skip)]
    pub sent_at: jiff::Timestamp,
}

/// What a report is made of; each backend gathers these its own way.
pub struct Facts {
    pub input: Fed,
    pub sagas: Vec<Saga>,
    pub quarantine: Vec<QuarantineItem>,
    pub dead_letters: BTreeMap<String, Vec<DeadLetter>>,
    pub balances: BTreeMap<String, u64>,
    pub erp_postings: Vec<Value>,
    pub metrics: BTreeMap<String, u64>,
    pub api: Vec<crate::local::ApiExchange>,
    /// What the loyalty platform, the ERP and the CRM hold of members (empty for a backend whose
    /// systems are not at hand).
    pub members: BTreeMap<String, MemberReport>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Keys each transaction by its correlation id, or by `<correlation id>#<saga id>` when several share
/// it: whatever order the store lists them in, every one is there under the same key.
fn by_correlation(transactions: Vec<(String, SagaReport)>) -> BTreeMap<String, SagaReport> {
    let mut shared: BTreeMap<&str, usize> = BTreeMap::new();
    for (correlation_id, _) in &transactions {
        *shared.entry(correlation_id.as_str()).or_default() += 1;
    }
    let shared: std::collections::BTreeSet<String> = shared
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(c, _)| c.to_owned())
        .collect();
    transactions
        .into_iter()
        .map(|(correlation_id, saga)| {
            let key = if shared.contains(&correlation_id) {
                format!("{correlation_id}#{}", saga.saga_id)
            } else {
                correlation_id
            };
            (key, saga)
        })
        .collect()
}

impl Report {
    pub fn build(facts: Facts) -> Self {
        let mut summary = Summary::default();
        let mut transactions = Vec::new();
        let mut members = facts.members;
        let mut duplicates = Vec::new();
        for saga in facts.sagas {
            // Member records and the duplicate index live in the saga store; they are no transactions.
            match &saga.member {
                Some(MemberState::Record(r)) => {
                    members.entry(r.member_id.to_string()).or_default().retail_sync =
                        Some(MemberCopy::of(&r.snapshot()));
                    continue;
                }
                Some(MemberState::Contact(c)) => {
                    duplicates.extend(
                        c.suspects()
                            .into_iter()
                            .map(|(a, b)| (a.to_string(), b.to_string())),
                    );
                    continue;
                }
                None => {}
            }
            let status = saga.status.as_str().to_owned();
            *summary.sagas_by_status.entry(status.clone()).or_default() += 1;
            summary.points_accrued += saga.ledger.points_accrued.map_or(0, |p| p.get().unsigned_abs());
            let steps = saga
                .steps
                .iter()
                .map(|s| format!("{}: {} — {}", s.step, s.outcome.as_str(), s.message))
                .collect();
            transactions.push((
                saga.correlation_id.to_string(),
                SagaReport {
                    saga_id: saga.id.to_string(),
                    status,
                    erp_document_id: saga.ledger.erp_document_id.as_ref().map(|d| d.to_string()),
                    points_accrued: saga.ledger.points_accrued.map(|p| p.get()),
                    eligible_minor: saga.ledger.eligible_minor.map(|a| a.get()),
                    points_reversed: saga.ledger.points_reversed().get(),
                    points_given_back: saga.ledger.recredited().get(),
                    steps,
                },
            ));
        }
        summary.sagas = transactions.len();
        let sagas = by_correlation(transactions);
        let mut quarantine: Vec<QuarantineEntry> = facts
            .quarantine
            .into_iter()
            .map(|q| QuarantineEntry {
                step: q.step,
                reason: q.rejection.reason.as_str().to_owned(),
                message: q.rejection.message,
                findings: q.rejection.findings,
                detail_type: q.rejection.detail_type,
                event_id: q.rejection.event_id,
                correlation_id: q.rejection.correlation_id,
            })
            .collect();
        quarantine.sort_by(|a, b| {
            (&a.step, &a.reason, &a.event_id, &a.message).cmp(&(&b.step, &b.reason, &b.event_id, &b.message))
        });
        for q in &quarantine {
            *summary.quarantined_by_reason.entry(q.reason.clone()).or_default() += 1;
        }
        summary.quarantined = quarantine.len();
        summary.dead_lettered = facts.dead_letters.values().map(Vec::len).sum();
        summary.erp_postings = facts.erp_postings.len();
        Self {
            report_version: REPORT_VERSION,
            input: facts.input,
            summary,
            sagas,
            balances: facts.balances,
            erp_postings: facts.erp_postings,
            quarantine,
            dead_letter_queues: facts.dead_letters,
            metrics: facts.metrics,
            members,
            duplicates: {
                duplicates.sort();
                duplicates.dedup();
                duplicates
            },
            api: facts.api,
        }
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "input      {} events on the bus, {} raw messages, {} unrouted",
            self.input.events, self.input.raw, self.input.unrouted
        );
        if !self.api.is_empty() {
            let _ = writeln!(out, "api        {} redemption API calls", self.api.len());
            for call in &self.api {
                let answer = call.response["code"]
                    .as_str()
                    .or(call.response["hold_id"].as_str())
                    .unwrap_or("");
                let _ = writeln!(
                    out,
                    "           {:<34} {:<14} {} {answer}",
                    call.request,
                    call.idempotency_key.as_deref().unwrap_or("-"),
                    call.status
                );
            }
        }
        let by_status: Vec<String> = s
            .sagas_by_status
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        let _ = writeln!(out, "sagas      {} ({})", s.sagas, by_status.join(", "));
        let _ = writeln!(out, "erp        {} documents posted", s.erp_postings);
        let _ = writeln!(out, "loyalty    {} points accrued", s.points_accrued);
        for (member, points) in &self.balances {
            let _ = writeln!(out, "           {member:<16} {points:>8} points");
        }
        let reasons: Vec<String> = s
            .quarantined_by_reason
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        let _ = writeln!(out, "quarantine {}{}", s.quarantined, paren(&reasons));
        for q in &self.quarantine {
            let what = q
                .event_id
                .as_deref()
                .or(q.detail_type.as_deref())
                .unwrap_or("(unidentified)");
            let _ = writeln!(
                out,
                "           {:<24} {:<16} {}",
                q.reason,
                what,
                first_line(&q.message, 70)
            );
        }
        if !self.members.is_empty() {
            let _ = writeln!(
                out,
                "members    {} (status, tier, consent in retail-sync / loyalty / erp / crm)",
                self.members.len()
            );
            let show = |c: &Option<MemberCopy>| match c {
                None => "-".to_owned(),
                Some(c) => format!(
                    "{} {} {}",
                    c.status,
                    c.tier.as_deref().unwrap_or("-"),
                    if c.marketing_consent {
                        "consent"
                    } else {
                        "no-consent"
                    }
                ),
            };
            for (id, m) in &self.members {
                let _ = writeln!(
                    out,
                    "           {id:<10} {:<26} {:<26} {:<26} {}",
                    show(&m.retail_sync),
                    show(&m.loyalty),
                    show(&m.erp),
                    show(&m.crm)
                );
            }
            for (member, of) in &self.duplicates {
                let _ = writeln!(out, "           {member} suspected duplicate of {of}");
            }
        }
        let _ = writeln!(out, "dlq        {}", s.dead_lettered);
        for (queue, messages) in self.dead_letter_queues.iter().filter(|(_, m)| !m.is_empty()) {
            let _ = writeln!(out, "           {queue}: {} messages", messages.len());
        }
        let failed: Vec<_> = self
            .sagas
            .iter()
            .filter(|(_, s)| s.status != "completed")
            .map(|(c, s)| {
                format!(
                    "           {c:<28} {:<10} {}",
                    s.status,
                    s.steps.last().map_or("", |x| x)
                )
            })
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(out, "not completed:");
            for line in failed {
                let _ = writeln!(out, "{}", first_line(&line, 150));
            }
        }
        out
    }
}

fn paren(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" ({})", items.join(", "))
    }
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga(id: &str) -> SagaReport {
        SagaReport {
            saga_id: id.to_owned(),
            status: "completed".to_owned(),
            erp_document_id: None,
            points_accrued: None,
            eligible_minor: None,
            points_reversed: 0,
            points_given_back: 0,
            steps: Vec::new(),
        }
    }

    /// Two receipts under one correlation id (against the contract) are both reported, under keys that
    /// do not depend on the order the store listed them in.
    #[test]
    fn a_shared_correlation_id_keys_each_transaction_by_its_saga() {
        let listed = |ids: [&str; 3]| {
            by_correlation(
                ids.iter()
                    .map(|id| {
                        let c = if id.ends_with("r-3") { "c-2" } else { "c-1" };
                        (c.to_owned(), saga(id))
                    })
                    .collect(),
            )
            .into_keys()
            .collect::<Vec<_>>()
        };
        let keys = listed(["receipt:s:r-1", "receipt:s:r-2", "receipt:s:r-3"]);
        assert_eq!(keys, ["c-1#receipt:s:r-1", "c-1#receipt:s:r-2", "c-2"]);
        assert_eq!(listed(["receipt:s:r-3", "receipt:s:r-2", "receipt:s:r-1"]), keys);
    }
}
