//! Posts an accepted POS sale to the ERP, or creates the sales order of an ecommerce order (after its
//! redemption is committed, when it has one), once per transaction, and announces `ErpSalePosted`. When
//! the ERP refuses the document for good: a sale or an order without redemption fails (saga `failed`,
//! `WorkflowException`); an order whose points were already spent asks for compensation
//! (`CompensationRequested`), which gives them back and closes the saga as `compensated`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::Event;
use retail_sync_contracts::events::{CompensationRequested, ErpSalePosted, ReasonCode, TransactionRef};
use retail_sync_contracts::values::ExternalRef;

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy};
use crate::ports::{Clock, Erp, ErpSaleRequest, IdempotencyStore, Metrics, Outgoing, SagaStore};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{
    Claimed, Message, Step, claim, outgoing, parse_internal, stored_result, unexpected, workflow_exception,
};

pub const STEP: &str = "post-sale-to-erp";

pub struct PostSaleToErp {
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub sagas: Arc<dyn SagaStore>,
    pub erp: Arc<dyn Erp>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
    pub policy: IdempotencyPolicy,
}

/// What the step stores as its result: enough to publish again without asking the ERP again.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Posted {
    Posted { document_id: ExternalRef },
    Refused { message: String },
}

#[async_trait]
impl Step for PostSaleToErp {
    fn name(&self) -> &'static str {
        STEP
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let (_, event) = parse_internal(&message.body)?;
        let (transaction, request, fingerprint) = match &event {
            Event::SaleCompleted(sale) => {
                let transaction = TransactionRef::Receipt {
                    store_id: sale.data.store_id.clone(),
                    receipt_id: sale.data.receipt_id.clone(),
                };
                let request = ErpSaleRequest {
                    transaction: transaction.clone(),
                    currency: sale.data.currency,
                    lines: sale.data.lines.clone(),
                    totals: sale.data.totals.clone(),
                    redemption: None,
                    occurred_at: sale.metadata.occurred_at,
                };
                (transaction, request, Fingerprint::of(&sale.data))
            }
            // An order without redemption comes straight from ingest; one with a redemption comes once the
            // points are spent (the rules route each kind), and the order itself is the saga's origin.
            Event::OrderPlaced(_) | Event::RedemptionCommitted(_) => {
                let order_id = match &event {
                    Event::OrderPlaced(o) => o.data.order_id.clone(),
                    Event::RedemptionCommitted(r) => r.data.order_id.clone(),
                    _ => unreachable!("matched above"),
                };
                let transaction = TransactionRef::Order { order_id };
                let saga = saga::load_existing(&*self.sagas, &SagaId::of(&transaction)).await?;
                let Event::OrderPlaced(order) = saga.origin_event()? else {
                    return Err(unexpected(STEP, &event));
                };
                if order.data.redemption.is_some() && matches!(event, Event::OrderPlaced(_)) {
                    return Err(unexpected(STEP, &event));
                }
                let request = ErpSaleRequest {
                    transaction: transaction.clone(),
                    currency: order.data.currency,
                    lines: order.data.lines.clone(),
                    totals: order.data.totals.clone(),
                    redemption: order.data.redemption.clone(),
                    occurred_at: order.metadata.occurred_at,
                };
                (transaction, request, Fingerprint::of(&order.data))
            }
            _ => return Err(unexpected(STEP, &event)),
        };
        let cause = event.metadata();
        let compensate = request.redemption.is_some();
        let saga_id = SagaId::of(&transaction);
        let key = IdempotencyKey::for_step(saga_id.as_str(), STEP);
        let now = self.clock.now();

        let posted = match claim(&*self.idempotency, &self.policy, key.clone(), fingerprint, now).await? {
            Claimed::AlreadyDone(result) => stored_result(key.as_str(), result)?,
            Claimed::Proceed(claim) => {
                let posted = match self.erp.post_sale(&request, &key).await {
                    Ok(doc) => Posted::Posted {
                        document_id: doc.document_id,
                    },
                    Err(Error::Rejected { message, .. }) => Posted::Refused { message },
                    Err(e) => {
                        // Let the next delivery claim at once; if even this fails the lease runs out.
                        let _ = self.idempotency.release(&claim).await;
                        return Err(e);
                    }
                };
                let completion = self.policy.completed(
                    &claim,
                    serde_json::to_value(&posted).expect("results serialize"),
                    now,
                );
                saga::update(&*self.sagas, &saga_id, Some(&completion), |s| match &posted {
                    Posted::Posted { document_id } => {
                        s.ledger.erp_document_id = Some(document_id.clone());
                        s.record(
                            STEP,
                            StepOutcome::Done,
                            format!("ERP document {document_id}"),
                            now,
                        );
                    }
                    Posted::Refused { message } => {
                        // With points spent, the saga stays running until compensation closes it.
                        if !compensate {
                            s.status = SagaStatus::Failed;
                        }
                        s.record(STEP, StepOutcome::Failed, format!("ERP refused: {message}"), now);
                    }
                })
                .await?;
                match &posted {
                    Posted::Posted { .. } => self.metrics.add("erp_posted", 1, None),
                    Posted::Refused { .. } => {
                        self.metrics
                            .add("failed", 1, Some(("reason", ReasonCode::ErpRejected.as_str())))
                    }
                }
                posted
            }
        };

        Ok(vec![match posted {
            Posted::Posted { document_id } => outgoing(
                key.as_str(),
                cause,
                now,
                ErpSalePosted {
                    transaction,
                    erp_document_id: document_id,
                    currency: request.currency,
                    totals: request.totals,
                },
            ),
            Posted::Refused { message } if compensate => outgoing(
                key.as_str(),
                cause,
                now,
                CompensationRequested {
                    transaction,
                    failed_step: STEP.to_owned(),
                    reason: ReasonCode::ErpRejected,
                    message: super::truncate(message, 2000),
                },
            ),
            Posted::Refused { message } => workflow_exception(
                key.as_str(),
                STEP,
                ReasonCode::ErpRejected,
                message,
                cause,
                event.event_type().name(),
                now,
            ),
        }])
    }
}
