//! Proof that every GEMM of the crate reaches BLAS, whatever the operands' layouts.
//!
//! The GEMM calls are counted by the BLAS spy of `tests/spy`; ndarray's pure-Rust fallback makes
//! no such call, so a count of zero exposes a silent slow path.

mod common;
mod spy;

use affine_blas::{backward_into, forward_into, Accum, Affine};
use common::{Laid, LAYOUTS};
use ndarray::{linalg::general_mat_mul, s, Array1, Array2};

/// Runs `f` and returns the GEMM calls it made on this thread, and its result.
fn calls<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let mut r = None;
    let [gemm, _, _] = spy::calls(|| r = Some(f()));
    (gemm, r.expect("f ran"))
}

#[test]
fn the_counter_sees_blas_and_ndarray_fallbacks() {
    let a = Array2::<f32>::ones((32, 24));
    let b = Array2::<f32>::ones((24, 16));
    let mut c = Array2::<f32>::zeros((32, 16));
    let (n, _) = calls(|| general_mat_mul(1.0, &a, &b, 0.0, &mut c));
    assert_eq!(n, 1, "a plain row-major product must reach cblas_sgemm");
    assert!(c.iter().all(|&v| v == 24.0));
    // every other column: ndarray silently takes its pure-Rust loop
    let wide = Array2::<f32>::ones((32, 48));
    let (n, _) = calls(|| general_mat_mul(1.0, &wide.slice(s![.., ..;2]), &b, 0.0, &mut c));
    assert_eq!(n, 0, "expected ndarray's fallback for a strided operand");
}

#[test]
fn every_layout_reaches_blas() {
    for &lx in &LAYOUTS {
        for &lo in &LAYOUTS {
            let (batch, inp, out) = (33, 40, 24);
            let x = common::random::<f64>(batch, inp, 1);
            let w = common::random::<f64>(inp, out, 2);
            let g = common::random::<f64>(batch, out, 3);
            let b = Array1::<f64>::zeros(out);
            let (lx_, lw, lg) = (Laid::new(&x, lx), Laid::new(&w, lo), Laid::new(&g, lx));
            let mut y = Laid::new(&Array2::zeros((batch, out)), lo);
            let (n, r) = calls(|| forward_into(lx_.view(), lw.view(), b.view(), y.view_mut()));
            r.unwrap();
            assert_eq!(n, 1, "forward, x {lx:?}, w/y {lo:?}");
            let mut dx = Laid::new(&Array2::zeros((batch, inp)), lo);
            let mut dw = Laid::new(&Array2::zeros((inp, out)), lo);
            let mut db = Array1::zeros(out);
            let (n, r) = calls(|| {
                backward_into(
                    lx_.view(),
                    lw.view(),
                    lg.view(),
                    Some(dx.view_mut()),
                    dw.view_mut(),
                    db.view_mut(),
                    Accum::Replace,
                )
            });
            r.unwrap();
            assert_eq!(n, 2, "backward, x/grad {lx:?}, w/outputs {lo:?}");
        }
    }
}

#[test]
fn a_layer_step_is_three_gemms() {
    // batch 20: under the small-batch engine's narrow-layer cutoff, so every product is BLAS's
    let batch = 20;
    assert!(batch < affine_blas::xsmm::NARROW_MIN_BATCH);
    let mut l = Affine::<f32>::new(64, 48, affine_blas::Init::He, 3).unwrap();
    let x = common::random::<f32>(batch, 128, 4);
    let g = common::random::<f32>(batch, 48, 5);
    // the input as every other column of a wider matrix: copied into the cache, then BLAS
    let (n, r) = calls(|| l.forward(x.slice(s![.., ..;2])).map(|y| y.dim()));
    assert_eq!((n, r.unwrap()), (1, (batch, 48)));
    let (n, r) = calls(|| l.backward(g.t().as_standard_layout().t()).map(|d| d.dim()));
    assert_eq!((n, r.unwrap()), (2, (batch, 64)));
}
