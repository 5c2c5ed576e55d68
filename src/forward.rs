//! The forward pass: `y = x·w + b`.

use crate::blas::{check_index, gemm, gemv, gemv_forward_min_weight};
use crate::element::Element;
use crate::error::{fmt2, AffineError, Result};
use crate::xsmm::Product::Forward;
use crate::{threads, xsmm};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};

/// `y ← x·w + b`, written into the caller's `y`.
///
/// Shapes: `x: (batch, in)`, `w: (in, out)`, `b: (out)`, `y: (batch, out)`. The bias is fused into
/// the GEMM: `y` is filled with `b` in every row, then `y ← 1·x·w + 1·y` is one BLAS call, so `y`
/// need not be initialised. At batch 1 that call is a GEMV instead, with a weight of at least
/// [`crate::blas::gemv_forward_min_weight`] elements (every weight unless OpenBLAS has
/// small-matrix kernels for a one-row GEMM; without them it runs one through its general packed
/// path, several times slower). Any layout is accepted (transposed and sliced views go to BLAS
/// without a copy); a layout BLAS cannot read is copied once, and only then does this allocate.
///
/// # Errors
/// [`AffineError::Shape`] if `x`'s columns ≠ `w`'s rows, `b`'s length ≠ `w`'s columns, or
/// `y` ≠ `(batch, out)`; [`AffineError::TooLargeForBlas`] if a dimension exceeds `i32::MAX`.
/// Nothing is written on error.
pub fn forward_into<T: Element>(
    x: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    b: ArrayView1<'_, T>,
    mut y: ArrayViewMut2<'_, T>,
) -> Result<()> {
    check_forward(x.dim(), w.dim(), b.len(), y.dim())?;
    if x.nrows() == 1 && w.len() >= gemv_forward_min_weight() {
        // one row: yᵀ ← wᵀ·xᵀ + b is a matrix-vector product
        let mut y0 = y.row_mut(0);
        y0.assign(&b);
        gemv(T::one(), &w.t(), &x.row(0), T::one(), &mut y0);
    } else {
        y.assign(&b);
        let engine = xsmm::plan::<T>(Forward, x.nrows(), w.dim()).is_some_and(|threads| {
            threads::run_if(threads > 1, || xsmm::gemm_nn(&x, &w, &mut y, true, threads))
        });
        if !engine {
            gemm(T::one(), &x, &w, T::one(), &mut y);
        }
    }
    Ok(())
}

/// The forward pass of a layer that keeps `wb = [w; b]: (in + 1, out)` and its input as
/// `x1 = [x, 1]: (batch, in + 1)` (as [`crate::Affine`] does): `y ← x1·wb = x·w + b` in one GEMM
/// with β = 0, no separate pass writing `b` into `y` (a GEMV at batch 1 from
/// [`crate::blas::gemv_forward_min_weight`] weights, as in [`forward_into`]).
///
/// Shapes are the caller's to check (`x1`'s last column must be ones); nothing here fails.
pub(crate) fn forward_folded_into<T: Element>(
    x1: ArrayView2<'_, T>,
    wb: ArrayView2<'_, T>,
    mut y: ArrayViewMut2<'_, T>,
) {
    if x1.nrows() == 1 && wb.len() >= gemv_forward_min_weight() {
        gemv(T::one(), &wb.t(), &x1.row(0), T::zero(), &mut y.row_mut(0));
    } else if !xsmm::plan::<T>(Forward, x1.nrows(), wb.dim())
        .is_some_and(|threads| xsmm::gemm_nn(&x1, &wb, &mut y, false, threads))
    {
        gemm(T::one(), &x1, &wb, T::zero(), &mut y);
    }
}

/// Checks the forward shapes: `x: (batch, in)`, `w: (in, out)`, `b: (out)`, `y: (batch, out)`.
pub(crate) fn check_forward(
    x: (usize, usize),
    w: (usize, usize),
    b: usize,
    y: (usize, usize),
) -> Result<()> {
    const OP: &str = "forward";
    check_index(OP, "x", x)?;
    check_index(OP, "w", w)?;
    let all = || {
        format!(
            "x is {}, w is {}, b has length {b}, y is {}",
            fmt2(x),
            fmt2(w),
            fmt2(y)
        )
    };
    let broken = if x.1 != w.0 {
        "x's columns must equal w's rows (in)"
    } else if b != w.1 {
        "b's length must equal w's columns (out)"
    } else if y != (x.0, w.1) {
        "y must be (x's rows, w's columns) = (batch, out)"
    } else {
        return Ok(());
    };
    Err(AffineError::Shape {
        op: OP,
        detail: format!("{}: {broken}", all()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2, Array2};

    #[test]
    fn small_exact_case() {
        // integers: exact in any summation order
        let x = arr2(&[[1.0f32, 2.0, 3.0], [-1.0, 0.0, 2.0]]);
        let w = arr2(&[[1.0f32, 0.0], [0.0, 1.0], [2.0, -1.0]]);
        let b = arr1(&[10.0f32, 20.0]);
        let mut y = Array2::from_elem((2, 2), f32::NAN);
        forward_into(x.view(), w.view(), b.view(), y.view_mut()).unwrap();
        assert_eq!(y, arr2(&[[17.0, 19.0], [13.0, 18.0]]));
    }

    #[test]
    fn messages_name_every_shape() {
        let e = check_forward((5, 3), (4, 2), 2, (5, 2))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x is 5 × 3") && e.contains("w is 4 × 2") && e.contains("in"),
            "{e}"
        );
        let e = check_forward((5, 4), (4, 2), 3, (5, 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("length 3") && e.contains("out"), "{e}");
        let e = check_forward((5, 4), (4, 2), 2, (4, 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("y is 4 × 2"), "{e}");
    }
}
