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

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Outcome {
    Adjusted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loyalty_transaction_id: Option<ExternalRef>,
    },
    Anonymous,
    Refused {
        message: String,
    },
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
        if saga.ledger.return_entry(&return_id).is_none() {
            return Err(Error::Corrupt {
                what: format!("saga {saga_id}"),
                message: format!("return {return_id} was posted but is not on the ledger"),
            });
        }

        // Decided under the saga's versioned write, so two returns processed at once each see the other.
        let mut decided = None;
        let saga = saga::update_from(&*d.sagas, saga, None, |s| {
            decided = s.ledger.decide_return(&return_id, &basis);
        })
        .await?;
        let (reverse, recredit) = decided.expect("the entry exists");

        let run = run_once(d, &key, Fingerprint::of(&posted.data), || async {
            let Some(member_id) = &basis.member_id else {
                return Ok(Outcome::Anonymous);
            };
            let mut loyalty_transaction_id = None;
            for (kind, points, suffix) in [
                (AdjustmentKind::Reversal, reverse, "reverse"),
                (AdjustmentKind::Recredit, recredit, "recredit"),
            ] {
                if points.get() == 0 {
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
                    Ok(a) if kind == AdjustmentKind::Reversal => {
                        loyalty_transaction_id = Some(a.loyalty_transaction_id)
                    }
                    Ok(_) => {}
                    Err(Error::Rejected { message, .. }) => return Ok(Outcome::Refused { message }),
                    Err(e) => return Err(e),
                }
            }
            Ok(Outcome::Adjusted {
                loyalty_transaction_id,
            })
        })
        .await?;

        let earned = saga.ledger.points_accrued.unwrap_or(Points::ZERO);
        let total_reversed = saga.ledger.points_reversed();
        if let Some(completion) = run.completion() {
            saga::update_from(&*d.sagas, saga, Some(completion), |s| {
                let text = match run.result() {
                    Outcome::Adjusted {
                        loyalty_transaction_id,
                    } => {
                        if let Some(e) = s.ledger.return_entry_mut(&return_id) {
                            e.loyalty_transaction_id = loyalty_transaction_id.clone();
                        }
                        format!(
                            "return {return_id}: {reverse} earned points reversed ({total_reversed} of {earned} so far), {recredit} redeemed points given back"
                        )
                    }
                    Outcome::Anonymous => format!("return {return_id}: anonymous, no points"),
                    Outcome::Refused { message } => format!("return {return_id}: loyalty refused: {message}"),
                };
                let outcome = match run.result() {
                    Outcome::Adjusted { .. } => StepOutcome::Done,
                    Outcome::Anonymous => StepOutcome::Skipped,
                    Outcome::Refused { .. } => StepOutcome::Failed,
                };
                s.record(STEP, outcome, text, now);
            })
            .await?;
            if let Outcome::Adjusted { .. } = run.result() {
                d.metrics
                    .add("points_reversed", reverse.get().unsigned_abs(), None);
                d.metrics
                    .add("points_recredited", recredit.get().unsigned_abs(), None);
            }
        }

        Ok(match run.result() {
            Outcome::Adjusted {
                loyalty_transaction_id,
            } => vec![outgoing(
                key.as_str(),
                &posted.metadata,
                now,
                LoyaltyReversed {
                    member_id: basis.member_id.clone().expect("adjusted for a member"),
                    return_id,
                    original: posted.data.original.clone(),
                    points: reverse,
                    loyalty_transaction_id: loyalty_transaction_id.clone(),
                    points_recredited: recredit,
                    total_reversed,
                    total_earned: earned,
                },
            )],
            Outcome::Anonymous => Vec::new(),
            Outcome::Refused { message } => vec![workflow_exception(
                key.as_str(),
                STEP,
                ReasonCode::LoyaltyRejected,
                message.clone(),
                &posted.metadata,
                EventType::ErpReturnPosted.name(),
                now,
            )],
        })
    }
}
