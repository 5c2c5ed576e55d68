//! The thread policy: which threads run on the cores, and how a training loop keeps the
//! hand-offs between them cheap.
//!
//! - **OpenBLAS's own pthreads** run every GEMM, GEMV and GER that the small-batch engine does
//!   not take (their number: [`crate::blas::set_openblas_threads`], or `OPENBLAS_NUM_THREADS`).
//! - **rayon's global pool** runs the small-batch engine ([`crate::xsmm`]: libxsmm kernels, one
//!   block of each output per thread), the bias reduction above its cutoff ([`crate::reduce`])
//!   and, at batch 1, the outer product `dw = xᵀ·grad` of a `dw` of 2 MiB or more
//!   ([`crate::backward::OUTER_PARALLEL_MIN_BYTES`]); its size is `RAYON_NUM_THREADS` or the
//!   number of cores.
//!
//! One product never uses both: the engine calls no BLAS, and OpenBLAS's GEMMs run on the calling
//! thread and OpenBLAS's workers (a large batch-1 backward uses one after the other: OpenBLAS's
//! GEMV for `dx`, then rayon's threads for `dw`). The two pools do meet in a network whose layers fall on both
//! sides of the engine's cutoffs: OpenBLAS's workers keep spinning for a while after a call, and
//! rayon's workers after theirs, each taking a core the other wants (measured in the README,
//! "Threads").
//!
//! A parallel region started from outside rayon's pool must wake the pool's workers (a futex
//! wake and a context switch, 10–40 µs on these machines, several times per layer step), and
//! rayon's job queue for such outside calls allocates a block every 63 calls. From a thread of
//! the pool the same region is a `rayon::join`: the calling thread works on one half at once.
//! So [`Affine`](crate::Affine) enters the pool once per `forward`/`backward` where the engine
//! splits a product across threads ([`crate::xsmm::parallel`]; a narrow layer's small products
//! run on the calling thread and need no pool) or the batch-1 outer product does, and a training loop does best to run entirely
//! inside it, through [`run`]:
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

use std::os::raw::c_int;

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

/// OpenBLAS's idle workers spin for `2^OPENBLAS_SPIN_LOG2` TSC cycles after a call before they
/// sleep (about 25 µs at 2.6 GHz) where the crate sets it: OpenBLAS's default, `2^28` cycles
/// (about 0.1 s), keeps a core busy long after OpenBLAS's last call, and rayon's workers running
/// the small-batch engine then share that core. Measured here (`affine-bench`, layer and its
/// OpenBLAS floor in alternating samples): the engine's step at 128 × 1024 × 1024 took 1.06–1.10×
/// the OpenBLAS floor with the default and 0.55–0.59× with `2^16`; OpenBLAS's own GEMMs measured
/// the same with both (README, "Threads").
pub const OPENBLAS_SPIN_LOG2: u32 = 16;

/// What the crate did to OpenBLAS's idle spin (see [`OPENBLAS_SPIN_LOG2`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spin {
    /// Left at OpenBLAS's default: the small-batch engine is off, or the library lacks the
    /// functions to change it.
    Default,
    /// The user set `OPENBLAS_THREAD_TIMEOUT` (its value here, as OpenBLAS clamps it to 4..=30).
    UserSet(u32),
    /// Shortened to `2^n` cycles.
    Shortened(u32),
}

impl std::fmt::Display for Spin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spin::Default => write!(f, "OpenBLAS default (2^28 cycles)"),
            Spin::UserSet(n) => write!(f, "2^{n} cycles (OPENBLAS_THREAD_TIMEOUT)"),
            Spin::Shortened(n) => write!(f, "2^{n} cycles (set by affine-blas)"),
        }
    }
}

const TIMEOUT_VAR: &str = "OPENBLAS_THREAD_TIMEOUT";

/// Shortens OpenBLAS's idle spin to [`OPENBLAS_SPIN_LOG2`] where the small-batch engine is on
/// and the user has not set `OPENBLAS_THREAD_TIMEOUT`, once per process (the crate does this
/// before its first BLAS call); returns what was done. Like the kernel choice
/// ([`crate::blas::ensure_best_kernels`]) it restarts OpenBLAS's thread pool, so it must not
/// race with BLAS calls made outside the crate: call it first in `main` if you make such calls.
pub fn openblas_spin() -> Spin {
    static SPIN: std::sync::OnceLock<Spin> = std::sync::OnceLock::new();
    *SPIN.get_or_init(shorten_spin)
}

fn shorten_spin() -> Spin {
    if let Ok(v) = std::env::var(TIMEOUT_VAR) {
        if let Ok(n) = v.trim().parse::<u32>() {
            if n > 0 {
                return Spin::UserSet(n.clamp(4, 30));
            }
        }
    }
    if !crate::xsmm::enabled() {
        return Spin::Default;
    }
    let (Some(read_env), Some(shutdown)) = (
        crate::kernels::find_symbol(c"openblas_read_env"),
        crate::kernels::find_symbol(c"blas_thread_shutdown_"),
    ) else {
        return Spin::Default;
    };
    // SAFETY: OpenBLAS's `void openblas_read_env(void)` (openblas_env.c) and
    // `int blas_thread_shutdown_(void)` (blas_server.c), found by name in the loaded library.
    let (read_env, shutdown) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(read_env),
            std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn() -> c_int>(shutdown),
        )
    };
    // OpenBLAS reads the timeout from the environment into a variable that its thread pool reads
    // when it starts: set the variable for the moment, have OpenBLAS re-read it, and stop the
    // pool, which its next multi-threaded call starts again with the new timeout.
    std::env::set_var(TIMEOUT_VAR, OPENBLAS_SPIN_LOG2.to_string());
    // SAFETY: FFI calls without arguments. The caller runs before any BLAS call of the crate,
    // so no OpenBLAS job is in flight; shutdown joins idle workers, and OpenBLAS restarts its
    // pool on demand (it does the same around fork()).
    unsafe {
        read_env();
        shutdown();
    }
    std::env::remove_var(TIMEOUT_VAR);
    Spin::Shortened(OPENBLAS_SPIN_LOG2)
}
