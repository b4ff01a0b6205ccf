//! Posts an accepted POS sale to the ERP, or creates the sales order of an ecommerce order (after its
//! redemption is committed, when it has one), once per transaction, and announces `ErpSalePosted`. When
//! the ERP refuses the document for good: a sale or an order without redemption fails (saga `failed`,
//! `WorkflowException`); an order whose points were already spent asks for compensation
//! (`CompensationRequested`), which gives them back and closes the saga as `compensated`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use retail_sync_contracts::Event;
use retail_sync_contracts::envelope::{Detail, Metadata};
use retail_sync_contracts::events::{
    CompensationRequested, ErpSalePosted, OrderPlaced, ReasonCode, RedemptionCommitted, SaleCompleted,
    TransactionRef,
};
use retail_sync_contracts::values::ExternalRef;

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::ports::{Erp, ErpSaleRequest};
use crate::saga::{self, SagaId, SagaStatus, StepOutcome};
use crate::steps::{Accepts, Base, Cx, Refusal, Workflow, is_origin};

pub const STEP: &str = "post-sale-to-erp";

pub struct PostSaleToErp {
    pub base: Base,
    pub erp: Arc<dyn Erp>,
}

/// What the step stores as its result: enough to publish again without asking the ERP again.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Posted {
    Posted { document_id: ExternalRef },
    Refused { message: String },
}

/// A POS sale; an order without redemption (straight from ingest); one with a redemption, once its
/// points are spent. The rules route each kind; the order itself is the saga's origin.
pub enum ToPost {
    Sale(Detail<SaleCompleted>),
    Order(Detail<OrderPlaced>),
    Committed(Detail<RedemptionCommitted>),
}

impl Accepts for ToPost {
    fn accept(event: Event) -> Option<Self> {
        match event {
            Event::SaleCompleted(d) => Some(Self::Sale(d)),
            Event::OrderPlaced(d) => Some(Self::Order(d)),
            Event::RedemptionCommitted(d) => Some(Self::Committed(d)),
            _ => None,
        }
    }

    fn metadata(&self) -> &Metadata {
        match self {
            Self::Sale(d) => &d.metadata,
            Self::Order(d) => &d.metadata,
            Self::Committed(d) => &d.metadata,
        }
    }
}

impl ToPost {
    fn transaction(&self) -> TransactionRef {
        match self {
            Self::Sale(sale) => TransactionRef::Receipt {
                store_id: sale.data.store_id.clone(),
                receipt_id: sale.data.receipt_id.clone(),
            },
            Self::Order(o) => TransactionRef::Order {
                order_id: o.data.order_id.clone(),
            },
            Self::Committed(r) => TransactionRef::Order {
                order_id: r.data.order_id.clone(),
            },
        }
    }
}

impl Workflow for PostSaleToErp {
    const NAME: &'static str = STEP;
    const READS_ITS_SAGA: bool = true;
    type Input = ToPost;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(input: &ToPost) -> IdempotencyKey {
        IdempotencyKey::for_step(SagaId::of(&input.transaction()).as_str(), STEP)
    }

    async fn run(&self, cx: &mut Cx<'_>, input: &ToPost) -> Result<(), Error> {
        let transaction = input.transaction();
        let saga_id = SagaId::of(&transaction);
        // The saga (which only ingest creates, from the validated event) is the truth: the message must
        // be the event it was started with, or, for an order with a redemption, announce the commit the
        // saga records. Anything else is never posted.
        let saga = saga::load_existing(cx.sagas(), &saga_id).await?;
        cx.attempt_of(&saga);
        let (request, fingerprint) = match input {
            ToPost::Sale(sale) => {
                let fingerprint = Fingerprint::of(&sale.data);
                fn sold(e: &Event) -> Option<&SaleCompleted> {
                    match e {
                        Event::SaleCompleted(s) => Some(&s.data),
                        _ => None,
                    }
                }
                if saga.origin_type != "SaleCompleted" || !is_origin(&saga, &sale.data, &fingerprint, sold)? {
                    let what = format!("SaleCompleted for {saga_id} differs from the sale the saga records");
                    return Err(cx.inconsistent(&saga_id, what).await);
                }
                let request = ErpSaleRequest {
                    transaction: transaction.clone(),
                    member_id: sale.data.member_id.clone(),
                    currency: sale.data.currency,
                    lines: sale.data.lines.clone(),
                    totals: sale.data.totals.clone(),
                    redemption: None,
                    occurred_at: sale.metadata.occurred_at,
                };
                (request, fingerprint)
            }
            ToPost::Order(_) | ToPost::Committed(_) => {
                let origin = saga.origin_event()?;
                let Event::OrderPlaced(order) = &origin else {
                    let what = format!("{saga_id} was started by {}, not an order", saga.origin_type);
                    return Err(cx.inconsistent(&saga_id, what).await);
                };
                let consistent = match input {
                    // An order with a redemption comes here once its points are spent, never straight.
                    ToPost::Order(_) if order.data.redemption.is_some() => return Err(cx.unexpected()),
                    ToPost::Order(placed) => placed.data == order.data,
                    ToPost::Committed(c) => saga
                        .ledger
                        .redemption
                        .as_ref()
                        .is_some_and(|r| r.hold_id == c.data.hold_id && r.points == c.data.points),
                    ToPost::Sale(_) => false,
                };
                if !consistent {
                    let what = match input {
                        ToPost::Committed(c) => format!(
                            "RedemptionCommitted of hold {} for {saga_id}, which records no such commit",
                            c.data.hold_id
                        ),
                        _ => format!("OrderPlaced for {saga_id} differs from the order the saga records"),
                    };
                    return Err(cx.inconsistent(&saga_id, what).await);
                }
                let request = ErpSaleRequest {
                    transaction: transaction.clone(),
                    member_id: order.data.member_id.clone(),
                    currency: order.data.currency,
                    lines: order.data.lines.clone(),
                    totals: order.data.totals.clone(),
                    redemption: order.data.redemption.clone(),
                    occurred_at: order.metadata.occurred_at,
                };
                (request, Fingerprint::of(&order.data))
            }
        };
        let compensate = request.redemption.is_some();

        let run = cx
            .once(fingerprint, || async {
                Ok(match self.erp.post_sale(&request, &cx.key).await.refusal()? {
                    Ok(doc) => Posted::Posted {
                        document_id: doc.document_id,
                    },
                    Err(message) => Posted::Refused { message },
                })
            })
            .await?;
        let posted = cx
            .settle(
                saga,
                run,
                |s, posted| match posted {
                    Posted::Posted { document_id } => {
                        s.ledger.erp_document_id = Some(document_id.clone());
                        (StepOutcome::Done, format!("ERP document {document_id}"))
                    }
                    Posted::Refused { message } => {
                        // With points spent, the saga stays running until compensation closes it.
                        if !compensate {
                            s.status = SagaStatus::Failed;
                        }
                        (StepOutcome::Failed, format!("ERP refused: {message}"))
                    }
                },
                |posted, metrics| match posted {
                    Posted::Posted { .. } => metrics.add("erp_posted", 1, None),
                    Posted::Refused { .. } => {
                        metrics.add("failed", 1, Some(("reason", ReasonCode::ErpRejected.as_str())))
                    }
                },
            )
            .await?
            .result;

        match posted {
            Posted::Posted { document_id } => cx.emit(ErpSalePosted {
                transaction,
                erp_document_id: document_id,
                currency: request.currency,
                totals: request.totals,
            }),
            Posted::Refused { message } if compensate => cx.emit(CompensationRequested {
                transaction,
                failed_step: STEP.to_owned(),
                reason: ReasonCode::ErpRejected,
                message: super::truncate(message, 2000),
            }),
            Posted::Refused { message } => cx.exception(ReasonCode::ErpRejected, message),
        }
        Ok(())
    }
}
