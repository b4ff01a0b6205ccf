//! Commits the points an order redeemed at checkout (the hold the experience API created) before the ERP
//! sales order is created, so the ERP never books a discount the loyalty platform did not grant. A hold
//! that cannot be committed (expired, released, unknown, for other points or another value) fails the
//! order before anything else took effect; the hold is released if it is still open.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{ReasonCode, RedemptionCommitted, TransactionRef};
use retail_sync_contracts::values::ExternalRef;
use retail_sync_contracts::{Event, EventType};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::RedemptionEntry;
use crate::ports::{CommitRequest, HoldStatus, Outgoing};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{Deps, Message, Step, outgoing, parse_internal, run_once, unexpected, workflow_exception};

pub const STEP: &str = "commit-redemption";

pub struct CommitRedemption(pub Deps);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Committed { loyalty_transaction_id: ExternalRef },
    Refused { message: String },
}

#[async_trait]
impl Step for CommitRedemption {
    fn name(&self) -> &'static str {
        STEP
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let d = &self.0;
        let (_, event) = parse_internal(&message.body)?;
        let Event::OrderPlaced(order) = &event else {
            return Err(unexpected(STEP, &event));
        };
        let (Some(redemption), Some(member_id)) = (&order.data.redemption, &order.data.member_id) else {
            return Err(Error::rejected(
                ReasonCode::BusinessRuleViolation,
                format!("order {} has no redemption by a member", order.data.order_id),
            ));
        };
        let transaction = TransactionRef::Order {
            order_id: order.data.order_id.clone(),
        };
        let saga_id = SagaId::of(&transaction);
        let key = IdempotencyKey::for_step(saga_id.as_str(), STEP);
        let now = d.clock.now();

        let release_key = IdempotencyKey::for_step(key.as_str(), "release");
        let run = run_once(d, &key, Fingerprint::of(&order.data), || async {
            // Checked before committing: the value the order deducted must be the one the platform
            // granted, or the ERP and the loyalty ledger would disagree for good.
            let hold = match d.loyalty.get_hold(&redemption.hold_id).await {
                Ok(hold) => hold,
                Err(Error::Rejected { message, .. }) => return Ok(Outcome::Refused { message }),
                Err(e) => return Err(e),
            };
            let mismatch = if &hold.member_id != member_id {
                Some(format!("hold {} belongs to another member", hold.hold_id))
            } else if hold.value_minor != redemption.value_minor || hold.points != redemption.points {
                Some(format!(
                    "order redeems {} points worth {}, hold {} is {} points worth {}",
                    redemption.points, redemption.value_minor, hold.hold_id, hold.points, hold.value_minor
                ))
            } else {
                None
            };
            // A hold of this member that the order cannot use is given back at once rather than left to
            // expire; another member's hold is none of this order's business.
            let release_key = &release_key;
            let release_if_ours = |hold: crate::ports::Hold| async move {
                if hold.status == HoldStatus::Held && &hold.member_id == member_id {
                    d.loyalty.release_hold(&hold.hold_id, release_key).await?;
                }
                Ok::<_, Error>(())
            };
            if let Some(message) = mismatch {
                release_if_ours(hold).await?;
                return Ok(Outcome::Refused { message });
            }
            let request = CommitRequest {
                transaction: transaction.clone(),
                points: redemption.points,
            };
            match d.loyalty.commit_hold(&redemption.hold_id, &request, &key).await {
                Ok(hold) => Ok(Outcome::Committed {
                    loyalty_transaction_id: hold.loyalty_transaction_id.ok_or_else(|| Error::Corrupt {
                        what: format!("hold {}", hold.hold_id),
                        message: "committed without a loyalty transaction".into(),
                    })?,
                }),
                Err(Error::Rejected { message, .. }) => {
                    release_if_ours(d.loyalty.get_hold(&redemption.hold_id).await?).await?;
                    Ok(Outcome::Refused { message })
                }
                Err(e) => Err(e),
            }
        })
        .await?;

        if let Some(completion) = run.completion() {
            saga::update(&*d.sagas, &saga_id, Some(completion), |s| match run.result() {
                Outcome::Committed {
                    loyalty_transaction_id,
                } => {
                    s.ledger.redemption = Some(RedemptionEntry {
                        hold_id: redemption.hold_id.clone(),
                        points: redemption.points,
                        value_minor: redemption.value_minor,
                        loyalty_transaction_id: loyalty_transaction_id.clone(),
                        points_recredited: Default::default(),
                    });
                    s.record(
                        STEP,
                        StepOutcome::Done,
                        format!(
                            "{} points of hold {} spent ({loyalty_transaction_id})",
                            redemption.points, redemption.hold_id
                        ),
                        now,
                    );
                }
                Outcome::Refused { message } => {
                    s.status = SagaStatus::Failed;
                    s.record(
                        STEP,
                        StepOutcome::Failed,
                        format!("redemption refused: {message}"),
                        now,
                    );
                }
            })
            .await?;
            match run.result() {
                Outcome::Committed { .. } => {
                    d.metrics
                        .add("points_redeemed", redemption.points.get().unsigned_abs(), None)
                }
                Outcome::Refused { .. } => d.metrics.add(
                    "failed",
                    1,
                    Some(("reason", ReasonCode::RedemptionRefused.as_str())),
                ),
            }
        }

        Ok(vec![match run.result() {
            Outcome::Committed {
                loyalty_transaction_id,
            } => outgoing(
                key.as_str(),
                &order.metadata,
                now,
                RedemptionCommitted {
                    order_id: order.data.order_id.clone(),
                    member_id: member_id.clone(),
                    hold_id: redemption.hold_id.clone(),
                    points: redemption.points,
                    value_minor: redemption.value_minor,
                    currency: order.data.currency,
                    loyalty_transaction_id: loyalty_transaction_id.clone(),
                },
            ),
            Outcome::Refused { message } => workflow_exception(
                key.as_str(),
                STEP,
                ReasonCode::RedemptionRefused,
                message.clone(),
                &order.metadata,
                EventType::OrderPlaced.name(),
                now,
            ),
        }])
    }
}
