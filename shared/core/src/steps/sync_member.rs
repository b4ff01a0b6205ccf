//! `sync-member`: customers, tiers and consent (see `members` for the rules). For each member event:
//!
//! 1. **Ownership**: an attribute from a source that does not own it refuses the whole event
//!    (`not_owner`, quarantined with one finding per attribute); nothing of it is applied.
//! 2. **Enrolment** (`MemberEnrolled`): the member is enrolled on the loyalty platform, once.
//! 3. **The record**: the event is applied under the survivorship rules in one versioned write, with a
//!    timeline entry naming what changed (never a value: personal data stays out of timelines).
//! 4. **Duplicates**: the member's e-mail and phone are put in the duplicate index; another member with
//!    the same one makes a `DuplicateMemberSuspected` (the later member suspected of being the earlier).
//! 5. **Propagation**: every connected system (loyalty, ERP, CRM) is told the record's snapshot at its
//!    revision, once per system and revision; the channels hear `MemberChanged`.
//!
//! Erasures clear the record's personal data, take the member out of the duplicate index, remove their
//! personal data from quarantined messages and tell every system. Merges move the duplicate's points to
//! the survivor on the loyalty platform once, close the duplicate and tell every system about both.

use std::sync::Arc;

use retail_sync_contracts::envelope::{Channel, Detail, Metadata};
use retail_sync_contracts::events::{
    CustomerUpdated, DuplicateMemberSuspected, ErasureRequested, MemberChanged, MemberEnrolled,
    MemberMergeRequested, ReasonCode, TierChanged,
};
use retail_sync_contracts::values::{MemberId, Points};
use retail_sync_contracts::{Event, Rejection};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::idempotency::{Fingerprint, IdempotencyKey, IdempotencyRecord};
use crate::members::{
    self, Attributes, ContactEntry, ContactKey, MemberRecord, MemberState, Ownership, Stamp,
};
use crate::ports::{MemberSync, MemberSystems, QuarantineStore};
use crate::saga::{self, Saga, SagaId, SagaStatus, StepOutcome};
use crate::steps::{Accepts, Base, Cx, Once, Refusal, Workflow};

pub const STEP: &str = "sync-member";

pub struct SyncMember {
    pub base: Base,
    pub systems: MemberSystems,
    pub ownership: Arc<Ownership>,
    /// Erasures remove personal data from quarantined messages.
    pub quarantine: Arc<dyn QuarantineStore>,
}

/// What the step hears.
pub enum Heard {
    Enrolled(Detail<MemberEnrolled>),
    Updated(Detail<CustomerUpdated>),
    Tier(Detail<TierChanged>),
    Erasure(Detail<ErasureRequested>),
    Merge(Detail<MemberMergeRequested>),
}

impl Accepts for Heard {
    fn accept(event: Event) -> Option<Self> {
        Some(match event {
            Event::MemberEnrolled(d) => Self::Enrolled(d),
            Event::CustomerUpdated(d) => Self::Updated(d),
            Event::TierChanged(d) => Self::Tier(d),
            Event::ErasureRequested(d) => Self::Erasure(d),
            Event::MemberMergeRequested(d) => Self::Merge(d),
            _ => return None,
        })
    }

    fn metadata(&self) -> &Metadata {
        match self {
            Self::Enrolled(d) => &d.metadata,
            Self::Updated(d) => &d.metadata,
            Self::Tier(d) => &d.metadata,
            Self::Erasure(d) => &d.metadata,
            Self::Merge(d) => &d.metadata,
        }
    }
}

impl Heard {
    /// The member whose record the event is about (a merge's duplicate).
    fn member(&self) -> &MemberId {
        match self {
            Self::Enrolled(d) => &d.data.member_id,
            Self::Updated(d) => &d.data.member_id,
            Self::Tier(d) => &d.data.member_id,
            Self::Erasure(d) => &d.data.member_id,
            Self::Merge(d) => &d.data.duplicate_id,
        }
    }

    fn event_type(&self) -> retail_sync_contracts::EventType {
        match self {
            Self::Enrolled(_) => retail_sync_contracts::EventType::MemberEnrolled,
            Self::Updated(_) => retail_sync_contracts::EventType::CustomerUpdated,
            Self::Tier(_) => retail_sync_contracts::EventType::TierChanged,
            Self::Erasure(_) => retail_sync_contracts::EventType::ErasureRequested,
            Self::Merge(_) => retail_sync_contracts::EventType::MemberMergeRequested,
        }
    }

    /// The event again, as a record's origin is started from (a clone: called once per new record).
    fn event(&self) -> Event {
        match self {
            Self::Enrolled(d) => Event::MemberEnrolled(d.clone()),
            Self::Updated(d) => Event::CustomerUpdated(d.clone()),
            Self::Tier(d) => Event::TierChanged(d.clone()),
            Self::Erasure(d) => Event::ErasureRequested(d.clone()),
            Self::Merge(d) => Event::MemberMergeRequested(d.clone()),
        }
    }

    fn stamp(&self) -> Stamp {
        let m = self.metadata();
        Stamp {
            source: m.channel,
            at: m.occurred_at,
            event_id: m.event_id.clone(),
        }
    }
}

/// What a system answered to a snapshot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Told {
    Told,
    Refused { not_enrolled: bool, message: String },
}

/// What the loyalty platform answered to an enrolment or a merge.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Answer<T> {
    Done { value: T },
    Refused { message: String },
}

fn member_key(member: &MemberId, what: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(&format!("member:{member}"), &format!("{STEP}:{what}"))
}

impl Workflow for SyncMember {
    const NAME: &'static str = STEP;
    type Input = Heard;

    fn base(&self) -> &Base {
        &self.base
    }

    fn key(heard: &Heard) -> IdempotencyKey {
        member_key(heard.member(), heard.metadata().event_id.as_str())
    }

    async fn run(&self, cx: &mut Cx<'_>, heard: &Heard) -> Result<(), Error> {
        match heard {
            Heard::Enrolled(d) => {
                self.attributes(cx, heard, &Attributes::of_enrolment(&d.data))
                    .await
            }
            Heard::Updated(d) => self.attributes(cx, heard, &Attributes::of_update(&d.data)).await,
            Heard::Tier(d) => {
                self.attributes(cx, heard, &Attributes::of_tier(d.data.new_tier.clone()))
                    .await
            }
            Heard::Erasure(_) => self.erase(cx, heard).await,
            Heard::Merge(d) => self.merge(cx, heard, &d.data).await,
        }
    }
}

impl SyncMember {
    async fn attributes(&self, cx: &mut Cx<'_>, heard: &Heard, attributes: &Attributes) -> Result<(), Error> {
        let stamp = heard.stamp();
        let member = heard.member();
        let refusals = self.ownership.refusals(attributes, stamp.source);
        if !refusals.is_empty() {
            let message = format!(
                "{} from {} ({}) refused: it sets what {} does not own",
                heard.event_type().name(),
                stamp.source.as_str(),
                stamp.event_id,
                stamp.source.as_str()
            );
            // On the member's timeline and counted once, however often the event is delivered.
            if let Some(saga) = cx.sagas().load(&members::record_id(member)).await?
                && !has_entry(&saga, &message)
            {
                let text = message.clone();
                self.write(cx, saga, None, |_| (StepOutcome::Refused, text.clone()))
                    .await?;
                cx.metrics()
                    .add("member_updates_refused", 1, Some(("reason", "not_owner")));
            }
            let meta = heard.metadata();
            return Err(Error::BadInput(Box::new(Rejection {
                reason: ReasonCode::NotOwner,
                message,
                findings: refusals,
                detail_type: Some(heard.event_type().name().to_owned()),
                event_id: Some(meta.event_id.to_string()),
                correlation_id: Some(meta.correlation_id.to_string()),
            })));
        }

        // What the loyalty platform itself reports about a member (a tier change) vouches that the member
        // is the platform's: they are enrolled there too (once; a no-op for a member it knows), so the
        // platform is told the record whether the report or the member's first purchase (which enrols
        // on first earn) is processed first. Skipping a platform that did not know the member yet, with
        // no later enrolment through this step to tell it again, made its copy follow arrival.
        let vouched = !attributes.enrolment && stamp.source == Channel::Loyalty;
        let enrolment = if attributes.enrolment || vouched {
            self.enrol(cx, member).await?
        } else {
            None
        };
        let saga = self.load_or_start(cx, heard).await?;
        let entry = format!(
            "{} from {} ({})",
            heard.event_type().name(),
            stamp.source.as_str(),
            stamp.event_id
        );
        let completion = enrolment.as_ref().and_then(|e| e.completion());
        let enrolled = enrolment
            .as_ref()
            .is_some_and(|e| matches!(e.result(), Answer::Done { .. }));
        if let Some(Answer::Refused { message }) = enrolment.as_ref().map(|e| e.result())
            && !vouched
        {
            // Nothing of a refused sign-up is applied; the record keeps the refusal for the audit.
            if !has_entry(&saga, &entry) {
                let text = format!("{entry}: enrolment refused: {message}");
                self.write(cx, saga, completion, |_| (StepOutcome::Failed, text.clone()))
                    .await?;
            }
            cx.metrics().add(
                "member_updates_refused",
                1,
                Some(("reason", "member_not_enrolled")),
            );
            cx.exception(ReasonCode::MemberNotEnrolled, message.clone());
            return Ok(());
        }
        let before = record_of(&saga)?.contact_keys();
        let revision = record_of(&saga)?.revision;
        let saga = if has_entry(&saga, &entry) {
            saga
        } else {
            self.write(cx, saga, completion, |r| {
                let applied = r.apply(attributes, &stamp, &self.ownership);
                (StepOutcome::Done, format!("{entry}: {}", applied.describe()))
            })
            .await?
        };
        let record = record_of(&saga)?.clone();
        if record.revision > revision {
            cx.metrics().add("members_changed", 1, None);
        }
        let given = (attributes.contact_keys(), stamp.at);
        self.index_contacts(cx, &record, &before, Some(&given)).await?;
        // A sign-up (or the platform's own report) tells the loyalty platform the record again, once per
        // revision, even if an earlier revision was refused for not knowing the member.
        self.propagate(cx, saga, enrolled).await?;
        self.carry_to_survivor(cx, heard, &record, &entry).await
    }

    /// What is heard of a merged member after the merge reaches whom they were merged into as the merge
    /// would have taken it (`MemberRecord::absorb`: contact data under the survivorship rules, every
    /// consent statement), and on along a chain of merges to the member still active, so the survivor's
    /// record does not depend on whether the news or the merges were processed first. Once per event
    /// (`entry`), on each survivor's timeline.
    async fn carry_to_survivor(
        &self,
        cx: &mut Cx<'_>,
        heard: &Heard,
        duplicate: &MemberRecord,
        entry: &str,
    ) -> Result<(), Error> {
        // The record carried from: the duplicate's as given (most members are merged into nobody, and
        // are not copied), then each survivor's in turn.
        let mut absorbed: Option<MemberRecord> = None;
        for _ in 0..members::MERGE_HOPS {
            let from = absorbed.as_ref().unwrap_or(duplicate);
            let Some(survivor) = &from.merged_into else {
                return Ok(());
            };
            let saga = record_of_member(cx, survivor, heard).await?;
            let text = format!("{entry} of {}, merged here", from.member_id);
            let next = self.absorb(cx, saga, from, &text).await?;
            absorbed = Some(next);
        }
        Ok(())
    }

    /// The survivor whose record `saga` holds takes what `duplicate` knows, once (`text` on its timeline,
    /// with what changed); its place in the duplicate index follows, as for any change of its contact
    /// data, and every system is told. Returns the survivor's record.
    async fn absorb(
        &self,
        cx: &mut Cx<'_>,
        saga: Saga,
        duplicate: &MemberRecord,
        text: &str,
    ) -> Result<MemberRecord, Error> {
        let before = record_of(&saga)?.contact_keys();
        let saga = if has_entry(&saga, text) {
            saga
        } else {
            self.write(cx, saga, None, |r| {
                let applied = r.absorb(duplicate, &self.ownership);
                (StepOutcome::Done, format!("{text}: {}", applied.describe()))
            })
            .await?
        };
        let record = record_of(&saga)?.clone();
        self.index_contacts(cx, &record, &before, None).await?;
        self.propagate(cx, saga, false).await?;
        Ok(record)
    }

    /// Enrols the member on the loyalty platform once (`None`: no loyalty platform is connected). A
    /// fresh run's completion is written with the record.
    async fn enrol(&self, cx: &Cx<'_>, member: &MemberId) -> Result<Option<Once<Answer<()>>>, Error> {
        let Some(loyalty) = &self.systems.loyalty else {
            return Ok(None);
        };
        let key = member_key(member, "enrol");
        let run = cx
            .once_as(&key, Fingerprint::of(member), || async {
                Ok(match loyalty.enrol(member, &key).await.refusal()? {
                    Ok(()) => Answer::Done { value: () },
                    Err(message) => Answer::Refused { message },
                })
            })
            .await?;
        Ok(Some(run))
    }

    /// The member's record, started from `heard` when there is none yet.
    async fn load_or_start(&self, cx: &Cx<'_>, heard: &Heard) -> Result<Saga, Error> {
        record_of_member(cx, heard.member(), heard).await
    }

    /// One versioned write of `change` to the member record in `saga`, with the timeline entry it
    /// returns and the idempotency `completion` of the effect it records, if any.
    async fn write(
        &self,
        cx: &Cx<'_>,
        saga: Saga,
        completion: Option<&IdempotencyRecord>,
        mut change: impl FnMut(&mut MemberRecord) -> (StepOutcome, String),
    ) -> Result<Saga, Error> {
        let now = cx.now;
        saga::update_from(cx.sagas(), saga, completion, |s| {
            if let Some(MemberState::Record(r)) = &mut s.member {
                let (outcome, text) = change(r);
                s.record(STEP, outcome, text, now);
            }
        })
        .await
    }

    /// Puts the member under their contact values in the duplicate index (and out of the ones they no
    /// longer have), and announces every suspected pair the member is in. `given`: the keys the event
    /// being applied gave, and its business time. A member is indexed at the earliest time any event gave
    /// them the value they hold: an event that gives the value the record already holds from a later one
    /// changes nothing in the record, but its earlier time counts, so which member is suspected does not
    /// follow arrival.
    async fn index_contacts(
        &self,
        cx: &mut Cx<'_>,
        record: &MemberRecord,
        before: &[ContactKey],
        given: Option<&(Vec<ContactKey>, jiff::Timestamp)>,
    ) -> Result<(), Error> {
        let now_keys = record.contact_keys();
        for gone in before.iter().filter(|k| !now_keys.contains(k)) {
            self.unindex(cx, gone, &record.member_id).await?;
        }
        if record.status != retail_sync_contracts::MemberStatus::Active {
            return Ok(());
        }
        let at = |kind| match kind {
            members::ContactKind::Email => record.email.as_ref().map(|v| v.at),
            members::ContactKind::Phone => record.phone.as_ref().map(|v| v.at),
        };
        for key in now_keys {
            let Some(held_at) = at(key.kind) else { continue };
            let first_at = match given {
                Some((keys, given_at)) if keys.contains(&key) => held_at.min(*given_at),
                _ => held_at,
            };
            let id = SagaId::from_stored(key.entry_id());
            let entry = start_or_load(
                cx,
                id,
                || index_origin(record, cx.cause),
                || {
                    MemberState::Contact(ContactEntry {
                        kind: Some(key.kind),
                        ..ContactEntry::default()
                    })
                },
            )
            .await?;
            let member = record.member_id.clone();
            let entry = saga::update_from(cx.sagas(), entry, None, |s| {
                if let Some(MemberState::Contact(c)) = &mut s.member {
                    let t = c.members.entry(member.clone()).or_insert(first_at);
                    *t = (*t).min(first_at);
                }
            })
            .await?;
            let Some(MemberState::Contact(c)) = &entry.member else {
                continue;
            };
            for (later, first) in c.suspects() {
                if later != record.member_id && first != record.member_id {
                    continue;
                }
                let pair_key = format!("duplicate:{later}:{first}:{}", key.kind.as_str());
                cx.emit_as(
                    &pair_key,
                    DuplicateMemberSuspected {
                        member_id: later.clone(),
                        existing_member_id: first.clone(),
                        matched_on: vec![key.kind.as_str().to_owned()],
                    },
                );
                // The operator-visible record: an entry on the suspected member's timeline, written
                // once (it also counts the suspicion once, whichever delivery finds the pair).
                let text = format!(
                    "suspected duplicate of {first} (same {}): `retail-sync members merge --survivor {first} \
                     --duplicate {later}` if they are one person",
                    key.kind.as_str()
                );
                if let Some(saga) = cx.sagas().load(&members::record_id(&later)).await?
                    && !has_entry(&saga, &text)
                {
                    self.write(cx, saga, None, |_| (StepOutcome::Skipped, text.clone()))
                        .await?;
                    cx.metrics()
                        .add("duplicates_suspected", 1, Some(("matched_on", key.kind.as_str())));
                    tracing::warn!(member = %later, existing = %first, matched_on = key.kind.as_str(), "duplicate member suspected");
                }
            }
        }
        Ok(())
    }

    /// Takes `member` out of the index entry `key`.
    async fn unindex(&self, cx: &Cx<'_>, key: &ContactKey, member: &MemberId) -> Result<(), Error> {
        let id = SagaId::from_stored(key.entry_id());
        if let Some(entry) = cx.sagas().load(&id).await? {
            saga::update_from(cx.sagas(), entry, None, |s| {
                if let Some(MemberState::Contact(c)) = &mut s.member {
                    c.members.remove(member);
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Tells every connected system the record's current snapshot, once per system and revision, and
    /// announces it to the channels. `enrolled`: the loyalty platform has enrolled the member and is told
    /// the record even if an earlier revision was refused for not knowing them.
    async fn propagate(&self, cx: &mut Cx<'_>, mut saga: Saga, enrolled: bool) -> Result<(), Error> {
        let systems: [(&str, Option<&dyn MemberSync>); 3] = [
            (
                "loyalty",
                self.systems.loyalty.as_deref().map(|l| l as &dyn MemberSync),
            ),
            ("erp", self.systems.erp.as_deref()),
            ("crm", self.systems.crm.as_deref()),
        ];
        let record = record_of(&saga)?.clone();
        if record.revision == 0 {
            return Ok(());
        }
        let snapshot = record.snapshot();
        // One system's outage does not keep the others waiting: each is told, and the first failure
        // is returned at the end (the redelivery tells only the ones still behind).
        let mut failure = None;
        for (name, system) in systems {
            let Some(system) = system else { continue };
            let again = enrolled && name == "loyalty";
            if !again && record.synced.get(name).is_some_and(|&r| r >= record.revision) {
                continue;
            }
            let what = format!(
                "{name}:r{}{}",
                record.revision,
                if again { ":enrolled" } else { "" }
            );
            let key = member_key(&record.member_id, &what);
            let run = cx
                .once_as(&key, Fingerprint::of(&snapshot), || async {
                    Ok(match system.sync_member(&snapshot, &key).await {
                        Ok(()) => Told::Told,
                        Err(Error::Rejected { reason, message }) => Told::Refused {
                            not_enrolled: reason == ReasonCode::MemberNotEnrolled,
                            message,
                        },
                        Err(e) => return Err(e),
                    })
                })
                .await;
            let run = match run {
                Ok(run) => run,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(system = name, error = %crate::error::describe(&e), "member sync deferred");
                    failure.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (outcome, text) = match run.result() {
                Told::Told => (
                    StepOutcome::Done,
                    format!("told {name} revision {}", record.revision),
                ),
                Told::Refused {
                    not_enrolled: true, ..
                } => (
                    StepOutcome::Skipped,
                    format!("{name} does not know the member yet; it is told on enrolment"),
                ),
                Told::Refused { message, .. } => (
                    StepOutcome::Failed,
                    format!("{name} refused revision {}: {message}", record.revision),
                ),
            };
            let fresh = run.completion().is_some();
            let now = cx.now;
            let revision = record.revision;
            saga = saga::update_from(cx.sagas(), saga, run.completion(), |s| {
                if let Some(MemberState::Record(r)) = &mut s.member {
                    let synced = r.synced.entry(name.to_owned()).or_default();
                    *synced = (*synced).max(revision);
                }
                if fresh {
                    s.record(STEP, outcome, text.clone(), now);
                }
            })
            .await?;
            if fresh {
                cx.metrics().add("member_syncs", 1, Some(("system", name)));
            }
            if let Told::Refused {
                not_enrolled: false,
                message,
            } = run.result()
            {
                let reason = match name {
                    "loyalty" => ReasonCode::LoyaltyRejected,
                    "erp" => ReasonCode::ErpRejected,
                    _ => ReasonCode::CrmRejected,
                };
                cx.exception_as(&key, STEP, reason, format!("{name}: {message}"));
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        cx.emit_as(
            &format!("member:{}:r{}", record.member_id, record.revision),
            MemberChanged {
                member_id: record.member_id.clone(),
                revision: record.revision,
                status: record.status,
                tier: snapshot.tier.clone(),
                home_store_id: snapshot.home_store_id.clone(),
                marketing_consent: snapshot.marketing_consent,
                merged_into: snapshot.merged_into.clone(),
            },
        );
        Ok(())
    }

    async fn erase(&self, cx: &mut Cx<'_>, heard: &Heard) -> Result<(), Error> {
        let stamp = heard.stamp();
        let saga = self.load_or_start(cx, heard).await?;
        let record = record_of(&saga)?;
        let keys = record.contact_keys();
        // The values themselves, to find them in quarantined bodies whatever field holds them.
        let values: Vec<String> = [&record.name, &record.email, &record.phone]
            .into_iter()
            .flatten()
            .map(|v| v.value.clone())
            .collect();
        let text = format!(
            "erased on {}'s request ({})",
            stamp.source.as_str(),
            stamp.event_id
        );
        let already = has_entry(&saga, &text);
        let saga = if already {
            saga
        } else {
            self.write(cx, saga, None, |r| {
                r.erase(&stamp);
                (StepOutcome::Done, text.clone())
            })
            .await?
        };
        for key in &keys {
            self.unindex(cx, key, heard.member()).await?;
        }
        let scrubbed = self.scrub_quarantine(heard.member(), &values).await?;
        let saga = if scrubbed > 0 {
            let text = format!("personal data removed from {scrubbed} quarantined message(s)");
            self.write(cx, saga, None, |_| (StepOutcome::Done, text.clone()))
                .await?
        } else {
            saga
        };
        if !already {
            cx.metrics().add("members_erased", 1, None);
        }
        let record = record_of(&saga)?.clone();
        self.propagate(cx, saga, false).await?;
        // The erasure's withdrawal is a consent statement the survivor takes, as a merge after it would.
        self.carry_to_survivor(cx, heard, &record, &text).await
    }

    /// Removes the member's personal data from every quarantined message that mentions them: from its body,
    /// and from its refusal's message and findings, which may quote a value the record never kept (one
    /// the schema refused).
    async fn scrub_quarantine(&self, member: &MemberId, values: &[String]) -> Result<usize, Error> {
        let mut scrubbed = 0;
        // The member id as a JSON string, also escaped inside a body held as text (`m-1` must not find
        // `m-10`'s messages).
        let quoted = [format!("\"{member}\""), format!("\\\"{member}\\\"")];
        for mut item in self.quarantine.list(usize::MAX).await? {
            let mentions = quoted.iter().any(|q| item.body.contains(q.as_str()))
                || values
                    .iter()
                    .any(|v| !v.is_empty() && item.body.contains(v.as_str()));
            if !mentions {
                continue;
            }
            // The body's own personal values (what its redaction took) only for the texts: in the body its
            // personal keys are redacted anyway, and a short value ("91") would take a whole unrelated
            // field with it (a time that contains it).
            let mut found = values.to_vec();
            let mut changed = members::redact_collecting(&mut item.body, values, &mut found);
            changed |= members::redact_text(&mut item.rejection.message, &found);
            for finding in &mut item.rejection.findings {
                changed |= members::redact_text(finding, &found);
            }
            if changed {
                self.quarantine.put(&item).await?;
                scrubbed += 1;
            }
        }
        Ok(scrubbed)
    }

    async fn merge(
        &self,
        cx: &mut Cx<'_>,
        heard: &Heard,
        request: &MemberMergeRequested,
    ) -> Result<(), Error> {
        let (duplicate, survivor) = (&request.duplicate_id, &request.survivor_id);
        let refuse = |cx: &mut Cx<'_>, message: String| {
            cx.metrics().add("member_merges_refused", 1, None);
            cx.exception(ReasonCode::MergeRefused, message);
            Ok(())
        };
        if duplicate == survivor {
            return refuse(cx, format!("cannot merge {duplicate} into itself"));
        }
        let dup_saga = self.load_or_start(cx, heard).await?;
        let dup = record_of(&dup_saga)?.clone();
        if let Some(other) = dup.merged_into.as_ref().filter(|m| *m != survivor) {
            return refuse(cx, format!("{duplicate} is already merged into {other}"));
        }
        let Some(loyalty) = &self.systems.loyalty else {
            return refuse(
                cx,
                "no loyalty platform is connected to move the points".to_owned(),
            );
        };
        // A survivor merged in turn is followed to the member still active, so two merges chain in
        // either order: a merge into a member merged already moves the points where that member's went.
        let target = match members::active_member(cx.sagas(), survivor).await? {
            Some(target) if target == *duplicate => {
                return refuse(cx, format!("{survivor} is merged into {duplicate}"));
            }
            Some(target) => target,
            None => {
                let hops = members::MERGE_HOPS;
                return refuse(cx, format!("more than {hops} merges to follow from {survivor}"));
            }
        };
        let key = member_key(duplicate, &format!("merge-into:{survivor}"));
        // The platform's key names where the points go when that is not the survivor asked for.
        let call_key = if target == *survivor {
            key.clone()
        } else {
            IdempotencyKey::for_step(key.as_str(), &format!("merged-into:{target}"))
        };
        let run = cx
            .once_as(&key, Fingerprint::of(&(duplicate, survivor)), || async {
                let merged = match loyalty.merge(duplicate, &target, &call_key).await {
                    // A member the platform does not know yet may be enrolled by an event still on its
                    // way (a sign-up, a first purchase): the merge waits for it, as it would have
                    // found them processed in another order (retried, then in `SyncMemberDLQ`).
                    Err(Error::Rejected {
                        reason: ReasonCode::MemberNotEnrolled,
                        message,
                    }) => {
                        return Err(Error::NotYet {
                            what: format!("both members' enrolment on the loyalty platform ({message})"),
                        });
                    }
                    other => other,
                };
                Ok(match merged.refusal()? {
                    Ok(points) => Answer::Done { value: points },
                    Err(message) => Answer::Refused { message },
                })
            })
            .await?;
        let moved: Points = match run.result() {
            Answer::Done { value } => *value,
            Answer::Refused { message } => {
                let text = format!("merge into {survivor} refused: {message}");
                if !has_entry(&dup_saga, &text) {
                    self.write(cx, dup_saga, run.completion(), |_| {
                        (StepOutcome::Failed, text.clone())
                    })
                    .await?;
                }
                return refuse(cx, message.clone());
            }
        };
        let text = format!("merged into {survivor}: {moved} points moved");
        let dup_saga = if has_entry(&dup_saga, &text) {
            dup_saga
        } else {
            cx.metrics().add("members_merged", 1, None);
            self.write(cx, dup_saga, run.completion(), |r| {
                r.close_as_merged(survivor);
                (StepOutcome::Done, text.clone())
            })
            .await?
        };
        for key in record_of(&dup_saga)?.contact_keys() {
            self.unindex(cx, &key, duplicate).await?;
        }
        self.propagate(cx, dup_saga, false).await?;
        // The survivor's record, started from the merge request when retail-sync never heard of them. It
        // may take the duplicate's stronger contact data: the index follows. A survivor merged in turn
        // passes it on along its chain, as its own merge would have taken it had it come later.
        let survivor_saga = record_of_member(cx, survivor, heard).await?;
        let text = format!("absorbed {duplicate}: {moved} points moved here");
        let survivor = self.absorb(cx, survivor_saga, &dup, &text).await?;
        self.carry_to_survivor(cx, heard, &survivor, &format!("absorbed {duplicate}"))
            .await
    }
}

/// Whether the record's timeline has an entry of this step starting with `text` (a redelivery's work
/// is done already).
fn has_entry(saga: &Saga, text: &str) -> bool {
    saga.has_entry(STEP, text)
}

/// The member record a member-kind saga holds.
fn record_of(saga: &Saga) -> Result<&MemberRecord, Error> {
    match &saga.member {
        Some(MemberState::Record(r)) => Ok(r),
        _ => Err(Error::corrupt(
            format!("saga {}", saga.id),
            "holds no member record",
        )),
    }
}

/// The origin a contact index entry is started with: a `MemberChanged` of the member, which carries no
/// personal data, under the ids of the event that made the entry.
fn index_origin(record: &MemberRecord, cause: &Metadata) -> Event {
    Event::MemberChanged(Detail {
        metadata: cause.clone(),
        data: MemberChanged {
            member_id: record.member_id.clone(),
            revision: record.revision.max(1),
            status: record.status,
            tier: None,
            home_store_id: None,
            marketing_consent: false,
            merged_into: None,
        },
    })
}

/// The record of `member`, started from `heard` when retail-sync never heard of them.
async fn record_of_member(cx: &Cx<'_>, member: &MemberId, heard: &Heard) -> Result<Saga, Error> {
    start_or_load(
        cx,
        members::record_id(member),
        || heard.event(),
        || MemberState::Record(Box::new(MemberRecord::new(member.clone()))),
    )
    .await
}

/// Loads the member-kind record `id`, or creates it from `origin` (personal data removed) holding
/// `state()`. Records of members and of the index are never "running": they have no deadline.
async fn start_or_load(
    cx: &Cx<'_>,
    id: SagaId,
    origin: impl FnOnce() -> Event,
    state: impl FnOnce() -> MemberState,
) -> Result<Saga, Error> {
    if let Some(saga) = cx.sagas().load(&id).await? {
        return Ok(saga);
    }
    let mut saga = Saga::start(id, &origin(), cx.now);
    let mut text = saga.origin.get().to_owned();
    members::redact(&mut text, &[]);
    saga.origin = serde_json::value::RawValue::from_string(text)
        .map_err(|e| Error::corrupt(format!("saga {}", saga.id), e))?;
    saga.status = SagaStatus::Completed;
    saga.channel = None;
    saga.member = Some(state());
    Ok(match cx.sagas().create(&saga).await? {
        None => saga,
        Some(existing) => existing,
    })
}
