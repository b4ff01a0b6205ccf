//! What retail-sync's tests share, kept out of every binary that ships: a dev-dependency of the crates
//! whose tests use it, and a dependency of the CLI only for its emulator commands (`bench aws`).
//!
//! # Layout
//! - [`moto`]: a moto server (AWS API emulator) reached through the real SDK, started once per process.
//! - [`conformance`]: the state ports' contract as one suite, run by the in-memory, embedded and
//!   DynamoDB adapters' tests ([`conformance_tests!`]).
//! - [`sims`]: the reference simulators over HTTP and the connector authentication that opens them.

pub mod conformance;
pub mod moto;
pub mod sims;
