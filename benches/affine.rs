//! The throughput suite: forward, backward and the full step of the layer, f32 and f64, over the
//! grid of `affine_blas::workload::grid()`, each beside its raw-GEMM floor (the same GEMMs through
//! ndarray/OpenBLAS alone, on the same inputs) in the same run. Throughput is in FLOPs, so
//! criterion's "elem/s" reads as FLOP/s.
//!
//! Benchmark IDs: `{pass}_{dtype}_ob{OpenBLAS threads}_rayon{rayon threads}/{layer|floor}/{BxIxO}`.
//!
//! - `cargo bench --bench affine`: the full grid (≈ 12 minutes on 2 cores).
//! - `AFFINE_BENCH_QUICK=1 cargo bench --bench affine`: the quick grid with short timing
//!   (≈ 2 minutes).
//! - `AFFINE_BENCH_THREADS=N`: OpenBLAS and rayon threads (default: the available cores).
//! - `AFFINE_BENCH_PLOTS=1`: criterion's per-benchmark plots (off by default: they cost more
//!   time than the quick benchmarks themselves).
//!
//! Skipped, as one iteration takes over a second on 2 cores: at 2048×4096×4096 the f32 step and
//! the f64 backward and step.

use affine_blas::workload::{grid, over_a_second, quick_grid, Impl, Pass, Shape, Workload};
use affine_blas::{blas, Element};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::hint::black_box;
use std::time::Duration;

struct Settings {
    quick: bool,
    threads: usize,
}

fn settings() -> Settings {
    let threads = std::env::var("AFFINE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Settings {
        quick: std::env::var_os("AFFINE_BENCH_QUICK").is_some_and(|v| v != "0"),
        threads,
    }
}

fn suite(c: &mut Criterion) {
    let s = settings();
    blas::set_openblas_threads(s.threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(s.threads)
        .build()
        .expect("a rayon pool");
    eprintln!(
        "affine suite ({}): {}; OpenBLAS threads {}, rayon threads {}; git {}",
        if s.quick { "quick" } else { "full" },
        blas::openblas_config(),
        blas::openblas_threads(),
        pool.current_num_threads(),
        env!("AFFINE_BLAS_GIT_REV")
    );
    let shapes = if s.quick { quick_grid() } else { grid() };
    dtype::<f32>(c, &s, &pool, &shapes);
    dtype::<f64>(c, &s, &pool, &shapes);
}

/// Times every pass of every shape in `T`, each iteration run inside `pool` as a training loop
/// would (rayon's workers stay awake; see the README's thread policy).
fn dtype<T: Element>(c: &mut Criterion, s: &Settings, pool: &rayon::ThreadPool, shapes: &[Shape]) {
    let mut workloads: Vec<Workload<T>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &shape)| Workload::new(shape, i as u64).expect("grid shapes are valid"))
        .collect();
    for pass in Pass::ALL {
        let mut group = c.benchmark_group(format!(
            "{}_{}_ob{}_rayon{}",
            pass.name(),
            T::NAME,
            blas::openblas_threads(),
            pool.current_num_threads()
        ));
        group
            .sample_size(10)
            .nresamples(if s.quick { 2_000 } else { 10_000 });
        for wl in &mut workloads {
            let shape = wl.shape();
            if over_a_second::<T>(shape, pass) {
                continue;
            }
            let flops = shape.flops(pass);
            // rough time of one iteration at a third of the machine's peak
            let est = flops as f64 / if T::NAME == "f32" { 150e9 } else { 75e9 };
            let (warm, measure): (f64, f64) = if s.quick { (0.15, 0.35) } else { (0.3, 1.0) };
            group
                .throughput(Throughput::Elements(flops))
                .warm_up_time(Duration::from_secs_f64(warm))
                .measurement_time(Duration::from_secs_f64(measure.max(12.0 * est)))
                .sampling_mode(if est > 5e-3 {
                    SamplingMode::Flat
                } else {
                    SamplingMode::Auto
                });
            for imp in [Impl::Layer, Impl::Floor] {
                group.bench_function(BenchmarkId::new(imp.name(), shape), |b| {
                    pool.install(|| b.iter(|| black_box(wl.run(pass, imp))))
                });
            }
        }
        group.finish();
    }
}

/// Criterion's per-benchmark SVG plots cost more than a quick benchmark itself; they are drawn
/// only with `AFFINE_BENCH_PLOTS=1`.
fn config() -> Criterion {
    let c = Criterion::default();
    if std::env::var_os("AFFINE_BENCH_PLOTS").is_some_and(|v| v != "0") {
        c
    } else {
        c.without_plots()
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = suite
}
criterion_main!(benches);
