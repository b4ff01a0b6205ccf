//! In-memory adapters of the state, bus, clock and metrics ports: for unit tests and benchmarks of the
//! pure workflow logic. They keep the same contracts as the durable adapters (conditional insert,
//! versioned save with completion in one step), which `retail-sync-testkit`'s conformance suite checks for
//! every backend, this one included (`tests/conformance.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use retail_sync_contracts::values::CorrelationId;

use crate::error::Error;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord, RecordState};
use crate::ports::*;
use crate::saga::{Saga, SagaId};

#[derive(Default)]
pub struct MemoryState {
    idempotency: Mutex<HashMap<IdempotencyKey, IdempotencyRecord>>,
    sagas: Mutex<HashMap<SagaId, Saga>>,
    quarantine: Mutex<BTreeMap<String, QuarantineItem>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going rather than poison every test.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl IdempotencyStore for MemoryState {
    async fn try_insert(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        let mut map = lock(&self.idempotency);
        match map.get(&record.key) {
            Some(existing) if existing.is_live(now) => Ok(Some(existing.clone())),
            _ => {
                map.insert(record.key.clone(), record.clone());
                Ok(None)
            }
        }
    }

    async fn release(&self, claim: &IdempotencyRecord) -> Result<(), Error> {
        let mut map = lock(&self.idempotency);
        if map.get(&claim.key) == Some(claim) && matches!(claim.state, RecordState::InProgress { .. }) {
            map.remove(&claim.key);
        }
        Ok(())
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, Error> {
        Ok(lock(&self.idempotency).get(key).cloned())
    }
}

#[async_trait]
impl SagaStore for MemoryState {
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error> {
        let mut map = lock(&self.sagas);
        if let Some(existing) = map.get(&saga.id) {
            return Ok(Some(existing.clone()));
        }
        map.insert(saga.id.clone(), saga.clone());
        Ok(None)
    }

    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error> {
        Ok(lock(&self.sagas).get(id).cloned())
    }

    async fn find_by_correlation(&self, correlation_id: &CorrelationId) -> Result<Option<Saga>, Error> {
        Ok(lock(&self.sagas)
            .values()
            .find(|s| &s.correlation_id == correlation_id)
            .cloned())
    }

    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error> {
        let mut sagas = lock(&self.sagas);
        let stored = sagas.get(&saga.id).map(|s| s.version);
        if stored != Some(saga.version - 1) {
            return Err(Error::Conflict {
                what: format!("saga {}", saga.id),
            });
        }
        sagas.insert(saga.id.clone(), saga.clone());
        if let Some(record) = completion {
            lock(&self.idempotency).insert(record.key.clone(), record.clone());
        }
        Ok(())
    }
}

#[async_trait]
impl QuarantineStore for MemoryState {
    async fn put(&self, item: &QuarantineItem) -> Result<(), Error> {
        lock(&self.quarantine).insert(item.id.clone(), item.clone());
        Ok(())
    }

    async fn keep(&self, item: &QuarantineItem) -> Result<(), Error> {
        lock(&self.quarantine)
            .entry(item.id.clone())
            .or_insert_with(|| item.clone());
        Ok(())
    }

    /// Oldest first (then by id), as the durable stores list them.
    async fn list(&self, limit: usize) -> Result<Vec<QuarantineItem>, Error> {
        let mut items: Vec<QuarantineItem> = lock(&self.quarantine).values().cloned().collect();
        items.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        items.truncate(limit);
        Ok(items)
    }
}

/// A bus that keeps what was published and can be told to fail the next `n` entries.
#[derive(Default)]
pub struct MemoryBus {
    published: Mutex<Vec<Outgoing>>,
    fail_next: Mutex<usize>,
}

impl MemoryBus {
    pub fn published(&self) -> Vec<Outgoing> {
        lock(&self.published).clone()
    }
    pub fn fail_next(&self, entries: usize) {
        *lock(&self.fail_next) = entries;
    }
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), Error>> {
        let mut fail = lock(&self.fail_next);
        events
            .iter()
            .map(|e| {
                if *fail > 0 {
                    *fail -= 1;
                    Err(Error::unavailable("event bus", "injected publish failure"))
                } else {
                    lock(&self.published).push(e.clone());
                    Ok(())
                }
            })
            .collect()
    }
}

/// A clock tests move by hand.
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(start))
    }
    pub fn advance(&self, by: Duration) {
        let mut t = lock(&self.0);
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *lock(&self.0)
    }
}

/// Counters keyed `name` or `name{dimension=value}`.
#[derive(Default)]
pub struct CountingMetrics(Mutex<BTreeMap<String, u64>>);

impl CountingMetrics {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.0).clone()
    }
    pub fn get(&self, key: &str) -> u64 {
        lock(&self.0).get(key).copied().unwrap_or(0)
    }
}

impl Metrics for CountingMetrics {
    fn add(&self, name: &'static str, value: u64, dimension: Option<(&'static str, &str)>) {
        // Called a few times per message: look the key up borrowed and only allocate it the first time.
        fn bump(map: &mut BTreeMap<String, u64>, key: &str, value: u64) {
            match map.get_mut(key) {
                Some(count) => *count += value,
                None => {
                    map.insert(key.to_owned(), value);
                }
            }
        }
        let mut map = lock(&self.0);
        bump(&mut map, name, value);
        if let Some((d, v)) = dimension {
            bump(&mut map, &dimensioned(name, d, v), value);
        }
    }

    fn add_for(
        &self,
        channel: &str,
        name: &'static str,
        value: u64,
        dimension: Option<(&'static str, &str)>,
    ) {
        self.add(name, value, dimension);
        let key = dimensioned(name, "channel", channel);
        *lock(&self.0).entry(key).or_default() += value;
    }
}

/// `name{dimension=value}`, the key of a split counter.
fn dimensioned(name: &str, dimension: &str, value: &str) -> String {
    let mut key = String::with_capacity(name.len() + dimension.len() + value.len() + 3);
    for part in [name, "{", dimension, "=", value, "}"] {
        key.push_str(part);
    }
    key
}
