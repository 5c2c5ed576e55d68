//! A BLAS spy for the integration tests: this module defines `cblas_?gemm`, `cblas_?gemv` and
//! `cblas_?ger` itself. The linker resolves ndarray's and the crate's calls to these definitions
//! (an executable's own symbols take precedence over a shared library's), which count the call on
//! the calling thread and forward it to OpenBLAS's own function, found with
//! `dlsym(RTLD_NEXT, …)`. ndarray's pure-Rust fallback makes no such call, so a count of zero
//! exposes a silent slow path.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::sync::OnceLock;

thread_local! {
    /// Calls of (gemm, gemv, ger) on this thread.
    static CALLS: Cell<[usize; 3]> = const { Cell::new([0; 3]) };
}

fn count(kind: usize) {
    CALLS.with(|c| {
        let mut v = c.get();
        v[kind] += 1;
        c.set(v);
    });
}

fn real(name: &'static [u8], cache: &'static OnceLock<usize>) -> usize {
    *cache.get_or_init(|| {
        // keeps libopenblas a needed library although this binary defines these symbols
        assert!(affine_blas::blas::openblas_config().contains("OpenBLAS"));
        // SAFETY: `name` is a NUL-terminated literal; RTLD_NEXT searches the libraries loaded
        // after this executable (OpenBLAS) and returns null if the symbol is absent (checked).
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
        assert!(
            !p.is_null(),
            "real {} not found",
            String::from_utf8_lossy(name)
        );
        p as usize
    })
}

/// Defines a counting `extern "C"` BLAS function that forwards to OpenBLAS's own.
macro_rules! interpose {
    ($name:ident, $kind:expr, ($($arg:ident: $ty:ty),*)) => {
        /// Counts, then forwards to OpenBLAS.
        ///
        /// # Safety
        /// The contract of the BLAS function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) {
            static REAL: OnceLock<usize> = OnceLock::new();
            count($kind);
            let p = real(concat!(stringify!($name), "\0").as_bytes(), &REAL);
            // SAFETY: p is OpenBLAS's function of this name, whose C signature this is.
            let f = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn($($ty),*)>(p) };
            // SAFETY: the arguments pass through unchanged from a caller bound by its contract.
            unsafe { f($($arg),*) }
        }
    };
}

type I = c_int;
type P = *const c_void;
type M = *mut c_void;
interpose!(cblas_sgemm, 0, (o: I, ta: I, tb: I, m: I, n: I, k: I, al: f32, a: P, lda: I, b: P, ldb: I, be: f32, c: M, ldc: I));
interpose!(cblas_dgemm, 0, (o: I, ta: I, tb: I, m: I, n: I, k: I, al: f64, a: P, lda: I, b: P, ldb: I, be: f64, c: M, ldc: I));
interpose!(cblas_sgemv, 1, (o: I, t: I, m: I, n: I, al: f32, a: P, lda: I, x: P, incx: I, be: f32, y: M, incy: I));
interpose!(cblas_dgemv, 1, (o: I, t: I, m: I, n: I, al: f64, a: P, lda: I, x: P, incx: I, be: f64, y: M, incy: I));
interpose!(cblas_sger, 2, (o: I, m: I, n: I, al: f32, x: P, incx: I, y: P, incy: I, a: M, lda: I));
interpose!(cblas_dger, 2, (o: I, m: I, n: I, al: f64, x: P, incx: I, y: P, incy: I, a: M, lda: I));

/// Runs `f` and returns the calls of (gemm, gemv, ger) it made on this thread.
pub fn calls(f: impl FnOnce()) -> [usize; 3] {
    CALLS.with(|c| c.set([0; 3]));
    f();
    CALLS.with(|c| c.get())
}
