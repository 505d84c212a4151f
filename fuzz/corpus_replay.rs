//! The replay of a fuzz corpus by `cargo test`, shared by the crates' `tests/fuzz_corpus_*.rs`
//! (each includes this file with `#[path = "../../fuzz/corpus_replay.rs"] mod corpus_replay;`):
//! every file of `fuzz/corpus/<target>/` goes through the target's fuzz entry, so what the fuzzer
//! found is re-checked on every test run.
#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};

/// `fuzz/corpus/<target>` of the repository, from a crate's `CARGO_MANIFEST_DIR` (one level
/// below the root).
pub fn corpus_dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir).join("../fuzz/corpus").join(target)
}

/// Calls `f(file name, bytes)` for every file of `dir`; returns how many there were.
pub fn replay(dir: &Path, mut f: impl FnMut(&str, &[u8])) -> usize {
    let mut files = 0;
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable entry").path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable corpus file");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        f(name, &bytes);
        files += 1;
    }
    files
}

/// The seeds as the test builds them now go through `f` (so a change of the builders is tested
/// before the files are rewritten), are written into `dir` when `PHOTON_WRITE_SEEDS` is set,
/// then every file of `dir` goes through `f`, and there must be at least as many files as
/// seeds. Returns the number of files.
pub fn replay_with_seeds(dir: &Path, seeds: &[(&str, Vec<u8>)], f: impl Fn(&[u8])) -> usize {
    if std::env::var_os("PHOTON_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (_, bytes) in seeds {
        f(bytes);
    }
    let files = replay(dir, |_, bytes| f(bytes));
    assert!(
        files >= seeds.len(),
        "expected the seeds, found {files} files"
    );
    println!("replayed {files} corpus files");
    files
}
