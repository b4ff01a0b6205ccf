//! The outcome connectors against the platform simulators over HTTP: an outcome is recorded once however
//! often it is told, and whatever the platform does in between (throttling in Shopify's two ways, an
//! answer lost after the platform applied, a refusal, a wrong token).

use std::time::Duration;

use retail_sync_connectors::{AdobeCommerceRest, ShopifyAdmin};
use retail_sync_contracts::events::{ChannelOrder, ChannelPlatform};
use retail_sync_contracts::values::{OrderId, PlatformId, Points};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{ChannelOutcome, ChannelOutcomes, OutcomeKind};
use retail_sync_simulators::outcomes::serve;
use retail_sync_simulators::{AdobeCommerceSimulator, FaultKind, Faults, ShopifyAdminSimulator};
use retail_sync_testkit::sims;

fn outcome(platform: ChannelPlatform, id: &str) -> ChannelOutcome {
    ChannelOutcome {
        outcome_id: id.to_owned(),
        order_id: OrderId::parse("web-1001").unwrap(),
        order: ChannelOrder {
            platform,
            order_ref: PlatformId::parse("1001").unwrap(),
        },
        kind: OutcomeKind::ReturnReversed,
        points: Points::new(23).unwrap(),
        points_given_back: Points::new(68).unwrap(),
        occurred_at: "2026-11-21T09:04:00Z".parse().unwrap(),
    }
}

fn key(n: &str) -> IdempotencyKey {
    IdempotencyKey::for_step("order:web-1001", &format!("notify-channel:{n}"))
}

fn faults(kind: FaultKind, n: u32) -> Faults {
    Faults {
        fail_first: n,
        fail_first_with: kind,
        ..Faults::default()
    }
}

async fn served() -> (String, ShopifyAdminSimulator, AdobeCommerceSimulator) {
    let (shopify, adobe) = (
        ShopifyAdminSimulator::default(),
        AdobeCommerceSimulator::default(),
    );
    let (addr, _) = serve(shopify.clone(), adobe.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (format!("http://{addr}"), shopify, adobe)
}

fn shopify_at(base: &str) -> ShopifyAdmin {
    let auth = sims::platform_token("X-Shopify-Access-Token", "");
    ShopifyAdmin::new(&sims::fast(base, Duration::from_millis(400)), auth, "2026-07").unwrap()
}

fn adobe_at(base: &str) -> AdobeCommerceRest {
    let auth = sims::platform_token("Authorization", "Bearer ");
    AdobeCommerceRest::new(&sims::fast(base, Duration::from_millis(400)), auth).unwrap()
}

#[tokio::test]
async fn a_shopify_outcome_is_one_metafield_through_throttling_and_lost_answers() {
    let (base, sim, _) = served().await;
    let shopify = shopify_at(&base);
    let told = outcome(ChannelPlatform::Shopify, "returned-r1");
    shopify.tell(&told, &key("r1")).await.unwrap();
    // Throttled as a 200 with THROTTLED in `errors` (retried in place), then as a 429 asking for a
    // second, longer than this connector waits in place: the wait goes up with the error (the runner
    // keeps the message that long), and the next delivery succeeds.
    sim.set_faults(faults(FaultKind::Throttle, 2));
    let e = shopify.tell(&told, &key("r1")).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{e}");
    shopify.tell(&told, &key("r1")).await.unwrap();
    // Applied with its answer lost: set again, which changes nothing.
    sim.set_faults(faults(FaultKind::TimeoutAfterCommit, 1));
    shopify.tell(&told, &key("r1")).await.unwrap();
    let fields = &sim.metafields()["1001"];
    assert_eq!(fields.len(), 1, "{fields:?}");
    let value = &fields["retail_sync.returned-r1"];
    assert_eq!(value["points"], 23);
    assert_eq!(value["points_given_back"], 68);
    assert_eq!(
        value["summary"],
        "Loyalty: return refunded, 23 earned points taken back; 68 redeemed points given back"
    );
    assert!(sim.calls() >= 5);
}

#[tokio::test]
async fn shopify_refusals_and_credentials_are_told_apart() {
    let (base, sim, _) = served().await;
    let shopify = shopify_at(&base);
    // A key Shopify refuses (one character): its userErrors, for good.
    match shopify
        .tell(&outcome(ChannelPlatform::Shopify, "x"), &key("x"))
        .await
    {
        Err(Error::Rejected { message, .. }) => assert!(message.contains("Key is invalid"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A wrong token is ours to fix, not the outcome's: retryable, never a refusal.
    let wrong = ShopifyAdmin::new(
        &sims::fast(&base, Duration::from_millis(400)),
        sims::platform_token("X-Shopify-Access-Token", "not-"),
        "2026-07",
    )
    .unwrap();
    let e = wrong
        .tell(&outcome(ChannelPlatform::Shopify, "earned-1"), &key("e1"))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    // Down for good: unavailable after the attempts, nothing recorded.
    sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let e = shopify
        .tell(&outcome(ChannelPlatform::Shopify, "earned-2"), &key("e2"))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(sim.metafields().is_empty());
    assert!(
        ShopifyAdmin::new(
            &sims::fast(&base, Duration::from_millis(400)),
            sims::basic(),
            "../x"
        )
        .is_err()
    );
}

#[tokio::test]
async fn an_adobe_comment_whose_answer_was_lost_is_found_not_posted_again() {
    let (base, _, sim) = served().await;
    let adobe = adobe_at(&base);
    let told = outcome(ChannelPlatform::AdobeCommerce, "returned-r1");
    // The post is applied and its answer never comes (the read of the order before it passes the first
    // scripted fault, a read committing nothing): this delivery does not post again.
    sim.set_faults(faults(FaultKind::TimeoutAfterCommit, 2));
    let e = adobe.tell(&told, &key("r1")).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(sim.comments()["1001"].len(), 1);
    // The redelivery finds it by its marker; a third telling too.
    adobe.tell(&told, &key("r1")).await.unwrap();
    sim.set_faults(faults(FaultKind::Error, 1));
    adobe.tell(&told, &key("r1")).await.unwrap();
    let comments = &sim.comments()["1001"];
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(
        comments[0],
        "Loyalty: return refunded, 23 earned points taken back; 68 redeemed points given back [retail-sync returned-r1]"
    );
    // The order keeps its status (a comment posted without one would clear it).
    assert_eq!(sim.status("1001").as_deref(), Some("processing"));
    // Another outcome of the same order is another comment.
    adobe
        .tell(&outcome(ChannelPlatform::AdobeCommerce, "earned-s1"), &key("s1"))
        .await
        .unwrap();
    assert_eq!(sim.comments()["1001"].len(), 2);
    let wrong = AdobeCommerceRest::new(
        &sims::fast(&base, Duration::from_millis(400)),
        sims::platform_token("Authorization", "Bearer not-"),
    )
    .unwrap();
    assert!(wrong.tell(&told, &key("r1")).await.unwrap_err().is_retryable());
}
