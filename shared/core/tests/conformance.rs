//! The state ports' contract (`retail_sync_testkit::conformance`) kept by the in-memory adapter, which the
//! workflow tests and benchmarks stand on.

async fn store() -> (retail_sync_core::memory::MemoryState, ()) {
    (retail_sync_core::memory::MemoryState::default(), ())
}

retail_sync_testkit::conformance_tests!(store);
