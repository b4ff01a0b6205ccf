//! One SQLite file holds every queue, the state tables and the bus archive. WAL journaling lets the
//! operator CLI read it while a run writes; `synchronous=NORMAL` keeps commits durable across a crash
//! of the process (the case a laptop run meets) without an fsync per message.

use std::collections::BTreeSet;
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

use retail_sync_topology::{CHANNEL_BUS, INTERNAL_BUS, Topology};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("embedded store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("embedded store: cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("no queue {0} in the template")]
    UnknownQueue(String),
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
}

/// The event as rule patterns see it, holding only the envelope fields some pattern names (`fields`):
/// a pattern looks at no other field, so it matches this exactly as it would the whole event, and the
/// detail is converted (`detail`) only when a pattern looks into it.
fn routing_view<D: Serialize + ?Sized>(
    fields: &[String],
    envelope: &Envelope<'_, D>,
    detail: impl FnOnce() -> Value,
) -> Value {
    let mut detail = Some(detail);
    let mut view = serde_json::Map::new();
    for field in fields {
        let value = match field.as_str() {
            "version" => envelope.version.into(),
            "id" => envelope.id.into(),
            "detail-type" => envelope.detail_type.into(),
            "source" => envelope.source.into(),
            "account" => envelope.account.into(),
            "time" => envelope.time.into(),
            "region" => envelope.region.into(),
            "resources" => envelope.resources.into(),
            "detail" => match detail.take() {
                Some(d) => d(),
                None => continue,
            },
            _ => continue,
        };
        view.insert(field.clone(), value);
    }
    Value::Object(view)
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

/// The embedded backend. Cheap to share behind an `Arc`; every operation is one short SQLite
/// transaction under a mutex (no await while it is held).
pub struct Embedded {
    conn: Mutex<Connection>,
    topology: Arc<Topology>,
    /// Every top-level event field some rule's pattern names, each once (see [`routing_view`]).
    routed_fields: Vec<String>,
    clock: Arc<dyn Clock>,
    /// Replaces every queue's visibility timeout. Local runs shorten the template's minutes to
    /// seconds so a retry is seen in the same sitting; the semantics stay the same.
    visibility_override: Option<Duration>,
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
        let routed_fields: BTreeSet<String> = topology
            .rules
            .iter()
            .flat_map(|r| r.pattern.fields())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            conn: Mutex::new(conn),
            topology: Arc::new(topology),
            routed_fields: routed_fields.into_iter().collect(),
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

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` atomically: a savepoint, which is its own transaction outside a group and nests inside
    /// one (see [`begin_group`](Self::begin_group)).
    fn tx<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let conn = self.conn();
        savepoint(&conn, f)
    }

    /// [`tx`](Self::tx) for an operation that writes with at most one statement (reads, then perhaps
    /// one insert, update or delete). Inside a group it needs no savepoint: the group's transaction
    /// already holds the write lock, so nothing interleaves between the reads and the write, and one
    /// statement is atomic by itself. That spares the savepoint and its sub-journal copies of the pages
    /// the write touches, on the most frequent operations. Outside a group it is a transaction as before.
    fn tx_single<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let conn = self.conn();
        if conn.is_autocommit() {
            savepoint(&conn, f)
        } else {
            f(&conn)
        }
    }

    /// Starts a group commit: until [`commit_group`](Self::commit_group), every operation is still atomic
    /// on its own but reaches the disk with the others in one commit. The local runner groups each
    /// round of polls; a crash inside a group forgets the whole round, which is safe because nothing in
    /// it was acknowledged: the messages reappear, the steps' claims are gone, and the ERP and loyalty
    /// calls made in it are repeated with the same idempotency keys, which those systems must honour
    /// (the system API contract). Without groups every operation is a commit of its own.
    pub fn begin_group(&self) -> Result<(), EmbeddedError> {
        let conn = self.conn();
        if conn.is_autocommit() {
            conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        Ok(())
    }

    pub fn commit_group(&self) -> Result<(), EmbeddedError> {
        let conn = self.conn();
        if !conn.is_autocommit() {
            conn.execute_batch("COMMIT")?;
        }
        Ok(())
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
        self.conn().execute(
            "INSERT INTO messages (id, queue, body, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![id, queue, body, now],
        )?;
        Ok(id)
    }

    /// Puts events on the channel bus as channels' PutEvents do: each is stamped with an id and time,
    /// archived, and copied to the target queue of every rule of that bus whose pattern it matches, in
    /// one transaction.
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
            Value::clone,
        )
    }

    /// [`put_events`](Self::put_events) for any serializable detail: the envelope text is written
    /// straight from the borrowed parts, and rules are matched against [`routing_view`] of it, so
    /// the detail is turned into a `Value` (`detail_value`) only if some rule's pattern looks into it.
    ///
    /// Ids, envelope texts and routes are made before the store is locked: only the inserts are done
    /// under the lock, so the other consumers' tasks do not wait while JSON is written or patterns are
    /// matched. The inserts are still one transaction.
    fn route<'e, D: Serialize + ?Sized + 'e>(
        &self,
        bus: &str,
        archived: bool,
        entries: impl Iterator<Item = (&'e str, &'e str, &'e D)>,
        detail_value: impl Fn(&D) -> Value,
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
                let event = routing_view(&self.routed_fields, &envelope, || detail_value(detail));
                let deliveries = self
                    .topology
                    .rules_on(bus)
                    .filter(|r| r.pattern.matches(&event))
                    .flat_map(|r| r.targets.iter())
                    .map(|target| (uuid::Uuid::now_v7().to_string(), target.as_str()))
                    .collect();
                Routed {
                    id,
                    source,
                    detail_type,
                    body,
                    deliveries,
                }
            })
            .collect();
        let at = ms(now);
        self.tx(|tx| {
            let mut archive = tx
                .prepare_cached(
                    "INSERT INTO archive (id, time, source, detail_type, event) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(unavailable)?;
            let mut deliver = tx
                .prepare_cached(
                    "INSERT INTO messages (id, queue, body, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                )
                .map_err(unavailable)?;
            for r in &routed {
                if archived {
                    archive
                        .execute(params![r.id, at, r.source, r.detail_type, r.body])
                        .map_err(unavailable)?;
                }
                for (message_id, target) in &r.deliveries {
                    deliver
                        .execute(params![message_id, target, r.body, at])
                        .map_err(unavailable)?;
                }
            }
            Ok(())
        })?;
        Ok(routed.into_iter().map(|r| (r.id, r.deliveries.len())).collect())
    }

    /// (visible, in flight) messages of a queue.
    pub fn depth(&self, queue: &str) -> Result<(u64, u64), EmbeddedError> {
        let now = ms(self.clock.now());
        let conn = self.conn();
        let count = |sql: &str| {
            conn.prepare_cached(sql)?
                .query_row(params![queue, now], |r| r.get::<_, i64>(0))
        };
        let visible = count("SELECT COUNT(*) FROM messages WHERE queue = ?1 AND visible_at <= ?2")?;
        let in_flight = count("SELECT COUNT(*) FROM messages WHERE queue = ?1 AND visible_at > ?2")?;
        Ok((visible.unsigned_abs(), in_flight.unsigned_abs()))
    }

    /// Every message of a queue (a DLQ, typically), oldest first.
    pub fn messages(&self, queue: &str) -> Result<Vec<StoredMessage>, EmbeddedError> {
        let conn = self.conn();
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
        let conn = self.conn();
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
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("INSERT INTO simulator_journal (system, entry) VALUES (?1, ?2)")?;
        for (system, entry) in entries {
            stmt.execute(params![system, entry])?;
        }
        Ok(())
    }

    /// Every journal entry of `system`, oldest first.
    pub fn journal(&self, system: &str) -> Result<Vec<String>, EmbeddedError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT entry FROM simulator_journal WHERE system = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([system], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events the bus has seen, oldest first.
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
            let conn = self.conn();
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
            Value::clone,
        )?;
        Ok(routed.len())
    }

    pub fn archive(&self) -> Result<Vec<Value>, EmbeddedError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT event FROM archive ORDER BY seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| Ok(serde_json::from_str(&r?).unwrap_or(Value::Null)))
            .collect()
    }

    /// Every saga, by id.
    pub fn sagas(&self) -> Result<Vec<Saga>, Error> {
        let conn = self.conn();
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
        let conn = self.conn();
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
            .conn()
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

fn store_idempotency(tx: &Connection, record: &IdempotencyRecord, item: &str) -> Result<(), Error> {
    tx.prepare_cached("INSERT OR REPLACE INTO idempotency (pk, item, expires_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![record.key.as_str(), item, ms(record.expires_at)]))
        .map_err(unavailable)?;
    Ok(())
}

/// A saga's stored text. It is read under the lock and parsed after it ([`parse_saga`]): a saga is the
/// largest item, and the other consumers' tasks need not wait while it is parsed.
fn load_saga(tx: &Connection, sql: &str, key: &str) -> Result<Option<String>, Error> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
        .map_err(unavailable)
}

fn parse_saga(key: &str, item: Option<String>) -> Result<Option<Saga>, Error> {
    item.map(|i| serde_json::from_str(&i).map_err(|e| corrupt(format!("saga {key}"), e)))
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
        self.tx_single(|tx| match load_idempotency(tx, record.key.as_str())? {
            Some(existing) if existing.is_live(now) => Ok(Some(existing)),
            _ => store_idempotency(tx, record, &item).map(|()| None),
        })
    }

    async fn release(&self, claim: &IdempotencyRecord) -> Result<(), Error> {
        if !matches!(claim.state, RecordState::InProgress { .. }) {
            return Ok(());
        }
        self.tx_single(|tx| {
            if load_idempotency(tx, claim.key.as_str())?.as_ref() == Some(claim) {
                tx.execute(
                    "DELETE FROM idempotency WHERE pk = ?1",
                    params![claim.key.as_str()],
                )
                .map_err(unavailable)?;
            }
            Ok(())
        })
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, Error> {
        self.tx_single(|tx| load_idempotency(tx, key.as_str()))
    }
}

#[async_trait]
impl SagaStore for Embedded {
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error> {
        let item = serde_json::to_string(saga).expect("sagas serialize");
        let existing = self.tx_single(|tx| {
            if let Some(existing) = load_saga(tx, "SELECT item FROM sagas WHERE pk = ?1", saga.id.as_str())? {
                return Ok(Some(existing));
            }
            tx.prepare_cached(
                "INSERT INTO sagas (pk, correlation_id, version, status, item, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    saga.id.as_str(),
                    saga.correlation_id.as_str(),
                    saga.version as i64,
                    saga.status.as_str(),
                    item,
                    ms(saga.updated_at)
                ])
            })
            .map_err(unavailable)?;
            Ok(None)
        })?;
        parse_saga(saga.id.as_str(), existing)
    }

    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error> {
        let item = self.tx_single(|tx| load_saga(tx, "SELECT item FROM sagas WHERE pk = ?1", id.as_str()))?;
        parse_saga(id.as_str(), item)
    }

    /// Under one hold of the lock (the point of a batch read here: one wait for it, not one per saga),
    /// parsed after it is released.
    async fn load_many(&self, ids: &[SagaId]) -> Result<Vec<Saga>, Error> {
        let distinct: BTreeSet<&SagaId> = ids.iter().collect();
        let items = self.tx_single(|tx| {
            let mut items = Vec::with_capacity(distinct.len());
            for id in distinct {
                if let Some(item) = load_saga(tx, "SELECT item FROM sagas WHERE pk = ?1", id.as_str())? {
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
        let item = self.tx_single(|tx| {
            load_saga(
                tx,
                "SELECT item FROM sagas WHERE correlation_id = ?1 LIMIT 1",
                correlation_id.as_str(),
            )
        })?;
        parse_saga(correlation_id.as_str(), item)
    }

    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error> {
        let item = serde_json::to_string(saga).expect("sagas serialize");
        let completion = completion.map(|record| (record, idempotency_item(record)));
        self.tx(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE sagas SET version = ?2, status = ?3, item = ?4, updated_at = ?5 WHERE pk = ?1 AND version = ?6",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        saga.id.as_str(),
                        saga.version as i64,
                        saga.status.as_str(),
                        item,
                        ms(saga.updated_at),
                        (saga.version as i64) - 1
                    ])
                })
                .map_err(unavailable)?;
            if changed == 0 {
                // Nothing written, including the completion: the transaction commits an empty change.
                return Err(Error::Conflict { what: format!("saga {}", saga.id) });
            }
            if let Some((record, item)) = &completion {
                store_idempotency(tx, record, item)?;
            }
            Ok(())
        })
    }
}

#[async_trait]
impl QuarantineStore for Embedded {
    async fn put(&self, item: &QuarantineItem) -> Result<(), Error> {
        let json = serde_json::to_string(item).expect("items serialize");
        self.tx_single(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO quarantine (id, received_at, item) VALUES (?1, ?2, ?3)",
                params![item.id, ms(item.received_at), json],
            )
            .map_err(unavailable)?;
            Ok(())
        })
    }

    async fn list(&self, limit: usize) -> Result<Vec<QuarantineItem>, Error> {
        let conn = self.conn();
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
        let conn = self.conn();
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
            |event| serde_json::to_value(event).expect("events serialize"),
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
        let candidates = |tx: &Connection| -> Result<Vec<(i64, String, String, u32)>, Error> {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, id, body, receive_count FROM messages
                     WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3",
                )
                .map_err(unavailable)?;
            stmt.query_map(params![queue, now, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(unavailable)
        };
        let take = |tx: &Connection, candidates: Vec<(i64, String, String, u32)>| {
            // The receipt names the row, so a delete is a primary-key lookup; the random part makes a
            // receipt from an earlier receive useless, as in SQS. One random part serves the batch: the
            // row number already tells its receipts apart.
            let token = uuid::Uuid::now_v7().simple();
            let mut received = Vec::with_capacity(candidates.len());
            for (seq, id, body, count) in candidates {
                // SQS moves a message to the DLQ when a receive finds it already received
                // maxReceiveCount times: it is not handed out again.
                if let Some((dlq, max_receives)) = &redrive
                    && count >= *max_receives
                {
                    tx.prepare_cached(
                        "UPDATE messages SET queue = ?2, visible_at = ?3, receipt = NULL WHERE seq = ?1",
                    )
                    .and_then(|mut s| s.execute(params![seq, dlq, now]))
                    .map_err(unavailable)?;
                    tracing::warn!(queue, message_id = %id, receive_count = count, dlq, "moved to dead-letter queue");
                    continue;
                }
                let receipt = format!("{seq}:{token}");
                tx.prepare_cached(
                    "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3 WHERE seq = ?1",
                )
                .and_then(|mut s| s.execute(params![seq, visible_until, receipt]))
                .map_err(unavailable)?;
                received.push(Received {
                    message: Message {
                        id,
                        body,
                        receive_count: count + 1,
                    },
                    receipt,
                });
            }
            Ok(received)
        };
        let conn = self.conn();
        if conn.is_autocommit() {
            return savepoint(&conn, |tx| take(tx, candidates(tx)?));
        }
        // Inside a group the group's transaction holds the write lock and this connection's lock is held
        // throughout, so nothing changes between the read and the writes: an empty queue (most polls of
        // a round) is answered with the one read, and only a receive that writes opens a savepoint.
        let found = candidates(&conn)?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        savepoint(&conn, |tx| take(tx, found))
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), Error> {
        self.tx(|tx| {
            for receipt in receipts {
                // A malformed receipt matches no row, like a stale one.
                let seq: i64 = receipt
                    .split(':')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1);
                tx.prepare_cached("DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")
                    .and_then(|mut s| s.execute(params![seq, queue, receipt]))
                    .map_err(unavailable)?;
            }
            Ok(())
        })
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        // SQS's ceiling: a message is never hidden for more than 12 hours.
        let wait = wait.min(Duration::from_secs(43_200));
        let visible_at = ms(self.clock.now()) + i64::try_from(wait.as_millis()).unwrap_or(0);
        let seq: i64 = receipt
            .split(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        self.tx(|tx| {
            // A stale receipt (the message was received again since) changes nothing, as in SQS.
            tx.prepare_cached(
                "UPDATE messages SET visible_at = ?4 WHERE seq = ?1 AND queue = ?2 AND receipt = ?3",
            )
            .and_then(|mut s| s.execute(params![seq, queue, receipt, visible_at]))
            .map_err(unavailable)?;
            Ok(())
        })
    }
}
