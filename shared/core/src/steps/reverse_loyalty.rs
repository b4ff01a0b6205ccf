//! The loyalty side of a posted return: takes back earned points in proportion to the returned eligible
//! value and gives back redeemed points in proportion to the net value given back, both on cumulative
//! values (see `ledger::Ledger::decide_return`), so partial returns that add up to the whole move exactly
//! what was earned and redeemed. Announces `LoyaltyReversed`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{LoyaltyReversed, ReasonCode};
use retail_sync_contracts::values::{ExternalRef, Points};
use retail_sync_contracts::{Event, EventType};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ports::{AdjustmentKind, AdjustmentRequest, Outgoing};
use crate::saga::{self, SagaId, StepOutcome};
use crate::steps::{
    Deps, Message, Step, load_with_basis, outgoing, parse_internal, run_once, unexpected, workflow_exception,
};

pub const STEP: &str = "reverse-loyalty";

pub struct ReverseLoyalty(pub Deps);

/// What the platform applied: the reversal may take less than asked (a platform keeps points that open
/// holds reserve), and a refusal of either adjustment keeps what the other one did.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Adjusted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loyalty_transaction_id: Option<ExternalRef>,
        reversed: Points,
        recredited: Points,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
        /// Running totals as of this return, fixed here so a republish carries the same figures.
        total_reversed: Points,
        total_earned: Points,
    },
    Anonymous,
}

#[async_trait]
impl Step for ReverseLoyalty {
    fn name(&self) -> &'static str {
        STEP
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let d = &self.0;
        let (_, event) = parse_internal(&message.body)?;
        let Event::ErpReturnPosted(posted) = &event else {
            return Err(unexpected(STEP, &event));
        };
        let saga_id = SagaId::of(&posted.data.original);
        let return_id = posted.data.return_id.clone();
        let key = IdempotencyKey::for_step(saga_id.as_str(), &format!("{STEP}:{return_id}"));
        let now = d.clock.now();
        let (saga, basis) = load_with_basis(&*d.sagas, &saga_id).await?;
        let Some(entry) = saga.ledger.return_entry(&return_id) else {
            return Err(Error::Corrupt {
                what: format!("saga {saga_id}"),
                message: format!("return {return_id} was posted but is not on the ledger"),
            });
        };

        // Decided under the saga's versioned write, so two returns processed at once each see the other;
        // a redelivery finds the figures on the entry and writes nothing.
        let (saga, (reverse, recredit)) = match (entry.points_reversed, entry.points_recredited) {
            (Some(r), Some(c)) => (saga, (r, c)),
            _ => {
                let mut decided = None;
                let saga = saga::update_from(&*d.sagas, saga, None, |s| {
                    decided = s.ledger.decide_return(&return_id, &basis);
                })
                .await?;
                (saga, decided.expect("the entry exists"))
            }
        };
        let earned = saga.ledger.points_accrued.unwrap_or(Points::ZERO);
        let decided_total = saga.ledger.points_reversed();

        let run = run_once(d, &key, Fingerprint::of(&posted.data), || async {
            let Some(member_id) = &basis.member_id else {
                return Ok(Outcome::Anonymous);
            };
            let (mut loyalty_transaction_id, mut reversed, mut recredited, mut refused) =
                (None, Points::ZERO, Points::ZERO, None);
            for (kind, points, suffix) in [
                (AdjustmentKind::Reversal, reverse, "reverse"),
                (AdjustmentKind::Recredit, recredit, "recredit"),
            ] {
                if points.get() == 0 || refused.is_some() {
                    continue;
                }
                let request = AdjustmentRequest {
                    member_id: member_id.clone(),
                    kind,
                    transaction: posted.data.original.clone(),
                    reference: format!("return:{return_id}"),
                    points,
                    occurred_at: posted.metadata.occurred_at,
                };
                match d
                    .loyalty
                    .adjust(&request, &IdempotencyKey::for_step(key.as_str(), suffix))
                    .await
                {
                    Ok(a) => {
                        let applied = Points::new(a.delta.abs()).unwrap_or(points);
                        if kind == AdjustmentKind::Reversal {
                            loyalty_transaction_id = Some(a.loyalty_transaction_id);
                            reversed = applied;
                        } else {
                            recredited = applied;
                        }
                    }
                    Err(Error::Rejected { message, .. }) => refused = Some(message),
                    Err(e) => return Err(e),
                }
            }
            let shortfall = reverse.get() - reversed.get();
            Ok(Outcome::Adjusted {
                loyalty_transaction_id,
                reversed,
                recredited,
                refused,
                total_reversed: Points::new(decided_total.get() - shortfall).unwrap_or(Points::ZERO),
                total_earned: earned,
            })
        })
        .await?;

        if let Some(completion) = run.completion() {
            saga::update_from(&*d.sagas, saga, Some(completion), |s| {
                let (outcome, text) = match run.result() {
                    Outcome::Adjusted {
                        loyalty_transaction_id,
                        reversed,
                        recredited,
                        refused,
                        total_reversed,
                        ..
                    } => {
                        // The ledger keeps what was applied: what a refusal or the platform left out is
                        // owed still, and the next return's cumulative figure includes it.
                        if let Some(e) = s.ledger.return_entry_mut(&return_id) {
                            e.loyalty_transaction_id = loyalty_transaction_id.clone();
                            e.points_reversed = Some(*reversed);
                            e.points_recredited = Some(*recredited);
                        }
                        s.ledger.add_recredited(recredited.get() - recredit.get());
                        let mut text = format!(
                            "return {return_id}: {reversed} earned points reversed ({total_reversed} of {earned} so far), {recredited} redeemed points given back"
                        );
                        if let Some(message) = refused {
                            text.push_str(&format!("; loyalty refused the rest: {message}"));
                        }
                        let outcome = if refused.is_some() { StepOutcome::Failed } else { StepOutcome::Done };
                        (outcome, text)
                    }
                    Outcome::Anonymous => (StepOutcome::Skipped, format!("return {return_id}: anonymous, no points")),
                };
                s.record(STEP, outcome, text, now);
            })
            .await?;
            if let Outcome::Adjusted {
                reversed, recredited, ..
            } = run.result()
            {
                d.metrics
                    .add("points_reversed", reversed.get().unsigned_abs(), None);
                d.metrics
                    .add("points_recredited", recredited.get().unsigned_abs(), None);
            }
        }

        let Outcome::Adjusted {
            loyalty_transaction_id,
            reversed,
            recredited,
            refused,
            total_reversed,
            total_earned,
        } = run.result()
        else {
            return Ok(Vec::new());
        };
        let mut events = vec![outgoing(
            key.as_str(),
            &posted.metadata,
            now,
            LoyaltyReversed {
                member_id: basis.member_id.clone().expect("adjusted for a member"),
                return_id,
                original: posted.data.original.clone(),
                points: *reversed,
                loyalty_transaction_id: loyalty_transaction_id.clone(),
                points_recredited: *recredited,
                total_reversed: *total_reversed,
                total_earned: *total_earned,
            },
        )];
        if let Some(message) = refused {
            events.push(workflow_exception(
                key.as_str(),
                STEP,
                ReasonCode::LoyaltyRejected,
                message.clone(),
                &posted.metadata,
                EventType::ErpReturnPosted.name(),
                now,
            ));
        }
        Ok(events)
    }
}
