//! The short fuzz run of CI: every target replays its committed corpus, then runs inputs mutated
//! from it for a bounded time, without libFuzzer (stable Rust, no coverage feedback).
//!
//! `UMS_FUZZ_MS` sets the mutation time per target (default 2000 ms), `UMS_FUZZ_SEED` the seed
//! (default fixed, so a failure repeats). A failing input is written to
//! `target/fuzz-failures/<target>/` and printed; `cargo xtask fuzz TARGET` then reproduces it
//! under libFuzzer when it is copied into the target's corpus.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{TARGETS, Target};

/// Inputs longer than this are not produced (libFuzzer's default `-max_len` is 4096 too).
const MAX_LEN: usize = 4096;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = root().join("fuzz/corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that make parsers take their interesting branches.
const INTERESTING: &[u8] = b"\0\x01\x7f\x80\xff\\\"'=,;:+#*()[]{}. \t\r\n0179afAF";

/// One to four of libFuzzer's basic mutations, plus splicing in dictionary words and other
/// corpus inputs.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let b = INTERESTING[rng.below(INTERESTING.len())];
                input.insert(rng.below(len + 1), b);
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(8)).min(len);
                input.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(16)).min(len);
                let chunk = input[from..to].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            5 | 6 if !dictionary.is_empty() => {
                let word = dictionary[rng.below(dictionary.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, word.iter().copied());
            }
            7 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let keep = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(keep);
                input.extend_from_slice(&other[from..]);
            }
            8 if len > 0 => input.truncate(rng.below(len)),
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(MAX_LEN);
}

/// Runs one input; on a failure saves it and panics with it.
fn run_one(target: &Target, input: &[u8], origin: &str) {
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let dir = root().join("target/fuzz-failures").join(target.name);
        let file = dir.join(format!("{origin}-{:016x}", fnv(input)));
        let saved = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&file, input))
            .map(|()| file.display().to_string())
            .unwrap_or_else(|e| format!("(not saved: {e})"));
        panic!(
            "fuzz target {} failed on {origin} input {:?}\n  saved as {saved}\n  {message}",
            target.name,
            String::from_utf8_lossy(input),
        );
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz_target(name: &str) {
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .expect("known target");
    let corpus = corpus(name);
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} holds no input");
    for input in &corpus {
        run_one(target, input, "corpus");
    }
    let budget = Duration::from_millis(env_u64("UMS_FUZZ_MS", 2000));
    let mut rng = Rng(env_u64("UMS_FUZZ_SEED", 0x756d_735f_6675_7a7a) ^ fnv(name.as_bytes()));
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < budget {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &corpus, target.dictionary);
        run_one(target, &input, "mutated");
        runs += 1;
    }
    eprintln!(
        "{name}: {} corpus inputs, {runs} mutated inputs in {:?}",
        corpus.len(),
        started.elapsed()
    );
}

#[test]
fn every_target_has_a_libfuzzer_binary() {
    for t in TARGETS {
        let bin = root()
            .join("fuzz/fuzz_targets")
            .join(format!("{}.rs", t.name));
        assert!(bin.is_file(), "{} is missing", bin.display());
    }
    let dir = root().join("fuzz/fuzz_targets");
    for entry in std::fs::read_dir(&dir).expect("fuzz/fuzz_targets") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        assert!(
            TARGETS.iter().any(|t| t.name == name),
            "{} is not in ums_fuzz::TARGETS",
            path.display()
        );
    }
}

#[test]
fn config() {
    fuzz_target("config");
}

#[test]
fn ldap_dn() {
    fuzz_target("ldap_dn");
}

#[test]
fn ldap_filter() {
    fuzz_target("ldap_filter");
}

#[test]
fn network_token() {
    fuzz_target("network_token");
}

#[test]
fn param_value() {
    fuzz_target("param_value");
}

#[test]
fn proxy_v2() {
    fuzz_target("proxy_v2");
}

#[test]
fn unit_id() {
    fuzz_target("unit_id");
}
