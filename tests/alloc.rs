//! Zero heap allocations in steady state: the `_into` kernels, a warmed-up `Affine` and the SGD
//! optimiser, counted by a global allocator. (OpenBLAS's own buffers come from its start-up, not from these calls.)
//!
//! One test function, so that no other test of this binary allocates while it counts.

mod common;

use affine_blas::{backward_into, forward_into, Accum, Affine, Init, Sgd, SgdConfig};
use common::random;
use ndarray::{s, Array1, Array2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's arguments unchanged;
// counting has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller upholds `alloc`'s contract, which System's shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc/realloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: as for dealloc; `new_size` is the caller's, under realloc's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f`, after running it once to warm up.
fn steady_allocations(mut f: impl FnMut()) -> usize {
    f();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..5 {
        f();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Allocations of a warmed-up `Affine` (`in × out`) stepping at `batch` inside rayon's pool.
fn pool_step_allocations<T: affine_blas::Element>(batch: usize, inp: usize, out: usize) -> usize {
    let mut l = Affine::<T>::new(inp, out, Init::He, 3).unwrap();
    let (x, g) = (random::<T>(batch, inp, 4), random::<T>(batch, out, 5));
    affine_blas::threads::run(|| {
        steady_allocations(|| {
            l.forward(x.view()).unwrap();
            l.backward(g.view()).unwrap();
        })
    })
}

#[test]
fn steady_state_allocates_nothing() {
    // the counter sees the one path that must allocate: an operand BLAS cannot read is copied
    let wide = random::<f32>(8, 40, 1);
    let w = random::<f32>(20, 6, 2);
    let b = Array1::<f32>::zeros(6);
    let mut y = Array2::<f32>::zeros((8, 6));
    let copies = steady_allocations(|| {
        forward_into(wide.slice(s![.., ..;2]), w.view(), b.view(), y.view_mut()).unwrap()
    });
    assert!(copies > 0, "the counting allocator saw nothing");

    // kernels: small, medium, over one reduction chunk (600 rows), batch-1 slices whose
    // length-1 axis ndarray gives stride 0, below and above the GEMV cutoff of OpenBLAS's
    // AVX-512 cores, and narrow layers the engine runs on one thread (37 × 64 × 64) or splits
    // (600 × 20 × 1100); inside rayon's pool (from outside it rayon's job queue allocates now
    // and then: see the end) (every worker of the pool started first: a starting thread allocates, and the counter
    // counts every thread)
    rayon::broadcast(|_| ());
    affine_blas::threads::run(kernel_allocations);

    // a narrow layer the engine runs on the calling thread never enters the pool: nothing to
    // allocate from outside it either
    let mut l = Affine::<f32>::new(64, 64, Init::He, 3).unwrap();
    let (x, g) = (random::<f32>(37, 64, 4), random::<f32>(37, 64, 5));
    let narrow = steady_allocations(|| {
        l.forward(x.view()).unwrap();
        l.backward(g.view()).unwrap();
    });
    assert_eq!(narrow, 0, "narrow engine steps from outside the pool");

    // an f64 layer at a batch the engine splits by rows (dw summed per thread in scratch); the
    // same in f32 at a batch the engine takes where both sides run AVX2 or on Zen 4
    // (OpenBLAS's GEMMs elsewhere: nothing to allocate either way); batch 1 with a dw (2.9 MB) that the outer
    // product writes in blocks on rayon's threads
    assert_eq!(
        pool_step_allocations::<f64>(512, 256, 256),
        0,
        "f64 large-batch engine steps inside the pool"
    );
    assert_eq!(
        pool_step_allocations::<f32>(1030, 256, 256),
        0,
        "f32 large-batch steps inside the pool"
    );
    assert_eq!(
        pool_step_allocations::<f32>(1, 1024, 700),
        0,
        "batch-1 steps with a parallel outer product inside the pool"
    );

    // the layer and the optimiser: once warmed up at the largest batch, smaller batches and
    // batch 1 (96 × 700 weights: the GEMV / rank-1 path) allocate nothing; run inside rayon's
    // pool, as batch 37 takes the small-batch engine (see below for outside it)
    use affine_blas::threads::run;
    assert_eq!(run(warmed_layer_allocations::<f32>), 0, "f32 layer");
    assert_eq!(run(warmed_layer_allocations::<f64>), 0, "f64 layer");

    // the small-batch engine (libxsmm, split across rayon's threads): many steps inside the pool
    // allocate nothing; from outside it, rayon's queue of injected jobs allocates a block now
    // and then (every 63 injections), which is why training loops run inside (threads::run)
    let mut l = Affine::<f32>::new(512, 384, Init::He, 3).unwrap();
    let (x, g) = (random::<f32>(32, 512, 4), random::<f32>(32, 384, 5));
    let mut step = || {
        l.forward(x.view()).unwrap();
        l.backward(g.view()).unwrap();
    };
    let inside = affine_blas::threads::run(|| steady_allocations(|| (0..100).for_each(|_| step())));
    assert_eq!(inside, 0, "engine steps inside the pool");
    let outside = steady_allocations(|| (0..100).for_each(|_| step()));
    eprintln!("engine: 500 steps from outside rayon's pool made {outside} allocations");
    assert!(
        outside <= 500 * 2 / 63 + 2,
        "engine steps outside the pool: {outside}"
    );
}

fn warmed_layer_allocations<T: affine_blas::Element>() -> usize {
    let mut l = Affine::<T>::new(96, 700, Init::He, 7).unwrap();
    let mut opt = Sgd::new(SgdConfig::new(0.01).momentum(0.9).weight_decay(1e-4)).unwrap();
    let (x, g) = (random::<T>(640, 96, 8), random::<T>(640, 700, 9));
    l.forward(x.view()).unwrap();
    l.backward(g.view()).unwrap();
    opt.step(&mut [&mut l]).unwrap();
    steady_allocations(|| {
        for batch in [640, 1, 37] {
            l.forward(x.slice(s![..batch, ..])).unwrap();
            l.backward(g.slice(s![..batch, ..])).unwrap();
            l.backward_accumulate(g.slice(s![..batch, ..])).unwrap();
            opt.step(&mut [&mut l]).unwrap();
            l.zero_grad();
            // the input written into the layer, no copy
            l.input_mut(batch).assign(&x.slice(s![..batch, ..]));
            l.forward_input().unwrap();
            l.backward(g.slice(s![..batch, ..])).unwrap();
        }
    })
}

fn kernel_allocations() {
    for &(batch, inp, out) in &[
        (1, 64, 32),
        (1, 300, 260),
        (33, 40, 24),
        (37, 64, 64),
        (600, 20, 1100),
    ] {
        let x = random::<f32>(batch + 4, inp, 3);
        let w = random::<f32>(inp, out, 4);
        let b = random::<f32>(1, out, 5).row(0).to_owned();
        let g = random::<f32>(batch + 4, out, 6);
        let (mut y, mut dx) = (
            Array2::zeros((batch + 4, out)),
            Array2::zeros((batch + 4, inp)),
        );
        let (mut dw, mut db) = (Array2::zeros((inp, out)), Array1::zeros(out));
        let n = steady_allocations(|| {
            forward_into(
                x.slice(s![2..2 + batch, ..]),
                w.view(),
                b.view(),
                y.slice_mut(s![2..2 + batch, ..]),
            )
            .unwrap();
            backward_into(
                x.slice(s![2..2 + batch, ..]),
                w.view(),
                g.slice(s![2..2 + batch, ..]),
                Some(dx.slice_mut(s![2..2 + batch, ..])),
                dw.view_mut(),
                db.view_mut(),
                Accum::Add,
            )
            .unwrap();
        });
        assert_eq!(n, 0, "kernels at {batch}×{inp}×{out}");
        // one column of x and grad (in = out = 1): stride-0 columns
        let n = steady_allocations(|| {
            let (mut y1, mut dw1, mut db1) = (
                y.slice_mut(s![..batch, 0..1]),
                dw.slice_mut(s![0..1, 0..1]),
                db.slice_mut(s![0..1]),
            );
            forward_into(
                x.slice(s![..batch, 0..1]),
                w.slice(s![0..1, 0..1]),
                b.slice(s![0..1]),
                y1.view_mut(),
            )
            .unwrap();
            backward_into(
                x.slice(s![..batch, 0..1]),
                w.slice(s![0..1, 0..1]),
                g.slice(s![..batch, 0..1]),
                None,
                dw1.view_mut(),
                db1.view_mut(),
                Accum::Replace,
            )
            .unwrap();
        });
        assert_eq!(n, 0, "single columns at batch {batch}");
    }
}
