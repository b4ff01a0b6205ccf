//! Ingest's parse, validation and normalisation of raw bytes (`retail_sync_fuzzing::ingest`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retail_sync_fuzzing::ingest(data));
