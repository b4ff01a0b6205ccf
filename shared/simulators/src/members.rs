//! What the three systems that keep a copy of members (the ERP's customer accounts, the CRM's contacts,
//! the loyalty platform's member profiles) share: the answer to a sync, and the rule that a system keeps
//! the highest revision it was told, whole.
//!
//! A snapshot is the member's whole state at its revision, never a delta: the stored copy is replaced,
//! not merged field by field, so an erasure (a snapshot without name, e-mail or phone) leaves nothing of
//! them behind. Equal or lower revisions change nothing, which makes redeliveries and reordering
//! harmless.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use retail_sync_contracts::events::MemberStatus;
use retail_sync_contracts::values::MemberId;
use retail_sync_core::ports::MemberSnapshot;

/// The answer to a sync: the revision the system holds after it (the one sent, or a later one it kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSynced {
    pub member_id: MemberId,
    pub revision: u64,
}

/// `snapshot` as a system stores it. An erased member's personal data is dropped even if a sender put
/// some in: after an erasure a system must hold none, whatever it was sent.
pub(crate) fn stored(snapshot: &MemberSnapshot) -> MemberSnapshot {
    if snapshot.status == MemberStatus::Erased {
        without_contact(snapshot)
    } else {
        snapshot.clone()
    }
}

/// `snapshot` without name, e-mail, phone and marketing address.
fn without_contact(snapshot: &MemberSnapshot) -> MemberSnapshot {
    MemberSnapshot {
        name: None,
        email: None,
        phone: None,
        marketing_email: None,
        ..snapshot.clone()
    }
}

/// The member a journal entry tells a system is erased (the `sync_member` of an `erased` snapshot). The
/// journals keep every call a system applied, so a local run erases the member there too (see
/// [`without_personal_data`]).
pub fn erased_in_journal(entry: &str) -> Option<MemberId> {
    if !entry.contains("\"erased\"") {
        return None;
    }
    let snapshot = synced(&serde_json::from_str(entry).ok()?)?;
    (snapshot.status == MemberStatus::Erased).then_some(snapshot.member_id)
}

/// The journal entry with `member`'s snapshot stripped of name, e-mail and phone, as [`stored`] strips an
/// erased one; `None` when it holds no personal data of theirs. Replayed, the journal leads to the same
/// state: the erasure's snapshot, a later revision, is replayed after it and replaces it whole.
pub fn without_personal_data(entry: &str, member: &MemberId) -> Option<String> {
    let mut json: Value = serde_json::from_str(entry).ok()?;
    let snapshot = synced(&json)?;
    if &snapshot.member_id != member {
        return None;
    }
    let stripped = without_contact(&snapshot);
    if stripped == snapshot {
        return None;
    }
    json["call"]["request"] = serde_json::to_value(&stripped).ok()?;
    Some(json.to_string())
}

/// The snapshot of a journal entry that synced a member (`{"call": {"op": "sync_member", "request": …}}`,
/// as every system's journal writes it).
fn synced(entry: &Value) -> Option<MemberSnapshot> {
    let call = entry.get("call")?;
    if call.get("op")? != "sync_member" {
        return None;
    }
    serde_json::from_value(call.get("request")?.clone()).ok()
}

/// Replaces `current` with `snapshot` when it is a later revision (or there is none yet); returns the
/// answer: the revision held afterwards.
pub(crate) fn keep_latest(current: &mut Option<MemberSnapshot>, snapshot: &MemberSnapshot) -> MemberSynced {
    match current {
        Some(held) if held.revision >= snapshot.revision => {}
        _ => *current = Some(stored(snapshot)),
    }
    MemberSynced {
        member_id: snapshot.member_id.clone(),
        revision: current.as_ref().map_or(snapshot.revision, |s| s.revision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{erased_snapshot, member_snapshot};

    #[test]
    fn a_later_revision_replaces_the_copy_and_an_earlier_one_changes_nothing() {
        let mut copy = None;
        assert_eq!(keep_latest(&mut copy, &member_snapshot("m-1", 2)).revision, 2);
        let older = MemberSnapshot {
            name: Some("Old Name".into()),
            ..member_snapshot("m-1", 1)
        };
        assert_eq!(
            keep_latest(&mut copy, &older).revision,
            2,
            "the later revision stays"
        );
        assert_eq!(copy, Some(member_snapshot("m-1", 2)));
        let same = MemberSnapshot {
            tier: None,
            ..member_snapshot("m-1", 2)
        };
        keep_latest(&mut copy, &same);
        assert_eq!(
            copy,
            Some(member_snapshot("m-1", 2)),
            "an equal revision is a redelivery"
        );
    }

    #[test]
    fn an_erasure_leaves_no_personal_data_even_if_sent_some() {
        let mut copy = None;
        keep_latest(&mut copy, &member_snapshot("m-1", 1));
        let careless = MemberSnapshot {
            email: Some("ada@example.com".into()),
            ..erased_snapshot("m-1", 2)
        };
        keep_latest(&mut copy, &careless);
        let copy = copy.unwrap();
        assert_eq!(copy.status, MemberStatus::Erased);
        assert_eq!(
            (&copy.name, &copy.email, &copy.phone, &copy.marketing_email),
            (&None, &None, &None, &None)
        );
    }
}
