//! Replays the fuzzing corpus through both targets on the stable toolchain, in the regular test
//! suite: the seed corpus (every sample envelope and every line of the sample streams in `events/`)
//! and whatever `fuzz/corpus/<target>/` holds (inputs cargo-fuzz found interesting, kept in the repo).
//! A crash found by fuzzing, once its input is added there, stays a test.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The seed corpus: each sample envelope, each line of each sample stream.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for path in files(&root().join("events/samples")) {
        seeds.push(std::fs::read(path).unwrap());
    }
    for path in files(&root().join("events/streams")) {
        let text = std::fs::read_to_string(path).unwrap();
        seeds.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.as_bytes().to_vec()),
        );
    }
    seeds
}

#[test]
fn the_seed_corpus_and_the_kept_corpus_replay_through_ingest_without_a_crash() {
    let mut inputs = seeds();
    assert!(inputs.len() > 50, "the seeds are the sample events and streams");
    inputs.extend(
        files(&root().join("fuzz/corpus/ingest"))
            .into_iter()
            .map(|p| std::fs::read(p).unwrap()),
    );
    for input in &inputs {
        retail_sync_fuzzing::ingest(input);
    }
}

#[test]
fn the_seed_corpus_and_the_kept_corpus_replay_through_the_sqs_batch_handler_without_a_crash() {
    let seeds = seeds();
    let mut inputs = seeds.clone();
    // Batches of several messages: consecutive seeds joined by newlines (duplicates included).
    for pair in seeds.chunks(3) {
        inputs.push(pair.join(&b'\n'));
    }
    inputs.extend(
        files(&root().join("fuzz/corpus/sqs_batch"))
            .into_iter()
            .map(|p| std::fs::read(p).unwrap()),
    );
    for input in &inputs {
        retail_sync_fuzzing::sqs_batch(input);
    }
}
