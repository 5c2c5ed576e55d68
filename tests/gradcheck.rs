//! Finite-difference gradient check in f64: the analytic dx, dw, db of the layer against central
//! differences of the loss L = ½‖x·w + b − t‖² on random shapes.

mod common;

use affine_blas::Affine;
use common::random;
use ndarray::{Array1, Array2};

fn loss(x: &Array2<f64>, w: &Array2<f64>, b: &Array1<f64>, t: &Array2<f64>) -> f64 {
    let y = x.dot(w) + b;
    0.5 * (&y - t).mapv(|v| v * v).sum()
}

/// Central difference of `loss` along every entry of `param`, which `set` writes into the inputs.
fn numeric<F: FnMut(usize, f64) -> f64>(n: usize, mut at: F) -> Vec<f64> {
    const H: f64 = 1e-5;
    (0..n).map(|i| (at(i, H) - at(i, -H)) / (2.0 * H)).collect()
}

fn assert_grad(what: &str, analytic: impl Iterator<Item = f64>, numeric: &[f64]) {
    for (i, (a, n)) in analytic.zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-6 * (1.0 + n.abs()),
            "{what}[{i}]: analytic {a}, numeric {n}"
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    for (seed, &(batch, inp, out)) in [(1, 1, 1), (2, 3, 4), (5, 7, 3), (9, 4, 11), (16, 9, 8)]
        .iter()
        .enumerate()
    {
        let seed = seed as u64 * 10;
        let x = random::<f64>(batch, inp, seed);
        let w = random::<f64>(inp, out, seed + 1);
        let b = random::<f64>(1, out, seed + 2).row(0).to_owned();
        let t = random::<f64>(batch, out, seed + 3);

        let mut layer = Affine::from_params(w.clone(), b.clone()).unwrap();
        let y = layer.forward(x.view()).unwrap().to_owned();
        let grad = &y - &t; // ∂L/∂y
        layer.backward(grad.view()).unwrap();
        let g = layer.grad_param().unwrap();

        let nx = numeric(x.len(), |i, h| {
            let mut xp = x.clone();
            xp.as_slice_mut().unwrap()[i] += h;
            loss(&xp, &w, &b, &t)
        });
        let nw = numeric(w.len(), |i, h| {
            let mut wp = w.clone();
            wp.as_slice_mut().unwrap()[i] += h;
            loss(&x, &wp, &b, &t)
        });
        let nb = numeric(b.len(), |i, h| {
            let mut bp = b.clone();
            bp[i] += h;
            loss(&x, &w, &bp, &t)
        });
        assert_grad("dx", g.x.iter().copied(), &nx);
        assert_grad("dw", g.w.iter().copied(), &nw);
        assert_grad("db", g.b.iter().copied(), &nb);
    }
}
