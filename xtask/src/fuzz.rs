//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the libFuzzer targets of `fuzz/`, one at a
//! time on one core, and merges the inputs that reach new code into the committed corpus.
//!
//! libFuzzer needs flags of the nightly compiler; cargo-fuzz passes them to the stable
//! toolchain with `RUSTC_BOOTSTRAP=1`. Each run works on a scratch corpus in
//! `target/fuzz/<target>` seeded from `fuzz/corpus/<target>`; afterwards only the inputs that
//! add edge coverage are merged into `fuzz/corpus/<target>`, so the committed corpus stays small.
//! A crash leaves its input in `fuzz/artifacts/<target>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use clap::Args;

use crate::util::{self, step};

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// The target to run (a file name in `fuzz/fuzz_targets` without `.rs`); all, one after
    /// the other, when not given.
    target: Option<String>,
    /// Seconds to run each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Do not merge new inputs into `fuzz/corpus`.
    #[arg(long)]
    no_merge: bool,
}

/// Runs `cargo xtask fuzz`.
pub fn run(args: FuzzArgs) -> anyhow::Result<ExitCode> {
    let root = util::workspace_root();
    let all = targets(&root)?;
    let chosen = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target `{t}`; there are: {}", all.join(", ")),
        None => all,
    };
    ensure_cargo_fuzz()?;
    for target in &chosen {
        let corpus = root.join("fuzz/corpus").join(target);
        let scratch = util::target_dir().join("fuzz").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&scratch)?;
        step!("fuzzing {target} for {} s", args.seconds);
        // libFuzzer adds new inputs to its first corpus directory and reads the others.
        let status = util::status(
            cargo_fuzz(&root)
                .arg(target)
                .arg(&scratch)
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={}", args.seconds))
                .args(["-max_len=4096", "-timeout=10", "-print_final_stats=1"]),
        )?;
        if !status.success() {
            step!(
                "{target} failed ({status}); the input is in {}",
                util::display_path(&root.join("fuzz/artifacts").join(target))
            );
            return Ok(util::exit_code(status));
        }
        if !args.no_merge {
            merge(&root, target, &corpus, &scratch)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds to `corpus` the fewest inputs of `scratch` that reach the code it does not (a set cover
/// over edge coverage, not hit counts, so the committed corpus grows by a handful per run).
fn merge(root: &Path, target: &str, corpus: &Path, scratch: &Path) -> anyhow::Result<()> {
    let before = count(corpus)?;
    util::run(cargo_fuzz(root).arg(target).arg(corpus).arg(scratch).args([
        "--",
        "-set_cover_merge=1",
        "-use_counters=0",
        "-max_len=4096",
    ]))?;
    let after = count(corpus)?;
    step!(
        "{target}: {} new inputs in {} ({after} in all)",
        after - before,
        util::display_path(corpus)
    );
    Ok(())
}

/// `cargo fuzz run` on the stable toolchain, built without a sanitizer (the code under test is
/// safe Rust) and with debug assertions, so an arithmetic overflow is a crash.
fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = util::cargo();
    cmd.current_dir(root).env("RUSTC_BOOTSTRAP", "1").args([
        "fuzz",
        "run",
        "--sanitizer",
        "none",
        "--debug-assertions",
    ]);
    cmd
}

/// The targets: the files of `fuzz/fuzz_targets`.
fn targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

fn count(dir: &Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p: &PathBuf| p.is_file())
        .count())
}

/// Makes sure `cargo fuzz` is available.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let found = util::cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if found {
        step!("cargo-fuzz found");
        return Ok(());
    }
    step!("cargo-fuzz not found; installing it");
    util::run(util::cargo().args(["install", "cargo-fuzz", "--locked"]))
}
