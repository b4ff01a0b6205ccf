//! Commits the points an order redeemed at checkout (the hold the experience API created) before the ERP
//! sales order is created, so the ERP never books a discount the loyalty platform did not grant. A hold
//! that cannot be committed (expired, released, unknown, for other points or another value) fails the
//! order before anything else took effect; the hold is released if it is still open.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use retail_sync_contracts::Event;
use retail_sync_contracts::envelope::Detail;
use retail_sync_contracts::events::{OrderPlaced, ReasonCode, RedemptionCommitted, TransactionRef};
use retail_sync_contracts::values::ExternalRef;

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::RedemptionEntry;
use crate::ports::{CommitRequest, HoldStatus, Loyalty};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{Base, Cx, Refusal, Workflow, is_origin};

pub const STEP: &str = "commit-redemption";

pub struct CommitRedemption {
    pub base: Base,
    pub loyalty: Arc<dyn Loyalty>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Committed { loyalty_transaction_id: ExternalRef },
    Refused { message: String },
}

fn saga_id(order: &Detail<OrderPlaced>) -> SagaId {
    SagaId::of(&TransactionRef::Order {
        order_id: order.data.order_id.clone(),
    })
}

impl Workflow for CommitRedemption {
    const NAME: &'static str = STEP;
    const READS_ITS_SAGA: bool = true;
    type Input = Detail<OrderPlaced>;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(order: &Detail<OrderPlaced>) -> IdempotencyKey {
        IdempotencyKey::for_step(saga_id(order).as_str(), STEP)
    }

    async fn run(&self, cx: &mut Cx<'_>, order: &Detail<OrderPlaced>) -> Result<(), Error> {
        let (Some(redemption), Some(member_id)) = (&order.data.redemption, &order.data.member_id) else {
            return Err(Error::rejected(
                ReasonCode::BusinessRuleViolation,
                format!("order {} has no redemption by a member", order.data.order_id),
            ));
        };
        let transaction = TransactionRef::Order {
            order_id: order.data.order_id.clone(),
        };
        let saga_id = saga_id(order);
        // The order the saga was started with (ingest validated it), not whatever the message says.
        let saga = saga::load_existing(cx.sagas(), &saga_id).await?;
        fn placed(e: &Event) -> Option<&OrderPlaced> {
            match e {
                Event::OrderPlaced(o) => Some(&o.data),
                _ => None,
            }
        }
        let fingerprint = Fingerprint::of(&order.data);
        if saga.origin_type != "OrderPlaced" || !is_origin(&saga, &order.data, &fingerprint, placed)? {
            let what = format!("OrderPlaced for {saga_id} differs from the order the saga records");
            return Err(cx.inconsistent(&saga_id, what).await);
        }
        let release_key = cx.sub_key("release");
        let run = cx
            .once(fingerprint, || async {
                // Checked before committing: the value the order deducted must be the one the platform
                // granted, or the ERP and the loyalty ledger would disagree for good.
                let hold = match self.loyalty.get_hold(&redemption.hold_id).await.refusal()? {
                    Ok(hold) => hold,
                    Err(message) => return Ok(Outcome::Refused { message }),
                };
                let mismatch = if &hold.member_id != member_id {
                    Some(format!("hold {} belongs to another member", hold.hold_id))
                } else if hold.value_minor != redemption.value_minor || hold.points != redemption.points {
                    Some(format!(
                        "order redeems {} points worth {}, hold {} is {} points worth {}",
                        redemption.points,
                        redemption.value_minor,
                        hold.hold_id,
                        hold.points,
                        hold.value_minor
                    ))
                } else {
                    None
                };
                // A hold of this member that the order cannot use is given back at once rather than left
                // to expire; another member's hold is none of this order's business.
                let release_key = &release_key;
                let release_if_ours = |hold: crate::ports::Hold| async move {
                    if hold.status == HoldStatus::Held && &hold.member_id == member_id {
                        self.loyalty.release_hold(&hold.hold_id, release_key).await?;
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
                match self
                    .loyalty
                    .commit_hold(&redemption.hold_id, &request, &cx.key)
                    .await
                    .refusal()?
                {
                    Ok(hold) => Ok(Outcome::Committed {
                        loyalty_transaction_id: hold.loyalty_transaction_id.ok_or_else(|| {
                            Error::corrupt(
                                format!("hold {}", hold.hold_id),
                                "committed without a loyalty transaction",
                            )
                        })?,
                    }),
                    Err(message) => {
                        release_if_ours(self.loyalty.get_hold(&redemption.hold_id).await?).await?;
                        Ok(Outcome::Refused { message })
                    }
                }
            })
            .await?;
        let committed = cx
            .settle(
                saga,
                run,
                |s, committed| match committed {
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
                        (
                            StepOutcome::Done,
                            format!(
                                "{} points of hold {} spent ({loyalty_transaction_id})",
                                redemption.points, redemption.hold_id
                            ),
                        )
                    }
                    Outcome::Refused { message } => {
                        s.status = SagaStatus::Failed;
                        (StepOutcome::Failed, format!("redemption refused: {message}"))
                    }
                },
                |committed, metrics| match committed {
                    Outcome::Committed { .. } => {
                        metrics.add("points_redeemed", redemption.points.get().unsigned_abs(), None)
                    }
                    Outcome::Refused { .. } => metrics.add(
                        "failed",
                        1,
                        Some(("reason", ReasonCode::RedemptionRefused.as_str())),
                    ),
                },
            )
            .await?
            .result;

        match committed {
            Outcome::Committed {
                loyalty_transaction_id,
            } => cx.emit(RedemptionCommitted {
                order_id: order.data.order_id.clone(),
                member_id: member_id.clone(),
                hold_id: redemption.hold_id.clone(),
                points: redemption.points,
                value_minor: redemption.value_minor,
                currency: order.data.currency,
                loyalty_transaction_id,
            }),
            Outcome::Refused { message } => cx.exception(ReasonCode::RedemptionRefused, message),
        }
        Ok(())
    }
}
