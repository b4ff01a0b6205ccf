//! `notify-channel`: an order's outcomes told back to the ecommerce platform it came from — points earned
//! per shipment (`LoyaltyAccrued`), a return refunded and its points reversed (`LoyaltyReversed`), a
//! cancellation applied (`OrderCancellationApplied`, which cancel-order announces once the ERP booked it;
//! a cancellation that found nothing open, was refused or came for a failed order is never announced, so
//! there is nothing to wait for). Only
//! orders mapped from a platform's own events carry the platform's order (`channel_order`); the others
//! have nobody to tell.
//!
//! Exactly once per outcome: the effect runs once per key here, and the platform-side record is keyed
//! by the outcome id (a Shopify metafield, an Adobe Commerce comment found by its marker), so a call
//! whose answer was lost and is made again records nothing twice.

use std::sync::Arc;

use retail_sync_contracts::envelope::{Detail, Metadata};
use retail_sync_contracts::events::{
    LoyaltyAccrued, LoyaltyReversed, OrderCancellationApplied, ReasonCode, TransactionRef,
};
use retail_sync_contracts::values::{OrderId, Points};
use retail_sync_contracts::{ChannelPlatform, Event};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ports::{ChannelOutcome, ChannelOutcomes, OutcomeKind};
use crate::saga::{Saga, SagaId, StepOutcome};
use crate::steps::{Accepts, Base, Cx, Refusal, Workflow};

pub const STEP: &str = "notify-channel";

/// The platform adapters, by platform; `None` for a platform whose outcomes are not configured.
pub type OutcomesFor = Arc<dyn Fn(ChannelPlatform) -> Option<Arc<dyn ChannelOutcomes>> + Send + Sync>;

pub struct NotifyChannel {
    pub base: Base,
    pub outcomes: OutcomesFor,
}

/// What the step hears.
pub enum Heard {
    Accrued(Detail<LoyaltyAccrued>),
    Reversed(Detail<LoyaltyReversed>),
    Cancelled(Detail<OrderCancellationApplied>),
}

impl Accepts for Heard {
    fn accept(event: Event) -> Option<Self> {
        match event {
            Event::LoyaltyAccrued(d) => Some(Self::Accrued(d)),
            Event::LoyaltyReversed(d) => Some(Self::Reversed(d)),
            Event::OrderCancellationApplied(d) => Some(Self::Cancelled(d)),
            _ => None,
        }
    }

    fn metadata(&self) -> &Metadata {
        match self {
            Self::Accrued(d) => &d.metadata,
            Self::Reversed(d) => &d.metadata,
            Self::Cancelled(d) => &d.metadata,
        }
    }
}

impl Heard {
    /// The order, and the outcome's id among the order's; `None` for a POS receipt's.
    fn order_and_outcome(&self) -> Option<(OrderId, String)> {
        let order = |t: &TransactionRef| match t {
            TransactionRef::Order { order_id } => Some(order_id.clone()),
            TransactionRef::Receipt { .. } => None,
        };
        match self {
            Self::Accrued(d) => {
                let shipment = d.data.shipment_id.as_ref()?;
                Some((order(&d.data.transaction)?, format!("earned-{shipment}")))
            }
            Self::Reversed(d) => Some((order(&d.data.original)?, format!("returned-{}", d.data.return_id))),
            Self::Cancelled(d) => Some((
                d.data.order_id.clone(),
                format!("cancelled-{}", d.data.cancellation_id),
            )),
        }
    }
}

/// What the delivery did.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Told {
    Told {
        platform: ChannelPlatform,
        summary: String,
    },
    Refused {
        platform: ChannelPlatform,
        message: String,
    },
}

impl Workflow for NotifyChannel {
    const NAME: &'static str = STEP;
    type Input = Heard;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(heard: &Heard) -> IdempotencyKey {
        match heard.order_and_outcome() {
            Some((order_id, outcome)) => {
                let saga = SagaId::of(&TransactionRef::Order { order_id });
                IdempotencyKey::for_step(saga.as_str(), &format!("{STEP}:{outcome}"))
            }
            // A receipt's accrual or return: nothing to tell, no effect to key.
            None => IdempotencyKey::for_step("none", STEP),
        }
    }

    async fn run(&self, cx: &mut Cx<'_>, heard: &Heard) -> Result<(), Error> {
        let Some((order_id, outcome_id)) = heard.order_and_outcome() else {
            return Ok(());
        };
        let saga_id = SagaId::of(&TransactionRef::Order {
            order_id: order_id.clone(),
        });
        let saga = cx.sagas().load(&saga_id).await?.ok_or_else(|| Error::NotYet {
            what: format!("{saga_id}, whose outcome this is"),
        })?;
        let Some(order) = channel_order(&saga)? else {
            return Ok(());
        };
        let Some(adapter) = (self.outcomes)(order.platform) else {
            tracing::info!(order = %order_id, platform = ?order.platform, "outcomes to this platform are not configured");
            return Ok(());
        };
        let (kind, points, given_back) = match heard {
            Heard::Accrued(d) => (OutcomeKind::PointsEarned, d.data.points, Points::ZERO),
            Heard::Reversed(d) => (
                OutcomeKind::ReturnReversed,
                d.data.points,
                d.data.points_recredited,
            ),
            Heard::Cancelled(d) => (OutcomeKind::Cancelled, Points::ZERO, d.data.points_recredited),
        };
        let outcome = ChannelOutcome {
            outcome_id,
            order_id,
            order: order.clone(),
            kind,
            points,
            points_given_back: given_back,
            occurred_at: cx.cause.occurred_at,
        };
        let key = cx.key.clone();
        let run = cx
            // What is told, not when: the same shipment's accrual can come again caused by another
            // event of the channel's (orders/fulfilled after fulfillments/create) with another time.
            .once(
                Fingerprint::of(&(
                    &outcome.outcome_id,
                    outcome.kind,
                    outcome.points,
                    outcome.points_given_back,
                )),
                || async {
                    Ok(match adapter.tell(&outcome, &key).await.refusal()? {
                        Ok(()) => Told::Told {
                            platform: order.platform,
                            summary: outcome.summary(),
                        },
                        Err(message) => Told::Refused {
                            platform: order.platform,
                            message,
                        },
                    })
                },
            )
            .await?;
        let settled = cx
            .settle(
                saga,
                run,
                |_, told| match told {
                    Told::Told { platform, summary } => {
                        (StepOutcome::Done, format!("told {platform:?}: {summary}"))
                    }
                    Told::Refused { platform, message } => (
                        StepOutcome::Failed,
                        format!("{platform:?} refused the outcome: {message}"),
                    ),
                },
                |told, metrics| {
                    let name = match told {
                        Told::Told { .. } => "channel_outcomes_told",
                        Told::Refused { .. } => "channel_outcomes_refused",
                    };
                    metrics.add(name, 1, None);
                },
            )
            .await?;
        // A refusal needs a person: announced (and so quarantined) on every delivery.
        if let Told::Refused { message, .. } = settled.result {
            cx.exception(ReasonCode::ChannelRejected, message);
        }
        Ok(())
    }
}

/// The platform order of the saga's order, if it came from one.
fn channel_order(saga: &Saga) -> Result<Option<retail_sync_contracts::ChannelOrder>, Error> {
    Ok(match saga.origin_event()? {
        Event::OrderPlaced(placed) => placed.data.channel_order,
        _ => None,
    })
}
