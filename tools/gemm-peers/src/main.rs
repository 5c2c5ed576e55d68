//! The layer's three products, `y = x·w`, `dx = g·wᵀ`, `dw = xᵀ·g` (row-major `x: (B, I)`,
//! `w: (I, O)`, `g: (B, O)`), timed on OpenBLAS through ndarray (what affine-blas runs), the
//! `gemm` crate (AVX-512 kernels) and faer, all on every core, into preallocated outputs.
//!
//! usage: gemm-peers BxIxO [f32|f64] [ROUNDS]
//!
//! Each round times every library in turn, so that the VM's drift (10–20 % over minutes) falls
//! on all of them alike; the summary is the median over rounds. Also counts the heap
//! allocations each call makes: affine-blas promises none in a steady-state step.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, LinalgScalar};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// Link affine-blas, and with it the system OpenBLAS that ndarray's `blas` feature calls.
use affine_blas as _;

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LIBS: [&str; 3] = ["openblas", "gemm", "faer"];
const PRODUCTS: [&str; 3] = ["y = x·w", "dx = g·wᵀ", "dw = xᵀ·g"];

trait Scalar: LinalgScalar + faer::traits::ComplexField + From<f32> + Send + Sync {}
impl Scalar for f32 {}
impl Scalar for f64 {}

struct Operands<T> {
    x: Array2<T>,
    w: Array2<T>,
    g: Array2<T>,
    y: Array2<T>,
    dx: Array2<T>,
    dw: Array2<T>,
}

fn fill<T: Scalar>(rows: usize, cols: usize, seed: usize) -> Array2<T> {
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        T::from(((r * cols + c) * seed % 97) as f32 * 0.001 - 0.05)
    })
}

fn call<T: Scalar>(lib: &str, product: usize, o: &mut Operands<T>, threads: usize) {
    let (b, i) = o.x.dim();
    let out = o.w.ncols();
    let (one, zero) = (T::from(1.0), T::from(0.0));
    match lib {
        "openblas" => match product {
            0 => general_mat_mul(one, &o.x, &o.w, zero, &mut o.y),
            1 => general_mat_mul(one, &o.g, &o.w.t(), zero, &mut o.dx),
            _ => general_mat_mul(one, &o.x.t(), &o.g, zero, &mut o.dw),
        },
        "faer" => {
            let par = Par::rayon(threads);
            let x = MatRef::from_row_major_slice(o.x.as_slice().unwrap(), b, i);
            let w = MatRef::from_row_major_slice(o.w.as_slice().unwrap(), i, out);
            let g = MatRef::from_row_major_slice(o.g.as_slice().unwrap(), b, out);
            match product {
                0 => {
                    let y = MatMut::from_row_major_slice_mut(o.y.as_slice_mut().unwrap(), b, out);
                    matmul(y, Accum::Replace, x, w, one, par)
                }
                1 => {
                    let dx = MatMut::from_row_major_slice_mut(o.dx.as_slice_mut().unwrap(), b, i);
                    matmul(dx, Accum::Replace, g, w.transpose(), one, par)
                }
                _ => {
                    let dw = MatMut::from_row_major_slice_mut(o.dw.as_slice_mut().unwrap(), i, out);
                    matmul(dw, Accum::Replace, x.transpose(), g, one, par)
                }
            }
        }
        _ => {
            let par = gemm::Parallelism::Rayon(threads);
            let (ii, oi) = (i as isize, out as isize);
            // Arguments: m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs,
            // rhs_cs, rhs_rs, alpha (on dst), beta (on the product), conj flags, parallelism.
            let (dst, m, n, k, dcs, drs, lhs, lcs, lrs, rhs, rcs, rrs) = match product {
                0 => (
                    o.y.as_mut_ptr(),
                    b,
                    out,
                    i,
                    1,
                    oi,
                    o.x.as_ptr(),
                    1,
                    ii,
                    o.w.as_ptr(),
                    1,
                    oi,
                ),
                1 => (
                    o.dx.as_mut_ptr(),
                    b,
                    i,
                    out,
                    1,
                    ii,
                    o.g.as_ptr(),
                    1,
                    oi,
                    o.w.as_ptr(),
                    oi,
                    1,
                ),
                _ => (
                    o.dw.as_mut_ptr(),
                    i,
                    out,
                    b,
                    1,
                    oi,
                    o.x.as_ptr(),
                    ii,
                    1,
                    o.g.as_ptr(),
                    1,
                    oi,
                ),
            };
            // SAFETY: every pointer is into a live, contiguous row-major array of the shape the
            // strides describe (m × n for dst, m × k for lhs, k × n for rhs), dst is not aliased
            // by lhs or rhs, and nothing else touches them during the call.
            unsafe {
                gemm::gemm(
                    m, n, k, dst, dcs, drs, false, lhs, lcs, lrs, rhs, rcs, rrs, zero, one, false,
                    false, false, par,
                )
            }
        }
    }
}

/// Median seconds per call and allocations per call, over at least 5 calls and 0.2 s.
fn time<T: Scalar>(lib: &str, product: usize, o: &mut Operands<T>, threads: usize) -> (f64, f64) {
    call(lib, product, o, threads);
    let mut samples = Vec::with_capacity(4096);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut calls = 0usize;
    while calls < 5 || (start.elapsed() < Duration::from_millis(200) && calls < 4000) {
        let t = Instant::now();
        call(lib, product, o, threads);
        samples.push(t.elapsed().as_secs_f64());
        calls += 1;
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        allocations as f64 / calls as f64,
    )
}

fn run<T: Scalar>(b: usize, i: usize, out: usize, rounds: usize) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut o = Operands {
        x: fill::<T>(b, i, 3),
        w: fill::<T>(i, out, 5),
        g: fill::<T>(b, out, 7),
        y: Array2::zeros((b, out)),
        dx: Array2::zeros((b, i)),
        dw: Array2::zeros((i, out)),
    };
    let flops = 2.0 * (b * i * out) as f64;
    // gflops[lib][product] over rounds
    let mut gflops = vec![vec![Vec::new(); 3]; LIBS.len()];
    let mut allocs = vec![vec![0.0; 3]; LIBS.len()];
    for round in 0..rounds {
        for (l, lib) in LIBS.iter().enumerate() {
            let mut line = format!("round {round} {lib:>8}:");
            for p in 0..3 {
                let (s, a) = time(lib, p, &mut o, threads);
                gflops[l][p].push(flops / s * 1e-9);
                allocs[l][p] = a;
                line += &format!("  {} {:6.1}", PRODUCTS[p], flops / s * 1e-9);
            }
            println!("{line}  GFLOP/s");
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{} {b}x{i}x{out}, {threads} threads, median of {rounds} rounds (GFLOP/s, vs OpenBLAS, heap allocations per call):",
        std::any::type_name::<T>()
    );
    for (l, lib) in LIBS.iter().enumerate() {
        let mut line = format!("{lib:>8}:");
        for p in 0..3 {
            let g = median(&gflops[l][p]);
            line += &format!(
                "  {} {g:6.1} ({:.2}x, {:.1} alloc)",
                PRODUCTS[p],
                g / median(&gflops[0][p]),
                allocs[l][p]
            );
        }
        println!("{line}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gemm-peers BxIxO [f32|f64] [ROUNDS]";
    let dims: Vec<usize> = args
        .get(1)
        .map(|s| s.split('x').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    if dims.len() != 3 || dims.contains(&0) {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let rounds = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(3);
    match args.get(2).map_or("f32", String::as_str) {
        "f32" => run::<f32>(dims[0], dims[1], dims[2], rounds),
        "f64" => run::<f64>(dims[0], dims[1], dims[2], rounds),
        d => {
            eprintln!("{d:?} is not f32 or f64\n{usage}");
            std::process::exit(2);
        }
    }
}
