//! Ingest: the front door. Validates every inbound event against its contract, starts the saga of a
//! business transaction, and re-emits the accepted event (source `retail-sync.ingest`) for the workflow
//! steps. Bad input becomes `Error::BadInput`, which the runner quarantines.

use std::sync::Arc;

use async_trait::async_trait;

use retail_sync_contracts::envelope::SOURCE_INGEST;
use retail_sync_contracts::events::{ReasonCode, TransactionRef};
use retail_sync_contracts::{Event, IngestLimits, Rejection, check_source, parse_inbound};

use crate::domain;
use crate::error::Error;
use crate::ports::{Clock, Metrics, Outgoing, SagaStore};
use crate::saga::{Saga, SagaId, StepOutcome};
use crate::steps::{Message, Step};

pub struct Ingest {
    pub sagas: Arc<dyn SagaStore>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
    pub limits: IngestLimits,
}

pub const STEP: &str = "ingest";

/// The transaction an inbound event starts, for the types that start one.
fn starts_transaction(event: &Event) -> Option<TransactionRef> {
    match event {
        Event::SaleCompleted(d) => Some(TransactionRef::Receipt {
            store_id: d.data.store_id.clone(),
            receipt_id: d.data.receipt_id.clone(),
        }),
        Event::OrderPlaced(d) => Some(TransactionRef::Order {
            order_id: d.data.order_id.clone(),
        }),
        _ => None,
    }
}

fn business_rules(event: &Event) -> Result<(), Vec<String>> {
    match event {
        Event::SaleCompleted(d) => domain::check_sale(&d.data),
        Event::OrderPlaced(d) => {
            let mut findings = domain::check_lines(&d.data.lines, &d.data.totals);
            if let Some(r) = &d.data.redemption {
                if d.data.member_id.is_none() {
                    findings.push("a redemption needs a member_id".into());
                }
                // Applied before tax: it can take at most the net of the basket.
                if r.value_minor.get() > d.data.totals.net_minor.get() {
                    findings.push(format!(
                        "redemption value {} exceeds the order's net {} (it is applied before tax)",
                        r.value_minor, d.data.totals.net_minor
                    ));
                }
            }
            no_findings(findings)
        }
        Event::RefundSettled(d) => domain::check_refund(&d.data),
        Event::CustomerUpdated(d) => no_findings(crate::members::check_contact(
            d.data.name.as_deref(),
            d.data.email.as_deref(),
            d.data.phone.as_deref(),
        )),
        Event::MemberEnrolled(d) => no_findings(crate::members::check_contact(
            d.data.name.as_deref(),
            d.data.email.as_deref(),
            d.data.phone.as_deref(),
        )),
        _ => Ok(()),
    }
}

fn no_findings(findings: Vec<String>) -> Result<(), Vec<String>> {
    if findings.is_empty() {
        Ok(())
    } else {
        Err(findings)
    }
}

fn refuse(event: &Event, reason: ReasonCode, message: String, findings: Vec<String>) -> Error {
    let meta = event.metadata();
    Error::BadInput(Box::new(Rejection {
        reason,
        message,
        findings,
        detail_type: Some(event.event_type().name().to_owned()),
        event_id: Some(meta.event_id.to_string()),
        correlation_id: Some(meta.correlation_id.to_string()),
    }))
}

#[async_trait]
impl Step for Ingest {
    fn name(&self) -> &'static str {
        STEP
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let envelope = parse_inbound(message.body.as_bytes(), &self.limits).map_err(Error::BadInput)?;
        let event = envelope.detail;
        super::note_correlation(event.metadata());
        let type_name = event.event_type().name();
        // Who may send what (`SOURCE_POLICY`): a POS does not place web orders, a CRM does not cancel them.
        let claimed = event.metadata().channel;
        match check_source(&envelope.source, event.event_type()) {
            Err(message) => return Err(refuse(&event, ReasonCode::SourceNotAllowed, message, Vec::new())),
            // The channel the event says it comes from is the one its source is: the saga, the reports
            // and the ERP documents are filed under it.
            Ok(channel) if channel != claimed => {
                let message = format!(
                    "metadata.channel {:?} is not the channel of source {:?}",
                    claimed.as_str(),
                    envelope.source
                );
                return Err(refuse(&event, ReasonCode::SourceNotAllowed, message, Vec::new()));
            }
            Ok(_) => {}
        }
        if let Err(findings) = business_rules(&event) {
            return Err(refuse(
                &event,
                ReasonCode::BusinessRuleViolation,
                format!(
                    "{type_name} breaks the business rules ({} findings)",
                    findings.len()
                ),
                findings,
            ));
        }

        if let Some(transaction) = starts_transaction(&event) {
            let now = self.clock.now();
            let saga = Saga::start(SagaId::of(&transaction), &event, now);
            match self.sagas.create(&saga).await? {
                None => self.metrics.add("accepted", 1, Some(("event_type", type_name))),
                // A redelivery, or the channel sent the same transaction again: accept again (the steps
                // are idempotent), so a publish that failed last time happens now.
                Some(existing) if existing.fingerprint == saga.fingerprint => {
                    self.metrics.add("duplicates", 1, Some(("event_type", type_name)));
                }
                Some(existing) => {
                    let id = existing.id.clone();
                    let event_id = event.metadata().event_id.clone();
                    let text = format!("event {event_id} reuses this transaction with a different payload");
                    // Once per event on the timeline, however often it is delivered (as in the quarantine).
                    if !existing.has_entry(STEP, &text) {
                        crate::saga::update(&*self.sagas, &id, None, |s| {
                            if !s.has_entry(STEP, &text) {
                                s.record(STEP, StepOutcome::Refused, text.clone(), now);
                            }
                        })
                        .await?;
                    }
                    return Err(refuse(
                        &event,
                        ReasonCode::IdempotencyKeyReused,
                        format!("transaction {id} was already accepted with a different payload"),
                        Vec::new(),
                    ));
                }
            }
        } else {
            self.metrics.add("accepted", 1, Some(("event_type", type_name)));
        }
        Ok(vec![Outgoing {
            source: SOURCE_INGEST,
            event,
        }])
    }
}
