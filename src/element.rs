//! The float types the crate computes in.

use ndarray::LinalgScalar;
use num_traits::Float;
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
    LinalgScalar + Float + Send + Sync + Debug + Display + Default + sealed::Sealed + 'static
{
    /// `"f32"` or `"f64"`, for reports and benchmark IDs.
    const NAME: &'static str;

    /// Rounds an `f64` to this type (exact for `f64`).
    fn from_f64(v: f64) -> Self;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(v: f64) -> Self {
        v
    }
}
