//! The `dockerfile` fuzz target's seeds, corpus and crashers, run through the same function as
//! the target (`berth_builder::fuzz::fuzz_one`): none may panic.
//!
//! The files live in `fuzz/seeds/dockerfile/`, `fuzz/corpus/dockerfile/` and
//! `fuzz/artifacts/dockerfile/` at the workspace root; `fuzz/README.md` says how they are made.

use std::path::{Path, PathBuf};

use berth_builder::fuzz::fuzz_one;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a fuzz directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn fuzz_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(name)
        .join("dockerfile")
}

fn run_all(files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in files {
        let data = std::fs::read(path).expect("reading a fuzz input");
        if std::panic::catch_unwind(|| fuzz_one(&data)).is_err() {
            failures.push(path.display().to_string());
        }
    }
    failures
}

#[test]
fn corpus_does_not_panic() {
    let corpus = files(&fuzz_dir("corpus"));
    assert!(
        corpus.len() >= 50,
        "the corpus is missing or nearly empty: {} files",
        corpus.len()
    );
    let failures = run_all(&corpus);
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn seeds_do_not_panic() {
    let seeds = files(&fuzz_dir("seeds"));
    assert!(!seeds.is_empty(), "no seeds");
    let failures = run_all(&seeds);
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn crashers_are_fixed() {
    let failures = run_all(&files(&fuzz_dir("artifacts")));
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}
