//! A return from any channel (bought online, returned in store is normal): correlated to the saga of the
//! original receipt or order, checked against what the customer kept, posted to the ERP as a credit
//! note, announced as `ErpReturnPosted` for the loyalty side.
//!
//! - Before its sale is processed (no saga yet, the sale not yet accrued, the units not yet shipped) a
//!   return waits and is retried; it does not fail.
//! - More units than bought, units returned twice, a wrong SKU or a refund above the units' value:
//!   refused (`over_return`), recorded on the original saga and quarantined with the reason.
//! - A return against a transaction that never reached the ERP: refused (`transaction_closed`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{ErpReturnPosted, ReasonCode};
use retail_sync_contracts::values::{Amount, ExternalRef};
use retail_sync_contracts::{Event, EventType};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::{ReturnEntry, ReturnStatus};
use crate::ports::{ErpReturnRequest, Outgoing};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{
    Deps, Message, Step, load_with_basis, outgoing, parse_internal, refuse, reserve, run_once, unexpected,
    workflow_exception,
};

pub const STEP: &str = "post-return-to-erp";

pub struct PostReturnToErp(pub Deps);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Posted { document_id: ExternalRef },
    Refused { message: String },
}

#[async_trait]
impl Step for PostReturnToErp {
    fn name(&self) -> &'static str {
        STEP
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let d = &self.0;
        let (_, event) = parse_internal(&message.body)?;
        let Event::ReturnReceived(ret) = &event else {
            return Err(unexpected(STEP, &event));
        };
        let saga_id = SagaId::of(&ret.data.original);
        let return_id = ret.data.return_id.clone();
        let key = IdempotencyKey::for_step(saga_id.as_str(), &format!("{STEP}:{return_id}"));
        let now = d.clock.now();
        let (saga, basis) = load_with_basis(&*d.sagas, &saga_id).await?;
        let refund: i64 = ret.data.lines.iter().map(|l| l.refund_minor.get()).sum();
        let refund = Amount::new(refund)
            .map_err(|e| Error::rejected(ReasonCode::BusinessRuleViolation, e.to_string()))?;

        let entry = match saga.ledger.return_entry(&return_id).cloned() {
            Some(entry) if entry.lines == ret.data.lines => entry,
            Some(_) => {
                return Err(refuse(
                    &*d.sagas,
                    &saga_id,
                    STEP,
                    ReasonCode::OverReturn,
                    format!("return {return_id} was already received with other lines"),
                    now,
                )
                .await);
            }
            None => {
                // A cancelled order is not closed: a shipment may still reinstate its units (see
                // `ledger`), and a return of units not shipped waits for it.
                let closed = saga.status == SagaStatus::Compensated
                    || (saga.status == SagaStatus::Failed && saga.ledger.erp_document_id.is_none());
                if closed {
                    return Err(refuse(
                        &*d.sagas,
                        &saga_id,
                        STEP,
                        ReasonCode::TransactionClosed,
                        format!(
                            "return {return_id}: the original is {} and was never booked",
                            saga.status.as_str()
                        ),
                        now,
                    )
                    .await);
                }
                // A POS sale is processed once its accrual is decided; an order once it is in the ERP
                // (its shipments are checked line by line below).
                let processed = if basis.is_order {
                    saga.ledger.erp_document_id.is_some()
                } else {
                    saga.status != SagaStatus::Running
                };
                if !processed {
                    return Err(Error::NotYet {
                        what: format!("{saga_id} before return {return_id}"),
                    });
                }
                // Checked and reserved in one versioned write: a concurrent return of the same units
                // makes the write re-apply, and the check then counts that return too.
                reserve(
                    &*d.sagas,
                    saga,
                    STEP,
                    ReasonCode::OverReturn,
                    &format!("return {return_id} refused"),
                    &Fingerprint::of(&ret.data),
                    now,
                    |ledger| {
                        if let Some(existing) = ledger.return_entry(&return_id) {
                            return Ok(existing.clone());
                        }
                        let (net, eligible) = basis.check_return(ledger, &ret.data.lines)?;
                        let entry = ReturnEntry {
                            return_id: return_id.clone(),
                            lines: ret.data.lines.clone(),
                            net_minor: net,
                            eligible_minor: eligible,
                            refund_minor: refund,
                            status: ReturnStatus::Reserved,
                            erp_document_id: None,
                            points_reversed: None,
                            points_recredited: None,
                            loyalty_transaction_id: None,
                        };
                        ledger.returns.push(entry.clone());
                        Ok(entry)
                    },
                )
                .await
                .inspect_err(|e| {
                    if matches!(e, Error::Rejected { .. }) {
                        d.metrics.add("returns_refused", 1, None);
                    }
                })?
            }
        };

        let run = run_once(d, &key, Fingerprint::of(&ret.data), || async {
            let request = ErpReturnRequest {
                return_id: return_id.clone(),
                original: ret.data.original.clone(),
                store_id: ret.data.store_id.clone(),
                currency: ret.data.currency,
                lines: ret.data.lines.clone(),
                refund_minor: entry.refund_minor,
                occurred_at: ret.metadata.occurred_at,
            };
            match d.erp.post_return(&request, &key).await {
                Ok(doc) => Ok(Outcome::Posted {
                    document_id: doc.document_id,
                }),
                Err(Error::Rejected { message, .. }) => Ok(Outcome::Refused { message }),
                Err(e) => Err(e),
            }
        })
        .await?;

        if let Some(completion) = run.completion() {
            saga::update(&*d.sagas, &saga_id, Some(completion), |s| {
                let Some(e) = s.ledger.return_entry_mut(&return_id) else {
                    return;
                };
                match run.result() {
                    Outcome::Posted { document_id } => {
                        e.status = ReturnStatus::Posted;
                        e.erp_document_id = Some(document_id.clone());
                        let text = format!(
                            "return {return_id}: {} units, refund {} (ERP {document_id})",
                            e.lines.iter().map(|l| l.quantity).sum::<u32>(),
                            e.refund_minor
                        );
                        s.record(STEP, StepOutcome::Done, text, now);
                    }
                    Outcome::Refused { message } => {
                        e.status = ReturnStatus::Refused;
                        s.record(
                            STEP,
                            StepOutcome::Failed,
                            format!("return {return_id}: ERP refused: {message}"),
                            now,
                        );
                    }
                }
            })
            .await?;
            match run.result() {
                Outcome::Posted { .. } => d.metrics.add("returns_posted", 1, None),
                Outcome::Refused { .. } => {
                    d.metrics
                        .add("failed", 1, Some(("reason", ReasonCode::ErpRejected.as_str())))
                }
            }
        }

        Ok(vec![match run.result() {
            Outcome::Posted { document_id } => outgoing(
                key.as_str(),
                &ret.metadata,
                now,
                ErpReturnPosted {
                    return_id,
                    original: ret.data.original.clone(),
                    erp_document_id: document_id.clone(),
                    currency: ret.data.currency,
                    refund_minor: entry.refund_minor,
                },
            ),
            Outcome::Refused { message } => workflow_exception(
                key.as_str(),
                STEP,
                ReasonCode::ErpRejected,
                message.clone(),
                &ret.metadata,
                EventType::ReturnReceived.name(),
                now,
            ),
        }])
    }
}
