//! Compensation: a step failed for good after earlier steps took effect. Undoes those effects in reverse
//! order of how they happened, each under its own idempotency key, then closes the saga as
//! `compensated` and announces a `WorkflowException` carrying the failure's reason and the correlation
//! id.
//!
//! The effects an order can have before its ERP sales order exists, newest first: accrued shipments
//! (reversed) and the redemption (the spent points re-credited).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use retail_sync_contracts::envelope::Detail;
use retail_sync_contracts::events::CompensationRequested;
use retail_sync_contracts::values::{HoldId, Points, ShipmentId};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::Ledger;
use crate::ports::{AdjustmentKind, AdjustmentRequest, Loyalty};
use crate::saga::{Saga, SagaId, SagaStatus, StepOutcome};
use crate::steps::{Base, Cx, Workflow, load_with_basis};

pub const STEP: &str = "compensate";

pub struct Compensate {
    pub base: Base,
    pub loyalty: Arc<dyn Loyalty>,
}

/// One effect to undo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub enum Undo {
    /// Earned points of a shipment taken back.
    ReverseAccrual { shipment_id: ShipmentId, points: Points },
    /// Redeemed points given back (less what cancellations or returns gave back already).
    RecreditRedemption { hold_id: HoldId, points: Points },
}

/// Whether `saga` records a failure of `failed_step` that leaves effects to undo: the ERP refused the
/// sales order (no document) of an order whose redemption was committed. Still true once compensated, so
/// a redelivery finds its stored result.
fn needs_compensation(saga: &Saga, failed_step: &str) -> bool {
    failed_step == super::post_sale_to_erp::STEP
        && saga.ledger.erp_document_id.is_none()
        && saga.ledger.redemption.is_some()
        && saga
            .steps
            .iter()
            .any(|e| e.step == failed_step && e.outcome == StepOutcome::Failed)
}

/// The effects recorded on `ledger`, newest first.
pub fn undo_plan(ledger: &Ledger) -> Vec<Undo> {
    let mut plan: Vec<Undo> = ledger
        .shipments
        .iter()
        .rev()
        .filter_map(|s| {
            s.points
                .filter(|p| p.get() > 0)
                .map(|points| Undo::ReverseAccrual {
                    shipment_id: s.shipment_id.clone(),
                    points,
                })
        })
        .collect();
    if let Some(r) = &ledger.redemption {
        let left = r.points.saturating_sub(r.points_recredited);
        if left > Points::ZERO {
            plan.push(Undo::RecreditRedemption {
                hold_id: r.hold_id.clone(),
                points: left,
            });
        }
    }
    plan
}

impl Workflow for Compensate {
    const NAME: &'static str = STEP;
    const READS_ITS_SAGA: bool = true;
    type Input = Detail<CompensationRequested>;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(request: &Detail<CompensationRequested>) -> IdempotencyKey {
        IdempotencyKey::for_step(SagaId::of(&request.data.transaction).as_str(), STEP)
    }

    async fn run(&self, cx: &mut Cx<'_>, request: &Detail<CompensationRequested>) -> Result<(), Error> {
        let saga_id = SagaId::of(&request.data.transaction);
        let (saga, basis) = load_with_basis(cx.sagas(), &saga_id).await?;
        // Compensation undoes what a saga did before a step failed for good, so it runs only where the
        // saga records such a failure: today the ERP refusing an order whose points were spent.
        if !needs_compensation(&saga, &request.data.failed_step) {
            let what = format!(
                "CompensationRequested for {saga_id}, whose saga records no failure of {} to compensate",
                request.data.failed_step
            );
            return Err(cx.inconsistent(&saga_id, what).await);
        }
        let plan = undo_plan(&saga.ledger);

        let run = cx
            .once(Fingerprint::of(&request.data), || async {
                if let Some(member_id) = &basis.member_id {
                    for (i, undo) in plan.iter().enumerate() {
                        let (kind, points, reference) = match undo {
                            Undo::ReverseAccrual { shipment_id, points } => (
                                AdjustmentKind::Reversal,
                                *points,
                                format!("compensation:shipment:{shipment_id}"),
                            ),
                            Undo::RecreditRedemption { hold_id, points } => (
                                AdjustmentKind::Recredit,
                                *points,
                                format!("compensation:hold:{hold_id}"),
                            ),
                        };
                        let adjustment = AdjustmentRequest {
                            member_id: member_id.clone(),
                            kind,
                            transaction: request.data.transaction.clone(),
                            reference,
                            points,
                            occurred_at: request.metadata.occurred_at,
                        };
                        // Rejections propagate as permanent errors: an effect we cannot undo needs a
                        // person.
                        self.loyalty
                            .adjust(&adjustment, &cx.sub_key(&i.to_string()))
                            .await?;
                    }
                }
                Ok(plan.clone())
            })
            .await;
        let run = match run {
            Ok(run) => run,
            // An effect that cannot be undone needs a person: the saga must not stay `running` (its
            // follow-ups would wait for an ERP document that never comes), so it ends `failed`, and the
            // quarantined message and its WorkflowException say why.
            Err(e) if !e.is_retryable() => {
                cx.note(
                    &saga_id,
                    StepOutcome::Failed,
                    format!("compensation failed: {e}"),
                    |s| s.status = SagaStatus::Failed,
                )
                .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let reason = request.data.reason;
        let undone = cx
            .settle(
                saga,
                run,
                |s, undone| {
                    for undo in undone {
                        match undo {
                            Undo::ReverseAccrual { .. } => {}
                            Undo::RecreditRedemption { points, .. } => s.ledger.count_recredited(*points),
                        }
                    }
                    s.status = SagaStatus::Compensated;
                    (StepOutcome::Done, describe(undone))
                },
                |_, metrics| metrics.add("compensated", 1, Some(("reason", reason.as_str()))),
            )
            .await?
            .result;

        let key = cx.key.clone();
        cx.exception_as(
            &key,
            &request.data.failed_step,
            reason,
            format!("{} — compensated: {}", request.data.message, describe(&undone)),
        );
        Ok(())
    }
}

fn describe(undone: &[Undo]) -> String {
    if undone.is_empty() {
        return "nothing to undo".into();
    }
    undone
        .iter()
        .map(|u| match u {
            Undo::ReverseAccrual { shipment_id, points } => {
                format!("{points} points of shipment {shipment_id} reversed")
            }
            Undo::RecreditRedemption { hold_id, points } => {
                format!("{points} redeemed points (hold {hold_id}) re-credited")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
