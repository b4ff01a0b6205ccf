//! What the dialects without idempotency keys share on the wire: the stamp a document is found by,
//! amounts as decimal strings, and percent-encoded query values.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use retail_sync_contracts::values::Currency;

/// What identifies a document in a system without idempotency keys, written in one of its fields of
/// at most `max` characters and looked up by it: `text` itself when it fits and uses only characters
/// that need no escaping in a query (`$filter`, SOQL), else `RS-` and the first 128 bits of its SHA-256
/// in hex (35 characters). Identifiers are readable in the system whenever they fit; the digest keeps
/// long keys unique without truncating them into each other.
pub fn stamp(text: &str, max: usize) -> String {
    let plain = text.len() <= max
        && !text.starts_with("RS-")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'));
    if plain {
        return text.to_owned();
    }
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::from("RS-");
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A query option's value percent-encoded (RFC 3986: everything but the unreserved characters), so a
/// space is `%20` as OData expects, never `+`.
pub fn percent(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An amount in minor units as a decimal string (OData's `Edm.Decimal`, Salesforce's currency fields).
pub fn decimal(amount: i64, currency: Currency) -> String {
    currency.decimal(amount)
}

/// `Edm.DateTime` as OData v2 JSON writes it: `/Date(<ms since the epoch>)/`.
pub fn date(at: jiff::Timestamp) -> String {
    format!("/Date({})/", at.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn short_plain_texts_are_their_own_stamp_and_long_ones_a_digest() {
        assert_eq!(
            stamp("receipt:store-001:r-000001", 35),
            "receipt:store-001:r-000001"
        );
        let long = stamp("receipt:store-001:r-000001:post-return-to-erp:ret-1", 35);
        assert_eq!(long.len(), 35);
        assert!(long.starts_with("RS-"));
        assert_ne!(
            long,
            stamp("receipt:store-001:r-000001:post-return-to-erp:ret-2", 35)
        );
        assert!(
            stamp("o'1", 35).starts_with("RS-"),
            "a quote would break the query"
        );
        assert!(stamp("RS-abc", 35).starts_with("RS-") && stamp("RS-abc", 35).len() == 35);
        assert_eq!(
            stamp("order:o-1:accrue-shipment:s-1:x", 40),
            "order:o-1:accrue-shipment:s-1:x"
        );
    }

    #[test]
    fn decimals_round_trip_in_the_currency_s_places() {
        assert_eq!(decimal(12_345, eur()), "123.45");
        assert_eq!(decimal(-5, eur()), "-0.05");
        assert_eq!(decimal(700, Currency::parse("JPY").unwrap()), "700");
        // Read back by the platforms' fronts with `Currency::minor_units`.
        for minor in [12_345, -5, 700, 750, 0] {
            assert_eq!(eur().minor_units(&decimal(minor, eur())), Some(minor));
        }
    }
}
