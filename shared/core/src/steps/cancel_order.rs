//! Cancels (lines of) an order before they ship: cancels them in the ERP and gives back the share of the
//! redeemed points their net value carries (cumulatively, so cancellations and returns that add up to
//! the whole order give back exactly the points redeemed). Cancelled units never ship, hence never earn.
//!
//! A cancellation that arrives before the order is posted waits. It cancels the requested units that are
//! still open: units that shipped (whatever arrived first, see `ledger`) or were cancelled already are
//! not cancelled again, and a cancellation with nothing left to cancel is recorded as skipped. Only a
//! line the order does not have, or more units than it ordered, is refused (`quantity_exceeded`). One
//! for an order that failed or was compensated has nothing left to undo and is recorded as skipped.
//!
//! A cancellation is identified by its `cancellation_id`, or without one by its content and business
//! time ([`cancellation_id`]), never by its event id: a channel that re-sends it under a new event id
//! cancels once.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use retail_sync_contracts::envelope::Detail;
use retail_sync_contracts::events::{OrderCancellationApplied, OrderCancelled, ReasonCode, TransactionRef};
use retail_sync_contracts::values::{CancellationId, ExternalRef, Points};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::CancellationEntry;
use crate::ports::{AdjustmentKind, AdjustmentRequest, Erp, ErpCancelRequest, Loyalty};
use crate::saga::{self, Saga, SagaId, SagaStatus, StepOutcome};
use crate::steps::{Base, Cx, Refusal, Workflow, load_with_basis};

pub const STEP: &str = "cancel-order";

pub struct CancelOrder {
    pub base: Base,
    pub erp: Arc<dyn Erp>,
    pub loyalty: Arc<dyn Loyalty>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Cancelled {
        erp_document_id: ExternalRef,
    },
    /// The ERP refused: the units are open again and nothing was given back.
    Refused {
        message: String,
    },
    /// Every requested unit had shipped or was cancelled already: nothing was sent to the ERP.
    NothingOpen,
}

/// The cancellation's identity: its `cancellation_id`, or for a channel that sends none, `cx-` and a
/// digest of what it cancels (its lines, or the whole order) and its business time (`occurred_at`). A
/// re-sent cancellation keeps both, whatever its event id; two cancellations of the same units at the
/// same instant are one.
pub fn cancellation_id(cancel: &Detail<OrderCancelled>) -> CancellationId {
    if let Some(id) = &cancel.data.cancellation_id {
        return id.clone();
    }
    let mut hasher = Sha256::new();
    match &cancel.data.lines {
        Some(lines) => {
            // The same units however the channel lists them: per line, in line order.
            let mut units: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
            for l in lines {
                *units.entry(l.line_no).or_default() += u64::from(l.quantity);
            }
            for (line_no, quantity) in units {
                hasher.update(format!("{line_no}x{quantity};"));
            }
        }
        None => hasher.update(b"whole;"),
    }
    hasher.update(cancel.metadata.occurred_at.to_string());
    let digest = hasher.finalize();
    CancellationId::parse(format!("cx-{}", crate::idempotency::hex(&digest[..16])))
        .expect("cx- and hex digits are a valid id")
}

fn saga_id(cancel: &Detail<OrderCancelled>) -> SagaId {
    SagaId::of(&TransactionRef::Order {
        order_id: cancel.data.order_id.clone(),
    })
}

impl Workflow for CancelOrder {
    const NAME: &'static str = STEP;
    const READS_ITS_SAGA: bool = true;
    type Input = Detail<OrderCancelled>;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(cancel: &Detail<OrderCancelled>) -> IdempotencyKey {
        IdempotencyKey::for_step(
            saga_id(cancel).as_str(),
            &format!("{STEP}:{}", cancellation_id(cancel)),
        )
    }

    async fn run(&self, cx: &mut Cx<'_>, cancel: &Detail<OrderCancelled>) -> Result<(), Error> {
        let transaction = TransactionRef::Order {
            order_id: cancel.data.order_id.clone(),
        };
        let saga_id = saga_id(cancel);
        let cancellation_id = cancellation_id(cancel);
        let (saga, basis) = load_with_basis(cx.sagas(), &saga_id).await?;

        let existing = saga.ledger.cancellation_entry(&cancellation_id).cloned();
        let entry = match existing {
            Some(entry) => entry,
            None => {
                let closed = |s: &Saga| matches!(s.status, SagaStatus::Failed | SagaStatus::Compensated);
                if closed(&saga) {
                    // Dropping the cancellation is decided on the saga as stored now.
                    let saga = cx.still_closed(&saga_id, closed).await?;
                    let text = format!(
                        "cancellation {cancellation_id}: the order is {}, nothing to cancel",
                        saga.status.as_str()
                    );
                    cx.note(saga, StepOutcome::Skipped, text, |_| {}).await?;
                    return Ok(());
                }
                if saga.ledger.erp_document_id.is_none() {
                    return Err(Error::NotYet {
                        what: format!("ERP sales order of {saga_id}"),
                    });
                }
                // Checked and reserved in one versioned write (see `ledger`).
                cx.reserve(
                    saga,
                    ReasonCode::QuantityExceeded,
                    &format!("cancellation {cancellation_id}"),
                    &Fingerprint::of(&cancel.data),
                    |ledger| {
                        if let Some(c) = ledger.cancellation_entry(&cancellation_id) {
                            return Ok(c.clone());
                        }
                        let (lines, net) = basis.cancellation(ledger, cancel.data.lines.as_deref())?;
                        let entry = CancellationEntry {
                            cancellation_id: cancellation_id.clone(),
                            lines,
                            net_minor: net,
                            occurred_at: Some(cancel.metadata.occurred_at),
                            erp_document_id: None,
                            points_recredited: None,
                            refused: false,
                        };
                        ledger.cancellations.push(entry.clone());
                        Ok(entry)
                    },
                )
                .await?
            }
        };
        // As stored with the cancellation: a re-sent one sends the same requests.
        let occurred_at = entry.occurred_at.unwrap_or(cancel.metadata.occurred_at);

        let run = cx
            .once(Fingerprint::of(&cancel.data), || async {
                if entry.lines.is_empty() {
                    return Ok(Outcome::NothingOpen);
                }
                let request = ErpCancelRequest {
                    transaction: transaction.clone(),
                    cancellation_id: cancellation_id.clone(),
                    lines: Some(entry.lines.clone()),
                    currency: basis.currency,
                    value_minor: entry.net_minor,
                    reason: cancel.data.reason.clone(),
                    occurred_at,
                };
                Ok(match self.erp.cancel_order(&request, &cx.key).await.refusal()? {
                    Ok(doc) => Outcome::Cancelled {
                        erp_document_id: doc.document_id,
                    },
                    Err(message) => Outcome::Refused { message },
                })
            })
            .await?;
        // The points given back are decided with the ERP's answer, under the saga's versioned write, so a
        // return or another cancellation decided at the same time is counted once; a redelivery finds
        // the figure on the entry.
        let settled = cx
            .settle(
                &saga_id,
                run,
                |s, outcome| match outcome {
                    Outcome::Cancelled { erp_document_id } => {
                        let recredit = s
                            .ledger
                            .decide_cancellation(&cancellation_id, erp_document_id, &basis)
                            .unwrap_or(Points::ZERO);
                        s.settle_order(&basis);
                        let (lines, net) = (describe(&entry.lines), entry.net_minor);
                        let text = format!("cancelled {lines} (net {net}) in ERP {erp_document_id}; ");
                        (
                            StepOutcome::Done,
                            text + &format!("{recredit} redeemed points to give back"),
                        )
                    }
                    Outcome::NothingOpen => (
                        StepOutcome::Skipped,
                        format!("cancellation {cancellation_id}: nothing open to cancel")
                            + " (shipped or cancelled already)",
                    ),
                    Outcome::Refused { message } => {
                        if let Some(c) = s.ledger.cancellation_entry_mut(&cancellation_id) {
                            c.refused = true;
                        }
                        (
                            StepOutcome::Failed,
                            format!("ERP refused the cancellation: {message}"),
                        )
                    }
                },
                |outcome, metrics| {
                    if let Outcome::Cancelled { .. } = outcome {
                        metrics.add("orders_cancelled", 1, None);
                    }
                },
            )
            .await?;
        let fresh = settled.saga.is_some();

        match settled.result {
            Outcome::Cancelled { erp_document_id } => {
                let saga = match settled.saga {
                    Some(saga) => saga,
                    None => saga::load_existing(cx.sagas(), &saga_id).await?,
                };
                let recredit = saga
                    .ledger
                    .cancellation_entry(&cancellation_id)
                    .and_then(|c| c.points_recredited)
                    .unwrap_or(Points::ZERO);
                if let (Some(member_id), true) = (&basis.member_id, recredit.get() > 0) {
                    let request = AdjustmentRequest {
                        member_id: member_id.clone(),
                        kind: AdjustmentKind::Recredit,
                        transaction: transaction.clone(),
                        reference: format!("cancellation:{cancellation_id}"),
                        points: recredit,
                        occurred_at,
                    };
                    // The figure is stored, so every delivery sends the same request under this key and
                    // the platform applies it once.
                    self.loyalty.adjust(&request, &cx.sub_key("recredit")).await?;
                    if fresh {
                        cx.metrics()
                            .add("points_recredited", recredit.get().unsigned_abs(), None);
                    }
                }
                // What took effect, for whoever tells it on (the ecommerce platform the order came from).
                cx.emit(OrderCancellationApplied {
                    order_id: cancel.data.order_id.clone(),
                    cancellation_id: cancellation_id.clone(),
                    lines: entry.lines.clone(),
                    net_minor: entry.net_minor,
                    erp_document_id,
                    points_recredited: recredit,
                });
            }
            Outcome::NothingOpen => {}
            Outcome::Refused { message } => cx.exception(ReasonCode::ErpRejected, message),
        }
        Ok(())
    }
}

/// `line 1 × 2, line 3 × 1`, for the timeline.
pub(crate) fn describe(lines: &[retail_sync_contracts::events::LineQuantity]) -> String {
    lines
        .iter()
        .map(|l| format!("line {} × {}", l.line_no, l.quantity))
        .collect::<Vec<_>>()
        .join(", ")
}
