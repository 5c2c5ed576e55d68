//! Property tests: the kernels and the layer against a naive f64 triple loop, over random shapes
//! (batch 0..=300, in/out 1..=300) and every input and output layout, in f32 and f64.

mod common;

use affine_blas::{backward_into, forward_into, Accum, Affine, Element};
use common::*;
use ndarray::{Array1, Array2, Axis};
use proptest::prelude::*;

fn layout() -> impl Strategy<Value = Layout> {
    prop::sample::select(LAYOUTS.to_vec())
}

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    inp: usize,
    out: usize,
    lx: Layout,
    lw: Layout,
    lg: Layout,
    lo: Layout,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..=300,
        1usize..=300,
        1usize..=300,
        layout(),
        layout(),
        layout(),
        layout(),
        any::<u64>(),
    )
        .prop_map(|(batch, inp, out, lx, lw, lg, lo, seed)| Case {
            batch,
            inp,
            out,
            lx,
            lw,
            lg,
            lo,
            seed,
        })
}

/// Runs both kernels on `case` in precision T and checks every output against the reference.
fn check_kernels<T: Element>(c: &Case) {
    let x = random::<T>(c.batch, c.inp, c.seed);
    let w = random::<T>(c.inp, c.out, c.seed ^ 1);
    let b = random1::<T>(c.out, c.seed ^ 2);
    let g = random::<T>(c.batch, c.out, c.seed ^ 3);
    let (xf, wf, gf) = (to_f64(x.view()), to_f64(w.view()), to_f64(g.view()));
    let bf = b.mapv(|v| v.to_f64().unwrap());

    // forward, output prefilled with NaN: the bias fill must overwrite it
    let (lx, lw, lg) = (
        Laid::new(&x, c.lx),
        Laid::new(&w, c.lw),
        Laid::new(&g, c.lg),
    );
    let mut y = Laid::new(&Array2::from_elem((c.batch, c.out), T::nan()), c.lo);
    forward_into(lx.view(), lw.view(), b.view(), y.view_mut()).unwrap();
    let (xw, xw_scale) = naive_matmul(&xf, &wf);
    let want_y = &xw + &bf;
    let scale_y = &xw_scale + &bf.mapv(f64::abs);
    assert_close("y", y.view(), &want_y, &scale_y, c.inp);

    // backward, replace: NaN-prefilled outputs must be overwritten
    let mut dx = Laid::new(&Array2::from_elem((c.batch, c.inp), T::nan()), c.lo);
    let mut dw = Laid::new(&Array2::from_elem((c.inp, c.out), T::nan()), c.lo);
    let mut db = Array1::from_elem(c.out, T::nan());
    backward_into(
        lx.view(),
        lw.view(),
        lg.view(),
        Some(dx.view_mut()),
        dw.view_mut(),
        db.view_mut(),
        Accum::Replace,
    )
    .unwrap();
    let (want_dx, scale_dx) = naive_matmul(&gf, &wf.t().to_owned());
    let (want_dw, scale_dw) = naive_matmul(&xf.t().to_owned(), &gf);
    let want_db = gf.sum_axis(Axis(0));
    let scale_db = gf.mapv(f64::abs).sum_axis(Axis(0));
    assert_close("dx", dx.view(), &want_dx, &scale_dx, c.out);
    assert_close("dw", dw.view(), &want_dw, &scale_dw, c.batch);
    assert_close1("db", db.view(), &want_db, &scale_db, c.batch);

    // backward, accumulate onto the previous gradients and without dx
    backward_into(
        lx.view(),
        lw.view(),
        lg.view(),
        None,
        dw.view_mut(),
        db.view_mut(),
        Accum::Add,
    )
    .unwrap();
    assert_close(
        "dw (accumulated)",
        dw.view(),
        &(2.0 * &want_dw),
        &(4.0 * &scale_dw),
        c.batch,
    );
    assert_close1(
        "db (accumulated)",
        db.view(),
        &(2.0 * &want_db),
        &(4.0 * &scale_db),
        c.batch,
    );
}

/// The layer on the same case: forward, backward, and its notebook-style accessors.
fn check_layer<T: Element>(c: &Case) {
    let x = random::<T>(c.batch, c.inp, c.seed);
    let w = random::<T>(c.inp, c.out, c.seed ^ 1);
    let b = random1::<T>(c.out, c.seed ^ 2);
    let g = random::<T>(c.batch, c.out, c.seed ^ 3);
    let (xf, wf, gf) = (to_f64(x.view()), to_f64(w.view()), to_f64(g.view()));
    let bf = b.mapv(|v| v.to_f64().unwrap());
    let mut layer = Affine::from_params(Laid::new(&w, c.lw).view().to_owned(), b.clone()).unwrap();

    let lx = Laid::new(&x, c.lx);
    let y = layer.forward(lx.view()).unwrap();
    let (xw, xw_scale) = naive_matmul(&xf, &wf);
    assert_close(
        "layer y",
        y,
        &(&xw + &bf),
        &(&xw_scale + &bf.mapv(f64::abs)),
        c.inp,
    );

    let lg = Laid::new(&g, c.lg);
    let dx = layer.backward(lg.view()).unwrap().to_owned();
    let (want_dx, scale_dx) = naive_matmul(&gf, &wf.t().to_owned());
    assert_close("layer dx", dx.view(), &want_dx, &scale_dx, c.out);
    let gp = layer.grad_param().unwrap();
    assert_eq!(gp.x, dx);
    let (want_dw, scale_dw) = naive_matmul(&xf.t().to_owned(), &gf);
    assert_close("layer dw", gp.w, &want_dw, &scale_dw, c.batch);
    let scale_db = gf.mapv(f64::abs).sum_axis(Axis(0));
    assert_close1("layer db", gp.b, &gf.sum_axis(Axis(0)), &scale_db, c.batch);
    assert_eq!(layer.param().w, w);
    assert_eq!(layer.param().b, b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn kernels_f32(c in case()) { check_kernels::<f32>(&c); }

    #[test]
    fn kernels_f64(c in case()) { check_kernels::<f64>(&c); }

    #[test]
    fn layer_f32(c in case()) { check_layer::<f32>(&c); }

    #[test]
    fn layer_f64(c in case()) { check_layer::<f64>(&c); }
}

/// Sizes that straddle BLAS block edges and ndarray's small-matrix cutoff (7/8), in every layout.
#[test]
fn edge_sizes_every_layout() {
    let mut seed = 0;
    for &(batch, inp, out) in &[
        (1, 1, 1),
        (7, 7, 7),
        (8, 1, 9),
        (1, 17, 1),
        (15, 16, 17),
        (127, 128, 129),
    ] {
        for &lx in &LAYOUTS {
            for &lo in &LAYOUTS {
                seed += 1;
                let c = Case {
                    batch,
                    inp,
                    out,
                    lx,
                    lw: lo,
                    lg: lx,
                    lo,
                    seed,
                };
                check_kernels::<f32>(&c);
                check_kernels::<f64>(&c);
            }
        }
    }
}

/// The layer at batch 1 with weights large enough for its GEMV and outer-product paths on every
/// OpenBLAS core (the random cases stay below the cutoffs of its AVX-512 cores), and at batch 0.
#[test]
fn layer_at_batch_one_and_zero() {
    use affine_blas::blas::{GEMV_FORWARD_MIN_WEIGHT, SINGLE_ROW_MIN_WEIGHT};
    const { assert!(400 * 360 >= GEMV_FORWARD_MIN_WEIGHT && 400 * 360 >= SINGLE_ROW_MIN_WEIGHT) };
    for (i, &batch) in [1, 0].iter().enumerate() {
        for &lx in &LAYOUTS {
            let c = Case {
                batch,
                inp: 400,
                out: 360,
                lx,
                lw: lx,
                lg: lx,
                lo: lx,
                seed: 100 + i as u64,
            };
            check_layer::<f32>(&c);
            check_layer::<f64>(&c);
        }
    }
}
