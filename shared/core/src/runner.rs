//! Drives the steps from their queues where no Lambda service does it: the embedded backend on a laptop
//! and an emulator in tests. It does what Lambda's SQS event source mapping does — receive up to the
//! function's batch size, invoke, delete what succeeded, leave the reported failures to reappear after
//! the visibility timeout (and reach the DLQ after maxReceiveCount) — and one thing more: it is patient
//! with messages that wait for another step while the run moves on ([`Patience`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// A local run's patience with messages that wait for another step (`not_yet`: a return before its
/// sale, a shipment before its order's posting, a merge before its members' enrolment). On AWS their
/// five receives span 85 minutes of backoff; a local run's backoff is seconds, and a run handed a whole
/// day at once can take longer than that to reach the sale a return waits for, far down its input. So
/// while the run moves on, a waiting message's receive is taken back ([`QueueConsumer::defer`]): it
/// counts toward the DLQ only when nothing was acknowledged since it last waited. Then the books do
/// not depend on how far apart a follow-up and what it waits for are in the input, nor on the
/// machine's speed; one that waits for what never comes still reaches its DLQ, five receives after
/// the run has nothing else to do.
#[derive(Default)]
pub struct Patience {
    /// Messages every consumer acknowledged (done or quarantined) so far.
    acknowledged: AtomicU64,
    /// For each message waiting now: `acknowledged` when it last failed waiting, and how many times
    /// it waited.
    waiting: Mutex<HashMap<String, (u64, u32)>>,
}

/// The waits of a message kept waiting grow as its receives' would, up to the fourth's (4 s in a
/// local run), then stay there: it is tried again soon after what it waits for is done, and a day of
/// waiting follow-ups costs a step run every few seconds each.
const PATIENT_WAITS: u32 = 4;

impl Patience {
    /// How long `message`, failed waiting again, is kept invisible without its receive counting:
    /// `None` unless the run acknowledged another message since it last waited.
    fn wait_again(&self, message: &str, backoff: &Backoff) -> Option<Duration> {
        let now = self.acknowledged.load(Ordering::Relaxed);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (then, waits) = waiting.entry(message.to_owned()).or_insert((now, 0));
        let moved_on = now > *then;
        *then = now;
        *waits += 1;
        moved_on.then(|| backoff.wait((*waits).min(PATIENT_WAITS), None))
    }

    /// Counts what a poll acknowledged, and forgets those that waited.
    fn acknowledged<'a>(&self, messages: impl Iterator<Item = &'a str>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for message in messages {
            waiting.remove(message);
            n += 1;
        }
        self.acknowledged.fetch_add(n, Ordering::Relaxed);
    }
}

impl Consumer {
    /// Receives one batch, runs it, acknowledges what is done. Messages reported failed stay invisible
    /// until their visibility timeout runs out, exactly as with a partial batch response; a message
    /// waiting for another step does not use up a receive while the run moves on ([`Patience`]).
    pub async fn poll(&self, queues: &dyn QueueConsumer, patience: &Patience) -> Result<PollOutcome, Error> {
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
        let (done_ids, done): (Vec<&str>, Vec<String>) = messages
            .iter()
            .zip(&receipts)
            .filter(|(m, _)| !batch.failed.contains(&m.id))
            .map(|(m, receipt)| (m.id.as_str(), receipt.clone()))
            .unzip();
        if !done.is_empty() {
            queues.delete(&self.queue, &done).await?;
            patience.acknowledged(done_ids.into_iter());
        }
        for (message, receipt) in messages.iter().zip(&receipts) {
            let Some(wait) = self.backoff.for_failed(&batch, message) else {
                continue;
            };
            let deferred = if batch.waiting.contains(&message.id) {
                patience.wait_again(&message.id, &self.backoff)
            } else {
                None
            };
            let hidden = match deferred {
                Some(wait) => queues.defer(&self.queue, receipt, wait).await,
                None => queues.change_visibility(&self.queue, receipt, wait).await,
            };
            // Best effort: if it fails, the queue's own visibility timeout applies.
            if let Err(e) = hidden {
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
    pub patience: Arc<Patience>,
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
                let patience = self.patience.clone();
                tokio::spawn(async move { consumer.poll(&*queues, &patience).await })
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

    /// A waiting message keeps its receive only when another message was acknowledged since it last
    /// waited; its waits grow as its receives' would, up to the fourth's.
    #[test]
    fn a_message_waits_again_without_a_receive_only_while_the_run_moves_on() {
        let b = Backoff {
            first: Duration::from_millis(500),
            factor: 2,
            max: Duration::from_secs(30),
        };
        let patience = Patience::default();
        assert_eq!(patience.wait_again("return", &b), None, "the first wait counts");
        assert_eq!(
            patience.wait_again("return", &b),
            None,
            "nothing acknowledged since"
        );
        let mut waits = Vec::new();
        for _ in 0..4 {
            patience.acknowledged(["sale"].into_iter());
            waits.push(patience.wait_again("return", &b).map(|w| w.as_millis()));
        }
        assert_eq!(waits, [Some(2_000), Some(4_000), Some(4_000), Some(4_000)]);
        // Acknowledged in the end: forgotten, and a wait of it later counts again.
        patience.acknowledged(["return"].into_iter());
        assert_eq!(patience.wait_again("return", &b), None);
    }
}
