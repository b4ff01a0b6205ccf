//! Runs a step over a batch of queue messages the way every backend needs it: handle each message,
//! quarantine permanent failures (and announce them), publish what succeeded in PutEvents-sized batches,
//! and report the ids of the messages that must be redelivered — the SQS partial batch response.
//!
//! The quarantine is the one place that lists everything that needs a person: a message refused for
//! good, and every `WorkflowException` a step announces while handling a message it did process (a sale
//! the ERP refused, an order compensated, points the platform could not take back). An entry's id is the
//! step and the refused event's id (or the exception's), so a duplicate delivery is the same entry.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::Instrument;

use retail_sync_contracts::envelope::{Channel, Detail, Metadata, SOURCE_RETAIL_SYNC};
use retail_sync_contracts::events::{ReasonCode, WorkflowException};
use retail_sync_contracts::values::{CorrelationId, EventId};
use retail_sync_contracts::{Event, EventType, Rejection};

use crate::error::Error;
use crate::ports::{
    Clock, Metrics, Outgoing, Publisher, QUARANTINE_BODY_LIMIT, QuarantineItem, QuarantineStore,
};
use crate::steps::{Message, ReadAhead, Step, derived_event_id, truncate};

/// PutEvents takes at most 10 entries a call.
pub const PUBLISH_BATCH: usize = 10;

pub struct BatchRunner {
    pub step: Arc<dyn Step>,
    pub publisher: Arc<dyn Publisher>,
    pub quarantine: Arc<dyn QuarantineStore>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
}

enum Handled {
    Done(Vec<Outgoing>),
    /// Kept for operators; the WorkflowException announcing it is to be published.
    Quarantined(Box<Outgoing>),
    /// Redeliver, after the wait the failure named, if any; `waiting`: the failure was waiting for
    /// another step (`not_yet`).
    Retry {
        wait: Option<std::time::Duration>,
        waiting: bool,
    },
}

impl Handled {
    /// A redelivery that names no wait and waits for nothing.
    const RETRY: Self = Self::Retry {
        wait: None,
        waiting: false,
    };
}

/// What happened to a batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchOutcome {
    /// Messages to leave on the queue for redelivery.
    pub failed: Vec<String>,
    /// Messages quarantined (acknowledged; kept for operators).
    pub quarantined: Vec<String>,
    /// For failed messages whose failure named a wait (a `Retry-After`, an open breaker, a claim held
    /// elsewhere): how long to keep them invisible at least.
    pub waits: std::collections::BTreeMap<String, std::time::Duration>,
    /// Of the failed messages, those waiting for another step (`not_yet`: a return before its sale, a
    /// shipment before its order's posting): a local run keeps them waiting while it moves on.
    pub waiting: Vec<String>,
    /// Events published.
    pub published: usize,
}

impl BatchRunner {
    pub async fn run(&self, messages: &[Message]) -> BatchOutcome {
        let step = self.step.name();
        let mut outcome = BatchOutcome::default();
        // (message id, events) for the messages whose handling succeeded.
        let mut pending: Vec<(String, Vec<Outgoing>)> = Vec::with_capacity(messages.len());
        let ahead = self.step.read_ahead(messages).await;
        for message in messages {
            // `correlation_id` is filled in by the step once it has parsed the event.
            let span = tracing::info_span!(
                "message",
                step,
                message_id = %message.id,
                receive_count = message.receive_count,
                correlation_id = tracing::field::Empty,
            );
            match self.handle_one(message, &ahead).instrument(span).await {
                Handled::Done(events) => pending.push((message.id.clone(), events)),
                Handled::Quarantined(exception) => {
                    outcome.quarantined.push(message.id.clone());
                    pending.push((message.id.clone(), vec![*exception]));
                }
                Handled::Retry { wait, waiting } => {
                    if let Some(wait) = wait {
                        outcome.waits.insert(message.id.clone(), wait);
                    }
                    if waiting {
                        outcome.waiting.push(message.id.clone());
                    }
                    outcome.failed.push(message.id.clone());
                }
            }
        }

        // Publish all events of the batch together; a message counts as done only if all its events
        // were accepted by the bus, otherwise it is redelivered and (being idempotent) publishes again.
        let flat: Vec<(usize, &Outgoing)> = pending
            .iter()
            .enumerate()
            .flat_map(|(i, (_, evs))| evs.iter().map(move |e| (i, e)))
            .collect();
        let mut ok = vec![true; pending.len()];
        for chunk in flat.chunks(PUBLISH_BATCH) {
            let events: Vec<Outgoing> = chunk.iter().map(|(_, e)| (*e).clone()).collect();
            let results = self.publisher.publish(&events).await;
            for ((i, _), result) in chunk.iter().zip(results) {
                match result {
                    Ok(()) => outcome.published += 1,
                    Err(e) => {
                        tracing::warn!(error = %crate::error::describe(&e), "publish failed; message will be redelivered");
                        ok[*i] = false;
                    }
                }
            }
        }
        for ((id, _), ok) in pending.into_iter().zip(ok) {
            if !ok {
                outcome.quarantined.retain(|q| q != &id);
                outcome.failed.push(id);
            }
        }
        outcome
    }

    async fn handle_one(&self, message: &Message, ahead: &ReadAhead) -> Handled {
        match self.step.handle_in(message, ahead).await {
            Ok(events) => match self.keep_exceptions(message, &events).await {
                Ok(()) => Handled::Done(events),
                Err(e) => {
                    tracing::error!(error = %crate::error::describe(&e), "could not quarantine; message will be redelivered");
                    Handled::RETRY
                }
            },
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %crate::error::describe(&e), class = e.class(), "retryable failure; message will be redelivered");
                self.metrics.add("retried", 1, Some(("class", e.class())));
                Handled::Retry {
                    wait: e.retry_after(),
                    waiting: matches!(e, Error::NotYet { .. }),
                }
            }
            Err(e) => match self.quarantine(message, e).await {
                Ok(exception) => Handled::Quarantined(Box::new(exception)),
                Err(e) => {
                    tracing::error!(error = %crate::error::describe(&e), "could not quarantine; message will be redelivered");
                    Handled::RETRY
                }
            },
        }
    }

    /// Keeps, for each WorkflowException among `events`, the message that caused it, under the
    /// exception's reason and message. The exception's id is derived from the step's key, so a
    /// redelivery writes the same entry.
    async fn keep_exceptions(&self, message: &Message, events: &[Outgoing]) -> Result<(), Error> {
        for event in events {
            let Event::WorkflowException(exception) = &event.event else {
                continue;
            };
            let data = &exception.data;
            let rejection = Rejection {
                reason: data.reason,
                message: data.message.clone(),
                findings: Vec::new(),
                detail_type: data.detail_type.clone(),
                event_id: data.source_event_id.clone(),
                correlation_id: Some(exception.metadata.correlation_id.to_string()),
            };
            let id = format!("{}:{}", self.step.name(), exception.metadata.event_id);
            self.keep(id, message, &rejection).await?;
        }
        Ok(())
    }

    /// Writes one quarantine entry unless it is there (the same id is the same entry, as first kept: an
    /// erasure's scrub of it stands) and counts it.
    async fn keep(&self, id: String, message: &Message, rejection: &Rejection) -> Result<(), Error> {
        let item = QuarantineItem {
            id,
            received_at: self.clock.now(),
            step: self.step.name().to_owned(),
            rejection: rejection.clone(),
            body: cut(&message.body, QUARANTINE_BODY_LIMIT),
            body_truncated: message.body.len() > QUARANTINE_BODY_LIMIT,
        };
        self.quarantine.keep(&item).await?;
        let reason = rejection.reason.as_str();
        tracing::warn!(reason, message = %rejection.message, "quarantined");
        self.metrics.add("quarantined", 1, Some(("reason", reason)));
        Ok(())
    }

    /// Keeps a permanently failed message for operators and builds the WorkflowException announcing it.
    async fn quarantine(&self, message: &Message, error: Error) -> Result<Outgoing, Error> {
        let rejection = match error {
            Error::BadInput(r) => *r,
            Error::Rejected {
                reason,
                message: text,
            } => identified(plain(reason, text), &message.body),
            other => identified(
                plain(ReasonCode::RetriesExhausted, other.to_string()),
                &message.body,
            ),
        };
        let now = self.clock.now();
        let step = self.step.name();
        // The refused event's id and the refusal name the entry, so a duplicate delivery (another
        // message with the same event, refused the same way) is the same entry, while two different
        // bodies under one event id stay two; input without a readable event id is named by its message.
        // Only a well-formed event id names an entry: bad input may carry anything there (64 KiB of it,
        // beyond a DynamoDB key).
        let event_id = rejection.event_id.as_deref().and_then(|e| EventId::parse(e).ok());
        let id = match event_id {
            Some(event_id) => {
                let mut digest = Sha256::new();
                digest.update(rejection.reason.as_str());
                digest.update(b"|");
                digest.update(&rejection.message);
                for finding in &rejection.findings {
                    digest.update(b"|");
                    digest.update(finding);
                }
                let digest = digest.finalize();
                format!("{step}:{event_id}:{}", crate::idempotency::hex(&digest[..4]))
            }
            None => message.id.clone(),
        };
        self.keep(id.clone(), message, &rejection).await?;

        let key = format!("quarantine:{id}");
        // The sender's correlation id if it was a valid one, else one naming the quarantine item.
        let correlation_id = rejection
            .correlation_id
            .as_deref()
            .and_then(|c| CorrelationId::parse(c).ok())
            .unwrap_or_else(|| {
                CorrelationId::parse(format!(
                    "quarantine-{}",
                    derived_event_id(&key, EventType::WorkflowException)
                ))
                .expect("valid id")
            });
        Ok(Outgoing {
            source: SOURCE_RETAIL_SYNC,
            event: Event::WorkflowException(Detail {
                metadata: Metadata {
                    event_id: derived_event_id(&key, EventType::WorkflowException),
                    schema_version: 1,
                    correlation_id,
                    causation_id: None,
                    occurred_at: now,
                    channel: Channel::RetailSync,
                },
                data: WorkflowException {
                    step: step.to_owned(),
                    reason: rejection.reason,
                    message: truncate(format!("quarantined as {id}: {}", rejection.message), 2000),
                    detail_type: rejection.detail_type,
                    source_event_id: rejection.event_id,
                },
            }),
        })
    }
}

fn plain(reason: ReasonCode, message: String) -> Rejection {
    Rejection {
        reason,
        message,
        findings: Vec::new(),
        detail_type: None,
        event_id: None,
        correlation_id: None,
    }
}

/// A refusal of a well-formed event (an over-return, a closed order) names the event it refused, so
/// operators can find it by event and correlation id; the body is probed leniently for them.
fn identified(mut rejection: Rejection, body: &str) -> Rejection {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "detail-type")]
        detail_type: Option<String>,
        detail: Option<ProbeDetail>,
    }
    #[derive(serde::Deserialize)]
    struct ProbeDetail {
        metadata: Option<ProbeMetadata>,
    }
    #[derive(serde::Deserialize)]
    struct ProbeMetadata {
        event_id: Option<String>,
        correlation_id: Option<String>,
    }
    if let Ok(probe) = serde_json::from_str::<Probe>(body) {
        let metadata = probe.detail.and_then(|d| d.metadata);
        rejection.detail_type = probe.detail_type;
        rejection.event_id = metadata.as_ref().and_then(|m| m.event_id.clone());
        rejection.correlation_id = metadata.and_then(|m| m.correlation_id);
    }
    rejection
}

/// Cuts at a char boundary at or below `max` bytes.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
