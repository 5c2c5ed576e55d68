//! Proof that every GEMM of the crate reaches BLAS, whatever the operands' layouts.
//!
//! This test binary defines `cblas_sgemm` and `cblas_dgemm` itself. The linker resolves ndarray's
//! calls to these definitions (an executable's own symbols take precedence over a shared
//! library's), which count the call on the calling thread and forward it to OpenBLAS's real
//! function, found with `dlsym(RTLD_NEXT, …)`. ndarray's pure-Rust fallback makes no such call,
//! so a count of zero exposes a silent slow path.

mod common;

use affine_blas::{backward_into, forward_into, Accum, Affine};
use common::{Laid, LAYOUTS};
use ndarray::{linalg::general_mat_mul, s, Array1, Array2};
use std::cell::Cell;
use std::os::raw::{c_double, c_float, c_int, c_void};
use std::sync::OnceLock;

thread_local! {
    static GEMM_CALLS: Cell<usize> = const { Cell::new(0) };
}

type Sgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_float,
    *const c_float,
    c_int,
    *const c_float,
    c_int,
    c_float,
    *mut c_float,
    c_int,
);
type Dgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_double,
    *const c_double,
    c_int,
    *const c_double,
    c_int,
    c_double,
    *mut c_double,
    c_int,
);

fn next_symbol(name: &'static [u8]) -> *mut c_void {
    // A real reference to OpenBLAS, so the linker keeps libopenblas as a needed library even
    // though this binary defines the two GEMM symbols itself.
    assert!(affine_blas::blas::openblas_config().contains("OpenBLAS"));
    // SAFETY: `name` is a NUL-terminated literal; RTLD_NEXT searches the libraries loaded after
    // this executable, i.e. OpenBLAS, and returns null if the symbol is absent (checked below).
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    assert!(
        !p.is_null(),
        "real {} not found",
        String::from_utf8_lossy(name)
    );
    p
}

fn real_sgemm() -> Sgemm {
    static REAL: OnceLock<usize> = OnceLock::new();
    let p = *REAL.get_or_init(|| next_symbol(b"cblas_sgemm\0") as usize);
    // SAFETY: p is OpenBLAS's cblas_sgemm, whose C signature is Sgemm (enums passed as int).
    unsafe { std::mem::transmute::<usize, Sgemm>(p) }
}

fn real_dgemm() -> Dgemm {
    static REAL: OnceLock<usize> = OnceLock::new();
    let p = *REAL.get_or_init(|| next_symbol(b"cblas_dgemm\0") as usize);
    // SAFETY: p is OpenBLAS's cblas_dgemm, whose C signature is Dgemm.
    unsafe { std::mem::transmute::<usize, Dgemm>(p) }
}

/// Counts, then forwards to OpenBLAS.
///
/// # Safety
/// Same contract as cblas_sgemm.
#[no_mangle]
pub unsafe extern "C" fn cblas_sgemm(
    layout: c_int,
    ta: c_int,
    tb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: c_float,
    a: *const c_float,
    lda: c_int,
    b: *const c_float,
    ldb: c_int,
    beta: c_float,
    c: *mut c_float,
    ldc: c_int,
) {
    GEMM_CALLS.with(|n| n.set(n.get() + 1));
    // SAFETY: arguments passed through unchanged from a caller bound by the same contract.
    unsafe { real_sgemm()(layout, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) }
}

/// Counts, then forwards to OpenBLAS.
///
/// # Safety
/// Same contract as cblas_dgemm.
#[no_mangle]
pub unsafe extern "C" fn cblas_dgemm(
    layout: c_int,
    ta: c_int,
    tb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: c_double,
    a: *const c_double,
    lda: c_int,
    b: *const c_double,
    ldb: c_int,
    beta: c_double,
    c: *mut c_double,
    ldc: c_int,
) {
    GEMM_CALLS.with(|n| n.set(n.get() + 1));
    // SAFETY: arguments passed through unchanged from a caller bound by the same contract.
    unsafe { real_dgemm()(layout, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) }
}

fn calls<R>(f: impl FnOnce() -> R) -> (usize, R) {
    GEMM_CALLS.with(|n| n.set(0));
    let r = f();
    (GEMM_CALLS.with(|n| n.get()), r)
}

#[test]
fn the_counter_sees_blas_and_ndarray_fallbacks() {
    let a = Array2::<f32>::ones((32, 24));
    let b = Array2::<f32>::ones((24, 16));
    let mut c = Array2::<f32>::zeros((32, 16));
    let (n, _) = calls(|| general_mat_mul(1.0, &a, &b, 0.0, &mut c));
    assert_eq!(n, 1, "a plain row-major product must reach cblas_sgemm");
    assert!(c.iter().all(|&v| v == 24.0));
    // every other column: ndarray silently takes its pure-Rust loop
    let wide = Array2::<f32>::ones((32, 48));
    let (n, _) = calls(|| general_mat_mul(1.0, &wide.slice(s![.., ..;2]), &b, 0.0, &mut c));
    assert_eq!(n, 0, "expected ndarray's fallback for a strided operand");
}

#[test]
fn every_layout_reaches_blas() {
    for &lx in &LAYOUTS {
        for &lo in &LAYOUTS {
            let (batch, inp, out) = (33, 40, 24);
            let x = common::random::<f64>(batch, inp, 1);
            let w = common::random::<f64>(inp, out, 2);
            let g = common::random::<f64>(batch, out, 3);
            let b = Array1::<f64>::zeros(out);
            let (lx_, lw, lg) = (Laid::new(&x, lx), Laid::new(&w, lo), Laid::new(&g, lx));
            let mut y = Laid::new(&Array2::zeros((batch, out)), lo);
            let (n, r) = calls(|| forward_into(lx_.view(), lw.view(), b.view(), y.view_mut()));
            r.unwrap();
            assert_eq!(n, 1, "forward, x {lx:?}, w/y {lo:?}");
            let mut dx = Laid::new(&Array2::zeros((batch, inp)), lo);
            let mut dw = Laid::new(&Array2::zeros((inp, out)), lo);
            let mut db = Array1::zeros(out);
            let (n, r) = calls(|| {
                backward_into(
                    lx_.view(),
                    lw.view(),
                    lg.view(),
                    Some(dx.view_mut()),
                    dw.view_mut(),
                    db.view_mut(),
                    Accum::Replace,
                )
            });
            r.unwrap();
            assert_eq!(n, 2, "backward, x/grad {lx:?}, w/outputs {lo:?}");
        }
    }
}

#[test]
fn a_layer_step_is_three_gemms() {
    let mut l = Affine::<f32>::new(64, 48, affine_blas::Init::He, 3).unwrap();
    let x = common::random::<f32>(40, 128, 4);
    let g = common::random::<f32>(40, 48, 5);
    // the input as every other column of a wider matrix: copied into the cache, then BLAS
    let (n, r) = calls(|| l.forward(x.slice(s![.., ..;2])).map(|y| y.dim()));
    assert_eq!((n, r.unwrap()), (1, (40, 48)));
    let (n, r) = calls(|| l.backward(g.t().as_standard_layout().t()).map(|d| d.dim()));
    assert_eq!((n, r.unwrap()), (2, (40, 64)));
}
