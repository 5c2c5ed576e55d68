//! The backward pass: `dx = grad·wᵀ`, `dw = xᵀ·grad`, `db = Σ_batch grad`.

use crate::blas::{check_index, gemm, gemv, ger_fits, single_row_min_weight};
use crate::element::Element;
use crate::error::{fmt2, AffineError, Result};
use crate::reduce::{sum_rows_into, Par};
use crate::xsmm::Product::Backward;
use crate::{threads, xsmm};
use ndarray::{s, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

/// The fewest bytes of `dw` per thread in the batch-1 outer product `dw = xᵀ·g` (1 MiB): a
/// `dw` of twice that or more is written in blocks of rows on rayon's threads, since one core
/// cannot saturate the memory's write bandwidth. Step/floor (`affine-bench --shape`, three
/// alternating runs each, one thread against blocks): f64 1 × 512 × 512 (2 MiB) 0.61–0.97 against
/// 0.43–0.45, f64 1 × 1024 × 1024 0.62–0.65 against 0.42–0.60, f32 1 × 1024 × 1024 0.28–0.31
/// against 0.22; f32 1 × 512 × 512 (1 MiB) in two blocks measured no better (0.67–0.93 against
/// 0.75–0.94).
pub const OUTER_PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Whether a kernel overwrites its output or adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accum {
    /// `out ← result` (the output need not be initialised).
    #[default]
    Replace,
    /// `out ← out + result`: gradient accumulation across micro-batches.
    Add,
}

/// Gradients of `y = x·w + b` with respect to `x`, `w` and `b`, written into the caller's buffers.
///
/// Shapes: `x: (batch, in)` (the forward input), `w: (in, out)`, `grad = ∂L/∂y: (batch, out)`.
/// - `dx ← grad·wᵀ`, `(batch, in)`, always overwritten; pass `None` where it is not needed (a first
///   layer) to skip that GEMM.
/// - `dw ← xᵀ·grad` (or `dw += xᵀ·grad` with [`Accum::Add`]), `(in, out)`: one GEMM with β = 0 or 1.
/// - `db ← Σ_batch grad` (or `+=`), `(out)`: the deterministic column sum of
///   [`crate::reduce::sum_rows_into`], in parallel above [`crate::reduce::PAR_CUTOFF_ELEMENTS`].
///
/// At batch 1 with a weight of at least [`crate::blas::single_row_min_weight`] elements (every
/// weight unless OpenBLAS has small-matrix kernels for a one-row GEMM), `dx` is a GEMV, and `dw`
/// an outer product written in one pass (a rank-1 update, BLAS ger, when accumulating) instead
/// of GEMMs: OpenBLAS runs other one-row GEMMs through its packed path.
///
/// The transposes are views (BLAS `Trans` flags), never copies. Allocates nothing unless an
/// operand's layout cannot go to BLAS (see [`crate::forward_into`]). Batch 0 gives zero `dw`, `db`
/// (unchanged ones with [`Accum::Add`]).
///
/// # Errors
/// [`AffineError::Shape`] naming every shape if `x`, `w`, `grad`, `dx`, `dw` or `db` disagree;
/// [`AffineError::TooLargeForBlas`] if a dimension exceeds `i32::MAX`. Nothing is written on error.
pub fn backward_into<T: Element>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    grad: ArrayView2<'_, T>,
    dx: Option<ArrayViewMut2<'_, T>>,
    dw: ArrayViewMut2<'_, T>,
    db: ArrayViewMut1<'_, T>,
    accum: Accum,
) -> Result<()> {
    check_backward(
        x.dim(),
        w.dim(),
        grad.dim(),
        dx.as_ref().map(|d| d.dim()),
        dw.dim(),
        db.len(),
    )?;
    // one entry into rayon's pool for the parallel regions (crate::threads)
    let pool = xsmm::parallel::<T>(Backward, x.nrows(), w.dim())
        || outer_parallel::<T>(x.nrows(), w.dim(), accum);
    threads::run_if(pool, || {
        weight_grads(x, w, grad, dx, dw, accum);
    });
    sum_rows_into(grad, db, accum, Par::Auto)
}

/// The backward pass of a layer that keeps its bias as the last row of one `(in + 1, out)`
/// matrix `wb = [w; b]` and its input with a column of ones, `x1 = [x, 1]: (batch, in + 1)`
/// (as [`crate::Affine`] does): `dx ← grad·wᵀ` and `[dw; db] (+)= x1ᵀ·grad`, the bias gradient
/// computed by the same GEMM as `dw` instead of a separate reduction over the batch.
///
/// Shapes are the caller's to check (`x1`'s last column must be ones); nothing here fails.
pub(crate) fn backward_folded_into<T: Element>(
    x1: ArrayView2<'_, T>,
    wb: ArrayView2<'_, T>,
    grad: ArrayView2<'_, T>,
    dx: Option<ArrayViewMut2<'_, T>>,
    dwb: ArrayViewMut2<'_, T>,
    accum: Accum,
) {
    let inp = wb.nrows().saturating_sub(1);
    weight_grads(x1, wb.slice_move(s![..inp, ..]), grad, dx, dwb, accum);
}

/// `dx ← grad·wᵀ` (when asked for) and `dw (+)= x·grad`, for any number of columns of `x` and
/// rows of `dw` (`in`, or `in + 1` with the bias folded in), checked by the caller.
fn weight_grads<T: Element>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    grad: ArrayView2<'_, T>,
    dx: Option<ArrayViewMut2<'_, T>>,
    mut dw: ArrayViewMut2<'_, T>,
    accum: Accum,
) {
    let beta = match accum {
        Accum::Replace => T::zero(),
        Accum::Add => T::one(),
    };
    let single_row = x.nrows() == 1 && w.len() >= single_row_min_weight();
    let engine = xsmm::plan::<T>(Backward, x.nrows(), w.dim());
    if let Some(mut dx) = dx {
        if single_row {
            // one row: dxᵀ = w·gradᵀ is a matrix-vector product
            gemv(T::one(), &w, &grad.row(0), T::zero(), &mut dx.row_mut(0));
        } else if !engine.is_some_and(|threads| xsmm::gemm_nt(&grad, &w, &mut dx, threads)) {
            gemm(T::one(), &grad, &w.t(), T::zero(), &mut dx);
        }
    }
    let add = accum == Accum::Add;
    if engine.is_some_and(|threads| xsmm::gemm_tn(&x, &grad, &mut dw, add, threads)) {
        return;
    }
    match accum {
        // one row: dw = xᵀ·grad is an outer product, memory-bound; written in one pass
        Accum::Replace if single_row => outer_into(&x.row(0), &grad.row(0), &mut dw),
        // one row, accumulating: dw += xᵀ·grad is a rank-1 update (BLAS ger) where it fits
        Accum::Add if single_row && ger_fits(&x.row(0), &grad.row(0), &dw.view()) => {
            T::ger(T::one(), &x.row(0), &grad.row(0), &mut dw);
        }
        _ => gemm(T::one(), &x.t(), &grad, beta, &mut dw),
    }
}

/// Whether the backward pass at this batch, `w: (in, out)`, writes its outer product `dw` in
/// blocks on rayon's threads (batch 1, replacing `dw`, of at least twice
/// [`OUTER_PARALLEL_MIN_BYTES`]).
pub(crate) fn outer_parallel<T: Element>(
    batch: usize,
    (inp, out): (usize, usize),
    accum: Accum,
) -> bool {
    let weights = inp * out;
    accum == Accum::Replace
        && batch == 1
        && weights >= single_row_min_weight()
        && weights * std::mem::size_of::<T>() >= 2 * OUTER_PARALLEL_MIN_BYTES
        && inp >= 2
        && rayon::current_num_threads() > 1
}

/// `dw ← xᵀ·g` for one row: `dw[i, j] = x[i]·g[j]`, every element written once; from
/// twice [`OUTER_PARALLEL_MIN_BYTES`], blocks of rows on rayon's threads.
fn outer_into<T: Element>(
    x: &ArrayView1<'_, T>,
    g: &ArrayView1<'_, T>,
    dw: &mut ArrayViewMut2<'_, T>,
) {
    let bytes = dw.len() * std::mem::size_of::<T>();
    if bytes >= 2 * OUTER_PARALLEL_MIN_BYTES && dw.nrows() >= 2 && rayon::current_num_threads() > 1
    {
        let mid = dw.nrows() / 2;
        let (mut top, mut bottom) = dw.view_mut().split_at(Axis(0), mid);
        let (x_top, x_bottom) = x.view().split_at(Axis(0), mid);
        rayon::join(
            || outer_into(&x_top, g, &mut top),
            || outer_into(&x_bottom, g, &mut bottom),
        );
        return;
    }
    for (mut row, &xi) in dw.rows_mut().into_iter().zip(x) {
        row.zip_mut_with(g, |d, &gj| *d = xi * gj);
    }
}

/// Checks the backward shapes against `x: (batch, in)` and `w: (in, out)`.
pub(crate) fn check_backward(
    x: (usize, usize),
    w: (usize, usize),
    grad: (usize, usize),
    dx: Option<(usize, usize)>,
    dw: (usize, usize),
    db: usize,
) -> Result<()> {
    const OP: &str = "backward";
    check_index(OP, "x", x)?;
    check_index(OP, "w", w)?;
    check_index(OP, "grad", grad)?;
    let (batch, inp) = x;
    let out = w.1;
    let broken = if inp != w.0 {
        "x's columns must equal w's rows (in)"
    } else if grad != (batch, out) {
        "grad must be (x's rows, w's columns) = (batch, out)"
    } else if dx.is_some_and(|d| d != x) {
        "dx must have x's shape (batch, in)"
    } else if dw != w {
        "dw must have w's shape (in, out)"
    } else if db != out {
        "db's length must equal w's columns (out)"
    } else {
        return Ok(());
    };
    let dx = dx.map_or_else(|| "none".to_string(), fmt2);
    Err(AffineError::Shape {
        op: OP,
        detail: format!(
            "x is {}, w is {}, grad is {}, dx is {dx}, dw is {}, db has length {db}: {broken}",
            fmt2(x),
            fmt2(w),
            fmt2(grad),
            fmt2(dw)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2, Array1, Array2};

    #[test]
    fn small_exact_case() {
        let x = arr2(&[[1.0f64, 2.0], [3.0, -1.0], [0.0, 1.0]]); // (3, 2)
        let w = arr2(&[[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0]]); // (2, 3)
        let g = arr2(&[[1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 1.0, -1.0]]); // (3, 3)
        let mut dx = Array2::from_elem((3, 2), f64::NAN);
        let mut dw = Array2::from_elem((2, 3), f64::NAN);
        let mut db = Array1::from_elem(3, f64::NAN);
        let dxv = Some(dx.view_mut());
        backward_into(
            x.view(),
            w.view(),
            g.view(),
            dxv,
            dw.view_mut(),
            db.view_mut(),
            Accum::Replace,
        )
        .unwrap();
        assert_eq!(dx, arr2(&[[3.0, -1.0], [0.0, 2.0], [-1.0, 0.0]]));
        assert_eq!(dw, arr2(&[[1.0, 6.0, 1.0], [3.0, -1.0, 1.0]]));
        assert_eq!(db, arr1(&[2.0, 3.0, 0.0]));
        backward_into(
            x.view(),
            w.view(),
            g.view(),
            None,
            dw.view_mut(),
            db.view_mut(),
            Accum::Add,
        )
        .unwrap();
        assert_eq!(dw, arr2(&[[2.0, 12.0, 2.0], [6.0, -2.0, 2.0]]));
        assert_eq!(db, arr1(&[4.0, 6.0, 0.0]));
    }

    #[test]
    fn messages_name_every_shape() {
        let e = check_backward((4, 3), (3, 2), (5, 2), None, (3, 2), 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x is 4 × 3") && e.contains("grad is 5 × 2"),
            "{e}"
        );
        let e = check_backward((4, 3), (3, 2), (4, 2), Some((4, 2)), (3, 2), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dx is 4 × 2"), "{e}");
    }
}
