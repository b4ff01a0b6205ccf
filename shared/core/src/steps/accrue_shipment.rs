//! Accrual for an order happens per shipment, never at order time: the shipped units' eligible value
//! (net of their share of the redeemed points) earns. Part of the `accrue-loyalty` step.
//!
//! A shipment that arrives before its order is posted to the ERP waits (retry); one for more units than
//! are open (cancelled or shipped already) is refused; one for an order that failed or was compensated
//! is refused as `transaction_closed`.

use serde::{Deserialize, Serialize};

use retail_sync_contracts::envelope::Detail;
use retail_sync_contracts::events::{LoyaltyAccrued, OrderShipped, ReasonCode, TransactionRef};
use retail_sync_contracts::values::{ExternalRef, Points};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::ShipmentEntry;
use crate::ports::{AccrualRequest, Outgoing};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{Deps, load_with_basis, outgoing, refuse, reserve, run_once};

use super::accrue_loyalty::STEP;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Outcome {
    Accrued {
        loyalty_transaction_id: ExternalRef,
        points: Points,
    },
    Anonymous,
    Refused {
        message: String,
    },
}

pub(super) async fn accrue_shipment(
    d: &Deps,
    shipped: &Detail<OrderShipped>,
) -> Result<Vec<Outgoing>, Error> {
    let transaction = TransactionRef::Order {
        order_id: shipped.data.order_id.clone(),
    };
    let saga_id = SagaId::of(&transaction);
    let shipment_id = shipped.data.shipment_id.clone();
    let key = IdempotencyKey::for_step(saga_id.as_str(), &format!("{STEP}:{shipment_id}"));
    let now = d.clock.now();
    let (saga, basis) = load_with_basis(&*d.sagas, &saga_id).await?;
    if matches!(
        saga.status,
        SagaStatus::Failed | SagaStatus::Compensated | SagaStatus::Cancelled
    ) {
        return Err(refuse(
            &*d.sagas,
            &saga_id,
            STEP,
            ReasonCode::TransactionClosed,
            format!(
                "shipment {shipment_id} for an order that is {}",
                saga.status.as_str()
            ),
            now,
        )
        .await);
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
            return Err(refuse(
                &*d.sagas,
                &saga_id,
                STEP,
                ReasonCode::IdempotencyKeyReused,
                format!("shipment {shipment_id} was already received with other lines"),
                now,
            )
            .await);
        }
        None => {
            // Checked and reserved in one versioned write, so a concurrent shipment or cancellation of
            // the same units is counted when the write re-applies.
            reserve(
                &*d.sagas,
                saga,
                STEP,
                ReasonCode::QuantityExceeded,
                &format!("shipment {shipment_id}"),
                now,
                |ledger| {
                    if let Some(e) = ledger.shipments.iter().find(|e| e.shipment_id == shipment_id) {
                        return Ok(e.clone());
                    }
                    let eligible = basis.shipment(ledger, &shipped.data.lines)?;
                    let entry = ShipmentEntry {
                        shipment_id: shipment_id.clone(),
                        lines: shipped.data.lines.clone(),
                        eligible_minor: eligible,
                        points: None,
                        loyalty_transaction_id: None,
                    };
                    ledger.shipments.push(entry.clone());
                    Ok(entry)
                },
            )
            .await?
        }
    };

    let run = run_once(d, &key, Fingerprint::of(&shipped.data), || async {
        let Some(member_id) = &basis.member_id else {
            return Ok(Outcome::Anonymous);
        };
        let request = AccrualRequest {
            member_id: member_id.clone(),
            transaction: transaction.clone(),
            currency: basis.currency,
            eligible_minor: entry.eligible_minor,
            occurred_at: shipped.metadata.occurred_at,
        };
        match d.loyalty.accrue(&request, &key).await {
            Ok(a) => Ok(Outcome::Accrued {
                loyalty_transaction_id: a.loyalty_transaction_id,
                points: a.points,
            }),
            Err(Error::Rejected { message, .. }) => Ok(Outcome::Refused { message }),
            Err(e) => Err(e),
        }
    })
    .await?;

    if let Some(completion) = run.completion() {
        saga::update(&*d.sagas, &saga_id, Some(completion), |s| {
            let (points, ltx, message) = match run.result() {
                Outcome::Accrued {
                    loyalty_transaction_id,
                    points,
                } => (
                    *points,
                    Some(loyalty_transaction_id.clone()),
                    format!("shipment {shipment_id}: {points} points ({loyalty_transaction_id})"),
                ),
                Outcome::Anonymous => (
                    Points::ZERO,
                    None,
                    format!("shipment {shipment_id}: anonymous order"),
                ),
                Outcome::Refused { message } => (
                    Points::ZERO,
                    None,
                    format!("shipment {shipment_id}: loyalty refused: {message}"),
                ),
            };
            if let Some(e) = s
                .ledger
                .shipments
                .iter_mut()
                .find(|e| e.shipment_id == shipment_id)
            {
                e.points = Some(points);
                e.loyalty_transaction_id = ltx;
            }
            s.ledger.add_accrual(points, entry.eligible_minor);
            let outcome = match run.result() {
                Outcome::Refused { .. } => StepOutcome::Failed,
                Outcome::Anonymous => StepOutcome::Skipped,
                Outcome::Accrued { .. } => StepOutcome::Done,
            };
            s.record(STEP, outcome, message, now);
            if s.status == SagaStatus::Running && s.ledger.order_settled(&basis) {
                s.status = SagaStatus::Completed;
            }
        })
        .await?;
        if let Outcome::Accrued { points, .. } = run.result() {
            d.metrics.add("points_accrued", points.get().unsigned_abs(), None);
        }
    }

    Ok(match run.result() {
        Outcome::Accrued {
            loyalty_transaction_id,
            points,
        } => vec![outgoing(
            key.as_str(),
            &shipped.metadata,
            now,
            LoyaltyAccrued {
                member_id: basis.member_id.clone().expect("accrued for a member"),
                transaction,
                shipment_id: Some(shipment_id),
                points: *points,
                eligible_minor: entry.eligible_minor,
                currency: basis.currency,
                loyalty_transaction_id: loyalty_transaction_id.clone(),
            },
        )],
        Outcome::Anonymous => Vec::new(),
        Outcome::Refused { message } => vec![super::workflow_exception(
            key.as_str(),
            STEP,
            ReasonCode::LoyaltyRejected,
            message.clone(),
            &shipped.metadata,
            "OrderShipped",
            now,
        )],
    })
}
