//! The bias-gradient reduction (`db = Σ_batch grad`): serial against rayon's chunk split, called
//! from the main thread and from inside rayon's pool, beside BLAS gemv with a ones vector, across
//! sizes. Its crossover sets `affine_blas::reduce::PAR_CUTOFF_ELEMENTS`.
//!
//! `cargo bench --bench reduce` (about 3 minutes).

use affine_blas::reduce::{sum_rows_into, Par};
use affine_blas::Accum;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::linalg::general_mat_vec_mul;
use ndarray::{Array1, Array2};
use std::hint::black_box;
use std::time::Duration;

const SHAPES: [(usize, usize); 9] = [
    (32, 1024),
    (128, 1024),
    (512, 1024),
    (1024, 1024),
    (2048, 1024),
    (4096, 1024),
    (8192, 1024),
    (16384, 1024),
    (2048, 4096),
];

fn reduce(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group(format!("reduce_f32_rayon{threads}"));
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    for &(rows, cols) in &SHAPES {
        let g =
            Array2::<f32>::from_shape_fn((rows, cols), |(i, j)| ((i * 31 + j) % 97) as f32 * 0.01);
        let mut db = Array1::<f32>::zeros(cols);
        group.throughput(Throughput::Elements((rows * cols) as u64));
        let id = format!("{rows}x{cols}");
        for (name, par) in [("seq", Par::Seq), ("rayon", Par::Rayon)] {
            group.bench_function(BenchmarkId::new(format!("{name}_main"), &id), |b| {
                b.iter(|| sum_rows_into(black_box(g.view()), db.view_mut(), Accum::Replace, par))
            });
            group.bench_function(BenchmarkId::new(format!("{name}_in_pool"), &id), |b| {
                pool.install(|| {
                    b.iter(|| {
                        sum_rows_into(black_box(g.view()), db.view_mut(), Accum::Replace, par)
                    })
                })
            });
        }
        let ones = Array1::<f32>::ones(rows);
        group.bench_function(BenchmarkId::new("gemv_ones_main", &id), |b| {
            b.iter(|| general_mat_vec_mul(1.0, &black_box(g.t()), &ones, 0.0, &mut db))
        });
    }
    group.finish();
}

criterion_group!(benches, reduce);
criterion_main!(benches);
