//! The CRM simulator: contacts, one per member. Rules:
//! - a member snapshot synced to the CRM creates the member's contact (any member id: the CRM keeps
//!   whoever it is told about) or replaces it when its revision is higher than the contact's, else
//!   changes nothing. The contact is the snapshot whole, never merged field by field: after an erased
//!   member's snapshot the contact holds no name, e-mail or phone (even had the sender put some in);
//! - a contact records when the CRM last changed it (`updated_at`, the simulator's clock: the system
//!   clock until [`CrmSimulator::set_clock`]);
//! - reading a contact never seen is refused (404 `contact_not_found`);
//! - the idempotency contract is the ERP's and the loyalty platform's: first answer again for a repeated
//!   key, 409 `idempotency_key_reused` if the key comes with another request; syncs are journaled;
//! - reads are not counted as requests and meet only the `down` fault (503) and the latency.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::values::MemberId;
use retail_sync_core::memory::ManualClock;
use retail_sync_core::ports::{Clock, MemberSnapshot, SystemClock};

use crate::error::SimError;
use crate::faults::Faults;
use crate::members::{MemberSynced, keep_latest};
use crate::system::{Gate, Shared, parse_journal, write_journal};

/// Every mutating call, as the idempotency record and the journal keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "request", rename_all = "snake_case")]
pub enum CrmCall {
    SyncMember(MemberSnapshot),
}

/// A contact as the CRM shows it: the member's last snapshot it kept, and when it kept it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmContact {
    #[serde(flatten)]
    pub member: MemberSnapshot,
    pub updated_at: Timestamp,
}

struct CrmState {
    gate: Gate<CrmCall, MemberSynced>,
    contacts: BTreeMap<MemberId, CrmContact>,
    clock: Arc<dyn Clock>,
}

impl Default for CrmState {
    fn default() -> Self {
        Self {
            gate: Gate::default(),
            contacts: BTreeMap::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The simulated CRM. Clones share one state, so the HTTP server, the in-process adapter and a test can
/// all hold a handle.
#[derive(Clone, Default)]
pub struct CrmSimulator {
    shared: Arc<Shared<CrmState>>,
}

impl CrmSimulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: Faults) -> Self {
        let sim = Self::new();
        sim.set_faults(faults);
        sim
    }

    /// The clock contacts are stamped with (the system clock until set); tests set a manual one.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.shared.lock().clock = clock;
    }

    /// Creates or replaces the member's contact under the rules above; answers the revision the contact
    /// holds.
    pub fn sync_member(&self, snapshot: &MemberSnapshot, key: &str) -> Result<MemberSynced, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let now = state.clock.now();
        let call = CrmCall::SyncMember(snapshot.clone());
        let contacts = &mut state.contacts;
        state.gate.call(&call, key, now, || {
            let mut member = contacts.get(&snapshot.member_id).map(|c| c.member.clone());
            let before = member.as_ref().map(|m| m.revision);
            let synced = keep_latest(&mut member, snapshot);
            if let Some(member) = member
                && before != Some(member.revision)
            {
                contacts.insert(
                    snapshot.member_id.clone(),
                    CrmContact {
                        member,
                        updated_at: now,
                    },
                );
            }
            Ok(synced)
        })
    }

    /// A contact as it is now (404 `contact_not_found` for a member never synced).
    pub fn get_contact(&self, member_id: &MemberId) -> Result<CrmContact, SimError> {
        let state = self.shared.lock();
        if state.gate.faults().down {
            return Err(SimError::Unavailable {
                message: "the CRM is down (injected fault)",
            });
        }
        state.contacts.get(member_id).cloned().ok_or_else(|| {
            SimError::refused(
                404,
                "contact_not_found",
                format!("no contact for member {member_id}"),
            )
        })
    }

    /// The member's contact; `None` when the CRM was never told about them.
    pub fn contact(&self, member_id: &MemberId) -> Option<CrmContact> {
        self.shared.lock().contacts.get(member_id).cloned()
    }

    /// Every contact, by member id.
    pub fn contacts(&self) -> Vec<CrmContact> {
        self.shared.lock().contacts.values().cloned().collect()
    }

    /// Keeps the journal of applied calls from now on (see `system`).
    pub fn keep_journal(&self) {
        self.shared.lock().gate.keep_journal();
    }

    /// The calls applied since the last take, one JSON text each, oldest first.
    pub fn take_journal(&self) -> Vec<String> {
        write_journal(self.shared.lock().gate.take_journal())
    }

    /// Applies journal entries again, in order, each at the instant it was first applied (the clock is
    /// set back to what it was afterwards): the same contacts result, with the same `updated_at`.
    pub fn replay(&self, entries: &[String]) -> Result<(), String> {
        let entries = parse_journal::<CrmCall>("crm", entries)?;
        let clock = self.shared.lock().clock.clone();
        let replayed = entries.iter().try_for_each(|entry| {
            self.set_clock(Arc::new(ManualClock::new(entry.at)));
            let key = entry.key.as_str();
            match &entry.call {
                CrmCall::SyncMember(snapshot) => self.sync_member(snapshot, key).map(drop),
            }
            .map_err(|e| format!("crm journal entry {key}: {e}"))
        });
        self.set_clock(clock);
        replayed
    }

    crate::system::fault_controls!("the CRM");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use retail_sync_contracts::events::MemberStatus;

    use super::*;
    use crate::faults::FaultKind;
    use crate::samples::{erased_snapshot, member_snapshot};

    fn member(id: &str) -> MemberId {
        MemberId::parse(id).unwrap()
    }

    fn crm() -> (CrmSimulator, Arc<ManualClock>) {
        let crm = CrmSimulator::new();
        let clock = Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
        crm.set_clock(clock.clone());
        (crm, clock)
    }

    #[test]
    fn a_contact_keeps_the_highest_revision_whatever_the_order() {
        let (crm, clock) = crm();
        let synced = crm.sync_member(&member_snapshot("m-1", 3), "k3").unwrap();
        assert_eq!(synced.revision, 3);
        let stamped = clock.now();
        clock.advance(Duration::from_secs(60));
        let older = MemberSnapshot {
            name: Some("Someone Else".into()),
            ..member_snapshot("m-1", 2)
        };
        assert_eq!(
            crm.sync_member(&older, "k2").unwrap().revision,
            3,
            "the answer names the revision kept"
        );
        let contact = crm.contact(&member("m-1")).unwrap();
        assert_eq!(contact.member, member_snapshot("m-1", 3));
        assert_eq!(contact.updated_at, stamped, "an ignored revision changes nothing");
        crm.sync_member(&member_snapshot("m-1", 4), "k4").unwrap();
        assert_eq!(crm.contact(&member("m-1")).unwrap().updated_at, clock.now());
        assert_eq!(crm.contacts().len(), 1);
    }

    #[test]
    fn an_erasure_leaves_no_personal_data_in_the_contact() {
        let (crm, _) = crm();
        crm.sync_member(&member_snapshot("m-1", 1), "k1").unwrap();
        crm.sync_member(&erased_snapshot("m-1", 2), "k2").unwrap();
        let contact = crm.contact(&member("m-1")).unwrap().member;
        assert_eq!(contact.status, MemberStatus::Erased);
        assert_eq!(
            (
                contact.name,
                contact.email,
                contact.phone,
                contact.marketing_email
            ),
            (None, None, None, None)
        );
        // A late redelivery of the pre-erasure revision brings nothing back.
        crm.sync_member(&member_snapshot("m-1", 1), "k1-again").unwrap();
        assert_eq!(crm.contact(&member("m-1")).unwrap().member.name, None);
    }

    #[test]
    fn a_repeated_key_answers_once_and_another_request_under_it_is_refused() {
        let (crm, _) = crm();
        let first = crm.sync_member(&member_snapshot("m-1", 1), "k").unwrap();
        assert_eq!(crm.sync_member(&member_snapshot("m-1", 1), "k").unwrap(), first);
        let err = crm.sync_member(&member_snapshot("m-1", 2), "k").unwrap_err();
        assert!(
            matches!(
                err,
                SimError::Refused {
                    status: 409,
                    code: "idempotency_key_reused",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(crm.contact(&member("m-1")).unwrap().member.revision, 1);
        assert_eq!(crm.requests(), 3);
    }

    #[test]
    fn faults_apply_to_syncs_and_down_to_reads() {
        let (crm, _) = crm();
        crm.set_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        assert_eq!(
            crm.sync_member(&member_snapshot("m-1", 1), "k").unwrap_err(),
            SimError::TimedOut { committed: true }
        );
        assert_eq!(
            crm.sync_member(&member_snapshot("m-1", 1), "k").unwrap().revision,
            1
        );
        crm.set_down(true);
        assert!(matches!(
            crm.get_contact(&member("m-1")),
            Err(SimError::Unavailable { .. })
        ));
        crm.set_down(false);
        assert!(matches!(
            crm.get_contact(&member("m-2")),
            Err(SimError::Refused {
                status: 404,
                code: "contact_not_found",
                ..
            })
        ));
    }

    #[test]
    fn a_replayed_journal_gives_back_the_same_contacts() {
        let (crm, clock) = crm();
        crm.keep_journal();
        crm.sync_member(&member_snapshot("m-1", 1), "k1").unwrap();
        clock.advance(Duration::from_secs(5));
        crm.sync_member(&erased_snapshot("m-1", 2), "k2").unwrap();
        crm.sync_member(&member_snapshot("m-2", 1), "k3").unwrap();
        let journal = crm.take_journal();
        assert_eq!(journal.len(), 3);

        let restored = CrmSimulator::new();
        restored.replay(&journal).unwrap();
        assert_eq!(restored.contacts(), crm.contacts());
        // The keys are known again: a redelivery answers, it does not apply twice.
        assert_eq!(
            restored
                .sync_member(&erased_snapshot("m-1", 2), "k2")
                .unwrap()
                .revision,
            2
        );
        assert!(restored.replay(&["{".to_owned()]).is_err());
    }
}
