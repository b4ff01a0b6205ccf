//! Posts an accepted POS sale to the ERP, once per receipt, and announces `ErpSalePosted` — or, when the
//! ERP refuses the document for good, marks the saga failed and announces a `WorkflowException`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::envelope::{Detail, SOURCE_RETAIL_SYNC};
use retail_sync_contracts::events::{ErpSalePosted, ReasonCode, TransactionRef};
use retail_sync_contracts::values::ExternalRef;
use retail_sync_contracts::{Event, EventType};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy};
use crate::ports::{Clock, Erp, ErpSaleRequest, IdempotencyStore, Metrics, Outgoing, SagaStore};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{
    Claimed, Message, Step, claim, outbound_metadata, parse_internal, stored_result, unexpected,
    workflow_exception,
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
enum Posted {
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
        let Event::SaleCompleted(sale) = &event else {
            return Err(unexpected(STEP, &event));
        };
        let transaction = TransactionRef::Receipt {
            store_id: sale.data.store_id.clone(),
            receipt_id: sale.data.receipt_id.clone(),
        };
        let saga_id = SagaId::of(&transaction);
        let key = IdempotencyKey::for_step(saga_id.as_str(), STEP);
        let now = self.clock.now();

        let posted = match claim(
            &*self.idempotency,
            &self.policy,
            key.clone(),
            Fingerprint::of(&sale.data),
            now,
        )
        .await?
        {
            Claimed::AlreadyDone(result) => stored_result(key.as_str(), result)?,
            Claimed::Proceed(claim) => {
                let request = ErpSaleRequest {
                    transaction: transaction.clone(),
                    currency: sale.data.currency,
                    lines: sale.data.lines.clone(),
                    totals: sale.data.totals.clone(),
                    occurred_at: sale.metadata.occurred_at,
                };
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
                        s.status = SagaStatus::Failed;
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
            Posted::Posted { document_id } => Outgoing {
                source: SOURCE_RETAIL_SYNC,
                event: Event::ErpSalePosted(Detail {
                    metadata: outbound_metadata(
                        key.as_str(),
                        EventType::ErpSalePosted,
                        sale.metadata.correlation_id.clone(),
                        Some(sale.metadata.event_id.clone()),
                        now,
                    ),
                    data: ErpSalePosted {
                        transaction,
                        erp_document_id: document_id,
                        currency: sale.data.currency,
                        totals: sale.data.totals.clone(),
                    },
                }),
            },
            Posted::Refused { message } => workflow_exception(
                key.as_str(),
                STEP,
                ReasonCode::ErpRejected,
                message,
                &sale.metadata,
                EventType::SaleCompleted.name(),
                now,
            ),
        }])
    }
}
