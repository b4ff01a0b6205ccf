//! What a local run needs from a backend beyond the ports the steps use: feeding input, watching queue
//! depths, and reading back everything for the report. Implemented by the embedded backend and by the
//! AWS backend (on an emulator such as moto, or a real account).

use async_trait::async_trait;
use serde_json::Value;

use retail_sync_aws::AwsBackend;
use retail_sync_core::Error;
use retail_sync_core::ports::{IdempotencyStore, Publisher, QuarantineStore, QueueConsumer, SagaStore};
use retail_sync_core::saga::Saga;
use retail_sync_embedded::Embedded;

use crate::report::DeadLetter;

#[async_trait]
pub trait Backend:
    IdempotencyStore + SagaStore + QuarantineStore + Publisher + QueueConsumer + Send + Sync + 'static
{
    /// PutEvents as a channel does. Returns per entry how many targets received it when the backend
    /// knows (`None`: the caller evaluates the rules itself).
    async fn put_channel_events(
        &self,
        entries: &[(String, String, Value)],
    ) -> Result<Option<Vec<usize>>, Error>;
    /// PutEvents on the internal bus with any content: what a principal inside the internal zone could
    /// send. For tests of the steps' guards only (on AWS the bus's policy admits the functions alone).
    async fn put_internal_events(&self, entries: &[(String, String, Value)]) -> Result<(), Error>;
    /// A raw body straight onto a queue (logical id).
    async fn send_raw(&self, queue: &str, body: &str) -> Result<(), Error>;
    /// (visible, in flight) of a queue.
    async fn depth(&self, queue: &str) -> Result<(u64, u64), Error>;
    async fn all_sagas(&self) -> Result<Vec<Saga>, Error>;
    async fn dead_letters(&self, dlq: &str) -> Result<Vec<DeadLetter>, Error>;
    /// [`Backend::dead_letters`] of each of `dlqs`, in their order (a report, a chaos run's tally).
    async fn dead_letters_of(&self, dlqs: &[&str]) -> Result<Vec<Vec<DeadLetter>>, Error> {
        let mut out = Vec::with_capacity(dlqs.len());
        for dlq in dlqs {
            out.push(self.dead_letters(dlq).await?);
        }
        Ok(out)
    }
    /// Moves every message of a DLQ back to its source queue; returns how many moved.
    async fn redrive(&self, dlq: &str, queue: &str) -> Result<usize, Error> {
        self.redrive_where(dlq, queue, &|_| true, usize::MAX).await
    }
    /// Moves the messages of a DLQ that `pick` selects, at most `limit`, back to its source queue, each
    /// sent before it is removed (an interruption duplicates, the steps absorb it; nothing is lost).
    async fn redrive_where(
        &self,
        dlq: &str,
        queue: &str,
        pick: &(dyn for<'m> Fn(&'m DeadLetter) -> bool + Sync),
        limit: usize,
    ) -> Result<usize, Error>;
    /// Replays the channel bus's archive for `[from, to)` (and, where the backend can filter, only
    /// `detail_type`). Returns what happened, in words: how many events, or the replay's name and state.
    async fn replay(
        &self,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        detail_type: Option<&str>,
    ) -> Result<String, Error>;
    /// Brackets the rounds of polls that share one commit, where the backend has group commits.
    fn begin_group(&self) -> Result<(), Error> {
        Ok(())
    }
    fn end_group(&self) -> Result<(), Error> {
        Ok(())
    }
    /// Keeps entries of the reference systems' journals with the run's state, where the backend has a
    /// state of its own on this machine (the embedded one); elsewhere the simulators live in memory.
    fn keep_journal(&self, _entries: &[(&str, String)]) -> Result<(), Error> {
        Ok(())
    }
    /// The journal of `system` kept so far.
    fn journal(&self, _system: &str) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    /// Rewrites the kept journal entries that contain `mentions` with `rewrite` (`None`: unchanged);
    /// how many changed.
    fn rewrite_journal(
        &self,
        _mentions: &str,
        _rewrite: &dyn Fn(&str) -> Option<String>,
    ) -> Result<usize, Error> {
        Ok(0)
    }
}

fn dead_letter_of_stored(m: retail_sync_embedded::StoredMessage) -> DeadLetter {
    DeadLetter {
        id: m.id,
        body: m.body,
        receive_count: m.receive_count,
        sent_at: m.sent_at,
    }
}

fn dead_letter_of_sqs(m: retail_sync_aws::QueueMessage) -> DeadLetter {
    DeadLetter {
        id: m.id,
        body: m.body,
        receive_count: m.receive_count,
        sent_at: m.sent_at,
    }
}

fn embedded_error(e: retail_sync_embedded::EmbeddedError) -> Error {
    Error::unavailable("embedded store", e)
}

#[async_trait]
impl Backend for Embedded {
    async fn put_channel_events(
        &self,
        entries: &[(String, String, Value)],
    ) -> Result<Option<Vec<usize>>, Error> {
        Ok(Some(
            self.put_events(entries)?
                .into_iter()
                .map(|(_, targets)| targets)
                .collect(),
        ))
    }
    async fn put_internal_events(&self, entries: &[(String, String, Value)]) -> Result<(), Error> {
        Embedded::put_internal_events(self, entries).map(|_| ())
    }
    async fn send_raw(&self, queue: &str, body: &str) -> Result<(), Error> {
        self.send(queue, body).map(|_| ()).map_err(embedded_error)
    }
    async fn depth(&self, queue: &str) -> Result<(u64, u64), Error> {
        Embedded::depth(self, queue).map_err(embedded_error)
    }
    async fn all_sagas(&self) -> Result<Vec<Saga>, Error> {
        self.sagas()
    }
    async fn dead_letters(&self, dlq: &str) -> Result<Vec<DeadLetter>, Error> {
        let messages = self.messages(dlq).map_err(embedded_error)?;
        Ok(messages.into_iter().map(dead_letter_of_stored).collect())
    }
    async fn redrive_where(
        &self,
        dlq: &str,
        queue: &str,
        pick: &(dyn for<'m> Fn(&'m DeadLetter) -> bool + Sync),
        limit: usize,
    ) -> Result<usize, Error> {
        let pick = |m: &retail_sync_embedded::StoredMessage| pick(&dead_letter_of_stored(m.clone()));
        Embedded::redrive_where(self, dlq, queue, &pick, limit).map_err(embedded_error)
    }
    async fn replay(
        &self,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        detail_type: Option<&str>,
    ) -> Result<String, Error> {
        let n = Embedded::replay(self, from, to, detail_type)?;
        Ok(format!("{n} archived events replayed on the channel bus"))
    }
    fn begin_group(&self) -> Result<(), Error> {
        Embedded::begin_group(self).map_err(embedded_error)
    }
    fn end_group(&self) -> Result<(), Error> {
        self.commit_group().map_err(embedded_error)
    }
    fn keep_journal(&self, entries: &[(&str, String)]) -> Result<(), Error> {
        self.append_journal(entries).map_err(embedded_error)
    }
    fn journal(&self, system: &str) -> Result<Vec<String>, Error> {
        Embedded::journal(self, system).map_err(embedded_error)
    }
    fn rewrite_journal(
        &self,
        mentions: &str,
        rewrite: &dyn Fn(&str) -> Option<String>,
    ) -> Result<usize, Error> {
        Embedded::rewrite_journal(self, mentions, rewrite).map_err(embedded_error)
    }
}

#[async_trait]
impl Backend for AwsBackend {
    async fn put_channel_events(
        &self,
        entries: &[(String, String, Value)],
    ) -> Result<Option<Vec<usize>>, Error> {
        AwsBackend::put_channel_events(self, entries).await.map(|_| None)
    }
    async fn put_internal_events(&self, entries: &[(String, String, Value)]) -> Result<(), Error> {
        AwsBackend::put_internal_events(self, entries).await.map(|_| ())
    }
    async fn send_raw(&self, queue: &str, body: &str) -> Result<(), Error> {
        AwsBackend::send_raw(self, queue, body).await.map(|_| ())
    }
    async fn depth(&self, queue: &str) -> Result<(u64, u64), Error> {
        self.queue_depth(queue).await
    }
    async fn all_sagas(&self) -> Result<Vec<Saga>, Error> {
        self.scan_sagas().await
    }
    async fn dead_letters(&self, dlq: &str) -> Result<Vec<DeadLetter>, Error> {
        let messages = self.dlq_messages(dlq, 1000).await?;
        Ok(messages.into_iter().map(dead_letter_of_sqs).collect())
    }
    /// All at once: each peek of an empty DLQ waits a second (a long poll, see `dlqs_messages`).
    async fn dead_letters_of(&self, dlqs: &[&str]) -> Result<Vec<Vec<DeadLetter>>, Error> {
        let peeked = self.dlqs_messages(dlqs, 1000).await?;
        Ok(peeked
            .into_iter()
            .map(|messages| messages.into_iter().map(dead_letter_of_sqs).collect())
            .collect())
    }
    async fn redrive_where(
        &self,
        dlq: &str,
        queue: &str,
        pick: &(dyn for<'m> Fn(&'m DeadLetter) -> bool + Sync),
        limit: usize,
    ) -> Result<usize, Error> {
        let pick = |m: &retail_sync_aws::QueueMessage| pick(&dead_letter_of_sqs(m.clone()));
        AwsBackend::redrive_where(self, dlq, queue, &pick, limit).await
    }
    async fn replay(
        &self,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        detail_type: Option<&str>,
    ) -> Result<String, Error> {
        if let Some(t) = detail_type {
            return Err(Error::unavailable(
                "eventbridge",
                format!("EventBridge replays a window whole; --detail-type {t} is for the embedded backend"),
            ));
        }
        let (name, state) = AwsBackend::replay(self, from, to, std::time::Duration::from_secs(60)).await?;
        Ok(format!("replay {name}: {state}"))
    }
}
