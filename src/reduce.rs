//! The batch reduction of the backward pass: `db = Σ_batch grad`, a column sum.
//!
//! Deterministic by construction: the rows of `grad` are cut into fixed chunks of
//! [`ROWS_PER_CHUNK`] rows (cut by the shape alone, never by the thread count), each chunk's
//! column sums are taken top row to bottom row, and the chunk sums are added in chunk order. The
//! serial and the parallel path run exactly these additions, so their results are bit-identical
//! for any thread count, any rayon scheduling and either memory order of `grad`.
//!
//! Parallelism splits the chunks (rows), not the columns: each task then streams a contiguous
//! block of a row-major `grad`. Splitting the columns instead made every task read half of each
//! row and jump a page ahead, which defeated the hardware prefetcher: 3× slower than serial at
//! 8M elements on the 2-core development machine.

use crate::element::Element;
use crate::error::{fmt2, AffineError, Result};
use crate::Accum;
use ndarray::{ArrayView2, ArrayViewMut1, Axis, Zip};

/// Rows summed by one task before its sums are added to the others', in chunk order.
pub const ROWS_PER_CHUNK: usize = 512;

/// Number of `grad` elements from which [`sum_rows_into`] (with [`Par::Auto`]) runs its chunks on
/// rayon's threads.
///
/// Measured on the 2-core development machine (`cargo bench --bench reduce`, f32, 1024 columns,
/// median µs, serial / rayon from inside the pool / rayon from the main thread): 1M elements
/// 98–106 / 68 / 97, 2M 187–227 / 128 / 146, 4M 413–421 / 236 / 324, 8M 1110–1428 / 725 / 1050.
/// Below 1M elements there is at most one chunk per thread's worth of work and waking a worker
/// (5–40 µs) eats the gain. The README has the whole table.
pub const PAR_CUTOFF_ELEMENTS: usize = 1 << 20;

/// How [`sum_rows_into`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Par {
    /// Serial below [`PAR_CUTOFF_ELEMENTS`], rayon above it.
    #[default]
    Auto,
    /// Always serial.
    Seq,
    /// Always on rayon's threads (when there is more than one chunk).
    Rayon,
}

/// `db ← Σ_rows grad` (or `db += Σ_rows grad` with [`Accum::Add`]).
///
/// Shapes: `grad: (batch, out)`, `db: (out)`. Batch 0 gives zeros (or leaves `db` as it was when
/// accumulating). The additions are those of the module docs whatever `par` says. Allocates
/// nothing in steady state: the chunk sums of a batch over [`ROWS_PER_CHUNK`] rows live in a
/// scratch buffer the calling thread keeps and reuses.
///
/// # Errors
/// [`AffineError::Shape`] if `db`'s length ≠ `grad`'s columns; nothing is written then.
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
    let (rows, cols) = grad.dim();
    if rows <= ROWS_PER_CHUNK || cols == 0 {
        add_column_sums(grad, db);
        return Ok(());
    }
    let parallel = match par {
        Par::Auto => grad.len() >= PAR_CUTOFF_ELEMENTS,
        Par::Seq => false,
        Par::Rayon => true,
    } && rayon::current_num_threads() > 1;
    // Chunk 0 adds straight into db; chunks 1.. sum into their own rows of the scratch.
    let (first, rest) = grad.split_at(Axis(0), ROWS_PER_CHUNK);
    let n_rest = rows.div_ceil(ROWS_PER_CHUNK) - 1;
    T::with_scratch(n_rest * cols, |scratch| {
        if parallel {
            rayon::join(
                || add_column_sums(first, db.view_mut()),
                || sum_chunks_par(rest, scratch, cols),
            );
        } else {
            add_column_sums(first, db.view_mut());
            for (chunk, part) in rest
                .axis_chunks_iter(Axis(0), ROWS_PER_CHUNK)
                .zip(scratch.chunks_mut(cols))
            {
                add_column_sums(chunk, part.into());
            }
        }
        for part in scratch.chunks(cols) {
            Zip::from(&mut db).and(part).for_each(|d, &p| *d = *d + p);
        }
    });
    Ok(())
}

/// Sums each `ROWS_PER_CHUNK`-row chunk of `grad` into its own `cols`-long piece of `parts`,
/// splitting the chunks in halves across rayon's threads.
fn sum_chunks_par<T: Element>(grad: ArrayView2<'_, T>, parts: &mut [T], cols: usize) {
    let chunks = parts.len() / cols;
    if chunks <= 1 {
        add_column_sums(grad, parts.into());
        return;
    }
    let mid = chunks / 2;
    let (g_lo, g_hi) = grad.split_at(Axis(0), mid * ROWS_PER_CHUNK);
    let (p_lo, p_hi) = parts.split_at_mut(mid * cols);
    rayon::join(
        || sum_chunks_par(g_lo, p_lo, cols),
        || sum_chunks_par(g_hi, p_hi, cols),
    );
}

/// `db += Σ_rows grad`, each column summed top to bottom.
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

    fn bits(a: &Array1<f32>) -> Vec<u32> {
        a.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn serial_and_parallel_are_bit_identical() {
        // 2100 rows: five chunks, the last one short
        let g = pseudo(2100, 300);
        let mut seq = Array1::zeros(300);
        sum_rows_into(g.view(), seq.view_mut(), Accum::Replace, Par::Seq).unwrap();
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for _ in 0..10 {
                let mut par = Array1::from_elem(300, f32::NAN);
                pool.install(|| {
                    sum_rows_into(g.view(), par.view_mut(), Accum::Replace, Par::Rayon)
                })
                .unwrap();
                assert_eq!(bits(&seq), bits(&par), "{threads} threads");
            }
        }
        // column-major input: same order of additions, same bits
        let gf = g.t().as_standard_layout().into_owned();
        let mut colmajor = Array1::zeros(300);
        sum_rows_into(gf.t(), colmajor.view_mut(), Accum::Replace, Par::Rayon).unwrap();
        assert_eq!(bits(&seq), bits(&colmajor));
        // accumulating: the same additions onto the old values, serial or parallel
        let start = pseudo(1, 300).row(0).to_owned();
        let (mut a, mut b) = (start.clone(), start);
        sum_rows_into(g.view(), a.view_mut(), Accum::Add, Par::Seq).unwrap();
        sum_rows_into(g.view(), b.view_mut(), Accum::Add, Par::Rayon).unwrap();
        assert_eq!(bits(&a), bits(&b));
    }

    #[test]
    fn matches_a_double_precision_sum() {
        for rows in [257, 512, 513, 1500] {
            let g = pseudo(rows, 65);
            let mut db = Array1::zeros(65);
            sum_rows_into(g.view(), db.view_mut(), Accum::Replace, Par::Rayon).unwrap();
            for j in 0..65 {
                let exact: f64 = g.column(j).iter().map(|&v| v as f64).sum();
                let scale: f64 = g.column(j).iter().map(|&v| (v as f64).abs()).sum();
                let err = (db[j] as f64 - exact).abs();
                assert!(
                    err <= rows as f64 * f32::EPSILON as f64 * scale,
                    "{rows} rows, col {j}: {err}"
                );
            }
        }
    }

    #[test]
    fn many_chunks_in_parallel_from_nested_tasks() {
        // two reductions at once on one pool: a stolen task may find its thread's scratch taken
        let g = pseudo(5000, 40);
        let mut want = Array1::zeros(40);
        sum_rows_into(g.view(), want.view_mut(), Accum::Replace, Par::Seq).unwrap();
        let (mut a, mut b) = (Array1::zeros(40), Array1::zeros(40));
        let (ra, rb) = rayon::join(
            || sum_rows_into(g.view(), a.view_mut(), Accum::Replace, Par::Rayon),
            || sum_rows_into(g.view(), b.view_mut(), Accum::Replace, Par::Rayon),
        );
        ra.unwrap();
        rb.unwrap();
        assert_eq!(bits(&a), bits(&want));
        assert_eq!(bits(&b), bits(&want));
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
