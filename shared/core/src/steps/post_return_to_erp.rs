//! A return from any channel (bought online, returned in store is normal): correlated to the saga of the
//! original receipt or order, checked against what the customer kept, posted to the ERP as a credit
//! note, announced as `ErpReturnPosted` for the loyalty side.
//!
//! - Before its sale is processed (no saga yet, the sale not yet accrued, the units not yet shipped) a
//!   return waits and is retried; it does not fail.
//! - More units than bought, units returned twice, a wrong SKU or a refund above the units' value:
//!   refused (`over_return`), recorded on the original saga and quarantined with the reason.
//! - A return against a transaction that never reached the ERP: refused (`transaction_closed`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use retail_sync_contracts::envelope::Detail;
use retail_sync_contracts::events::{ErpReturnPosted, ReasonCode, ReturnReceived};
use retail_sync_contracts::values::{Amount, ExternalRef};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::ReturnStatus;
use crate::ports::{Erp, ErpReturnRequest};
use crate::saga::{SagaId, StepOutcome};
use crate::steps::{Base, Cx, Refusal, Workflow, follow_up_allowed, load_with_basis};

pub const STEP: &str = "post-return-to-erp";

pub struct PostReturnToErp {
    pub base: Base,
    pub erp: Arc<dyn Erp>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Posted { document_id: ExternalRef },
    Refused { message: String },
}

impl Workflow for PostReturnToErp {
    const NAME: &'static str = STEP;
    const READS_ITS_SAGA: bool = true;
    type Input = Detail<ReturnReceived>;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(ret: &Detail<ReturnReceived>) -> IdempotencyKey {
        let saga_id = SagaId::of(&ret.data.original);
        IdempotencyKey::for_step(saga_id.as_str(), &format!("{STEP}:{}", ret.data.return_id))
    }

    async fn run(&self, cx: &mut Cx<'_>, ret: &Detail<ReturnReceived>) -> Result<(), Error> {
        let saga_id = SagaId::of(&ret.data.original);
        let return_id = ret.data.return_id.clone();
        let (saga, basis) = load_with_basis(cx.sagas(), &saga_id).await?;
        let refund: i64 = ret.data.lines.iter().map(|l| l.refund_minor.get()).sum();
        let refund = Amount::new(refund)
            .map_err(|e| Error::rejected(ReasonCode::BusinessRuleViolation, e.to_string()))?;

        let entry = match saga.ledger.return_entry(&return_id).cloned() {
            Some(entry) if entry.lines == ret.data.lines => entry,
            Some(_) => {
                let message = format!("return {return_id} was already received with other lines");
                return Err(cx.refuse(&saga_id, ReasonCode::OverReturn, message).await);
            }
            None => {
                follow_up_allowed(cx, &saga, &basis, &format!("return {return_id}")).await?;
                // Checked and reserved in one versioned write: a concurrent return of the same units
                // makes the write re-apply, and the check then counts that return too.
                cx.reserve(
                    saga,
                    ReasonCode::OverReturn,
                    &format!("return {return_id} refused"),
                    &Fingerprint::of(&ret.data),
                    |ledger| {
                        if let Some(existing) = ledger.return_entry(&return_id) {
                            return Ok(existing.clone());
                        }
                        ledger.reserve_return(&basis, &return_id, ret.data.currency, &ret.data.lines, refund)
                    },
                )
                .await
                .inspect_err(|e| {
                    if matches!(e, Error::Rejected { .. }) {
                        cx.metrics().add("returns_refused", 1, None);
                    }
                })?
            }
        };

        let run = cx
            .once(Fingerprint::of(&ret.data), || async {
                let request = ErpReturnRequest {
                    return_id: return_id.clone(),
                    original: ret.data.original.clone(),
                    store_id: ret.data.store_id.clone(),
                    currency: ret.data.currency,
                    lines: ret.data.lines.clone(),
                    refund_minor: entry.refund_minor,
                    occurred_at: ret.metadata.occurred_at,
                };
                Ok(match self.erp.post_return(&request, &cx.key).await.refusal()? {
                    Ok(doc) => Outcome::Posted {
                        document_id: doc.document_id,
                    },
                    Err(message) => Outcome::Refused { message },
                })
            })
            .await?;
        let posted = cx
            .settle(
                &saga_id,
                run,
                |s, posted| {
                    let Some(e) = s.ledger.return_entry_mut(&return_id) else {
                        return (
                            StepOutcome::Failed,
                            format!("return {return_id}: not on the ledger"),
                        );
                    };
                    match posted {
                        Outcome::Posted { document_id } => {
                            e.status = ReturnStatus::Posted;
                            e.erp_document_id = Some(document_id.clone());
                            let text = format!(
                                "return {return_id}: {} units, refund {} (ERP {document_id})",
                                e.lines.iter().map(|l| l.quantity).sum::<u32>(),
                                e.refund_minor
                            );
                            (StepOutcome::Done, text)
                        }
                        Outcome::Refused { message } => {
                            e.status = ReturnStatus::Refused;
                            (
                                StepOutcome::Failed,
                                format!("return {return_id}: ERP refused: {message}"),
                            )
                        }
                    }
                },
                |posted, metrics| match posted {
                    Outcome::Posted { .. } => metrics.add("returns_posted", 1, None),
                    Outcome::Refused { .. } => {
                        metrics.add("failed", 1, Some(("reason", ReasonCode::ErpRejected.as_str())))
                    }
                },
            )
            .await?
            .result;

        match posted {
            Outcome::Posted { document_id } => cx.emit(ErpReturnPosted {
                return_id,
                original: ret.data.original.clone(),
                erp_document_id: document_id,
                currency: ret.data.currency,
                refund_minor: entry.refund_minor,
            }),
            Outcome::Refused { message } => cx.exception(ReasonCode::ErpRejected, message),
        }
        Ok(())
    }
}
