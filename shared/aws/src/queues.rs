//! The queue-consumer port over SQS, as the local runner drives steps on an emulator (on AWS, Lambda's
//! event source mapping does the receiving), and the operator's queue tools: depth, DLQ peek, redrive.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message as SqsMessage,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use jiff::Timestamp;
use serde::Serialize;

use retail_sync_core::Error;
use retail_sync_core::ports::{QueueConsumer, Received};
use retail_sync_core::steps::Message;

use crate::error::{AwsError, EntryFailure};
use crate::settings::AwsSettings;

/// SQS's most messages per receive, send batch and delete batch.
pub const SQS_BATCH: usize = 10;

/// Operator tools wait this long on an empty queue: a short poll samples only some SQS servers and can
/// answer "empty" for a queue with messages; a long poll asks them all.
const OPERATOR_WAIT_SECONDS: i32 = 1;

fn unavailable(e: impl crate::error::Cause) -> Error {
    Error::unavailable("sqs", e.into_cause())
}

/// A message as an operator sees it (DLQ inspection); the same shape as the embedded backend's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueMessage {
    pub id: String,
    pub queue: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: Timestamp,
}

fn system_attribute(m: &SqsMessage, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes
        .as_ref()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

fn receive_count(m: &SqsMessage) -> u32 {
    system_attribute(m, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

fn received(m: SqsMessage) -> Received {
    let receive_count = receive_count(&m);
    Received {
        message: Message {
            id: m.message_id.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
            receive_count,
        },
        receipt: m.receipt_handle.unwrap_or_default(),
    }
}

fn queue_message(queue: &str, m: SqsMessage) -> QueueMessage {
    let sent_at = system_attribute(&m, MessageSystemAttributeName::SentTimestamp)
        .and_then(|t| t.parse().ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH);
    QueueMessage {
        queue: queue.to_owned(),
        receive_count: receive_count(&m),
        sent_at,
        id: m.message_id.unwrap_or_default(),
        body: m.body.unwrap_or_default(),
    }
}

fn batch_failures(operation: &'static str, total: usize, failures: Vec<EntryFailure>) -> Result<(), Error> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(unavailable(AwsError::BatchEntries {
            operation,
            total,
            failures,
        }))
    }
}

/// The queues of one deployment, addressed by their logical ids in the template. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsQueues {
    client: Client,
    urls: BTreeMap<String, String>,
}

impl SqsQueues {
    pub fn new(client: Client, settings: &AwsSettings) -> Self {
        Self {
            client,
            urls: settings.queue_urls.clone(),
        }
    }

    pub fn url(&self, queue: &str) -> Result<&str, Error> {
        self.urls
            .get(queue)
            .map(String::as_str)
            .ok_or_else(|| unavailable(AwsError::UnknownQueue(queue.to_owned())))
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        visibility: Option<i32>,
        wait_seconds: i32,
    ) -> Result<Vec<SqsMessage>, Error> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, SQS_BATCH) as i32)
            .wait_time_seconds(wait_seconds)
            .set_visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.messages.unwrap_or_default())
    }

    async fn delete_from(&self, url: &str, receipts: &[String]) -> Result<(), Error> {
        let mut failures = Vec::new();
        for chunk in receipts.chunks(SQS_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(unavailable)?;
            failures.extend(
                out.failed()
                    .iter()
                    .map(|f| EntryFailure::new(Some(f.code()), f.message())),
            );
        }
        batch_failures("DeleteMessageBatch", receipts.len(), failures)
    }

    /// Sends a raw body, as a producer writing straight to the queue would. Returns the message id.
    pub async fn send_raw(&self, queue: &str, body: &str) -> Result<String, Error> {
        let out = self
            .client
            .send_message()
            .queue_url(self.url(queue)?)
            .message_body(body)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.message_id.unwrap_or_default())
    }

    /// (visible, in flight) messages, as SQS approximates them.
    pub async fn queue_depth(&self, queue: &str) -> Result<(u64, u64), Error> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(self.url(queue)?)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(unavailable)?;
        let count = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    /// Up to `max` messages of a queue (a DLQ, typically) without taking them: each receive uses a
    /// visibility timeout of 0, so they stay visible. SQS has no real peek: this raises their receive
    /// count (harmless on a DLQ, which has no redrive policy of its own) and, as receives sample, may
    /// miss some when the queue holds more than a few.
    pub async fn dlq_messages(&self, queue: &str, max: usize) -> Result<Vec<QueueMessage>, Error> {
        let url = self.url(queue)?;
        let mut seen = BTreeSet::new();
        let mut messages = Vec::new();
        while messages.len() < max {
            let batch = self
                .receive_from(url, max - messages.len(), Some(0), OPERATOR_WAIT_SECONDS)
                .await?;
            let fresh: Vec<_> = batch
                .into_iter()
                .filter(|m| seen.insert(m.message_id.clone().unwrap_or_default()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            messages.extend(fresh.into_iter().map(|m| queue_message(queue, m)));
        }
        Ok(messages)
    }

    /// [`SqsQueues::dlq_messages`] of each of `queues`, in their order, peeked at the same time: the peek
    /// of an empty queue is a long poll that waits out [`OPERATOR_WAIT_SECONDS`], so one after the other
    /// a deployment's dozen DLQs, most of them empty, took a dozen seconds to read.
    pub async fn dlqs_messages(&self, queues: &[&str], max: usize) -> Result<Vec<Vec<QueueMessage>>, Error> {
        let mut peeks = tokio::task::JoinSet::new();
        for (i, queue) in queues.iter().enumerate() {
            let (this, queue) = (self.clone(), (*queue).to_owned());
            peeks.spawn(async move { (i, this.dlq_messages(&queue, max).await) });
        }
        let mut out = vec![Vec::new(); queues.len()];
        while let Some(peeked) = peeks.join_next().await {
            match peeked {
                Ok((i, messages)) => out[i] = messages?,
                // A peek panicked: the same panic, as if it had run here.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down.
                Err(e) => return Err(Error::unavailable("sqs", e)),
            }
        }
        Ok(out)
    }

    /// Moves every message of `from` (a DLQ) to `to` as new messages (fresh receive count). Returns how
    /// many were moved.
    pub async fn redrive(&self, from: &str, to: &str) -> Result<usize, Error> {
        self.redrive_where(from, to, &|_| true, usize::MAX).await
    }

    /// Moves the messages of `from` that `pick` selects, at most `limit`, to `to` as new messages. Each
    /// batch is sent before it is deleted, so a crash in between duplicates rather than loses (the steps
    /// are idempotent); the messages not picked are made visible again at the end. Returns how many
    /// were moved.
    pub async fn redrive_where(
        &self,
        from: &str,
        to: &str,
        pick: &(dyn Fn(&QueueMessage) -> bool + Sync),
        limit: usize,
    ) -> Result<usize, Error> {
        let (from_url, to_url) = (self.url(from)?, self.url(to)?);
        let mut moved = 0;
        // Message id → its latest receipt handle, for what was looked at and not taken.
        let mut skipped: BTreeMap<String, String> = BTreeMap::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let result = async {
            while moved < limit {
                // The DLQ's own visibility timeout keeps a batch hidden while it is moved (or skipped),
                // so the next receive gets the next messages; one that comes round again means the
                // pass is complete.
                let batch = self
                    .receive_from(from_url, SQS_BATCH, None, OPERATOR_WAIT_SECONDS)
                    .await?;
                if batch.is_empty() {
                    break;
                }
                let mut chosen = Vec::new();
                let mut fresh = 0;
                for m in batch {
                    let receipt = m.receipt_handle.clone().unwrap_or_default();
                    let message = queue_message(from, m);
                    if seen.insert(message.id.clone()) {
                        fresh += 1;
                    }
                    if moved + chosen.len() < limit && pick(&message) {
                        skipped.remove(&message.id);
                        chosen.push((message.body, receipt));
                    } else {
                        skipped.insert(message.id, receipt);
                    }
                }
                if chosen.is_empty() {
                    if fresh == 0 {
                        break;
                    }
                    continue;
                }
                let entries = chosen
                    .iter()
                    .enumerate()
                    .map(|(i, (body, _))| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(body.clone())
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unavailable)?;
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(to_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(unavailable)?;
                let sent: Vec<String> = out
                    .successful()
                    .iter()
                    .filter_map(|s| s.id().parse::<usize>().ok())
                    .filter_map(|i| chosen.get(i).map(|(_, receipt)| receipt.clone()))
                    .collect();
                self.delete_from(from_url, &sent).await?;
                moved += sent.len();
                let failures = out
                    .failed()
                    .iter()
                    .map(|f| EntryFailure::new(Some(f.code()), f.message()))
                    .collect();
                batch_failures("SendMessageBatch", chosen.len(), failures)?;
            }
            Ok::<_, Error>(())
        }
        .await;
        // Whatever happened, what was looked at and not moved is visible again at once (a receipt that
        // went stale meanwhile only means the message is visible already).
        let skipped: Vec<String> = skipped.into_values().collect();
        if let Err(e) = self.release(from_url, &skipped).await {
            tracing::warn!(error = %retail_sync_core::error::describe(&e), "could not make every skipped message visible again");
        }
        result.map(|()| moved)
    }

    /// Makes received messages visible again at once.
    async fn release(&self, url: &str, receipts: &[String]) -> Result<(), Error> {
        let mut failures = Vec::new();
        for chunk in receipts.chunks(SQS_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(unavailable)?;
            failures.extend(
                out.failed()
                    .iter()
                    .map(|f| EntryFailure::new(Some(f.code()), f.message())),
            );
        }
        batch_failures("ChangeMessageVisibilityBatch", receipts.len(), failures)
    }
}

#[async_trait]
impl QueueConsumer for SqsQueues {
    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Received>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let messages = self.receive_from(self.url(queue)?, max, None, 0).await?;
        Ok(messages.into_iter().map(received).collect())
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), Error> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.delete_from(self.url(queue)?, receipts).await
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        change_visibility(&self.client, self.url(queue)?, receipt, wait).await
    }
}

/// The queue a Lambda function's SQS records came from, found by the records' `eventSourceARN`: where
/// the function extends the visibility of the messages it reports failed (its backoff, a
/// `Retry-After`). The URL is looked up once per queue and kept.
#[derive(Debug)]
pub struct SourceQueues {
    client: Client,
    urls: std::sync::Mutex<BTreeMap<String, String>>,
}

impl SourceQueues {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            urls: Default::default(),
        }
    }

    async fn url(&self, arn: &str) -> Result<String, Error> {
        if let Some(url) = self.urls.lock().unwrap_or_else(|p| p.into_inner()).get(arn) {
            return Ok(url.clone());
        }
        // arn:aws:sqs:<region>:<account>:<name>
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts.as_slice() else {
            return Err(unavailable(AwsError::UnknownQueue(arn.to_owned())));
        };
        let out = self
            .client
            .get_queue_url()
            .queue_name(*name)
            .queue_owner_aws_account_id(*account)
            .send()
            .await
            .map_err(unavailable)?;
        let url = out
            .queue_url()
            .ok_or_else(|| unavailable(AwsError::UnknownQueue(arn.to_owned())))?
            .to_owned();
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arn.to_owned(), url.clone());
        Ok(url)
    }

    /// ChangeMessageVisibility of one received message, in whole seconds (at most 12 hours).
    pub async fn change_visibility(&self, arn: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        let url = self.url(arn).await?;
        change_visibility(&self.client, &url, receipt, wait).await
    }
}

/// ChangeMessageVisibility in whole seconds (rounded up), at most SQS's 12 hours.
async fn change_visibility(client: &Client, url: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
    let seconds = wait.as_secs_f64().ceil().min(43_200.0) as i32;
    client
        .change_message_visibility()
        .queue_url(url)
        .receipt_handle(receipt)
        .visibility_timeout(seconds)
        .send()
        .await
        .map_err(unavailable)?;
    Ok(())
}
