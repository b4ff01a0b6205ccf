//! Ecommerce platforms in their own words. Shopify and Adobe Commerce emit their own webhook payloads,
//! not retail-sync's canonical envelope; this crate turns them into canonical events, driven by a mapping
//! file per platform (products → SKUs, locations → stores, where the member id is, which lines earn),
//! and checks the signatures of the webhooks that reach the ingress directly.
//!
//! Mapping is pure: a native event and, for a follow-up (a shipment, a refund), its order as retail-sync
//! accepted it (platforms name lines by their own ids, the canonical events by `line_no`).
//! Every canonical event's id derives from the native event's id, so a redelivered webhook maps to the
//! same events, which the workflow recognises as duplicates.
//!
//! # Layout
//! - [`shopify`]: the `shopifyWebhook` events (Amazon EventBridge partner source, or the ingress) and
//!   [`ShopifyMapping`].
//! - [`adobe`]: Adobe I/O Events for Adobe Commerce and [`AdobeMapping`].
//! - [`webhook`]: Shopify's HMAC signature and the replay window; [`ingress`]: a delivery checked and
//!   made the bus event the partner source would have put.
//! - `build`: the canonical events' metadata and identifiers, shared by both platforms.

pub mod adobe;
mod build;
pub mod ingress;
pub mod shopify;
pub mod webhook;

use serde_json::Value;

use retail_sync_contracts::events::OrderPlaced;
use retail_sync_contracts::values::OrderId;
use retail_sync_contracts::{Channel, Event};

pub use adobe::AdobeMapping;
pub use shopify::ShopifyMapping;

/// The platforms with a mapper; each has its own function (`map-shopify`, `map-adobe-commerce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Shopify,
    AdobeCommerce,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Shopify, Platform::AdobeCommerce];

    pub fn name(self) -> &'static str {
        match self {
            Self::Shopify => "shopify",
            Self::AdobeCommerce => "adobe-commerce",
        }
    }

    /// The mapper's step and binary name.
    pub const fn step(self) -> &'static str {
        match self {
            Self::Shopify => "map-shopify",
            Self::AdobeCommerce => "map-adobe-commerce",
        }
    }

    pub fn of_step(step: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.step() == step)
    }

    /// The variable that holds the platform's mapping (or, with `_FILE`, its path).
    pub fn mapping_var(self) -> &'static str {
        match self {
            Self::Shopify => "SHOPIFY_MAPPING",
            Self::AdobeCommerce => "ADOBE_COMMERCE_MAPPING",
        }
    }

    /// The channel whose events the mapped ones are, and the source they are put on the bus with.
    pub fn channel(self) -> Channel {
        Channel::Ecommerce
    }

    pub fn source(self) -> &'static str {
        "retail.ecommerce"
    }
}

/// One native event as its mapper's queue delivers it.
#[derive(Debug, Clone)]
pub struct Native {
    /// The platform's id of the event (`X-Shopify-Event-Id`, the I/O event id), the same on every
    /// delivery of it: what the canonical events' ids derive from.
    pub event_id: String,
    /// What happened (`orders/create`, `com.adobe.commerce.observer.sales_order_save_after`, …).
    pub topic: String,
    /// The shop or instance it came from, when the envelope says.
    pub shop: Option<String>,
    /// The resource (order, fulfillment, refund, shipment, credit memo, customer).
    pub payload: Value,
}

/// What a native event becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Canonical events, for the channel bus (ingest validates them as any channel's).
    Events(Vec<Event>),
    /// Nothing for the books (a pending fulfilment, a refund of shipping only, a customer who is no
    /// loyalty member): counted and logged with the reason, never quarantined.
    Ignored(String),
}

/// Why a native event cannot be mapped: kept in the quarantine with the native payload.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Unmappable {
    pub message: String,
    /// One entry per problem (the payload's field and what is wrong), at most a screenful.
    pub findings: Vec<String>,
    /// The event's id and topic when they were read before it was refused (its shop or instance is
    /// not mapped): a redelivery of it is then the same quarantine entry.
    pub event: Option<(String, String)>,
}

impl Unmappable {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            findings: Vec::new(),
            event: None,
        }
    }

    fn with(message: impl Into<String>, findings: Vec<String>) -> Self {
        Self {
            message: message.into(),
            findings,
            event: None,
        }
    }

    /// The refusal of the event `event_id` about `topic`.
    fn of_event(mut self, event_id: &str, topic: &str) -> Self {
        self.event = Some((event_id.to_owned(), topic.to_owned()));
        self
    }
}

/// A shop or instance named by an event (`None`: it names none) for a refusal's text.
fn named(origin: Option<&str>) -> &str {
    origin.unwrap_or("(none named)")
}

/// A platform's mapping, as the mapper step uses it.
pub trait Mapper: Send + Sync {
    fn platform(&self) -> Platform;

    /// The native event in a message body (an EventBridge event).
    fn parse(&self, body: &str) -> Result<Native, Unmappable>;

    /// The order the mapping needs as it was accepted (a follow-up names lines by the platform's ids), or
    /// `None`.
    fn needs_order(&self, native: &Native) -> Result<Option<OrderId>, Unmappable>;

    /// The canonical events; `order` is [`Mapper::needs_order`]'s order as accepted.
    fn map(&self, native: &Native, order: Option<&OrderPlaced>) -> Result<Mapped, Unmappable>;
}

/// Reads a platform's mapping from `{VAR}` (its JSON) or `{VAR}_FILE` (its path).
pub fn mapper_from_lookup(
    platform: Platform,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<std::sync::Arc<dyn Mapper>, MappingError> {
    let (text, origin) = retail_sync_contracts::mapping::mapping_text(platform.mapping_var(), lookup)
        .map_err(|e| MappingError {
            var: e.var,
            message: e.message,
        })?;
    let parsed = |e: serde_json::Error| MappingError {
        var: origin.clone(),
        message: format!("not a {} mapping: {e}", platform.name()),
    };
    Ok(match platform {
        Platform::Shopify => std::sync::Arc::new(ShopifyMapping::parse(&text).map_err(parsed)?),
        Platform::AdobeCommerce => std::sync::Arc::new(AdobeMapping::parse(&text).map_err(parsed)?),
    })
}

/// A mapping that cannot be used: the variable to fix and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct MappingError {
    pub var: String,
    pub message: String,
}
