//! The float types the crate computes in.

use ndarray::{ArrayView1, ArrayViewMut2, LinalgScalar};
use num_traits::Float;
use std::cell::RefCell;
use std::fmt::{Debug, Display};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A float type with a BLAS GEMM behind it: `f32` (sgemm) or `f64` (dgemm).
///
/// Sealed: ndarray dispatches to BLAS only for these two real types, and anything else would
/// silently take its slow pure-Rust path.
pub trait Element:
    LinalgScalar
    + Float
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + ndarray_npy::ReadableElement
    + ndarray_npy::WritableElement
    + sealed::Sealed
    + 'static
{
    /// `"f32"` or `"f64"`, for reports and benchmark IDs.
    const NAME: &'static str;

    /// Rounds an `f64` to this type (exact for `f64`).
    fn from_f64(v: f64) -> Self;

    /// Runs `f` on a zeroed scratch slice of `len` elements owned by the calling thread and
    /// reused across calls, so a steady-state caller allocates nothing. (A nested call on the same
    /// thread, e.g. from a task rayon stole while waiting, gets a fresh buffer instead.)
    #[doc(hidden)]
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;

    /// As [`Element::with_scratch`], but the slice's contents are left from earlier calls (for
    /// buffers that are written before they are read).
    #[doc(hidden)]
    fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;

    /// libxsmm's JIT kernel for `d` in this precision, where it has one.
    #[doc(hidden)]
    fn xsmm_dispatch(d: &crate::xsmm::Desc) -> Option<crate::xsmm::RawKernel>;

    /// `y ← α·x + y` through BLAS (`?axpy`); `x` and `y` of equal length.
    #[doc(hidden)]
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]);

    /// `x ← α·x` through BLAS (`?scal`).
    #[doc(hidden)]
    fn scal(alpha: Self, x: &mut [Self]);

    /// `a ← α·x·yᵀ + a` through BLAS (`?ger`); false (nothing done) when a layout does not suit.
    #[doc(hidden)]
    fn ger(
        alpha: Self,
        x: &ArrayView1<'_, Self>,
        y: &ArrayView1<'_, Self>,
        a: &mut ArrayViewMut2<'_, Self>,
    ) -> bool;
}

macro_rules! element {
    ($t:ty, $axpy:ident, $scal:ident, $ger:ident, $xsmm:ident) => {
        impl Element for $t {
            const NAME: &'static str = stringify!($t);

            fn from_f64(v: f64) -> Self {
                v as $t
            }

            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static SCRATCH: RefCell<Vec<$t>> = const { RefCell::new(Vec::new()) };
                }
                SCRATCH.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        buf.clear();
                        buf.resize(len, 0.0);
                        f(&mut buf)
                    }
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }

            fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static BUFFER: RefCell<Vec<$t>> = const { RefCell::new(Vec::new()) };
                }
                BUFFER.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        if buf.len() < len {
                            buf.resize(len, 0.0);
                        }
                        f(&mut buf[..len])
                    }
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }

            fn xsmm_dispatch(d: &crate::xsmm::Desc) -> Option<crate::xsmm::RawKernel> {
                crate::xsmm::$xsmm(d)
            }

            fn axpy(alpha: Self, x: &[Self], y: &mut [Self]) {
                crate::blas::$axpy(alpha, x, y)
            }

            fn scal(alpha: Self, x: &mut [Self]) {
                crate::blas::$scal(alpha, x)
            }

            fn ger(
                alpha: Self,
                x: &ArrayView1<'_, Self>,
                y: &ArrayView1<'_, Self>,
                a: &mut ArrayViewMut2<'_, Self>,
            ) -> bool {
                crate::blas::$ger(alpha, x, y, a)
            }
        }
    };
}

element!(f32, cblas_saxpy, cblas_sscal, sger, dispatch_f32);
element!(f64, cblas_daxpy, cblas_dscal, dger, dispatch_f64);
