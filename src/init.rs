//! Seeded weight initialisation.

use crate::element::Element;
use crate::error::{AffineError, Result};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// How [`crate::Affine::new`] draws `w` (the bias always starts at zero, as in the notebook).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `w ~ N(0, std²)`; `Normal { std: 1.0 }` is the notebook's `np.random.randn`.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Xavier/Glorot normal: `std = √(2 / (in + out))`, for tanh/sigmoid layers.
    Xavier,
    /// He/Kaiming normal: `std = √(2 / in)`, for ReLU layers.
    He,
}

impl Init {
    /// The standard deviation this scheme gives a `(in, out)` weight.
    pub fn std(self, in_dim: usize, out_dim: usize) -> f64 {
        match self {
            Init::Normal { std } => std,
            Init::Xavier => (2.0 / (in_dim + out_dim) as f64).sqrt(),
            Init::He => (2.0 / in_dim as f64).sqrt(),
        }
    }
}

/// Draws an `(in, out)` weight from `init` with a ChaCha8 generator seeded by `seed`: the same seed
/// gives the same weights on every platform, and the f32 weights are the f64 ones rounded.
pub(crate) fn draw<T: Element>(
    in_dim: usize,
    out_dim: usize,
    init: Init,
    seed: u64,
) -> Result<Array2<T>> {
    let std = init.std(in_dim, out_dim);
    if !std.is_finite() || std < 0.0 {
        return Err(AffineError::InvalidArgument(format!(
            "init {init:?} gives standard deviation {std} for a {in_dim} × {out_dim} weight"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok(Array2::from_shape_simple_fn((in_dim, out_dim), || {
        let z: f64 = StandardNormal.sample(&mut rng);
        T::from_f64(std * z)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_scaled() {
        let a: Array2<f64> = draw(200, 300, Init::He, 7).unwrap();
        let b: Array2<f64> = draw(200, 300, Init::He, 7).unwrap();
        let c: Array2<f64> = draw(200, 300, Init::He, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let n = a.len() as f64;
        let mean = a.sum() / n;
        let var = a.mapv(|v| (v - mean).powi(2)).sum() / n;
        // 60k samples: the sample std is within 2% of √(2/200) with overwhelming probability
        assert!(mean.abs() < 0.003, "{mean}");
        assert!((var.sqrt() / 0.1 - 1.0).abs() < 0.02, "{}", var.sqrt());
        let f: Array2<f32> = draw(200, 300, Init::He, 7).unwrap();
        assert!(f.iter().zip(&a).all(|(&x, &y)| x == y as f32));
    }

    #[test]
    fn rejects_bad_scale() {
        assert!(draw::<f32>(2, 2, Init::Normal { std: f64::NAN }, 0).is_err());
        assert!(draw::<f32>(2, 2, Init::Normal { std: -1.0 }, 0).is_err());
    }
}
