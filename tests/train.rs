//! The training-loop pieces: gradient accumulation over micro-batches equals one big batch, the
//! SGD step follows its formula on a layer, and a short run of the example's MLP learns.

mod common;
#[path = "../examples/mlp/mod.rs"]
mod mlp;

use affine_blas::{Affine, Init, Sgd, SgdConfig};
use common::random;
use ndarray::{s, Array2};

fn assert_close(what: &str, a: &Array2<f64>, b: &Array2<f64>, tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: {x} vs {y}");
    }
}

#[test]
fn micro_batches_accumulate_to_the_big_batch() {
    let (batch, inp, out) = (96, 17, 9);
    let x = random::<f64>(batch, inp, 1);
    let g = random::<f64>(batch, out, 2);
    let mut big = Affine::<f64>::new(inp, out, Init::He, 3).unwrap();
    let mut micro = big.clone();
    big.forward(x.view()).unwrap();
    big.backward(g.view()).unwrap();
    let want = big.grad_param().unwrap();

    micro.zero_grad();
    // uneven micro-batches, including batch 1
    for (lo, hi) in [(0, 40), (40, 41), (41, 77), (77, 96)] {
        micro.forward(x.slice(s![lo..hi, ..])).unwrap();
        micro.backward_accumulate(g.slice(s![lo..hi, ..])).unwrap();
    }
    let got = micro.grad_param().unwrap();
    assert_close("dw", &got.w.to_owned(), &want.w.to_owned(), 1e-12);
    let (gb, wb) = (got.b.to_owned(), want.b.to_owned());
    assert_close(
        "db",
        &gb.insert_axis(ndarray::Axis(0)),
        &wb.insert_axis(ndarray::Axis(0)),
        1e-12,
    );
}

#[test]
fn sgd_steps_the_layers_by_their_gradients() {
    let mut a = Affine::<f64>::new(6, 4, Init::He, 1).unwrap();
    let mut b = Affine::<f64>::new(4, 2, Init::He, 2).unwrap();
    let x = random::<f64>(5, 6, 3);
    let ya = a.forward(x.view()).unwrap().to_owned();
    b.forward(ya.view()).unwrap();
    let db_ = b
        .backward(random::<f64>(5, 2, 4).view())
        .unwrap()
        .to_owned();
    a.backward(db_.view()).unwrap();
    let before: Vec<_> = [&a, &b]
        .iter()
        .map(|l| {
            (
                l.param().w.to_owned(),
                l.grad_param().unwrap().w.to_owned(),
                l.param().b.to_owned(),
                l.grad_param().unwrap().b.to_owned(),
            )
        })
        .collect();
    let mut opt = Sgd::new(SgdConfig::new(0.25).momentum(0.5)).unwrap();
    opt.step(&mut [&mut a, &mut b]).unwrap();
    // first step with momentum: v = g, so p ← p − η·g
    for (l, (w, dw, bias, dbias)) in [&a, &b].iter().zip(&before) {
        assert_close("w", &l.param().w.to_owned(), &(w - &(dw * 0.25)), 1e-15);
        let got = l.param().b.to_owned().insert_axis(ndarray::Axis(0));
        let want = (bias - &(dbias * 0.25)).insert_axis(ndarray::Axis(0));
        assert_close("b", &got, &want, 1e-15);
    }
    // second step, same gradients: v = 0.5·g + g = 1.5·g
    let w1 = a.param().w.to_owned();
    opt.step(&mut [&mut a, &mut b]).unwrap();
    assert_close(
        "w, step 2",
        &a.param().w.to_owned(),
        &(&w1 - &(&before[0].1 * 0.375)),
        1e-15,
    );
    // a different set of layers is refused, and changes nothing
    let w2 = a.param().w.to_owned();
    assert!(opt.step(&mut [&mut a]).is_err());
    assert_eq!(a.param().w, w2);
}

/// Loss a short run must get under (it reaches ≈ 0.08; the untrained net starts near ln 3 ≈ 1.10).
const SHORT_RUN_LOSS: f64 = 0.25;

#[test]
fn a_short_run_of_the_example_learns() {
    let data = mlp::spirals(100, 3, 0.2, 7);
    let mut net = mlp::Mlp::new(2, 64, data.classes, 42).unwrap();
    let (start_loss, _) = net.evaluate(&data, 128).unwrap();
    let mut opt = Sgd::new(SgdConfig::new(0.1).momentum(0.9).weight_decay(1e-4)).unwrap();
    let mut losses = Vec::new();
    mlp::train(&mut net, &data, &mut opt, 60, 32, 1, |_, loss, _| {
        losses.push(loss)
    })
    .unwrap();
    let (end_loss, acc) = net.evaluate(&data, 128).unwrap();
    assert!(
        (start_loss - 3f64.ln()).abs() < 0.3,
        "untrained loss {start_loss}"
    );
    assert!(
        end_loss < SHORT_RUN_LOSS,
        "loss {start_loss} → {end_loss} (accuracy {acc})"
    );
    assert!(losses.last() < losses.first(), "{losses:?}");
}

#[test]
fn an_input_written_into_the_layer_gives_what_forward_gives() {
    let (batch, inp, out) = (37, 19, 11);
    let x = random::<f64>(batch, inp, 1);
    let g = random::<f64>(batch, out, 2);
    let mut a = Affine::<f64>::new(inp, out, Init::He, 3).unwrap();
    let mut b = a.clone();
    let ya = a.forward(x.view()).unwrap().to_owned();
    let dxa = a.backward(g.view()).unwrap().to_owned();
    // a larger batch first, so that the buffer has spare rows
    b.input_mut(batch + 5).fill(f64::NAN);
    b.input_mut(batch).assign(&x);
    let yb = b.forward_input().unwrap().to_owned();
    assert_eq!(yb, ya, "bit for bit: the same kernels on the same numbers");
    // forward_input again on the same input: the same again
    assert_eq!(b.forward_input().unwrap(), ya);
    let dxb = b.backward(g.view()).unwrap().to_owned();
    assert_eq!(dxb, dxa);
    let (ga, gb) = (a.grad_param().unwrap(), b.grad_param().unwrap());
    assert_eq!((ga.w, ga.b), (gb.w, gb.b));
    assert_eq!(b.cached_input().unwrap(), x);
}
