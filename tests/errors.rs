//! The error catalogue: every bad input gives an error naming the shapes, and leaves outputs and
//! the layer's parameters, gradients and cache exactly as they were.

mod common;

use affine_blas::{backward_into, forward_into, Accum, Affine, AffineError, Init};
use common::random;
use ndarray::{Array1, Array2};

/// Everything observable of a layer, owned, to compare before and after a failed call.
#[derive(Debug, PartialEq)]
struct State {
    w: Array2<f64>,
    b: Array1<f64>,
    cache: Option<Array2<f64>>,
    grads: Option<(Array2<f64>, Array2<f64>, Array1<f64>)>,
}

fn state(l: &Affine<f64>) -> State {
    State {
        w: l.param().w.to_owned(),
        b: l.param().b.to_owned(),
        cache: l.cached_input().map(|x| x.to_owned()),
        grads: l
            .grad_param()
            .map(|g| (g.x.to_owned(), g.w.to_owned(), g.b.to_owned())),
    }
}

/// A 5 → 3 layer that has run one forward (batch 4) and one backward.
fn trained_layer() -> Affine<f64> {
    let mut l = Affine::new(5, 3, Init::He, 1).unwrap();
    l.forward(random::<f64>(4, 5, 2).view()).unwrap();
    l.backward(random::<f64>(4, 3, 3).view()).unwrap();
    l
}

fn shape_error(e: AffineError, must_contain: &[&str]) {
    let msg = e.to_string();
    assert!(matches!(e, AffineError::Shape { .. }), "{msg}");
    for s in must_contain {
        assert!(msg.contains(s), "'{msg}' does not name '{s}'");
    }
}

#[test]
fn forward_with_wrong_input_width() {
    let mut l = trained_layer();
    let before = state(&l);
    let e = l.forward(random::<f64>(4, 6, 9).view()).unwrap_err();
    shape_error(e, &["x is 4 × 6", "w is 5 × 3"]);
    assert_eq!(state(&l), before);
}

#[test]
fn backward_with_wrong_grad_width_or_batch() {
    let mut l = trained_layer();
    let before = state(&l);
    let e = l.backward(random::<f64>(4, 2, 9).view()).unwrap_err();
    shape_error(e, &["grad is 4 × 2", "x is 4 × 5", "w is 5 × 3"]);
    assert_eq!(state(&l), before);
    // batch differs from the cached input's
    let e = l.backward(random::<f64>(7, 3, 9).view()).unwrap_err();
    shape_error(e, &["grad is 7 × 3", "x is 4 × 5"]);
    assert_eq!(state(&l), before);
    let e = l
        .backward_accumulate(random::<f64>(7, 3, 9).view())
        .unwrap_err();
    shape_error(e, &["grad is 7 × 3"]);
    assert_eq!(state(&l), before);
}

#[test]
fn backward_before_forward() {
    let mut l = Affine::<f32>::new(5, 3, Init::Xavier, 1).unwrap();
    let w = l.param().w.to_owned();
    let e = l.backward(random::<f32>(4, 3, 9).view()).unwrap_err();
    assert_eq!(e, AffineError::BackwardBeforeForward);
    assert!(e.to_string().contains("forward before backward"));
    assert_eq!(l.param().w, w);
    assert!(l.grad_param().is_none() && l.cached_input().is_none());
}

#[test]
fn bias_of_wrong_length() {
    let e = Affine::from_params(Array2::<f64>::zeros((5, 3)), Array1::zeros(4)).unwrap_err();
    shape_error(e, &["w is 5 × 3", "length 4"]);
    let (x, w, b) = (
        Array2::<f32>::ones((2, 5)),
        Array2::<f32>::ones((5, 3)),
        Array1::<f32>::ones(4),
    );
    let mut y = Array2::from_elem((2, 3), 7.0f32);
    let e = forward_into(x.view(), w.view(), b.view(), y.view_mut()).unwrap_err();
    shape_error(e, &["b has length 4", "w is 5 × 3"]);
    assert!(y.iter().all(|&v| v == 7.0), "output written on error");
}

#[test]
fn output_buffers_of_wrong_shape() {
    let (x, w, b, g) = (
        random::<f64>(4, 5, 1),
        random::<f64>(5, 3, 2),
        Array1::<f64>::zeros(3),
        random::<f64>(4, 3, 3),
    );
    let mut y = Array2::from_elem((4, 2), 7.0);
    shape_error(
        forward_into(x.view(), w.view(), b.view(), y.view_mut()).unwrap_err(),
        &["y is 4 × 2"],
    );
    assert!(y.iter().all(|&v| v == 7.0));

    let mut dx = Array2::from_elem((4, 5), 7.0);
    let mut dw = Array2::from_elem((5, 3), 7.0);
    let mut db = Array1::from_elem(3, 7.0);
    let mut bad_dx = Array2::from_elem((5, 4), 7.0);
    let mut bad_dw = Array2::from_elem((3, 5), 7.0);
    let mut bad_db = Array1::from_elem(4, 7.0);
    let e = backward_into(
        x.view(),
        w.view(),
        g.view(),
        Some(bad_dx.view_mut()),
        dw.view_mut(),
        db.view_mut(),
        Accum::Replace,
    );
    shape_error(e.unwrap_err(), &["dx is 5 × 4", "x is 4 × 5"]);
    let e = backward_into(
        x.view(),
        w.view(),
        g.view(),
        Some(dx.view_mut()),
        bad_dw.view_mut(),
        db.view_mut(),
        Accum::Replace,
    );
    shape_error(e.unwrap_err(), &["dw is 3 × 5", "w is 5 × 3"]);
    let e = backward_into(
        x.view(),
        w.view(),
        g.view(),
        Some(dx.view_mut()),
        dw.view_mut(),
        bad_db.view_mut(),
        Accum::Add,
    );
    shape_error(e.unwrap_err(), &["db has length 4"]);
    let e = backward_into(
        x.view(),
        random::<f64>(6, 3, 4).view(),
        g.view(),
        None,
        dw.view_mut(),
        db.view_mut(),
        Accum::Add,
    );
    shape_error(e.unwrap_err(), &["x is 4 × 5", "w is 6 × 3"]);
    for a in [&dx, &dw, &bad_dx, &bad_dw] {
        assert!(a.iter().all(|&v| v == 7.0), "output written on error");
    }
    assert!(
        db.iter().chain(&bad_db).all(|&v| v == 7.0),
        "output written on error"
    );
}

#[test]
fn dimensions_beyond_blas_index() {
    let big = i32::MAX as usize + 1;
    // zero-stride broadcasts: huge shapes without the memory behind them
    let row = Array1::<f32>::ones(5);
    let x = row.broadcast((big, 5)).unwrap();
    let mut l = Affine::<f32>::new(5, 3, Init::He, 0).unwrap();
    let e = l.forward(x).unwrap_err();
    assert!(matches!(e, AffineError::TooLargeForBlas { .. }), "{e}");
    assert!(e.to_string().contains(&format!("x ({big} × 5)")), "{e}");
    assert!(l.cached_input().is_none());

    let g1 = Array1::<f32>::ones(3);
    l.forward(Array2::ones((2, 5)).view()).unwrap();
    let e = l.backward(g1.broadcast((big, 3)).unwrap()).unwrap_err();
    assert!(matches!(e, AffineError::TooLargeForBlas { .. }), "{e}");

    let e = Affine::<f32>::new(big, 1, Init::He, 0).unwrap_err();
    assert!(matches!(e, AffineError::TooLargeForBlas { .. }), "{e}");
    let e = Affine::<f32>::new(0, 4, Init::He, 0).unwrap_err();
    assert!(matches!(e, AffineError::InvalidArgument(_)), "{e}");
}

#[test]
fn nan_and_inf_propagate_without_panicking() {
    let mut l = Affine::<f64>::new(4, 3, Init::He, 5).unwrap();
    let mut x = random::<f64>(3, 4, 6);
    x[[1, 2]] = f64::NAN;
    x[[2, 0]] = f64::INFINITY;
    let y = l.forward(x.view()).unwrap().to_owned();
    assert!(y.row(0).iter().all(|v| v.is_finite()));
    assert!(y.row(1).iter().all(|v| v.is_nan()));
    assert!(y.row(2).iter().all(|v| !v.is_finite()));
    let mut g = random::<f64>(3, 3, 7);
    g[[0, 1]] = f64::INFINITY;
    let dx = l.backward(g.view()).unwrap().to_owned();
    assert!(dx.row(0).iter().all(|v| !v.is_finite()));
    assert!(dx.row(1).iter().all(|v| v.is_finite()));
    let gp = l.grad_param().unwrap();
    assert!(gp.b[1].is_infinite() && gp.b[0].is_finite());
    assert!(gp.w.column(1).iter().any(|v| v.is_nan()));
}

#[test]
fn empty_batch() {
    let mut l = trained_layer();
    let y = l.forward(Array2::<f64>::zeros((0, 5)).view()).unwrap();
    assert_eq!(y.dim(), (0, 3));
    let dx = l.backward(Array2::<f64>::zeros((0, 3)).view()).unwrap();
    assert_eq!(dx.dim(), (0, 5));
    let g = l.grad_param().unwrap();
    assert!(g.w.iter().all(|&v| v == 0.0) && g.b.iter().all(|&v| v == 0.0));
    // accumulating an empty batch changes nothing
    l.forward(random::<f64>(2, 5, 1).view()).unwrap();
    l.backward(random::<f64>(2, 3, 2).view()).unwrap();
    let (dw, db) = (
        l.grad_param().unwrap().w.to_owned(),
        l.grad_param().unwrap().b.to_owned(),
    );
    l.forward(Array2::<f64>::zeros((0, 5)).view()).unwrap();
    l.backward_accumulate(Array2::<f64>::zeros((0, 3)).view())
        .unwrap();
    assert_eq!(l.grad_param().unwrap().w, dw);
    assert_eq!(l.grad_param().unwrap().b, db);
}

#[test]
fn forward_input_without_an_input() {
    let mut l = Affine::<f64>::new(5, 3, Init::He, 1).unwrap();
    let before = state(&l);
    let e = l.forward_input().unwrap_err();
    assert!(matches!(e, AffineError::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("input_mut"), "{e}");
    assert_eq!(state(&l), before);
}

#[test]
fn writing_a_new_input_invalidates_the_cache() {
    let mut l = trained_layer();
    l.input_mut(2).fill(1.0);
    // the cached input of the last forward is gone: backward needs a forward first
    assert!(l.cached_input().is_none());
    let e = l.backward(random::<f64>(2, 3, 9).view()).unwrap_err();
    assert_eq!(e, AffineError::BackwardBeforeForward);
    l.forward_input().unwrap();
    assert_eq!(l.cached_input().unwrap(), Array2::<f64>::ones((2, 5)));
    l.backward(random::<f64>(2, 3, 9).view()).unwrap();
}
