//! The ingest function's SQS batch handler on a batch of up to 10 messages, one per line of the input
//! (`retail_sync_fuzzing::sqs_batch`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retail_sync_fuzzing::sqs_batch(data));
