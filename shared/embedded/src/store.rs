//! One SQLite file holds every queue, the state tables and the bus archive. WAL journaling lets the
//! operator CLI read it while a run writes; `synchronous=NORMAL` keeps commits durable across a crash
//! of the process (the case a laptop run meets) without an fsync per message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use retail_sync_contracts::values::CorrelationId;
use retail_sync_core::Error;
use retail_sync_core::idempotency::{IdempotencyKey, IdempotencyRecord, RecordState};
use retail_sync_core::ports::{
    Clock, IdempotencyStore, Outgoing, Publisher, QuarantineItem, QuarantineStore, QueueConsumer, Received,
    SagaStore,
};
use retail_sync_core::saga::{Saga, SagaId};
use retail_sync_core::steps::Message;

use retail_sync_topology::{CHANNEL_BUS, INTERNAL_BUS, Lookups, Topology};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("embedded store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("embedded store: cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("no queue {0} in the template")]
    UnknownQueue(String),
    #[error(transparent)]
    State(Error),
    #[error(
        "embedded store: the group's transaction was rolled back before its commit; nothing of it was kept, \
         and a run resumes from the last commit"
    )]
    GroupRolledBack,
}

// cache_size: reads come through mmap, so the page cache mostly holds written pages, and a big one costs
// time: a B-tree rebalance parks a page at the lock-byte page number (262145) for a moment, which leaves
// the cache's high-water key there, and then every commit (one per runner round) walks the whole page
// hash to drop pages past the end of the file. At 64 MiB that walk was ~10% of a bench run; at 16 MiB
// it is ~2%, with no more page misses.
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA cache_size = -16384;
PRAGMA mmap_size = 268435456;
PRAGMA temp_store = MEMORY;
PRAGMA wal_autocheckpoint = 10000;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages(queue, visible_at, seq);
CREATE TABLE IF NOT EXISTS idempotency (pk TEXT PRIMARY KEY, item TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sagas (
    pk TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    item TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sagas_by_correlation ON sagas(correlation_id);
CREATE TABLE IF NOT EXISTS quarantine (id TEXT PRIMARY KEY, received_at INTEGER NOT NULL, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS simulator_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    system TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS archive (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    time INTEGER NOT NULL,
    source TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    event TEXT NOT NULL
);
";

/// An EventBridge event as the embedded bus delivers and archives it, serialized from borrowed parts
/// (no `Value` tree of the detail is built for it).
#[derive(Serialize)]
struct Envelope<'a, D: Serialize + ?Sized> {
    version: &'a str,
    id: &'a str,
    #[serde(rename = "detail-type")]
    detail_type: &'a str,
    source: &'a str,
    account: &'a str,
    time: &'a str,
    region: &'a str,
    resources: &'a [String],
    detail: &'a D,
}

/// One event routed by [`Embedded::route`], ready to be written: its envelope id and text, and the
/// message id and queue of each delivery.
struct Routed<'e, 't> {
    id: String,
    source: &'e str,
    detail_type: &'e str,
    body: String,
    deliveries: Vec<(String, &'t str)>,
    /// An archive of its bus keeps it (its pattern matches).
    archived: bool,
}

/// A message as stored, for operators (DLQ inspection, reports).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredMessage {
    pub id: String,
    pub queue: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: Timestamp,
}

/// The embedded backend. Cheap to share behind an `Arc`; every operation holds one mutex briefly (no
/// await while it is held): outside a group it is one short SQLite transaction, inside one its writes are
/// kept in memory until the group commits (see [`begin_group`](Self::begin_group)).
pub struct Embedded {
    state: Mutex<State>,
    topology: Arc<Topology>,
    /// What the rules' and archives' patterns look at: an event is matched against its text cut down
    /// to that ([`Lookups::view`]), never against a tree of the whole event.
    lookups: Lookups,
    clock: Arc<dyn Clock>,
    /// Replaces every queue's visibility timeout. Local runs shorten the template's minutes to
    /// seconds so a retry is seen in the same sitting; the semantics stay the same.
    visibility_override: Option<Duration>,
}

/// The connection, and the writes of the group in progress that have not reached it yet.
struct State {
    conn: Connection,
    /// Open while a group is (see [`Embedded::begin_group`]).
    pending: Option<Pending>,
}

/// A group's saga, idempotency and queue writes, kept in memory and written to the tables once, when the
/// group commits ([`Pending::flush`]). Within a group a saga is created, read and saved by step after step,
/// a claim is replaced by its completion, and a message is sent, received and deleted by the next step:
/// each was a statement (a save two, in a savepoint), all under the store's lock. Kept here, a saga or a
/// record costs one write per group, and a message sent and deleted within the group none. The steps' reads,
/// receives and conditional writes look here first, so the store answers them exactly as if each write had
/// been made at once; the reads that scan a table (an operator's, a report's) write the pending ones to it
/// first. What reaches the disk is what a group commits, as before: all of the group or nothing.
#[derive(Default)]
struct Pending {
    /// Messages sent in this group, per queue, by `(visible_at, seq)`: the table's receive order.
    queues: HashMap<String, BTreeMap<(i64, i64), Queued>>,
    /// The queue and `visible_at` of each of them, by seq.
    placed: HashMap<i64, (String, i64)>,
    /// The seq the next message sent gets, read from the table when the first is sent: past every seq
    /// the table holds or gave out (AUTOINCREMENT's own rule). A receipt names its message by seq, so it
    /// stays good when the message is written to the table.
    next_seq: Option<i64>,
    /// The sagas written in this group, as values: a step's load clones one instead of parsing its text,
    /// and only the last save's state is serialized, once, when the group is written ([`Pending::flush`]).
    sagas: HashMap<String, Arc<Saga>>,
    /// The sagas created in this group, in order: they are inserted in that order, as they would have
    /// been one by one.
    created: Vec<String>,
    /// `None`: the record was deleted (a released claim).
    idempotency: HashMap<String, Option<(IdempotencyRecord, String)>>,
}

struct Queued {
    id: String,
    body: String,
    sent_at: i64,
    receive_count: u32,
    receipt: Option<String>,
}

/// A message a receive may take, from the table or from the group's pending messages.
struct Candidate {
    visible_at: i64,
    seq: i64,
    id: String,
    body: String,
    receive_count: u32,
    pending: bool,
}

impl State {
    /// Runs `f` over the store as the steps see it: `f` reads through `Pending` and writes into it. In a
    /// group the writes stay there until the group commits; outside one they are written at once, in one
    /// transaction with `f`'s reads. `f` checks before it writes, so an error leaves nothing written.
    fn op<T>(&mut self, f: impl FnOnce(&Connection, &mut Pending) -> Result<T, Error>) -> Result<T, Error> {
        let Self { conn, pending } = self;
        match pending {
            Some(pending) => f(conn, pending),
            None => savepoint(conn, |conn| {
                let mut now = Pending::default();
                let out = f(conn, &mut now)?;
                now.flush(conn).map_err(unavailable)?;
                Ok(out)
            }),
        }
    }
}

impl Pending {
    /// A saga: as written in this group, else its text as in the table.
    fn saga(&self, conn: &Connection, pk: &str) -> Result<Option<Loaded>, Error> {
        match self.sagas.get(pk) {
            Some(saga) => Ok(Some(Loaded::Kept(Arc::clone(saga)))),
            None => Ok(load_saga(conn, "SELECT item FROM sagas WHERE pk = ?1", pk)?.map(Loaded::Text)),
        }
    }

    fn saga_version(&self, conn: &Connection, pk: &str) -> Result<Option<i64>, Error> {
        match self.sagas.get(pk) {
            Some(saga) => Ok(Some(saga.version as i64)),
            None => conn
                .prepare_cached("SELECT version FROM sagas WHERE pk = ?1")
                .and_then(|mut s| s.query_row(params![pk], |r| r.get(0)).optional())
                .map_err(unavailable),
        }
    }

    fn put_saga(&mut self, saga: Arc<Saga>, created: bool) {
        let pk = saga.id.as_str().to_owned();
        if created {
            self.created.push(pk.clone());
        }
        self.sagas.insert(pk, saga);
    }

    fn idempotency(&self, conn: &Connection, key: &str) -> Result<Option<IdempotencyRecord>, Error> {
        match self.idempotency.get(key) {
            Some(kept) => Ok(kept.as_ref().map(|(record, _)| record.clone())),
            None => load_idempotency(conn, key),
        }
    }

    fn put_idempotency(&mut self, record: &IdempotencyRecord, item: String) {
        self.idempotency
            .insert(record.key.as_str().to_owned(), Some((record.clone(), item)));
    }

    /// Reserves the seqs of the messages this group sends (see `next_seq`).
    fn seqs(&mut self, conn: &Connection) -> Result<(), Error> {
        if self.next_seq.is_none() {
            let last: i64 = conn
                .prepare_cached(
                    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
                                COALESCE((SELECT MAX(seq) FROM messages), 0))",
                )
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(unavailable)?;
            self.next_seq = Some(last + 1);
        }
        Ok(())
    }

    /// Sends a message (after [`seqs`](Self::seqs)).
    fn send(&mut self, queue: &str, id: String, body: String, at: i64) {
        let seq = self.next_seq.unwrap_or(1);
        self.next_seq = Some(seq + 1);
        let message = Queued {
            id,
            body,
            sent_at: at,
            receive_count: 0,
            receipt: None,
        };
        self.queues
            .entry(queue.to_owned())
            .or_default()
            .insert((at, seq), message);
        self.placed.insert(seq, (queue.to_owned(), at));
    }

    /// Up to `max` messages of `queue` visible at `now`, in receive order.
    fn visible(&self, queue: &str, now: i64, max: usize) -> Vec<Candidate> {
        let Some(messages) = self.queues.get(queue) else {
            return Vec::new();
        };
        messages
            .range(..=(now, i64::MAX))
            .take(max)
            .map(|(&(visible_at, seq), m)| Candidate {
                visible_at,
                seq,
                id: m.id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
                pending: true,
            })
            .collect()
    }

    /// Moves a pending message: to `queue` (its own or a DLQ), visible at `visible_at`, with `receipt`,
    /// its receive count moved by `receives` (1 for a receive, −1 for a receive taken back).
    fn place(&mut self, seq: i64, queue: &str, visible_at: i64, receipt: Option<String>, receives: i32) {
        let Some(mut message) = self.take(seq) else {
            return;
        };
        message.receipt = receipt;
        message.receive_count = message.receive_count.saturating_add_signed(receives);
        self.queues
            .entry(queue.to_owned())
            .or_default()
            .insert((visible_at, seq), message);
        self.placed.insert(seq, (queue.to_owned(), visible_at));
    }

    fn take(&mut self, seq: i64) -> Option<Queued> {
        let (queue, visible_at) = self.placed.remove(&seq)?;
        self.queues.get_mut(&queue)?.remove(&(visible_at, seq))
    }

    /// The pending message a receipt of `queue` names, if the receipt is still its latest.
    fn receipted(&self, queue: &str, seq: i64, receipt: &str) -> bool {
        self.placed.get(&seq).is_some_and(|(q, visible_at)| {
            q == queue
                && self.queues[q]
                    .get(&(*visible_at, seq))
                    .is_some_and(|m| m.receipt.as_deref() == Some(receipt))
        })
    }

    /// (visible, in flight) pending messages of a queue.
    fn depth(&self, queue: &str, now: i64) -> (u64, u64) {
        let Some(messages) = self.queues.get(queue) else {
            return (0, 0);
        };
        let visible = messages.range(..=(now, i64::MAX)).count();
        (visible as u64, (messages.len() - visible) as u64)
    }

    /// Writes everything kept to the tables, in the group's transaction, and forgets it. Written again
    /// after a failure part way, it writes the same rows (every write replaces by key).
    fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO sagas (pk, correlation_id, version, status, item, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (pk) DO UPDATE SET version = excluded.version, status = excluded.status,
                 item = excluded.item, updated_at = excluded.updated_at",
        )?;
        let created: BTreeSet<&str> = self.created.iter().map(String::as_str).collect();
        let new = self.created.iter().filter_map(|pk| self.sagas.get_key_value(pk));
        let saved = self.sagas.iter().filter(|(pk, _)| !created.contains(pk.as_str()));
        for (pk, saga) in new.chain(saved) {
            upsert.execute(params![
                pk,
                saga.correlation_id.as_str(),
                saga.version as i64,
                saga.status.as_str(),
                serde_json::to_string(&**saga).expect("sagas serialize"),
                ms(saga.updated_at)
            ])?;
        }
        for (pk, record) in &self.idempotency {
            match record {
                Some((record, item)) => store_idempotency(conn, record, item)?,
                None => delete_idempotency(conn, pk)?,
            }
        }
        let mut insert = conn.prepare_cached(
            "INSERT OR REPLACE INTO messages (seq, id, queue, body, sent_at, visible_at, receive_count, receipt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut messages: Vec<_> = self
            .queues
            .iter()
            .flat_map(|(queue, messages)| messages.iter().map(move |(key, m)| (key, queue, m)))
            .collect();
        messages.sort_by_key(|((_, seq), _, _)| *seq);
        for (&(visible_at, seq), queue, m) in messages {
            insert.execute(params![
                seq,
                m.id,
                queue,
                m.body,
                m.sent_at,
                visible_at,
                m.receive_count,
                m.receipt
            ])?;
        }
        *self = Self {
            next_seq: self.next_seq,
            ..Self::default()
        };
        Ok(())
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn from_ms(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn unavailable(e: impl Into<retail_sync_core::BoxError>) -> Error {
    Error::unavailable("embedded store", e)
}

fn corrupt(what: String, e: serde_json::Error) -> Error {
    Error::corrupt(what, e)
}

impl Embedded {
    pub fn open(path: &Path, topology: Topology, clock: Arc<dyn Clock>) -> Result<Self, EmbeddedError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| EmbeddedError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // Every statement of the hot path stays prepared: rusqlite's default cache (16) is smaller than
        // the set a run cycles through, and an evicted statement is parsed again when next used.
        conn.set_prepared_statement_cache_capacity(64);
        // The query planner's stability guarantee: plans never depend on the values bound. Without it,
        // SQLite marks a statement whose plan looked at a bound value (the receive's ORDER BY beside
        // `queue = ?1`) to be prepared again when its bindings are cleared, which rusqlite does each
        // time a cached statement goes back to the cache: every receive parsed and planned its SELECT
        // anew, a twentieth of a bench run. The plans are the same (no table here has statistics).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // The archives' patterns too: an event is archived only when one of them matches it.
        let lookups = Lookups::of(
            topology
                .rules
                .iter()
                .map(|r| &r.pattern)
                .chain(topology.archives.iter().map(|a| &a.pattern)),
        );
        Ok(Self {
            state: Mutex::new(State { conn, pending: None }),
            topology: Arc::new(topology),
            lookups,
            clock,
            visibility_override: None,
        })
    }

    pub fn with_visibility_timeout(mut self, visibility: Duration) -> Self {
        self.visibility_override = Some(visibility);
        self
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store for a read that scans a table: the group's pending writes (see [`Pending`]) are written
    /// to the tables first, in the group's transaction.
    fn flushed(&self) -> rusqlite::Result<MutexGuard<'_, State>> {
        let mut state = self.state();
        let State { conn, pending } = &mut *state;
        if let Some(pending) = pending {
            pending.flush(conn)?;
        }
        Ok(state)
    }

    /// Starts a group commit: until [`commit_group`](Self::commit_group), every operation is still atomic
    /// on its own but reaches the disk with the others in one commit. The local runner groups each
    /// round of polls; a crash inside a group forgets the whole round, which is safe because nothing in
    /// it was acknowledged: the messages reappear, the steps' claims are gone, and the ERP and loyalty
    /// calls made in it are repeated with the same idempotency keys, which those systems must honour
    /// (the system API contract). Without groups every operation is a commit of its own. Within a group
    /// the steps' saga, idempotency and queue writes are kept in memory and written when it commits
    /// (`Pending`).
    pub fn begin_group(&self) -> Result<(), EmbeddedError> {
        let mut state = self.state();
        if state.conn.is_autocommit() {
            state.conn.execute_batch("BEGIN IMMEDIATE")?;
            state.pending = Some(Pending::default());
        }
        Ok(())
    }

    /// Writes the group's pending writes and commits. If that fails, the whole group is rolled back, as a
    /// crash would have left it: its writes are no longer held anywhere to be written again.
    pub fn commit_group(&self) -> Result<(), EmbeddedError> {
        let mut state = self.state();
        let State { conn, pending } = &mut *state;
        let Some(mut pending) = pending.take() else {
            return Ok(());
        };
        if conn.is_autocommit() {
            // SQLite ended the transaction itself (it rolls back on some I/O errors): the group's writes
            // made to the tables are gone, so the ones kept here must not be written alone.
            return Err(EmbeddedError::GroupRolledBack);
        }
        let committed = pending.flush(conn).and_then(|()| conn.execute_batch("COMMIT"));
        if committed.is_err() && !conn.is_autocommit() {
            // Best effort: if even the rollback fails, the connection's next statement reports it.
            let _ = conn.execute_batch("ROLLBACK");
        }
        Ok(committed?)
    }

    fn visibility(&self, queue: &str) -> Duration {
        self.visibility_override
            .or_else(|| self.topology.queues.get(queue).map(|q| q.visibility_timeout))
            .unwrap_or(Duration::from_secs(30))
    }

    /// Sends a raw body to a queue, as a producer writing straight to SQS would.
    pub fn send(&self, queue: &str, body: &str) -> Result<String, EmbeddedError> {
        if !self.topology.queues.contains_key(queue) {
            return Err(EmbeddedError::UnknownQueue(queue.to_owned()));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = ms(self.clock.now());
        self.state()
            .op(|conn, pending| {
                pending.seqs(conn)?;
                pending.send(queue, id.clone(), body.to_owned(), now);
                Ok(())
            })
            .map_err(EmbeddedError::State)?;
        Ok(id)
    }

    /// Puts events on the channel bus as channels' PutEvents do: each is stamped with an id and time,
    /// archived when the bus's archive pattern matches it (as EventBridge archives), and copied to the
    /// target queue of every rule of that bus whose pattern it matches, in one transaction.
    /// Returns, per entry, the envelope's id and how many queues it was delivered to (0: no rule
    /// matched, which EventBridge does not report either — callers that feed input make it visible).
    pub fn put_events(&self, entries: &[(String, String, Value)]) -> Result<Vec<(String, usize)>, Error> {
        self.put_on(CHANNEL_BUS, entries)
    }

    /// [`put_events`](Self::put_events) on the internal bus with any content: what a principal inside
    /// the internal zone could send. Only tests of the steps' guards use it (on AWS the bus's policy
    /// admits the functions alone; the steps publish through [`Publisher`]).
    pub fn put_internal_events(
        &self,
        entries: &[(String, String, Value)],
    ) -> Result<Vec<(String, usize)>, Error> {
        self.put_on(INTERNAL_BUS, entries)
    }

    fn put_on(&self, bus: &str, entries: &[(String, String, Value)]) -> Result<Vec<(String, usize)>, Error> {
        self.route(
            bus,
            true,
            entries
                .iter()
                .map(|(source, detail_type, detail)| (source.as_str(), detail_type.as_str(), detail)),
        )
    }

    /// [`put_events`](Self::put_events) for any serializable detail: the envelope text is written
    /// straight from the borrowed parts, and rules are matched against that text cut down to what
    /// their patterns look at ([`Lookups::view`]).
    ///
    /// Ids, envelope texts and routes are made before the store is locked: only the inserts are done
    /// under the lock, so the other consumers' tasks do not wait while JSON is written or patterns are
    /// matched. The inserts are still one transaction. `archiving` is false for a replay: what an archive
    /// replays is not archived again.
    fn route<'e, D: Serialize + ?Sized + 'e>(
        &self,
        bus: &str,
        archiving: bool,
        entries: impl Iterator<Item = (&'e str, &'e str, &'e D)>,
    ) -> Result<Vec<(String, usize)>, Error> {
        let now = self.clock.now();
        let time = now.to_string();
        let routed: Vec<Routed<'e, '_>> = entries
            .map(|(source, detail_type, detail)| {
                let id = uuid::Uuid::now_v7().to_string();
                let envelope = Envelope {
                    version: "0",
                    id: &id,
                    detail_type,
                    source,
                    account: "000000000000",
                    time: &time,
                    region: "local",
                    resources: &[],
                    detail,
                };
                let body = serde_json::to_string(&envelope).expect("events serialize");
                // serde_json reads back what it wrote, unless it nests deeper than its reader allows
                // (128 levels): such an event is matched as the whole tree it is.
                let event = self
                    .lookups
                    .view(&body)
                    .or_else(|_| serde_json::to_value(&envelope))
                    .expect("events serialize");
                let deliveries = self
                    .topology
                    .rules_on(bus)
                    .filter(|r| r.pattern.matches(&event))
                    .flat_map(|r| r.targets.iter())
                    .map(|target| (uuid::Uuid::now_v7().to_string(), target.as_str()))
                    .collect();
                let archived = archiving
                    && self
                        .topology
                        .archives
                        .iter()
                        .any(|a| a.bus == bus && a.pattern.matches(&event));
                Routed {
                    id,
                    source,
                    detail_type,
                    body,
                    deliveries,
                    archived,
                }
            })
            .collect();
        let at = ms(now);
        self.state().op(|conn, pending| {
            pending.seqs(conn)?;
            if routed.iter().any(|r| r.archived) {
                // The archive's rows all, or none; the deliveries after them cannot fail.
                savepoint(conn, |tx| {
                    let mut archive = tx
                        .prepare_cached(
                            "INSERT INTO archive (id, time, source, detail_type, event) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .map_err(unavailable)?;
                    for r in routed.iter().filter(|r| r.archived) {
                        archive
                            .execute(params![r.id, at, r.source, r.detail_type, r.body])
                            .map_err(unavailable)?;
                    }
                    Ok(())
                })?;
            }
            for r in &routed {
                for (message_id, target) in &r.deliveries {
                    pending.send(target, message_id.clone(), r.body.clone(), at);
                }
            }
            Ok(())
        })?;
        Ok(routed.into_iter().map(|r| (r.id, r.deliveries.len())).collect())
    }

    /// (visible, in flight) messages of a queue.
    pub fn depth(&self, queue: &str) -> Result<(u64, u64), EmbeddedError> {
        let now = ms(self.clock.now());
        let state = self.state();
        let conn = &state.conn;
        let count = |sql: &str| {
            conn.prepare_cached(sql)?
                .query_row(params![queue, now], |r| r.get::<_, i64>(0))
        };
        let visible = count("SELECT COUNT(*) FROM messages WHERE queue = ?1 AND visible_at <= ?2")?;
        let in_flight = count("SELECT COUNT(*) FROM messages WHERE queue = ?1 AND visible_at > ?2")?;
        let (pending_visible, pending_in_flight) =
            state.pending.as_ref().map_or((0, 0), |p| p.depth(queue, now));
        Ok((
            visible.unsigned_abs() + pending_visible,
            in_flight.unsigned_abs() + pending_in_flight,
        ))
    }

    /// Every message of a queue (a DLQ, typically), oldest first.
    pub fn messages(&self, queue: &str) -> Result<Vec<StoredMessage>, EmbeddedError> {
        let state = self.flushed()?;
        let conn = &state.conn;
        let mut stmt = conn.prepare(
            "SELECT id, queue, body, receive_count, sent_at FROM messages WHERE queue = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![queue], |r| {
            Ok(StoredMessage {
                id: r.get(0)?,
                queue: r.get(1)?,
                body: r.get(2)?,
                receive_count: r.get(3)?,
                sent_at: from_ms(r.get(4)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves every message of `from` (a DLQ) back to `to`, visible at once with a fresh receive count.
    pub fn redrive(&self, from: &str, to: &str) -> Result<usize, EmbeddedError> {
        self.redrive_where(from, to, &|_| true, usize::MAX)
    }

    /// Moves the messages of `from` that `pick` selects, oldest first and at most `limit`, back to
    /// `to`, in one transaction; the others stay where they are.
    pub fn redrive_where(
        &self,
        from: &str,
        to: &str,
        pick: &dyn Fn(&StoredMessage) -> bool,
        limit: usize,
    ) -> Result<usize, EmbeddedError> {
        if !self.topology.queues.contains_key(to) {
            return Err(EmbeddedError::UnknownQueue(to.to_owned()));
        }
        let chosen: Vec<String> = self
            .messages(from)?
            .into_iter()
            .filter(|m| pick(m))
            .take(limit)
            .map(|m| m.id)
            .collect();
        let now = ms(self.clock.now());
        let state = self.state();
        let conn = &state.conn;
        let tx = conn.unchecked_transaction()?;
        let mut moved = 0;
        {
            let mut update = tx.prepare(
                "UPDATE messages SET queue = ?3, visible_at = ?4, receive_count = 0, receipt = NULL
                 WHERE id = ?1 AND queue = ?2",
            )?;
            for id in &chosen {
                moved += update.execute(params![id, from, to, now])?;
            }
        }
        tx.commit()?;
        Ok(moved)
    }

    /// Appends entries of the reference systems' journals (`(system, entry)`), in the current group if one
    /// is open: a local run keeps the simulators' state with its own, committed together.
    pub fn append_journal(&self, entries: &[(&str, String)]) -> Result<(), EmbeddedError> {
        if entries.is_empty() {
            return Ok(());
        }
        let state = self.state();
        let conn = &state.conn;
        let mut stmt =
            conn.prepare_cached("INSERT INTO simulator_journal (system, entry) VALUES (?1, ?2)")?;
        for (system, entry) in entries {
            stmt.execute(params![system, entry])?;
        }
        Ok(())
    }

    /// Rewrites the journal entries that contain `mentions` with `rewrite` (`None`: unchanged), in the
    /// current group if one is open; returns how many changed.
    pub fn rewrite_journal(
        &self,
        mentions: &str,
        rewrite: &dyn Fn(&str) -> Option<String>,
    ) -> Result<usize, EmbeddedError> {
        let state = self.state();
        let conn = &state.conn;
        let found: Vec<(i64, String)> = conn
            .prepare("SELECT seq, entry FROM simulator_journal WHERE instr(entry, ?1) > 0")?
            .query_map([mentions], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut update = conn.prepare_cached("UPDATE simulator_journal SET entry = ?2 WHERE seq = ?1")?;
        let mut changed = 0;
        for (seq, entry) in found {
            if let Some(new) = rewrite(&entry) {
                changed += update.execute(params![seq, new])?;
            }
        }
        Ok(changed)
    }

    /// Every journal entry of `system`, oldest first.
    pub fn journal(&self, system: &str) -> Result<Vec<String>, EmbeddedError> {
        let state = self.state();
        let conn = &state.conn;
        let mut stmt = conn.prepare("SELECT entry FROM simulator_journal WHERE system = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([system], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replays the archive as EventBridge replays the template's archive: the events of
    /// `[from, to)` that it keeps (its pattern: the channels' transactions), and of `detail_type` when
    /// given, put on the bus it archives again, in their original order, and not archived a second
    /// time. Safe because every step is idempotent: what was processed is recognised. Returns how many
    /// events were replayed.
    pub fn replay(&self, from: Timestamp, to: Timestamp, detail_type: Option<&str>) -> Result<usize, Error> {
        let Some(archive) = self.topology.archives.first() else {
            return Ok(0);
        };
        let events: Vec<Value> = {
            let state = self.state();
            let conn = &state.conn;
            let mut stmt = conn
                .prepare("SELECT event FROM archive WHERE time >= ?1 AND time < ?2 ORDER BY seq")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![ms(from), ms(to)], |r| r.get::<_, String>(0))
                .map_err(unavailable)?;
            rows.map(|r| {
                let text = r.map_err(unavailable)?;
                serde_json::from_str(&text).map_err(|e| corrupt("an archived event".to_owned(), e))
            })
            .collect::<Result<_, Error>>()?
        };
        let chosen: Vec<(String, String, Value)> = events
            .into_iter()
            .filter(|e| archive.pattern.matches(e))
            .filter(|e| detail_type.is_none_or(|t| e["detail-type"] == t))
            .map(|e| {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (text("source"), text("detail-type"), e["detail"].clone())
            })
            .collect();
        let routed = self.route(
            &archive.bus,
            false,
            chosen
                .iter()
                .map(|(source, detail_type, detail)| (source.as_str(), detail_type.as_str(), detail)),
        )?;
        Ok(routed.len())
    }

    /// The archived events, oldest first: those an archive's pattern matched (the channels' transactions;
    /// never member events, which carry personal data).
    pub fn archive(&self) -> Result<Vec<Value>, EmbeddedError> {
        let state = self.state();
        let conn = &state.conn;
        let mut stmt = conn.prepare("SELECT event FROM archive ORDER BY seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| Ok(serde_json::from_str(&r?).unwrap_or(Value::Null)))
            .collect()
    }

    /// Every saga, by id.
    pub fn sagas(&self) -> Result<Vec<Saga>, Error> {
        let state = self.flushed().map_err(unavailable)?;
        let conn = &state.conn;
        let mut stmt = conn
            .prepare("SELECT pk, item FROM sagas ORDER BY pk")
            .map_err(unavailable)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(unavailable)?;
        rows.map(|r| {
            let (pk, item) = r.map_err(unavailable)?;
            serde_json::from_str(&item).map_err(|e| corrupt(format!("saga {pk}"), e))
        })
        .collect()
    }

    /// Every idempotency record's stored text, by key (what an audit of the stored data reads, e.g. that
    /// an erased member's personal data is in none).
    pub fn idempotency_items(&self) -> Result<Vec<String>, Error> {
        let state = self.flushed().map_err(unavailable)?;
        let conn = &state.conn;
        let mut stmt = conn
            .prepare("SELECT item FROM idempotency ORDER BY pk")
            .map_err(unavailable)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(unavailable)?;
        rows.map(|r| r.map_err(unavailable)).collect()
    }

    /// Deletes idempotency records past their TTL, as DynamoDB does eventually.
    pub fn purge_expired(&self) -> Result<usize, EmbeddedError> {
        let now = ms(self.clock.now());
        Ok(self
            .flushed()?
            .conn
            .execute("DELETE FROM idempotency WHERE expires_at <= ?1", params![now])?)
    }
}

/// Runs `f` in a savepoint (what `Connection::savepoint` does, but with the statements prepared once:
/// parsing them was a visible share of every operation). If `f` fails, or panics, everything it wrote
/// is rolled back.
fn savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
    struct Open<'c>(&'c Connection, bool);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            if self.1 {
                // Best effort, as rusqlite's own savepoint does on drop: if even this fails, the
                // connection's transaction is broken and the next statement reports it.
                let _ = run(self.0, "ROLLBACK TO op").and_then(|()| run(self.0, "RELEASE op"));
            }
        }
    }
    fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
        conn.prepare_cached(sql)?.execute([]).map(drop)
    }
    run(conn, "SAVEPOINT op").map_err(unavailable)?;
    let mut open = Open(conn, true);
    let out = f(conn)?;
    run(conn, "RELEASE op").map_err(unavailable)?;
    open.1 = false;
    Ok(out)
}

/// The seq a receipt names (`seq:token`); -1, which no message has, for a malformed one.
fn receipt_seq(receipt: &str) -> i64 {
    receipt
        .split(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

fn load_idempotency(tx: &Connection, key: &str) -> Result<Option<IdempotencyRecord>, Error> {
    let item: Option<String> = tx
        .prepare_cached("SELECT item FROM idempotency WHERE pk = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    item.map(|i| serde_json::from_str(&i).map_err(|e| corrupt(format!("idempotency record {key}"), e)))
        .transpose()
}

/// The stored text of a record. Items are serialized before the connection is locked, so the other
/// consumers' tasks are not kept waiting while JSON is written.
fn idempotency_item(record: &IdempotencyRecord) -> String {
    serde_json::to_string(record).expect("records serialize")
}

fn store_idempotency(tx: &Connection, record: &IdempotencyRecord, item: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO idempotency (pk, item, expires_at) VALUES (?1, ?2, ?3)")?
        .execute(params![record.key.as_str(), item, ms(record.expires_at)])
        .map(drop)
}

fn delete_idempotency(tx: &Connection, key: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM idempotency WHERE pk = ?1")?
        .execute(params![key])
        .map(drop)
}

/// A saga's stored text. It is read under the lock and parsed after it ([`parse_saga`]): a saga is the
/// largest item, and the other consumers' tasks need not wait while it is parsed.
fn load_saga(tx: &Connection, sql: &str, key: &str) -> Result<Option<String>, Error> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
        .map_err(unavailable)
}

/// A saga a step loads: kept in the group in progress (shared with it, copied when the lock is released),
/// or the table's text (parsed then).
enum Loaded {
    Kept(Arc<Saga>),
    Text(String),
}

fn parse_saga(key: &str, item: Option<Loaded>) -> Result<Option<Saga>, Error> {
    item.map(|loaded| match loaded {
        Loaded::Kept(saga) => Ok(Arc::unwrap_or_clone(saga)),
        Loaded::Text(text) => serde_json::from_str(&text).map_err(|e| corrupt(format!("saga {key}"), e)),
    })
    .transpose()
}

#[async_trait]
impl IdempotencyStore for Embedded {
    async fn try_insert(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        let item = idempotency_item(record);
        self.state().op(
            |conn, pending| match pending.idempotency(conn, record.key.as_str())? {
                Some(existing) if existing.is_live(now) => Ok(Some(existing)),
                _ => {
                    pending.put_idempotency(record, item);
                    Ok(None)
                }
            },
        )
    }

    async fn release(&self, claim: &IdempotencyRecord) -> Result<(), Error> {
        if !matches!(claim.state, RecordState::InProgress { .. }) {
            return Ok(());
        }
        self.state().op(|conn, pending| {
            if pending.idempotency(conn, claim.key.as_str())?.as_ref() == Some(claim) {
                pending.idempotency.insert(claim.key.as_str().to_owned(), None);
            }
            Ok(())
        })
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, Error> {
        self.state()
            .op(|conn, pending| pending.idempotency(conn, key.as_str()))
    }
}

#[async_trait]
impl SagaStore for Embedded {
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error> {
        let kept = Arc::new(saga.clone());
        let existing = self.state().op(|conn, pending| {
            if let Some(existing) = pending.saga(conn, saga.id.as_str())? {
                return Ok(Some(existing));
            }
            pending.put_saga(kept, true);
            Ok(None)
        })?;
        parse_saga(saga.id.as_str(), existing)
    }

    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error> {
        let item = self.state().op(|conn, pending| pending.saga(conn, id.as_str()))?;
        parse_saga(id.as_str(), item)
    }

    /// Under one hold of the lock (the point of a batch read here: one wait for it, not one per saga),
    /// parsed after it is released.
    async fn load_many(&self, ids: &[SagaId]) -> Result<Vec<Saga>, Error> {
        let distinct: BTreeSet<&SagaId> = ids.iter().collect();
        let items = self.state().op(|conn, pending| {
            let mut items = Vec::with_capacity(distinct.len());
            for id in distinct {
                if let Some(item) = pending.saga(conn, id.as_str())? {
                    items.push((id, item));
                }
            }
            Ok(items)
        })?;
        items
            .into_iter()
            .filter_map(|(id, item)| parse_saga(id.as_str(), Some(item)).transpose())
            .collect()
    }

    async fn find_by_correlation(&self, correlation_id: &CorrelationId) -> Result<Option<Saga>, Error> {
        // An operator's lookup, not a step's: the table's index answers it, so the pending writes go first.
        let item = self.state().op(|conn, pending| {
            pending.flush(conn).map_err(unavailable)?;
            load_saga(
                conn,
                "SELECT item FROM sagas WHERE correlation_id = ?1 LIMIT 1",
                correlation_id.as_str(),
            )
        })?;
        parse_saga(correlation_id.as_str(), item.map(Loaded::Text))
    }

    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error> {
        let kept = Arc::new(saga.clone());
        let completion = completion.map(|record| (record, idempotency_item(record)));
        self.state().op(|conn, pending| {
            // The version this save follows must be the one stored: otherwise nothing is written,
            // including the completion.
            if pending.saga_version(conn, saga.id.as_str())? != Some(saga.version as i64 - 1) {
                return Err(Error::Conflict {
                    what: format!("saga {}", saga.id),
                });
            }
            pending.put_saga(kept, false);
            if let Some((record, item)) = completion {
                pending.put_idempotency(record, item);
            }
            Ok(())
        })
    }
}

impl Embedded {
    /// Writes a quarantine entry with `insert` (replacing one with its id, or leaving it): one
    /// statement, atomic by itself, in a group or not.
    fn write_quarantine(&self, insert: &str, item: &QuarantineItem) -> Result<(), Error> {
        let json = serde_json::to_string(item).expect("items serialize");
        self.state()
            .conn
            .prepare_cached(insert)
            .and_then(|mut s| s.execute(params![item.id, ms(item.received_at), json]))
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl QuarantineStore for Embedded {
    async fn put(&self, item: &QuarantineItem) -> Result<(), Error> {
        self.write_quarantine(
            "INSERT OR REPLACE INTO quarantine (id, received_at, item) VALUES (?1, ?2, ?3)",
            item,
        )
    }

    async fn keep(&self, item: &QuarantineItem) -> Result<(), Error> {
        self.write_quarantine(
            "INSERT OR IGNORE INTO quarantine (id, received_at, item) VALUES (?1, ?2, ?3)",
            item,
        )
    }

    async fn list(&self, limit: usize) -> Result<Vec<QuarantineItem>, Error> {
        let state = self.state();
        let conn = &state.conn;
        let mut stmt = conn
            .prepare("SELECT id, item FROM quarantine ORDER BY received_at, id LIMIT ?1")
            .map_err(unavailable)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(unavailable)?;
        rows.map(|r| {
            let (id, item) = r.map_err(unavailable)?;
            serde_json::from_str(&item).map_err(|e| corrupt(format!("quarantine item {id}"), e))
        })
        .collect()
    }

    async fn find(&self, id: &str) -> Result<Option<QuarantineItem>, Error> {
        let state = self.state();
        let conn = &state.conn;
        let item: Option<String> = conn
            .query_row("SELECT item FROM quarantine WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable)?;
        item.map(|item| serde_json::from_str(&item).map_err(|e| corrupt(format!("quarantine item {id}"), e)))
            .transpose()
    }
}

#[async_trait]
impl Publisher for Embedded {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), Error>> {
        // One transaction: all entries are routed, or none (then all are reported failed and retried).
        let routed = self.route(
            INTERNAL_BUS,
            true,
            events.iter().map(|o| (o.source, o.detail_type(), &o.event)),
        );
        match routed {
            Ok(_) => events.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                let message = e.to_string();
                events.iter().map(|_| Err(unavailable(message.clone()))).collect()
            }
        }
    }
}

#[async_trait]
impl QueueConsumer for Embedded {
    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Received>, Error> {
        let now = ms(self.clock.now());
        let visible_until = now + i64::try_from(self.visibility(queue).as_millis()).unwrap_or(i64::MAX / 2);
        let redrive = self.topology.queues.get(queue).and_then(|q| q.redrive.clone());
        let limit = i64::try_from(max).unwrap_or(10);
        let mut state = self.state();
        state.op(|conn, pending| {
            let mut candidates: Vec<Candidate> = conn
                .prepare_cached(
                    "SELECT visible_at, seq, id, body, receive_count FROM messages
                     WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![queue, now, limit], |r| {
                        Ok(Candidate {
                            visible_at: r.get(0)?,
                            seq: r.get(1)?,
                            id: r.get(2)?,
                            body: r.get(3)?,
                            receive_count: r.get(4)?,
                            pending: false,
                        })
                    })?
                    .collect()
                })
                .map_err(unavailable)?;
            // The group's own messages come after the table's in the same order, as if they were in it.
            candidates.extend(pending.visible(queue, now, max));
            if candidates.is_empty() {
                // Most polls of a round: one read, nothing written.
                return Ok(Vec::new());
            }
            candidates.sort_by_key(|c| (c.visible_at, c.seq));
            candidates.truncate(max);
            // The receipt names the row, so a delete is a primary-key lookup; the random part makes a
            // receipt from an earlier receive useless, as in SQS. One random part serves the batch: the
            // seq already tells its receipts apart.
            let token = uuid::Uuid::now_v7().simple();
            // SQS moves a message to the DLQ when a receive finds it already received maxReceiveCount
            // times: it is not handed out again.
            let dead = |c: &Candidate| {
                redrive
                    .as_ref()
                    .filter(|(_, max_receives)| c.receive_count >= *max_receives)
                    .map(|(dlq, _)| dlq.as_str())
            };
            // The table's rows all change, or none; the pending messages after them cannot fail.
            let table: Vec<&Candidate> = candidates.iter().filter(|c| !c.pending).collect();
            if !table.is_empty() {
                savepoint(conn, |tx| {
                    for c in table {
                        let done = match dead(c) {
                            Some(dlq) => tx
                                .prepare_cached(
                                    "UPDATE messages SET queue = ?2, visible_at = ?3, receipt = NULL WHERE seq = ?1",
                                )
                                .and_then(|mut s| s.execute(params![c.seq, dlq, now])),
                            None => tx
                                .prepare_cached(
                                    "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3 WHERE seq = ?1",
                                )
                                .and_then(|mut s| {
                                    s.execute(params![c.seq, visible_until, format!("{}:{token}", c.seq)])
                                }),
                        };
                        done.map_err(unavailable)?;
                    }
                    Ok(())
                })?;
            }
            let mut received = Vec::with_capacity(candidates.len());
            for c in candidates {
                if let Some(dlq) = dead(&c) {
                    if c.pending {
                        pending.place(c.seq, dlq, now, None, 0);
                    }
                    tracing::warn!(queue, message_id = %c.id, receive_count = c.receive_count, dlq, "moved to dead-letter queue");
                    continue;
                }
                let receipt = format!("{}:{token}", c.seq);
                if c.pending {
                    pending.place(c.seq, queue, visible_until, Some(receipt.clone()), 1);
                }
                received.push(Received {
                    message: Message {
                        id: c.id,
                        body: c.body,
                        receive_count: c.receive_count + 1,
                    },
                    receipt,
                });
            }
            Ok(received)
        })
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), Error> {
        self.state().op(|conn, pending| {
            let mut table = Vec::with_capacity(receipts.len());
            for receipt in receipts {
                // A malformed receipt matches no message, like a stale one.
                let seq = receipt_seq(receipt);
                if pending.receipted(queue, seq, receipt) {
                    pending.take(seq);
                } else {
                    table.push((seq, receipt));
                }
            }
            if table.is_empty() {
                return Ok(());
            }
            savepoint(conn, |tx| {
                for (seq, receipt) in table {
                    tx.prepare_cached("DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")
                        .and_then(|mut s| s.execute(params![seq, queue, receipt]))
                        .map_err(unavailable)?;
                }
                Ok(())
            })
        })
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        self.hide(queue, receipt, wait, false)
    }

    async fn defer(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        self.hide(queue, receipt, wait, true)
    }
}

impl Embedded {
    /// Keeps a received message invisible for `wait`; `uncount`: and takes back the receive that
    /// handed it out.
    fn hide(&self, queue: &str, receipt: &str, wait: Duration, uncount: bool) -> Result<(), Error> {
        // SQS's ceiling: a message is never hidden for more than 12 hours.
        let wait = wait.min(Duration::from_secs(43_200));
        let visible_at = ms(self.clock.now()) + i64::try_from(wait.as_millis()).unwrap_or(0);
        let seq = receipt_seq(receipt);
        let taken_back = i32::from(uncount);
        self.state().op(|conn, pending| {
            if pending.receipted(queue, seq, receipt) {
                pending.place(seq, queue, visible_at, Some(receipt.to_owned()), -taken_back);
                return Ok(());
            }
            // A stale receipt (the message was received again since) changes nothing, as in SQS.
            conn.prepare_cached(
                "UPDATE messages SET visible_at = ?4, receive_count = MAX(receive_count - ?5, 0)
                 WHERE seq = ?1 AND queue = ?2 AND receipt = ?3",
            )
            .and_then(|mut s| s.execute(params![seq, queue, receipt, visible_at, taken_back]))
            .map_err(unavailable)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_sync_core::memory::ManualClock;

    /// What SQLite does on some I/O errors, done by hand: the group's transaction ends before its commit.
    /// The commit then says so instead of writing the writes it kept on their own.
    #[tokio::test]
    async fn a_group_whose_transaction_sqlite_rolled_back_does_not_commit_half_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let open = || {
            let clock = Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
            Embedded::open(
                &dir.path().join("state.db"),
                Topology::load(Path::new(template)).unwrap(),
                clock,
            )
            .unwrap()
        };
        let store = open();
        store.begin_group().unwrap();
        store.send("IngestQueue", "written to the table").unwrap();
        store.messages("IngestQueue").unwrap();
        store.send("IngestQueue", "kept in memory").unwrap();
        store.state().conn.execute_batch("ROLLBACK").unwrap();
        assert!(matches!(
            store.commit_group(),
            Err(EmbeddedError::GroupRolledBack)
        ));
        drop(store);
        assert_eq!(open().depth("IngestQueue").unwrap(), (0, 0));
    }
}
