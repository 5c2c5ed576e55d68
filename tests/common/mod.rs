//! Independent references and helpers shared by the integration tests.
#![allow(dead_code)]

use affine_blas::Element;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Uniform values in [-1, 1) from a seeded generator.
pub fn random<T: Element>(rows: usize, cols: usize, seed: u64) -> Array2<T> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || T::from_f64(rng.random_range(-1.0..1.0)))
}

pub fn random1<T: Element>(len: usize, seed: u64) -> Array1<T> {
    random::<T>(1, len, seed).row(0).to_owned()
}

pub fn to_f64<T: Element>(a: ArrayView2<'_, T>) -> Array2<f64> {
    a.mapv(|v| v.to_f64().unwrap_or(f64::NAN))
}

/// Naive triple loop in f64: returns `a·b` and `|a|·|b|` (the scale of each entry's rounding error).
pub fn naive_matmul(a: &Array2<f64>, b: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!(b.nrows(), k);
    let mut c = Array2::zeros((m, n));
    let mut scale = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut abs) = (0.0, 0.0);
            for p in 0..k {
                acc += a[[i, p]] * b[[p, j]];
                abs += (a[[i, p]] * b[[p, j]]).abs();
            }
            c[[i, j]] = acc;
            scale[[i, j]] = abs;
        }
    }
    (c, scale)
}

/// Asserts `|got − want| ≤ 2·(k + 2)·ε_T·scale + tiny` element-wise, where `scale` bounds the sum
/// of absolute terms: the standard error bound of a length-k dot product in precision T.
pub fn assert_close<T: Element>(
    what: &str,
    got: ArrayView2<'_, T>,
    want: &Array2<f64>,
    scale: &Array2<f64>,
    k: usize,
) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    let eps = T::epsilon().to_f64().unwrap_or(1e-7);
    for ((idx, &g), (&w, &s)) in got.indexed_iter().zip(want.iter().zip(scale.iter())) {
        let g = g.to_f64().unwrap_or(f64::NAN);
        let tol = 2.0 * (k as f64 + 2.0) * eps * s + 1e-30;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{idx:?}]: got {g}, want {w} (diff {:e}, tol {tol:e}, k {k})",
            (g - w).abs()
        );
    }
}

pub fn assert_close1<T: Element>(
    what: &str,
    got: ArrayView1<'_, T>,
    want: &Array1<f64>,
    scale: &Array1<f64>,
    k: usize,
) {
    let n = got.len();
    assert_close(
        what,
        got.into_shape_with_order((1, n)).unwrap(),
        &want
            .view()
            .into_shape_with_order((1, n))
            .unwrap()
            .to_owned(),
        &scale
            .view()
            .into_shape_with_order((1, n))
            .unwrap()
            .to_owned(),
        k,
    );
}

/// Ways a matrix can be laid out in memory, each reaching a different path of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row-major, contiguous.
    C,
    /// Column-major (a transposed view): BLAS `Trans`, no copy.
    F,
    /// Every other row of a larger matrix: row-major with a leading stride, no copy.
    RowStrided,
    /// Every other column: BLAS cannot read it, the kernels copy it.
    ColStrided,
    /// Rows reversed (negative stride): BLAS cannot read it, the kernels copy it.
    Reversed,
}

pub const LAYOUTS: [Layout; 5] = [
    Layout::C,
    Layout::F,
    Layout::RowStrided,
    Layout::ColStrided,
    Layout::Reversed,
];

/// A matrix stored so that [`Laid::view`] has the requested layout.
pub struct Laid<T> {
    store: Array2<T>,
    layout: Layout,
}

impl<T: Element> Laid<T> {
    pub fn new(a: &Array2<T>, layout: Layout) -> Self {
        let (r, c) = a.dim();
        let store = match layout {
            Layout::C => a.clone(),
            Layout::F => a.t().as_standard_layout().into_owned(),
            Layout::RowStrided => {
                let mut s = Array2::from_elem((2 * r, c), T::nan());
                s.slice_mut(s![..;2, ..]).assign(a);
                s
            }
            Layout::ColStrided => {
                let mut s = Array2::from_elem((r, 2 * c), T::nan());
                s.slice_mut(s![.., ..;2]).assign(a);
                s
            }
            // standard layout: `to_owned` would keep the reversed view's negative strides, and
            // the view below would then be plain row-major
            Layout::Reversed => a.slice(s![..;-1, ..]).as_standard_layout().into_owned(),
        };
        Laid { store, layout }
    }

    pub fn view(&self) -> ArrayView2<'_, T> {
        debug_assert!(self.layout != Layout::Reversed || self.store.is_standard_layout());
        match self.layout {
            Layout::C => self.store.view(),
            Layout::F => self.store.t(),
            Layout::RowStrided => self.store.slice(s![..;2, ..]),
            Layout::ColStrided => self.store.slice(s![.., ..;2]),
            Layout::Reversed => self.store.slice(s![..;-1, ..]),
        }
    }

    pub fn view_mut(&mut self) -> ArrayViewMut2<'_, T> {
        match self.layout {
            Layout::C => self.store.view_mut(),
            Layout::F => self.store.view_mut().reversed_axes(),
            Layout::RowStrided => self.store.slice_mut(s![..;2, ..]),
            Layout::ColStrided => self.store.slice_mut(s![.., ..;2]),
            Layout::Reversed => self.store.slice_mut(s![..;-1, ..]),
        }
    }
}
