//! One SQS batch through a step, answered with the ids that must come back (partial batch response,
//! `ReportBatchItemFailures` in the template). Quarantined messages are not failures: they are kept and
//! acknowledged, so they are never retried forever.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use retail_sync_aws::SourceQueues;
use retail_sync_core::batch::BatchRunner;
use retail_sync_core::runner::Backoff;
use retail_sync_core::steps::Message;

use crate::emf::EmfMetrics;

pub struct Function {
    pub runner: BatchRunner,
    pub metrics: Arc<EmfMetrics>,
    /// Where failed messages get their backoff (ChangeMessageVisibility); `None` leaves them to the
    /// queue's visibility timeout.
    pub visibility: Option<(Arc<SourceQueues>, Backoff)>,
}

impl Function {
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        // Where each record came from (queue and receipt), for the backoff of those that fail.
        let sources: HashMap<String, (Option<String>, Option<String>)> = event
            .records
            .iter()
            .filter_map(|r| {
                let source = (r.event_source_arn.clone(), r.receipt_handle.clone());
                Some((r.message_id.clone()?, source))
            })
            .collect();
        let (messages, unusable) = messages(event.records);
        let outcome = self.runner.run(&messages).await;
        if let Some((queues, backoff)) = &self.visibility {
            for message in &messages {
                let Some(wait) = backoff.for_failed(&outcome, message) else {
                    continue;
                };
                let Some((Some(arn), Some(receipt))) = sources.get(&message.id) else {
                    continue;
                };
                // Best effort: without it the queue's visibility timeout applies.
                if let Err(e) = queues.change_visibility(arn, receipt, wait).await {
                    tracing::warn!(error = %retail_sync_core::error::describe(&e), message_id = %message.id, "could not extend the visibility of a failed message");
                }
            }
        }
        let mut response = SqsBatchResponse::default();
        // A record without an id or body cannot be handled or acknowledged individually; report it so
        // that it is redelivered and, if it stays broken, dead-lettered where operators see it.
        for id in outcome.failed.into_iter().chain(unusable) {
            response.add_failure(id);
        }
        tracing::info!(
            received = messages.len(),
            failed = response.batch_item_failures.len(),
            quarantined = outcome.quarantined.len(),
            published = outcome.published,
            "batch done"
        );
        self.metrics.flush();
        response
    }
}

/// The step's view of the records, and the ids of records that lack a body.
pub fn messages(records: Vec<SqsMessage>) -> (Vec<Message>, Vec<String>) {
    let mut messages = Vec::with_capacity(records.len());
    let mut unusable = Vec::new();
    for record in records {
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        match (record.message_id, record.body) {
            (Some(id), Some(body)) => messages.push(Message {
                id,
                body,
                receive_count,
            }),
            (Some(id), None) => unusable.push(id),
            (None, _) => tracing::error!("SQS record without a messageId; cannot be reported"),
        }
    }
    (messages, unusable)
}
