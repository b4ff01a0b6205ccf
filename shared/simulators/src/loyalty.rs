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
//! - a member's state is a balance, the open holds on it and their pending points: `held` is what the
//!   holds reserve, `available = balance − held` what a new hold or a reversal may take; `pending` is
//!   earned points waiting for their sale's return window to end (see Pending points), apart from the
//!   balance and never available. `0 ≤ held ≤ balance`, `0 ≤ pending` and `balance + pending ≤
//!   MAX_SAFE_INTEGER` always.
//!
//! Merging
//! - merging a duplicate into a survivor moves the duplicate's whole balance and its pending points
//!   (the merge's points moved are both), as a `merge_out` transaction on the duplicate and a `merge_in`
//!   on the survivor (each naming the other member), and closes the duplicate as merged. The duplicate's
//!   earlier transactions stay on its own ledger, which keeps "opening balance + ledger = balance +
//!   pending" true per member: the merge pair links the two histories. The duplicate's pending accruals
//!   stay on its ledger too, their points now the survivor's: a return cancels them on the survivor and
//!   confirming them credits the survivor;
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
//!   minor_per_major` (1 point per 1.00 EUR, per 1 JPY, per 1.000 KWD); 422 `balance_limit` when the
//!   member's balance and pending points would pass the largest balance;
//!
//! Pending points
//! - an accrual with `pending_until` (its sale's return window end) books its points pending: the
//!   member's `pending` grows, their balance does not (`balance_after` is the balance, unchanged), the
//!   answer says `pending: true`, and the accrual records `pending_until` and its points still pending
//!   (`pending_points`). Pending points are never available: no hold, redemption or reversal of another
//!   transaction takes them. Any `pending_until` is held, past ones too: the platform waits for the
//!   confirmation, not for the clock;
//! - a reversal of a transaction with pending accruals takes from their pending points first, oldest
//!   accrual first, then from the balance (as any reversal: what is available). Its `points` are the
//!   total taken and `pending_cancelled` how many of them were pending; the accruals' `pending_points`
//!   drop by what was cancelled of each;
//! - confirming an accrual moves what is still pending of it into the balance of the member holding it
//!   (the survivor after a merge), records `confirmed_at` (the platform's clock), the points confirmed
//!   (0 when returns cancelled them all) and the balance after, and answers those. Confirming again,
//!   under any key, answers the first confirmation and moves nothing. Refused: an unknown transaction or
//!   one that is no accrual (404 `transaction_not_found`), an accrual never pending (409 `not_pending`).
//!   A confirmation books no transaction: the points were on the ledger since the accrual;
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
//! - a reversal takes its points back: first what is pending of its transaction's accruals (see Pending
//!   points), then from the balance, but never more than is available: `Points` cannot be negative,
//!   and points an open hold reserves were promised to a basket. It takes what it can and the answer's
//!   `delta` (and the ledger) say what was applied; a platform allowing negative balances would take
//!   it all;
//! - an adjustment of 0 points is refused (422 `invalid_adjustment`): callers skip those;
//!
//! Books
//! - every change of a member's points is a ledger transaction numbered `LT-00000001`, … of kind
//!   `accrual`, `redemption`, `reversal`, `recredit`, `merge_out` or `merge_in` with its signed points
//!   (seeded balances are opening balances, outside the ledger). The invariant, per member: opening
//!   balance + the sum of their transactions' points = balance + pending (a confirmation moves points
//!   from pending to the balance and changes neither side);
//! - the idempotency contract is the ERP's, over one key space for every mutating call (accrue, hold,
//!   commit, release, adjust, confirm, enrol, profile sync, merge): first answer again for a repeated
//!   key, 409 `idempotency_key_reused` if the key comes with another request. Each of them is journaled,
//!   so a replayed journal enrols, syncs, confirms and merges again too;
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
    Confirmation, Hold, HoldRequest, HoldStatus, MemberSnapshot, SystemClock,
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
    /// Earned points a reversal had taken beyond its share, given back.
    Restore,
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
            Self::Restore => "restore",
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
    /// Signed change of the member's points: positive for accruals, re-credits and merges in, negative
    /// for redemptions, reversals and merges out. The ledger's sum per member plus their opening balance
    /// is their balance plus their pending points (a pending accrual's points go to `pending`, a
    /// reversal's `pending_cancelled` come off it).
    pub points: i64,
    /// The balance after the transaction (pending points apart: a pending accrual leaves it unchanged).
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
    /// Accruals held pending: the end of the sale's return window the caller gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until: Option<Timestamp>,
    /// Accruals held pending: their points still pending, neither cancelled by a return nor confirmed
    /// (0 once confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_points: Option<Points>,
    /// Reversals that cancelled pending points of their transaction's accruals: how many of `points`
    /// were pending (the rest came off the balance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_cancelled: Option<Points>,
    /// Confirmed pending accruals: when (the platform's clock), the points made spendable, and the
    /// balance after (of the member holding them: the survivor after a merge). What confirming again
    /// answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_points: Option<Points>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_balance: Option<Points>,
    /// The caller's instant for accruals and adjustments; the platform's clock for redemptions and
    /// merges (their calls carry none).
    pub occurred_at: Timestamp,
}

impl LoyaltyTransaction {
    /// A transaction with its identity, points and instant, and nothing else.
    fn blank(
        loyalty_transaction_id: ExternalRef,
        kind: LoyaltyTransactionKind,
        key: &str,
        member_id: &MemberId,
        points: i64,
        balance_after: Points,
        occurred_at: Timestamp,
    ) -> Self {
        Self {
            loyalty_transaction_id,
            kind,
            idempotency_key: key.to_owned(),
            member_id: member_id.clone(),
            transaction: None,
            points,
            balance_after,
            currency: None,
            eligible_minor: None,
            hold_id: None,
            value_minor: None,
            reference: None,
            requested_points: None,
            counterpart_member_id: None,
            pending_until: None,
            pending_points: None,
            pending_cancelled: None,
            confirmed_at: None,
            confirmed_points: None,
            confirmed_balance: None,
            occurred_at,
        }
    }

    /// An accrual whose points are still pending: held pending, not confirmed, some left.
    fn still_pending(&self) -> bool {
        self.kind == LoyaltyTransactionKind::Accrual
            && self.confirmed_at.is_none()
            && self.pending_points.is_some_and(|p| p.get() > 0)
    }

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
                LoyaltyTransactionKind::Restore => PointsKind::Restore,
                LoyaltyTransactionKind::MergeOut | LoyaltyTransactionKind::MergeIn => PointsKind::Merge,
            },
            member_id: self.member_id.clone(),
            transaction: self.transaction.clone(),
            reference: self.reference.clone(),
            points: self.points,
            requested_points: self.requested_points,
            value_minor: self.value_minor,
            pending_points: match self.kind {
                LoyaltyTransactionKind::Accrual => self.pending_points,
                _ => None,
            },
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
    /// Earned points waiting for their sale's return window to end: apart from `balance`.
    #[serde(default, skip_serializing_if = "Points::is_zero")]
    pub pending: Points,
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
    /// Confirming the pending points of an accrual (by its loyalty transaction id).
    ConfirmAccrual(ExternalRef),
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
    Confirmation(Confirmation),
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
answer!(Confirmation);

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

/// An enrolled member: points as plain numbers (the rules keep `0 ≤ held ≤ balance`, `0 ≤ pending`
/// and `balance + pending ≤ MAX_SAFE_INTEGER`), whether they were merged, and their profile.
#[derive(Debug, Clone, Default)]
struct Member {
    balance: i64,
    held: i64,
    /// Pending points of accruals this member holds (their own, and a merged duplicate's).
    pending: i64,
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
    /// Each transaction's position on the ledger, by id.
    index: HashMap<ExternalRef, usize>,
    /// The positions of the accruals with points still pending, by their transaction, oldest first:
    /// what a reversal of the transaction cancels first.
    pending_accruals: HashMap<TransactionRef, Vec<usize>>,
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

fn balance_limit(member: &MemberId) -> SimError {
    SimError::refused(
        422,
        "balance_limit",
        format!("member {member}: a balance and pending points above {MAX_SAFE_INTEGER}"),
    )
}

fn transaction_not_found(id: &str) -> SimError {
    SimError::refused(404, "transaction_not_found", format!("no accrual {id}"))
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
        // The pending points go along: they are the person's, and wait for their window at the survivor.
        let (moved_balance, moved_pending) = (duplicate.balance, duplicate.pending);
        let moved = moved_balance + moved_pending;
        let survivor_balance = survivor.balance + moved_balance;
        let survivor_pending = survivor.pending + moved_pending;
        if survivor_balance + survivor_pending > MAX_SAFE_INTEGER {
            return Err(merge_refused(format!(
                "survivor {survivor_id}: a balance above {MAX_SAFE_INTEGER}"
            )));
        }
        let moved = points(moved);
        let transaction = |books: &Self, kind, member_id: &MemberId, counterpart: &MemberId, delta, after| {
            LoyaltyTransaction {
                counterpart_member_id: Some(counterpart.clone()),
                ..LoyaltyTransaction::blank(
                    books.next_transaction_id(),
                    kind,
                    key,
                    member_id,
                    delta,
                    points(after),
                    now,
                )
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
        self.book(out);
        let into = transaction(
            self,
            LoyaltyTransactionKind::MergeIn,
            survivor_id,
            duplicate_id,
            moved.get(),
            survivor_balance,
        );
        self.book(into);
        // Both were found enrolled above, under the same lock.
        if let Some(d) = self.members.get_mut(duplicate_id.as_str()) {
            d.balance = 0;
            d.pending = 0;
            d.merged = Some((survivor_id.clone(), moved));
        }
        if let Some(s) = self.members.get_mut(survivor_id.as_str()) {
            s.balance = survivor_balance;
            s.pending = survivor_pending;
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

    /// Puts `t` on the ledger, indexed.
    fn book(&mut self, t: LoyaltyTransaction) {
        let at = self.transactions.len();
        self.index.insert(t.loyalty_transaction_id.clone(), at);
        if t.still_pending()
            && let Some(transaction) = &t.transaction
        {
            self.pending_accruals
                .entry(transaction.clone())
                .or_default()
                .push(at);
        }
        self.transactions.push(t);
    }

    /// The accrual at `at` has nothing pending any more: a reversal need not look at it.
    fn settled(&mut self, at: usize) {
        let Some(transaction) = &self.transactions[at].transaction else {
            return;
        };
        if let Some(positions) = self.pending_accruals.get_mut(transaction) {
            positions.retain(|&p| p != at);
            if positions.is_empty() {
                self.pending_accruals.remove(transaction);
            }
        }
    }

    /// Builds the indexes again from the ledger (after it was changed behind the platform's back).
    fn reindex(&mut self) {
        self.index.clear();
        self.pending_accruals.clear();
        let ledger = std::mem::take(&mut self.transactions);
        ledger.into_iter().for_each(|t| self.book(t));
    }

    /// The member who holds the points of `member_id` now: the member, or after a merge the survivor
    /// (followed along, should the survivor have been merged since).
    fn holder(&self, member_id: &MemberId) -> MemberId {
        let mut holder = member_id;
        // A merged member is never a survivor, so the chain has no loop; bounded all the same.
        for _ in 0..=self.members.len() {
            match self.members.get(holder.as_str()).and_then(|m| m.merged.as_ref()) {
                Some((survivor, _)) => holder = survivor,
                None => break,
            }
        }
        holder.clone()
    }

    /// What a reversal of `transaction` by `member_id` cancels of its pending accruals, oldest first,
    /// for at most `wanted` points: `(ledger position, points)` of each accrual it takes from.
    fn pending_to_cancel(
        &self,
        transaction: &TransactionRef,
        member_id: &MemberId,
        wanted: i64,
    ) -> Vec<(usize, i64)> {
        let mut left = wanted;
        let mut taken = Vec::new();
        for at in self.still_pending_of(transaction, member_id) {
            if left == 0 {
                break;
            }
            let take = self.transactions[at]
                .pending_points
                .map_or(0, Points::get)
                .min(left);
            left -= take;
            taken.push((at, take));
        }
        taken
    }

    /// The transaction's accruals still pending for `member_id` (their holder), oldest first.
    fn still_pending_of<'b>(
        &'b self,
        transaction: &TransactionRef,
        member_id: &'b MemberId,
    ) -> impl DoubleEndedIterator<Item = usize> + 'b {
        self.pending_accruals
            .get(transaction)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&at| {
                let t = &self.transactions[at];
                t.still_pending() && &self.holder(&t.member_id) == member_id
            })
    }

    /// The transaction's latest accrual still pending for `member_id`, where a restore goes.
    fn pending_to_restore(&self, transaction: &TransactionRef, member_id: &MemberId) -> Option<usize> {
        self.still_pending_of(transaction, member_id).next_back()
    }

    fn balance(&self, member_id: &MemberId) -> Result<Balance, SimError> {
        let m = self.enrolled(member_id)?;
        Ok(Balance {
            member_id: member_id.clone(),
            balance: points(m.balance),
            held: points(m.held),
            available: points(m.balance - m.held),
            pending: points(m.pending),
        })
    }

    fn accrue(&mut self, request: &AccrualRequest, key: &str) -> Result<Accrual, SimError> {
        let earned = points_for(request.eligible_minor, request.currency);
        let m = self.active(&request.member_id)?;
        if m.balance + m.pending + earned.get() > MAX_SAFE_INTEGER {
            return Err(balance_limit(&request.member_id));
        }
        let pending = request.pending_until.is_some();
        let m = self.active_mut(&request.member_id)?;
        if pending {
            m.pending += earned.get();
        } else {
            m.balance += earned.get();
        }
        let balance = points(m.balance);
        let loyalty_transaction_id = self.next_transaction_id();
        self.book(LoyaltyTransaction {
            transaction: Some(request.transaction.clone()),
            currency: Some(request.currency),
            eligible_minor: Some(request.eligible_minor),
            pending_until: request.pending_until,
            pending_points: pending.then_some(earned),
            ..LoyaltyTransaction::blank(
                loyalty_transaction_id.clone(),
                LoyaltyTransactionKind::Accrual,
                key,
                &request.member_id,
                earned.get(),
                balance,
                request.occurred_at,
            )
        });
        Ok(Accrual {
            loyalty_transaction_id,
            points: earned,
            balance,
            pending,
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
        let redemption = LoyaltyTransaction {
            transaction: Some(request.transaction.clone()),
            currency: Some(hold.currency),
            hold_id: Some(hold_id.clone()),
            value_minor: Some(hold.value_minor),
            ..LoyaltyTransaction::blank(
                loyalty_transaction_id.clone(),
                LoyaltyTransactionKind::Redemption,
                key,
                &hold.member_id,
                -spent,
                balance_after,
                now,
            )
        };
        self.book(redemption);
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
        let m = self.active(&request.member_id)?;
        let (balance, held, pending) = (m.balance, m.held, m.pending);
        let asked = request.points.get();
        if asked == 0 {
            return Err(SimError::refused(
                422,
                "invalid_adjustment",
                "an adjustment of 0 points",
            ));
        }
        // A reversal cancels the transaction's pending points first, then takes what is available; a
        // restore gives back to the transaction's latest accrual still pending if there is one (the
        // points a return cancels while pending come back pending), else to the balance.
        let credit = matches!(request.kind, AdjustmentKind::Recredit | AdjustmentKind::Restore);
        if credit && balance + pending + asked > MAX_SAFE_INTEGER {
            return Err(balance_limit(&request.member_id));
        }
        let (kind, cancel, restore_to) = match request.kind {
            AdjustmentKind::Recredit => (LoyaltyTransactionKind::Recredit, Vec::new(), None),
            AdjustmentKind::Restore => (
                LoyaltyTransactionKind::Restore,
                Vec::new(),
                self.pending_to_restore(&request.transaction, &request.member_id),
            ),
            AdjustmentKind::Reversal => (
                LoyaltyTransactionKind::Reversal,
                self.pending_to_cancel(&request.transaction, &request.member_id, asked),
                None,
            ),
        };
        // The member holds the accruals' pending points (`pending_to_cancel` checked): never more.
        let cancelled = cancel.iter().map(|(_, p)| p).sum::<i64>().min(pending);
        let restored = if restore_to.is_some() { asked } else { 0 };
        let from_balance = match request.kind {
            AdjustmentKind::Recredit | AdjustmentKind::Restore => asked - restored,
            AdjustmentKind::Reversal => -(asked - cancelled).min(balance - held),
        };
        let delta = from_balance - cancelled + restored;
        let balance = balance + from_balance;
        let m = self.active_mut(&request.member_id)?;
        m.balance = balance;
        m.pending += restored - cancelled;
        if let Some(at) = restore_to {
            let accrual = &mut self.transactions[at];
            accrual.pending_points = Some(points(accrual.pending_points.map_or(0, Points::get) + restored));
        }
        for (at, take) in cancel {
            let accrual = &mut self.transactions[at];
            let left = accrual.pending_points.map_or(0, Points::get) - take;
            accrual.pending_points = Some(points(left));
            if left == 0 {
                self.settled(at);
            }
        }
        let loyalty_transaction_id = self.next_transaction_id();
        self.book(LoyaltyTransaction {
            transaction: Some(request.transaction.clone()),
            reference: Some(request.reference.clone()),
            requested_points: (delta.abs() != asked).then_some(request.points),
            pending_cancelled: (cancelled > 0).then(|| points(cancelled)),
            ..LoyaltyTransaction::blank(
                loyalty_transaction_id.clone(),
                kind,
                key,
                &request.member_id,
                delta,
                points(balance),
                request.occurred_at,
            )
        });
        Ok(Adjustment {
            loyalty_transaction_id,
            delta,
            balance: points(balance),
            pending_cancelled: points(cancelled),
        })
    }

    fn confirm(&mut self, id: &ExternalRef, now: Timestamp) -> Result<Confirmation, SimError> {
        let at = self
            .index
            .get(id)
            .copied()
            .filter(|&at| self.transactions[at].kind == LoyaltyTransactionKind::Accrual)
            .ok_or_else(|| transaction_not_found(id.as_str()))?;
        let accrual = &self.transactions[at];
        // Confirmed before (under another key, say after the first answer was lost with its key): the
        // first confirmation's figures, nothing moved again.
        if let (Some(_), Some(points_confirmed), Some(balance)) = (
            accrual.confirmed_at,
            accrual.confirmed_points,
            accrual.confirmed_balance,
        ) {
            return Ok(Confirmation {
                loyalty_transaction_id: id.clone(),
                points_confirmed,
                balance,
            });
        }
        let Some(still) = accrual.pending_until.and(accrual.pending_points) else {
            return Err(SimError::refused(
                409,
                "not_pending",
                format!("accrual {id} was never pending: its points were spendable at once"),
            ));
        };
        let holder = self.holder(&accrual.member_id);
        let m = self
            .members
            .get_mut(holder.as_str())
            .ok_or_else(|| member_not_found(holder.as_str()))?;
        // The holder holds the accrual's pending points; never move more than they hold.
        let moved = still.get().min(m.pending);
        if m.balance + moved > MAX_SAFE_INTEGER {
            return Err(balance_limit(&holder));
        }
        m.pending -= moved;
        m.balance += moved;
        let (points_confirmed, balance) = (points(moved), points(m.balance));
        let accrual = &mut self.transactions[at];
        accrual.pending_points = Some(Points::ZERO);
        accrual.confirmed_at = Some(now);
        accrual.confirmed_points = Some(points_confirmed);
        accrual.confirmed_balance = Some(balance);
        self.settled(at);
        Ok(Confirmation {
            loyalty_transaction_id: id.clone(),
            points_confirmed,
            balance,
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
        pending: points(m.pending),
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
    /// their balance, but never below what their open holds reserve, nor so high that their pending
    /// points pass the largest balance with it. (An operator's act on the platform, not a call: not
    /// journaled; a local run seeds again before it replays the journal.)
    pub fn seed_balance(&self, member: &str, balance: Points) {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        // Holds past their expiry reserve nothing any more.
        state.books.expire(state.clock.now());
        let m = state.books.members.entry(member.to_owned()).or_default();
        m.balance = balance.get().min(MAX_SAFE_INTEGER - m.pending).max(m.held);
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

    /// Makes the pending points of an accrual spendable under the rules above; answers what was
    /// confirmed (the first confirmation's figures when it was confirmed before).
    pub fn confirm_accrual(
        &self,
        loyalty_transaction_id: &ExternalRef,
        key: &str,
    ) -> Result<Confirmation, SimError> {
        let call = LoyaltyCall::ConfirmAccrual(loyalty_transaction_id.clone());
        self.call(&call, key, |books, now| {
            books.confirm(loyalty_transaction_id, now)
        })
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
                LoyaltyCall::ConfirmAccrual(id) => self.confirm_accrual(id, key).map(drop),
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
    /// transaction off the ledger and its points off the member; `Duplicate` books it again under a new
    /// id; `SetPoints` changes its points (and the member's by the difference). The member's points are
    /// their balance, except for an accrual still waiting for its confirmation: its pending points
    /// change first (at the member holding them), the rest changes the balance. `false`: no such
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
        let was_pending = t.pending_points.map_or(0, Points::get);
        let awaiting = t.kind == LoyaltyTransactionKind::Accrual
            && t.pending_until.is_some()
            && t.confirmed_at.is_none();
        // The change of the member's points, and how much of it is their pending points'.
        let (delta, pending_delta) = match change {
            Tamper::Lose => {
                books.transactions.remove(at);
                books.lost += 1;
                (-t.points, -was_pending)
            }
            Tamper::Duplicate => {
                let again = LoyaltyTransaction {
                    loyalty_transaction_id: books.next_transaction_id(),
                    idempotency_key: format!("{}:again", t.idempotency_key),
                    ..t.clone()
                };
                books.transactions.push(again);
                (t.points, was_pending)
            }
            Tamper::SetPoints(new) => {
                let delta = new.saturating_sub(t.points);
                let tampered = &mut books.transactions[at];
                tampered.points = new;
                if awaiting {
                    let now_pending = was_pending.saturating_add(delta).clamp(0, MAX_SAFE_INTEGER);
                    tampered.pending_points = Some(points(now_pending));
                    (delta, now_pending - was_pending)
                } else {
                    (delta, 0)
                }
            }
        };
        let (delta, pending_delta) = if awaiting {
            (delta, pending_delta)
        } else {
            (delta, 0)
        };
        if pending_delta != 0 {
            let holder = books.holder(&t.member_id);
            if let Some(m) = books.members.get_mut(holder.as_str()) {
                m.pending = m.pending.saturating_add(pending_delta).max(0);
            }
        }
        if let Some(m) = books.members.get_mut(t.member_id.as_str()) {
            m.balance = m.balance.saturating_add(delta.saturating_sub(pending_delta));
        }
        books.reindex();
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

    // --- Pending points ----------------------------------------------------------------------------

    /// The end of the return window the pending accruals below are held for.
    fn window_end() -> Timestamp {
        "2026-12-20T10:00:00Z".parse().unwrap()
    }

    /// An accrual like [`accrual`] whose points are held pending until [`window_end`].
    fn pending_accrual(member_id: &str, receipt_id: &str, eligible_minor: i64) -> AccrualRequest {
        AccrualRequest {
            pending_until: Some(window_end()),
            ..accrual(member_id, receipt_id, eligible_minor)
        }
    }

    /// A return's reversal of `reversed` points earned on receipt `receipt_id` of `store-1`.
    fn reversal_of(member_id: &str, receipt_id: &str, return_id: &str, reversed: i64) -> AdjustmentRequest {
        AdjustmentRequest {
            transaction: crate::samples::receipt("store-1", receipt_id),
            ..adjustment(
                member_id,
                AdjustmentKind::Reversal,
                "o-1",
                &format!("return:{return_id}"),
                reversed,
            )
        }
    }

    fn lt(id: &str) -> ExternalRef {
        ExternalRef::parse(id).unwrap()
    }

    /// `(balance, held, available, pending)` of a member.
    fn points_of(loyalty: &LoyaltySimulator, id: &str) -> (i64, i64, i64, i64) {
        let b = loyalty.member_balance(&member(id)).unwrap();
        (b.balance.get(), b.held.get(), b.available.get(), b.pending.get())
    }

    /// The ledger invariant: for every member, opening balance + the sum of their transactions =
    /// balance + pending.
    fn assert_ledger_adds_up(loyalty: &LoyaltySimulator, opening: &[(&str, i64)]) {
        let ledger = loyalty.transactions();
        for view in loyalty.members() {
            let id = view.member_id.as_str();
            let open = opening.iter().find(|(m, _)| *m == id).map_or(0, |(_, p)| *p);
            let sum: i64 = ledger
                .iter()
                .filter(|t| t.member_id.as_str() == id)
                .map(|t| t.points)
                .sum();
            assert_eq!(
                open + sum,
                view.balance.get() + view.pending.get(),
                "member {id}: opening {open} + ledger {sum} = balance {} + pending {}",
                view.balance,
                view.pending
            );
        }
    }

    #[test]
    fn a_pending_accrual_is_the_members_but_not_spendable() {
        let (loyalty, clock) = platform();
        loyalty.enrol(&member("m-2"), "e2").unwrap();
        loyalty.accrue(&accrual("m-2", "r-0", 3_000), "a0").unwrap();
        let a = loyalty
            .accrue(&pending_accrual("m-2", "r-1", 12_345), "a1")
            .unwrap();
        assert!(a.pending, "held pending");
        assert_eq!(
            (a.points.get(), a.balance.get()),
            (123, 30),
            "the balance is unchanged"
        );
        assert_eq!(points_of(&loyalty, "m-2"), (30, 0, 30, 123));
        let view = loyalty.member(&member("m-2")).unwrap();
        assert_eq!((view.balance.get(), view.pending.get()), (30, 123));
        assert_eq!(loyalty.balance("m-2").map(Points::get), Some(30));

        let t = &loyalty.transactions()[1];
        assert_eq!(t.kind, LoyaltyTransactionKind::Accrual);
        assert_eq!((t.points, t.balance_after.get()), (123, 30));
        assert_eq!(t.pending_until, Some(window_end()));
        assert_eq!(t.pending_points.map(Points::get), Some(123));
        assert_eq!((t.confirmed_at, t.confirmed_points), (None, None));
        let plain = &loyalty.transactions()[0];
        assert_eq!((plain.pending_until, plain.pending_points), (None, None));

        // 30 available, 153 the member's: a hold of 100 is refused, one of 30 is not.
        refused(
            loyalty.create_hold(&hold("m-2", 100, 10_000, clock.now(), FIFTEEN_MINUTES), "h1"),
            422,
            "insufficient_points",
        );
        let h = loyalty
            .create_hold(&hold("m-2", 30, 10_000, clock.now(), FIFTEEN_MINUTES), "h2")
            .unwrap();
        assert_eq!(points_of(&loyalty, "m-2"), (30, 30, 0, 123));
        // A reversal of another transaction takes only what is available: never the pending points.
        let other = loyalty
            .adjust(&reversal_of("m-2", "r-0", "ret-0", 10), "x1")
            .unwrap();
        assert_eq!((other.delta, other.pending_cancelled), (0, Points::ZERO));
        loyalty.release_hold(&h.hold_id, "r2").unwrap();
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }

    #[test]
    fn a_confirmation_makes_the_pending_points_spendable() {
        let (loyalty, clock) = platform();
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 12_345), "a1")
            .unwrap();
        clock.advance(Duration::from_secs(86_400 * 30));
        let c = loyalty.confirm_accrual(&a.loyalty_transaction_id, "c1").unwrap();
        assert_eq!(c.loyalty_transaction_id, a.loyalty_transaction_id);
        assert_eq!((c.points_confirmed.get(), c.balance.get()), (123, 5_123));
        assert_eq!(points_of(&loyalty, "m-1"), (5_123, 0, 5_123, 0));
        let t = &loyalty.transactions()[0];
        assert_eq!(t.confirmed_at, Some(clock.now()), "the platform's clock");
        assert_eq!(
            (t.pending_points, t.confirmed_points, t.confirmed_balance),
            (Some(Points::ZERO), Some(points(123)), Some(points(5_123)))
        );
        assert_eq!(
            (t.points, t.balance_after.get()),
            (123, 5_000),
            "the accrual as booked"
        );
        assert_eq!(loyalty.transactions().len(), 1, "a confirmation books nothing");
        // All 5,123 can be held now.
        loyalty
            .create_hold(&hold("m-1", 5_123, 10_000, clock.now(), FIFTEEN_MINUTES), "h1")
            .unwrap();
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }

    #[test]
    fn confirming_again_under_any_key_answers_the_first_confirmation_and_moves_nothing() {
        let (loyalty, clock) = platform();
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 12_345), "a1")
            .unwrap();
        let first = loyalty.confirm_accrual(&a.loyalty_transaction_id, "c1").unwrap();
        let confirmed_at = loyalty.transactions()[0].confirmed_at;
        // Points earned meanwhile change the balance, not the first confirmation's figures.
        loyalty.accrue(&accrual("m-1", "r-2", 1_000), "a2").unwrap();
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            loyalty.confirm_accrual(&a.loyalty_transaction_id, "c1").unwrap(),
            first
        );
        assert_eq!(
            loyalty.confirm_accrual(&a.loyalty_transaction_id, "c2").unwrap(),
            first
        );
        assert_eq!(points_of(&loyalty, "m-1"), (5_133, 0, 5_133, 0), "moved once");
        assert_eq!(loyalty.transactions()[0].confirmed_at, confirmed_at);
        let b = loyalty.accrue(&pending_accrual("m-1", "r-3", 500), "a3").unwrap();
        refused(
            loyalty.confirm_accrual(&b.loyalty_transaction_id, "c1"),
            409,
            "idempotency_key_reused",
        );
        assert_eq!(points_of(&loyalty, "m-1"), (5_133, 0, 5_133, 5));
    }

    #[test]
    fn a_return_inside_the_window_cancels_pending_points_before_spendable_ones() {
        let (loyalty, _) = platform();
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 12_345), "a1")
            .unwrap();
        // Covered by the pending points: the balance is untouched.
        let first = loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-1", 100), "x1")
            .unwrap();
        assert_eq!(
            (first.delta, first.balance.get(), first.pending_cancelled.get()),
            (-100, 5_000, 100)
        );
        assert_eq!(points_of(&loyalty, "m-1"), (5_000, 0, 5_000, 23));
        let ledger = loyalty.transactions();
        assert_eq!(ledger[0].pending_points.map(Points::get), Some(23));
        assert_eq!(
            (
                ledger[1].kind,
                ledger[1].points,
                ledger[1].pending_cancelled.map(Points::get)
            ),
            (LoyaltyTransactionKind::Reversal, -100, Some(100))
        );
        assert_eq!(ledger[1].requested_points, None, "all it asked was taken");

        // Not covered: 23 pending, the other 27 from the balance.
        let second = loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-2", 50), "x2")
            .unwrap();
        assert_eq!(
            (second.delta, second.balance.get(), second.pending_cancelled.get()),
            (-50, 4_973, 23)
        );
        assert_eq!(points_of(&loyalty, "m-1"), (4_973, 0, 4_973, 0));
        // Nothing left pending: the next return takes from the balance alone.
        let third = loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-3", 10), "x3")
            .unwrap();
        assert_eq!((third.delta, third.pending_cancelled.get()), (-10, 0));
        assert_eq!(loyalty.transactions()[3].pending_cancelled, None);
        // Everything was returned before the window ended: the confirmation confirms nothing.
        let c = loyalty.confirm_accrual(&a.loyalty_transaction_id, "c1").unwrap();
        assert_eq!((c.points_confirmed.get(), c.balance.get()), (0, 4_963));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }

    /// A restore gives earned points back where a return inside the window took them from: to the
    /// transaction's latest accrual still pending (confirmed with it), else to the balance; a repeat
    /// under its key moves nothing again.
    #[test]
    fn a_restore_goes_back_pending_while_an_accrual_of_its_transaction_is_pending() {
        let (loyalty, _) = platform();
        let restore = |points: i64| AdjustmentRequest {
            kind: AdjustmentKind::Restore,
            reference: "correction:s-2".into(),
            ..reversal_of("m-1", "r-1", "x", points)
        };
        // Nothing of r-1 pending: to the balance.
        let first = loyalty.adjust(&restore(3), "k1").unwrap();
        assert_eq!((first.delta, first.balance.get()), (3, 5_003));
        assert_eq!(points_of(&loyalty, "m-1"), (5_003, 0, 5_003, 0));
        assert_eq!(
            loyalty.adjust(&restore(3), "k1").unwrap(),
            first,
            "the same answer"
        );
        assert_eq!(points_of(&loyalty, "m-1"), (5_003, 0, 5_003, 0));

        // Two pending accruals of r-1: onto the later one, and confirmed with it.
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 1_000), "a1")
            .unwrap();
        let b = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 2_000), "a2")
            .unwrap();
        let second = loyalty.adjust(&restore(1), "k2").unwrap();
        assert_eq!((second.delta, second.balance.get()), (1, 5_003));
        assert_eq!(points_of(&loyalty, "m-1"), (5_003, 0, 5_003, 31));
        let ledger = loyalty.transactions();
        let restored = ledger.last().unwrap();
        assert_eq!(
            (restored.kind, restored.points),
            (LoyaltyTransactionKind::Restore, 1)
        );
        assert_eq!(restored.kind.as_str(), "restore");
        assert_eq!(
            restored.booked().kind,
            retail_sync_core::ports::PointsKind::Restore
        );
        let pending = |id: &ExternalRef| {
            let t = loyalty.transactions();
            t.iter()
                .find(|t| &t.loyalty_transaction_id == id)
                .unwrap()
                .pending_points
                .map(Points::get)
        };
        assert_eq!(
            (
                pending(&a.loyalty_transaction_id),
                pending(&b.loyalty_transaction_id)
            ),
            (Some(10), Some(21))
        );
        let c = loyalty.confirm_accrual(&b.loyalty_transaction_id, "c1").unwrap();
        assert_eq!((c.points_confirmed.get(), c.balance.get()), (21, 5_024));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }

    #[test]
    fn a_reversal_cancels_the_oldest_pending_accrual_first_and_holds_still_stand() {
        let (loyalty, clock) = platform();
        // Two accruals on one transaction (say two shipments of an order), and one on another.
        loyalty
            .accrue(&pending_accrual("m-1", "r-1", 1_000), "a1")
            .unwrap();
        loyalty
            .accrue(&pending_accrual("m-1", "r-1", 2_000), "a2")
            .unwrap();
        loyalty
            .accrue(&pending_accrual("m-1", "r-2", 4_000), "a3")
            .unwrap();
        assert_eq!(points_of(&loyalty, "m-1"), (5_000, 0, 5_000, 70));
        loyalty
            .create_hold(&hold("m-1", 4_990, 10_000, clock.now(), FIFTEEN_MINUTES), "h1")
            .unwrap();
        // 30 pending of r-1 (10 + 20), 10 available: a return of 15 cancels the first accrual's 10, then
        // 5 of the second's.
        let a = loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-1", 15), "x1")
            .unwrap();
        assert_eq!((a.delta, a.pending_cancelled.get()), (-15, 15));
        let pending: Vec<_> = loyalty
            .transactions()
            .iter()
            .take(3)
            .map(|t| t.pending_points.map(Points::get))
            .collect();
        assert_eq!(pending, [Some(0), Some(15), Some(40)], "oldest first");
        // 15 left pending of r-1, 10 available: a return of 45 takes 15 + 10, less than it asked.
        let b = loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-2", 45), "x2")
            .unwrap();
        assert_eq!(
            (b.delta, b.pending_cancelled.get(), b.balance.get()),
            (-25, 15, 4_990)
        );
        let t = &loyalty.transactions()[4];
        assert_eq!(t.requested_points.map(Points::get), Some(45));
        assert_eq!(points_of(&loyalty, "m-1"), (4_990, 4_990, 0, 40), "r-2's stay");
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }

    #[test]
    fn a_confirmation_after_a_partial_return_confirms_only_the_rest() {
        let (loyalty, _) = platform();
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 12_345), "a1")
            .unwrap();
        loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-1", 100), "x1")
            .unwrap();
        let c = loyalty.confirm_accrual(&a.loyalty_transaction_id, "c1").unwrap();
        assert_eq!((c.points_confirmed.get(), c.balance.get()), (23, 5_023));
        assert_eq!(points_of(&loyalty, "m-1"), (5_023, 0, 5_023, 0));
        // A return after the confirmation takes spendable points, as before pending points existed.
        let late = loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-2", 5), "x2")
            .unwrap();
        assert_eq!(
            (late.delta, late.balance.get(), late.pending_cancelled.get()),
            (-5, 5_018, 0)
        );
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }

    #[test]
    fn confirming_an_unknown_accrual_or_one_never_pending_is_refused() {
        let (loyalty, clock) = platform();
        let plain = loyalty.accrue(&accrual("m-1", "r-1", 1_000), "a1").unwrap();
        let h = hold_of(&loyalty, &clock, 100, "h1");
        let redeemed = loyalty
            .commit_hold(&h.hold_id, &commit("o-1", 100), "c0")
            .unwrap()
            .loyalty_transaction_id
            .unwrap();
        refused(
            loyalty.confirm_accrual(&lt("LT-00000099"), "c1"),
            404,
            "transaction_not_found",
        );
        refused(
            loyalty.confirm_accrual(&redeemed, "c2"),
            404,
            "transaction_not_found",
        );
        refused(
            loyalty.confirm_accrual(&plain.loyalty_transaction_id, "c3"),
            409,
            "not_pending",
        );
        assert_eq!(points_of(&loyalty, "m-1"), (4_910, 0, 4_910, 0));
        assert_eq!(loyalty.transactions().len(), 2);
        // Refusals are not recorded against their keys: the key is free for a confirmation.
        let a = loyalty.accrue(&pending_accrual("m-1", "r-2", 500), "a2").unwrap();
        assert_eq!(
            loyalty
                .confirm_accrual(&a.loyalty_transaction_id, "c3")
                .unwrap()
                .points_confirmed
                .get(),
            5
        );
    }

    #[test]
    fn pending_points_move_with_a_merge_and_their_confirmation_credits_the_survivor() {
        let (loyalty, _) = two_accounts();
        let (m1, m2) = (member("m-1"), member("m-2"));
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-7", 2_000), "a7")
            .unwrap();
        let moved = loyalty.merge(&m1, &m2, "merge").unwrap();
        assert_eq!(
            moved.points_moved.get(),
            5_123 + 20,
            "the balance and the pending points"
        );
        assert_eq!(points_of(&loyalty, "m-1"), (0, 0, 0, 0));
        assert_eq!(points_of(&loyalty, "m-2"), (5_163, 0, 5_163, 20));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);

        // The survivor's return of the duplicate's sale cancels the points it now holds pending.
        let r = loyalty
            .adjust(&reversal_of("m-2", "r-7", "ret-7", 5), "x7")
            .unwrap();
        assert_eq!(
            (r.delta, r.pending_cancelled.get(), r.balance.get()),
            (-5, 5, 5_163)
        );
        let c = loyalty.confirm_accrual(&a.loyalty_transaction_id, "c7").unwrap();
        assert_eq!((c.points_confirmed.get(), c.balance.get()), (15, 5_178));
        assert_eq!(points_of(&loyalty, "m-2"), (5_178, 0, 5_178, 0));
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(0));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }

    #[test]
    fn the_books_show_what_is_still_pending_of_each_accrual() {
        let (loyalty, _) = platform();
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 12_345), "a1")
            .unwrap();
        loyalty.accrue(&accrual("m-1", "r-2", 1_000), "a2").unwrap();
        loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-1", 100), "x1")
            .unwrap();
        let (from, until) = (
            "2026-01-01T00:00:00Z".parse().unwrap(),
            "2027-01-01T00:00:00Z".parse().unwrap(),
        );
        let pending = |loyalty: &LoyaltySimulator| -> Vec<Option<i64>> {
            loyalty
                .movements(from, until)
                .iter()
                .map(|m| m.pending_points.map(Points::get))
                .collect()
        };
        assert_eq!(pending(&loyalty), [Some(23), None, None]);
        loyalty.confirm_accrual(&a.loyalty_transaction_id, "c1").unwrap();
        assert_eq!(pending(&loyalty), [Some(0), None, None]);
    }

    #[test]
    fn pending_points_count_toward_the_largest_balance() {
        let loyalty = enrolled();
        loyalty.seed_balance("m-1", Points::new(MAX_SAFE_INTEGER - 10).unwrap());
        loyalty
            .accrue(&pending_accrual("m-1", "r-1", 1_000), "a1")
            .unwrap();
        refused(
            loyalty.accrue(&accrual("m-1", "r-2", 100), "a2"),
            422,
            "balance_limit",
        );
        refused(
            loyalty.adjust(&adjustment("m-1", AdjustmentKind::Recredit, "o-1", "x", 1), "a3"),
            422,
            "balance_limit",
        );
        // An opening balance leaves room for the pending points.
        loyalty.seed_balance("m-1", Points::new(MAX_SAFE_INTEGER).unwrap());
        let b = loyalty.member_balance(&member("m-1")).unwrap();
        assert_eq!((b.balance.get() + b.pending.get()), MAX_SAFE_INTEGER);
        let confirmed = loyalty.confirm_accrual(&lt("LT-00000001"), "c1").unwrap();
        assert_eq!(confirmed.balance.get(), MAX_SAFE_INTEGER);
    }

    #[test]
    fn pending_accruals_returns_and_confirmations_come_back_from_the_journal() {
        let (loyalty, clock) = two_accounts();
        loyalty.keep_journal();
        let a = loyalty
            .accrue(&pending_accrual("m-1", "r-1", 12_345), "p1")
            .unwrap();
        let b = loyalty
            .accrue(&pending_accrual("m-1", "r-2", 3_000), "p2")
            .unwrap();
        loyalty
            .accrue(&pending_accrual("m-2", "r-3", 9_000), "p3")
            .unwrap();
        clock.advance(Duration::from_secs(3_600));
        loyalty
            .adjust(&reversal_of("m-1", "r-1", "ret-1", 100), "x1")
            .unwrap();
        clock.advance(Duration::from_secs(3_600));
        loyalty.confirm_accrual(&a.loyalty_transaction_id, "c1").unwrap();
        loyalty.merge(&member("m-1"), &member("m-2"), "merge").unwrap();
        clock.advance(Duration::from_secs(3_600));
        let confirmed = loyalty.confirm_accrual(&b.loyalty_transaction_id, "c2").unwrap();
        let journal = loyalty.take_journal();
        assert_eq!(journal.len(), 7);

        let (restored, _) = two_accounts();
        restored.replay(&journal).unwrap();
        assert_eq!(restored.transactions(), loyalty.transactions());
        assert_eq!(restored.members(), loyalty.members());
        for id in ["m-1", "m-2"] {
            assert_eq!(
                restored.member_balance(&member(id)).unwrap(),
                loyalty.member_balance(&member(id)).unwrap()
            );
        }
        assert_eq!(points_of(&restored, "m-2"), (5_163 + 23 + 30, 0, 5_216, 90));
        // Its idempotency record too: the same key answers the first confirmation.
        assert_eq!(
            restored.confirm_accrual(&b.loyalty_transaction_id, "c2").unwrap(),
            confirmed
        );
        // And the journal of a platform that never saw pending points reads as before.
        let old = serde_json::json!({
            "key": "k",
            "at": "2026-11-20T10:00:00Z",
            "call": {"op": "accrue", "request": {
                "member_id": "m-1",
                "transaction": {"kind": "receipt", "store_id": "store-1", "receipt_id": "r-9"},
                "currency": "EUR",
                "eligible_minor": 1000,
                "occurred_at": "2026-11-20T10:00:00Z"
            }}
        })
        .to_string();
        let (plain, _) = platform();
        plain.replay(&[old]).unwrap();
        assert_eq!(points_of(&plain, "m-1"), (5_010, 0, 5_010, 0));
        assert_eq!(plain.transactions()[0].pending_until, None);
    }

    #[test]
    fn tampering_with_a_pending_accrual_keeps_the_ledger_adding_up() {
        let (loyalty, _) = platform();
        loyalty
            .accrue(&pending_accrual("m-1", "r-1", 12_345), "a1")
            .unwrap();
        loyalty
            .accrue(&pending_accrual("m-1", "r-2", 1_000), "a2")
            .unwrap();
        assert!(loyalty.tamper("LT-00000001", Tamper::Duplicate));
        assert_eq!(points_of(&loyalty, "m-1"), (5_000, 0, 5_000, 123 + 10 + 123));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
        assert!(loyalty.tamper("LT-00000002", Tamper::SetPoints(4)));
        assert_eq!(points_of(&loyalty, "m-1"), (5_000, 0, 5_000, 123 + 4 + 123));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
        assert!(loyalty.tamper("LT-00000001", Tamper::Lose));
        assert_eq!(points_of(&loyalty, "m-1"), (5_000, 0, 5_000, 4 + 123));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
        // The ledger positions moved: a return and a confirmation still find their accruals.
        let r = loyalty
            .adjust(&reversal_of("m-1", "r-2", "ret-2", 1), "x1")
            .unwrap();
        assert_eq!(r.pending_cancelled.get(), 1);
        refused(
            loyalty.confirm_accrual(&lt("LT-00000001"), "c0"),
            404,
            "transaction_not_found",
        );
        let c = loyalty.confirm_accrual(&lt("LT-00000003"), "c1").unwrap();
        assert_eq!((c.points_confirmed.get(), c.balance.get()), (123, 5_123));
        assert_eq!(points_of(&loyalty, "m-1"), (5_123, 0, 5_123, 3));
        assert_ledger_adds_up(&loyalty, &[("m-1", 5_000)]);
    }
}
