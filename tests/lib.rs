//! End-to-end tests of retail-sync across backends; the tests live in `tests/*.rs`. This library holds
//! what they share.

use std::path::{Path, PathBuf};

/// The workspace root (tests read `infra/template.yaml` and `events/` from it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `items` with every item twice, shuffled by `seed`: the same seed gives the same order on every run
/// (Fisher–Yates over a linear congruential sequence), so a failing shuffle can be run again.
pub fn twice_shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut twice: Vec<T> = items.iter().chain(items.iter()).cloned().collect();
    let mut state = seed;
    for i in (1..twice.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        twice.swap(i, (state >> 33) as usize % (i + 1));
    }
    twice
}
