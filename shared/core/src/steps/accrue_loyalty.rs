//! Accrues loyalty points for a sale the ERP has posted, once per transaction; the loyalty platform
//! computes the points from the eligible value. Anonymous sales are completed without accrual. Orders
//! accrue per shipment (`OrderShipped`, see `accrue_shipment`).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{LoyaltyAccrued, ReasonCode, TransactionRef};
use retail_sync_contracts::values::{Amount, ExternalRef, MemberId, Points};
use retail_sync_contracts::{Event, EventType};

use crate::domain;
use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy};
use crate::ports::{AccrualRequest, Clock, IdempotencyStore, Loyalty, Metrics, Outgoing, SagaStore};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{
    Claimed, Message, Step, claim, outgoing, parse_internal, stored_result, unexpected, workflow_exception,
};

pub const STEP: &str = "accrue-loyalty";

pub struct AccrueLoyalty {
    /// For shipments (see `accrue_shipment`).
    pub deps: crate::steps::Deps,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub sagas: Arc<dyn SagaStore>,
    pub loyalty: Arc<dyn Loyalty>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
    pub policy: IdempotencyPolicy,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Accrued {
        member_id: MemberId,
        loyalty_transaction_id: ExternalRef,
        points: Points,
        eligible_minor: Amount,
    },
    Anonymous,
    Refused {
        message: String,
    },
}

#[async_trait]
impl Step for AccrueLoyalty {
    fn name(&self) -> &'static str {
        STEP
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let (_, event) = parse_internal(&message.body)?;
        let posted = match &event {
            Event::ErpSalePosted(posted) => posted,
            Event::OrderShipped(shipped) => {
                return super::accrue_shipment::accrue_shipment(&self.deps, shipped).await;
            }
            _ => return Err(unexpected(STEP, &event)),
        };
        if matches!(posted.data.transaction, TransactionRef::Order { .. }) {
            // Orders earn per shipment, never when the ERP books them; the rules do not route these here.
            return Err(unexpected(STEP, &event));
        }
        let saga_id = SagaId::of(&posted.data.transaction);
        let key = IdempotencyKey::for_step(saga_id.as_str(), STEP);
        let now = self.clock.now();

        let saga = saga::load_existing(&*self.sagas, &saga_id).await?;
        let Event::SaleCompleted(sale) = saga.origin_event()? else {
            return Err(Error::Corrupt {
                what: format!("saga {saga_id}"),
                message: format!(
                    "{STEP} expects a SaleCompleted origin, found {}",
                    saga.origin_type
                ),
            });
        };

        let fingerprint = Fingerprint::of(&posted.data);
        let accrued = match claim(&*self.idempotency, &self.policy, key.clone(), fingerprint, now).await? {
            Claimed::AlreadyDone(result) => stored_result(key.as_str(), result)?,
            Claimed::Proceed(claim) => {
                let accrued = match &sale.data.member_id {
                    None => Outcome::Anonymous,
                    Some(member_id) => {
                        let request = AccrualRequest {
                            member_id: member_id.clone(),
                            transaction: posted.data.transaction.clone(),
                            currency: sale.data.currency,
                            eligible_minor: domain::eligible_net(&sale.data.lines, &sale.data.tenders),
                            occurred_at: sale.metadata.occurred_at,
                        };
                        match self.loyalty.accrue(&request, &key).await {
                            Ok(a) => Outcome::Accrued {
                                member_id: member_id.clone(),
                                loyalty_transaction_id: a.loyalty_transaction_id,
                                points: a.points,
                                eligible_minor: request.eligible_minor,
                            },
                            Err(Error::Rejected { message, .. }) => Outcome::Refused { message },
                            Err(e) => {
                                let _ = self.idempotency.release(&claim).await;
                                return Err(e);
                            }
                        }
                    }
                };
                let completion = self.policy.completed(
                    &claim,
                    serde_json::to_value(&accrued).expect("results serialize"),
                    now,
                );
                saga::update_from(&*self.sagas, saga, Some(&completion), |s| match &accrued {
                    Outcome::Accrued {
                        loyalty_transaction_id,
                        points,
                        eligible_minor,
                        ..
                    } => {
                        s.ledger.loyalty_transaction_id = Some(loyalty_transaction_id.clone());
                        s.ledger.points_accrued = Some(*points);
                        s.ledger.eligible_minor = Some(*eligible_minor);
                        s.status = SagaStatus::Completed;
                        s.record(
                            STEP,
                            StepOutcome::Done,
                            format!("{points} points ({loyalty_transaction_id})"),
                            now,
                        );
                    }
                    Outcome::Anonymous => {
                        s.status = SagaStatus::Completed;
                        s.record(STEP, StepOutcome::Skipped, "anonymous sale: no accrual", now);
                    }
                    Outcome::Refused { message } => {
                        // The sale stands in the ERP (goods left the store); only the points are missing,
                        // and the exception tells service teams to fix the member and replay.
                        s.status = SagaStatus::Failed;
                        s.record(
                            STEP,
                            StepOutcome::Failed,
                            format!("loyalty refused: {message}"),
                            now,
                        );
                    }
                })
                .await?;
                match &accrued {
                    Outcome::Accrued { points, .. } => {
                        self.metrics
                            .add("points_accrued", points.get().unsigned_abs(), None)
                    }
                    Outcome::Anonymous => self.metrics.add("accrual_skipped", 1, None),
                    Outcome::Refused { .. } => self.metrics.add(
                        "failed",
                        1,
                        Some(("reason", ReasonCode::LoyaltyRejected.as_str())),
                    ),
                }
                accrued
            }
        };

        Ok(match accrued {
            Outcome::Accrued {
                member_id,
                loyalty_transaction_id,
                points,
                eligible_minor,
            } => vec![outgoing(
                key.as_str(),
                &posted.metadata,
                now,
                LoyaltyAccrued {
                    member_id,
                    transaction: posted.data.transaction.clone(),
                    shipment_id: None,
                    points,
                    eligible_minor,
                    currency: sale.data.currency,
                    loyalty_transaction_id,
                },
            )],
            Outcome::Anonymous => Vec::new(),
            Outcome::Refused { message } => vec![workflow_exception(
                key.as_str(),
                STEP,
                ReasonCode::LoyaltyRejected,
                message,
                &posted.metadata,
                EventType::ErpSalePosted.name(),
                now,
            )],
        })
    }
}
