//! What the fuzz targets run, here so that the regular test suite replays the same code over the
//! corpus (`tests/corpus.rs`) without a nightly toolchain, and `fuzz/` (cargo-fuzz) stays a thin shell.
//!
//! Both targets assert what the product promises for any input: no panic, and nothing silently
//! dropped — every message of a batch is either left for redelivery, quarantined with a reason, or
//! accepted (its event re-emitted for the workflow).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};

use retail_sync_contracts::{IngestLimits, parse_inbound};
use retail_sync_core::idempotency::IdempotencyPolicy;
use retail_sync_core::memory::{CountingMetrics, MemoryBus, MemoryState};
use retail_sync_core::ports::{QuarantineStore, SystemClock};
use retail_sync_core::steps::{Base, Wiring, no_channels};
use retail_sync_lambda::emf::EmfMetrics;
use retail_sync_lambda::handler::Function;

/// Ingest's parse, validation and normalisation of one raw message: an accepted event or a rejection
/// with a reason, never a panic.
pub fn ingest(data: &[u8]) {
    match parse_inbound(data, &IngestLimits::default()) {
        Ok(event) => {
            // What was accepted serializes again (ingest re-emits it).
            serde_json::to_vec(&event).expect("an accepted event serializes");
        }
        Err(rejection) => assert!(!rejection.reason.as_str().is_empty()),
    }
}

/// The bodies a fuzz input stands for: one per line (up to 10, an SQS batch), so one input can hold
/// a batch with duplicates and mixed good and bad messages.
fn bodies(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split('\n')
        .take(10)
        .map(str::to_owned)
        .collect()
}

/// The ingest function's SQS batch handler (the Lambda `Function` itself, over in-memory ports) on a
/// batch built from `data`.
pub fn sqs_batch(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(batch(data));
}

async fn batch(data: &[u8]) {
    let state = Arc::new(MemoryState::default());
    let bus = Arc::new(MemoryBus::default());
    let (channel_bus, channel_mapping) = no_channels("ingest maps no platform's events");
    let wiring = Wiring {
        base: Base {
            idempotency: state.clone(),
            sagas: state.clone(),
            clock: Arc::new(SystemClock),
            metrics: Arc::new(CountingMetrics::default()),
            policy: IdempotencyPolicy::default(),
        },
        limits: IngestLimits::default(),
        erp: Arc::new(|| Err("ingest calls no ERP".into())),
        loyalty: Arc::new(|| Err("ingest calls no loyalty platform".into())),
        publisher: bus.clone(),
        channel_bus,
        channel_mapping,
        channel_outcomes: Arc::new(|_| None),
        member_systems: Arc::new(|| Ok(Default::default())),
        ownership: Arc::default(),
        enrolment: Default::default(),
        return_windows: Default::default(),
        quarantine: state.clone(),
    };
    let function = Function {
        runner: wiring.runner("ingest").expect("the ingest step"),
        metrics: Arc::new(EmfMetrics::new("Fuzz".into(), "ingest")),
        visibility: None,
    };
    let bodies = bodies(data);
    let records = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut record = SqsMessage::default();
            record.message_id = Some(format!("m-{i}"));
            record.body = Some(body.clone());
            record.attributes = HashMap::from([("ApproximateReceiveCount".to_owned(), "1".to_owned())]);
            record
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    let response = function.handle(event).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    let quarantined = state.list(usize::MAX).await.expect("the memory quarantine lists");
    let published = bus.published();
    for (i, body) in bodies.iter().enumerate() {
        if failed.contains(&format!("m-{i}")) {
            continue;
        }
        let kept = quarantined.iter().any(|q| q.body == *body);
        let accepted = published
            .iter()
            .any(|e| body.contains(e.event.metadata().event_id.as_str()));
        assert!(
            kept || accepted,
            "message {i} was acknowledged, but neither quarantined nor accepted"
        );
    }
}
