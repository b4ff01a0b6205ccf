//! The `retail-sync` command line: local runs on the embedded backend, operator commands (quarantine,
//! DLQs, sagas) and benchmarks. `main.rs` only parses arguments; the work is here so the end-to-end
//! tests drive exactly what the command does.
//!
//! # Layout
//! - [`input`]: reads sample files (JSON, JSON arrays, JSONL) into bus entries or raw queue bodies.
//! - [`local`]: the whole system in-process: embedded backend wired from the template, the steps, the
//!   reference simulators, and a loop that runs until every queue is drained.
//! - [`backends`]: what a local run needs from a backend (feed, depths, read-back), for embedded and AWS.
//! - [`ops`]: operator work on either backend: DLQs (list, show, filtered redrive), the quarantine,
//!   sagas and their retry after a fix.
//! - [`target`]: which system a command works on: a local run's state, or a deployed stack (`--stack`).
//! - [`bench`](mod@bench): benchmarks that print figures.
//! - [`chaos`]: the chaos harness: a generated day under injected faults, and the books checked against
//!   a model recomputed from the day.
//! - [`report`]: the run's outcome as a stable JSON document and as a human summary.

pub mod backends;
pub mod bench;
pub mod chaos;
pub mod cost;
pub mod input;
pub mod local;
pub mod ops;
pub mod report;
pub mod target;
