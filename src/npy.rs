//! Weights interop with numpy: a layer's `w` and `b` as `.npy` files, and PyTorch's layout.
//!
//! numpy's and this crate's weight is `w: (in, out)` (`y = x·w + b`). PyTorch's `nn.Linear`
//! stores `weight: (out, in)` (`y = x·weightᵀ + bias`); [`WeightLayout::OutIn`] transposes it at
//! load time. Files may be C- or Fortran-ordered, `<f4` or `<f8`; a file of the other float type
//! than the layer's is converted (f64 → f32 rounds).

use crate::element::Element;
use crate::error::{fmt2, AffineError, Result};
use crate::layer::Affine;
use ndarray::{Array1, Array2, Dimension};
use ndarray_npy::{read_npy, write_npy, ReadNpyError, ReadableElement};
use std::path::Path;

/// How the weight in a file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightLayout {
    /// `(in, out)`: numpy's `x @ w`, and this crate's.
    #[default]
    InOut,
    /// `(out, in)`: PyTorch's `nn.Linear.weight` (`state_dict()["weight"].numpy()`).
    OutIn,
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> AffineError {
    AffineError::Io(format!("{what} {}: {e}", path.display()))
}

/// Reads an array of `T` from `path`, converting a file of the other float type.
fn read_any<T: Element, D: Dimension>(path: &Path) -> Result<ndarray::Array<T, D>> {
    match read_npy::<_, ndarray::Array<T, D>>(path) {
        Ok(a) => Ok(a),
        Err(ReadNpyError::WrongDescriptor(_)) => {
            let other = if T::NAME == "f32" {
                read_as::<f64, T, D>(path)
            } else {
                read_as::<f32, T, D>(path)
            };
            other.map_err(|e| io_error("reading", path, e))
        }
        Err(e) => Err(io_error("reading", path, e)),
    }
}

fn read_as<S, T, D>(path: &Path) -> std::result::Result<ndarray::Array<T, D>, ReadNpyError>
where
    S: ReadableElement + Copy + Into<f64>,
    T: Element,
    D: Dimension,
{
    read_npy::<_, ndarray::Array<S, D>>(path).map(|a| a.mapv(|v| T::from_f64(v.into())))
}

impl<T: Element> Affine<T> {
    /// Writes `w: (in, out)` and `b: (out)` as `.npy` files in the layer's float type (`np.load`
    /// reads them back).
    ///
    /// # Errors
    /// [`AffineError::Io`] naming the file that could not be written.
    pub fn save_npy(&self, w_path: impl AsRef<Path>, b_path: impl AsRef<Path>) -> Result<()> {
        let p = self.param();
        write_npy(w_path.as_ref(), &p.w).map_err(|e| io_error("writing", w_path.as_ref(), e))?;
        write_npy(b_path.as_ref(), &p.b).map_err(|e| io_error("writing", b_path.as_ref(), e))
    }

    /// A layer from a weight and a bias saved by numpy (or [`Affine::save_npy`]); `layout` says
    /// whether the weight is `(in, out)` or PyTorch's `(out, in)`.
    ///
    /// # Errors
    /// [`AffineError::Io`] naming a file that is missing or not a 2-D (weight) / 1-D (bias) float
    /// array; [`AffineError::Shape`] if the bias does not fit the weight.
    pub fn load_npy(
        w_path: impl AsRef<Path>,
        b_path: impl AsRef<Path>,
        layout: WeightLayout,
    ) -> Result<Self> {
        let w: Array2<T> = read_any(w_path.as_ref())?;
        let b: Array1<T> = read_any(b_path.as_ref())?;
        let w = match layout {
            WeightLayout::InOut => w,
            WeightLayout::OutIn => w.reversed_axes(),
        };
        if b.len() != w.ncols() {
            return Err(AffineError::Shape {
                op: "load_npy",
                detail: format!(
                    "the weight is {} as (in, out) ({layout:?} in {}), the bias has length {} \
                     ({}): the bias must have length out",
                    fmt2(w.dim()),
                    w_path.as_ref().display(),
                    b.len(),
                    b_path.as_ref().display()
                ),
            });
        }
        Affine::from_params(w, b)
    }
}
