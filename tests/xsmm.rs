//! The small-batch engine (libxsmm kernels split across rayon's threads): results against a naive
//! f64 reference at shapes that exercise its edge tiles and strided operands, proof (through the
//! BLAS spy) that it, not OpenBLAS, computed them, and repeatability under concurrency.

mod common;
mod spy;

use affine_blas::xsmm::{self, Product};
use affine_blas::{backward_into, forward_into, Accum, Affine, Element};
use common::{assert_close, assert_close1, naive_matmul, random, random1, to_f64};
use ndarray::{s, Array1, Array2, Axis};

/// (batch, in, out): edge tiles along every dimension (257, 300, 1000, 130 are not multiples of
/// the tiles), a weight of exactly `MIN_WEIGHT`, batch 2, and batches where only the forward
/// pass or neither pass is the engine's (OpenBLAS with AVX-512 kernels) or both are (without),
/// and a large batch the engine takes in f64 with AVX-512 kernels and in f32 where both sides
/// run AVX2 or AVX-512 runs on 256-bit units (1030 × 256 × 260: rows of the batch split, `dw`
/// summed per thread in batch tiles with an edge tile); then narrow layers (under `MIN_WEIGHT`
/// weights): on the calling thread, `dx` through transposed `g` and `dx` (40 × 100 × 70, split
/// in f64) or through transposed `w` (37 × 64 × 64); split by
/// rows of the batch, odd and even (301 × 70 × 90, 2049 × 67 × 63, 2048 × 17 × 16); and under
/// the narrow cutoffs of batch, work and weights (31 × 64 × 64, 33 × 32 × 32, 2048 × 8 × 16).
const SHAPES: &[(usize, usize, usize)] = &[
    (2, 256, 256),
    (3, 300, 257),
    (17, 1000, 130),
    (33, 4096, 16),
    (64, 129, 1024),
    (200, 256, 300),
    (512, 256, 260),
    (1030, 256, 260),
    (40, 100, 70),
    (37, 64, 64),
    (301, 70, 90),
    (2049, 67, 63),
    (2048, 17, 16),
    (31, 64, 64),
    (33, 32, 32),
    (2048, 8, 16),
];

/// GEMMs OpenBLAS runs for one forward and backward at this shape in precision `T`.
fn expected_gemms<T: Element>((batch, inp, out): (usize, usize, usize)) -> usize {
    let fwd = usize::from(!xsmm::applies::<T>(Product::Forward, batch, (inp, out)));
    let bwd = usize::from(!xsmm::applies::<T>(Product::Backward, batch, (inp, out)));
    fwd + 2 * bwd
}

#[test]
fn the_engine_is_on_where_libxsmm_was_linked() {
    if xsmm::LINKED && cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("avx2") {
        assert!(xsmm::available(), "libxsmm linked but not available");
        assert!(xsmm::enabled() || std::env::var_os("AFFINE_BLAS_XSMM").is_some());
        assert_ne!(xsmm::target(), "none");
    }
    for p in [Product::Forward, Product::Backward] {
        for &(b, i, o) in &SHAPES[..5] {
            assert_eq!(
                xsmm::applies::<f32>(p, b, (i, o)),
                xsmm::enabled() && b <= xsmm::max_batch::<f32>(p, (i, o)),
                "{b}x{i}x{o}"
            );
        }
        // the cutoffs follow whose vectors are wider, and where both are the same, w's size
        let cut = |w| {
            (
                xsmm::max_batch::<f32>(Product::Forward, w),
                xsmm::max_batch::<f32>(Product::Backward, w),
            )
        };
        // 513 × 512 and 257 × 256 f32 (with a bias row) sit under the two sizes below
        let (big, mid, small) = (cut((1024, 1024)), cut((513, 512)), cut((257, 256)));
        assert_eq!(640 * 512 * 4, xsmm::SAME_VECTORS_MID_W_BYTES);
        assert_eq!(384 * 256 * 4, xsmm::SAME_VECTORS_SMALL_W_BYTES);
        match xsmm::vectors() {
            xsmm::Vectors::EngineWider => {
                assert_eq!((big, mid, small), ((512, 512), (512, 512), (512, 512)))
            }
            xsmm::Vectors::BothAvx512 => {
                // Zen 4 runs the f32 backward to 256
                let b = if xsmm::avx512_on_256_bit_units() {
                    256
                } else {
                    128
                };
                assert_eq!((big, mid, small), ((256, b), (256, b), (256, b)))
            }
            xsmm::Vectors::Same => {
                assert_eq!((big, mid, small), ((8, 64), (256, 128), (2048, 2048)));
                assert_eq!(cut((640, 513)), (8, 64));
                assert_eq!(cut((384, 257)), (256, 128));
                assert_eq!(
                    xsmm::max_batch::<f64>(Product::Backward, (257, 256)),
                    128,
                    "f64 256 x 256 is 512 KB"
                );
            }
        }
        assert!(
            !xsmm::applies::<f32>(p, 1, (1 << 10, 1 << 10)),
            "batch 1 goes to GEMV"
        );
        assert!(!xsmm::applies::<f64>(
            p,
            xsmm::max_batch::<f64>(p, (1 << 10, 1 << 10)) + 1,
            (1 << 10, 1 << 10)
        ));
        let w = (1 << 10, 1 << 10);
        assert!(xsmm::max_batch::<f32>(p, w) >= 8 && xsmm::max_batch::<f64>(p, w) >= 8);
        // narrow layers: from NARROW_MIN_BATCH and NARROW_MIN_WORK, at any batch; alone or
        // split by work
        let (nb, nw) = (xsmm::NARROW_MIN_BATCH, xsmm::NARROW_MIN_WEIGHT);
        let work = xsmm::NARROW_MIN_WORK;
        // the shapes below sit at the cutoffs: 16 × 16 weights, 32 × 64 × batch 32 of work, and
        // just under each
        assert_eq!((16 * 16, nb * 32 * 64), (nw, work));
        assert!(15 * 17 < nw && nb * 23 * 89 < work && 255 * 257 < xsmm::MIN_WEIGHT);
        let on = xsmm::enabled();
        assert!(!xsmm::applies::<f32>(p, nb - 1, (255, 257)));
        assert!(!xsmm::applies::<f32>(p, 1 << 20, (15, 17)));
        assert_eq!(xsmm::plan::<f32>(p, nb, (32, 64)), on.then_some(1));
        assert!(!xsmm::applies::<f32>(p, nb, (23, 89)));
        let all = rayon::current_num_threads();
        assert_eq!(xsmm::plan::<f64>(p, 1 << 20, (16, 16)), on.then_some(all));
        assert_eq!(xsmm::parallel::<f32>(p, 1 << 20, (16, 16)), on);
        assert!(!xsmm::parallel::<f32>(p, nb, (32, 64)));
        // f64 layers whose w stays in L2, at twice their larger side and beyond, with AVX-512
        // kernels; f32 ones only where AVX-512 runs on 256-bit units (or the environment says)
        let lb = 2 * 256;
        let large = on && xsmm::large_batch_regime::<f64>();
        assert_eq!(xsmm::applies::<f64>(p, lb, (256, 256)), large);
        assert_eq!(xsmm::applies::<f64>(p, 1 << 20, (257, 256)), large);
        assert!(!xsmm::applies::<f64>(p, 1 << 20, (512, 256)), "w over L2");
        let large32 = on && xsmm::large_batch_regime::<f32>();
        assert_eq!(xsmm::applies::<f32>(p, 1 << 20, (256, 256)), large32);
        // 3 · 2^18 bytes of f32: 443 × 443 fits, 444 × 443 does not
        assert_eq!(xsmm::applies::<f32>(p, 1 << 20, (443, 443)), large32);
        assert!(!xsmm::applies::<f32>(p, 1 << 20, (444, 443)), "w over L2");
        if xsmm::max_batch::<f32>(p, (256, 256)) < lb {
            assert_eq!(xsmm::applies::<f32>(p, lb, (256, 256)), large32);
            assert!(!xsmm::applies::<f32>(p, lb - 3, (256, 256)));
        }
        for &(b, i, o) in &SHAPES[8..13] {
            assert_eq!(xsmm::applies::<f64>(p, b, (i, o)), on, "{b}x{i}x{o}");
        }
        for &(b, i, o) in &SHAPES[13..] {
            assert!(!xsmm::applies::<f64>(p, b, (i, o)), "{b}x{i}x{o}");
        }
    }
}

#[test]
fn the_f32_large_batch_regime_follows_the_cpu_or_the_environment() {
    // make test runs this file with AFFINE_BLAS_XSMM_F32_LARGE_BATCH=1 too
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    if let (Some(vendor), Some(family), Some(flags)) =
        (field("vendor_id"), field("cpu family"), field("flags"))
    {
        let zen4 = vendor == "AuthenticAMD"
            && family == "25"
            && flags.split_whitespace().any(|f| f == "avx512f");
        assert_eq!(xsmm::avx512_on_256_bit_units(), zen4, "{vendor} {family}");
    }
    let want = match std::env::var("AFFINE_BLAS_XSMM_F32_LARGE_BATCH").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => xsmm::vectors() != xsmm::Vectors::Same && xsmm::avx512_on_256_bit_units(),
    };
    assert_eq!(xsmm::large_batch_regime::<f32>(), want);
}

/// The stateless kernels at `shape`, with `x`, `grad`, `y`, `dx` as column blocks of wider
/// matrices (row stride ≠ columns), against the naive reference; `dw`, `db` accumulate on a
/// second call. Returns the GEMM calls OpenBLAS saw.
fn stateless<T: Element>((batch, inp, out): (usize, usize, usize), seed: u64) -> usize {
    let xw = random::<T>(batch, inp + 5, seed);
    let w = random::<T>(inp, out, seed + 1);
    let b = random1::<T>(out, seed + 2);
    let gw = random::<T>(batch, out + 3, seed + 3);
    let (x, g) = (xw.slice(s![.., 2..2 + inp]), gw.slice(s![.., 1..1 + out]));
    let mut y = Array2::from_elem((batch, out + 7), T::nan());
    let mut dx = Array2::from_elem((batch, inp + 2), T::nan());
    let mut dw = Array2::from_elem((inp, out), T::nan());
    let mut db = Array1::from_elem(out, T::nan());
    let [gemms, _, _] = spy::calls(|| {
        forward_into(x, w.view(), b.view(), y.slice_mut(s![.., 4..4 + out])).unwrap();
        let dxv = Some(dx.slice_mut(s![.., 1..1 + inp]));
        backward_into(
            x,
            w.view(),
            g,
            dxv,
            dw.view_mut(),
            db.view_mut(),
            Accum::Replace,
        )
        .unwrap();
    });
    let name = format!("{} {batch}x{inp}x{out}", T::NAME);
    let (x64, w64, g64) = (to_f64(x), to_f64(w.view()), to_f64(g));
    let (mut yw, ys) = naive_matmul(&x64, &w64);
    let b64 = b.mapv(|v| v.to_f64().unwrap_or(f64::NAN));
    yw += &b64;
    let ys = ys + &b64.mapv(f64::abs);
    assert_close(
        &format!("{name} y"),
        y.slice(s![.., 4..4 + out]),
        &yw,
        &ys,
        inp + 1,
    );
    assert!(
        y.slice(s![.., ..4]).iter().all(|v| v.is_nan()),
        "{name}: wrote left of y"
    );
    let (dxw, dxs) = naive_matmul(&g64, &w64.t().to_owned());
    assert_close(
        &format!("{name} dx"),
        dx.slice(s![.., 1..1 + inp]),
        &dxw,
        &dxs,
        out,
    );
    assert!(
        dx.column(0).iter().all(|v| v.is_nan()),
        "{name}: wrote left of dx"
    );
    let (dww, dws) = naive_matmul(&x64.t().to_owned(), &g64);
    assert_close(&format!("{name} dw"), dw.view(), &dww, &dws, batch);
    let dbw = g64.sum_axis(Axis(0));
    let dbs = g64.mapv(f64::abs).sum_axis(Axis(0));
    assert_close1(&format!("{name} db"), db.view(), &dbw, &dbs, batch);
    // accumulate: dw ← dw + xᵀ·g
    let before = dw.clone();
    backward_into(
        x,
        w.view(),
        g,
        None,
        dw.view_mut(),
        db.view_mut(),
        Accum::Add,
    )
    .unwrap();
    let twice = to_f64(before.view()) + &dww;
    assert_close(
        &format!("{name} dw+="),
        dw.view(),
        &twice,
        &(dws * 2.0),
        batch + 1,
    );
    gemms
}

#[test]
fn stateless_kernels_match_the_reference() {
    for (i, &shape) in SHAPES.iter().enumerate() {
        let g32 = stateless::<f32>(shape, 10 * i as u64);
        let g64 = stateless::<f64>(shape, 10 * i as u64 + 5);
        let want = (expected_gemms::<f32>(shape), expected_gemms::<f64>(shape));
        assert_eq!((g32, g64), want, "{shape:?}: GEMMs that reached OpenBLAS");
    }
}

/// The layer (bias folded in: `in + 1` rows of `[w; b]`) against the reference.
fn layer<T: Element>((batch, inp, out): (usize, usize, usize), seed: u64) -> usize {
    let x = random::<T>(batch, inp, seed);
    let w = random::<T>(inp, out, seed + 1);
    let b = random1::<T>(out, seed + 2);
    let g = random::<T>(batch, out, seed + 3);
    let mut l = Affine::from_params(w.clone(), b.clone()).unwrap();
    let mut y = Array2::zeros((batch, out));
    let mut dx = Array2::zeros((batch, inp));
    let [gemms, _, _] = spy::calls(|| {
        y.assign(&l.forward(x.view()).unwrap());
        dx.assign(&l.backward(g.view()).unwrap());
    });
    let name = format!("layer {} {batch}x{inp}x{out}", T::NAME);
    let (x64, w64, g64) = (to_f64(x.view()), to_f64(w.view()), to_f64(g.view()));
    let (mut yw, ys) = naive_matmul(&x64, &w64);
    yw += &b.mapv(|v| v.to_f64().unwrap_or(f64::NAN));
    let ys = ys + 1.0;
    assert_close(&format!("{name} y"), y.view(), &yw, &ys, inp + 1);
    let (dxw, dxs) = naive_matmul(&g64, &w64.t().to_owned());
    assert_close(&format!("{name} dx"), dx.view(), &dxw, &dxs, out);
    let (dww, dws) = naive_matmul(&x64.t().to_owned(), &g64);
    let grads = l.grad_param().unwrap();
    assert_close(&format!("{name} dw"), grads.w, &dww, &dws, batch);
    let dbs = g64.mapv(f64::abs).sum_axis(Axis(0));
    assert_close1(
        &format!("{name} db"),
        grads.b,
        &g64.sum_axis(Axis(0)),
        &dbs,
        batch,
    );
    gemms
}

#[test]
fn the_layer_matches_the_reference() {
    for (i, &shape) in SHAPES.iter().enumerate() {
        let g32 = layer::<f32>(shape, 100 + 10 * i as u64);
        let g64 = layer::<f64>(shape, 105 + 10 * i as u64);
        let want = (expected_gemms::<f32>(shape), expected_gemms::<f64>(shape));
        assert_eq!((g32, g64), want, "{shape:?}: GEMMs that reached OpenBLAS");
    }
}

/// Outputs of one forward and backward through the stateless kernels, poisoned first.
struct Outs {
    y: Array2<f32>,
    dx: Array2<f32>,
    dw: Array2<f32>,
    db: Array1<f32>,
}

impl Outs {
    fn new(batch: usize, inp: usize, out: usize) -> Self {
        Outs {
            y: Array2::zeros((batch, out)),
            dx: Array2::zeros((batch, inp)),
            dw: Array2::zeros((inp, out)),
            db: Array1::zeros(out),
        }
    }

    fn step(&mut self, x: &Array2<f32>, w: &Array2<f32>, b: &Array1<f32>, g: &Array2<f32>) {
        self.y.fill(f32::NAN);
        self.dx.fill(f32::NAN);
        self.dw.fill(f32::NAN);
        self.db.fill(f32::NAN);
        forward_into(x.view(), w.view(), b.view(), self.y.view_mut()).unwrap();
        let dx = Some(self.dx.view_mut());
        let (dw, db) = (self.dw.view_mut(), self.db.view_mut());
        backward_into(x.view(), w.view(), g.view(), dx, dw, db, Accum::Replace).unwrap();
    }

    fn same_bits(&self, o: &Outs) -> bool {
        let bits2 = |a: &Array2<f32>, b: &Array2<f32>| {
            a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
        };
        bits2(&self.y, &o.y)
            && bits2(&self.dx, &o.dx)
            && bits2(&self.dw, &o.dw)
            && self
                .db
                .iter()
                .zip(&o.db)
                .all(|(p, q)| p.to_bits() == q.to_bits())
    }
}

/// The engine's threads each own a fixed block of the output and sum in a fixed order: repeated
/// steps give the same bits, also with two steps running at once on rayon's two sides, and with
/// OpenBLAS running a GEMM on another thread at the same time (Debian's pthread OpenBLAS
/// serialises concurrent callers on its thread pool; this checks its results stay exact).
#[test]
fn concurrent_steps_give_the_same_bits() {
    let (batch, inp, out) = (32, 512, 384);
    let x = random::<f32>(batch, inp, 7);
    let g = random::<f32>(batch, out, 8);
    let w = random::<f32>(inp, out, 9);
    let b = random1::<f32>(out, 10);
    let mut want = Outs::new(batch, inp, out);
    want.step(&x, &w, &b, &g);
    assert!(want.y.iter().all(|v| v.is_finite()));
    let (mut p, mut q) = (Outs::new(batch, inp, out), Outs::new(batch, inp, out));
    let big = random::<f32>(256, 256, 11);
    let mut big_out = Array2::<f32>::zeros((256, 256));
    let big_want = big.dot(&big);
    for it in 0..300 {
        rayon::join(
            || rayon::join(|| p.step(&x, &w, &b, &g), || q.step(&x, &w, &b, &g)),
            || {
                big_out.fill(f32::NAN);
                ndarray::linalg::general_mat_mul(1.0, &big, &big, 0.0, &mut big_out);
            },
        );
        assert!(
            p.same_bits(&want) && q.same_bits(&want),
            "iteration {it}: bits changed"
        );
        assert!(
            big_out == big_want,
            "iteration {it}: OpenBLAS's concurrent GEMM changed"
        );
    }
}
