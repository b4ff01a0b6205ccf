//! The redemption experience API: what a channel calls synchronously at checkout to show a member's
//! points, reserve some for the basket (a hold), and, for channels that settle on the spot, commit or
//! release the hold. Transport-neutral: a request is a method, a path, headers and a body; the Lambda
//! adapter (`retail-sync-lambda`, `http`) maps API Gateway's payload onto it. The contract is
//! `openapi/redemption.yaml` in this crate.
//!
//! # Layout
//! - [`config`]: the deployment's settings (outage policy, hold lifetime, loyalty timeout).
//! - [`http`]: transport-neutral requests and responses, error codes and bodies.
//! - [`routes`]: the routing table, request bodies, the client's idempotency key.
//! - [`service`]: [`RedemptionApi`], the service itself.
//!
//! Authentication is not done here: the HTTP API in front of the function checks the caller's JWT
//! (template), and this service trusts whoever reaches it.
//!
//! Idempotency: every POST carries the client's `Idempotency-Key`. The first final answer (2xx, or a 4xx
//! the loyalty platform gave) is stored in our own idempotency table under `api:{key}` and returned for
//! every repeat without calling the platform again. Answers to outages are not stored, so a retry reaches
//! the platform; the platform itself receives a key derived from the client's, so a call that timed out
//! after the platform acted is not applied twice there either.

pub mod config;
pub mod http;
pub mod routes;
pub mod service;

pub use config::{ConfigError, OutagePolicy, RedemptionConfig};
pub use http::{
    ApiRequest, ApiResponse, Caller, CreateHoldBody, ErrorBody, ErrorCode, SCOPE_BALANCE_READ,
    SCOPE_HOLDS_READ, SCOPE_HOLDS_WRITE,
};
pub use routes::{ClientKey, Operation};
pub use service::RedemptionApi;
