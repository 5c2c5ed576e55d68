//! Data-parallel training through `mpirun` (feature `mpi`): averaged gradients and trained
//! parameters against a single process at 2 and 4 ranks (4 oversubscribe the 2 cores), uneven
//! shards, and a failing rank ending the whole job promptly.
//!
//! MPI can be initialised once per process, so each case runs the `affine-dp` worker under
//! `mpirun` (`cargo test` builds it for this test).
#![cfg(feature = "mpi")]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `affine-dp ARGS` on `ranks` ranks; returns its output and wall time.
fn mpirun(ranks: usize, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "--timeout", "120", "-np"])
        .arg(ranks.to_string())
        .arg(env!("CARGO_BIN_EXE_affine-dp"))
        .args(args)
        // root in containers and CI; harmless otherwise
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun (OpenMPI) must be installed: scripts/setup.sh --mpi");
    (out, start.elapsed())
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check(ranks: usize, batch: usize) {
    let b = batch.to_string();
    let (out, _) = mpirun(ranks, &["check", "--steps", "40", "--batch", &b]);
    let t = text(&out);
    assert!(out.status.success(), "{ranks} ranks, batch {batch}:\n{t}");
    // the worker compares; this makes sure it did, and on how many rows
    assert!(
        t.contains(&format!(
            "check, {ranks} ranks, batch {batch} ({batch} rows averaged)"
        )) && t.contains("0 parameters differ")
            && t.contains("-> ok"),
        "{t}"
    );
}

#[test]
fn two_ranks_match_one_process() {
    // 103 rows: shards of 52 and 51
    check(2, 103);
}

#[test]
fn four_ranks_match_one_process() {
    // 103 rows: shards of 26, 26, 26, 25
    check(4, 103);
}

#[test]
fn four_ranks_with_an_empty_shard() {
    // the last of the 40-step batches has fewer rows than ranks now and then; here every batch
    // of 3 rows leaves one rank with none
    check(4, 3);
}

#[test]
fn a_panicking_rank_ends_the_job() {
    let (out, wall) = mpirun(4, &["fail", "--rank", "2", "--step", "5"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(wall < Duration::from_secs(30), "took {wall:?}");
    assert!(text(&out).contains("injected panic"), "{}", text(&out));
}

#[test]
fn a_rank_returning_an_error_ends_the_job() {
    let (out, wall) = mpirun(2, &["fail", "--rank", "1", "--step", "3", "--error"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(wall < Duration::from_secs(30), "took {wall:?}");
    assert!(text(&out).contains("injected error"), "{}", text(&out));
}

#[test]
fn the_example_trains() {
    let (out, _) = mpirun(2, &["train", "--epochs", "20", "--batch", "64"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let acc: f64 = t
        .lines()
        .filter(|l| l.contains("final training loss"))
        .find_map(|l| l.split("accuracy ").nth(1))
        .and_then(|a| a.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in:\n{t}"));
    assert!(acc > 90.0, "accuracy {acc}%:\n{t}");
}
