//! Accrual for an order happens per shipment, never at order time: the shipped units' eligible value
//! (net of their share of the redeemed points) earns. Part of the `accrue-loyalty` step.
//!
//! A shipment that arrives before its order is posted to the ERP waits (retry); one for more units than
//! the order has not shipped yet is refused (`quantity_exceeded`); one for an order that failed or was
//! compensated is refused as `transaction_closed`. A shipment is the fulfilment authority's fact: units
//! that a cancellation had claimed are reinstated (see `ledger`) — charged again in the ERP and their
//! redeemed points taken back — before they earn, whatever order the two arrived in.

use serde::{Deserialize, Serialize};

use retail_sync_contracts::envelope::Detail;
use retail_sync_contracts::events::{LoyaltyAccrued, OrderShipped, ReasonCode, TransactionRef};
use retail_sync_contracts::values::{Amount, ExternalRef, Points};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::{Basis, Reinstatement, ShipmentEntry};
use crate::ports::{AccrualRequest, AdjustmentKind, AdjustmentRequest, ErpReinstateRequest};
use crate::saga::{self, Saga, SagaId, SagaStatus, StepOutcome};
use crate::steps::cancel_order::describe;
use crate::steps::{Cx, Refusal, load_with_basis};

use super::accrue_loyalty::{AccrueLoyalty, STEP};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Accrued {
        loyalty_transaction_id: ExternalRef,
        points: Points,
        /// The platform holds the points pending until then (see `settlement`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_until: Option<jiff::Timestamp>,
    },
    Anonymous,
    Refused {
        message: String,
    },
}

/// The key of a shipment's accrual: per order and shipment.
pub(super) fn key(shipped: &Detail<OrderShipped>) -> IdempotencyKey {
    let transaction = TransactionRef::Order {
        order_id: shipped.data.order_id.clone(),
    };
    IdempotencyKey::for_step(
        SagaId::of(&transaction).as_str(),
        &format!("{STEP}:{}", shipped.data.shipment_id),
    )
}

pub(super) async fn accrue_shipment(
    step: &AccrueLoyalty,
    cx: &mut Cx<'_>,
    shipped: &Detail<OrderShipped>,
) -> Result<(), Error> {
    let transaction = TransactionRef::Order {
        order_id: shipped.data.order_id.clone(),
    };
    let saga_id = SagaId::of(&transaction);
    let shipment_id = shipped.data.shipment_id.clone();
    let (saga, basis) = load_with_basis(cx.sagas(), &saga_id).await?;
    // The order's channel (where the customer bought, not the fulfilment system that ships) sets the
    // return window, which runs from the shipment: the goods the customer has.
    let pending_until = step
        .return_windows
        .pending_until(saga.channel, shipped.metadata.occurred_at);
    // An operator's retry concerns the accrual only (below), never the reinstatement before it.
    let retries = saga.retries.clone();
    // A cancelled order is not closed to shipments: a shipment proves its units left (reinstatement).
    let closed = |s: &Saga| matches!(s.status, SagaStatus::Failed | SagaStatus::Compensated);
    if closed(&saga) {
        // Refused for good only on the saga as stored now.
        let now = cx.still_closed(&saga_id, closed).await?;
        let message = format!(
            "shipment {shipment_id} for an order that is {}",
            now.status.as_str()
        );
        return Err(cx.refuse(&saga_id, ReasonCode::TransactionClosed, message).await);
    }
    if saga.ledger.erp_document_id.is_none() {
        return Err(Error::NotYet {
            what: format!("ERP sales order of {saga_id}"),
        });
    }

    // Reserve the units first (see `ledger`), or find this shipment's reservation from an earlier try.
    let existing = saga
        .ledger
        .shipments
        .iter()
        .find(|s| s.shipment_id == shipment_id)
        .cloned();
    let entry = match existing {
        Some(e) if e.lines == shipped.data.lines => e,
        Some(_) => {
            let message = format!("shipment {shipment_id} was already received with other lines");
            return Err(cx
                .refuse(&saga_id, ReasonCode::IdempotencyKeyReused, message)
                .await);
        }
        None => {
            // Checked and reserved in one versioned write, so a concurrent shipment or cancellation of
            // the same units is counted when the write re-applies.
            cx.reserve(
                saga,
                ReasonCode::QuantityExceeded,
                &format!("shipment {shipment_id}"),
                &Fingerprint::of(&shipped.data),
                |ledger| {
                    if let Some(e) = ledger.shipments.iter().find(|e| e.shipment_id == shipment_id) {
                        return Ok(e.clone());
                    }
                    ledger.reserve_shipment(
                        &basis,
                        &shipment_id,
                        &shipped.data.lines,
                        shipped.metadata.occurred_at,
                    )
                },
            )
            .await?
        }
    };

    // The units must be sold again in the ERP (and their redeemed points taken back) before they earn.
    if let Some(reinstatement) = &entry.reinstatement {
        reinstate(step, cx, &entry, reinstatement, &basis, shipped).await?;
    }
    cx.attempt_in(&retries);

    let run = cx
        .once(Fingerprint::of(&shipped.data), || async {
            let Some(member_id) = &basis.member_id else {
                return Ok(Outcome::Anonymous);
            };
            let request = AccrualRequest {
                member_id: member_id.clone(),
                transaction: transaction.clone(),
                currency: basis.currency,
                eligible_minor: entry.eligible_minor,
                occurred_at: shipped.metadata.occurred_at,
                pending_until,
            };
            Ok(match step.loyalty.accrue(&request, &cx.key).await.refusal()? {
                Ok(a) => Outcome::Accrued {
                    loyalty_transaction_id: a.loyalty_transaction_id,
                    points: a.points,
                    pending_until: pending_until.filter(|_| a.pending),
                },
                Err(message) => Outcome::Refused { message },
            })
        })
        .await?;
    let settled = cx
        .settle(
            &saga_id,
            run,
            |s, accrued| {
                let (points, ltx, outcome, text) = match accrued {
                    Outcome::Accrued {
                        loyalty_transaction_id,
                        points,
                        pending_until,
                    } => {
                        let pending = super::accrue_loyalty::record_pending(
                            &mut s.ledger,
                            loyalty_transaction_id,
                            *points,
                            *pending_until,
                        );
                        (
                            *points,
                            Some(loyalty_transaction_id.clone()),
                            StepOutcome::Done,
                            format!(
                                "shipment {shipment_id}: {points} points ({loyalty_transaction_id}){pending}"
                            ),
                        )
                    }
                    Outcome::Anonymous => (
                        Points::ZERO,
                        None,
                        StepOutcome::Skipped,
                        format!("shipment {shipment_id}: anonymous order"),
                    ),
                    Outcome::Refused { message } => (
                        Points::ZERO,
                        None,
                        StepOutcome::Failed,
                        format!("shipment {shipment_id}: loyalty refused: {message}"),
                    ),
                };
                // A shipment's value counts once towards what the order earned on: an operator's retry
                // after a refusal (which recorded 0 points) adds the points, not the value again.
                let mut counted = false;
                if let Some(e) = s
                    .ledger
                    .shipments
                    .iter_mut()
                    .find(|e| e.shipment_id == shipment_id)
                {
                    counted = e.points.is_some();
                    e.points = Some(points);
                    e.loyalty_transaction_id = ltx;
                }
                let eligible = if counted {
                    Amount::ZERO
                } else {
                    entry.eligible_minor
                };
                s.ledger.add_accrual(points, eligible);
                let mut text = text;
                // Returns decided before this shipment reversed a share of less: brought to the share of
                // everything earned now (applied below, after the accrual).
                if matches!(accrued, Outcome::Accrued { .. })
                    && let Some(c) =
                        s.ledger
                            .decide_correction(&shipment_id, shipped.metadata.occurred_at, &basis)
                {
                    text.push_str(&format!(
                        "; returns decided before it: {} {} earned points to bring the reversed to {} of {}",
                        correction_verb(c.kind),
                        c.points,
                        s.ledger.points_reversed(),
                        s.ledger.points_accrued.unwrap_or(Points::ZERO)
                    ));
                }
                s.settle_order(&basis);
                (outcome, text)
            },
            |accrued, metrics| {
                if let Outcome::Accrued { points, .. } = accrued {
                    metrics.add("points_accrued", points.get().unsigned_abs(), None);
                }
            },
        )
        .await?;
    let accrued = settled.result;

    match &accrued {
        Outcome::Accrued {
            loyalty_transaction_id,
            points,
            ..
        } => {
            if let Some(member_id) = basis.member_id.clone() {
                cx.emit(LoyaltyAccrued {
                    member_id,
                    transaction,
                    shipment_id: Some(shipment_id.clone()),
                    points: *points,
                    eligible_minor: entry.eligible_minor,
                    currency: basis.currency,
                    loyalty_transaction_id: loyalty_transaction_id.clone(),
                });
            }
        }
        Outcome::Anonymous => {}
        Outcome::Refused { message } => cx.exception(ReasonCode::LoyaltyRejected, message.clone()),
    }
    correct(step, cx, settled.saga, &basis, shipped).await
}

fn correction_verb(kind: AdjustmentKind) -> &'static str {
    match kind {
        AdjustmentKind::Restore => "gives back",
        _ => "takes back",
    }
}

/// Applies the correction the accrual decided (see `Ledger::decide_correction`) under its own key, the
/// same request on every delivery (built from the saga's figures and the shipment's business time), and
/// records what the platform applied. What it could not apply (a refusal, or a member who spent the
/// points to take back) stays as it is, announced for a person: the next return's cumulative figure
/// counts from what was applied.
async fn correct(
    step: &AccrueLoyalty,
    cx: &mut Cx<'_>,
    saga: Option<Saga>,
    basis: &Basis,
    shipped: &Detail<OrderShipped>,
) -> Result<(), Error> {
    let transaction = TransactionRef::Order {
        order_id: shipped.data.order_id.clone(),
    };
    let saga_id = SagaId::of(&transaction);
    let shipment_id = &shipped.data.shipment_id;
    let saga = match saga {
        Some(saga) => saga,
        None => saga::load_existing(cx.sagas(), &saga_id).await?,
    };
    let Some(correction) = saga
        .ledger
        .shipments
        .iter()
        .find(|s| &s.shipment_id == shipment_id)
        .and_then(|s| s.correction.clone())
        .filter(|c| c.applied.is_none())
    else {
        return Ok(());
    };
    let Some(member_id) = &basis.member_id else {
        return Ok(());
    };
    let ckey = cx.sub_key("correction");
    let request = AdjustmentRequest {
        member_id: member_id.clone(),
        kind: correction.kind,
        transaction,
        reference: format!("correction:{shipment_id}"),
        points: correction.points,
        occurred_at: correction.occurred_at,
    };
    let what = format!(
        "shipment {shipment_id}: the correction of the points its order's returns reversed ({} {})",
        correction_verb(correction.kind),
        correction.points
    );
    let (applied, id, refused) = match step.loyalty.adjust(&request, &ckey).await.refusal()? {
        Ok(a) => {
            let applied = a.delta.saturating_abs().min(correction.points.get());
            (
                Points::new(applied).unwrap_or(Points::ZERO),
                Some(a.loyalty_transaction_id),
                None,
            )
        }
        Err(message) => (Points::ZERO, None, Some(message)),
    };
    saga::update(cx.sagas(), &saga_id, None, |s| {
        s.ledger.record_correction(shipment_id, applied, id.clone());
    })
    .await?;
    let metric = match correction.kind {
        AdjustmentKind::Restore => "points_restored",
        _ => "points_reversed",
    };
    cx.metrics().add(metric, applied.get().unsigned_abs(), None);
    if let Some(message) = refused {
        cx.exception_as(
            &ckey,
            STEP,
            ReasonCode::LoyaltyRejected,
            format!("{what}: loyalty refused: {message}"),
        );
    } else if applied < correction.points {
        cx.exception_as(
            &ckey,
            STEP,
            ReasonCode::LoyaltyRejected,
            format!("{what}: only {applied} could be taken back from the member"),
        );
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Reinstated {
    Reinstated { erp_document_id: ExternalRef },
    Refused { message: String },
}

/// Charges the reinstated units again in the ERP, decides (with the ERP's document, under the saga's
/// versioned write) the redeemed points their cancellations gave back that are now to be taken back,
/// and takes them back. Every delivery sends the same requests under the same keys (built from what the
/// reservation stored), so each system applies them once. An ERP refusal is a conflict for a person: the
/// reservation is undone, the refusal remembered and the shipment quarantined (`erp_rejected`).
async fn reinstate(
    step: &AccrueLoyalty,
    cx: &mut Cx<'_>,
    entry: &ShipmentEntry,
    reinstatement: &Reinstatement,
    basis: &Basis,
    shipped: &Detail<OrderShipped>,
) -> Result<(), Error> {
    let transaction = TransactionRef::Order {
        order_id: shipped.data.order_id.clone(),
    };
    let saga_id = SagaId::of(&transaction);
    let shipment_id = &entry.shipment_id;
    let rkey = cx.sub_key("reinstate");
    // What was reserved, not what the ledger adds later (the document, the figures): the same on
    // every delivery.
    let run = cx
        .once_as(&rkey, Fingerprint::of(&reinstatement.parts), || async {
            let request = ErpReinstateRequest {
                transaction: transaction.clone(),
                shipment_id: shipment_id.clone(),
                cancellation_ids: reinstatement.cancellation_ids(),
                lines: reinstatement.lines(),
                currency: basis.currency,
                value_minor: reinstatement.net_minor(),
                occurred_at: reinstatement.occurred_at,
            };
            Ok(match step.erp.reinstate(&request, &rkey).await.refusal()? {
                Ok(doc) => Reinstated::Reinstated {
                    erp_document_id: doc.document_id,
                },
                Err(message) => Reinstated::Refused { message },
            })
        })
        .await?;
    let what = format!(
        "shipment {shipment_id} reinstates {} (net {}) cancelled by {}",
        describe(&reinstatement.lines()),
        reinstatement.net_minor(),
        reinstatement
            .cancellation_ids()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The units go back to the cancellations on a refusal, and a redelivery of the shipment finds the
    // refusal (see `reserve`) instead of reserving again.
    let (follow_up, fingerprint) = (format!("shipment {shipment_id}"), Fingerprint::of(&shipped.data));
    let settled = cx
        .settle(
            &saga_id,
            run,
            |s, reinstated| match reinstated {
                Reinstated::Refused { message } => {
                    let message = format!("{what}: the ERP refused: {message}");
                    s.ledger.undo_shipment(shipment_id);
                    s.ledger
                        .remember_refusal(&follow_up, &fingerprint, ReasonCode::ErpRejected, &message);
                    (StepOutcome::Failed, message)
                }
                Reinstated::Reinstated { erp_document_id } => {
                    let taken = s
                        .ledger
                        .decide_reinstatement(shipment_id, erp_document_id, basis)
                        .unwrap_or(Points::ZERO);
                    if s.status == SagaStatus::Cancelled {
                        s.status = SagaStatus::Running;
                    }
                    (
                        StepOutcome::Done,
                        format!("{what}: ERP {erp_document_id}; {taken} redeemed points to take back"),
                    )
                }
            },
            |_, _| {},
        )
        .await?;
    let saga = match (settled.result, settled.saga) {
        (Reinstated::Refused { message }, _) => {
            return Err(Error::rejected(
                ReasonCode::ErpRejected,
                format!("{what}: the ERP refused: {message}"),
            ));
        }
        (Reinstated::Reinstated { .. }, Some(saga)) => saga,
        (Reinstated::Reinstated { .. }, None) => saga::load_existing(cx.sagas(), &saga_id).await?,
    };
    let Some(decided) = saga
        .ledger
        .shipments
        .iter()
        .find(|s| &s.shipment_id == shipment_id)
        .and_then(|s| s.reinstatement.clone())
    else {
        return Ok(());
    };
    let take_back = decided.points_taken_back.unwrap_or(Points::ZERO);
    let (Some(member_id), true) = (&basis.member_id, take_back.get() > 0) else {
        return Ok(());
    };
    let request = AdjustmentRequest {
        member_id: member_id.clone(),
        kind: AdjustmentKind::Reversal,
        transaction,
        reference: format!("reinstatement:{shipment_id}"),
        points: take_back,
        occurred_at: decided.occurred_at,
    };
    let adjustment = step
        .loyalty
        .adjust(&request, &IdempotencyKey::for_step(rkey.as_str(), "take-back"))
        .await?;
    let taken = Points::new(adjustment.delta.saturating_abs().min(take_back.get())).unwrap_or(take_back);
    if decided.points_taken.is_none() {
        // What the platform could not take stays counted as given back: the member still has it.
        saga::update(cx.sagas(), &saga_id, None, |s| {
            s.ledger.record_taken_back(shipment_id, taken);
        })
        .await?;
        cx.metrics()
            .add("points_taken_back", taken.get().unsigned_abs(), None);
    }
    if taken < take_back {
        // The member spent the points meanwhile: the platform took what was available. A person settles
        // the rest with the member.
        cx.exception_as(
            &rkey,
            STEP,
            ReasonCode::LoyaltyRejected,
            format!(
                "{what}: only {taken} of {take_back} redeemed points could be taken back from the member"
            ),
        );
    }
    Ok(())
}
