//! Drives the steps from their queues where no Lambda service does it: the embedded backend on a laptop
//! and an emulator in tests. It does what Lambda's SQS event source mapping does — receive up to the
//! function's batch size, invoke, delete what succeeded, leave the reported failures to reappear after
//! the visibility timeout (and reach the DLQ after maxReceiveCount) — and nothing more.

use std::sync::Arc;
use std::time::Duration;

use crate::batch::{BatchOutcome, BatchRunner};
use crate::error::Error;
use crate::guard::Downstream;
use crate::ports::QueueConsumer;
use crate::steps::Message;

/// One function as the template wires it: the queue it consumes, its batch size and its step.
pub struct Consumer {
    pub queue: String,
    pub batch_size: usize,
    pub runner: BatchRunner,
    /// How long a failed message stays invisible.
    pub backoff: Backoff,
    /// The system the step's effect goes to: while its breaker is open the queue is not polled, so
    /// its messages wait without being received (and without burning their receive count).
    pub downstream: Option<Arc<Downstream>>,
}

/// Exponential backoff of failed messages by receive count: `first × 2^(receives − 1)`, at most `max`;
/// a longer wait the failure named (a `Retry-After`, an open breaker) wins. Waiting messages (a return
/// before its sale, a shipment before its order's posting) then spread their receives over minutes
/// instead of seconds before a DLQ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn wait(&self, receive_count: u32, asked: Option<Duration>) -> Duration {
        let doublings = receive_count.saturating_sub(1).min(20);
        let backoff = self.first.saturating_mul(1 << doublings).min(self.max);
        asked
            .map_or(backoff, |a| a.max(backoff))
            .min(Duration::from_secs(43_200))
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PollOutcome {
    pub received: usize,
    pub batch: BatchOutcome,
}

impl Consumer {
    /// Receives one batch, runs it, acknowledges what is done. Messages reported failed stay invisible
    /// until their visibility timeout runs out, exactly as with a partial batch response.
    pub async fn poll(&self, queues: &dyn QueueConsumer) -> Result<PollOutcome, Error> {
        let mut batch_size = self.batch_size;
        if let Some(downstream) = &self.downstream {
            if downstream.wait().is_some() {
                return Ok(PollOutcome::default());
            }
            if downstream.probe_due() {
                batch_size = 1;
            }
        }
        let received = queues.receive(&self.queue, batch_size).await?;
        if received.is_empty() {
            return Ok(PollOutcome::default());
        }
        let messages: Vec<Message> = received.iter().map(|r| r.message.clone()).collect();
        let batch = self.runner.run(&messages).await;
        let done: Vec<String> = received
            .iter()
            .filter(|r| !batch.failed.contains(&r.message.id))
            .map(|r| r.receipt.clone())
            .collect();
        if !done.is_empty() {
            queues.delete(&self.queue, &done).await?;
        }
        for r in received.iter().filter(|r| batch.failed.contains(&r.message.id)) {
            let asked = batch.waits.get(&r.message.id).copied();
            let wait = self.backoff.wait(r.message.receive_count, asked);
            // Best effort: if it fails, the queue's own visibility timeout applies.
            if let Err(e) = queues.change_visibility(&self.queue, &r.receipt, wait).await {
                tracing::warn!(error = %e, queue = %self.queue, "could not extend the visibility of a failed message");
            }
        }
        Ok(PollOutcome {
            received: received.len(),
            batch,
        })
    }
}

/// Every consumer of a deployment.
pub struct LocalRunner {
    pub queues: Arc<dyn QueueConsumer>,
    pub consumers: Vec<Arc<Consumer>>,
}

impl LocalRunner {
    /// One round: every consumer polls once, all at the same time (as Lambda runs functions side by
    /// side), each on its own task so parsing and validation use every core. Returns the sum.
    pub async fn round(&self) -> Result<PollOutcome, Error> {
        let polls: Vec<_> = self
            .consumers
            .iter()
            .map(|consumer| {
                let (consumer, queues) = (consumer.clone(), self.queues.clone());
                tokio::spawn(async move { consumer.poll(&*queues).await })
            })
            .collect();
        let mut total = PollOutcome::default();
        for poll in polls {
            let poll = poll.await.map_err(|e| Error::unavailable("local runner", e))??;
            total.received += poll.received;
            total.batch.published += poll.batch.published;
            total.batch.failed.extend(poll.batch.failed);
            total.batch.quarantined.extend(poll.batch.quarantined);
        }
        Ok(total)
    }
}
