//! HTTP adapters of the core `Erp`, `Loyalty`, `LoyaltyMembers` and `MemberSync` ports: against the
//! system API contract in `openapi/erp.yaml`, `openapi/loyalty.yaml` and `openapi/crm.yaml` (which the
//! reference simulators implement), and against SAP S/4HANA and Salesforce Loyalty Management in their
//! own dialects (points and documents only: they carry no members).
//!
//! # Layout
//! - [`config`]: [`HttpConfig`]: base URL (https, or http on loopback), timeouts, attempts and backoff,
//!   from the environment.
//! - [`auth`]: OAuth 2.0 client credentials or an API key, the credentials from a [`CredentialSource`]
//!   (Secrets Manager on AWS, the environment locally), tokens cached and refreshed once on a 401.
//! - [`erp`] / [`loyalty`] / [`crm`]: [`HttpErp`] / [`HttpLoyalty`] / [`HttpCrm`], the port
//!   implementations over the system API (`CRM_BASE_URL` and the `CRM_*` settings for the CRM), the
//!   books read back included (`ErpBooks`, `LoyaltyBooks`).
//! - [`sap`]: [`SapErp`], the ERP port on SAP S/4HANA's OData APIs, and its [`SapMapping`].
//! - [`salesforce`]: [`SalesforceLoyalty`], the loyalty port on Salesforce Loyalty Management, and its
//!   [`SalesforceMapping`].
//! - [`kind`]: `ERP_KIND` / `LOYALTY_KIND`: which of them a deployment uses, for the workflows
//!   ([`erp_from_env`], [`loyalty_from_env`]) and for reconciliation's reads of the books
//!   ([`erp_books_from_env`], [`loyalty_books_from_env`]), every kind serving both.
//! - [`wire`]: what the dialects without idempotency keys share (the stamp, decimals).
//! - [`error`]: [`ConnectorError`], classified retryable or not, and its mapping onto the core's
//!   `Rejected` (4xx: the system's verdict) and `Unavailable` (everything else).
//! - `api` (private): the shared caller: idempotency key on every call, exponential backoff with jitter
//!   on connect errors, timeouts, 408, 429 and 5xx; the error codes that mean the same on every route
//!   (`member_not_found`, `enrolment_refused` → `MemberNotEnrolled`; `merge_refused`, `member_merged` →
//!   `MergeRefused`).

mod api;
pub mod auth;
pub mod config;
pub mod crm;
pub mod erp;
pub mod error;
pub mod kind;
pub mod loyalty;
pub mod outcomes;
pub mod salesforce;
pub mod sap;
pub mod wire;

pub use api::{Auth, IDEMPOTENCY_KEY_HEADER};
pub use auth::{AuthMethod, ClientAuth, CredentialSource, Credentials, Secret, StaticCredentials};
pub use config::HttpConfig;
pub use crm::HttpCrm;
pub use erp::HttpErp;
pub use error::ConnectorError;
pub use kind::{
    ErpKind, LoyaltyKind, erp_books_from_env, erp_books_from_lookup, erp_from_env, erp_from_lookup,
    loyalty_books_from_env, loyalty_books_from_lookup, loyalty_from_env, loyalty_from_lookup,
};
pub use loyalty::HttpLoyalty;
pub use outcomes::{AdobeCommerceRest, ShopifyAdmin};
pub use salesforce::{SalesforceLoyalty, SalesforceMapping};
pub use sap::{SapErp, SapMapping};
