//! Idempotency: a key derived from the business identity (never from the delivery), a fingerprint of the
//! payload, and the decision a claim comes to.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `{business identity}:{step}`, e.g. `receipt:store-042:r-1001:post-sale-to-erp`. The same key is sent
/// to the ERP and the loyalty platform, so a retried call is recognised there too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn for_step(business_key: &str, step: &str) -> Self {
        Self(format!("{business_key}:{step}"))
    }
    /// The key of attempt `retries + 1` of the same effect: the key itself for the first attempt,
    /// `{key}:retry-{n}` after `n` operator retries (see [`crate::retry`]). The ERP and the loyalty
    /// platform see a new key only after they refused the last one, so nothing is applied twice.
    pub fn attempt(&self, retries: u32) -> Self {
        if retries == 0 {
            self.clone()
        } else {
            Self(format!("{}:retry-{retries}", self.0))
        }
    }
    /// For keys read back from a store.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of the canonical JSON of the payload a step acts on. Same key + other fingerprint means a
/// sender reused an identity for different content: that is refused, visibly, never applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of<T: Serialize>(payload: &T) -> Self {
        // serde_json writes struct fields in declaration order and maps sorted (no preserve_order), so
        // the same payload always gives the same bytes.
        // The JSON is streamed into the hash rather than collected into a buffer first.
        struct Hashing(Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut hashing = Hashing(Sha256::new());
        serde_json::to_writer(&mut hashing, payload).expect("payloads serialize");
        Self(hex(&hashing.0.finalize()))
    }
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lower-case hex of `bytes`, by table: a `format!` per byte showed up in the step profile.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecordState {
    /// A delivery claimed the step and is doing its side effect. If it crashes, the claim lapses at
    /// `lease_until` and the next delivery takes over.
    InProgress { lease_until: Timestamp },
    /// The side effect is done; `result` is what the step needs to finish again (publish) without redoing it.
    Completed { result: serde_json::Value },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub state: RecordState,
    /// After this the record is gone (DynamoDB TTL; deletion is lazy, so readers also check it).
    pub expires_at: Timestamp,
}

impl IdempotencyRecord {
    /// Whether the record still blocks a new claim at `now`: not past its TTL, and not an in-progress
    /// claim whose lease ran out. Adapters put exactly this as the condition of their insert.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at > now
            && match &self.state {
                RecordState::InProgress { lease_until } => *lease_until > now,
                RecordState::Completed { .. } => true,
            }
    }
}

/// What a claim comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nobody did this yet (or a crashed attempt's lease ran out): do the side effect.
    Proceed,
    /// Done before: here is the stored result; finish (publish) again without redoing the effect.
    AlreadyDone(serde_json::Value),
    /// Another delivery is on it right now.
    InProgress { retry_after: Duration },
    /// The key was used for a different payload.
    KeyReused,
}

/// How long records live and how long an in-progress claim holds.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyPolicy {
    /// Longer than the longest a step may run (the Lambda timeout), shorter than the queue's visibility
    /// timeout, so a redelivery after a crash finds the lease lapsed.
    pub lease: Duration,
    /// How long a completed record is kept: longer than any redelivery or replay window.
    pub retention: Duration,
}

impl Default for IdempotencyPolicy {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(35 * 24 * 3600),
        }
    }
}

impl IdempotencyPolicy {
    pub fn in_progress(
        &self,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            key,
            fingerprint,
            state: RecordState::InProgress {
                lease_until: now + self.lease,
            },
            expires_at: now + self.retention,
        }
    }

    pub fn completed(
        &self,
        claim: &IdempotencyRecord,
        result: serde_json::Value,
        now: Timestamp,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            key: claim.key.clone(),
            fingerprint: claim.fingerprint.clone(),
            state: RecordState::Completed { result },
            expires_at: now + self.retention,
        }
    }
}

/// The decision, given the live record that blocked our insert.
pub fn decide(existing: &IdempotencyRecord, fingerprint: &Fingerprint, now: Timestamp) -> Claim {
    if &existing.fingerprint != fingerprint {
        return Claim::KeyReused;
    }
    match &existing.state {
        RecordState::Completed { result } => Claim::AlreadyDone(result.clone()),
        RecordState::InProgress { lease_until } => Claim::InProgress {
            retry_after: lease_until.duration_since(now).unsigned_abs(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn the_same_payload_gives_the_same_fingerprint_and_another_payload_another() {
        let a = Fingerprint::of(&serde_json::json!({"a": 1, "b": [1, 2]}));
        let b = Fingerprint::of(&serde_json::json!({"b": [1, 2], "a": 1}));
        let c = Fingerprint::of(&serde_json::json!({"a": 2, "b": [1, 2]}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_completed_record_returns_its_result_and_a_different_payload_is_refused() {
        let policy = IdempotencyPolicy::default();
        let fp = Fingerprint::of(&1);
        let claim = policy.in_progress(IdempotencyKey::for_step("receipt:s:r", "x"), fp.clone(), at(0));
        let done = policy.completed(&claim, serde_json::json!({"doc": "D1"}), at(1));
        assert_eq!(
            decide(&done, &fp, at(2)),
            Claim::AlreadyDone(serde_json::json!({"doc": "D1"}))
        );
        assert_eq!(decide(&done, &Fingerprint::of(&2), at(2)), Claim::KeyReused);
    }

    #[test]
    fn an_in_progress_claim_says_when_to_retry_and_lapses_after_its_lease() {
        let policy = IdempotencyPolicy::default();
        let fp = Fingerprint::of(&1);
        let claim = policy.in_progress(IdempotencyKey::for_step("k", "x"), fp.clone(), at(0));
        assert_eq!(
            decide(&claim, &fp, at(20)),
            Claim::InProgress {
                retry_after: Duration::from_secs(40)
            }
        );
        assert!(claim.is_live(at(59)));
        assert!(
            !claim.is_live(at(60)),
            "a crashed attempt must not block the key forever"
        );
    }

    #[test]
    fn a_record_past_its_retention_no_longer_blocks() {
        let policy = IdempotencyPolicy::default();
        let claim = policy.in_progress(IdempotencyKey::for_step("k", "x"), Fingerprint::of(&1), at(0));
        let done = policy.completed(&claim, serde_json::Value::Null, at(0));
        assert!(done.is_live(at(3600)));
        assert!(!done.is_live(at(36 * 24 * 3600)));
    }
}
