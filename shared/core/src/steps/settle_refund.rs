//! A refund the payment side settled (`RefundSettled`), taken by the `reverse-loyalty` step: the points
//! its `points` tenders paid are what is given back for its return, in place of the share of the
//! return's value (see `ledger::Ledger::decide_refund`). What was given back for the transaction is moved
//! to the target the facts give — the settled refunds' points plus the share of what no refund settled —
//! so the books are the same whichever of a return and its refund came first.
//!
//! - Before its transaction is processed a refund waits, as a return does; on a closed transaction it is
//!   refused (`transaction_closed`).
//! - Another currency, points on a transaction not paid with points, more points than were paid, or the
//!   same refund id with other figures: refused (`business_rule_violation`), recorded on the saga.
//! - A take-back of points the member spent or holds takes what the platform has; the rest stays counted
//!   as given back and a `WorkflowException` (`loyalty_rejected`) leaves it to a person.

use retail_sync_contracts::envelope::Detail;
use retail_sync_contracts::events::{ReasonCode, RefundSettled};
use retail_sync_contracts::values::{ExternalRef, Points};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ledger::RefundSettlement;
use crate::ports::{AdjustmentKind, AdjustmentRequest};
use crate::saga::{SagaId, StepOutcome};
use crate::steps::reverse_loyalty::{ReverseLoyalty, STEP};
use crate::steps::{Cx, Refusal, follow_up_allowed, load_with_basis};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// What the platform applied in the decided direction (it may take back less than asked: the
    /// member spent the points).
    Adjusted {
        applied: Points,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loyalty_transaction_id: Option<ExternalRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
        /// Of a take-back, the points the platform could not take (the member spent or holds them): they
        /// stay counted as given back, and a `WorkflowException` says so. Kept in the outcome so a
        /// redelivery says it again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        short_of: Option<Points>,
    },
    /// Nothing to move: the target was already met, or the transaction has no member.
    Unchanged,
}

pub(crate) fn key(refund: &Detail<RefundSettled>) -> IdempotencyKey {
    let saga_id = SagaId::of(&refund.data.original);
    IdempotencyKey::for_step(
        saga_id.as_str(),
        &format!("{STEP}:refund:{}", refund.data.refund_id),
    )
}

pub(crate) async fn settle_refund(
    step: &ReverseLoyalty,
    cx: &mut Cx<'_>,
    refund: &Detail<RefundSettled>,
) -> Result<(), Error> {
    let saga_id = SagaId::of(&refund.data.original);
    let refund_id = refund.data.refund_id.clone();
    let (saga, basis) = load_with_basis(cx.sagas(), &saga_id).await?;
    let what = format!("refund {refund_id}");
    let entry = match saga.ledger.refund_entry(&refund_id).cloned() {
        Some(entry) => entry,
        None => {
            follow_up_allowed(cx, &saga, &basis, &what).await?;
            let settlement = RefundSettlement {
                refund_id: refund_id.clone(),
                return_id: refund.data.return_id.clone(),
                currency: refund.data.currency,
                points: crate::domain::refund_points(&refund.data),
                occurred_at: refund.metadata.occurred_at,
            };
            // Checked and decided in one versioned write: a return or another refund of the same
            // transaction decided at the same time makes the write re-apply, and the target then counts it.
            cx.reserve(
                saga,
                ReasonCode::BusinessRuleViolation,
                &format!("{what} refused"),
                &Fingerprint::of(&refund.data),
                |ledger| ledger.decide_refund(settlement.clone(), &basis),
            )
            .await?
        }
    };
    let (kind, points) = entry.movement();
    let suffix = match kind {
        // A refund gives back redeemed or tendered points, never earned ones (`RefundEntry::movement`).
        AdjustmentKind::Recredit | AdjustmentKind::Restore => "recredit",
        AdjustmentKind::Reversal => "take-back",
    };

    let run = cx
        .once(Fingerprint::of(&refund.data), || async {
            let Some(member_id) = basis.member_id.clone().filter(|_| !points.is_zero()) else {
                return Ok(Outcome::Unchanged);
            };
            let request = AdjustmentRequest {
                member_id,
                kind,
                transaction: refund.data.original.clone(),
                reference: format!("refund:{refund_id}"),
                points,
                occurred_at: entry.occurred_at,
            };
            Ok(
                match step
                    .loyalty
                    .adjust(&request, &cx.sub_key(suffix))
                    .await
                    .refusal()?
                {
                    Ok(a) => {
                        let applied =
                            Points::new(a.delta.saturating_abs().min(points.get())).unwrap_or(points);
                        Outcome::Adjusted {
                            applied,
                            loyalty_transaction_id: Some(a.loyalty_transaction_id),
                            refused: None,
                            // Only a take-back can fall short: a give-back adds to the balance.
                            short_of: Some(points.saturating_sub(applied))
                                .filter(|p| p.get() > 0 && kind == AdjustmentKind::Reversal),
                        }
                    }
                    Err(message) => Outcome::Adjusted {
                        applied: Points::ZERO,
                        loyalty_transaction_id: None,
                        refused: Some(message),
                        short_of: None,
                    },
                },
            )
        })
        .await?;
    let settled = cx
        .settle(
            &saga_id,
            run,
            |s, outcome| {
                let return_id = &entry.return_id;
                match outcome {
                    Outcome::Unchanged => {
                        s.ledger.record_refund(&refund_id, points, None);
                        (
                            StepOutcome::Done,
                            format!(
                                "refund {refund_id} of return {return_id}: {} points paid, nothing to move",
                                entry.points
                            ),
                        )
                    }
                    Outcome::Adjusted {
                        applied,
                        loyalty_transaction_id,
                        refused,
                        short_of,
                    } => {
                        s.ledger
                            .record_refund(&refund_id, *applied, loyalty_transaction_id.clone());
                        let moved = if kind == AdjustmentKind::Recredit {
                            format!("{applied} of them given back")
                        } else {
                            format!("{applied} points taken back that the return's share had given back")
                        };
                        let mut text = format!(
                            "refund {refund_id} of return {return_id}: {} points paid, {moved}",
                            entry.points
                        );
                        if let Some(short) = short_of {
                            text.push_str(&format!("; {short} the member spent or holds stay given back"));
                        }
                        if let Some(message) = refused {
                            text.push_str(&format!("; loyalty refused: {message}"));
                            return (StepOutcome::Failed, text);
                        }
                        (StepOutcome::Done, text)
                    }
                }
            },
            |outcome, metrics| {
                if let Outcome::Adjusted { applied, .. } = outcome {
                    let name = if kind == AdjustmentKind::Recredit {
                        "points_recredited"
                    } else {
                        "points_taken_back"
                    };
                    metrics.add(name, applied.get().unsigned_abs(), None);
                }
            },
        )
        .await?
        .result;
    match settled {
        Outcome::Adjusted {
            refused: Some(message),
            ..
        } => cx.exception(ReasonCode::LoyaltyRejected, message),
        // A person settles with the member what the platform could not take back.
        Outcome::Adjusted {
            applied,
            short_of: Some(short),
            ..
        } => cx.exception(
            ReasonCode::LoyaltyRejected,
            format!(
                "{what}: only {applied} of {} points could be taken back from the member, who spent or \
                 holds the rest: {short} stay given back",
                applied.saturating_add(short)
            ),
        ),
        _ => {}
    }
    Ok(())
}
