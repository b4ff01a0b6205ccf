//! End-to-end tests of retail-sync across backends; the tests live in `tests/*.rs`. This library holds
//! what they share.

use std::path::{Path, PathBuf};

/// The workspace root (tests read `infra/template.yaml` and `events/` from it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
