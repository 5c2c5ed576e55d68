//! Proof that a batch-1 pass with a large enough weight runs as GEMV (forward, dx), an outer
//! product (dw, no BLAS call) or a rank-1 update (dw accumulated, BLAS ger) instead of one-row
//! GEMMs, with the same results, and that smaller weights and larger batches stay on GEMM.
//!
//! Where that starts depends on how OpenBLAS runs a one-row GEMM ([`blas::one_row_gemm`]):
//! `make test` runs this file once more with each regime forced (`AFFINE_BLAS_ONE_ROW_GEMM`).
//!
//! The calls are counted by the BLAS spy of `tests/spy`.

mod common;
mod spy;

use affine_blas::backward::OUTER_PARALLEL_MIN_BYTES;
use affine_blas::blas::{self, OneRowGemm, GEMV_FORWARD_MIN_WEIGHT, SINGLE_ROW_MIN_WEIGHT};
use affine_blas::{backward_into, forward_into, Accum};
use common::{random, Laid, LAYOUTS};
use ndarray::{s, Array1, Array2};
use spy::calls;

/// (forward, backward, accumulating backward) BLAS calls (gemm, gemv, ger) of one pass of
/// `batch × inp × out`, with x/grad in layout `lx` and w/outputs in `lo`; checks the results
/// against a two-row pass whose second row is zero (which takes the GEMM path).
fn pass(
    batch: usize,
    inp: usize,
    out: usize,
    lx: common::Layout,
    lo: common::Layout,
) -> ([usize; 3], [usize; 3], [usize; 3]) {
    let x = random::<f64>(batch, inp, 1);
    let w = random::<f64>(inp, out, 2);
    let g = random::<f64>(batch, out, 3);
    let b = random::<f64>(1, out, 4).row(0).to_owned();
    let (lx_, lw, lg) = (Laid::new(&x, lx), Laid::new(&w, lo), Laid::new(&g, lx));
    let mut y = Laid::new(&Array2::from_elem((batch, out), f64::NAN), lo);
    let mut dx = Laid::new(&Array2::from_elem((batch, inp), f64::NAN), lo);
    let mut dw = Laid::new(&Array2::from_elem((inp, out), f64::NAN), lo);
    let mut db = Array1::from_elem(out, f64::NAN);
    let fwd = calls(|| forward_into(lx_.view(), lw.view(), b.view(), y.view_mut()).unwrap());
    let bwd = calls(|| {
        backward_into(
            lx_.view(),
            lw.view(),
            lg.view(),
            Some(dx.view_mut()),
            dw.view_mut(),
            db.view_mut(),
            Accum::Replace,
        )
        .unwrap()
    });
    // accumulating on top of the replaced gradients doubles dw and db
    let mut dx2 = Laid::new(&Array2::from_elem((batch, inp), f64::NAN), lo);
    let acc = calls(|| {
        backward_into(
            lx_.view(),
            lw.view(),
            lg.view(),
            Some(dx2.view_mut()),
            dw.view_mut(),
            db.view_mut(),
            Accum::Add,
        )
        .unwrap()
    });
    dw.view_mut().mapv_inplace(|v| v / 2.0);
    db.mapv_inplace(|v| v / 2.0);
    assert_eq!(dx2.view(), dx.view(), "dx when accumulating, {lx:?}/{lo:?}");
    // reference: the same rows padded with a zero row, through GEMM
    let pad = |a: &Array2<f64>| {
        let mut p = Array2::zeros((batch + 1, a.ncols()));
        p.slice_mut(s![..batch, ..]).assign(a);
        p
    };
    let (xp, gp) = (pad(&x), pad(&g));
    let (mut yp, mut dxp, mut dwp, mut dbp) = (
        Array2::zeros((batch + 1, out)),
        Array2::zeros((batch + 1, inp)),
        Array2::zeros((inp, out)),
        Array1::zeros(out),
    );
    forward_into(xp.view(), w.view(), b.view(), yp.view_mut()).unwrap();
    backward_into(
        xp.view(),
        w.view(),
        gp.view(),
        Some(dxp.view_mut()),
        dwp.view_mut(),
        dbp.view_mut(),
        Accum::Replace,
    )
    .unwrap();
    let close = |a: ndarray::ArrayView2<'_, f64>, b: ndarray::ArrayView2<'_, f64>| {
        a.iter()
            .zip(b.iter())
            .all(|(p, q)| (p - q).abs() <= 1e-12 * (1.0 + q.abs()))
    };
    assert!(
        close(y.view(), yp.slice(s![..batch, ..])),
        "y, {lx:?}/{lo:?}"
    );
    assert!(
        close(dx.view(), dxp.slice(s![..batch, ..])),
        "dx, {lx:?}/{lo:?}"
    );
    assert!(close(dw.view(), dwp.view()), "dw, {lx:?}/{lo:?}");
    assert!(
        db.iter().zip(&dbp).all(|(p, q)| (p - q).abs() <= 1e-12),
        "db"
    );
    (fwd, bwd, acc)
}

#[test]
fn batch_one_runs_as_gemv_and_an_outer_product() {
    let (inp, out) = (400, 360);
    const { assert!(400 * 360 >= GEMV_FORWARD_MIN_WEIGHT) };
    const { assert!(400 * 360 >= SINGLE_ROW_MIN_WEIGHT) };
    for &lx in &LAYOUTS {
        for &lo in &LAYOUTS {
            let (fwd, bwd, acc) = pass(1, inp, out, lx, lo);
            assert_eq!(fwd, [0, 1, 0], "forward, x {lx:?}, w/y {lo:?}");
            assert_eq!(bwd, [0, 1, 0], "backward, x/grad {lx:?}, w/outputs {lo:?}");
            // accumulating, dw takes ger when BLAS can address it, a GEMM otherwise (strided or
            // reversed dw)
            let ger_ok = matches!(
                lo,
                common::Layout::C | common::Layout::F | common::Layout::RowStrided
            );
            let want = if ger_ok { [0, 1, 1] } else { [1, 1, 0] };
            assert_eq!(acc, want, "accumulate, x/grad {lx:?}, w/outputs {lo:?}");
        }
    }
}

#[test]
fn large_outer_products_are_written_in_blocks_on_both_threads() {
    // 731 × 517 f64 (3 MB): two blocks of 365 and 366 rows; 2100 × 517 (8.3 MB): 8 blocks
    const { assert!(731 * 517 * 8 >= 2 * OUTER_PARALLEL_MIN_BYTES) };
    const { assert!(731 * 517 * 8 < 4 * OUTER_PARALLEL_MIN_BYTES) };
    // inside rayon's pool, where the backward runs at once on the calling thread (outside it,
    // the backward would enter the pool, and the spy counts calls per thread)
    affine_blas::threads::run(|| {
        for &lo in &LAYOUTS {
            let (_, bwd, _) = pass(1, 731, 517, common::Layout::C, lo);
            assert_eq!(bwd, [0, 1, 0], "backward, w/outputs {lo:?}");
        }
        let (_, bwd, _) = pass(1, 2100, 517, common::Layout::F, common::Layout::C);
        assert_eq!(bwd, [0, 1, 0]);
    });
}

#[test]
fn between_the_cutoffs_only_the_backward_leaves_gemm() {
    let (inp, out) = (300, 260);
    const { assert!(300 * 260 >= SINGLE_ROW_MIN_WEIGHT && 300 * 260 < GEMV_FORWARD_MIN_WEIGHT) };
    let (fwd, bwd, _) = pass(1, inp, out, common::Layout::C, common::Layout::C);
    let fwd_want = match blas::one_row_gemm() {
        OneRowGemm::Small => [1, 0, 0],
        OneRowGemm::Packed => [0, 1, 0],
    };
    assert_eq!((fwd, bwd), (fwd_want, [0, 1, 0]));
}

#[test]
fn small_weights_stay_on_gemm_where_its_one_row_gemm_is_fast() {
    const { assert!(100 * 100 < SINGLE_ROW_MIN_WEIGHT) };
    for (inp, out) in [(100, 100), (64, 64), (7, 5), (1, 1)] {
        let (fwd, bwd, acc) = pass(1, inp, out, common::Layout::C, common::Layout::C);
        let want = match blas::one_row_gemm() {
            // ndarray multiplies matrices of no side above 7 itself, without BLAS
            OneRowGemm::Small if inp.max(out) <= 7 => ([0, 0, 0], [0, 0, 0], [0, 0, 0]),
            OneRowGemm::Small => ([1, 0, 0], [2, 0, 0], [2, 0, 0]),
            OneRowGemm::Packed => ([0, 1, 0], [0, 1, 0], [0, 1, 1]),
        };
        assert_eq!((fwd, bwd, acc), want, "1 × {inp} × {out}");
    }
}

#[test]
fn larger_batches_stay_on_gemm() {
    // batch 2 leaves the single-row paths: GEMMs, or none at all where the small-batch engine
    // (libxsmm) takes them
    use affine_blas::xsmm::{applies, Product};
    let f = usize::from(!applies::<f64>(Product::Forward, 2, (400, 360)));
    let b = 2 * usize::from(!applies::<f64>(Product::Backward, 2, (400, 360)));
    let (fwd, bwd, acc) = pass(2, 400, 360, common::Layout::C, common::Layout::C);
    assert_eq!((fwd, bwd, acc), ([f, 0, 0], [b, 0, 0], [b, 0, 0]));
}

#[test]
fn the_regime_follows_the_environment() {
    // make test runs this file with AFFINE_BLAS_ONE_ROW_GEMM set to each value
    let want = match std::env::var("AFFINE_BLAS_ONE_ROW_GEMM").as_deref() {
        Ok("small") => Some(OneRowGemm::Small),
        Ok("packed") => Some(OneRowGemm::Packed),
        _ => None,
    };
    if let Some(want) = want {
        assert_eq!(blas::one_row_gemm(), want);
    }
    let (fwd, single) = (
        blas::gemv_forward_min_weight(),
        blas::single_row_min_weight(),
    );
    match blas::one_row_gemm() {
        OneRowGemm::Small => {
            assert_eq!(
                (fwd, single),
                (GEMV_FORWARD_MIN_WEIGHT, SINGLE_ROW_MIN_WEIGHT)
            )
        }
        OneRowGemm::Packed => assert_eq!((fwd, single), (1, 1)),
    }
}
