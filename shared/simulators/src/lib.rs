//! Reference ERP, loyalty and CRM "system APIs": a small documented rule set, the idempotency contract,
//! and fault injection, usable in-process (fast: the local runner and benchmarks) and over HTTP (what the
//! connectors are tested against).
//!
//! # Layout
//! - [`erp`]: [`ErpSimulator`] and its rules (document numbering, closed periods, rejected orders,
//!   cancellations and returns of posted sales only, customer accounts).
//! - [`loyalty`]: [`LoyaltySimulator`] and its rules (enrolment, 1 point per whole currency unit, holds
//!   and their expiry, redemption value, reversals and re-credits, pending points and their
//!   confirmation, member profiles and merges).
//! - [`crm`]: [`CrmSimulator`] and its rules (contacts, kept at the highest revision, whole).
//! - [`members`]: what the three share about members ([`MemberSynced`], the highest revision kept
//!   whole, no personal data after an erasure).
//! - [`faults`]: [`Faults`], the injectable failures all share (503s, timeouts before and after commit,
//!   latency, down, a deterministic "first N calls fail" script).
//! - [`error`]: [`SimError`], what a simulator answers instead of a result.
//! - [`in_process`]: [`InProcessErp`] / [`InProcessLoyalty`] / [`InProcessCrm`], the simulators as core
//!   port adapters.
//! - [`http`]: the HTTP server ([`serve`], [`router`]) and its routes.
//! - [`access`]: [`Access`]: the OAuth 2.0 token endpoint and the credential every system API route
//!   requires.
//! - [`samples`]: small valid requests for tests and smoke checks.
//! - [`sap`]: [`SapSimulator`], SAP S/4HANA's OData dialect in front of the reference ERP.
//! - [`salesforce`]: [`SalesforceSimulator`], Salesforce Loyalty Management's dialect in front of the
//!   reference loyalty platform.
//!
//! Shared by every system (private `system` module): one mutex per simulator held for the whole call
//! (the rules are a few map operations), a request counter, and the record of each idempotency key.

pub mod access;
pub mod crm;
mod dialect;
pub mod erp;
pub mod error;
pub mod faults;
pub mod http;
pub mod in_process;
pub mod loyalty;
pub mod members;
pub mod outcomes;
pub mod salesforce;
pub mod samples;
pub mod sap;
mod system;

pub use access::Access;
pub use crm::{CrmContact, CrmSimulator};
pub use erp::{ErpPosting, ErpPostingKind, ErpSimulator};
pub use error::SimError;
pub use faults::{FaultKind, Faults};
pub use http::{
    Dialects, ErrorBody, SimState, Systems, router, router_for, router_with, serve, serve_systems, serve_with,
};
pub use in_process::{InProcessCrm, InProcessErp, InProcessLoyalty};
pub use loyalty::{
    LoyaltyMemberView, LoyaltySimulator, LoyaltyTransaction, LoyaltyTransactionKind, MergeOutcome, Tamper,
    points_for, points_value,
};
pub use members::{MemberSynced, erased_in_journal, without_personal_data};
pub use outcomes::{AdobeCommerceSimulator, LOCAL_PLATFORM_TOKEN, PlatformSimulator, ShopifyAdminSimulator};
pub use salesforce::SalesforceSimulator;
pub use sap::SapSimulator;
