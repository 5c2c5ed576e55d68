//! The thread policy: which threads run on the cores, and how a training loop keeps the
//! hand-offs between them cheap.
//!
//! - **OpenBLAS's own pthreads** run every GEMM, GEMV and GER that the small-batch engine does
//!   not take (their number: [`crate::blas::set_openblas_threads`], or `OPENBLAS_NUM_THREADS`).
//! - **rayon's global pool** runs the small-batch engine ([`crate::xsmm`]: libxsmm kernels, one
//!   block of each output per thread) and the bias reduction above its cutoff
//!   ([`crate::reduce`]); its size is `RAYON_NUM_THREADS` or the number of cores.
//!
//! One product never uses both: the engine calls no BLAS, and OpenBLAS's GEMMs run on the calling
//! thread and OpenBLAS's workers. The two pools do meet in a network whose layers fall on both
//! sides of the engine's cutoffs: OpenBLAS's workers keep spinning for a while after a call, and
//! rayon's workers after theirs, each taking a core the other wants (measured in the README,
//! "Threads").
//!
//! A parallel region started from outside rayon's pool must wake the pool's workers (a futex
//! wake and a context switch, 10–40 µs on these machines, several times per layer step), and
//! rayon's job queue for such outside calls allocates a block every 63 calls. From a thread of
//! the pool the same region is a `rayon::join`: the calling thread works on one half at once.
//! So [`Affine`](crate::Affine) enters the pool once per `forward`/`backward` where the engine
//! runs, and a training loop does best to run entirely inside it, through [`run`]:
//!
//! ```
//! use affine_blas::{threads, Affine, Init};
//! use ndarray::Array2;
//!
//! let mut layer = Affine::<f32>::new(512, 256, Init::He, 1)?;
//! let x = Array2::<f32>::ones((32, 512));
//! let g = Array2::<f32>::ones((32, 256));
//! threads::run(|| -> affine_blas::Result<()> {
//!     for _ in 0..3 {
//!         layer.forward(x.view())?;
//!         layer.backward(g.view())?;
//!     }
//!     Ok(())
//! })?;
//! # Ok::<(), affine_blas::AffineError>(())
//! ```

/// Runs `f` on a thread of rayon's global pool (at once, on the calling thread, if that is
/// already one), and returns its result. Panics in `f` propagate to the caller.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// As [`run`] where `engine` is true (the small-batch engine will run), else `f()` here.
pub(crate) fn run_if<R: Send>(engine: bool, f: impl FnOnce() -> R + Send) -> R {
    if engine {
        run(f)
    } else {
        f()
    }
}

/// Whether the calling thread is one of rayon's global pool.
pub fn in_pool() -> bool {
    rayon::current_thread_index().is_some()
}
