//! Customers, tiers and consent: retail-sync's record of each member (the "golden record"), the rules
//! that decide which system's word counts for which attribute, and what every system is told.
//!
//! - **Ownership** ([`Ownership`], `infra/members/ownership.json`): which sources own which attribute,
//!   in priority order. An update of an attribute from a source that does not own it is refused whole.
//! - **Survivorship** ([`MemberRecord::apply`]): of two values of an attribute, a verified one beats an
//!   unverified one (contact data), then the more recent business time wins, then the source listed first,
//!   then the greater event id. A total order: the record is the same whatever order the events arrive in.
//!   Consent: the most recent word wins, a withdrawal wins a tie. Tier: the most recent change wins.
//! - **Revisions**: every change of what systems are told bumps `revision`; systems keep the highest
//!   revision they were told, so a late or repeated snapshot changes nothing.
//! - **Personal data** (name, e-mail, phone) lives only in the record's attribute values and the
//!   snapshots sent to systems; never in timelines, logs, events on the bus or idempotency records. An
//!   erasure clears it for good.
//!
//! Records are kept in the saga store (`member:<id>`, with the member's timeline as its audit trail), and
//! the duplicate index under `contact:<kind>:<digest>`: the same conditional writes on every backend.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use retail_sync_contracts::envelope::Channel;
use retail_sync_contracts::events::{CustomerUpdated, MemberEnrolled, MemberStatus};
use retail_sync_contracts::values::{EventId, MemberId, StoreId, Tier};

use std::sync::Arc;

use async_trait::async_trait;
use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::HoldId;

use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::ports::{
    Accrual, AccrualRequest, Adjustment, AdjustmentRequest, Balance, CommitRequest, Hold, HoldRequest,
    Loyalty, LoyaltyMembers, MemberSnapshot, SagaStore,
};

/// The member attributes, as the ownership table names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// The name.
    Profile,
    /// E-mail and phone.
    Contact,
    /// Marketing consent.
    Consent,
    Tier,
    HomeStore,
    /// Who may sign members up.
    Enrolment,
}

impl Attribute {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::Contact => "contact",
            Self::Consent => "consent",
            Self::Tier => "tier",
            Self::HomeStore => "home_store",
            Self::Enrolment => "enrolment",
        }
    }
}

/// Which sources own which attribute, first = highest priority (see the README's ownership table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ownership {
    pub profile: Vec<Channel>,
    pub contact: Vec<Channel>,
    pub consent: Vec<Channel>,
    pub tier: Vec<Channel>,
    pub home_store: Vec<Channel>,
    pub enrolment: Vec<Channel>,
}

/// The shipped table; a deployment replaces it with its own (`MemberOwnership`).
pub const DEFAULT_OWNERSHIP: &str = include_str!("../../../infra/members/ownership.json");

impl Default for Ownership {
    fn default() -> Self {
        Self::from_json(DEFAULT_OWNERSHIP).expect("the shipped ownership table reads")
    }
}

impl Ownership {
    /// Reads a table; every attribute needs at least one owner.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let table: Ownership =
            serde_json::from_str(text).map_err(|e| format!("member ownership table: {e}"))?;
        for attribute in [
            Attribute::Profile,
            Attribute::Contact,
            Attribute::Consent,
            Attribute::Tier,
            Attribute::HomeStore,
            Attribute::Enrolment,
        ] {
            if table.owners(attribute).is_empty() {
                return Err(format!(
                    "member ownership table: {} has no owner",
                    attribute.as_str()
                ));
            }
        }
        Ok(table)
    }

    /// `MEMBER_OWNERSHIP` (a table's JSON) from `lookup`, else the shipped table.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        match lookup("MEMBER_OWNERSHIP").filter(|v| !v.trim().is_empty()) {
            Some(json) => Self::from_json(&json),
            None => Ok(Self::default()),
        }
    }

    pub fn owners(&self, attribute: Attribute) -> &[Channel] {
        match attribute {
            Attribute::Profile => &self.profile,
            Attribute::Contact => &self.contact,
            Attribute::Consent => &self.consent,
            Attribute::Tier => &self.tier,
            Attribute::HomeStore => &self.home_store,
            Attribute::Enrolment => &self.enrolment,
        }
    }

    /// The source's rank among the attribute's owners (0 = first); `None` when it does not own it.
    pub fn rank(&self, attribute: Attribute, source: Channel) -> Option<usize> {
        self.owners(attribute).iter().position(|&c| c == source)
    }

    /// One finding per attribute of `attributes` that `source` does not own. A sign-up is where a
    /// member first gives their data: one from a source that may enrol carries every attribute, those it
    /// does not own counting as the lowest-priority source's (see [`MemberRecord::apply`]).
    pub fn refusals(&self, attributes: &Attributes, source: Channel) -> Vec<String> {
        let signup = attributes.enrolment && self.rank(Attribute::Enrolment, source).is_some();
        attributes
            .present()
            .into_iter()
            .filter(|&a| !signup && self.rank(a, source).is_none())
            .map(|a| {
                let owners: Vec<&str> = self.owners(a).iter().map(|c| c.as_str()).collect();
                format!(
                    "{}: {} does not own it (owners: {})",
                    a.as_str(),
                    source.as_str(),
                    owners.join(", ")
                )
            })
            .collect()
    }
}

/// The attributes one event sets (absent: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    pub enrolment: bool,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub contact_verified: bool,
    pub marketing_consent: Option<bool>,
    pub home_store_id: Option<StoreId>,
    pub tier: Option<Tier>,
}

impl Attributes {
    pub fn of_update(u: &CustomerUpdated) -> Self {
        Self {
            enrolment: false,
            name: u.name.clone(),
            email: u.email.clone(),
            phone: u.phone.clone(),
            contact_verified: u.contact_verified.unwrap_or(false),
            marketing_consent: u.marketing_consent,
            home_store_id: u.home_store_id.clone(),
            tier: None,
        }
    }

    pub fn of_enrolment(e: &MemberEnrolled) -> Self {
        Self {
            enrolment: true,
            name: e.name.clone(),
            email: e.email.clone(),
            phone: e.phone.clone(),
            contact_verified: e.contact_verified.unwrap_or(false),
            marketing_consent: e.marketing_consent,
            home_store_id: e.home_store_id.clone(),
            tier: None,
        }
    }

    pub fn of_tier(tier: Tier) -> Self {
        Self {
            tier: Some(tier),
            ..Self::default()
        }
    }

    /// The duplicate index's keys of the e-mail and phone these attributes give.
    pub fn contact_keys(&self) -> Vec<ContactKey> {
        contact_keys(self.email.as_deref(), self.phone.as_deref())
    }

    /// The attributes present, each once.
    pub fn present(&self) -> Vec<Attribute> {
        let mut present = Vec::new();
        if self.enrolment {
            present.push(Attribute::Enrolment);
        }
        if self.name.is_some() {
            present.push(Attribute::Profile);
        }
        if self.email.is_some() || self.phone.is_some() {
            present.push(Attribute::Contact);
        }
        if self.marketing_consent.is_some() {
            present.push(Attribute::Consent);
        }
        if self.home_store_id.is_some() {
            present.push(Attribute::HomeStore);
        }
        if self.tier.is_some() {
            present.push(Attribute::Tier);
        }
        present
    }
}

/// The contact data of a `CustomerUpdated` or `MemberEnrolled`, checked at ingest: one finding per value
/// that is no e-mail address or phone number (the values themselves are not repeated: they are personal).
pub fn check_contact(name: Option<&str>, email: Option<&str>, phone: Option<&str>) -> Vec<String> {
    let mut findings = Vec::new();
    if name.is_some_and(|n| n.trim().is_empty() || n.chars().any(char::is_control)) {
        findings.push("/name: empty or holds control characters".to_owned());
    }
    if email.is_some_and(|e| normalise_email(e).is_none()) {
        findings.push("/email: not an e-mail address (local@domain, no spaces)".to_owned());
    }
    if phone.is_some_and(|p| normalise_phone(p).is_none()) {
        findings.push("/phone: not a phone number (6 to 15 digits, an optional leading +)".to_owned());
    }
    findings
}

/// The duplicate index's keys of an e-mail and a phone, as normalised (none for a value that does not
/// normalise).
fn contact_keys(email: Option<&str>, phone: Option<&str>) -> Vec<ContactKey> {
    let mut keys = Vec::new();
    if let Some(e) = email.and_then(normalise_email) {
        keys.push(ContactKey::of(ContactKind::Email, &e));
    }
    if let Some(p) = phone.and_then(normalise_phone) {
        keys.push(ContactKey::of(ContactKind::Phone, &p));
    }
    keys
}

/// An e-mail address as duplicates are matched on: trimmed, lower case. `None` when it is not one.
pub fn normalise_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some(e)
}

/// A phone number as duplicates are matched on: its digits, with the leading `+` if it had one; spaces,
/// dashes, dots and brackets are ignored. `None` when it is not one.
pub fn normalise_phone(phone: &str) -> Option<String> {
    let p = phone.trim();
    let (plus, rest) = match p.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", p),
    };
    let mut digits = String::with_capacity(rest.len() + 1);
    digits.push_str(plus);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let n = digits.len() - plus.len();
    (6..=15).contains(&n).then_some(digits)
}

/// Who said something about a member, and when (the event's business time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub source: Channel,
    pub at: Timestamp,
    pub event_id: EventId,
}

/// An attribute's value with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Valued<T> {
    pub value: T,
    pub source: Channel,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
    pub event_id: EventId,
}

/// One consent statement, kept for audit whether or not it is the one in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentEntry {
    pub granted: bool,
    pub source: Channel,
    /// When the member said it (the event's business time).
    pub at: Timestamp,
    pub event_id: EventId,
    /// `erasure` when an erasure withdrew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// retail-sync's record of one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: MemberId,
    pub status: MemberStatus,
    /// Bumped by every change of what the systems are told ([`MemberRecord::snapshot`]).
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<Stamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Valued<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Valued<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Valued<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Valued<bool>>,
    /// Every consent statement heard, by business time (then event id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consent_history: Vec<ConsentEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Valued<Tier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_store: Option<Valued<StoreId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<MemberId>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub merged_from: BTreeSet<MemberId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<Stamp>,
    /// The revision each system (`loyalty`, `erp`, `crm`) was last told.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synced: BTreeMap<String, u64>,
}

/// What an event changed, for the timeline (no personal data: attribute names and sources only).
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub changed: Vec<&'static str>,
    pub kept: Vec<&'static str>,
}

impl Applied {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.changed.is_empty() {
            parts.push(format!("changed {}", self.changed.join(", ")));
        }
        if !self.kept.is_empty() {
            parts.push(format!("kept the stronger value of {}", self.kept.join(", ")));
        }
        if parts.is_empty() {
            "nothing new".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Survivorship: does `candidate` (ranked `rank`) beat `current` (ranked `current_rank`)? A verified value
/// first, then the later business time, then the source listed first, then the greater event id.
fn wins<T>(candidate: &Valued<T>, rank: usize, current: &Valued<T>, current_rank: usize) -> bool {
    (
        candidate.verified,
        candidate.at,
        std::cmp::Reverse(rank),
        &candidate.event_id,
    ) > (
        current.verified,
        current.at,
        std::cmp::Reverse(current_rank),
        &current.event_id,
    )
}

/// A value offered by one event, with what survivorship needs to weigh it.
struct Stamped<'a, R: Fn(Attribute) -> usize> {
    stamp: &'a Stamp,
    verified: bool,
    rank: R,
    ownership: &'a Ownership,
}

impl<R: Fn(Attribute) -> usize> Stamped<'_, R> {
    /// Puts `value` in `slot` if it beats what is there. `None` when nothing was offered, else whether
    /// the value in force changed.
    fn offer<T: Clone + PartialEq>(
        &self,
        slot: &mut Option<Valued<T>>,
        value: Option<T>,
        attribute: Attribute,
    ) -> Option<bool> {
        let value = value?;
        let candidate = Valued {
            value,
            source: self.stamp.source,
            at: self.stamp.at,
            verified: self.verified,
            event_id: self.stamp.event_id.clone(),
        };
        let beats = slot.as_ref().is_none_or(|current| {
            let current_rank = self
                .ownership
                .rank(attribute, current.source)
                .unwrap_or(usize::MAX);
            wins(&candidate, (self.rank)(attribute), current, current_rank)
        });
        if !beats {
            return Some(false);
        }
        let changed = slot.as_ref().map(|c| &c.value) != Some(&candidate.value);
        *slot = Some(candidate);
        Some(changed)
    }
}

impl MemberRecord {
    pub fn new(member_id: MemberId) -> Self {
        Self {
            member_id,
            status: MemberStatus::Active,
            revision: 0,
            enrolment: None,
            name: None,
            email: None,
            phone: None,
            consent: None,
            consent_history: Vec::new(),
            tier: None,
            home_store: None,
            merged_into: None,
            merged_from: BTreeSet::new(),
            erased: None,
            synced: BTreeMap::new(),
        }
    }

    /// Whether the member may be sent marketing: their consent in force, on an active account (a merged
    /// account's person is the survivor, whose consent governs; an erased one has withdrawn).
    pub fn consents(&self) -> bool {
        self.status == MemberStatus::Active && self.consent.as_ref().is_some_and(|c| c.value)
    }

    /// What every system is told: the record's state, the marketing address only with consent.
    pub fn snapshot(&self) -> MemberSnapshot {
        let email = self.email.as_ref().map(|v| v.value.clone());
        MemberSnapshot {
            member_id: self.member_id.clone(),
            revision: self.revision,
            status: self.status,
            tier: self.tier.as_ref().map(|v| v.value.clone()),
            home_store_id: self.home_store.as_ref().map(|v| v.value.clone()),
            marketing_consent: self.consents(),
            name: self.name.as_ref().map(|v| v.value.clone()),
            marketing_email: email.clone().filter(|_| self.consents()),
            email,
            phone: self.phone.as_ref().map(|v| v.value.clone()),
            merged_into: self.merged_into.clone(),
        }
    }

    /// Bumps the revision when `change` altered what systems are told. A first consent statement is a
    /// change even when it withdraws (no consent either way before): the systems may hold a consent of
    /// their own, which the withdrawal must reach.
    fn revise(&mut self, change: impl FnOnce(&mut Self)) {
        let said = |r: &Self| r.consent.as_ref().map(|c| c.value);
        let before = (self.snapshot(), said(self));
        change(self);
        if (self.snapshot(), said(self)) != before {
            self.revision += 1;
        }
    }

    /// Applies `attributes` said by `stamp.source` (whose ownership the caller checked) under the
    /// survivorship rules. Personal data of an erased member is never taken again.
    pub fn apply(&mut self, attributes: &Attributes, stamp: &Stamp, ownership: &Ownership) -> Applied {
        let mut applied = Applied::default();
        let erased = self.erased.is_some();
        self.revise(|r| {
            if attributes.enrolment {
                // The earliest sign-up is the enrolment; a repeated one changes nothing.
                let earlier = r
                    .enrolment
                    .as_ref()
                    .is_none_or(|e| (stamp.at, &stamp.event_id) < (e.at, &e.event_id));
                if earlier {
                    r.enrolment = Some(stamp.clone());
                }
            }
            let valued = |verified| Stamped {
                stamp,
                verified,
                rank: |a| ownership.rank(a, stamp.source).unwrap_or(usize::MAX),
                ownership,
            };
            let contact = valued(attributes.contact_verified);
            let plain = valued(false);
            let trimmed = |v: &Option<String>| v.as_ref().map(|v| v.trim().to_owned());
            let mut offer = |taken: Option<bool>, label: &'static str| match taken {
                Some(true) => applied.changed.push(label),
                Some(false) => applied.kept.push(label),
                None => {}
            };
            if erased {
                // Personal data of an erased member is never taken again.
                for (value, label) in [
                    (&attributes.name, "name"),
                    (&attributes.email, "email"),
                    (&attributes.phone, "phone"),
                ] {
                    offer(value.as_ref().map(|_| false), label);
                }
            } else {
                offer(
                    plain.offer(&mut r.name, trimmed(&attributes.name), Attribute::Profile),
                    "name",
                );
                offer(
                    contact.offer(&mut r.email, trimmed(&attributes.email), Attribute::Contact),
                    "email",
                );
                offer(
                    contact.offer(&mut r.phone, trimmed(&attributes.phone), Attribute::Contact),
                    "phone",
                );
            }
            offer(
                plain.offer(
                    &mut r.home_store,
                    attributes.home_store_id.clone(),
                    Attribute::HomeStore,
                ),
                "home_store",
            );
            offer(
                plain.offer(&mut r.tier, attributes.tier.clone(), Attribute::Tier),
                "tier",
            );

            if let Some(granted) = attributes.marketing_consent {
                let changed = r.hear_consent(ConsentEntry {
                    granted,
                    source: stamp.source,
                    at: stamp.at,
                    event_id: stamp.event_id.clone(),
                    by: None,
                });
                offer(Some(changed), "consent");
            }
        });
        applied
    }

    /// Records a consent statement (once per event) and puts the one in force: the latest; at the same
    /// time a withdrawal beats a grant, then the event id decides. Returns whether the consent in force
    /// changed value.
    fn hear_consent(&mut self, entry: ConsentEntry) -> bool {
        let order = |e: &ConsentEntry| (e.at, !e.granted, e.event_id.clone());
        if !self
            .consent_history
            .iter()
            .any(|e| e.event_id == entry.event_id && e.by == entry.by)
        {
            let at = self
                .consent_history
                .partition_point(|e| order(e) <= order(&entry));
            self.consent_history.insert(at, entry);
        }
        let before = self.consent.as_ref().map(|c| c.value);
        if let Some(last) = self.consent_history.last() {
            self.consent = Some(Valued {
                // A withdrawal by erasure stays in force whatever comes later.
                value: last.granted && self.erased.is_none(),
                source: last.source,
                at: last.at,
                verified: false,
                event_id: last.event_id.clone(),
            });
        }
        before != self.consent.as_ref().map(|c| c.value)
    }

    /// The member's contact values as the duplicate index keys them.
    pub fn contact_keys(&self) -> Vec<ContactKey> {
        contact_keys(
            self.email.as_ref().map(|v| v.value.as_str()),
            self.phone.as_ref().map(|v| v.value.as_str()),
        )
    }

    /// Erases the member's personal data for good, and withdraws consent as of the request.
    pub fn erase(&mut self, stamp: &Stamp) {
        self.revise(|r| {
            r.name = None;
            r.email = None;
            r.phone = None;
            r.hear_consent(ConsentEntry {
                granted: false,
                source: stamp.source,
                at: stamp.at,
                event_id: stamp.event_id.clone(),
                by: Some("erasure".to_owned()),
            });
            if let Some(c) = &mut r.consent {
                c.value = false;
            }
            if r.status == MemberStatus::Active {
                r.status = MemberStatus::Erased;
            }
            if r.erased.is_none() {
                r.erased = Some(stamp.clone());
            }
        });
    }

    /// Closes this record as merged into `survivor`.
    pub fn close_as_merged(&mut self, survivor: &MemberId) {
        self.revise(|r| {
            r.status = MemberStatus::Merged;
            r.merged_into = Some(survivor.clone());
        });
    }

    /// Takes what the duplicate knows where it is stronger (the same survivorship rules) and records the
    /// merge.
    pub fn absorb(&mut self, duplicate: &MemberRecord, ownership: &Ownership) -> Applied {
        let mut applied = Applied::default();
        // Each of the duplicate's values offered as the event that set it would be, so the survivorship
        // rules decide as they would have had both come to one member.
        type Put = fn(&mut Attributes, String);
        let values: [(&Option<Valued<String>>, Put); 3] = [
            (&duplicate.name, |a, v| a.name = Some(v)),
            (&duplicate.email, |a, v| a.email = Some(v)),
            (&duplicate.phone, |a, v| a.phone = Some(v)),
        ];
        for (value, put) in values {
            if let Some(v) = value {
                let mut attributes = Attributes {
                    contact_verified: v.verified,
                    ..Attributes::default()
                };
                put(&mut attributes, v.value.clone());
                let stamp = Stamp {
                    source: v.source,
                    at: v.at,
                    event_id: v.event_id.clone(),
                };
                let a = self.apply(&attributes, &stamp, ownership);
                applied.changed.extend(a.changed);
                applied.kept.extend(a.kept);
            }
        }
        // The duplicate's consent statements are the same person's: the latest of all of them governs.
        let before = self.consent.as_ref().map(|c| c.value);
        self.revise(|r| {
            for entry in &duplicate.consent_history {
                r.hear_consent(entry.clone());
            }
        });
        if self.consent.as_ref().map(|c| c.value) != before {
            applied.changed.push("consent");
        }
        self.merged_from.insert(duplicate.member_id.clone());
        applied
    }
}

/// The kinds of contact data duplicates are matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    Email,
    Phone,
}

impl ContactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }
}

/// A normalised contact value as the index keys it: a digest, so the index holds no address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContactKey {
    pub kind: ContactKind,
    pub digest: String,
}

impl ContactKey {
    pub fn of(kind: ContactKind, normalised: &str) -> Self {
        let digest = Sha256::digest(normalised.as_bytes());
        Self {
            kind,
            digest: crate::idempotency::hex(&digest[..16]),
        }
    }

    /// The index entry's id in the saga store.
    pub fn entry_id(&self) -> String {
        format!("contact:{}:{}", self.kind.as_str(), self.digest)
    }
}

/// The members that gave one contact value, each with the earliest business time they gave it at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactEntry {
    pub kind: Option<ContactKind>,
    pub members: BTreeMap<MemberId, Timestamp>,
}

impl ContactEntry {
    /// The member who had the value first (earliest time, then smallest id): the one the others are
    /// suspected duplicates of, whatever order the events came in.
    pub fn first(&self) -> Option<&MemberId> {
        self.members
            .iter()
            .min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
            .map(|(m, _)| m)
    }

    /// Each member but the first, with the first: the suspected pairs.
    pub fn suspects(&self) -> Vec<(MemberId, MemberId)> {
        let Some(first) = self.first() else {
            return Vec::new();
        };
        self.members
            .keys()
            .filter(|m| *m != first)
            .map(|m| (m.clone(), first.clone()))
            .collect()
    }
}

/// What a member-kind record in the saga store holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MemberState {
    Record(Box<MemberRecord>),
    Contact(ContactEntry),
}

/// How a member the loyalty platform does not know comes to earn (`MemberEnrolment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enrolment {
    /// The first earn enrols the member: a card handed out at the till is activated by its first use.
    #[default]
    OnFirstEarn,
    /// Only a `MemberEnrolled` enrols: an earn for a member not enrolled waits for it (retried with
    /// backoff, then in the step's DLQ for a redrive).
    Explicit,
}

impl Enrolment {
    /// `MEMBER_ENROLMENT` from `lookup`, `on-first-earn` when unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        match lookup("MEMBER_ENROLMENT").filter(|v| !v.trim().is_empty()) {
            Some(v) => Self::parse(v.trim()),
            None => Ok(Self::default()),
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "on-first-earn" => Ok(Self::OnFirstEarn),
            "explicit" => Ok(Self::Explicit),
            other => Err(format!(
                "member enrolment {other:?} is neither on-first-earn nor explicit"
            )),
        }
    }
}

/// The enrolment rule of a step that earns: an accrual the platform refuses as `member_not_enrolled`
/// enrols the member, tells the platform retail-sync's record of them, and accrues again (on first
/// earn), or waits (explicit). Part of [`StepLoyalty`].
pub struct Enrolling {
    /// `None` when the connector does not enrol (its platform's own rules apply).
    pub members: Option<Arc<dyn LoyaltyMembers>>,
    pub enrolment: Enrolment,
}

impl Enrolling {
    /// What follows the platform's `member_not_enrolled` (`message`) for `request`.
    async fn not_enrolled(
        &self,
        platform: Following<'_>,
        request: &AccrualRequest,
        key: &IdempotencyKey,
        message: String,
    ) -> Result<Accrual, Error> {
        match (self.enrolment, &self.members) {
            (Enrolment::OnFirstEarn, Some(members)) => {
                let enrol = IdempotencyKey::for_step(key.as_str(), "enrol");
                match members.enrol(&request.member_id, &enrol).await {
                    Ok(()) => {
                        tell_record(platform.sagas, &**members, &request.member_id, &enrol).await;
                        platform.accrue(request, key).await
                    }
                    // Both verdicts, for the timeline: why it did not earn, and why it was not enrolled.
                    Err(Error::Rejected {
                        reason,
                        message: refused,
                    }) => Err(Error::rejected(
                        reason,
                        format!("{message}; enrolling the member: {refused}"),
                    )),
                    Err(e) => Err(e),
                }
            }
            (Enrolment::Explicit, Some(_)) => Err(Error::NotYet {
                what: format!("the enrolment of member {}", request.member_id),
            }),
            (_, None) => Err(Error::rejected(ReasonCode::MemberNotEnrolled, message)),
        }
    }
}

/// Tells the platform the record retail-sync holds of a member it has just enrolled: what other sources
/// said before the member's first purchase was processed (a CRM's consent, a contact change), which
/// `sync-member` could not tell a platform that did not know the member yet. So the platform's copy is
/// the same whether those changes or the purchase came first. Nothing to tell without a record (or at
/// revision 0). The record is read again after telling, and told again if it moved on meanwhile (a
/// `sync-member` write whose own telling the platform refused, not knowing the member yet), a few
/// rounds at most. A failure to tell does not keep the points from being earned: it is logged, and the
/// record's next change tells the platform.
async fn tell_record(
    sagas: &dyn SagaStore,
    members: &dyn LoyaltyMembers,
    member: &MemberId,
    enrol: &IdempotencyKey,
) {
    let mut told = 0;
    for _ in 0..3 {
        let record = match load_record(sagas, member).await {
            Ok(Some(r)) if r.revision > told => r,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(member = %member, error = %crate::error::describe(&e), "a first-earn enrolment's record not read");
                return;
            }
        };
        // The revision in the key: each snapshot under a key of its own.
        let key = IdempotencyKey::for_step(enrol.as_str(), &format!("profile:r{}", record.revision));
        if let Err(e) = members.sync_member(&record.snapshot(), &key).await {
            tracing::warn!(member = %member, error = %crate::error::describe(&e), "a first-earn enrolment's record not told");
            return;
        }
        told = record.revision;
    }
}

/// Retail-sync's record of `member` (`None`: it never heard of them).
pub async fn load_record(sagas: &dyn SagaStore, member: &MemberId) -> Result<Option<MemberRecord>, Error> {
    Ok(match sagas.load(&record_id(member)).await? {
        Some(saga) => match saga.member {
            Some(MemberState::Record(r)) => Some(*r),
            _ => None,
        },
        None => None,
    })
}

/// The member still active at the end of `member`'s chain of merges by retail-sync's records: `member`
/// when they were merged into nobody (or retail-sync never heard of them), else whom they were merged
/// into, and on. `None`: more than [`MERGE_HOPS`] merges (records that name each other).
pub async fn active_member(sagas: &dyn SagaStore, member: &MemberId) -> Result<Option<MemberId>, Error> {
    let mut now = member.clone();
    for _ in 0..=MERGE_HOPS {
        match load_record(sagas, &now).await?.and_then(|r| r.merged_into) {
            Some(next) => now = next,
            None => return Ok(Some(now)),
        }
    }
    Ok(None)
}

/// How many merges one call follows (a survivor merged in turn into another member, and so on): more
/// than any real chain, and a bound should records ever name each other.
pub const MERGE_HOPS: usize = 8;

/// A loyalty call in flight, as [`Following`] makes it again for a survivor.
type Call<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

/// The loyalty port of the steps: following merges (see [`Following`]), and for the step that earns,
/// with the enrolment rule ([`Enrolling`]).
pub struct StepLoyalty {
    pub loyalty: Arc<dyn Loyalty>,
    /// Where the member records are (the saga store).
    pub sagas: Arc<dyn SagaStore>,
    /// `None` for a step that does not earn.
    pub enrolling: Option<Enrolling>,
}

impl StepLoyalty {
    fn following(&self) -> Following<'_> {
        Following {
            loyalty: &*self.loyalty,
            sagas: &*self.sagas,
        }
    }
}

/// Points given to or taken from a member who was merged into another (the platform answers
/// `member_merged`) go to the member retail-sync's record says they were merged into, under a key of
/// their own (`<key>:merged-into:<survivor>`). So a sale on the duplicate's card, or a return of a sale it
/// earned on, counts on the survivor whether it is processed before the merge (the merge then moves its
/// points) or after. The first call always goes to the member the transaction names, under its own key:
/// a redelivery of an effect applied before the merge is answered by the platform with that first
/// answer, never applied again on the survivor. Used by the steps ([`StepLoyalty`]) and by
/// reconciliation's repairs.
#[derive(Clone, Copy)]
pub struct Following<'a> {
    pub loyalty: &'a dyn Loyalty,
    pub sagas: &'a dyn SagaStore,
}

impl Following<'_> {
    pub async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
        self.follow(request, key, |r| &mut r.member_id, |l, r, k| l.accrue(r, k))
            .await
    }

    pub async fn adjust(
        &self,
        request: &AdjustmentRequest,
        key: &IdempotencyKey,
    ) -> Result<Adjustment, Error> {
        self.follow(request, key, |r| &mut r.member_id, |l, r, k| l.adjust(r, k))
            .await
    }

    /// Whom `member` was merged into, by retail-sync's record. A platform that reports a merge the record
    /// does not hold yet (the merge's own write is not in, or it was made outside retail-sync) makes the
    /// call wait: retried, then in the step's DLQ, never booked on the wrong member.
    async fn survivor(&self, member: &MemberId, refusal: &str) -> Result<MemberId, Error> {
        let merged_into = load_record(self.sagas, member).await?.and_then(|r| r.merged_into);
        merged_into.ok_or_else(|| Error::NotYet {
            what: format!("retail-sync's record of the merge the loyalty platform reports ({refusal})"),
        })
    }

    /// Calls `call` for the request's member, then for whom they were merged into while the platform
    /// says merged.
    async fn follow<R, T, F>(
        &self,
        request: &R,
        key: &IdempotencyKey,
        member: impl Fn(&mut R) -> &mut MemberId,
        call: F,
    ) -> Result<T, Error>
    where
        R: Clone + Send + Sync,
        F: for<'c> Fn(&'c dyn Loyalty, &'c R, &'c IdempotencyKey) -> Call<'c, T>,
    {
        // The request and key as given until the platform says merged: no copy on the usual path.
        let mut followed: Option<(R, IdempotencyKey)> = None;
        for _ in 0..=MERGE_HOPS {
            let (now, now_key) = followed.as_ref().map_or((request, key), |(r, k)| (r, k));
            match call(self.loyalty, now, now_key).await {
                Err(Error::Rejected {
                    reason: ReasonCode::MergeRefused,
                    message,
                }) => {
                    let mut next = now.clone();
                    let survivor = self.survivor(member(&mut next), &message).await?;
                    let next_key =
                        IdempotencyKey::for_step(now_key.as_str(), &format!("merged-into:{survivor}"));
                    *member(&mut next) = survivor;
                    followed = Some((next, next_key));
                }
                other => return other,
            }
        }
        Err(Error::rejected(
            ReasonCode::MergeRefused,
            format!("more than {MERGE_HOPS} merges to follow from the member"),
        ))
    }
}

#[async_trait]
impl Loyalty for StepLoyalty {
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
        let platform = self.following();
        match (platform.accrue(request, key).await, &self.enrolling) {
            (
                Err(Error::Rejected {
                    reason: ReasonCode::MemberNotEnrolled,
                    message,
                }),
                Some(rule),
            ) => rule.not_enrolled(platform, request, key, message).await,
            (other, _) => other,
        }
    }

    async fn adjust(&self, request: &AdjustmentRequest, key: &IdempotencyKey) -> Result<Adjustment, Error> {
        self.following().adjust(request, key).await
    }

    // Holds are the redemption API's, at a till: a merged member's card is refused there, visibly, and
    // what follows (commit, release) goes by hold id.
    async fn balance(&self, member_id: &MemberId) -> Result<Balance, Error> {
        self.loyalty.balance(member_id).await
    }

    async fn create_hold(&self, request: &HoldRequest, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.loyalty.create_hold(request, key).await
    }

    async fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, Error> {
        self.loyalty.get_hold(hold_id).await
    }

    async fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &IdempotencyKey,
    ) -> Result<Hold, Error> {
        self.loyalty.commit_hold(hold_id, request, key).await
    }

    async fn release_hold(&self, hold_id: &HoldId, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.loyalty.release_hold(hold_id, key).await
    }

    async fn confirm_accrual(
        &self,
        loyalty_transaction_id: &retail_sync_contracts::values::ExternalRef,
        key: &IdempotencyKey,
    ) -> Result<crate::ports::Confirmation, Error> {
        self.loyalty.confirm_accrual(loyalty_transaction_id, key).await
    }
}

/// The saga-store id of a member's record.
pub fn record_id(member: &MemberId) -> crate::saga::SagaId {
    crate::saga::SagaId::from_stored(format!("member:{member}"))
}

/// Keys whose values are personal data wherever they appear in a stored JSON body (our contracts, and
/// the platforms' customer payloads).
const PERSONAL_KEYS: &[&str] = &[
    "name",
    "email",
    "phone",
    "first_name",
    "last_name",
    "firstname",
    "lastname",
    "customer_email",
    "customer_firstname",
    "customer_lastname",
    "address",
    "address1",
    "address2",
    "street",
    "telephone",
    "default_address",
    "addresses",
    "billing_address",
    "shipping_address",
];

/// Removes personal data from a stored body: the values under `PERSONAL_KEYS` (at any depth, also in
/// JSON held as a string, as EventBridge bodies hold their detail) and any text equal to one of
/// `values`. A body that is no JSON is replaced when it mentions one of `values`. Returns whether
/// anything changed.
pub fn redact(body: &mut String, values: &[String]) -> bool {
    redact_collecting(body, values, &mut Vec::new())
}

/// [`redact`], adding to `removed` every text it took from under `PERSONAL_KEYS`. A refusal's findings
/// may quote such a value, one the member's record never kept (a phone the schema refused), so an
/// erasure looks for these in the texts as well as for the record's values.
pub fn redact_collecting(body: &mut String, values: &[String], removed: &mut Vec<String>) -> bool {
    match serde_json::from_str::<Value>(body) {
        Ok(mut json) => {
            if redact_value(&mut json, values, removed) {
                *body = json.to_string();
                true
            } else {
                false
            }
        }
        Err(_) => {
            if values.iter().any(|v| !v.is_empty() && body.contains(v.as_str())) {
                *body = ERASED.to_owned();
                true
            } else {
                false
            }
        }
    }
}

/// What erased personal data is replaced with.
pub const ERASED: &str = "[erased]";

/// Every non-empty text a value holds, at any depth (what a personal key held), but [`ERASED`].
fn texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() && s != ERASED => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| texts(v, out)),
        Value::Object(map) => map.values().for_each(|v| texts(v, out)),
        _ => {}
    }
}

/// Removes `values` from a text (a refusal's message or finding): each occurrence is replaced by
/// [`ERASED`]; a text that still holds one in another case is replaced whole. Returns whether anything
/// changed.
pub fn redact_text(text: &mut String, values: &[String]) -> bool {
    let mut changed = false;
    for v in values.iter().filter(|v| !v.is_empty()) {
        if text.contains(v.as_str()) {
            *text = text.replace(v.as_str(), ERASED);
            changed = true;
        }
    }
    let lower = text.to_lowercase();
    if values
        .iter()
        .any(|v| !v.is_empty() && lower.contains(&v.to_lowercase()))
    {
        *text = ERASED.to_owned();
        changed = true;
    }
    changed
}

fn redact_value(value: &mut Value, values: &[String], removed: &mut Vec<String>) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (k, v) in map.iter_mut() {
                if PERSONAL_KEYS.contains(&k.to_ascii_lowercase().as_str()) && !v.is_null() {
                    if *v != Value::String(ERASED.to_owned()) {
                        texts(v, removed);
                        *v = Value::String(ERASED.to_owned());
                        changed = true;
                    }
                } else {
                    changed |= redact_value(v, values, removed);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| redact_value(v, values, removed) | changed),
        Value::String(s) => {
            // EventBridge bodies keep nested JSON as text at times; redact inside it too.
            if let Ok(mut inner) = serde_json::from_str::<Value>(s)
                && inner.is_object()
            {
                if redact_value(&mut inner, values, removed) {
                    *s = inner.to_string();
                    return true;
                }
                return false;
            }
            let lower = s.to_lowercase();
            if values
                .iter()
                .any(|v| !v.is_empty() && lower.contains(&v.to_lowercase()))
            {
                *s = ERASED.to_owned();
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(source: Channel, at: &str, id: &str) -> Stamp {
        Stamp {
            source,
            at: at.parse().unwrap(),
            event_id: EventId::parse(id).unwrap(),
        }
    }

    fn member() -> MemberRecord {
        MemberRecord::new(MemberId::parse("m-1").unwrap())
    }

    fn email(e: &str, verified: bool) -> Attributes {
        Attributes {
            email: Some(e.to_owned()),
            contact_verified: verified,
            ..Attributes::default()
        }
    }

    #[test]
    fn the_shipped_table_reads_and_an_ownerless_attribute_is_refused() {
        let t = Ownership::default();
        assert_eq!(t.owners(Attribute::Tier), &[Channel::Loyalty]);
        let bad = DEFAULT_OWNERSHIP.replace("\"tier\": [\"loyalty\"]", "\"tier\": []");
        assert!(
            Ownership::from_json(&bad)
                .unwrap_err()
                .contains("tier has no owner")
        );
        let refusals = t.refusals(&Attributes::of_tier(Tier::parse("gold").unwrap()), Channel::Crm);
        assert_eq!(refusals, ["tier: crm does not own it (owners: loyalty)"]);
    }

    #[test]
    fn a_signup_carries_every_attribute_and_an_update_only_its_own() {
        let t = Ownership::default();
        let mut a = Attributes::of_enrolment(&MemberEnrolled {
            member_id: MemberId::parse("m-1").unwrap(),
            name: Some("Ana".into()),
            email: None,
            phone: None,
            contact_verified: None,
            marketing_consent: None,
            home_store_id: Some(StoreId::parse("store-1").unwrap()),
        });
        assert!(t.refusals(&a, Channel::Pos).is_empty());
        assert_eq!(t.refusals(&a, Channel::Oms).len(), 3, "the OMS signs nobody up");
        a.enrolment = false;
        assert_eq!(
            t.refusals(&a, Channel::Pos),
            ["profile: pos does not own it (owners: crm, loyalty)"]
        );
    }

    #[test]
    fn survivorship_is_the_same_in_every_order() {
        let t = Ownership::default();
        let events = [
            (
                email("a@x.io", false),
                stamp(Channel::Crm, "2026-11-20T10:00:00Z", "e1"),
            ),
            (
                email("b@x.io", false),
                stamp(Channel::Ecommerce, "2026-11-20T11:00:00Z", "e2"),
            ),
            // Same time as e2, from a higher-priority owner.
            (
                email("c@x.io", false),
                stamp(Channel::Crm, "2026-11-20T11:00:00Z", "e3"),
            ),
            // Verified but older: a verified value beats an unverified one.
            (
                email("d@x.io", true),
                stamp(Channel::Mobile, "2026-11-20T09:00:00Z", "e4"),
            ),
        ];
        let mut seen = None;
        for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            let mut r = member();
            for i in perm {
                r.apply(&events[i].0, &events[i].1, &t);
            }
            assert_eq!(r.email.as_ref().unwrap().value, "d@x.io");
            // The revision counts the changes seen on the way; the state is the same.
            let snapshot = MemberSnapshot {
                revision: 0,
                ..r.snapshot()
            };
            assert_eq!(*seen.get_or_insert(snapshot.clone()), snapshot);
        }
        // Without the verified one, the same-time tie goes to the CRM.
        let mut r = member();
        for (a, s) in events.iter().take(3).rev() {
            r.apply(a, s, &t);
        }
        assert_eq!(r.email.as_ref().unwrap().value, "c@x.io");
    }

    #[test]
    fn an_older_tier_never_overwrites_a_newer_one() {
        let t = Ownership::default();
        let gold = Attributes::of_tier(Tier::parse("gold").unwrap());
        let silver = Attributes::of_tier(Tier::parse("silver").unwrap());
        let mut r = member();
        r.apply(&gold, &stamp(Channel::Loyalty, "2026-11-21T00:00:00Z", "t2"), &t);
        let applied = r.apply(
            &silver,
            &stamp(Channel::Loyalty, "2026-11-20T00:00:00Z", "t1"),
            &t,
        );
        assert_eq!(applied.kept, ["tier"]);
        assert_eq!(r.tier.as_ref().unwrap().value.as_str(), "gold");
        assert_eq!(r.revision, 1);
    }

    #[test]
    fn consent_the_latest_word_wins_a_withdrawal_wins_a_tie_and_every_statement_is_kept() {
        let t = Ownership::default();
        let say = |granted| Attributes {
            marketing_consent: Some(granted),
            ..Attributes::default()
        };
        let mut r = member();
        r.apply(&say(true), &stamp(Channel::Crm, "2026-11-20T10:00:00Z", "c2"), &t);
        r.apply(
            &say(false),
            &stamp(Channel::Pos, "2026-11-20T10:00:00Z", "c1"),
            &t,
        );
        assert!(!r.consents());
        r.apply(
            &say(true),
            &stamp(Channel::Mobile, "2026-11-19T10:00:00Z", "c0"),
            &t,
        );
        assert!(!r.consents(), "an older grant does not undo a withdrawal");
        r.apply(
            &say(true),
            &stamp(Channel::Mobile, "2026-11-19T10:00:00Z", "c0"),
            &t,
        );
        assert_eq!(r.consent_history.len(), 3, "a repeated statement is kept once");
        assert!(r.snapshot().marketing_email.is_none());
    }

    #[test]
    fn a_merge_gives_the_survivor_every_consent_statement_and_the_duplicate_none() {
        let t = Ownership::default();
        let say = |granted| Attributes {
            marketing_consent: Some(granted),
            ..Attributes::default()
        };
        let mut survivor = member();
        survivor.apply(
            &say(false),
            &stamp(Channel::Crm, "2026-11-20T14:00:00Z", "s1"),
            &t,
        );
        let mut dup = MemberRecord::new(MemberId::parse("m-2").unwrap());
        let mut a = say(true);
        a.email = Some("a@x.io".into());
        dup.apply(&a, &stamp(Channel::Mobile, "2026-11-20T09:00:00Z", "d1"), &t);
        assert!(dup.snapshot().marketing_email.is_some());
        dup.close_as_merged(&survivor.member_id);
        let s = dup.snapshot();
        assert!(
            !s.marketing_consent && s.marketing_email.is_none(),
            "a merged account gets no campaigns"
        );
        survivor.absorb(&dup, &t);
        assert!(!survivor.consents(), "the later withdrawal governs");
        assert_eq!(survivor.consent_history.len(), 2);
        assert_eq!(survivor.email.as_ref().unwrap().value, "a@x.io");
        // A first statement, even a withdrawal, is a revision: systems may hold a consent of their own.
        let mut fresh = member();
        fresh.apply(
            &say(false),
            &stamp(Channel::Pos, "2026-11-20T09:00:00Z", "f1"),
            &t,
        );
        assert_eq!(fresh.revision, 1);
    }

    #[test]
    fn an_erased_member_keeps_no_personal_data_and_takes_none_again() {
        let t = Ownership::default();
        let mut r = member();
        let mut a = email("a@x.io", false);
        a.name = Some("Ana".into());
        a.marketing_consent = Some(true);
        r.apply(&a, &stamp(Channel::Crm, "2026-11-20T10:00:00Z", "e1"), &t);
        r.erase(&stamp(Channel::Crm, "2026-11-20T11:00:00Z", "x1"));
        r.apply(&a, &stamp(Channel::Crm, "2026-11-21T10:00:00Z", "e2"), &t);
        let s = r.snapshot();
        assert_eq!((s.name, s.email, s.phone), (None, None, None));
        assert!(!s.marketing_consent);
        assert_eq!(s.status, MemberStatus::Erased);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("a@x.io") && !json.contains("Ana"), "{json}");
    }

    #[test]
    fn contacts_normalise_and_bad_ones_are_found() {
        assert_eq!(
            normalise_email(" Ana@Example.COM ").as_deref(),
            Some("ana@example.com")
        );
        assert_eq!(
            normalise_phone("+49 (30) 123-456").as_deref(),
            Some("+4930123456")
        );
        assert!(normalise_email("ana@").is_none() && normalise_email("a b@x.io").is_none());
        assert!(normalise_phone("12345").is_none() && normalise_phone("12ab5678").is_none());
        assert_eq!(check_contact(Some(" "), Some("nope"), Some("x")).len(), 3);
        assert!(check_contact(Some("Ana"), Some("a@x.io"), Some("030 1234567")).is_empty());
    }

    #[test]
    fn the_first_member_of_a_contact_is_the_same_in_every_order() {
        let mut e = ContactEntry::default();
        e.members.insert(
            MemberId::parse("m-2").unwrap(),
            "2026-11-20T10:00:00Z".parse().unwrap(),
        );
        e.members.insert(
            MemberId::parse("m-1").unwrap(),
            "2026-11-21T10:00:00Z".parse().unwrap(),
        );
        assert_eq!(e.first().unwrap().as_str(), "m-2");
        assert_eq!(e.suspects().len(), 1);
    }

    /// A platform that knows nobody until enrolled, refuses points for a merged member, and answers a
    /// key it applied for the same member with its first answer (as the simulators' gate does).
    #[derive(Default)]
    struct Platform {
        enrolled: std::sync::Mutex<Vec<MemberId>>,
        merged: std::sync::Mutex<Vec<MemberId>>,
        /// Accruals applied: key and member, numbered from 1 (`LT-<n>`).
        applied: std::sync::Mutex<Vec<(String, MemberId)>>,
    }

    fn accrued(n: usize) -> Accrual {
        Accrual {
            loyalty_transaction_id: retail_sync_contracts::values::ExternalRef::parse(format!("LT-{n}"))
                .unwrap(),
            points: retail_sync_contracts::values::Points::new(10).unwrap(),
            balance: retail_sync_contracts::values::Points::new(10).unwrap(),
            pending: false,
        }
    }

    #[async_trait]
    impl Loyalty for Platform {
        async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
            let mut applied = self.applied.lock().unwrap();
            let first = applied
                .iter()
                .position(|(k, m)| k == key.as_str() && *m == request.member_id);
            if let Some(n) = first {
                return Ok(accrued(n + 1));
            }
            if self.merged.lock().unwrap().contains(&request.member_id) {
                return Err(Error::rejected(ReasonCode::MergeRefused, "member_merged"));
            }
            if !self.enrolled.lock().unwrap().contains(&request.member_id) {
                return Err(Error::rejected(ReasonCode::MemberNotEnrolled, "member_not_found"));
            }
            applied.push((key.as_str().to_owned(), request.member_id.clone()));
            Ok(accrued(applied.len()))
        }
        async fn balance(&self, _: &MemberId) -> Result<Balance, Error> {
            unimplemented!("not called")
        }
        async fn create_hold(&self, _: &HoldRequest, _: &IdempotencyKey) -> Result<Hold, Error> {
            unimplemented!("not called")
        }
        async fn get_hold(&self, _: &HoldId) -> Result<Hold, Error> {
            unimplemented!("not called")
        }
        async fn commit_hold(
            &self,
            _: &HoldId,
            _: &CommitRequest,
            _: &IdempotencyKey,
        ) -> Result<Hold, Error> {
            unimplemented!("not called")
        }
        async fn release_hold(&self, _: &HoldId, _: &IdempotencyKey) -> Result<Hold, Error> {
            unimplemented!("not called")
        }
        async fn adjust(&self, _: &AdjustmentRequest, _: &IdempotencyKey) -> Result<Adjustment, Error> {
            unimplemented!("not called")
        }
    }

    #[async_trait]
    impl crate::ports::MemberSync for Platform {
        async fn sync_member(&self, _: &MemberSnapshot, _: &IdempotencyKey) -> Result<(), Error> {
            Ok(())
        }
    }

    #[async_trait]
    impl LoyaltyMembers for Platform {
        async fn enrol(&self, member_id: &MemberId, _: &IdempotencyKey) -> Result<(), Error> {
            if member_id.as_str().starts_with("unknown-") {
                return Err(Error::rejected(
                    ReasonCode::MemberNotEnrolled,
                    "enrolment_refused",
                ));
            }
            self.enrolled.lock().unwrap().push(member_id.clone());
            Ok(())
        }
        async fn merge(
            &self,
            _: &MemberId,
            _: &MemberId,
            _: &IdempotencyKey,
        ) -> Result<retail_sync_contracts::values::Points, Error> {
            unimplemented!("not called")
        }
    }

    fn accrual(member: &str) -> AccrualRequest {
        AccrualRequest {
            member_id: MemberId::parse(member).unwrap(),
            transaction: retail_sync_contracts::events::TransactionRef::Order {
                order_id: retail_sync_contracts::values::OrderId::parse("o-1").unwrap(),
            },
            currency: retail_sync_contracts::values::Currency::parse("EUR").unwrap(),
            eligible_minor: retail_sync_contracts::values::Amount::new(1000).unwrap(),
            occurred_at: "2026-11-20T10:00:00Z".parse().unwrap(),
            pending_until: None,
        }
    }

    #[tokio::test]
    async fn an_unknown_member_is_enrolled_on_first_earn_or_waited_for() {
        let platform = Arc::new(Platform::default());
        let key = IdempotencyKey::for_step("order:o-1", "accrue-loyalty");
        let port = |enrolment, members: bool| StepLoyalty {
            loyalty: platform.clone(),
            // No member records: nothing to tell after an enrolment (see the members e2e tests).
            sagas: Arc::new(crate::memory::MemoryState::default()),
            enrolling: Some(Enrolling {
                members: members.then(|| platform.clone() as Arc<dyn LoyaltyMembers>),
                enrolment,
            }),
        };
        let explicit = port(Enrolment::Explicit, true)
            .accrue(&accrual("m-1"), &key)
            .await;
        assert!(matches!(explicit, Err(Error::NotYet { .. })), "{explicit:?}");
        let unsupported = port(Enrolment::OnFirstEarn, false)
            .accrue(&accrual("m-1"), &key)
            .await;
        assert!(
            matches!(unsupported, Err(Error::Rejected { .. })),
            "{unsupported:?}"
        );
        let first = port(Enrolment::OnFirstEarn, true)
            .accrue(&accrual("m-1"), &key)
            .await;
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(platform.enrolled.lock().unwrap().len(), 1);
        let refused = port(Enrolment::OnFirstEarn, true)
            .accrue(&accrual("unknown-1"), &key)
            .await;
        assert!(
            matches!(&refused, Err(Error::Rejected { message, .. })
                if message == "member_not_found; enrolling the member: enrolment_refused"),
            "{refused:?}"
        );
        assert_eq!(Enrolment::parse("explicit"), Ok(Enrolment::Explicit));
        assert!(Enrolment::parse("sometimes").is_err());
    }

    /// Retail-sync's records of `merges` (duplicate, survivor), in a store of their own.
    async fn merge_records(merges: &[(&str, &str)]) -> Arc<crate::memory::MemoryState> {
        let store = Arc::new(crate::memory::MemoryState::default());
        let envelope: Value =
            serde_json::from_str(include_str!("../../../events/samples/MemberMergeRequested.json")).unwrap();
        let event = retail_sync_contracts::Event::from_detail(
            retail_sync_contracts::EventType::MemberMergeRequested,
            envelope["detail"].clone(),
        )
        .unwrap();
        for &(duplicate, survivor) in merges {
            let duplicate = MemberId::parse(duplicate).unwrap();
            let mut record = MemberRecord::new(duplicate.clone());
            record.close_as_merged(&MemberId::parse(survivor).unwrap());
            let mut saga = crate::saga::Saga::start(record_id(&duplicate), &event, Timestamp::now());
            saga.member = Some(MemberState::Record(Box::new(record)));
            assert!(store.create(&saga).await.unwrap().is_none());
        }
        store
    }

    /// Points for a merged member go to the survivor under a key of their own; an accrual applied before
    /// the merge and delivered again after it is answered, not applied again; a merge the record does not
    /// hold yet waits; a loop of merges ends.
    #[tokio::test]
    async fn points_follow_a_merge_once() {
        let platform = Arc::new(Platform::default());
        let (dup, survivor) = (MemberId::parse("m-1").unwrap(), MemberId::parse("m-2").unwrap());
        platform
            .enrolled
            .lock()
            .unwrap()
            .extend([dup.clone(), survivor.clone()]);
        let before = IdempotencyKey::for_step("receipt:s:r-1", "accrue-loyalty");
        let after = IdempotencyKey::for_step("receipt:s:r-2", "accrue-loyalty");

        // Not merged in the record yet: the platform's word alone makes the call wait.
        let sagas = merge_records(&[]).await;
        let port = Following {
            loyalty: &*platform,
            sagas: &*sagas,
        };
        port.accrue(&accrual("m-1"), &before).await.unwrap();
        platform.merged.lock().unwrap().push(dup.clone());
        let waits = port.accrue(&accrual("m-1"), &after).await;
        assert!(matches!(waits, Err(Error::NotYet { .. })), "{waits:?}");

        let sagas = merge_records(&[("m-1", "m-2")]).await;
        let port = Following {
            loyalty: &*platform,
            sagas: &*sagas,
        };
        let again = port.accrue(&accrual("m-1"), &before).await.unwrap();
        assert_eq!(again.loyalty_transaction_id.as_str(), "LT-1", "the first answer");
        let moved = port.accrue(&accrual("m-1"), &after).await.unwrap();
        assert_eq!(moved.loyalty_transaction_id.as_str(), "LT-2");
        assert_eq!(
            *platform.applied.lock().unwrap(),
            [
                (before.as_str().to_owned(), dup.clone()),
                (format!("{}:merged-into:m-2", after.as_str()), survivor.clone()),
            ]
        );

        platform.merged.lock().unwrap().push(survivor);
        let sagas = merge_records(&[("m-1", "m-2"), ("m-2", "m-1")]).await;
        let port = Following {
            loyalty: &*platform,
            sagas: &*sagas,
        };
        let third = IdempotencyKey::for_step("receipt:s:r-3", "accrue-loyalty");
        let looped = port.accrue(&accrual("m-1"), &third).await;
        assert!(
            matches!(&looped, Err(Error::Rejected { reason: ReasonCode::MergeRefused, message })
                if message == "more than 8 merges to follow from the member"),
            "{looped:?}"
        );
    }

    #[test]
    fn the_personal_values_of_a_body_are_found_and_removed_from_texts() {
        let mut body = serde_json::json!({
            "detail": serde_json::json!({"data": {"member_id": "m-1", "phone": "55", "email": "A@x.io",
                                      "addresses": [{"street": "Main 1"}], "tier": "gold"}}).to_string(),
        })
        .to_string();
        let mut found = Vec::new();
        assert!(redact_collecting(&mut body, &[], &mut found));
        found.sort();
        assert_eq!(found, ["55", "A@x.io", "Main 1"]);
        let mut finding = "/detail/data/phone: \"55\" is shorter than 3 characters".to_owned();
        assert!(redact_text(&mut finding, &found));
        assert_eq!(
            finding,
            "/detail/data/phone: \"[erased]\" is shorter than 3 characters"
        );
        assert!(!redact_text(&mut finding, &found), "nothing left to remove");
        let mut other_case = "no a@X.IO here".to_owned();
        assert!(redact_text(&mut other_case, &found));
        assert_eq!(other_case, ERASED);
        let (mut plain, mut none) = ("not json".to_owned(), Vec::new());
        assert!(!redact_collecting(&mut plain, &[], &mut none));
        assert!(none.is_empty());
    }

    #[test]
    fn redaction_removes_personal_values_at_any_depth() {
        let mut body = serde_json::json!({
            "detail": {"data": {"member_id": "m-1", "email": "a@x.io", "note": "call A@x.io"}},
            "text": "{\"phone\": \"030 1234567\"}"
        })
        .to_string();
        assert!(redact(&mut body, &["a@x.io".into()]));
        assert!(
            !body.contains("a@x.io") && !body.contains("A@x.io") && !body.contains("1234567"),
            "{body}"
        );
        assert!(body.contains("m-1"));
        let mut plain = "not json a@x.io".to_owned();
        assert!(redact(&mut plain, &["a@x.io".into()]));
        assert_eq!(plain, ERASED);
    }
}
