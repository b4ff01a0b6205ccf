//! HTTP adapters of the core `Erp` and `Loyalty` ports, against the system API contract in
//! `openapi/erp.yaml` and `openapi/loyalty.yaml` (which the simulators implement).
//!
//! # Layout
//! - [`config`]: [`HttpConfig`]: base URL, timeouts, attempts and backoff, from the environment.
//! - [`erp`] / [`loyalty`]: [`HttpErp`] / [`HttpLoyalty`], the port implementations.
//! - [`error`]: [`ConnectorError`], classified retryable or not, and its mapping onto the core's
//!   `Rejected` (4xx: the system's verdict) and `Unavailable` (everything else).
//! - `api` (private): the shared caller: idempotency key on every call, exponential backoff with jitter
//!   on connect errors, timeouts, 408, 429 and 5xx.

mod api;
pub mod config;
pub mod erp;
pub mod error;
pub mod loyalty;

pub use api::IDEMPOTENCY_KEY_HEADER;
pub use config::HttpConfig;
pub use erp::HttpErp;
pub use error::ConnectorError;
pub use loyalty::HttpLoyalty;
