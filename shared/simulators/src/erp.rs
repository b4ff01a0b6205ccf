//! The ERP simulator. Rules:
//! - documents are numbered `ERP-00000001`, `ERP-00000002`, … in posting order; sales, cancellations
//!   and returns (credit notes) share the sequence, as they share one journal;
//! - a receipt of a store whose id starts with `closed-` is refused (422 `period_closed`) until its
//!   period is reopened (`reopen_period`, the fix before an operator retries): the store's
//!   accounting period is closed;
//! - an order whose id starts with `reject-` is refused (422 `order_rejected`), so tests can make the
//!   ERP turn down an order after its points were spent;
//! - a cancellation refers to an order posted as a sale; anything else (an order never posted, a POS
//!   receipt: receipts are returned, not cancelled) is refused (404 `order_not_found`). Orders have no
//!   store, so no period is closed for them;
//! - a reinstatement (cancelled units that shipped after all) refers to an order posted as a sale and to
//!   cancellations posted for it, else it is refused (404 `order_not_found` / `cancellation_not_found`);
//!   it charges the units' net again;
//! - a return refers to a transaction posted as a sale, else it is refused (404 `original_not_found`);
//!   it is booked in the store the goods came back to (`store_id`), or when there is none in the
//!   original receipt's store, and refused (422 `period_closed`) when that store's id starts with
//!   `closed-`;
//! - customer accounts: a member snapshot synced to the ERP creates the member's customer account (any
//!   member id: the ERP opens an account for whoever it is told about) or replaces it when its revision
//!   is higher than the account's, else changes nothing; the account is the snapshot whole (an erased
//!   member's keeps no personal data). Accounts are not documents: they take no number;
//! - the idempotency contract: a repeated key with the same request returns the first document (or
//!   sync answer) without applying again; with another request (of any kind) it is refused (409
//!   `idempotency_key_reused`).
//!
//! The journal ([`ErpSimulator::postings`]) shows every document with its kind; amounts are absolute and
//! the kind gives the direction ([`ErpPosting::signed_net_minor`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{Amount, Currency, ExternalRef, MemberId, StoreId};
use retail_sync_core::ports::{
    ErpCancelRequest, ErpDocument, ErpReinstateRequest, ErpReturnRequest, ErpSaleRequest, MemberSnapshot,
};

use crate::error::SimError;
use crate::faults::Faults;
use crate::members::{MemberSynced, keep_latest};
use crate::system::{Gate, Shared, parse_journal, write_journal};

/// What a journal entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErpPostingKind {
    /// A POS sale or an order's sales order.
    Sale,
    /// (Lines of) an order cancelled before shipment.
    Cancellation,
    /// A credit note for goods returned.
    Return,
    /// Cancelled units charged again: a shipment proved they had left.
    Reinstatement,
}

impl ErpPostingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sale => "sale",
            Self::Cancellation => "cancellation",
            Self::Return => "return",
            Self::Reinstatement => "reinstatement",
        }
    }
}

/// One posted document, as the ERP's journal shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpPosting {
    pub document_id: ExternalRef,
    pub kind: ErpPostingKind,
    pub idempotency_key: String,
    /// The sale or order; for a cancellation the order cancelled, for a return the original transaction.
    pub transaction: TransactionRef,
    /// The cancellation id, the return id or the reinstating shipment's id; sales have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Returns only: the store the goods came back to (the original receipt's when the return names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    pub currency: Currency,
    /// Net value before tax, always non-negative: `kind` says whether it is charged (a sale) or credited
    /// (a cancellation, a return).
    pub net_minor: Amount,
    /// Sales only: cancellations and returns are sent net, the ERP derives their tax from the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_minor: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_minor: Option<Amount>,
    /// Sales only: the value of the points the order redeemed, deducted before tax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redemption_minor: Option<Amount>,
    pub line_count: usize,
    pub occurred_at: Timestamp,
}

impl ErpPosting {
    /// A document that corrects a posted sale (a cancellation, a reinstatement, a return): sent net, the
    /// ERP derives its tax from the original. Callers set the reference, store and line count.
    fn correction(
        document_id: ExternalRef,
        kind: ErpPostingKind,
        key: &str,
        transaction: &TransactionRef,
        currency: Currency,
        net_minor: Amount,
        occurred_at: Timestamp,
    ) -> Self {
        Self {
            document_id,
            kind,
            idempotency_key: key.to_owned(),
            transaction: transaction.clone(),
            reference: None,
            store_id: None,
            currency,
            net_minor,
            tax_minor: None,
            gross_minor: None,
            redemption_minor: None,
            line_count: 0,
            occurred_at,
        }
    }

    /// The document as the `ErpBooks` port shows it.
    pub fn booked(&self) -> retail_sync_core::ports::BookedDocument {
        use retail_sync_core::ports::DocumentKind;
        retail_sync_core::ports::BookedDocument {
            document_id: self.document_id.clone(),
            kind: match self.kind {
                ErpPostingKind::Sale => DocumentKind::Sale,
                ErpPostingKind::Cancellation => DocumentKind::Cancellation,
                ErpPostingKind::Return => DocumentKind::Return,
                ErpPostingKind::Reinstatement => DocumentKind::Reinstatement,
            },
            transaction: self.transaction.clone(),
            reference: self.reference.clone(),
            currency: self.currency,
            net_minor: self.net_minor,
            redemption_minor: self.redemption_minor,
            occurred_at: self.occurred_at,
        }
    }

    /// The net value with its direction: positive for a sale or a reinstatement, negative for a
    /// cancellation or a return.
    /// The sum over the journal is what the ERP booked net, per currency.
    pub fn signed_net_minor(&self) -> i64 {
        match self.kind {
            ErpPostingKind::Sale | ErpPostingKind::Reinstatement => self.net_minor.get(),
            ErpPostingKind::Cancellation | ErpPostingKind::Return => -self.net_minor.get(),
        }
    }
}

/// Every mutating call, as the idempotency record keeps it: one key space for all of them, so a key
/// reused for a call of another kind is a reuse like any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "request", rename_all = "snake_case")]
pub enum ErpCall {
    Sale(ErpSaleRequest),
    Cancel(ErpCancelRequest),
    Return(ErpReturnRequest),
    Reinstate(ErpReinstateRequest),
    SyncMember(MemberSnapshot),
}

/// Every answer of a mutating call, as the idempotency record keeps it.
#[derive(Debug, Clone)]
enum ErpAnswer {
    Document(ErpDocument),
    Synced(MemberSynced),
}

impl ErpAnswer {
    /// A key's recorded answer is only handed back for an equal request, hence of the same kind.
    fn document(self) -> ErpDocument {
        match self {
            Self::Document(d) => d,
            other => {
                unreachable!("a key's recorded answer has its request's kind, got {other:?} for a document")
            }
        }
    }

    fn synced(self) -> MemberSynced {
        match self {
            Self::Synced(s) => s,
            other => unreachable!("a key's recorded answer has its request's kind, got {other:?} for a sync"),
        }
    }
}

#[derive(Default)]
struct ErpState {
    gate: Gate<ErpCall, ErpAnswer>,
    journal: Journal,
    /// `closed-` stores whose period an operator reopened (see [`ErpSimulator::reopen_period`]).
    reopened: HashSet<String>,
    /// Customer accounts, by member.
    customers: BTreeMap<MemberId, MemberSnapshot>,
}

/// Whether `store_id`'s accounting period is closed: a `closed-` store nobody reopened.
fn closed(reopened: &HashSet<String>, store_id: &StoreId) -> bool {
    store_id.as_str().starts_with("closed-") && !reopened.contains(store_id.as_str())
}

/// Apart from the gate so that the gate's `apply` can borrow it.
#[derive(Default)]
struct Journal {
    postings: Vec<ErpPosting>,
    /// Where each posted sale is in `postings`, by transaction: what cancellations and returns refer to.
    sales: HashMap<TransactionRef, usize>,
    /// The cancellations posted, by order and cancellation id: what reinstatements refer to.
    cancellations: HashSet<(TransactionRef, String)>,
}

impl Journal {
    /// Appends `posting` under the next document number and returns the document.
    fn post(&mut self, posting: impl FnOnce(ExternalRef) -> ErpPosting) -> ErpDocument {
        let document_id = ExternalRef::parse(format!("ERP-{:08}", self.postings.len() + 1))
            .expect("ERP- followed by digits is a valid ExternalRef");
        let posting = posting(document_id.clone());
        match (posting.kind, &posting.reference) {
            (ErpPostingKind::Sale, _) => {
                self.sales
                    .insert(posting.transaction.clone(), self.postings.len());
            }
            (ErpPostingKind::Cancellation, Some(id)) => {
                self.cancellations
                    .insert((posting.transaction.clone(), id.clone()));
            }
            _ => {}
        }
        self.postings.push(posting);
        ErpDocument { document_id }
    }
}

/// A document-posting call through the gate.
fn document(
    gate: &mut Gate<ErpCall, ErpAnswer>,
    call: &ErpCall,
    key: &str,
    apply: impl FnOnce() -> Result<ErpDocument, SimError>,
) -> Result<ErpDocument, SimError> {
    gate.call(call, key, Timestamp::now(), || apply().map(ErpAnswer::Document))
        .map(ErpAnswer::document)
}

fn period_closed(store_id: &StoreId) -> SimError {
    SimError::refused(
        422,
        "period_closed",
        format!("the accounting period of store {store_id} is closed"),
    )
}

/// The simulated ERP. Clones share one state, so the HTTP server, the in-process adapter and a test can
/// all hold a handle.
#[derive(Clone, Default)]
pub struct ErpSimulator {
    shared: Arc<Shared<ErpState>>,
}

impl ErpSimulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: Faults) -> Self {
        let sim = Self::new();
        sim.set_faults(faults);
        sim
    }

    /// Reopens the accounting period of a `closed-` store: what a finance team does before an operator
    /// retries the postings it refused. (An operator's act on the ERP, not a call: not journaled.)
    pub fn reopen_period(&self, store_id: &str) {
        self.shared.lock().reopened.insert(store_id.to_owned());
    }

    /// Posts a sale under the rules above; `key` is the caller's idempotency key.
    pub fn post_sale(&self, request: &ErpSaleRequest, key: &str) -> Result<ErpDocument, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let call = ErpCall::Sale(request.clone());
        document(&mut state.gate, &call, key, || {
            match &request.transaction {
                TransactionRef::Receipt { store_id, .. } if closed(&state.reopened, store_id) => {
                    return Err(period_closed(store_id));
                }
                TransactionRef::Order { order_id } if order_id.as_str().starts_with("reject-") => {
                    return Err(SimError::refused(
                        422,
                        "order_rejected",
                        format!("order {order_id} is rejected by the ERP"),
                    ));
                }
                _ => {}
            }
            Ok(state.journal.post(|document_id| ErpPosting {
                document_id,
                kind: ErpPostingKind::Sale,
                idempotency_key: key.to_owned(),
                transaction: request.transaction.clone(),
                reference: None,
                store_id: None,
                currency: request.currency,
                net_minor: request.totals.net_minor,
                tax_minor: Some(request.totals.tax_minor),
                gross_minor: Some(request.totals.gross_minor),
                redemption_minor: request.redemption.as_ref().map(|r| r.value_minor),
                line_count: request.lines.len(),
                occurred_at: request.occurred_at,
            }))
        })
    }

    /// Posts the cancellation of (lines of) an order under the rules above.
    pub fn cancel_order(&self, request: &ErpCancelRequest, key: &str) -> Result<ErpDocument, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let call = ErpCall::Cancel(request.clone());
        document(&mut state.gate, &call, key, || {
            let sale = match &request.transaction {
                TransactionRef::Order { .. } => state.journal.sales.get(&request.transaction).copied(),
                TransactionRef::Receipt { .. } => None,
            };
            let Some(sale) = sale else {
                return Err(SimError::refused(
                    404,
                    "order_not_found",
                    format!("no sales order for {:?}", request.transaction),
                ));
            };
            // No lines named: every open line is cancelled; the order's line count is the best the
            // journal can show without tracking what shipped.
            let line_count = request
                .lines
                .as_ref()
                .map_or(state.journal.postings[sale].line_count, Vec::len);
            Ok(state.journal.post(|document_id| ErpPosting {
                reference: Some(request.cancellation_id.to_string()),
                line_count,
                ..ErpPosting::correction(
                    document_id,
                    ErpPostingKind::Cancellation,
                    key,
                    &request.transaction,
                    request.currency,
                    request.value_minor,
                    request.occurred_at,
                )
            }))
        })
    }

    /// Posts a return as a credit note under the rules above.
    pub fn post_return(&self, request: &ErpReturnRequest, key: &str) -> Result<ErpDocument, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let call = ErpCall::Return(request.clone());
        document(&mut state.gate, &call, key, || {
            if !state.journal.sales.contains_key(&request.original) {
                return Err(SimError::refused(
                    404,
                    "original_not_found",
                    format!("no sale posted for {:?}", request.original),
                ));
            }
            let store_id = match (&request.store_id, &request.original) {
                (Some(store_id), _) => Some(store_id.clone()),
                (None, TransactionRef::Receipt { store_id, .. }) => Some(store_id.clone()),
                (None, TransactionRef::Order { .. }) => None,
            };
            if let Some(store_id) = &store_id
                && closed(&state.reopened, store_id)
            {
                return Err(period_closed(store_id));
            }
            Ok(state.journal.post(|document_id| ErpPosting {
                reference: Some(request.return_id.to_string()),
                store_id,
                line_count: request.lines.len(),
                ..ErpPosting::correction(
                    document_id,
                    ErpPostingKind::Return,
                    key,
                    &request.original,
                    request.currency,
                    request.refund_minor,
                    request.occurred_at,
                )
            }))
        })
    }

    /// Charges cancelled units again under the rules above.
    pub fn reinstate(&self, request: &ErpReinstateRequest, key: &str) -> Result<ErpDocument, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let call = ErpCall::Reinstate(request.clone());
        document(&mut state.gate, &call, key, || {
            if !matches!(request.transaction, TransactionRef::Order { .. })
                || !state.journal.sales.contains_key(&request.transaction)
            {
                return Err(SimError::refused(
                    404,
                    "order_not_found",
                    format!("no sales order for {:?}", request.transaction),
                ));
            }
            if let Some(missing) = request.cancellation_ids.iter().find(|c| {
                !state
                    .journal
                    .cancellations
                    .contains(&(request.transaction.clone(), c.to_string()))
            }) {
                return Err(SimError::refused(
                    404,
                    "cancellation_not_found",
                    format!("no cancellation {missing} of this order"),
                ));
            }
            Ok(state.journal.post(|document_id| ErpPosting {
                reference: Some(request.shipment_id.to_string()),
                line_count: request.lines.len(),
                ..ErpPosting::correction(
                    document_id,
                    ErpPostingKind::Reinstatement,
                    key,
                    &request.transaction,
                    request.currency,
                    request.value_minor,
                    request.occurred_at,
                )
            }))
        })
    }

    /// Opens or updates the member's customer account under the rules above; answers the revision the
    /// account holds.
    pub fn sync_member(&self, snapshot: &MemberSnapshot, key: &str) -> Result<MemberSynced, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let call = ErpCall::SyncMember(snapshot.clone());
        let customers = &mut state.customers;
        state
            .gate
            .call(&call, key, Timestamp::now(), || {
                let mut account = customers.get(&snapshot.member_id).cloned();
                let synced = keep_latest(&mut account, snapshot);
                if let Some(account) = account {
                    customers.insert(snapshot.member_id.clone(), account);
                }
                Ok(ErpAnswer::Synced(synced))
            })
            .map(ErpAnswer::synced)
    }

    /// The member's customer account; `None` when the ERP was never told about them.
    pub fn customer(&self, member_id: &MemberId) -> Option<MemberSnapshot> {
        self.shared.lock().customers.get(member_id).cloned()
    }

    /// Every customer account, by member id.
    pub fn customers(&self) -> Vec<MemberSnapshot> {
        self.shared.lock().customers.values().cloned().collect()
    }

    /// Keeps the journal of applied calls from now on (see `system`).
    pub fn keep_journal(&self) {
        self.shared.lock().gate.keep_journal();
    }

    /// The calls applied since the last take, one JSON text each, oldest first.
    pub fn take_journal(&self) -> Vec<String> {
        write_journal(self.shared.lock().gate.take_journal())
    }

    /// Applies journal entries again, in order, to a fresh simulator: the same documents result.
    pub fn replay(&self, entries: &[String]) -> Result<(), String> {
        for entry in parse_journal::<ErpCall>("erp", entries)? {
            let key = entry.key.as_str();
            match &entry.call {
                ErpCall::Sale(r) => self.post_sale(r, key).map(drop),
                ErpCall::Cancel(r) => self.cancel_order(r, key).map(drop),
                ErpCall::Return(r) => self.post_return(r, key).map(drop),
                ErpCall::Reinstate(r) => self.reinstate(r, key).map(drop),
                ErpCall::SyncMember(snapshot) => self.sync_member(snapshot, key).map(drop),
            }
            .map_err(|e| format!("erp journal entry {key}: {e}"))?;
        }
        Ok(())
    }

    /// Every posted document with the call that posted it, in posting order: what a dialect's front
    /// (the SAP simulator) reads its own documents back from, so that its state is the journal's.
    pub fn documents(&self) -> Vec<(ErpPosting, ErpCall)> {
        let state = self.shared.lock();
        state
            .journal
            .postings
            .iter()
            .filter_map(|p| {
                let call = state.gate.request_of(&p.idempotency_key)?;
                Some((p.clone(), call.clone()))
            })
            .collect()
    }

    /// What the ERP's books hold, as reconciliation reads them: every document with its business time in
    /// `[from, until)`.
    pub fn documents_between(
        &self,
        from: Timestamp,
        until: Timestamp,
    ) -> Vec<retail_sync_core::ports::BookedDocument> {
        self.shared
            .lock()
            .journal
            .postings
            .iter()
            .filter(|p| p.occurred_at >= from && p.occurred_at < until)
            .map(ErpPosting::booked)
            .collect()
    }

    /// Changes the journal behind the ERP's back, as a manual entry in the ERP would: for reconciliation
    /// tests. `change` edits the document `id` in place (`false`: no such document).
    pub fn tamper(&self, id: &str, change: impl FnOnce(&mut ErpPosting)) -> bool {
        let mut state = self.shared.lock();
        match state
            .journal
            .postings
            .iter_mut()
            .find(|p| p.document_id.as_str() == id)
        {
            Some(p) => {
                change(p);
                true
            }
            None => false,
        }
    }

    /// Books a sale nobody asked retail-sync for (a manual entry in the ERP) of `net_minor` for
    /// `transaction`, under the next document number: for reconciliation tests. Returns its id.
    pub fn book_by_hand(
        &self,
        transaction: TransactionRef,
        currency: Currency,
        net_minor: Amount,
        occurred_at: Timestamp,
    ) -> ExternalRef {
        let mut state = self.shared.lock();
        let key = format!("manual-entry-{}", state.journal.postings.len() + 1);
        let doc = state.journal.post(|document_id| ErpPosting {
            document_id,
            kind: ErpPostingKind::Sale,
            idempotency_key: key,
            transaction,
            reference: None,
            store_id: None,
            currency,
            net_minor,
            tax_minor: None,
            gross_minor: None,
            redemption_minor: None,
            line_count: 1,
            occurred_at,
        });
        doc.document_id
    }

    /// Every posted document (sales, cancellations, returns, reinstatements), in posting order.
    pub fn postings(&self) -> Vec<ErpPosting> {
        self.shared.lock().journal.postings.clone()
    }

    crate::system::fault_controls!("the ERP (documents and customer syncs)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_sync_contracts::events::LineQuantity;

    use crate::faults::FaultKind;
    use crate::samples::{
        cancellation, erased_snapshot, member_snapshot, order, order_sale, return_of, sale,
    };

    fn refused_with(result: Result<ErpDocument, SimError>, status: u16, code: &str) {
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

    #[test]
    fn a_customer_account_keeps_the_highest_revision_and_takes_no_document_number() {
        let erp = ErpSimulator::new();
        assert_eq!(
            erp.sync_member(&member_snapshot("m-1", 2), "c2")
                .unwrap()
                .revision,
            2
        );
        assert_eq!(
            erp.sync_member(&member_snapshot("m-1", 1), "c1")
                .unwrap()
                .revision,
            2,
            "an older revision changes nothing"
        );
        assert_eq!(erp.customer(&member("m-1")), Some(member_snapshot("m-1", 2)));
        erp.sync_member(&erased_snapshot("m-1", 3), "c3").unwrap();
        let account = erp.customer(&member("m-1")).unwrap();
        assert_eq!((account.name, account.email, account.phone), (None, None, None));
        assert_eq!(erp.customer(&member("m-2")), None);

        // Accounts share the documents' key space but not their numbers.
        refused_with(
            erp.post_sale(&sale("store-1", "r-1"), "c3"),
            409,
            "idempotency_key_reused",
        );
        let doc = erp.post_sale(&sale("store-1", "r-1"), "s1").unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000001");
        assert!(
            erp.sync_member(&member_snapshot("m-1", 4), "s1").is_err(),
            "a sale's key on a sync is a reuse"
        );
        assert_eq!(erp.customers().len(), 1);
        assert!(erp.postings().len() == 1);
    }

    #[test]
    fn customer_accounts_come_back_from_the_journal() {
        let erp = ErpSimulator::new();
        erp.keep_journal();
        erp.sync_member(&member_snapshot("m-1", 1), "c1").unwrap();
        erp.post_sale(&order_sale("o-1"), "s1").unwrap();
        erp.sync_member(&member_snapshot("m-2", 4), "c2").unwrap();
        let restored = ErpSimulator::new();
        restored.replay(&erp.take_journal()).unwrap();
        assert_eq!(restored.customers(), erp.customers());
        assert_eq!(restored.postings(), erp.postings());
    }

    #[test]
    fn documents_are_numbered_in_posting_order() {
        let erp = ErpSimulator::new();
        let a = erp.post_sale(&sale("store-1", "r-1"), "k1").unwrap();
        let b = erp.post_sale(&sale("store-1", "r-2"), "k2").unwrap();
        assert_eq!(a.document_id.as_str(), "ERP-00000001");
        assert_eq!(b.document_id.as_str(), "ERP-00000002");
        let postings = erp.postings();
        assert_eq!(postings.len(), 2);
        assert_eq!(postings[0].idempotency_key, "k1");
        assert_eq!(postings[0].gross_minor.map(Amount::get), Some(1190));
        assert_eq!(postings[0].line_count, 1);
        assert_eq!(postings[0].kind, ErpPostingKind::Sale);
    }

    #[test]
    fn an_order_whose_id_starts_with_reject_is_refused_and_nothing_is_posted() {
        let erp = ErpSimulator::new();
        refused_with(erp.post_sale(&order_sale("reject-1"), "k"), 422, "order_rejected");
        assert!(erp.postings().is_empty());
        let doc = erp.post_sale(&order_sale("o-1"), "k").unwrap();
        assert_eq!(
            doc.document_id.as_str(),
            "ERP-00000001",
            "the refusal took no number"
        );
    }

    #[test]
    fn cancellations_and_returns_are_documents_numbered_with_the_sales() {
        let erp = ErpSimulator::new();
        erp.post_sale(&order_sale("o-1"), "sale").unwrap();
        erp.post_sale(&sale("store-1", "r-1"), "sale-r").unwrap();
        let cancelled = erp.cancel_order(&cancellation("o-1", "cx-1"), "cancel").unwrap();
        let returned = erp
            .post_return(&return_of("ret-1", order("o-1"), Some("store-2")), "return")
            .unwrap();
        let from_receipt = erp
            .post_return(
                &return_of("ret-2", sale("store-1", "r-1").transaction, None),
                "return-r",
            )
            .unwrap();
        assert_eq!(cancelled.document_id.as_str(), "ERP-00000003");
        assert_eq!(returned.document_id.as_str(), "ERP-00000004");
        assert_eq!(from_receipt.document_id.as_str(), "ERP-00000005");

        let postings = erp.postings();
        let kinds: Vec<_> = postings.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["sale", "sale", "cancellation", "return", "return"]);
        let c = &postings[2];
        assert_eq!(c.transaction, order("o-1"));
        assert_eq!(c.reference.as_deref(), Some("cx-1"));
        assert_eq!(
            (c.net_minor.get(), c.tax_minor, c.gross_minor),
            (1000, None, None)
        );
        assert_eq!(c.line_count, 1, "every open line: the order's lines");
        let r = &postings[3];
        assert_eq!(r.transaction, order("o-1"), "a return refers to its original");
        assert_eq!(r.reference.as_deref(), Some("ret-1"));
        assert_eq!(r.store_id.as_ref().map(|s| s.as_str()), Some("store-2"));
        assert_eq!(r.net_minor.get(), 500);
        assert_eq!(
            postings[4].store_id.as_ref().map(|s| s.as_str()),
            Some("store-1"),
            "no store named: the original receipt's"
        );
        let net: i64 = postings.iter().map(ErpPosting::signed_net_minor).sum();
        assert_eq!(net, 1000 + 1000 - 1000 - 500 - 500);
    }

    #[test]
    fn a_partial_cancellation_counts_its_lines() {
        let erp = ErpSimulator::new();
        erp.post_sale(&order_sale("o-1"), "sale").unwrap();
        let mut request = cancellation("o-1", "cx-1");
        request.lines = Some(vec![
            LineQuantity {
                line_no: 1,
                quantity: 1,
            },
            LineQuantity {
                line_no: 2,
                quantity: 1,
            },
        ]);
        erp.cancel_order(&request, "cancel").unwrap();
        assert_eq!(erp.postings()[1].line_count, 2);
    }

    #[test]
    fn only_posted_orders_can_be_cancelled() {
        let erp = ErpSimulator::new();
        refused_with(
            erp.cancel_order(&cancellation("o-1", "cx-1"), "k"),
            404,
            "order_not_found",
        );
        refused_with(
            erp.post_sale(&order_sale("reject-1"), "s1"),
            422,
            "order_rejected",
        );
        refused_with(
            erp.cancel_order(&cancellation("reject-1", "cx-1"), "k"),
            404,
            "order_not_found",
        );
        // A receipt is posted, but receipts are returned, not cancelled.
        erp.post_sale(&sale("store-1", "r-1"), "s2").unwrap();
        let mut of_receipt = cancellation("o-1", "cx-1");
        of_receipt.transaction = sale("store-1", "r-1").transaction;
        refused_with(erp.cancel_order(&of_receipt, "k"), 404, "order_not_found");
        assert_eq!(erp.postings().len(), 1);
    }

    #[test]
    fn a_return_needs_its_original_posted_and_an_open_period() {
        let erp = ErpSimulator::new();
        refused_with(
            erp.post_return(&return_of("ret-1", order("o-1"), None), "k"),
            404,
            "original_not_found",
        );
        erp.post_sale(&order_sale("o-1"), "sale").unwrap();
        refused_with(
            erp.post_return(&return_of("ret-1", order("o-1"), Some("closed-4")), "k"),
            422,
            "period_closed",
        );
        assert_eq!(erp.postings().len(), 1);
        // Refusals are not recorded against the key: the same key may carry the corrected return.
        let doc = erp
            .post_return(&return_of("ret-1", order("o-1"), None), "k")
            .unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000002");
        assert_eq!(erp.postings()[1].store_id, None, "an order has no store");
    }

    #[test]
    fn cancellations_and_returns_are_idempotent_by_key_and_keys_are_one_space() {
        let erp = ErpSimulator::new();
        erp.post_sale(&order_sale("o-1"), "sale").unwrap();
        let first = erp.cancel_order(&cancellation("o-1", "cx-1"), "cancel").unwrap();
        let again = erp.cancel_order(&cancellation("o-1", "cx-1"), "cancel").unwrap();
        assert_eq!(first, again);
        let ret = return_of("ret-1", order("o-1"), None);
        let first = erp.post_return(&ret, "return").unwrap();
        assert_eq!(erp.post_return(&ret, "return").unwrap(), first);
        assert_eq!(erp.postings().len(), 3);
        // The sale's key on a cancellation is a reuse like any other.
        refused_with(
            erp.cancel_order(&cancellation("o-1", "cx-2"), "sale"),
            409,
            "idempotency_key_reused",
        );
        refused_with(erp.post_return(&ret, "cancel"), 409, "idempotency_key_reused");
        assert_eq!(erp.postings().len(), 3);
        assert_eq!(erp.requests(), 7);
    }

    #[test]
    fn a_cancellation_timed_out_after_commit_is_posted_once_across_the_retry() {
        let erp = ErpSimulator::new();
        erp.post_sale(&order_sale("o-1"), "sale").unwrap();
        erp.set_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        let request = cancellation("o-1", "cx-1");
        assert_eq!(
            erp.cancel_order(&request, "cancel").unwrap_err(),
            SimError::TimedOut { committed: true }
        );
        let doc = erp.cancel_order(&request, "cancel").unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000002");
        assert_eq!(erp.postings().len(), 2);
    }

    #[test]
    fn a_store_with_a_closed_period_is_refused_and_nothing_is_posted() {
        let erp = ErpSimulator::new();
        let err = erp.post_sale(&sale("closed-7", "r-1"), "k").unwrap_err();
        assert!(
            matches!(
                err,
                SimError::Refused {
                    status: 422,
                    code: "period_closed",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(erp.postings().is_empty());
    }

    #[test]
    fn a_repeated_key_returns_the_first_document_without_posting_twice() {
        let erp = ErpSimulator::new();
        let first = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        let again = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        assert_eq!(first, again);
        assert_eq!(erp.postings().len(), 1);
        assert_eq!(erp.requests(), 2);
    }

    #[test]
    fn a_key_reused_for_another_sale_is_refused_with_409() {
        let erp = ErpSimulator::new();
        erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        let err = erp.post_sale(&sale("store-1", "r-2"), "k").unwrap_err();
        assert!(matches!(
            err,
            SimError::Refused {
                status: 409,
                code: "idempotency_key_reused",
                ..
            }
        ));
        assert_eq!(erp.postings().len(), 1);
    }

    #[test]
    fn a_timeout_after_commit_posts_and_the_retry_finds_the_document() {
        let erp = ErpSimulator::with_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        let err = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap_err();
        assert_eq!(err, SimError::TimedOut { committed: true });
        assert_eq!(erp.faults().fail_first, 0, "the script counts down");
        let doc = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000001");
        assert_eq!(erp.postings().len(), 1);
    }

    #[test]
    fn errors_and_plain_timeouts_apply_nothing_and_down_refuses_everything() {
        let erp = ErpSimulator::with_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::Timeout,
            ..Faults::default()
        });
        assert_eq!(
            erp.post_sale(&sale("store-1", "r-1"), "k").unwrap_err(),
            SimError::TimedOut { committed: false }
        );
        erp.set_faults(Faults {
            down: true,
            ..Faults::default()
        });
        for _ in 0..3 {
            let err = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap_err();
            assert!(matches!(err, SimError::Unavailable { .. }));
        }
        assert!(erp.postings().is_empty());
        assert_eq!(erp.requests(), 4);
    }

    #[test]
    fn seeded_faults_repeat_exactly_and_follow_the_rate() {
        let run = || {
            let erp = ErpSimulator::with_faults(Faults {
                error_rate: 0.3,
                seed: Some(42),
                ..Faults::default()
            });
            (0..1000)
                .map(|i| {
                    erp.post_sale(&sale("store-1", &format!("r-{i}")), &format!("k{i}"))
                        .is_ok()
                })
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run(), "same seed, same calls: same faults");
        let failed = first.iter().filter(|ok| !**ok).count();
        assert!(
            (230..370).contains(&failed),
            "{failed} of 1000 failed at rate 0.3"
        );
    }
}
