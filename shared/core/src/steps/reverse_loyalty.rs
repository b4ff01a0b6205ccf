//! The loyalty side of a posted return: takes back earned points in proportion to the returned eligible
//! value and gives back redeemed points in proportion to the net value given back, both on cumulative
//! values (see `ledger::Ledger::decide_return`), so partial returns that add up to the whole move exactly
//! what was earned and redeemed. Announces `LoyaltyReversed`. It also takes the refunds the payment side
//! settled (`RefundSettled`, see `settle_refund`): both move the same count of points given back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use retail_sync_contracts::Event;
use retail_sync_contracts::envelope::{Detail, Metadata};
use retail_sync_contracts::events::{ErpReturnPosted, LoyaltyReversed, ReasonCode, RefundSettled};
use retail_sync_contracts::values::{ExternalRef, Points};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::{ReturnEntry, ReturnStatus};
use crate::ports::{AdjustmentKind, AdjustmentRequest, Loyalty};
use crate::saga::{self, SagaId, StepOutcome};
use crate::steps::{Accepts, Base, Cx, Refusal, Workflow, load_with_basis};

pub const STEP: &str = "reverse-loyalty";

pub struct ReverseLoyalty {
    pub base: Base,
    pub loyalty: Arc<dyn Loyalty>,
}

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
        /// Of `reversed`, the points the platform cancelled while still pending (the return came inside
        /// the return window).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_cancelled: Option<Points>,
        /// The earned points the platform did not reverse though it took the reversal (the member
        /// spent them or holds them): owed still, and said in a `WorkflowException`. Kept in the
        /// outcome so a redelivery says it again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        short_of: Option<Points>,
    },
    Anonymous,
}

/// A return the ERP posted, or a refund the payment side settled.
pub enum ToReverse {
    Return(Detail<ErpReturnPosted>),
    Refund(Detail<RefundSettled>),
}

impl Accepts for ToReverse {
    fn accept(event: Event) -> Option<Self> {
        match event {
            Event::ErpReturnPosted(d) => Some(Self::Return(d)),
            Event::RefundSettled(d) => Some(Self::Refund(d)),
            _ => None,
        }
    }

    fn metadata(&self) -> &Metadata {
        match self {
            Self::Return(d) => &d.metadata,
            Self::Refund(d) => &d.metadata,
        }
    }
}

impl Workflow for ReverseLoyalty {
    const NAME: &'static str = STEP;
    const READS_ITS_SAGA: bool = true;
    type Input = ToReverse;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(input: &ToReverse) -> IdempotencyKey {
        match input {
            ToReverse::Return(posted) => {
                let saga_id = SagaId::of(&posted.data.original);
                IdempotencyKey::for_step(saga_id.as_str(), &format!("{STEP}:{}", posted.data.return_id))
            }
            ToReverse::Refund(refund) => super::settle_refund::key(refund),
        }
    }

    async fn run(&self, cx: &mut Cx<'_>, input: &ToReverse) -> Result<(), Error> {
        match input {
            ToReverse::Return(posted) => self.reverse_return(cx, posted).await,
            ToReverse::Refund(refund) => super::settle_refund::settle_refund(self, cx, refund).await,
        }
    }
}

impl ReverseLoyalty {
    async fn reverse_return(&self, cx: &mut Cx<'_>, posted: &Detail<ErpReturnPosted>) -> Result<(), Error> {
        let saga_id = SagaId::of(&posted.data.original);
        let return_id = posted.data.return_id.clone();
        let (saga, basis) = load_with_basis(cx.sagas(), &saga_id).await?;
        // Only a return the saga records the ERP as having accepted, under this document, is reversed
        // (post-return-to-erp records it in the write that precedes this event).
        let posted_here = |e: &ReturnEntry| {
            e.status == ReturnStatus::Posted
                && e.erp_document_id.as_ref() == Some(&posted.data.erp_document_id)
        };
        let Some(entry) = saga.ledger.return_entry(&return_id).filter(|e| posted_here(e)) else {
            let what = format!(
                "ErpReturnPosted of return {return_id} (document {}) for {saga_id}, which records no such posting",
                posted.data.erp_document_id
            );
            return Err(cx.inconsistent(&saga_id, what).await);
        };

        // Decided under the saga's versioned write, so two returns processed at once each see the other;
        // a redelivery finds the figures on the entry and writes nothing.
        let (saga, (reverse, recredit)) = match (entry.points_reversed, entry.points_recredited) {
            (Some(r), Some(c)) => (saga, (r, c)),
            _ => {
                let mut decided = None;
                let saga = saga::update_from(cx.sagas(), saga, None, |s| {
                    decided = s.ledger.decide_return(&return_id, &basis);
                })
                .await?;
                let decided = decided.ok_or_else(|| {
                    Error::corrupt(
                        format!("saga {saga_id}"),
                        format!("return {return_id} left the ledger while it was decided"),
                    )
                })?;
                (saga, decided)
            }
        };
        let earned = saga.ledger.points_accrued.unwrap_or(Points::ZERO);
        let decided_total = saga.ledger.points_reversed();

        let run = cx
            .once(Fingerprint::of(&posted.data), || async {
                let Some(member_id) = &basis.member_id else {
                    return Ok(Outcome::Anonymous);
                };
                let (mut loyalty_transaction_id, mut reversed, mut recredited, mut refused) =
                    (None, Points::ZERO, Points::ZERO, None);
                let (mut pending_cancelled, mut short_of) = (None, None);
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
                    match self
                        .loyalty
                        .adjust(&request, &cx.sub_key(suffix))
                        .await
                        .refusal()?
                    {
                        Ok(a) => {
                            let applied = Points::new(a.delta.abs()).unwrap_or(points);
                            if kind == AdjustmentKind::Reversal {
                                loyalty_transaction_id = Some(a.loyalty_transaction_id);
                                reversed = applied;
                                pending_cancelled = Some(a.pending_cancelled).filter(|p| p.get() > 0);
                                short_of = Some(points.saturating_sub(applied)).filter(|p| p.get() > 0);
                            } else {
                                recredited = applied;
                            }
                        }
                        Err(message) => refused = Some(message),
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
                    pending_cancelled,
                    short_of,
                })
            })
            .await?;
        let adjusted = cx
            .settle(
                saga,
                run,
                |s, adjusted| match adjusted {
                    Outcome::Adjusted {
                        loyalty_transaction_id,
                        reversed,
                        recredited,
                        refused,
                        total_reversed,
                        pending_cancelled,
                        short_of,
                        ..
                    } => {
                        // The ledger keeps what was applied: what a refusal or the platform left out is
                        // owed still, and the next return's cumulative figure includes it.
                        if let Some(e) = s.ledger.return_entry_mut(&return_id) {
                            e.points_pending_cancelled = *pending_cancelled;
                            e.loyalty_transaction_id = loyalty_transaction_id.clone();
                            e.points_reversed = Some(*reversed);
                            e.points_recredited = Some(*recredited);
                        }
                        // Counted as decided: the count follows what the platform applied instead.
                        s.ledger.count_recredited(recredited.saturating_sub(recredit));
                        s.ledger.uncount_recredited(recredit.saturating_sub(*recredited));
                        let mut text = format!("return {return_id}: {reversed} earned points reversed");
                        if let Some(p) = pending_cancelled {
                            text.push_str(&format!(" ({p} of them still pending: cancelled)"));
                        }
                        text.push_str(&format!(" ({total_reversed} of {earned} so far),"));
                        text.push_str(&format!(" {recredited} redeemed points given back"));
                        if let Some(short) = short_of {
                            text.push_str(&format!(
                                "; {short} earned points the member spent or holds stay owed"
                            ));
                        }
                        if let Some(message) = refused {
                            text.push_str(&format!("; loyalty refused the rest: {message}"));
                        }
                        let outcome = if refused.is_some() {
                            StepOutcome::Failed
                        } else {
                            StepOutcome::Done
                        };
                        (outcome, text)
                    }
                    Outcome::Anonymous => (
                        StepOutcome::Skipped,
                        format!("return {return_id}: anonymous, no points"),
                    ),
                },
                |adjusted, metrics| {
                    if let Outcome::Adjusted {
                        reversed, recredited, ..
                    } = adjusted
                    {
                        metrics.add("points_reversed", reversed.get().unsigned_abs(), None);
                        metrics.add("points_recredited", recredited.get().unsigned_abs(), None);
                    }
                },
            )
            .await?
            .result;

        let (
            Outcome::Adjusted {
                loyalty_transaction_id,
                reversed,
                recredited,
                refused,
                total_reversed,
                total_earned,
                short_of,
                ..
            },
            Some(member_id),
        ) = (adjusted, basis.member_id.clone())
        else {
            return Ok(());
        };
        // A person settles with the member what the platform could not take; the next return's
        // cumulative figure asks for it again.
        let short = short_of.map(|short| {
            format!(
                "return {return_id}: only {reversed} of {} earned points could be reversed from the member, \
                 who spent or holds the rest: {short} stay owed",
                reversed.saturating_add(short)
            )
        });
        cx.emit(LoyaltyReversed {
            member_id,
            return_id,
            original: posted.data.original.clone(),
            points: reversed,
            loyalty_transaction_id,
            points_recredited: recredited,
            total_reversed,
            total_earned,
        });
        let problems: Vec<String> = short.into_iter().chain(refused).collect();
        if !problems.is_empty() {
            cx.exception(ReasonCode::LoyaltyRejected, problems.join("; "));
        }
        Ok(())
    }
}
