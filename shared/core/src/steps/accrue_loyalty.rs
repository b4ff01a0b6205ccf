//! Accrues loyalty points for a sale the ERP has posted, once per transaction; the loyalty platform
//! computes the points from the eligible value. Anonymous sales are completed without accrual. Orders
//! accrue per shipment (`OrderShipped`, see `accrue_shipment`).

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::Event;
use retail_sync_contracts::envelope::{Detail, Metadata};
use retail_sync_contracts::events::{
    ErpSalePosted, LoyaltyAccrued, OrderShipped, ReasonCode, TransactionRef,
};
use retail_sync_contracts::values::{Amount, ExternalRef, MemberId, Points};

use crate::domain;
use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ports::{AccrualRequest, Erp, Loyalty};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::settlement::ReturnWindows;
use crate::steps::{Accepts, Base, Cx, Refusal, Workflow};

pub const STEP: &str = "accrue-loyalty";

/// Records an accrual the platform holds pending (once: a redelivery finds it); the timeline's words.
pub(crate) fn record_pending(
    ledger: &mut crate::ledger::Ledger,
    accrual: &ExternalRef,
    points: Points,
    until: Option<Timestamp>,
) -> String {
    let Some(until) = until else {
        return String::new();
    };
    if !ledger
        .pending
        .iter()
        .any(|p| &p.loyalty_transaction_id == accrual)
    {
        ledger.pending.push(crate::ledger::PendingEntry {
            loyalty_transaction_id: accrual.clone(),
            points,
            until,
            confirmed_at: None,
            points_confirmed: None,
        });
    }
    format!(", pending until {until}")
}

pub struct AccrueLoyalty {
    pub base: Base,
    pub loyalty: Arc<dyn Loyalty>,
    /// For shipments that reinstate cancelled units (see `accrue_shipment`).
    pub erp: Arc<dyn Erp>,
    /// Points wait for the sale's return window where its channel has one.
    pub return_windows: ReturnWindows,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Accrued {
        member_id: MemberId,
        loyalty_transaction_id: ExternalRef,
        points: Points,
        eligible_minor: Amount,
        /// The platform holds the points pending until then (see `settlement`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_until: Option<Timestamp>,
    },
    Anonymous,
    Refused {
        message: String,
    },
}

/// A POS sale the ERP posted, or a shipped part of an order.
pub enum ToAccrue {
    Sale(Detail<ErpSalePosted>),
    Shipment(Detail<OrderShipped>),
}

impl Accepts for ToAccrue {
    fn accept(event: Event) -> Option<Self> {
        match event {
            Event::ErpSalePosted(d) => Some(Self::Sale(d)),
            Event::OrderShipped(d) => Some(Self::Shipment(d)),
            _ => None,
        }
    }

    fn metadata(&self) -> &Metadata {
        match self {
            Self::Sale(d) => &d.metadata,
            Self::Shipment(d) => &d.metadata,
        }
    }
}

impl Workflow for AccrueLoyalty {
    const NAME: &'static str = STEP;
    const READS_ITS_SAGA: bool = true;
    type Input = ToAccrue;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(input: &ToAccrue) -> IdempotencyKey {
        match input {
            ToAccrue::Sale(posted) => {
                IdempotencyKey::for_step(SagaId::of(&posted.data.transaction).as_str(), STEP)
            }
            ToAccrue::Shipment(shipped) => super::accrue_shipment::key(shipped),
        }
    }

    async fn run(&self, cx: &mut Cx<'_>, input: &ToAccrue) -> Result<(), Error> {
        let posted = match input {
            ToAccrue::Sale(posted) => posted,
            ToAccrue::Shipment(shipped) => {
                return super::accrue_shipment::accrue_shipment(self, cx, shipped).await;
            }
        };
        if matches!(posted.data.transaction, TransactionRef::Order { .. }) {
            // Orders earn per shipment, never when the ERP books them; the rules do not route these here.
            return Err(cx.unexpected());
        }
        let saga_id = SagaId::of(&posted.data.transaction);
        let saga = saga::load_existing(cx.sagas(), &saga_id).await?;
        cx.attempt_of(&saga);
        // Only what the saga records the ERP as having posted earns (post-sale-to-erp records the
        // document in the write that precedes this event).
        if saga.ledger.erp_document_id.as_ref() != Some(&posted.data.erp_document_id) {
            let what = format!(
                "ErpSalePosted of document {} for {saga_id}, which records no such posting",
                posted.data.erp_document_id
            );
            return Err(cx.inconsistent(&saga_id, what).await);
        }
        let Event::SaleCompleted(sale) = saga.origin_event()? else {
            return Err(Error::corrupt(
                format!("saga {saga_id}"),
                format!(
                    "{STEP} expects a SaleCompleted origin, found {}",
                    saga.origin_type
                ),
            ));
        };

        let run = cx
            .once(Fingerprint::of(&posted.data), || async {
                let Some(member_id) = &sale.data.member_id else {
                    return Ok(Outcome::Anonymous);
                };
                let request = AccrualRequest {
                    member_id: member_id.clone(),
                    transaction: posted.data.transaction.clone(),
                    currency: sale.data.currency,
                    eligible_minor: domain::eligible_net(&sale.data.lines, &sale.data.tenders),
                    occurred_at: sale.metadata.occurred_at,
                    pending_until: self
                        .return_windows
                        .pending_until(Some(sale.metadata.channel), sale.metadata.occurred_at),
                };
                Ok(match self.loyalty.accrue(&request, &cx.key).await.refusal()? {
                    Ok(a) => Outcome::Accrued {
                        member_id: member_id.clone(),
                        loyalty_transaction_id: a.loyalty_transaction_id,
                        points: a.points,
                        eligible_minor: request.eligible_minor,
                        pending_until: request.pending_until.filter(|_| a.pending),
                    },
                    Err(message) => Outcome::Refused { message },
                })
            })
            .await?;
        let accrued = cx
            .settle(
                saga,
                run,
                |s, accrued| match accrued {
                    Outcome::Accrued {
                        loyalty_transaction_id,
                        points,
                        eligible_minor,
                        pending_until,
                        ..
                    } => {
                        s.ledger.loyalty_transaction_id = Some(loyalty_transaction_id.clone());
                        s.ledger.points_accrued = Some(*points);
                        s.ledger.eligible_minor = Some(*eligible_minor);
                        s.status = SagaStatus::Completed;
                        let pending =
                            record_pending(&mut s.ledger, loyalty_transaction_id, *points, *pending_until);
                        (
                            StepOutcome::Done,
                            format!("{points} points ({loyalty_transaction_id}){pending}"),
                        )
                    }
                    Outcome::Anonymous => {
                        s.status = SagaStatus::Completed;
                        (StepOutcome::Skipped, "anonymous sale: no accrual".into())
                    }
                    Outcome::Refused { message } => {
                        // The sale stands in the ERP (goods left the store); only the points are missing,
                        // and the exception tells service teams to fix the member and replay.
                        s.status = SagaStatus::Failed;
                        (StepOutcome::Failed, format!("loyalty refused: {message}"))
                    }
                },
                |accrued, metrics| match accrued {
                    Outcome::Accrued { points, .. } => {
                        metrics.add("points_accrued", points.get().unsigned_abs(), None)
                    }
                    Outcome::Anonymous => metrics.add("accrual_skipped", 1, None),
                    Outcome::Refused { .. } => metrics.add(
                        "failed",
                        1,
                        Some(("reason", ReasonCode::LoyaltyRejected.as_str())),
                    ),
                },
            )
            .await?
            .result;

        match accrued {
            Outcome::Accrued {
                member_id,
                loyalty_transaction_id,
                points,
                eligible_minor,
                ..
            } => cx.emit(LoyaltyAccrued {
                member_id,
                transaction: posted.data.transaction.clone(),
                shipment_id: None,
                points,
                eligible_minor,
                currency: sale.data.currency,
                loyalty_transaction_id,
            }),
            Outcome::Anonymous => {}
            Outcome::Refused { message } => cx.exception(ReasonCode::LoyaltyRejected, message),
        }
        Ok(())
    }
}
