//! Webhooks that reach retail-sync directly (a store without the EventBridge partner source): who sent
//! them and whether they are fresh. Shopify signs each delivery with `X-Shopify-Hmac-Sha256`, the base64
//! HMAC-SHA256 of the raw body under the app's client secret, and dates it with
//! `X-Shopify-Triggered-At` (source: shopify.dev, "Verify webhook deliveries"; "Webhooks" reference).
//! Shopify retries a failed delivery 8 times over 4 hours with the original trigger time, so the window
//! a delivery is accepted in must outlast that; within it a replayed request is a duplicate delivery,
//! which maps to the same canonical events (their ids derive from `X-Shopify-Event-Id`) and is absorbed.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

/// Deliveries triggered longer ago than this are refused as replays: Shopify's retries span 4 hours.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(5 * 3600);
/// A trigger time this far ahead of our clock is refused too (a forged header, or a clock gone wrong).
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a delivery is refused, for the HTTP answer and the log (never the body or the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the X-Shopify-Hmac-Sha256 header is missing")]
    Unsigned,
    #[error("the signature does not match the body under any configured secret")]
    BadSignature,
    #[error("the X-Shopify-Triggered-At header is missing or not a timestamp")]
    Undated,
    #[error("the delivery was triggered at {0}, outside the replay window")]
    Stale(Timestamp),
}

/// Checks `signature` (the header's base64) against `body` under each secret in turn (during a rotation
/// both the old and the new secret sign for up to an hour). The comparison is the MAC library's, in
/// constant time.
pub fn verify_shopify(body: &[u8], signature: Option<&str>, secrets: &[String]) -> Result<(), Refused> {
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(Refused::Unsigned)?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| Refused::BadSignature)?;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err(Refused::BadSignature)
}

/// Refuses a delivery triggered outside `[now - window, now + CLOCK_SKEW]`.
pub fn check_fresh(
    triggered_at: Option<&str>,
    now: Timestamp,
    window: Duration,
) -> Result<Timestamp, Refused> {
    let at: Timestamp = triggered_at
        .and_then(|t| t.trim().parse().ok())
        .ok_or(Refused::Undated)?;
    let age = now.duration_since(at);
    let too_old = age > jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
    let ahead = -age > jiff::SignedDuration::try_from(CLOCK_SKEW).unwrap_or(jiff::SignedDuration::MAX);
    if too_old || ahead {
        return Err(Refused::Stale(at));
    }
    Ok(at)
}

/// The signature Shopify would send for `body` under `secret` (simulators and tests sign with it).
pub fn sign_shopify(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        // Key "Jefe", data "what do ya want for nothing?": 5bdcc146bf60754e6a042426089575c7
        // 5a003f089d2739839dec58b964ec3843 (hex), here in base64.
        let expected = base64::engine::general_purpose::STANDARD.encode([
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
            0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
        ]);
        assert_eq!(sign_shopify(b"what do ya want for nothing?", "Jefe"), expected);
    }

    #[test]
    fn a_delivery_is_accepted_under_the_current_or_the_previous_secret_only() {
        let body = br#"{"id":1}"#;
        let signature = sign_shopify(body, "old");
        let secrets = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            verify_shopify(body, Some(&signature), &secrets(&["new", "old"])),
            Ok(())
        );
        assert_eq!(
            verify_shopify(body, Some(&signature), &secrets(&["new"])),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify_shopify(br#"{"id":2}"#, Some(&signature), &secrets(&["old"])),
            Err(Refused::BadSignature),
            "a changed body"
        );
        assert_eq!(
            verify_shopify(body, None, &secrets(&["old"])),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            verify_shopify(body, Some("not base64!"), &secrets(&["old"])),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify_shopify(body, Some(&signature), &[]),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn deliveries_outside_the_window_are_replays() {
        let now: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let window = DEFAULT_REPLAY_WINDOW;
        assert!(
            check_fresh(Some("2026-11-26T08:00:00.123456789Z"), now, window).is_ok(),
            "a 4-hour-old retry"
        );
        assert!(matches!(
            check_fresh(Some("2026-11-26T06:59:59Z"), now, window),
            Err(Refused::Stale(_))
        ));
        assert!(matches!(
            check_fresh(Some("2026-11-26T12:10:00Z"), now, window),
            Err(Refused::Stale(_))
        ));
        assert!(
            check_fresh(Some("2026-11-26T07:00:00-05:00"), now, window).is_ok(),
            "an offset"
        );
        assert_eq!(check_fresh(None, now, window), Err(Refused::Undated));
        assert_eq!(check_fresh(Some("yesterday"), now, window), Err(Refused::Undated));
    }
}
