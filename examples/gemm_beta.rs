//! Times one raw OpenBLAS GEMM `y ← x·w + β·y` (f32) with β = 0, with β = 1, and as `y.fill(0)`
//! then β = 1: the measurement behind the README's note on OpenBLAS's two threads at 64
//! features. Run it with `OPENBLAS_NUM_THREADS=1` and without to compare.
//!
//! ```sh
//! cargo run --release --example gemm_beta -- 2048 64 64     # batch in out
//! ```

use ndarray::{linalg::general_mat_mul, Array2};
use std::time::Instant;

/// Median over 11 samples of `reps` calls, in µs per call (after `reps` warm-up calls).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..reps {
        f();
    }
    let mut samples: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[5] * 1e6
}

fn main() {
    let dims: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let &[batch, inp, out] = dims.as_slice() else {
        eprintln!("usage: gemm_beta BATCH IN OUT");
        std::process::exit(2);
    };
    let kernels = affine_blas::blas::ensure_best_kernels();
    println!(
        "OpenBLAS {} threads, kernels {kernels}, idle spin {}",
        affine_blas::blas::openblas_threads(),
        affine_blas::threads::openblas_spin()
    );
    let reps = (2e7 / (2.0 * (batch * inp * out).max(1) as f64)) as usize + 10;
    let x = Array2::<f32>::from_elem((batch, inp), 0.5);
    let w = Array2::<f32>::from_elem((inp, out), 0.5);
    let mut y = Array2::<f32>::zeros((batch, out));
    for _ in 0..3 {
        let b0 = time(reps, || general_mat_mul(1.0, &x, &w, 0.0, &mut y));
        let b1 = time(reps, || general_mat_mul(1.0, &x, &w, 1.0, &mut y));
        let fill = time(reps, || {
            y.fill(0.0);
            general_mat_mul(1.0, &x, &w, 1.0, &mut y)
        });
        println!(
            "{batch}x{inp}x{out}: beta 0 {b0:8.2} µs, beta 1 {b1:8.2} µs, fill + beta 1 {fill:8.2} µs"
        );
    }
}
