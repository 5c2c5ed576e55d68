//! BLAS plumbing: which layouts ndarray hands to BLAS, the GEMM every kernel calls, and the
//! OpenBLAS thread and build queries.
//!
//! ndarray's `general_mat_mul` calls `cblas_?gemm` only when every operand is contiguous along
//! one axis with a positive leading stride that fits an `i32`; otherwise it silently runs a
//! pure-Rust loop several times slower. The crate's `gemm` checks the same conditions first and
//! copies an operand that fails them into a contiguous buffer, so every product of this crate
//! reaches BLAS (or, at small batch, the [`crate::xsmm`] engine).

use crate::element::Element;
use crate::error::{fmt2, AffineError, Result};
use ndarray::{
    linalg::{general_mat_mul, general_mat_vec_mul},
    Array2, ArrayBase, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Ix2, RawData,
};
use std::os::raw::c_int;
use std::sync::OnceLock;

pub use crate::kernels::{ensure_best_kernels, KernelChoice};

/// The memory order BLAS is told an operand has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlasOrder {
    /// Row-major: unit stride along columns (`CblasRowMajor` / `CblasNoTrans`).
    C,
    /// Column-major: unit stride along rows, e.g. a transposed view (`CblasTrans`).
    F,
}

/// From how many weight elements (`in · out`) a batch-1 backward pass uses GEMV for `dx` and an
/// outer product (or BLAS ger) for `dw` instead of GEMMs, where OpenBLAS's one-row GEMM is
/// [`OneRowGemm::Small`]. Measured with `affine-bench --shape 1xIxO` (AMD Zen 5, `Cooperlake`
/// kernels): at 256 × 256 (this cutoff) the backward takes 0.77× the GEMMs' time, at 64 × 64
/// GEMM is as fast. Elsewhere every batch-1 backward leaves GEMM ([`single_row_min_weight`]).
pub const SINGLE_ROW_MIN_WEIGHT: usize = 1 << 16;

/// From how many weight elements a batch-1 forward pass is a GEMV instead of a one-row GEMM,
/// where OpenBLAS's one-row GEMM is [`OneRowGemm::Small`]: at 256 × 256 the GEMV measured
/// 1.03–1.3× slower than the GEMM, at 512 × 512 0.5–0.8× (AMD Zen 5). Elsewhere every batch-1
/// forward is a GEMV ([`gemv_forward_min_weight`]).
pub const GEMV_FORWARD_MIN_WEIGHT: usize = 1 << 17;

/// How OpenBLAS runs a one-row GEMM (`1 × k` times `k × n`), which sets where a batch-1 pass
/// leaves GEMM for GEMV and the outer product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneRowGemm {
    /// As fast as a GEMV up to 256 × 256 weights: OpenBLAS's AVX-512 cores (`SkylakeX`,
    /// `Cooperlake`, `SapphireRapids`), whose small-matrix GEMM kernels take such products.
    /// The batch-1 cutoffs are [`GEMV_FORWARD_MIN_WEIGHT`] and [`SINGLE_ROW_MIN_WEIGHT`].
    Small,
    /// Through the general packed path, 2.5–4× slower than a GEMV at every size: its other
    /// cores. Measured on an AMD Zen 1 (`Zen` kernels, 2 threads, C harness, µs per call,
    /// one-row GEMM against GEMV): f32 64 × 64 2.7 / 0.9, 256 × 256 32 / 8.3, 1024 × 1024 435 /
    /// 145; f64 64 × 64 2.3–3.2 / 1.1–1.3, 256 × 256 50 / 14–16. Every batch-1 pass leaves GEMM.
    Packed,
}

/// How OpenBLAS runs a one-row GEMM with the kernels it has chosen (after
/// [`ensure_best_kernels`]), decided once. The environment variable `AFFINE_BLAS_ONE_ROW_GEMM`
/// (`small` or `packed`, read at first use) sets it, for tests and comparisons.
pub fn one_row_gemm() -> OneRowGemm {
    static ONE_ROW: OnceLock<OneRowGemm> = OnceLock::new();
    *ONE_ROW.get_or_init(
        || match std::env::var("AFFINE_BLAS_ONE_ROW_GEMM").as_deref() {
            Ok("small") => OneRowGemm::Small,
            Ok("packed") => OneRowGemm::Packed,
            _ if crate::kernels::isa_rank(ensure_best_kernels().core()) >= 3 => OneRowGemm::Small,
            _ => OneRowGemm::Packed,
        },
    )
}

/// From how many weight elements a batch-1 forward pass is a GEMV: [`GEMV_FORWARD_MIN_WEIGHT`]
/// where the one-row GEMM is [`OneRowGemm::Small`], else 1 (always).
pub fn gemv_forward_min_weight() -> usize {
    match one_row_gemm() {
        OneRowGemm::Small => GEMV_FORWARD_MIN_WEIGHT,
        OneRowGemm::Packed => 1,
    }
}

/// From how many weight elements a batch-1 backward pass runs GEMV and the outer product:
/// [`SINGLE_ROW_MIN_WEIGHT`] where the one-row GEMM is [`OneRowGemm::Small`], else 1 (always).
pub fn single_row_min_weight() -> usize {
    match one_row_gemm() {
        OneRowGemm::Small => SINGLE_ROW_MIN_WEIGHT,
        OneRowGemm::Packed => 1,
    }
}

/// BLAS's index type is `i32`: no dimension or stride may exceed this.
pub const BLAS_INDEX_MAX: usize = i32::MAX as usize;

/// The order BLAS can read `a` in without a copy, or `None` when ndarray would fall back to its
/// pure-Rust loop. Mirrors ndarray 0.17's `get_blas_compatible_layout` (preferring C).
pub fn blas_order<T>(a: &ArrayView2<'_, T>) -> Option<BlasOrder> {
    blas_order_of(a.dim(), a.strides())
}

fn blas_order_of((rows, cols): (usize, usize), s: &[isize]) -> Option<BlasOrder> {
    [BlasOrder::C, BlasOrder::F]
        .into_iter()
        .find(|&order| is_blas_2d(rows, cols, s[0], s[1], order))
}

fn is_blas_2d(m: usize, n: usize, s0: isize, s1: isize, order: BlasOrder) -> bool {
    let (inner_stride, outer_stride, inner_dim, outer_dim) = match order {
        BlasOrder::C => (s1, s0, m, n),
        BlasOrder::F => (s0, s1, n, m),
    };
    let max = BLAS_INDEX_MAX as isize;
    (inner_stride == 1 || outer_dim == 1)
        && s0 >= 1
        && s1 >= 1
        && s0 <= max
        && s1 <= max
        // the leading stride must cover a whole row/column: no overlap or broadcasting
        && !(inner_dim > 1 && (outer_stride as usize) < outer_dim)
        && m <= BLAS_INDEX_MAX
        && n <= BLAS_INDEX_MAX
}

/// Checks that a `(rows, cols)` operand named `name` fits BLAS's 32-bit index.
pub(crate) fn check_index(op: &'static str, name: &str, dim: (usize, usize)) -> Result<()> {
    if dim.0 > BLAS_INDEX_MAX || dim.1 > BLAS_INDEX_MAX {
        return Err(AffineError::TooLargeForBlas {
            op,
            detail: format!("{name} ({})", fmt2(dim)),
        });
    }
    Ok(())
}

/// `c ← α·a·b + β·c` through BLAS, whatever the operands' layouts.
///
/// Shapes: `a: (m, k)`, `b: (k, n)`, `c: (m, n)`, already checked by the caller, each dimension
/// within [`BLAS_INDEX_MAX`]. With `β = 0`, `c` need not be initialised (NaN is overwritten).
/// Operands that BLAS cannot read in place (negative, zero or non-unit inner strides) are copied
/// once into a contiguous buffer; only that case allocates. When `k = 0` the product is empty and
/// `c ← β·c`, which BLAS would also do but ndarray's fallback does not promise.
pub(crate) fn gemm<T: Element>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) {
    debug_assert_eq!(a.ncols(), b.nrows());
    debug_assert_eq!(c.dim(), (a.nrows(), b.ncols()));
    if c.is_empty() {
        return;
    }
    if a.ncols() == 0 {
        if beta == T::zero() {
            c.fill(T::zero());
        } else if beta != T::one() {
            c.mapv_inplace(|v| v * beta);
        }
        return;
    }
    ensure_best_kernels();
    let a = unit_stride_vectors(a.view());
    let b = unit_stride_vectors(b.view());
    let mut c = unit_stride_vectors(c.view_mut());
    gemm_any_layout(alpha, &a, &b, beta, &mut c);
}

/// ndarray gives the length-1 axis of a sliced view (a batch-1 slice `x.slice(s![i..i + 1, ..])`,
/// one column) stride 0, which its BLAS check refuses although BLAS never steps along that axis.
/// Re-inserting the axis gives it stride 1 over the same memory, so such a view reaches BLAS
/// without a copy.
fn unit_stride_vectors<S: RawData>(mut a: ArrayBase<S, Ix2>) -> ArrayBase<S, Ix2> {
    if blas_order_of(a.dim(), a.strides()).is_some() {
        return a;
    }
    if a.ncols() == 1 {
        a = a.index_axis_move(Axis(1), 0).insert_axis(Axis(1));
    }
    if a.nrows() == 1 {
        a = a.index_axis_move(Axis(0), 0).insert_axis(Axis(0));
    }
    a
}

/// ndarray hands a product to BLAS only when some dimension exceeds this; smaller ones go to
/// matrixmultiply, which allocates its packing buffers on every call.
const NDARRAY_BLAS_CUTOFF: usize = 7;

/// `c ← α·a·b + β·c`, copying an operand BLAS cannot read into a contiguous buffer first.
fn gemm_any_layout<T: Element>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) {
    let (m, k) = a.dim();
    if m.max(k).max(b.ncols()) <= NDARRAY_BLAS_CUTOFF {
        tiny_gemm(alpha, a, b, beta, c);
        return;
    }
    let a_copy: Option<Array2<T>> = blas_order(a)
        .is_none()
        .then(|| a.as_standard_layout().into_owned());
    let b_copy: Option<Array2<T>> = blas_order(b)
        .is_none()
        .then(|| b.as_standard_layout().into_owned());
    let a = a_copy.as_ref().map_or_else(|| a.view(), |m| m.view());
    let b = b_copy.as_ref().map_or_else(|| b.view(), |m| m.view());
    if blas_order(&c.view()).is_some() {
        general_mat_mul(alpha, &a, &b, beta, c);
    } else {
        let mut tmp = c.as_standard_layout().into_owned();
        general_mat_mul(alpha, &a, &b, beta, &mut tmp);
        c.assign(&tmp);
    }
}

/// A product of at most 7 × 7 × 7 as a plain loop: no allocation, and at that size no slower.
fn tiny_gemm<T: Element>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) {
    for ((i, j), cij) in c.indexed_iter_mut() {
        let dot = a
            .row(i)
            .iter()
            .zip(b.column(j))
            .fold(T::zero(), |acc, (&x, &y)| acc + x * y);
        // β = 0 must overwrite, even NaN
        *cij = if beta == T::zero() {
            alpha * dot
        } else {
            alpha * dot + beta * *cij
        };
    }
}

/// `y ← α·a·x + β·y` through BLAS gemv, `a: (m, k)`, `x: (k)`, `y: (m)`, checked by the caller.
/// An `a` BLAS cannot read is copied first (allocating); with β = 0, `y` need not be initialised.
pub(crate) fn gemv<T: Element>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    x: &ArrayView1<'_, T>,
    beta: T,
    y: &mut ArrayViewMut1<'_, T>,
) {
    if beta == T::zero() {
        // BLAS may compute β·y, and 0·NaN is NaN
        y.fill(T::zero());
    }
    ensure_best_kernels();
    let a = unit_stride_vectors(a.view());
    if blas_order(&a).is_some() {
        general_mat_vec_mul(alpha, &a, x, beta, y);
    } else {
        general_mat_vec_mul(alpha, &a.as_standard_layout(), x, beta, y);
    }
}

/// The BLAS description of `a ← α·x·yᵀ + a` for these views, or `None` when a layout does not
/// suit BLAS ger (then the caller takes another path): `(layout, m, n, incx, incy, lda)`.
fn ger_args<T>(
    x: &ArrayView1<'_, T>,
    y: &ArrayView1<'_, T>,
    a: &ArrayView2<'_, T>,
) -> Option<(cblas_sys::CBLAS_LAYOUT, c_int, c_int, c_int, c_int, c_int)> {
    let (m, n) = a.dim();
    let inc = |v: &ArrayView1<'_, T>| -> Option<c_int> {
        let s = v.strides()[0];
        if v.len() <= 1 {
            Some(1)
        } else {
            c_int::try_from(s).ok().filter(|&s| s >= 1)
        }
    };
    let (incx, incy) = (inc(x)?, inc(y)?);
    let a = unit_stride_vectors(a.view());
    let (layout, ld, inner) = match blas_order(&a)? {
        BlasOrder::C => (cblas_sys::CBLAS_LAYOUT::CblasRowMajor, a.strides()[0], n),
        BlasOrder::F => (cblas_sys::CBLAS_LAYOUT::CblasColMajor, a.strides()[1], m),
    };
    let ld = c_int::try_from(ld.max(inner as isize).max(1)).ok()?;
    Some((
        layout,
        c_int::try_from(m).ok()?,
        c_int::try_from(n).ok()?,
        incx,
        incy,
        ld,
    ))
}

/// Whether [`Element::ger`] can run on these views.
pub(crate) fn ger_fits<T>(
    x: &ArrayView1<'_, T>,
    y: &ArrayView1<'_, T>,
    a: &ArrayView2<'_, T>,
) -> bool {
    ger_args(x, y, a).is_some()
}

macro_rules! ger {
    ($t:ty, $name:ident, $ger:ident) => {
        /// `a ← α·x·yᵀ + a` (BLAS ger), `x: (m)`, `y: (n)`, `a: (m, n)`; returns false and does
        /// nothing when the layouts do not suit BLAS (see [`ger_fits`]).
        pub(crate) fn $name(
            alpha: $t,
            x: &ArrayView1<'_, $t>,
            y: &ArrayView1<'_, $t>,
            a: &mut ArrayViewMut2<'_, $t>,
        ) -> bool {
            debug_assert_eq!(a.dim(), (x.len(), y.len()));
            let Some((layout, m, n, incx, incy, lda)) = ger_args(x, y, &a.view()) else {
                return false;
            };
            if m == 0 || n == 0 {
                return true;
            }
            ensure_best_kernels();
            let mut a = unit_stride_vectors(a.view_mut());
            // SAFETY: ger_args checked that x and y have m and n elements at positive strides
            // incx, incy, and that a is an m × n matrix contiguous along one axis in `layout`
            // with leading dimension lda ≥ its inner length, all within i32; a is borrowed
            // mutably, so it aliases neither x nor y.
            unsafe {
                cblas_sys::$ger(
                    layout,
                    m,
                    n,
                    alpha,
                    x.as_ptr(),
                    incx,
                    y.as_ptr(),
                    incy,
                    a.as_mut_ptr(),
                    lda,
                )
            }
            true
        }
    };
}
ger!(f32, sger, cblas_sger);
ger!(f64, dger, cblas_dger);

macro_rules! level1 {
    ($t:ty, $axpy:ident, $scal:ident) => {
        /// `y ← α·x + y` (BLAS axpy) over equal-length slices, in pieces that fit BLAS's `i32`.
        pub(crate) fn $axpy(alpha: $t, x: &[$t], y: &mut [$t]) {
            debug_assert_eq!(x.len(), y.len());
            ensure_best_kernels();
            for (xc, yc) in x.chunks(BLAS_INDEX_MAX).zip(y.chunks_mut(BLAS_INDEX_MAX)) {
                let n = c_int::try_from(xc.len().min(yc.len())).unwrap_or(c_int::MAX);
                // SAFETY: both pieces hold at least n elements at unit stride; BLAS reads n of
                // x and writes n of y, which do not overlap (one is borrowed mutably).
                unsafe { cblas_sys::$axpy(n, alpha, xc.as_ptr(), 1, yc.as_mut_ptr(), 1) }
            }
        }

        /// `x ← α·x` (BLAS scal), in pieces that fit BLAS's `i32`.
        pub(crate) fn $scal(alpha: $t, x: &mut [$t]) {
            ensure_best_kernels();
            for xc in x.chunks_mut(BLAS_INDEX_MAX) {
                let n = c_int::try_from(xc.len()).unwrap_or(c_int::MAX);
                // SAFETY: the piece holds n elements at unit stride, which BLAS scales in place.
                unsafe { cblas_sys::$scal(n, alpha, xc.as_mut_ptr(), 1) }
            }
        }
    };
}
level1!(f32, cblas_saxpy, cblas_sscal);
level1!(f64, cblas_daxpy, cblas_dscal);

mod ffi {
    use std::os::raw::c_int;
    extern "C" {
        pub fn openblas_get_num_threads() -> c_int;
        pub fn openblas_set_num_threads(n: c_int);
    }
}

/// The linked OpenBLAS's build configuration and the core it runs, e.g.
/// `"OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64"`.
pub fn openblas_config() -> String {
    ensure_best_kernels();
    crate::kernels::config()
}

/// The CPU kernel family OpenBLAS runs, e.g. `"SkylakeX"` (after [`ensure_best_kernels`]).
pub fn openblas_core() -> String {
    ensure_best_kernels().core().to_string()
}

/// How many threads each OpenBLAS call may use.
pub fn openblas_threads() -> usize {
    // SAFETY: FFI call without arguments that reads an integer.
    let n = unsafe { ffi::openblas_get_num_threads() };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Sets how many threads each OpenBLAS call may use (process-wide; clamped to `1..=i32::MAX`).
pub fn set_openblas_threads(n: usize) {
    ensure_best_kernels();
    let n = c_int::try_from(n.max(1)).unwrap_or(c_int::MAX);
    // SAFETY: FFI call with a positive thread count, which OpenBLAS accepts at any time.
    unsafe { ffi::openblas_set_num_threads(n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    #[test]
    fn orders_of_common_views() {
        let a = Array2::<f32>::zeros((16, 9));
        assert_eq!(blas_order(&a.view()), Some(BlasOrder::C));
        assert_eq!(blas_order(&a.t()), Some(BlasOrder::F));
        // a column block of a row-major matrix keeps unit inner stride and its leading stride
        assert_eq!(blas_order(&a.slice(s![2..10, 1..5])), Some(BlasOrder::C));
        // every other column: no unit stride in either direction
        assert_eq!(blas_order(&a.slice(s![.., ..;2])), None);
        // reversed rows: negative stride
        assert_eq!(blas_order(&a.slice(s![..;-1, ..])), None);
        // ndarray gives a length-1 axis of a slice stride 0, which its BLAS check refuses
        let col = a.slice(s![.., 3..4]);
        assert_eq!(col.strides(), &[9, 0]);
        assert_eq!(blas_order(&col), None);
        // broadcast: zero stride
        let row = ndarray::Array1::<f32>::zeros(9);
        assert_eq!(blas_order(&row.broadcast((4, 9)).unwrap()), None);
    }

    #[test]
    fn length_one_axes_get_a_stride_blas_accepts() {
        let a = Array2::from_shape_fn((16, 9), |(i, j)| (i * 9 + j) as f32);
        for v in [
            a.slice(s![.., 3..4]),
            a.slice(s![5..6, ..]),
            a.slice(s![5..6, 3..4]),
        ] {
            assert_eq!(blas_order(&v), None, "{:?}", v.strides());
            let fixed = unit_stride_vectors(v);
            assert!(blas_order(&fixed).is_some(), "{:?}", fixed.strides());
            assert_eq!(fixed, v);
            assert_eq!(fixed.as_ptr(), v.as_ptr(), "same memory, no copy");
        }
        // a reversed column stays refused (it is copied)
        let rev = a.slice(s![..;-1, 3..4]);
        assert_eq!(blas_order(&unit_stride_vectors(rev)), None);
    }

    #[test]
    fn index_limit() {
        assert!(check_index("t", "x", (BLAS_INDEX_MAX, 1)).is_ok());
        let e = check_index("t", "x", (BLAS_INDEX_MAX + 1, 3)).unwrap_err();
        assert!(matches!(e, AffineError::TooLargeForBlas { .. }));
        assert!(e
            .to_string()
            .contains(&format!("{} × 3", BLAS_INDEX_MAX + 1)));
    }

    #[test]
    fn gemm_handles_every_layout() {
        // reference by hand: a (3×2) · b (2×4)
        let a = ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
        let b = ndarray::arr2(&[[1.0, 0.0, 2.0, -1.0], [0.5, 1.0, 0.0, 3.0]]);
        let want = ndarray::arr2(&[
            [2.0, 2.0, 2.0, 5.0],
            [5.0, 4.0, 6.0, 9.0],
            [8.0, 6.0, 10.0, 13.0],
        ]);
        // reversed-row copies exercise the copy path, transposes the F path
        let a_rev = a.slice(s![..;-1, ..]).to_owned();
        let a_neg = a_rev.slice(s![..;-1, ..]);
        let mut c_store = Array2::<f64>::from_elem((3, 4), f64::NAN);
        let mut c = c_store.slice_mut(s![..;-1, ..]);
        gemm(1.0, &a_neg, &b.view(), 0.0, &mut c);
        assert_eq!(c, want);
        let mut c_f = Array2::<f64>::from_elem((4, 3), f64::NAN);
        gemm(
            1.0,
            &a.view(),
            &b.view(),
            0.0,
            &mut c_f.view_mut().reversed_axes(),
        );
        assert_eq!(c_f.t(), want);
        let mut c2 = Array2::<f64>::ones((3, 4));
        gemm(2.0, &a.view(), &b.view(), 1.0, &mut c2.view_mut());
        assert_eq!(c2, want.mapv(|v| 2.0 * v + 1.0));
    }

    #[test]
    fn gemm_with_empty_inner_dimension() {
        let a = Array2::<f32>::zeros((3, 0));
        let b = Array2::<f32>::zeros((0, 2));
        let mut c = Array2::<f32>::from_elem((3, 2), f32::NAN);
        gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut());
        assert!(c.iter().all(|&v| v == 0.0));
        let mut c = Array2::<f32>::from_elem((3, 2), 2.0);
        gemm(1.0, &a.view(), &b.view(), 1.0, &mut c.view_mut());
        assert!(c.iter().all(|&v| v == 2.0));
    }

    #[test]
    fn openblas_reports_itself() {
        assert!(
            openblas_config().contains("OpenBLAS"),
            "{}",
            openblas_config()
        );
        assert!(!openblas_core().is_empty());
        assert!(openblas_threads() >= 1);
    }
}
