//! Compensation: a step failed for good after earlier steps took effect. Undoes those effects in reverse
//! order of how they happened, each under its own idempotency key, then closes the saga as
//! `compensated` and announces a `WorkflowException` carrying the failure's reason and the correlation
//! id.
//!
//! The effects an order can have before its ERP sales order exists, newest first: accrued shipments
//! (reversed) and the redemption (the spent points re-credited).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::Event;
use retail_sync_contracts::values::Points;

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::Ledger;
use crate::ports::{AdjustmentKind, AdjustmentRequest, Outgoing};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{
    Deps, Message, Step, load_with_basis, parse_internal, run_once, unexpected, workflow_exception,
};

pub const STEP: &str = "compensate";

pub struct Compensate(pub Deps);

/// One effect to undo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub enum Undo {
    /// Earned points of a shipment taken back.
    ReverseAccrual { shipment_id: String, points: Points },
    /// Redeemed points given back (less what cancellations or returns gave back already).
    RecreditRedemption { hold_id: String, points: Points },
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
                    shipment_id: s.shipment_id.to_string(),
                    points,
                })
        })
        .collect();
    if let Some(r) = &ledger.redemption {
        let left = r.points.get() - r.points_recredited.get();
        if left > 0 {
            plan.push(Undo::RecreditRedemption {
                hold_id: r.hold_id.to_string(),
                points: Points::new(left).expect("less than the redeemed points"),
            });
        }
    }
    plan
}

#[async_trait]
impl Step for Compensate {
    fn name(&self) -> &'static str {
        STEP
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let d = &self.0;
        let (_, event) = parse_internal(&message.body)?;
        let Event::CompensationRequested(request) = &event else {
            return Err(unexpected(STEP, &event));
        };
        let saga_id = SagaId::of(&request.data.transaction);
        let key = IdempotencyKey::for_step(saga_id.as_str(), STEP);
        let now = d.clock.now();
        let (saga, basis) = load_with_basis(&*d.sagas, &saga_id).await?;
        let plan = undo_plan(&saga.ledger);

        let run = run_once(d, &key, Fingerprint::of(&request.data), || async {
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
                    // Rejections propagate as permanent errors: an effect we cannot undo needs a person.
                    d.loyalty
                        .adjust(
                            &adjustment,
                            &IdempotencyKey::for_step(key.as_str(), &i.to_string()),
                        )
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
                let text = format!("compensation failed: {e}");
                saga::update(&*d.sagas, &saga_id, None, |s| {
                    s.status = SagaStatus::Failed;
                    s.record(STEP, StepOutcome::Failed, text.clone(), now);
                })
                .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };

        if let Some(completion) = run.completion() {
            let undone = run.result().clone();
            saga::update_from(&*d.sagas, saga, Some(completion), |s| {
                for undo in &undone {
                    match undo {
                        Undo::ReverseAccrual { .. } => {}
                        Undo::RecreditRedemption { points, .. } => s.ledger.add_recredited(points.get()),
                    }
                }
                s.status = SagaStatus::Compensated;
                s.record(STEP, StepOutcome::Done, describe(&undone), now);
            })
            .await?;
            d.metrics
                .add("compensated", 1, Some(("reason", request.data.reason.as_str())));
        }

        Ok(vec![workflow_exception(
            key.as_str(),
            &request.data.failed_step,
            request.data.reason,
            format!(
                "{} — compensated: {}",
                request.data.message,
                describe(run.result())
            ),
            &request.metadata,
            "CompensationRequested",
            now,
        )])
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
