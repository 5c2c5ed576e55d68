//! Replays the numpy notebook the crate started from, with its exact inputs
//! (`tests/fixtures/seed_golden.json`), and prints what the notebook printed: `out`, `param`,
//! `dx` and `grad_param`, with the correct bias gradient `db = Σ_batch grad` (the notebook's
//! `db = sum(b)` printed 0.0). Run: `cargo run --release --example notebook`.

use affine_blas::{Affine, Result};
use ndarray::{Array1, Array2};
use serde_json::Value;

const GOLDEN: &str = include_str!("../tests/fixtures/seed_golden.json");

fn mat(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = v
        .as_array()
        .map(|r| {
            r.iter()
                .map(|row| {
                    row.as_array()
                        .map_or(vec![], |c| c.iter().filter_map(Value::as_f64).collect())
                })
                .collect()
        })
        .unwrap_or_default();
    let (r, c) = (rows.len(), rows.first().map_or(0, Vec::len));
    Array2::from_shape_vec((r, c), rows.into_iter().flatten().collect())
        .unwrap_or_else(|_| Array2::zeros((0, 0)))
}

fn numpy(a: &Array2<f64>) -> String {
    let rows: Vec<String> = a
        .rows()
        .into_iter()
        .map(|r| {
            format!(
                "[{}]",
                r.iter()
                    .map(|v| format!("{v:11.8}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    format!("array([{}])", rows.join(",\n       "))
}

fn numpy1(a: &Array1<f64>) -> String {
    format!(
        "array([{}])",
        a.iter()
            .map(|v| format!("{v:.8}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn main() -> Result<()> {
    let golden: Value = serde_json::from_str(GOLDEN).expect("the fixture is valid JSON");
    let a = &golden["arrays"];
    let (x, w, grad) = (mat(&a["x"]), mat(&a["w"]), mat(&a["grad"]));
    let b = Array1::zeros(w.ncols());

    println!(
        "In [92]: x  # demo_data (batch_size, input_dim)\n{}\n",
        numpy(&x)
    );

    let mut affine = Affine::from_params(w, b)?;
    let out = affine.forward(x.view())?.to_owned();
    println!("In [93]: out = affine(x)\n{}\n", numpy(&out));

    let p = affine.param();
    println!(
        "In [94]: affine.param\n{{'w': {},\n 'b': {}}}\n",
        numpy(&p.w.to_owned()),
        numpy1(&p.b.to_owned())
    );

    println!("In [95]: grad  # demo_grad\n{}\n", numpy(&grad));

    let dx = affine.backward(grad.view())?.to_owned();
    println!("In [96]: dx = affine.backward(grad)\n{}\n", numpy(&dx));

    if let Some(g) = affine.grad_param() {
        println!(
            "In [98]: affine.grad_param\n{{'x': {},\n 'w': {},\n 'b': {}}}",
            numpy(&g.x.to_owned()),
            numpy(&g.w.to_owned()),
            numpy1(&g.b.to_owned())
        );
        println!(
            "         (db = grad summed over the batch; the notebook's db = sum(b) printed 0.0)"
        );
    }
    Ok(())
}
