//! The notebook's own numbers (`tests/fixtures/seed_golden.json`, numpy float64), with the
//! correct bias gradient `db = Σ_batch grad` instead of the notebook's `db = sum(b)`.

use affine_blas::{backward_into, forward_into, Accum, Affine};
use ndarray::{Array1, Array2};
use serde_json::Value;

// Parsed with serde_json's `float_roundtrip`: its default parser can be 1 ulp off, which the
// exact `db` comparison below would catch.
const GOLDEN: &str = include_str!("fixtures/seed_golden.json");

fn arrays() -> Value {
    serde_json::from_str::<Value>(GOLDEN).unwrap()["arrays"].clone()
}

fn mat(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((r, c), rows.into_iter().flatten().collect()).unwrap()
}

fn vec1(v: &Value) -> Array1<f64> {
    Array1::from(serde_json::from_value::<Vec<f64>>(v.clone()).unwrap())
}

/// The fixture's tolerance note: out, dx, dw may differ by 1 ulp (≤ 4.5e-16 here) between BLAS
/// and a sequential loop; compare with absolute tolerance 1e-14.
fn assert_within(what: &str, got: &Array2<f64>, want: &Array2<f64>, tol: f64) {
    assert_eq!(got.dim(), want.dim(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{what}: got {g}, want {w}");
    }
}

#[test]
fn layer_reproduces_the_notebook() {
    let a = arrays();
    let (x, w, b, grad) = (mat(&a["x"]), mat(&a["w"]), vec1(&a["b"]), mat(&a["grad"]));
    let mut layer = Affine::from_params(w.clone(), b.clone()).unwrap();

    let out = layer.forward(x.view()).unwrap().to_owned();
    assert_within("out", &out, &mat(&a["out"]), 1e-14);
    assert_eq!(layer.param().w, w);
    assert_eq!(layer.param().b, b);

    let dx = layer.backward(grad.view()).unwrap().to_owned();
    assert_within("dx", &dx, &mat(&a["dx"]), 1e-14);
    let gp = layer.grad_param().unwrap();
    assert_eq!(gp.x, dx);
    assert_within("dw", &gp.w.to_owned(), &mat(&a["dw"]), 1e-14);
    // two rows: one addition per column, exact in any order
    assert_eq!(gp.b, vec1(&a["db"]));
    // and not the notebook's bug
    assert!(gp
        .b
        .iter()
        .any(|&v| v != a["db_seed_buggy"].as_f64().unwrap()));
}

#[test]
fn kernels_reproduce_the_notebook() {
    let a = arrays();
    let (x, w, b, grad) = (mat(&a["x"]), mat(&a["w"]), vec1(&a["b"]), mat(&a["grad"]));
    let mut y = Array2::from_elem((2, 4), f64::NAN);
    forward_into(x.view(), w.view(), b.view(), y.view_mut()).unwrap();
    assert_within("out", &y, &mat(&a["out"]), 1e-14);
    let (mut dx, mut dw, mut db) = (
        Array2::zeros((2, 3)),
        Array2::zeros((3, 4)),
        Array1::zeros(4),
    );
    backward_into(
        x.view(),
        w.view(),
        grad.view(),
        Some(dx.view_mut()),
        dw.view_mut(),
        db.view_mut(),
        Accum::Replace,
    )
    .unwrap();
    assert_within("dx", &dx, &mat(&a["dx"]), 1e-14);
    assert_within("dw", &dw, &mat(&a["dw"]), 1e-14);
    assert_eq!(db, vec1(&a["db"]));
}

#[test]
fn f32_layer_matches_the_notebook_to_single_precision() {
    let a = arrays();
    let f = |m: Array2<f64>| m.mapv(|v| v as f32);
    let (x, w, grad) = (f(mat(&a["x"])), f(mat(&a["w"])), f(mat(&a["grad"])));
    let mut layer = Affine::from_params(w, Array1::<f32>::zeros(4)).unwrap();
    let out = layer.forward(x.view()).unwrap().mapv(f64::from);
    assert_within("out f32", &out, &mat(&a["out"]), 1e-5);
    let dx = layer.backward(grad.view()).unwrap().mapv(f64::from);
    assert_within("dx f32", &dx, &mat(&a["dx"]), 1e-5);
    let gp = layer.grad_param().unwrap();
    assert_within("dw f32", &gp.w.mapv(f64::from), &mat(&a["dw"]), 1e-5);
    for (g, w) in gp.b.iter().zip(vec1(&a["db"]).iter()) {
        assert!((f64::from(*g) - w).abs() <= 1e-6);
    }
}
