//! The loyalty simulator. Rules:
//!
//! Members
//! - a member exists once enrolled: by [`LoyaltySimulator::enrol`] (balance 0), or by
//!   [`LoyaltySimulator::seed_balance`] (an opening balance, for demos and tests; also what an operator
//!   does before retrying a call refused as `member_not_found`). Nobody is enrolled by being given
//!   points, and reading does not enrol either: every call about a member not enrolled (accrue,
//!   balance, hold, adjust, profile sync, merge) is refused (404 `member_not_found`);
//! - enrolling an enrolled member changes nothing; ids starting with `unknown-` were never issued as
//!   cards and are refused (422 `enrolment_refused`);
//! - a member's profile is the last member snapshot synced to them, kept whole when its revision is
//!   higher than the stored one's, else left as it is (an erased member's keeps no personal data);
//! - a member's state is a balance and the open holds on it: `held` is what the holds reserve,
//!   `available = balance − held` what a new hold or a reversal may take. `0 ≤ held ≤ balance` always.
//!
//! Merging
//! - merging a duplicate into a survivor moves the duplicate's whole balance, as a `merge_out`
//!   transaction on the duplicate and a `merge_in` on the survivor (each naming the other member), and
//!   closes the duplicate as merged. The duplicate's earlier transactions stay on its own ledger, which
//!   keeps "opening balance + ledger = balance" true per member: the merge pair links the two histories;
//! - refused (422 `merge_refused`): the same member twice, a duplicate merged into another member, a
//!   survivor that is itself merged, a duplicate with open holds (they must be committed, released or
//!   expire first), a survivor balance past the largest one; refused (404 `member_not_found`) when
//!   either is not enrolled. Merging a duplicate already merged into the same survivor returns the first
//!   merge's points moved, under any key, and moves nothing more;
//! - a merged member can still be read (balance 0) and synced, but every call that gives or takes points
//!   (accrue, hold, adjust) is refused (409 `member_merged`, naming the survivor);
//!
//! Earning
//! - points = eligible net amount in whole currency units, rounded down: `eligible_minor /
//!   minor_per_major` (1 point per 1.00 EUR, per 1 JPY, per 1.000 KWD);
//!
//! Redeeming
//! - a point is worth 0.01 of the major currency unit, rounded down: `value_minor = points ×
//!   minor_per_major / 100` (EUR: 1 point = 1 cent; JPY: 100 points = 1 yen; KWD: 1 point = 10 fils);
//! - a hold reserves points for a basket: refused (422) `invalid_hold` for 0 points or an `expires_at`
//!   not after now, `insufficient_points` when fewer than its points are available, `exceeds_basket`
//!   when their value exceeds `basket_net_minor`; holds are numbered `H-00000001`, … and start `held`;
//! - a held hold whose `expires_at` is at or before now is `expired` and its points are available
//!   again. "Now" is the simulator's clock ([`LoyaltySimulator::set_clock`], the system clock by
//!   default), read for expiry only; expiry is evaluated lazily, at the start of every call;
//! - committing a hold to a transaction spends its points: the balance drops by them, a `redemption`
//!   transaction is booked and the hold is `committed`. Refused: an unknown hold (404
//!   `hold_not_found`), an expired or released one (409 `hold_expired` / `hold_released`), one
//!   committed to another transaction (409 `hold_committed`), other points than the hold's (422
//!   `points_mismatch`). Committing again to the same transaction for the same points returns the
//!   committed hold, under any key: the commit is idempotent by its business identity too;
//! - releasing a held hold makes it `released` and its points available; a released or expired hold is
//!   returned as it is; a committed one is refused (409 `hold_committed`: re-credit it instead); an
//!   unknown one is 404 `hold_not_found`;
//!
//! Adjusting
//! - a re-credit adds its points (422 `balance_limit` past the largest balance);
//! - a reversal takes its points back, but never more than are available: `Points` cannot be negative,
//!   and points an open hold reserves were promised to a basket. It takes what it can and the answer's
//!   `delta` (and the ledger) say what was applied; a platform allowing negative balances would take
//!   it all;
//! - an adjustment of 0 points is refused (422 `invalid_adjustment`): callers skip those;
//!
//! Books
//! - every change of a balance is a ledger transaction numbered `LT-00000001`, … of kind `accrual`,
//!   `redemption`, `reversal`, `recredit`, `merge_out` or `merge_in` with its signed points (seeded
//!   balances are opening balances, outside the ledger);
//! - the idempotency contract is the ERP's, over one key space for every mutating call (accrue, hold,
//!   commit, release, adjust, enrol, profile sync, merge): first answer again for a repeated key, 409
//!   `idempotency_key_reused` if the key comes with another request. Each of them is journaled, so a
//!   replayed journal enrols, syncs and merges again too;
//! - reads (balance, hold) are not counted as requests and meet only the `down` fault (503) and the
//!   latency: the scripted and random faults are for the calls that change something.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{MemberStatus, TransactionRef};
use retail_sync_contracts::values::{
    Amount, Currency, ExternalRef, HoldId, MAX_SAFE_INTEGER, MemberId, Points,
};
use retail_sync_core::memory::ManualClock;
use retail_sync_core::ports::{
    Accrual, AccrualRequest, Adjustment, AdjustmentKind, AdjustmentRequest, Balance, Clock, CommitRequest,
    Hold, HoldRequest, HoldStatus, MemberSnapshot, SystemClock,
};

use crate::error::SimError;
use crate::faults::Faults;
use crate::members::{MemberSynced, keep_latest};
use crate::system::{Gate, Shared, parse_journal, write_journal};

/// What a ledger transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoyaltyTransactionKind {
    /// Points earned on a transaction.
    Accrual,
    /// Points spent on an order (a committed hold).
    Redemption,
    /// Earned points taken back.
    Reversal,
    /// Redeemed points given back.
    Recredit,
    /// A merged duplicate's balance leaving it (`counterpart_member_id`: the survivor).
    MergeOut,
    /// A merged duplicate's balance arriving at the survivor (`counterpart_member_id`: the duplicate).
    MergeIn,
}

impl LoyaltyTransactionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accrual => "accrual",
            Self::Redemption => "redemption",
            Self::Reversal => "reversal",
            Self::Recredit => "recredit",
            Self::MergeOut => "merge_out",
            Self::MergeIn => "merge_in",
        }
    }
}

/// One change of a member's balance, as the loyalty platform's ledger shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoyaltyTransaction {
    pub loyalty_transaction_id: ExternalRef,
    pub kind: LoyaltyTransactionKind,
    pub idempotency_key: String,
    pub member_id: MemberId,
    /// What earned, spent or is corrected; merges have none (they move a balance, not a sale's points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionRef>,
    /// Signed change of the balance: positive for accruals, re-credits and merges in, negative for
    /// redemptions, reversals and merges out. The ledger's sum per member plus their opening balance is
    /// their balance.
    pub points: i64,
    pub balance_after: Points,
    /// Accruals: the currency of `eligible_minor`; redemptions: of `value_minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// Accruals only: the amount the points were earned on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_minor: Option<Amount>,
    /// Redemptions only: the hold spent and what its points were worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<HoldId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_minor: Option<Amount>,
    /// Adjustments only: what caused the correction (a return id, a cancellation id, `compensation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Reversals that could not take all they asked for: the points asked (`points` is what was taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_points: Option<Points>,
    /// Merges only: the other member of the merge (the survivor on `merge_out`, the duplicate on
    /// `merge_in`), which links the duplicate's history to the survivor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterpart_member_id: Option<MemberId>,
    /// The caller's instant for accruals and adjustments; the platform's clock for redemptions and
    /// merges (their calls carry none).
    pub occurred_at: Timestamp,
}

impl LoyaltyTransaction {
    /// The transaction as the `LoyaltyBooks` port shows it.
    pub fn booked(&self) -> retail_sync_core::ports::BookedPoints {
        use retail_sync_core::ports::PointsKind;
        retail_sync_core::ports::BookedPoints {
            loyalty_transaction_id: self.loyalty_transaction_id.clone(),
            kind: match self.kind {
                LoyaltyTransactionKind::Accrual => PointsKind::Accrual,
                LoyaltyTransactionKind::Redemption => PointsKind::Redemption,
                LoyaltyTransactionKind::Reversal => PointsKind::Reversal,
                LoyaltyTransactionKind::Recredit => PointsKind::Recredit,
                LoyaltyTransactionKind::MergeOut | LoyaltyTransactionKind::MergeIn => PointsKind::Merge,
            },
            member_id: self.member_id.clone(),
            transaction: self.transaction.clone(),
            reference: self.reference.clone(),
            points: self.points,
            requested_points: self.requested_points,
            value_minor: self.value_minor,
            pending_points: None,
            occurred_at: self.occurred_at,
        }
    }
}

/// A change made to the ledger behind the platform's back (see [`LoyaltySimulator::tamper`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    Lose,
    Duplicate,
    SetPoints(i64),
}

/// A merge as the idempotency record and the journal keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRequest {
    pub duplicate_id: MemberId,
    pub survivor_id: MemberId,
}

/// What a merge answers: the points it moved (0 for an empty balance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOutcome {
    pub points_moved: Points,
}

/// A member as the platform shows them (reports, tests, the admin state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoyaltyMemberView {
    pub member_id: MemberId,
    /// `active`, or `merged` once merged into `merged_into` (the platform's own status; an erasure is
    /// in the profile).
    pub status: MemberStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<MemberId>,
    pub balance: Points,
    pub held: Points,
    /// The last member snapshot synced to the member, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<MemberSnapshot>,
}

/// Every mutating call, as the idempotency record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "request", rename_all = "snake_case")]
pub enum LoyaltyCall {
    Accrue(AccrualRequest),
    CreateHold(HoldRequest),
    Commit(HoldId, CommitRequest),
    Release(HoldId),
    Adjust(AdjustmentRequest),
    Enrol(MemberId),
    SyncMember(MemberSnapshot),
    Merge(MergeRequest),
}

/// Every answer of a mutating call, as the idempotency record keeps it.
#[derive(Debug, Clone)]
pub enum LoyaltyAnswer {
    Accrual(Accrual),
    Hold(Hold),
    Adjustment(Adjustment),
    Enrolled,
    MemberSynced(MemberSynced),
    MergeOutcome(MergeOutcome),
}

/// The answer type of one kind of call, in and out of [`LoyaltyAnswer`]. A key's recorded answer is
/// only handed back for an equal request, hence of the same kind: `unwrap` cannot meet another one.
trait Answer: Sized {
    fn wrap(self) -> LoyaltyAnswer;
    fn unwrap(answer: LoyaltyAnswer) -> Self;
}

macro_rules! answer {
    ($t:ident) => {
        impl Answer for $t {
            fn wrap(self) -> LoyaltyAnswer {
                LoyaltyAnswer::$t(self)
            }
            fn unwrap(answer: LoyaltyAnswer) -> Self {
                match answer {
                    LoyaltyAnswer::$t(a) => a,
                    other => unreachable!(
                        "a key's recorded answer has its request's kind, got {other:?} for a {}",
                        stringify!($t)
                    ),
                }
            }
        }
    };
}

answer!(Accrual);
answer!(Hold);
answer!(Adjustment);
answer!(MemberSynced);
answer!(MergeOutcome);

/// An enrolment answers nothing but success.
impl Answer for () {
    fn wrap(self) -> LoyaltyAnswer {
        LoyaltyAnswer::Enrolled
    }
    fn unwrap(answer: LoyaltyAnswer) -> Self {
        match answer {
            LoyaltyAnswer::Enrolled => {}
            other => {
                unreachable!("a key's recorded answer has its request's kind, got {other:?} for an enrolment")
            }
        }
    }
}

/// An enrolled member: points as plain numbers (the rules keep `0 ≤ held ≤ balance ≤
/// MAX_SAFE_INTEGER`), whether they were merged, and their profile.
#[derive(Debug, Clone, Default)]
struct Member {
    balance: i64,
    held: i64,
    /// Once merged: the survivor, and the points the merge moved (what merging again answers).
    merged: Option<(MemberId, Points)>,
    profile: Option<MemberSnapshot>,
}

/// The platform's books; apart from the gate so that the gate's `apply` can borrow them.
#[derive(Default)]
struct Books {
    transactions: Vec<LoyaltyTransaction>,
    members: BTreeMap<String, Member>,
    holds: Vec<Hold>,
    hold_index: HashMap<HoldId, usize>,
    /// The held holds by expiry (with their index), so lazy expiry looks at the due ones only.
    open: BTreeSet<(Timestamp, usize)>,
    /// Transactions taken off the ledger by [`LoyaltySimulator::tamper`]: ids stay unique after one is lost.
    lost: usize,
}

struct LoyaltyState {
    gate: Gate<LoyaltyCall, LoyaltyAnswer>,
    books: Books,
    clock: Arc<dyn Clock>,
}

impl Default for LoyaltyState {
    fn default() -> Self {
        Self {
            gate: Gate::default(),
            books: Books::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

fn points(n: i64) -> Points {
    Points::new(n).expect("the rules keep balances and holds within 0..=MAX_SAFE_INTEGER")
}

fn member_not_found(member: &str) -> SimError {
    SimError::refused(404, "member_not_found", format!("no member {member}"))
}

fn hold_not_found(hold_id: &HoldId) -> SimError {
    SimError::refused(404, "hold_not_found", format!("no hold {hold_id}"))
}

fn merge_refused(message: String) -> SimError {
    SimError::refused(422, "merge_refused", message)
}

impl Books {
    /// An enrolled member (merged or not); 404 `member_not_found` for anyone else.
    fn enrolled(&self, member_id: &MemberId) -> Result<&Member, SimError> {
        self.members
            .get(member_id.as_str())
            .ok_or_else(|| member_not_found(member_id.as_str()))
    }

    /// An enrolled member that may be given or take points: not merged (409 `member_merged`, naming
    /// the survivor the caller should use instead).
    fn active(&self, member_id: &MemberId) -> Result<&Member, SimError> {
        let m = self.enrolled(member_id)?;
        match &m.merged {
            Some((survivor, _)) => Err(SimError::refused(
                409,
                "member_merged",
                format!("member {member_id} was merged into {survivor}"),
            )),
            None => Ok(m),
        }
    }

    /// [`Books::active`] for a change, once every refusal has been checked.
    fn active_mut(&mut self, member_id: &MemberId) -> Result<&mut Member, SimError> {
        self.active(member_id)?;
        self.members
            .get_mut(member_id.as_str())
            .ok_or_else(|| member_not_found(member_id.as_str()))
    }

    fn enrol(&mut self, member_id: &MemberId) -> Result<(), SimError> {
        let member = member_id.as_str();
        if self.members.contains_key(member) {
            return Ok(());
        }
        if member.starts_with("unknown-") {
            return Err(SimError::refused(
                422,
                "enrolment_refused",
                format!("member {member}: no card was issued with this number"),
            ));
        }
        self.members.insert(member.to_owned(), Member::default());
        Ok(())
    }

    fn sync_member(&mut self, snapshot: &MemberSnapshot) -> Result<MemberSynced, SimError> {
        self.enrolled(&snapshot.member_id)?;
        let m = self
            .members
            .get_mut(snapshot.member_id.as_str())
            .ok_or_else(|| member_not_found(snapshot.member_id.as_str()))?;
        Ok(keep_latest(&mut m.profile, snapshot))
    }

    fn merge(&mut self, request: &MergeRequest, key: &str, now: Timestamp) -> Result<MergeOutcome, SimError> {
        let (duplicate_id, survivor_id) = (&request.duplicate_id, &request.survivor_id);
        if duplicate_id == survivor_id {
            return Err(merge_refused(format!(
                "member {duplicate_id} cannot be merged into itself"
            )));
        }
        let duplicate = self.enrolled(duplicate_id)?;
        let survivor = self.enrolled(survivor_id)?;
        match &duplicate.merged {
            // Merged before into this survivor (under another key, say after the first answer was lost
            // with its key): the first merge's answer, nothing moved again.
            Some((into, moved)) if into == survivor_id => {
                return Ok(MergeOutcome { points_moved: *moved });
            }
            Some((into, _)) => {
                return Err(merge_refused(format!(
                    "member {duplicate_id} was already merged into {into}"
                )));
            }
            None => {}
        }
        if let Some((into, _)) = &survivor.merged {
            return Err(merge_refused(format!(
                "survivor {survivor_id} was itself merged into {into}"
            )));
        }
        // Held points were promised to a basket on the duplicate's account: moving them would break the
        // hold's commit, and leaving them would leave a merged member with points.
        if duplicate.held > 0 {
            return Err(merge_refused(format!(
                "member {duplicate_id} has {} points in open holds",
                duplicate.held
            )));
        }
        let moved = duplicate.balance;
        let survivor_balance = survivor.balance + moved;
        if survivor_balance > MAX_SAFE_INTEGER {
            return Err(merge_refused(format!(
                "survivor {survivor_id}: a balance above {MAX_SAFE_INTEGER}"
            )));
        }
        let moved = points(moved);
        let transaction = |books: &Self, kind, member_id: &MemberId, counterpart: &MemberId, delta, after| {
            LoyaltyTransaction {
                loyalty_transaction_id: books.next_transaction_id(),
                kind,
                idempotency_key: key.to_owned(),
                member_id: member_id.clone(),
                transaction: None,
                points: delta,
                balance_after: points(after),
                currency: None,
                eligible_minor: None,
                hold_id: None,
                value_minor: None,
                reference: None,
                requested_points: None,
                counterpart_member_id: Some(counterpart.clone()),
                occurred_at: now,
            }
        };
        // Both sides are booked even for an empty balance: the pair is what links the two histories.
        let out = transaction(
            self,
            LoyaltyTransactionKind::MergeOut,
            duplicate_id,
            survivor_id,
            -moved.get(),
            0,
        );
        self.transactions.push(out);
        let into = transaction(
            self,
            LoyaltyTransactionKind::MergeIn,
            survivor_id,
            duplicate_id,
            moved.get(),
            survivor_balance,
        );
        self.transactions.push(into);
        // Both were found enrolled above, under the same lock.
        if let Some(d) = self.members.get_mut(duplicate_id.as_str()) {
            d.balance = 0;
            d.merged = Some((survivor_id.clone(), moved));
        }
        if let Some(s) = self.members.get_mut(survivor_id.as_str()) {
            s.balance = survivor_balance;
        }
        Ok(MergeOutcome { points_moved: moved })
    }

    /// Expires the held holds due at `now`: their points become available again.
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(expires_at, i)) = self.open.first()
            && expires_at <= now
        {
            self.open.pop_first();
            let hold = &mut self.holds[i];
            hold.status = HoldStatus::Expired;
            self.unreserve(i);
        }
    }

    /// Gives the points of hold `i` back to its member's available points (it is no longer held).
    fn unreserve(&mut self, i: usize) {
        let hold = &self.holds[i];
        self.open.remove(&(hold.expires_at, i));
        if let Some(m) = self.members.get_mut(hold.member_id.as_str()) {
            m.held -= hold.points.get();
        }
    }

    fn hold(&self, hold_id: &HoldId) -> Result<usize, SimError> {
        self.hold_index
            .get(hold_id)
            .copied()
            .ok_or_else(|| hold_not_found(hold_id))
    }

    fn next_transaction_id(&self) -> ExternalRef {
        ExternalRef::parse(format!("LT-{:08}", self.transactions.len() + self.lost + 1))
            .expect("LT- followed by digits is a valid ExternalRef")
    }

    fn balance(&self, member_id: &MemberId) -> Result<Balance, SimError> {
        let m = self.enrolled(member_id)?;
        Ok(Balance {
            member_id: member_id.clone(),
            balance: points(m.balance),
            held: points(m.held),
            available: points(m.balance - m.held),
            pending: Points::ZERO,
        })
    }

    fn accrue(&mut self, request: &AccrualRequest, key: &str) -> Result<Accrual, SimError> {
        let member = request.member_id.as_str();
        let earned = points_for(request.eligible_minor, request.currency);
        let m = self.active(&request.member_id)?;
        let balance = Points::new(m.balance + earned.get())
            .map_err(|e| SimError::refused(422, "balance_limit", format!("member {member}: {e}")))?;
        self.active_mut(&request.member_id)?.balance = balance.get();
        let loyalty_transaction_id = self.next_transaction_id();
        self.transactions.push(LoyaltyTransaction {
            loyalty_transaction_id: loyalty_transaction_id.clone(),
            kind: LoyaltyTransactionKind::Accrual,
            idempotency_key: key.to_owned(),
            member_id: request.member_id.clone(),
            transaction: Some(request.transaction.clone()),
            points: earned.get(),
            balance_after: balance,
            currency: Some(request.currency),
            eligible_minor: Some(request.eligible_minor),
            hold_id: None,
            value_minor: None,
            reference: None,
            requested_points: None,
            counterpart_member_id: None,
            occurred_at: request.occurred_at,
        });
        Ok(Accrual {
            loyalty_transaction_id,
            points: earned,
            balance,
            pending: false,
        })
    }

    fn create_hold(&mut self, request: &HoldRequest, now: Timestamp) -> Result<Hold, SimError> {
        let member = request.member_id.as_str();
        let m = self.active(&request.member_id)?;
        let wanted = request.points.get();
        if wanted == 0 {
            return Err(SimError::refused(422, "invalid_hold", "a hold of 0 points"));
        }
        if request.expires_at <= now {
            return Err(SimError::refused(
                422,
                "invalid_hold",
                format!("expires_at {} is not after now ({now})", request.expires_at),
            ));
        }
        let available = m.balance - m.held;
        if available < wanted {
            return Err(SimError::refused(
                422,
                "insufficient_points",
                format!("member {member} has {available} points available, the hold needs {wanted}"),
            ));
        }
        let value = points_value(request.points, request.currency)
            .filter(|value| *value <= request.basket_net_minor)
            .ok_or_else(|| {
                SimError::refused(
                    422,
                    "exceeds_basket",
                    format!(
                        "{wanted} points are worth more than the basket's {} {} before tax",
                        request.basket_net_minor, request.currency
                    ),
                )
            })?;
        let i = self.holds.len();
        let hold_id =
            HoldId::parse(format!("H-{:08}", i + 1)).expect("H- followed by digits is a valid HoldId");
        let hold = Hold {
            hold_id: hold_id.clone(),
            member_id: request.member_id.clone(),
            points: request.points,
            currency: request.currency,
            value_minor: value,
            status: HoldStatus::Held,
            expires_at: request.expires_at,
            transaction: None,
            loyalty_transaction_id: None,
        };
        self.active_mut(&request.member_id)?.held += wanted;
        self.holds.push(hold.clone());
        self.hold_index.insert(hold_id, i);
        self.open.insert((request.expires_at, i));
        Ok(hold)
    }

    fn commit(
        &mut self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &str,
        now: Timestamp,
    ) -> Result<Hold, SimError> {
        let i = self.hold(hold_id)?;
        let hold = &self.holds[i];
        let mismatch = || {
            SimError::refused(
                422,
                "points_mismatch",
                format!(
                    "hold {hold_id} is for {} points, not {}",
                    hold.points, request.points
                ),
            )
        };
        match hold.status {
            HoldStatus::Expired => {
                return Err(SimError::refused(
                    409,
                    "hold_expired",
                    format!("hold {hold_id} expired at {}", hold.expires_at),
                ));
            }
            HoldStatus::Released => {
                return Err(SimError::refused(
                    409,
                    "hold_released",
                    format!("hold {hold_id} was released"),
                ));
            }
            // The same commit again, say under another key after the first answer was lost along with
            // its key: the committed hold, not a refusal the caller would take for a failed redemption.
            HoldStatus::Committed if hold.transaction.as_ref() == Some(&request.transaction) => {
                return if hold.points == request.points {
                    Ok(hold.clone())
                } else {
                    Err(mismatch())
                };
            }
            HoldStatus::Committed => {
                return Err(SimError::refused(
                    409,
                    "hold_committed",
                    format!("hold {hold_id} is committed to another transaction"),
                ));
            }
            HoldStatus::Held if hold.points != request.points => return Err(mismatch()),
            HoldStatus::Held => {}
        }
        self.unreserve(i);
        let hold = &self.holds[i];
        let spent = hold.points.get();
        let m = self
            .members
            .get_mut(hold.member_id.as_str())
            .expect("a held hold's member is enrolled");
        // `held ≤ balance` held before the hold was unreserved, so the points are there.
        m.balance -= spent;
        let balance_after = points(m.balance);
        let loyalty_transaction_id = self.next_transaction_id();
        self.transactions.push(LoyaltyTransaction {
            loyalty_transaction_id: loyalty_transaction_id.clone(),
            kind: LoyaltyTransactionKind::Redemption,
            idempotency_key: key.to_owned(),
            member_id: hold.member_id.clone(),
            transaction: Some(request.transaction.clone()),
            points: -spent,
            balance_after,
            currency: Some(hold.currency),
            eligible_minor: None,
            hold_id: Some(hold_id.clone()),
            value_minor: Some(hold.value_minor),
            reference: None,
            requested_points: None,
            counterpart_member_id: None,
            occurred_at: now,
        });
        let hold = &mut self.holds[i];
        hold.status = HoldStatus::Committed;
        hold.transaction = Some(request.transaction.clone());
        hold.loyalty_transaction_id = Some(loyalty_transaction_id);
        Ok(hold.clone())
    }

    fn release(&mut self, hold_id: &HoldId) -> Result<Hold, SimError> {
        let i = self.hold(hold_id)?;
        match self.holds[i].status {
            HoldStatus::Held => {
                self.unreserve(i);
                self.holds[i].status = HoldStatus::Released;
            }
            HoldStatus::Released | HoldStatus::Expired => {}
            HoldStatus::Committed => {
                return Err(SimError::refused(
                    409,
                    "hold_committed",
                    format!("hold {hold_id} is committed; re-credit its points instead"),
                ));
            }
        }
        Ok(self.holds[i].clone())
    }

    fn adjust(&mut self, request: &AdjustmentRequest, key: &str) -> Result<Adjustment, SimError> {
        let member = request.member_id.as_str();
        let m = self.active(&request.member_id)?;
        let (balance, held) = (m.balance, m.held);
        let asked = request.points.get();
        if asked == 0 {
            return Err(SimError::refused(
                422,
                "invalid_adjustment",
                "an adjustment of 0 points",
            ));
        }
        let (kind, delta) = match request.kind {
            AdjustmentKind::Recredit => {
                if balance + asked > MAX_SAFE_INTEGER {
                    return Err(SimError::refused(
                        422,
                        "balance_limit",
                        format!("member {member}: a balance above {MAX_SAFE_INTEGER}"),
                    ));
                }
                (LoyaltyTransactionKind::Recredit, asked)
            }
            AdjustmentKind::Reversal => (LoyaltyTransactionKind::Reversal, -asked.min(balance - held)),
        };
        let balance = balance + delta;
        self.active_mut(&request.member_id)?.balance = balance;
        let loyalty_transaction_id = self.next_transaction_id();
        self.transactions.push(LoyaltyTransaction {
            loyalty_transaction_id: loyalty_transaction_id.clone(),
            kind,
            idempotency_key: key.to_owned(),
            member_id: request.member_id.clone(),
            transaction: Some(request.transaction.clone()),
            points: delta,
            balance_after: points(balance),
            currency: None,
            eligible_minor: None,
            hold_id: None,
            value_minor: None,
            reference: Some(request.reference.clone()),
            requested_points: (delta.abs() != asked).then_some(request.points),
            counterpart_member_id: None,
            occurred_at: request.occurred_at,
        });
        Ok(Adjustment {
            loyalty_transaction_id,
            delta,
            balance: points(balance),
            pending_cancelled: Points::ZERO,
        })
    }
}

/// The simulated loyalty platform. Clones share one state.
#[derive(Clone, Default)]
pub struct LoyaltySimulator {
    shared: Arc<Shared<LoyaltyState>>,
}

fn view(member_id: MemberId, m: &Member) -> LoyaltyMemberView {
    LoyaltyMemberView {
        member_id,
        status: if m.merged.is_some() {
            MemberStatus::Merged
        } else {
            MemberStatus::Active
        },
        merged_into: m.merged.as_ref().map(|(survivor, _)| survivor.clone()),
        balance: points(m.balance),
        held: points(m.held),
        profile: m.profile.clone(),
    }
}

/// The earning rule: whole currency units of the eligible amount, rounded down.
pub fn points_for(eligible_minor: Amount, currency: Currency) -> Points {
    Points::new(eligible_minor.get() / currency.minor_per_major())
        .expect("a non-negative amount divided by a positive number stays in range")
}

/// The redemption rule: a point is worth 0.01 of the major unit, rounded down (`points ×
/// minor_per_major / 100`). `None` when the value is beyond any amount.
pub fn points_value(points: Points, currency: Currency) -> Option<Amount> {
    // i128: `points × 1000` (three-digit currencies) may pass i64 near the largest point count.
    let value = i128::from(points.get()) * i128::from(currency.minor_per_major()) / 100;
    Amount::new(i64::try_from(value).ok()?).ok()
}

impl LoyaltySimulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: Faults) -> Self {
        let sim = Self::new();
        sim.set_faults(faults);
        sim
    }

    /// The clock hold expiry is judged by (the system clock until set); tests set a manual one.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.shared.lock().clock = clock;
    }

    /// Enrols `member` if they are not (any id, `unknown-` ones included: an operator's fix) and gives
    /// them an opening balance of `balance` points, outside the ledger, for demos and tests. Replaces
    /// their balance, but never below what their open holds reserve. (An operator's act on the platform,
    /// not a call: not journaled; a local run seeds again before it replays the journal.)
    pub fn seed_balance(&self, member: &str, balance: Points) {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        // Holds past their expiry reserve nothing any more.
        state.books.expire(state.clock.now());
        let m = state.books.members.entry(member.to_owned()).or_default();
        m.balance = balance.get().max(m.held);
    }

    /// A mutating call: expiry first, then the gate (count, faults, idempotency), then `apply`.
    fn call<T: Answer>(
        &self,
        call: &LoyaltyCall,
        key: &str,
        apply: impl FnOnce(&mut Books, Timestamp) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let now = state.clock.now();
        state.books.expire(now);
        let books = &mut state.books;
        state
            .gate
            .call(call, key, now, || apply(books, now).map(T::wrap))
            .map(T::unwrap)
    }

    /// A read: expiry first; only `down` applies of the faults.
    fn read<T>(&self, read: impl FnOnce(&Books) -> Result<T, SimError>) -> Result<T, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        if state.gate.faults().down {
            return Err(SimError::Unavailable {
                message: "the platform is down (injected fault)",
            });
        }
        let now = state.clock.now();
        state.books.expire(now);
        read(&state.books)
    }

    /// Accrues points under the rules above; `key` is the caller's idempotency key.
    pub fn accrue(&self, request: &AccrualRequest, key: &str) -> Result<Accrual, SimError> {
        let call = LoyaltyCall::Accrue(request.clone());
        self.call(&call, key, |books, _| books.accrue(request, key))
    }

    /// The member's balance, held and available points under the rules above.
    pub fn member_balance(&self, member_id: &MemberId) -> Result<Balance, SimError> {
        self.read(|books| books.balance(member_id))
    }

    /// Reserves points for a basket under the rules above.
    pub fn create_hold(&self, request: &HoldRequest, key: &str) -> Result<Hold, SimError> {
        let call = LoyaltyCall::CreateHold(request.clone());
        self.call(&call, key, |books, now| books.create_hold(request, now))
    }

    /// A hold as it is now (404 `hold_not_found` for an unknown one).
    pub fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, SimError> {
        self.read(|books| books.hold(hold_id).map(|i| books.holds[i].clone()))
    }

    /// Spends a hold's points for `request.transaction` under the rules above.
    pub fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &str,
    ) -> Result<Hold, SimError> {
        let call = LoyaltyCall::Commit(hold_id.clone(), request.clone());
        self.call(&call, key, |books, now| books.commit(hold_id, request, key, now))
    }

    /// Gives a held reservation back under the rules above.
    pub fn release_hold(&self, hold_id: &HoldId, key: &str) -> Result<Hold, SimError> {
        let call = LoyaltyCall::Release(hold_id.clone());
        self.call(&call, key, |books, _| books.release(hold_id))
    }

    /// Reverses earned or re-credits redeemed points under the rules above.
    pub fn adjust(&self, request: &AdjustmentRequest, key: &str) -> Result<Adjustment, SimError> {
        let call = LoyaltyCall::Adjust(request.clone());
        self.call(&call, key, |books, _| books.adjust(request, key))
    }

    /// Enrols a member with balance 0 under the rules above (a no-op for an enrolled one).
    pub fn enrol(&self, member_id: &MemberId, key: &str) -> Result<(), SimError> {
        let call = LoyaltyCall::Enrol(member_id.clone());
        self.call(&call, key, |books, _| books.enrol(member_id))
    }

    /// Keeps `snapshot` as the enrolled member's profile unless a later revision is kept; answers the
    /// revision kept.
    pub fn sync_member(&self, snapshot: &MemberSnapshot, key: &str) -> Result<MemberSynced, SimError> {
        let call = LoyaltyCall::SyncMember(snapshot.clone());
        self.call(&call, key, |books, _| books.sync_member(snapshot))
    }

    /// Merges `duplicate_id` into `survivor_id` under the rules above; answers the points moved.
    pub fn merge(
        &self,
        duplicate_id: &MemberId,
        survivor_id: &MemberId,
        key: &str,
    ) -> Result<MergeOutcome, SimError> {
        let request = MergeRequest {
            duplicate_id: duplicate_id.clone(),
            survivor_id: survivor_id.clone(),
        };
        let call = LoyaltyCall::Merge(request.clone());
        self.call(&call, key, |books, now| books.merge(&request, key, now))
    }

    /// Keeps the journal of applied calls from now on (see `system`).
    pub fn keep_journal(&self) {
        self.shared.lock().gate.keep_journal();
    }

    /// The calls applied since the last take, one JSON text each, oldest first.
    pub fn take_journal(&self) -> Vec<String> {
        write_journal(self.shared.lock().gate.take_journal())
    }

    /// Every applied call with its key and answer, in no particular order: what a dialect's front (the
    /// Salesforce simulator) reads its own journals back from, so that its state is the journal's.
    pub fn applied(&self) -> Vec<(String, LoyaltyCall, LoyaltyAnswer)> {
        self.shared.lock().gate.entries()
    }

    /// Applies journal entries again, in order, each at the instant it was first applied (the clock is
    /// set back to what it was afterwards): the same transactions, balances and holds result.
    pub fn replay(&self, entries: &[String]) -> Result<(), String> {
        let entries = parse_journal::<LoyaltyCall>("loyalty", entries)?;
        let clock = self.shared.lock().clock.clone();
        let replayed = entries.iter().try_for_each(|entry| {
            self.set_clock(Arc::new(ManualClock::new(entry.at)));
            let key = entry.key.as_str();
            match &entry.call {
                LoyaltyCall::Accrue(r) => self.accrue(r, key).map(drop),
                LoyaltyCall::CreateHold(r) => self.create_hold(r, key).map(drop),
                LoyaltyCall::Commit(hold, r) => self.commit_hold(hold, r, key).map(drop),
                LoyaltyCall::Release(hold) => self.release_hold(hold, key).map(drop),
                LoyaltyCall::Adjust(r) => self.adjust(r, key).map(drop),
                LoyaltyCall::Enrol(member) => self.enrol(member, key),
                LoyaltyCall::SyncMember(snapshot) => self.sync_member(snapshot, key).map(drop),
                LoyaltyCall::Merge(r) => self.merge(&r.duplicate_id, &r.survivor_id, key).map(drop),
            }
            .map_err(|e| format!("loyalty journal entry {key}: {e}"))
        });
        self.set_clock(clock);
        replayed
    }

    /// The member's balance; `None` for a member never enrolled.
    pub fn balance(&self, member_id: &str) -> Option<Points> {
        let state = self.shared.lock();
        state.books.members.get(member_id).map(|m| points(m.balance))
    }

    /// Every member's balance (what they own, held points included), by member id.
    pub fn balances(&self) -> BTreeMap<String, u64> {
        self.shared
            .lock()
            .books
            .members
            .iter()
            .map(|(member, m)| (member.clone(), m.balance.unsigned_abs()))
            .collect()
    }

    /// The member as the platform shows them; `None` for a member never enrolled.
    pub fn member(&self, member_id: &MemberId) -> Option<LoyaltyMemberView> {
        let state = self.shared.lock();
        let m = state.books.members.get(member_id.as_str())?;
        Some(view(member_id.clone(), m))
    }

    /// Every enrolled member, merged ones included, by member id. (A balance seeded under a string that
    /// is no member id names nobody a call could reach, and is left out.)
    pub fn members(&self) -> Vec<LoyaltyMemberView> {
        let state = self.shared.lock();
        state
            .books
            .members
            .iter()
            .filter_map(|(id, m)| Some(view(MemberId::parse(id.as_str()).ok()?, m)))
            .collect()
    }

    /// Every ledger transaction (accruals, redemptions, reversals, re-credits, merges), in order.
    pub fn transactions(&self) -> Vec<LoyaltyTransaction> {
        self.shared.lock().books.transactions.clone()
    }

    /// What the platform's books hold, as reconciliation reads them: every movement with its business
    /// time in `[from, until)`.
    pub fn movements(&self, from: Timestamp, until: Timestamp) -> Vec<retail_sync_core::ports::BookedPoints> {
        let state = self.shared.lock();
        state
            .books
            .transactions
            .iter()
            .filter(|t| t.occurred_at >= from && t.occurred_at < until)
            .map(LoyaltyTransaction::booked)
            .collect()
    }

    /// Changes the ledger behind the platform's back, the way a lost write, a double booking or a manual
    /// correction in the platform's back office would: for reconciliation tests. `Lose` takes a
    /// transaction off the ledger and its points off the balance; `Duplicate` books it again under a new
    /// id; `SetPoints` changes its points (and the balance by the difference). `false`: no such
    /// transaction.
    pub fn tamper(&self, id: &str, change: Tamper) -> bool {
        let mut guard = self.shared.lock();
        let books = &mut guard.books;
        let Some(at) = books
            .transactions
            .iter()
            .position(|t| t.loyalty_transaction_id.as_str() == id)
        else {
            return false;
        };
        let t = books.transactions[at].clone();
        let delta = match change {
            Tamper::Lose => {
                books.transactions.remove(at);
                books.lost += 1;
                -t.points
            }
            Tamper::Duplicate => {
                let again = LoyaltyTransaction {
                    loyalty_transaction_id: books.next_transaction_id(),
                    idempotency_key: format!("{}:again", t.idempotency_key),
                    ..t.clone()
                };
                books.transactions.push(again);
                t.points
            }
            Tamper::SetPoints(points) => {
                books.transactions[at].points = points;
                points - t.points
            }
        };
        if let Some(m) = books.members.get_mut(t.member_id.as_str()) {
            m.balance += delta;
        }
        true
    }

    /// Every hold, in creation order, with its status as of now (expiry applied).
    pub fn holds(&self) -> Vec<Hold> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let now = state.clock.now();
        state.books.expire(now);
        state.books.holds.clone()
    }

    crate::system::fault_controls!("the loyalty platform");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::SignedDuration;
    use retail_sync_core::memory::ManualClock;

    use super::*;
    use crate::faults::FaultKind;
    use crate::samples::{accrual, adjustment, commit, erased_snapshot, hold, member_snapshot, order};

    const FIFTEEN_MINUTES: SignedDuration = SignedDuration::from_secs(900);

    fn refused<T: std::fmt::Debug>(result: Result<T, SimError>, status: u16, code: &str) {
        match result {
            Err(SimError::Refused {
                status: s, code: c, ..
            }) if s == status && c == code => {}
            other => panic!("expected {status} {code}, got {other:?}"),
        }
    }

    fn member(id: &str) -> MemberId {
        MemberId::parse(id).unwrap()
    }

    /// A platform on a manual clock, with `m-1` holding 5,000 points.
    fn platform() -> (LoyaltySimulator, Arc<ManualClock>) {
        let loyalty = LoyaltySimulator::new();
        let clock = Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
        loyalty.set_clock(clock.clone());
        loyalty.seed_balance("m-1", Points::new(5_000).unwrap());
        (loyalty, clock)
    }

    /// A 15-minute hold of `held` points of `m-1` on a basket of 100.00.
    fn hold_of(loyalty: &LoyaltySimulator, clock: &ManualClock, held: i64, key: &str) -> Hold {
        loyalty
            .create_hold(&hold("m-1", held, 10_000, clock.now(), FIFTEEN_MINUTES), key)
            .unwrap()
    }

    fn available(loyalty: &LoyaltySimulator, id: &str) -> (i64, i64, i64) {
        let b = loyalty.member_balance(&member(id)).unwrap();
        (b.balance.get(), b.held.get(), b.available.get())
    }

    fn amount(minor: i64) -> Amount {
        Amount::new(minor).unwrap()
    }

    fn currency(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn one_point_is_earned_per_whole_currency_unit_rounded_down() {
        assert_eq!(points_for(amount(12_345), currency("EUR")).get(), 123);
        assert_eq!(points_for(amount(99), currency("EUR")).get(), 0);
        assert_eq!(
            points_for(amount(1_234), currency("JPY")).get(),
            1_234,
            "JPY has no minor unit"
        );
        assert_eq!(
            points_for(amount(12_999), currency("KWD")).get(),
            12,
            "KWD has 1000 fils"
        );
    }

    /// A platform on the system clock with `m-1` enrolled (balance 0).
    fn enrolled() -> LoyaltySimulator {
        let loyalty = LoyaltySimulator::new();
        loyalty.enrol(&member("m-1"), "enrol-m-1").unwrap();
        loyalty
    }

    #[test]
    fn an_enrolled_members_accruals_add_up() {
        let loyalty = LoyaltySimulator::new();
        assert_eq!(loyalty.balance("m-1"), None);
        loyalty.enrol(&member("m-1"), "e").unwrap();
        assert_eq!(
            loyalty.balance("m-1"),
            Some(Points::ZERO),
            "enrolled with nothing"
        );
        let a = loyalty.accrue(&accrual("m-1", "r-1", 12_345), "k1").unwrap();
        assert_eq!((a.points.get(), a.balance.get()), (123, 123));
        assert_eq!(a.loyalty_transaction_id.as_str(), "LT-00000001");
        let b = loyalty.accrue(&accrual("m-1", "r-2", 1_000), "k2").unwrap();
        assert_eq!((b.points.get(), b.balance.get()), (10, 133));
        assert_eq!(b.loyalty_transaction_id.as_str(), "LT-00000002");
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(133));
        assert_eq!(loyalty.balances(), BTreeMap::from([("m-1".to_owned(), 133)]));
        assert_eq!(loyalty.transactions()[1].balance_after.get(), 133);
    }

    #[test]
    fn a_member_never_enrolled_is_refused_with_404_by_every_call_and_not_enrolled() {
        let loyalty = LoyaltySimulator::new();
        let now = Timestamp::now();
        for id in ["m-1", "unknown-9"] {
            refused(
                loyalty.accrue(&accrual(id, "r-1", 500), "a"),
                404,
                "member_not_found",
            );
            refused(loyalty.member_balance(&member(id)), 404, "member_not_found");
            refused(
                loyalty.create_hold(&hold(id, 1, 1_000, now, FIFTEEN_MINUTES), "h"),
                404,
                "member_not_found",
            );
            refused(
                loyalty.adjust(&adjustment(id, AdjustmentKind::Recredit, "o-1", "x", 5), "r"),
                404,
                "member_not_found",
            );
            refused(
                loyalty.sync_member(&member_snapshot(id, 1), "s"),
                404,
                "member_not_found",
            );
            assert_eq!(loyalty.balance(id), None);
            assert_eq!(loyalty.member(&member(id)), None);
        }
        assert!(loyalty.transactions().is_empty());
        assert!(loyalty.members().is_empty());
    }

    #[test]
    fn enrolling_is_idempotent_and_refuses_numbers_never_issued() {
        let loyalty = LoyaltySimulator::new();
        loyalty.enrol(&member("m-1"), "e1").unwrap();
        loyalty.accrue(&accrual("m-1", "r-1", 1_000), "a1").unwrap();
        // Enrolling again, under another key, changes nothing: the points stay.
        loyalty.enrol(&member("m-1"), "e2").unwrap();
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(10));
        refused(
            loyalty.enrol(&member("unknown-1"), "e3"),
            422,
            "enrolment_refused",
        );
        assert_eq!(loyalty.balance("unknown-1"), None);
        // An operator's seeded balance enrols even an `unknown-` id; enrolling it is then a no-op.
        loyalty.seed_balance("unknown-1", Points::new(5).unwrap());
        loyalty.enrol(&member("unknown-1"), "e4").unwrap();
        assert_eq!(loyalty.balance("unknown-1").map(Points::get), Some(5));
        refused(loyalty.enrol(&member("m-2"), "e1"), 409, "idempotency_key_reused");
        let view = loyalty.member(&member("m-1")).unwrap();
        assert_eq!(
            (view.status, view.merged_into, view.balance.get(), view.held.get()),
            (MemberStatus::Active, None, 10, 0)
        );
        assert_eq!(view.profile, None);
        assert_eq!(loyalty.members().len(), 2);
    }

    #[test]
    fn a_profile_keeps_the_highest_revision_synced() {
        let loyalty = enrolled();
        let synced = loyalty.sync_member(&member_snapshot("m-1", 2), "s2").unwrap();
        assert_eq!(synced.revision, 2);
        let older = MemberSnapshot {
            name: Some("Old Name".into()),
            ..member_snapshot("m-1", 1)
        };
        assert_eq!(loyalty.sync_member(&older, "s1").unwrap().revision, 2);
        assert_eq!(
            loyalty.member(&member("m-1")).unwrap().profile,
            Some(member_snapshot("m-1", 2))
        );
        loyalty.sync_member(&erased_snapshot("m-1", 3), "s3").unwrap();
        let profile = loyalty.member(&member("m-1")).unwrap().profile.unwrap();
        assert_eq!((profile.revision, profile.name, profile.email), (3, None, None));
        assert_eq!(
            loyalty
                .sync_member(&erased_snapshot("m-1", 3), "s3")
                .unwrap()
                .revision,
            3,
            "a repeated key answers again"
        );
        assert!(loyalty.transactions().is_empty(), "a profile is no points");
    }

    /// `m-1` (the duplicate) with 5,000 seeded and 123 earned, `m-2` (the survivor) with 40 earned.
    fn two_accounts() -> (LoyaltySimulator, Arc<ManualClock>) {
        let (loyalty, clock) = platform();
        loyalty.accrue(&accrual("m-1", "r-1", 12_345), "a1").unwrap();
        loyalty.enrol(&member("m-2"), "e2").unwrap();
        loyalty.accrue(&accrual("m-2", "r-2", 4_000), "a2").unwrap();
        (loyalty, clock)
    }

    #[test]
    fn a_merge_moves_the_whole_balance_once_and_closes_the_duplicate() {
        let (loyalty, clock) = two_accounts();
        let (m1, m2) = (member("m-1"), member("m-2"));
        let moved = loyalty.merge(&m1, &m2, "merge").unwrap();
        assert_eq!(moved.points_moved.get(), 5_123);
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(0));
        assert_eq!(loyalty.balance("m-2").map(Points::get), Some(5_163));

        let ledger = loyalty.transactions();
        let (out, into) = (&ledger[2], &ledger[3]);
        assert_eq!(
            (
                out.kind,
                out.member_id.as_str(),
                out.points,
                out.balance_after.get()
            ),
            (LoyaltyTransactionKind::MergeOut, "m-1", -5_123, 0)
        );
        assert_eq!(
            (
                into.kind,
                into.member_id.as_str(),
                into.points,
                into.balance_after.get()
            ),
            (LoyaltyTransactionKind::MergeIn, "m-2", 5_123, 5_163)
        );
        assert_eq!(out.counterpart_member_id.as_ref(), Some(&m2));
        assert_eq!(into.counterpart_member_id.as_ref(), Some(&m1));
        assert_eq!((out.transaction.as_ref(), out.occurred_at), (None, clock.now()));
        assert_eq!(
            ledger[0].member_id, m1,
            "the duplicate's history stays readable under it"
        );
        // Opening balance + ledger = balance, per member, still.
        let sum = |id: &str| -> i64 {
            ledger
                .iter()
                .filter(|t| t.member_id.as_str() == id)
                .map(|t| t.points)
                .sum()
        };
        assert_eq!((5_000 + sum("m-1"), sum("m-2")), (0, 5_163));

        let view = loyalty.member(&m1).unwrap();
        assert_eq!(
            (view.status, view.merged_into.as_ref()),
            (MemberStatus::Merged, Some(&m2))
        );
        // Again, under the same or another key: the first answer, nothing moved.
        assert_eq!(loyalty.merge(&m1, &m2, "merge").unwrap(), moved);
        assert_eq!(loyalty.merge(&m1, &m2, "merge-again").unwrap(), moved);
        assert_eq!(loyalty.transactions().len(), 4);
        assert_eq!(loyalty.balance("m-2").map(Points::get), Some(5_163));
    }

    #[test]
    fn a_merged_member_is_read_and_synced_but_gives_and_takes_no_points() {
        let (loyalty, clock) = two_accounts();
        loyalty.merge(&member("m-1"), &member("m-2"), "merge").unwrap();
        refused(
            loyalty.accrue(&accrual("m-1", "r-9", 1_000), "a9"),
            409,
            "member_merged",
        );
        refused(
            loyalty.create_hold(&hold("m-1", 1, 1_000, clock.now(), FIFTEEN_MINUTES), "h9"),
            409,
            "member_merged",
        );
        refused(
            loyalty.adjust(
                &adjustment("m-1", AdjustmentKind::Recredit, "o-1", "compensation", 5),
                "r9",
            ),
            409,
            "member_merged",
        );
        let err = loyalty.accrue(&accrual("m-1", "r-9", 1_000), "a9").unwrap_err();
        assert!(err.to_string().contains("m-2"), "names the survivor: {err}");
        assert_eq!(available(&loyalty, "m-1"), (0, 0, 0));
        let merged = MemberSnapshot {
            status: MemberStatus::Merged,
            merged_into: Some(member("m-2")),
            ..member_snapshot("m-1", 5)
        };
        assert_eq!(loyalty.sync_member(&merged, "s5").unwrap().revision, 5);
    }

    #[test]
    fn merges_are_refused_for_the_same_member_unknown_ones_merged_ones_and_open_holds() {
        let (loyalty, clock) = two_accounts();
        let (m1, m2, m3) = (member("m-1"), member("m-2"), member("m-3"));
        refused(loyalty.merge(&m1, &m1, "x1"), 422, "merge_refused");
        refused(loyalty.merge(&m1, &m3, "x2"), 404, "member_not_found");
        refused(loyalty.merge(&m3, &m1, "x3"), 404, "member_not_found");
        let h = hold_of(&loyalty, &clock, 100, "h1");
        refused(loyalty.merge(&m1, &m2, "x4"), 422, "merge_refused");
        assert!(
            loyalty
                .transactions()
                .iter()
                .all(|t| t.kind == LoyaltyTransactionKind::Accrual)
        );
        loyalty.release_hold(&h.hold_id, "r1").unwrap();
        loyalty.merge(&m1, &m2, "m").unwrap();

        loyalty.enrol(&m3, "e3").unwrap();
        refused(loyalty.merge(&m1, &m3, "x5"), 422, "merge_refused");
        refused(loyalty.merge(&m3, &m1, "x6"), 422, "merge_refused");
        // An empty account merges too, for 0 points: the pair of transactions still links them.
        assert_eq!(loyalty.merge(&m3, &m2, "m3").unwrap().points_moved, Points::ZERO);
        assert_eq!(loyalty.transactions().len(), 2 + 4);
        loyalty.enrol(&member("m-4"), "e4").unwrap();
        loyalty.seed_balance("m-4", Points::new(MAX_SAFE_INTEGER).unwrap());
        refused(loyalty.merge(&member("m-4"), &m2, "x7"), 422, "merge_refused");
    }

    #[test]
    fn enrolments_syncs_and_merges_come_back_from_the_journal() {
        let (loyalty, clock) = two_accounts();
        loyalty.keep_journal();
        loyalty.enrol(&member("m-3"), "e3").unwrap();
        loyalty.sync_member(&member_snapshot("m-3", 1), "s3").unwrap();
        clock.advance(Duration::from_secs(30));
        loyalty.merge(&member("m-1"), &member("m-2"), "merge").unwrap();
        let journal = loyalty.take_journal();
        assert_eq!(journal.len(), 3);

        // What a local run does after a kill: the opening balances, then the journal (here only the
        // calls made after it was kept, on top of a platform in the state it was kept from).
        let (restored, _) = two_accounts();
        restored.replay(&journal).unwrap();
        assert_eq!(restored.members(), loyalty.members());
        assert_eq!(restored.transactions(), loyalty.transactions());
        assert_eq!(
            restored
                .merge(&member("m-1"), &member("m-2"), "merge")
                .unwrap()
                .points_moved
                .get(),
            5_123
        );
    }

    #[test]
    fn a_repeated_key_returns_the_first_accrual_and_earns_once() {
        let loyalty = enrolled();
        let first = loyalty.accrue(&accrual("m-1", "r-1", 5_000), "k").unwrap();
        let again = loyalty.accrue(&accrual("m-1", "r-1", 5_000), "k").unwrap();
        assert_eq!(first, again);
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(50));
        let err = loyalty.accrue(&accrual("m-1", "r-1", 6_000), "k").unwrap_err();
        assert!(matches!(
            err,
            SimError::Refused {
                status: 409,
                code: "idempotency_key_reused",
                ..
            }
        ));
        assert_eq!(loyalty.transactions().len(), 1);
    }

    #[test]
    fn a_timeout_after_commit_earns_once_across_the_retry() {
        let loyalty = LoyaltySimulator::with_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        // Seeded, not enrolled: an enrolment is a call and would meet the scripted fault.
        loyalty.seed_balance("m-1", Points::ZERO);
        let req = accrual("m-1", "r-1", 2_000);
        assert_eq!(
            loyalty.accrue(&req, "k").unwrap_err(),
            SimError::TimedOut { committed: true }
        );
        assert_eq!(loyalty.accrue(&req, "k").unwrap().balance.get(), 20);
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(20));
    }

    #[test]
    fn seeded_timeouts_after_commit_never_earn_twice() {
        let loyalty = LoyaltySimulator::with_faults(Faults {
            timeout_after_commit_rate: 0.5,
            seed: Some(7),
            ..Faults::default()
        });
        loyalty.seed_balance("m-1", Points::ZERO);
        // Retry each accrual with its key until it answers, as a client would (a refusal would fail every
        // retry: the attempts are bounded so that it shows as a failure, not a hang).
        for i in 0..50 {
            let req = accrual("m-1", &format!("r-{i}"), 100);
            let key = format!("k{i}");
            let answered = (0..100).any(|_| loyalty.accrue(&req, &key).is_ok());
            assert!(answered, "accrual {i} never answered");
        }
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(50));
        assert_eq!(loyalty.transactions().len(), 50);
        assert!(loyalty.requests() > 50, "some calls timed out");
    }

    #[test]
    fn a_point_is_worth_a_hundredth_of_the_major_unit_rounded_down() {
        let value = |p: i64, c: &str| points_value(Points::new(p).unwrap(), currency(c)).map(Amount::get);
        assert_eq!(value(500, "EUR"), Some(500), "1 point = 1 cent");
        assert_eq!(value(250, "JPY"), Some(2), "100 points = 1 yen, rounded down");
        assert_eq!(value(7, "KWD"), Some(70), "1 point = 10 fils");
        assert_eq!(value(MAX_SAFE_INTEGER, "KWD"), None, "beyond any amount");
    }

    #[test]
    fn a_member_never_seen_is_not_enrolled_by_reading_and_a_seed_enrols() {
        let loyalty = LoyaltySimulator::new();
        refused(loyalty.member_balance(&member("m-9")), 404, "member_not_found");
        assert_eq!(loyalty.balance("m-9"), None);
        assert!(loyalty.balances().is_empty());
        refused(
            loyalty.member_balance(&member("unknown-1")),
            404,
            "member_not_found",
        );
        loyalty.seed_balance("m-9", Points::new(120).unwrap());
        assert_eq!(available(&loyalty, "m-9"), (120, 0, 120));
        assert_eq!(loyalty.balances(), BTreeMap::from([("m-9".to_owned(), 120)]));
        assert!(
            loyalty.transactions().is_empty(),
            "an opening balance is outside the ledger"
        );
    }

    #[test]
    fn a_hold_reserves_points_and_is_worth_their_value() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        assert_eq!(h.hold_id.as_str(), "H-00000001");
        assert_eq!(h.status, HoldStatus::Held);
        assert_eq!((h.points.get(), h.value_minor.get()), (800, 800));
        assert_eq!(h.expires_at, clock.now() + FIFTEEN_MINUTES);
        assert_eq!(
            (h.transaction.as_ref(), h.loyalty_transaction_id.as_ref()),
            (None, None)
        );
        assert_eq!(available(&loyalty, "m-1"), (5_000, 800, 4_200));
        let second = hold_of(&loyalty, &clock, 200, "h2");
        assert_eq!(second.hold_id.as_str(), "H-00000002");
        assert_eq!(available(&loyalty, "m-1"), (5_000, 1_000, 4_000));
        assert_eq!(loyalty.holds(), [h.clone(), second]);
        assert_eq!(loyalty.get_hold(&h.hold_id).unwrap(), h);
        assert_eq!(
            loyalty.balance("m-1").map(Points::get),
            Some(5_000),
            "holding spends nothing"
        );
    }

    #[test]
    fn a_hold_needs_available_points() {
        let (loyalty, clock) = platform();
        hold_of(&loyalty, &clock, 4_000, "h1");
        refused(
            loyalty.create_hold(&hold("m-1", 1_001, 10_000, clock.now(), FIFTEEN_MINUTES), "h2"),
            422,
            "insufficient_points",
        );
        hold_of(&loyalty, &clock, 1_000, "h3");
        refused(
            loyalty.create_hold(&hold("m-2", 1, 10_000, clock.now(), FIFTEEN_MINUTES), "h4"),
            404,
            "member_not_found",
        );
        assert_eq!(loyalty.balance("m-2"), None, "a refused hold enrols nobody");
        loyalty.enrol(&member("m-2"), "e2").unwrap();
        refused(
            loyalty.create_hold(&hold("m-2", 1, 10_000, clock.now(), FIFTEEN_MINUTES), "h5"),
            422,
            "insufficient_points",
        );
    }

    #[test]
    fn a_hold_may_not_be_worth_more_than_the_basket_before_tax() {
        let (loyalty, clock) = platform();
        refused(
            loyalty.create_hold(&hold("m-1", 1_001, 1_000, clock.now(), FIFTEEN_MINUTES), "h1"),
            422,
            "exceeds_basket",
        );
        let exact = loyalty
            .create_hold(&hold("m-1", 1_000, 1_000, clock.now(), FIFTEEN_MINUTES), "h2")
            .unwrap();
        assert_eq!(exact.value_minor.get(), 1_000, "up to the basket is fine");
    }

    #[test]
    fn a_hold_needs_points_a_future_expiry_and_a_member() {
        let (loyalty, clock) = platform();
        let now = clock.now();
        refused(
            loyalty.create_hold(&hold("m-1", 0, 1_000, now, FIFTEEN_MINUTES), "h1"),
            422,
            "invalid_hold",
        );
        refused(
            loyalty.create_hold(&hold("m-1", 10, 1_000, now, SignedDuration::ZERO), "h2"),
            422,
            "invalid_hold",
        );
        refused(
            loyalty.create_hold(&hold("unknown-1", 10, 1_000, now, FIFTEEN_MINUTES), "h3"),
            404,
            "member_not_found",
        );
        assert!(loyalty.holds().is_empty());
    }

    #[test]
    fn a_hold_expires_at_its_expiry_and_its_points_are_available_again() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 700, "h1");
        clock.advance(Duration::from_secs(899));
        assert_eq!(loyalty.get_hold(&h.hold_id).unwrap().status, HoldStatus::Held);
        assert_eq!(available(&loyalty, "m-1"), (5_000, 700, 4_300));
        clock.advance(Duration::from_secs(1));
        assert_eq!(loyalty.get_hold(&h.hold_id).unwrap().status, HoldStatus::Expired);
        assert_eq!(available(&loyalty, "m-1"), (5_000, 0, 5_000));
        assert_eq!(loyalty.holds()[0].status, HoldStatus::Expired);

        refused(
            loyalty.commit_hold(&h.hold_id, &commit("o-1", 700), "c1"),
            409,
            "hold_expired",
        );
        let released = loyalty.release_hold(&h.hold_id, "r1").unwrap();
        assert_eq!(
            released.status,
            HoldStatus::Expired,
            "releasing an expired hold changes nothing"
        );
        assert_eq!(available(&loyalty, "m-1"), (5_000, 0, 5_000));
        assert!(loyalty.transactions().is_empty());
    }

    #[test]
    fn a_commit_spends_the_held_points_once() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        clock.advance(Duration::from_secs(60));
        let committed = loyalty
            .commit_hold(&h.hold_id, &commit("o-1", 800), "c1")
            .unwrap();
        assert_eq!(committed.status, HoldStatus::Committed);
        assert_eq!(committed.transaction, Some(order("o-1")));
        let lt = committed.loyalty_transaction_id.clone().unwrap();
        assert_eq!(lt.as_str(), "LT-00000001");
        assert_eq!(available(&loyalty, "m-1"), (4_200, 0, 4_200));
        let t = &loyalty.transactions()[0];
        assert_eq!(t.kind, LoyaltyTransactionKind::Redemption);
        assert_eq!((t.points, t.balance_after.get()), (-800, 4_200));
        assert_eq!(
            (t.hold_id.as_ref(), t.value_minor.map(Amount::get)),
            (Some(&h.hold_id), Some(800))
        );
        assert_eq!(t.occurred_at, clock.now(), "when the platform committed it");

        // The same key again: the first answer. The same commit under another key: the committed hold.
        assert_eq!(
            loyalty
                .commit_hold(&h.hold_id, &commit("o-1", 800), "c1")
                .unwrap(),
            committed
        );
        assert_eq!(
            loyalty
                .commit_hold(&h.hold_id, &commit("o-1", 800), "c2")
                .unwrap(),
            committed
        );
        assert_eq!(loyalty.transactions().len(), 1, "spent once");
        assert_eq!(available(&loyalty, "m-1"), (4_200, 0, 4_200));
        // Committed holds do not expire.
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(loyalty.get_hold(&h.hold_id).unwrap(), committed);
    }

    #[test]
    fn a_committed_hold_is_refused_to_another_transaction_and_for_other_points() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        refused(
            loyalty.commit_hold(&h.hold_id, &commit("o-1", 700), "c0"),
            422,
            "points_mismatch",
        );
        assert_eq!(loyalty.get_hold(&h.hold_id).unwrap().status, HoldStatus::Held);
        loyalty
            .commit_hold(&h.hold_id, &commit("o-1", 800), "c1")
            .unwrap();
        refused(
            loyalty.commit_hold(&h.hold_id, &commit("o-2", 800), "c2"),
            409,
            "hold_committed",
        );
        refused(
            loyalty.commit_hold(&h.hold_id, &commit("o-1", 700), "c3"),
            422,
            "points_mismatch",
        );
        refused(
            loyalty.commit_hold(&h.hold_id, &commit("o-2", 800), "c1"),
            409,
            "idempotency_key_reused",
        );
        refused(
            loyalty.commit_hold(&HoldId::parse("H-00000009").unwrap(), &commit("o-1", 1), "c4"),
            404,
            "hold_not_found",
        );
        assert_eq!(loyalty.transactions().len(), 1);
        assert_eq!(available(&loyalty, "m-1"), (4_200, 0, 4_200));
    }

    #[test]
    fn a_released_hold_gives_its_points_back_and_cannot_be_committed() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        let released = loyalty.release_hold(&h.hold_id, "r1").unwrap();
        assert_eq!(released.status, HoldStatus::Released);
        assert_eq!(available(&loyalty, "m-1"), (5_000, 0, 5_000));
        assert_eq!(
            loyalty.release_hold(&h.hold_id, "r2").unwrap(),
            released,
            "a no-op"
        );
        refused(
            loyalty.commit_hold(&h.hold_id, &commit("o-1", 800), "c1"),
            409,
            "hold_released",
        );
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(
            loyalty.get_hold(&h.hold_id).unwrap().status,
            HoldStatus::Released,
            "a released hold does not expire"
        );
        refused(
            loyalty.release_hold(&HoldId::parse("H-00000009").unwrap(), "r3"),
            404,
            "hold_not_found",
        );
    }

    #[test]
    fn a_committed_hold_cannot_be_released() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        let committed = loyalty
            .commit_hold(&h.hold_id, &commit("o-1", 800), "c1")
            .unwrap();
        refused(loyalty.release_hold(&h.hold_id, "r1"), 409, "hold_committed");
        assert_eq!(loyalty.get_hold(&h.hold_id).unwrap(), committed);
        assert_eq!(available(&loyalty, "m-1"), (4_200, 0, 4_200));
    }

    #[test]
    fn a_recredit_gives_redeemed_points_back() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        loyalty
            .commit_hold(&h.hold_id, &commit("o-1", 800), "c1")
            .unwrap();
        let a = loyalty
            .adjust(
                &adjustment("m-1", AdjustmentKind::Recredit, "o-1", "cancellation:cx-1", 800),
                "a1",
            )
            .unwrap();
        assert_eq!(a.loyalty_transaction_id.as_str(), "LT-00000002");
        assert_eq!((a.delta, a.balance.get()), (800, 5_000));
        let t = &loyalty.transactions()[1];
        assert_eq!(t.kind, LoyaltyTransactionKind::Recredit);
        assert_eq!(
            (t.points, t.reference.as_deref()),
            (800, Some("cancellation:cx-1"))
        );
        assert_eq!(t.requested_points, None);
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(5_000));
        // A member never enrolled is not enrolled by a re-credit.
        refused(
            loyalty.adjust(
                &adjustment("m-3", AdjustmentKind::Recredit, "o-3", "compensation", 40),
                "a2",
            ),
            404,
            "member_not_found",
        );
        assert_eq!(loyalty.balance("m-3"), None);
    }

    #[test]
    fn a_reversal_takes_earned_points_back_but_never_what_holds_reserve() {
        let (loyalty, clock) = platform();
        loyalty.enrol(&member("m-2"), "enrol").unwrap();
        loyalty.accrue(&accrual("m-2", "r-1", 50_000), "e1").unwrap();
        let a = loyalty
            .adjust(
                &adjustment("m-2", AdjustmentKind::Reversal, "o-1", "return:ret-1", 120),
                "a1",
            )
            .unwrap();
        assert_eq!((a.delta, a.balance.get()), (-120, 380));
        let t = &loyalty.transactions()[1];
        assert_eq!(
            (t.kind, t.points, t.balance_after.get()),
            (LoyaltyTransactionKind::Reversal, -120, 380)
        );

        // 380 owned, 300 held: a reversal of 200 can only take 80.
        loyalty
            .create_hold(&hold("m-2", 300, 10_000, clock.now(), FIFTEEN_MINUTES), "h1")
            .unwrap();
        let a = loyalty
            .adjust(
                &adjustment("m-2", AdjustmentKind::Reversal, "o-1", "return:ret-2", 200),
                "a2",
            )
            .unwrap();
        assert_eq!((a.delta, a.balance.get()), (-80, 300));
        let t = &loyalty.transactions()[2];
        assert_eq!((t.points, t.requested_points.map(Points::get)), (-80, Some(200)));
        assert_eq!(available(&loyalty, "m-2"), (300, 300, 0));
        // Once the hold lapses nothing reserves the points, and a reversal may take them all.
        clock.advance(Duration::from_secs(900));
        let a = loyalty
            .adjust(
                &adjustment("m-2", AdjustmentKind::Reversal, "o-1", "return:ret-3", 1_000),
                "a3",
            )
            .unwrap();
        assert_eq!((a.delta, a.balance.get()), (-300, 0), "never below zero");
    }

    #[test]
    fn adjustments_need_a_member_and_points() {
        let loyalty = enrolled();
        refused(
            loyalty.adjust(
                &adjustment("unknown-1", AdjustmentKind::Recredit, "o-1", "x", 5),
                "a1",
            ),
            404,
            "member_not_found",
        );
        refused(
            loyalty.adjust(&adjustment("m-1", AdjustmentKind::Recredit, "o-1", "x", 0), "a2"),
            422,
            "invalid_adjustment",
        );
        loyalty.seed_balance("m-1", Points::new(MAX_SAFE_INTEGER).unwrap());
        refused(
            loyalty.adjust(&adjustment("m-1", AdjustmentKind::Recredit, "o-1", "x", 1), "a3"),
            422,
            "balance_limit",
        );
        assert!(loyalty.transactions().is_empty());
    }

    #[test]
    fn an_adjustment_repeated_under_its_key_applies_once() {
        let (loyalty, _) = platform();
        let request = adjustment("m-1", AdjustmentKind::Reversal, "o-1", "return:ret-1", 100);
        let first = loyalty.adjust(&request, "a1").unwrap();
        assert_eq!(loyalty.adjust(&request, "a1").unwrap(), first);
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(4_900));
        assert_eq!(loyalty.transactions().len(), 1);
        let recredit = adjustment("m-1", AdjustmentKind::Recredit, "o-1", "return:ret-1", 100);
        refused(loyalty.adjust(&recredit, "a1"), 409, "idempotency_key_reused");
    }

    #[test]
    fn one_key_space_spans_every_mutating_call() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 100, "k");
        refused(
            loyalty.release_hold(&h.hold_id, "k"),
            409,
            "idempotency_key_reused",
        );
        refused(
            loyalty.accrue(&accrual("m-1", "r-1", 1_000), "k"),
            409,
            "idempotency_key_reused",
        );
        // A repeated hold request under its key is the same hold, not a second one.
        let again = loyalty
            .create_hold(
                &hold(
                    "m-1",
                    100,
                    10_000,
                    h.expires_at - FIFTEEN_MINUTES,
                    FIFTEEN_MINUTES,
                ),
                "k",
            )
            .unwrap();
        assert_eq!(again, h);
        assert_eq!(loyalty.holds().len(), 1);
        assert_eq!(loyalty.requests(), 4);
    }

    #[test]
    fn a_commit_timed_out_after_it_applied_spends_once_across_the_retry() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        loyalty.set_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        assert_eq!(
            loyalty
                .commit_hold(&h.hold_id, &commit("o-1", 800), "c1")
                .unwrap_err(),
            SimError::TimedOut { committed: true }
        );
        let committed = loyalty
            .commit_hold(&h.hold_id, &commit("o-1", 800), "c1")
            .unwrap();
        assert_eq!(committed.status, HoldStatus::Committed);
        assert_eq!(loyalty.transactions().len(), 1);
        assert_eq!(available(&loyalty, "m-1"), (4_200, 0, 4_200));
    }

    #[test]
    fn reads_meet_only_the_down_fault_and_are_not_counted() {
        let (loyalty, clock) = platform();
        let h = hold_of(&loyalty, &clock, 800, "h1");
        loyalty.set_faults(Faults {
            fail_first: 1,
            ..Faults::default()
        });
        loyalty.member_balance(&member("m-1")).unwrap();
        loyalty.get_hold(&h.hold_id).unwrap();
        assert_eq!(
            loyalty.faults().fail_first,
            1,
            "the script waits for a mutating call"
        );
        assert_eq!(loyalty.requests(), 1);
        loyalty.set_faults(Faults {
            down: true,
            ..Faults::default()
        });
        assert!(matches!(
            loyalty.member_balance(&member("m-1")),
            Err(SimError::Unavailable { .. })
        ));
        assert!(matches!(
            loyalty.get_hold(&h.hold_id),
            Err(SimError::Unavailable { .. })
        ));
    }
}
