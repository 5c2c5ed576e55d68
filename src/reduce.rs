//! The batch reduction of the backward pass: `db = Σ_batch grad`, a column sum.
//!
//! Deterministic by construction: every column is summed by one task, top row to bottom row, so
//! the result is bit-identical between the serial and the parallel path, for any thread count,
//! any rayon scheduling and either memory order of `grad`. Parallelism splits the columns, never
//! a column's sum, so no partial sums and no scratch buffer are needed.

use crate::element::Element;
use crate::error::{fmt2, AffineError, Result};
use crate::Accum;
use ndarray::{ArrayView2, ArrayViewMut1, Axis, Zip};

/// Number of `grad` elements from which [`sum_rows_into`] splits the columns across rayon's
/// threads.
///
/// Measured on the 2-core development machine (`cargo bench --bench reduce`): below ~2M elements the
/// serial loop wins or ties, since rayon's fork-join and a cold worker cost 5–40 µs and the
/// serial loop already runs near memory bandwidth; the column split pulls ahead only above it.
pub const PAR_CUTOFF_ELEMENTS: usize = 1 << 21;

/// Columns handed to one rayon task at the least: keeps each task's rows long enough to vectorise.
const MIN_COLS_PER_TASK: usize = 256;

/// How [`sum_rows_into`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Par {
    /// Serial below [`PAR_CUTOFF_ELEMENTS`], rayon above it.
    #[default]
    Auto,
    /// Always serial.
    Seq,
    /// Always split across rayon's threads (when there are columns to split).
    Rayon,
}

/// `db ← Σ_rows grad` (or `db += Σ_rows grad` with [`Accum::Add`]).
///
/// Shapes: `grad: (batch, out)`, `db: (out)`. Batch 0 gives zeros (or leaves `db` as it was when
/// accumulating). Allocates nothing.
pub fn sum_rows_into<T: Element>(
    grad: ArrayView2<'_, T>,
    mut db: ArrayViewMut1<'_, T>,
    accum: Accum,
    par: Par,
) -> Result<()> {
    if db.len() != grad.ncols() {
        return Err(AffineError::Shape {
            op: "sum_rows",
            detail: format!(
                "grad is {} but db has length {} (must equal grad's columns)",
                fmt2(grad.dim()),
                db.len()
            ),
        });
    }
    if accum == Accum::Replace {
        db.fill(T::zero());
    }
    let parallel = match par {
        Par::Auto => grad.len() >= PAR_CUTOFF_ELEMENTS,
        Par::Seq => false,
        Par::Rayon => true,
    };
    if parallel && rayon::current_num_threads() > 1 && grad.ncols() > 1 {
        let min_cols = MIN_COLS_PER_TASK.min(grad.ncols().div_ceil(rayon::current_num_threads()));
        split_columns(grad, db, min_cols.max(1));
    } else {
        add_column_sums(grad, db);
    }
    Ok(())
}

fn split_columns<T: Element>(grad: ArrayView2<'_, T>, db: ArrayViewMut1<'_, T>, min_cols: usize) {
    let n = grad.ncols();
    if n < 2 * min_cols {
        add_column_sums(grad, db);
        return;
    }
    let mid = n / 2;
    let (g_left, g_right) = grad.split_at(Axis(1), mid);
    let (d_left, d_right) = db.split_at(Axis(0), mid);
    rayon::join(
        || split_columns(g_left, d_left, min_cols),
        || split_columns(g_right, d_right, min_cols),
    );
}

/// `db += Σ_rows grad`, each column summed top to bottom: the one summation order of the crate.
fn add_column_sums<T: Element>(grad: ArrayView2<'_, T>, mut db: ArrayViewMut1<'_, T>) {
    let row_major = grad.strides()[1].unsigned_abs() <= grad.strides()[0].unsigned_abs();
    if row_major {
        // rows are contiguous: add them one after another (vectorised across columns)
        for row in grad.rows() {
            Zip::from(&mut db).and(&row).for_each(|d, &g| *d = *d + g);
        }
    } else {
        // columns are contiguous: walk each column, still top to bottom
        Zip::from(&mut db)
            .and(grad.columns())
            .for_each(|d, col| *d = col.iter().fold(*d, |acc, &g| acc + g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    fn pseudo(rows: usize, cols: usize) -> Array2<f32> {
        // values of very different magnitudes so the summation order shows in the bits
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            let v = ((i * 7919 + j * 104_729) % 1000) as f32 - 500.0;
            v * 10f32.powi(((i + j) % 9) as i32 - 4)
        })
    }

    #[test]
    fn serial_and_parallel_are_bit_identical() {
        let g = pseudo(333, 1500);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let mut seq = Array1::zeros(1500);
        sum_rows_into(g.view(), seq.view_mut(), Accum::Replace, Par::Seq).unwrap();
        for _ in 0..20 {
            let mut par = Array1::from_elem(1500, f32::NAN);
            pool.install(|| sum_rows_into(g.view(), par.view_mut(), Accum::Replace, Par::Rayon))
                .unwrap();
            assert!(seq
                .iter()
                .zip(&par)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // column-major input: same order of additions, same bits
        let gf = g.t().as_standard_layout().into_owned();
        let mut colmajor = Array1::zeros(1500);
        sum_rows_into(gf.t(), colmajor.view_mut(), Accum::Replace, Par::Seq).unwrap();
        assert!(seq
            .iter()
            .zip(&colmajor)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn matches_a_double_precision_sum() {
        let g = pseudo(257, 65);
        let mut db = Array1::zeros(65);
        sum_rows_into(g.view(), db.view_mut(), Accum::Replace, Par::Rayon).unwrap();
        for j in 0..65 {
            let exact: f64 = g.column(j).iter().map(|&v| v as f64).sum();
            let scale: f64 = g.column(j).iter().map(|&v| (v as f64).abs()).sum();
            let err = (db[j] as f64 - exact).abs();
            assert!(err <= 257.0 * f32::EPSILON as f64 * scale, "col {j}: {err}");
        }
    }

    #[test]
    fn accumulates_and_handles_empty_batch() {
        let g = Array2::<f64>::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f64);
        let mut db = Array1::from(vec![1.0, -1.0]);
        sum_rows_into(g.view(), db.view_mut(), Accum::Add, Par::Auto).unwrap();
        assert_eq!(db, Array1::from(vec![1.0 + 6.0, -1.0 + 9.0]));
        let empty = Array2::<f64>::zeros((0, 2));
        sum_rows_into(empty.view(), db.view_mut(), Accum::Add, Par::Auto).unwrap();
        assert_eq!(db, Array1::from(vec![7.0, 8.0]));
        sum_rows_into(empty.view(), db.view_mut(), Accum::Replace, Par::Auto).unwrap();
        assert_eq!(db, Array1::from(vec![0.0, 0.0]));
    }

    #[test]
    fn wrong_length_is_an_error_and_writes_nothing() {
        let g = Array2::<f32>::ones((4, 3));
        let mut db = Array1::from_elem(2, 5.0f32);
        let e = sum_rows_into(g.view(), db.view_mut(), Accum::Replace, Par::Auto).unwrap_err();
        assert!(e.to_string().contains("4 × 3") && e.to_string().contains("length 2"));
        assert_eq!(db, Array1::from_elem(2, 5.0));
    }
}
