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

/// Exponential backoff of failed messages by receive count: `first × factor^(receives − 1)`, at most
/// `max`; a longer wait the failure named (a `Retry-After`, an open breaker) wins. Waiting messages (a
/// return before its sale, a shipment before its order's posting) and messages held back by an outage then
/// spread their five receives over a long span instead of seconds before a DLQ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub factor: u32,
    pub max: Duration,
}

impl Backoff {
    pub fn wait(&self, receive_count: u32, asked: Option<Duration>) -> Duration {
        let mut backoff = self.first;
        for _ in 1..receive_count.min(32) {
            backoff = backoff.saturating_mul(self.factor.max(1));
            if backoff >= self.max {
                break;
            }
        }
        let backoff = backoff.min(self.max);
        asked
            .map_or(backoff, |a| a.max(backoff))
            .min(Duration::from_secs(43_200))
    }

    /// How long to keep `message` invisible after `batch`: `None` unless the batch reported it failed.
    pub fn for_failed(&self, batch: &BatchOutcome, message: &Message) -> Option<Duration> {
        batch
            .failed
            .contains(&message.id)
            .then(|| self.wait(message.receive_count, batch.waits.get(&message.id).copied()))
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PollOutcome {
    pub received: usize,
    pub batch: BatchOutcome,
    /// One entry per batch handed to a step (what Lambda bills as an invocation): how long the step
    /// took over it. A cost estimate prices these.
    pub invocations: Vec<Duration>,
    /// Messages received for the first time (receive count 1): each is one delivery into the queue
    /// (on AWS, one SQS request the bus rule's target makes).
    pub first_receives: usize,
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
        // The bodies are moved to the step, not copied: the receipts are all the acknowledging needs.
        let (messages, receipts): (Vec<Message>, Vec<String>) =
            received.into_iter().map(|r| (r.message, r.receipt)).unzip();
        let started = std::time::Instant::now();
        let batch = self.runner.run(&messages).await;
        let took = started.elapsed();
        let done: Vec<String> = messages
            .iter()
            .zip(&receipts)
            .filter(|(m, _)| !batch.failed.contains(&m.id))
            .map(|(_, receipt)| receipt.clone())
            .collect();
        if !done.is_empty() {
            queues.delete(&self.queue, &done).await?;
        }
        for (message, receipt) in messages.iter().zip(&receipts) {
            let Some(wait) = self.backoff.for_failed(&batch, message) else {
                continue;
            };
            // Best effort: if it fails, the queue's own visibility timeout applies.
            if let Err(e) = queues.change_visibility(&self.queue, receipt, wait).await {
                tracing::warn!(error = %crate::error::describe(&e), queue = %self.queue, "could not extend the visibility of a failed message");
            }
        }
        Ok(PollOutcome {
            received: messages.len(),
            batch,
            invocations: vec![took],
            first_receives: messages.iter().filter(|m| m.receive_count <= 1).count(),
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
            total.invocations.extend(poll.invocations);
            total.first_receives += poll.first_receives;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_by_the_factor_up_to_the_max_and_a_longer_asked_wait_wins() {
        let b = Backoff {
            first: Duration::from_secs(60),
            factor: 4,
            max: Duration::from_secs(7_200),
        };
        let waits: Vec<u64> = (1..=6).map(|n| b.wait(n, None).as_secs()).collect();
        assert_eq!(waits, vec![60, 240, 960, 3_840, 7_200, 7_200]);
        assert_eq!(b.wait(1, Some(Duration::from_secs(90))).as_secs(), 90);
        assert_eq!(b.wait(3, Some(Duration::from_secs(90))).as_secs(), 960);
        assert_eq!(
            b.wait(1, Some(Duration::from_secs(99_999))).as_secs(),
            43_200,
            "SQS's 12 hours"
        );
        assert_eq!(b.wait(u32::MAX, None).as_secs(), 7_200);
    }
}
