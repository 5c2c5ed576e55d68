//! Weights interop with numpy: files written by numpy itself (`tests/fixtures/npy/`, made by
//! `tests/fixtures/npy/make.py` from the notebook's arrays) load and reproduce the notebook's
//! forward output; save → load round-trips; bad files are clear errors.

use affine_blas::{Affine, AffineError, WeightLayout};
use ndarray::{Array1, Array2};
use serde_json::Value;
use std::path::PathBuf;

const GOLDEN: &str = include_str!("fixtures/seed_golden.json");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/npy")
        .join(name)
}

fn golden(name: &str) -> Array2<f64> {
    let v: Value = serde_json::from_str(GOLDEN).unwrap();
    let rows: Vec<Vec<f64>> = serde_json::from_value(v["arrays"][name].clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((r, c), rows.into_iter().flatten().collect()).unwrap()
}

fn assert_within(got: &Array2<f64>, want: &Array2<f64>, tol: f64) {
    assert_eq!(got.dim(), want.dim());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{g} vs {w}");
    }
}

#[test]
fn numpy_files_reproduce_the_notebook() {
    let (x, out) = (golden("x"), golden("out"));
    // float64 C order, float64 Fortran order, and PyTorch's (out, in) layout
    for (w, layout) in [
        ("notebook_w.npy", WeightLayout::InOut),
        ("notebook_w_fortran.npy", WeightLayout::InOut),
        ("notebook_w_torch.npy", WeightLayout::OutIn),
    ] {
        let mut l = Affine::<f64>::load_npy(fixture(w), fixture("notebook_b.npy"), layout).unwrap();
        assert_eq!(l.param().w, golden("w"), "{w}: exact float64 weights");
        let y = l.forward(x.view()).unwrap().to_owned();
        assert_within(&y, &out, 1e-14);
    }
    // a float32 file into an f32 layer, and the float64 file converted into one
    for w in ["notebook_w_f32.npy", "notebook_w.npy"] {
        let mut l =
            Affine::<f32>::load_npy(fixture(w), fixture("notebook_b.npy"), WeightLayout::InOut)
                .unwrap();
        let y = l
            .forward(x.mapv(|v| v as f32).view())
            .unwrap()
            .mapv(f64::from);
        assert_within(&y, &out, 1e-5);
    }
}

#[test]
fn save_then_load_round_trips() {
    let dir = std::env::temp_dir().join(format!("affine-blas-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = golden("w");
    let b = Array1::from(vec![0.5, -1.0, 2.0, 0.0]);
    let l64 = Affine::from_params(w.clone(), b.clone()).unwrap();
    l64.save_npy(dir.join("w64.npy"), dir.join("b64.npy"))
        .unwrap();
    let back = Affine::<f64>::load_npy(
        dir.join("w64.npy"),
        dir.join("b64.npy"),
        WeightLayout::InOut,
    )
    .unwrap();
    assert_eq!(
        (back.param().w, back.param().b),
        (l64.param().w, l64.param().b)
    );
    let l32 = Affine::from_params(w.mapv(|v| v as f32), b.mapv(|v| v as f32)).unwrap();
    l32.save_npy(dir.join("w32.npy"), dir.join("b32.npy"))
        .unwrap();
    let back = Affine::<f32>::load_npy(
        dir.join("w32.npy"),
        dir.join("b32.npy"),
        WeightLayout::InOut,
    )
    .unwrap();
    assert_eq!(
        (back.param().w, back.param().b),
        (l32.param().w, l32.param().b)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_are_clear_errors() {
    let missing = Affine::<f64>::load_npy(
        fixture("nope.npy"),
        fixture("notebook_b.npy"),
        WeightLayout::InOut,
    )
    .unwrap_err();
    assert!(
        matches!(missing, AffineError::Io(_)) && missing.to_string().contains("nope.npy"),
        "{missing}"
    );
    // a 1-D file where the 2-D weight belongs
    let e = Affine::<f64>::load_npy(
        fixture("notebook_b.npy"),
        fixture("notebook_b.npy"),
        WeightLayout::InOut,
    )
    .unwrap_err();
    assert!(matches!(e, AffineError::Io(_)), "{e}");
    // the torch file read as (in, out): 4 × 3 against a bias of 4
    let e = Affine::<f64>::load_npy(
        fixture("notebook_w_torch.npy"),
        fixture("notebook_b.npy"),
        WeightLayout::InOut,
    )
    .unwrap_err();
    assert!(
        matches!(e, AffineError::Shape { .. }) && e.to_string().contains("4 × 3"),
        "{e}"
    );
}
