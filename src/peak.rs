//! The machine's measured floating-point peak, so that reports can give each pass's speed as a
//! share of it (built with the `report` feature).
//!
//! The kernel is C (`csrc/fma_peak.c`): 16 independent chains of vector FMAs, the widest the CPU
//! has (AVX-512, AVX2+FMA, or scalar), chosen at run time. It runs on `threads` threads at once;
//! the peak is the best total rate over a few short repeats.

use std::os::raw::c_int;
use std::time::{Duration, Instant};

mod ffi {
    use std::os::raw::c_int;
    extern "C" {
        pub fn affine_fma_width() -> c_int;
        pub fn affine_fma_run(double_precision: c_int, iters: u64, sink: *mut f64) -> f64;
    }
}

/// A measured peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// f32 FMA throughput of all threads together, GFLOP/s.
    pub f32_gflops: f64,
    /// f64 FMA throughput of all threads together, GFLOP/s.
    pub f64_gflops: f64,
    /// Vector width of the kernel that ran: 512, 256, or 0 (scalar).
    pub vector_bits: u32,
    /// Threads that ran it.
    pub threads: usize,
}

impl Peak {
    /// The peak for a dtype named `"f32"` or `"f64"`.
    pub fn gflops(&self, dtype: &str) -> f64 {
        if dtype == "f32" {
            self.f32_gflops
        } else {
            self.f64_gflops
        }
    }
}

/// FLOPs of `iters` rounds of the kernel on the calling thread.
fn run(double_precision: bool, iters: u64) -> f64 {
    let mut sink = 0.0f64;
    // SAFETY: the C function only writes one f64 through `sink`, a valid exclusive pointer.
    let flops = unsafe { ffi::affine_fma_run(c_int::from(double_precision), iters, &mut sink) };
    std::hint::black_box(sink);
    flops
}

/// One thread's rate (FLOP/s) over `budget`, in calls of about 10 ms.
fn rate(double_precision: bool, budget: Duration) -> f64 {
    let mut iters = 1_000u64;
    // calibrate: grow until one call takes ≥ 10 ms
    loop {
        let t = Instant::now();
        run(double_precision, iters);
        if t.elapsed() >= Duration::from_millis(10) || iters > 1 << 40 {
            break;
        }
        iters *= 4;
    }
    let start = Instant::now();
    let mut flops = 0.0;
    while start.elapsed() < budget {
        flops += run(double_precision, iters);
    }
    flops / start.elapsed().as_secs_f64()
}

/// The total rate of `threads` threads running the kernel at once, best of `repeats`.
fn total_rate(double_precision: bool, threads: usize, repeats: usize, each: Duration) -> f64 {
    (0..repeats)
        .map(|_| {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| s.spawn(move || rate(double_precision, each)))
                    .collect();
                hs.into_iter().filter_map(|h| h.join().ok()).sum::<f64>()
            })
        })
        .fold(0.0, f64::max)
}

/// Measures the f32 and f64 peak of `threads` threads (about `6 × each` of wall time).
pub fn measure(threads: usize, each: Duration) -> Peak {
    let threads = threads.max(1);
    // SAFETY: FFI call without arguments that reads CPUID.
    let width = unsafe { ffi::affine_fma_width() };
    Peak {
        f32_gflops: total_rate(false, threads, 3, each) / 1e9,
        f64_gflops: total_rate(true, threads, 3, each) / 1e9,
        vector_bits: u32::try_from(width).unwrap_or(0),
        threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_reports_the_flops_of_its_width() {
        // SAFETY: as in `measure`.
        let width = unsafe { ffi::affine_fma_width() };
        // 2 FLOPs per lane per FMA; 16 vector chains, or 8 scalar ones
        let (f32_per_iter, f64_per_iter) = match width {
            512 => (2.0 * 16.0 * 16.0, 2.0 * 8.0 * 16.0),
            256 => (2.0 * 8.0 * 16.0, 2.0 * 4.0 * 16.0),
            _ => (2.0 * 8.0, 2.0 * 8.0),
        };
        assert_eq!(run(false, 1000), 1000.0 * f32_per_iter);
        assert_eq!(run(true, 1000), 1000.0 * f64_per_iter);
        let p = measure(1, Duration::from_millis(20));
        assert!(p.f32_gflops > 0.0 && p.f64_gflops > 0.0, "{p:?}");
        assert_eq!(p.vector_bits, u32::try_from(width).unwrap());
    }
}
