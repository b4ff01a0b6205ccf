//! The publisher port over EventBridge PutEvents. The bus's rules (from the template) route each event
//! to the queues of the steps that want it; publishing knows nothing of them.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::Value;

use retail_sync_core::Error;
use retail_sync_core::ports::{Outgoing, Publisher};

use crate::error::{AwsError, EntryFailure};
use crate::settings::AwsSettings;

/// PutEvents takes at most this many entries per call.
pub const PUT_EVENTS_BATCH: usize = 10;

fn unavailable(e: impl crate::error::Cause) -> Error {
    Error::unavailable("eventbridge", e.into_cause())
}

/// One event bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
    bus_name: String,
}

impl EventBus {
    /// The internal bus, which the steps publish to.
    pub fn new(client: Client, settings: &AwsSettings) -> Self {
        Self::named(client, settings.event_bus_name.clone())
    }

    /// The channel bus, when the settings name it (operator tools, local runs; never a function).
    pub fn channels(client: Client, settings: &AwsSettings) -> Option<Self> {
        let name = settings.channel_bus_name.clone()?;
        Some(Self::named(client, name))
    }

    fn named(client: Client, bus_name: String) -> Self {
        Self { client, bus_name }
    }

    fn entry(&self, source: &str, detail_type: &str, detail: String) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(source)
            .detail_type(detail_type)
            .detail(detail)
            .build()
    }

    /// One PutEvents call; one result per entry, in order (the event id, or why it was refused).
    /// PutEvents can refuse some entries of a batch and accept the rest, so results are per entry; a
    /// failed call fails every entry with the same (shared) cause.
    async fn put_batch(&self, entries: Vec<PutEventsRequestEntry>) -> Vec<Result<String, Error>> {
        let count = entries.len();
        match self.client.put_events().set_entries(Some(entries)).send().await {
            Ok(out) => (0..count)
                .map(|i| match out.entries().get(i) {
                    Some(r) if r.error_code().is_some() => {
                        Err(unavailable(EntryFailure::new(r.error_code(), r.error_message())))
                    }
                    Some(r) => Ok(r.event_id().unwrap_or_default().to_owned()),
                    None => Err(unavailable(AwsError::MissingField {
                        operation: "PutEvents",
                        field: "a result entry for every event",
                    })),
                })
                .collect(),
            Err(e) => {
                let cause = Arc::new(crate::error::SdkFailure::from(e));
                (0..count).map(|_| Err(unavailable(Arc::clone(&cause)))).collect()
            }
        }
    }

    async fn put_all(&self, entries: Vec<PutEventsRequestEntry>) -> Vec<Result<String, Error>> {
        let mut results = Vec::with_capacity(entries.len());
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let batch: Vec<_> = entries.by_ref().take(PUT_EVENTS_BATCH).collect();
            results.extend(self.put_batch(batch).await);
        }
        results
    }

    /// Puts raw events (`(source, detail-type, detail)`) on this bus: on the channel bus as a channel
    /// would, e.g. to feed sample events. Returns the event ids; fails if any entry was refused (after
    /// trying all of them).
    pub async fn put_raw_events(&self, entries: &[(String, String, Value)]) -> Result<Vec<String>, Error> {
        let requests = entries
            .iter()
            .map(|(source, detail_type, detail)| self.entry(source, detail_type, detail.to_string()));
        let results = self.put_all(requests.collect()).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            tracing::warn!(failed, total = results.len(), bus = %self.bus_name, "PutEvents refused entries");
        }
        // The first failure stands for all: a caller feeding events retries the lot (ingest is
        // idempotent), so which entries got through does not change what it does next.
        results.into_iter().collect()
    }
}

impl EventBus {
    /// Starts an EventBridge replay of `archive`'s events of `[from, to)` to the bus it archives; returns
    /// the replay's name. EventBridge replays a window whole (no filter by detail-type).
    pub async fn start_replay(
        &self,
        archive: &str,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
    ) -> Result<String, Error> {
        let described = self
            .client
            .describe_archive()
            .archive_name(archive)
            .send()
            .await
            .map_err(unavailable)?;
        let (Some(archive_arn), Some(bus_arn)) = (described.archive_arn(), described.event_source_arn())
        else {
            return Err(unavailable(AwsError::MissingField {
                operation: "DescribeArchive",
                field: "ArchiveArn and EventSourceArn",
            }));
        };
        let time =
            |t: jiff::Timestamp| aws_sdk_eventbridge::primitives::DateTime::from_millis(t.as_millisecond());
        let name = format!("retail-sync-{}", jiff::Timestamp::now().as_millisecond());
        let destination = aws_sdk_eventbridge::types::ReplayDestination::builder()
            .arn(bus_arn)
            .build()
            .map_err(unavailable)?;
        self.client
            .start_replay()
            .replay_name(&name)
            .event_source_arn(archive_arn)
            .event_start_time(time(from))
            .event_end_time(time(to))
            .destination(destination)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(name)
    }

    /// A replay's state (`STARTING`, `RUNNING`, `COMPLETED`, `FAILED`, …) and its reason, if any.
    pub async fn replay_state(&self, name: &str) -> Result<(String, Option<String>), Error> {
        let out = self
            .client
            .describe_replay()
            .replay_name(name)
            .send()
            .await
            .map_err(unavailable)?;
        Ok((
            out.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            out.state_reason().map(str::to_owned),
        ))
    }
}

#[async_trait]
impl Publisher for EventBus {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), Error>> {
        let entries = events.iter().map(|o| {
            let detail = serde_json::to_string(&o.event).expect("events serialize");
            self.entry(o.source, o.detail_type(), detail)
        });
        self.put_all(entries.collect())
            .await
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect()
    }
}
