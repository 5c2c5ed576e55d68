//! # affine-blas
//!
//! An affine (dense, fully connected) layer on the CPU, computed by OpenBLAS through `ndarray`.
//!
//! With `x: (batch, in)`, `w: (in, out)`, `b: (out)` and the upstream gradient
//! `grad = ∂L/∂y: (batch, out)`:
//!
//! | pass | formula | shape | how |
//! |---|---|---|---|
//! | forward | `y = x·w + b` | `(batch, out)` | `y ← b` per row, then one GEMM with β = 1 |
//! | backward | `dx = grad·wᵀ` | `(batch, in)` | one GEMM, `wᵀ` a view (`Trans` flag) |
//! | backward | `dw = xᵀ·grad` | `(in, out)` | one GEMM, `xᵀ` a view; β = 1 accumulates |
//! | backward | `db = Σ_batch grad` | `(out)` | deterministic column sum, rayon above a cutoff |
//!
//! Each GEMM is OpenBLAS's, except at small batch, where the [`xsmm`] engine (libxsmm's JIT
//! kernels, split across rayon's threads) measured faster and takes it; [`threads`] says which
//! threads run where and how a training loop keeps the hand-offs cheap.
//!
//! Two levels:
//! - stateless kernels that write into caller buffers and allocate nothing:
//!   [`forward_into`], [`backward_into`], [`reduce::sum_rows_into`];
//! - the [`Affine`] layer, which owns `w`, `b`, their gradients and the cached input, like the
//!   numpy notebook it comes from (`param`, `grad_param`); it folds the bias into the GEMMs
//!   (`[x, 1]·[w; b]`, `[dw; db] = [x, 1]ᵀ·grad`).
//!
//! Both work in `f32` and `f64` ([`Element`]). Bad shapes give an [`AffineError`] naming every
//! shape involved, and leave outputs and layer state untouched.

// Links the BLAS implementation that ndarray's `blas` feature calls (OpenBLAS).
extern crate blas_src;

pub mod backward;
pub mod blas;
#[cfg(feature = "mpi")]
pub mod dist;
mod element;
mod error;
pub mod forward;
mod init;
pub mod kernels;
mod layer;
mod npy;
pub mod optim;
#[cfg(feature = "report")]
pub mod peak;
pub mod reduce;
pub mod threads;
pub mod workload;
pub mod xsmm;

pub use backward::{backward_into, Accum};
pub use element::Element;
pub use error::{AffineError, Result};
pub use forward::forward_into;
pub use init::Init;
pub use layer::{Affine, GradParams, Params};
pub use npy::WeightLayout;
pub use optim::{Sgd, SgdConfig};

// The README's usage snippet runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
