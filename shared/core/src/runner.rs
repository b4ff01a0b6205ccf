//! Drives the steps from their queues where no Lambda service does it: the embedded backend on a laptop
//! and an emulator in tests. It does what Lambda's SQS event source mapping does — receive up to the
//! function's batch size, invoke, delete what succeeded, leave the reported failures to reappear after
//! the visibility timeout (and reach the DLQ after maxReceiveCount) — and nothing more.

use std::sync::Arc;

use crate::batch::{BatchOutcome, BatchRunner};
use crate::error::Error;
use crate::ports::QueueConsumer;
use crate::steps::Message;

/// One function as the template wires it: the queue it consumes, its batch size and its step.
pub struct Consumer {
    pub queue: String,
    pub batch_size: usize,
    pub runner: BatchRunner,
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
        let received = queues.receive(&self.queue, self.batch_size).await?;
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
