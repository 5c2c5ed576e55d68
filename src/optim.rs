//! Parameter updates: stochastic gradient descent with optional momentum and weight decay,
//! applied in place through BLAS level 1 (`axpy`, `scal`), allocating nothing after the first
//! step.
//!
//! With learning rate η, momentum μ and weight decay λ, for each parameter `p` with gradient `g`
//! (the same rule as PyTorch's `SGD` without dampening or Nesterov):
//!
//! - without momentum: `p ← (1 − η·λ)·p − η·g`;
//! - with momentum: `v ← μ·v + g + λ·p`, then `p ← p − η·v` (`v` starts at zero).

use crate::element::Element;
use crate::error::{AffineError, Result};
use crate::layer::Affine;
use ndarray::{Array1, Array2};

/// SGD's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate η (> 0).
    pub lr: f64,
    /// Momentum μ in `[0, 1)`; 0 turns it off.
    pub momentum: f64,
    /// L2 weight decay λ (≥ 0), applied to `w` and `b` alike.
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }

    /// With momentum μ.
    pub fn momentum(self, momentum: f64) -> Self {
        SgdConfig { momentum, ..self }
    }

    /// With weight decay λ.
    pub fn weight_decay(self, weight_decay: f64) -> Self {
        SgdConfig {
            weight_decay,
            ..self
        }
    }

    fn check(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr > 0.0
            && (0.0..1.0).contains(&self.momentum)
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(AffineError::InvalidArgument(format!(
                "SGD needs lr > 0, 0 ≤ momentum < 1 and weight_decay ≥ 0, got {self:?}"
            )))
        }
    }
}

/// `p ← update(p, g, v)` for one contiguous parameter, as in the module docs.
///
/// `velocity` is `Some` exactly when momentum is on.
///
/// # Errors
/// [`AffineError::Shape`] if the three lengths differ; [`AffineError::InvalidArgument`] for a bad
/// configuration. Nothing is written on error.
pub fn sgd_update<T: Element>(
    cfg: &SgdConfig,
    param: &mut [T],
    grad: &[T],
    velocity: Option<&mut [T]>,
) -> Result<()> {
    cfg.check()?;
    let v_len = velocity.as_ref().map(|v| v.len());
    if grad.len() != param.len() || v_len.is_some_and(|n| n != param.len()) {
        return Err(AffineError::Shape {
            op: "sgd",
            detail: format!(
                "param has {} elements, grad {}, velocity {}: all must be equal",
                param.len(),
                grad.len(),
                v_len.map_or_else(|| "none".to_string(), |n| n.to_string())
            ),
        });
    }
    let (lr, wd) = (T::from_f64(cfg.lr), T::from_f64(cfg.weight_decay));
    match velocity {
        None => {
            if cfg.weight_decay != 0.0 {
                T::scal(T::one() - lr * wd, param);
            }
            T::axpy(-lr, grad, param);
        }
        Some(v) => {
            T::scal(T::from_f64(cfg.momentum), v);
            T::axpy(T::one(), grad, v);
            if cfg.weight_decay != 0.0 {
                T::axpy(wd, param, v);
            }
            T::axpy(-lr, v, param);
        }
    }
    Ok(())
}

/// An SGD optimiser for a fixed list of [`Affine`] layers; it owns their momentum buffers.
#[derive(Debug, Clone)]
pub struct Sgd<T: Element> {
    cfg: SgdConfig,
    /// Velocity of each layer's `(w, b)`, made at the first step (momentum only).
    velocity: Vec<(Array2<T>, Array1<T>)>,
}

impl<T: Element> Sgd<T> {
    /// An optimiser with `cfg`.
    ///
    /// # Errors
    /// [`AffineError::InvalidArgument`] for a bad configuration.
    pub fn new(cfg: SgdConfig) -> Result<Self> {
        cfg.check()?;
        Ok(Sgd {
            cfg,
            velocity: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> SgdConfig {
        self.cfg
    }

    /// Sets the learning rate (e.g. for a schedule).
    ///
    /// # Errors
    /// [`AffineError::InvalidArgument`] unless `lr` is finite and positive; nothing changes then.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        let cfg = SgdConfig { lr, ..self.cfg };
        cfg.check()?;
        self.cfg = cfg;
        Ok(())
    }

    /// Applies one update to every layer from its stored gradients (`dw`, `db` of the last
    /// backward pass, or their accumulation). Pass the same layers in the same order each step.
    ///
    /// # Errors
    /// [`AffineError::Shape`] if the layers differ in number or shape from the first step's;
    /// checked for all layers before any is updated.
    pub fn step(&mut self, layers: &mut [&mut Affine<T>]) -> Result<()> {
        let momentum = self.cfg.momentum != 0.0;
        if momentum && self.velocity.is_empty() {
            self.velocity = layers
                .iter()
                .map(|l| {
                    (
                        Array2::zeros((l.in_dim(), l.out_dim())),
                        Array1::zeros(l.out_dim()),
                    )
                })
                .collect();
        }
        if momentum {
            let same = self.velocity.len() == layers.len()
                && self
                    .velocity
                    .iter()
                    .zip(layers.iter())
                    .all(|((vw, _), l)| vw.dim() == (l.in_dim(), l.out_dim()));
            if !same {
                return Err(AffineError::Shape {
                    op: "sgd",
                    detail: format!(
                        "the optimiser was first stepped with {} layers of shapes {:?}, now {} of \
                         shapes {:?}",
                        self.velocity.len(),
                        self.velocity
                            .iter()
                            .map(|(v, _)| v.dim())
                            .collect::<Vec<_>>(),
                        layers.len(),
                        layers
                            .iter()
                            .map(|l| (l.in_dim(), l.out_dim()))
                            .collect::<Vec<_>>()
                    ),
                });
            }
        }
        for (i, layer) in layers.iter_mut().enumerate() {
            let mut v = self.velocity.get_mut(i);
            let (w, b, dw, db) = layer.params_and_grads_mut();
            let vw = v.as_mut().and_then(|(vw, _)| vw.as_slice_mut());
            sgd_update(&self.cfg, w, dw, vw)?;
            let vb = v.as_mut().and_then(|(_, vb)| vb.as_slice_mut());
            sgd_update(&self.cfg, b, db, vb)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formulas() {
        // plain, with decay: p ← (1 − ηλ)p − ηg
        let cfg = SgdConfig::new(0.5).weight_decay(0.1);
        let mut p = vec![1.0f64, -2.0, 4.0];
        sgd_update(&cfg, &mut p, &[1.0, 1.0, -2.0], None).unwrap();
        assert_eq!(p, vec![0.95 - 0.5, -1.9 - 0.5, 3.8 + 1.0]);
        // momentum: v ← μv + g + λp; p ← p − ηv; two steps by hand
        let cfg = SgdConfig::new(0.5).momentum(0.5).weight_decay(0.25);
        let (mut p, mut v) = (vec![2.0f32], vec![0.0f32]);
        sgd_update(&cfg, &mut p, &[1.0], Some(&mut v)).unwrap();
        assert_eq!((p[0], v[0]), (2.0 - 0.5 * 1.5, 1.5));
        sgd_update(&cfg, &mut p, &[1.0], Some(&mut v)).unwrap();
        let v2 = 0.5 * 1.5 + 1.0 + 0.25 * 1.25;
        assert_eq!((p[0], v[0]), (1.25 - 0.5 * v2, v2));
    }

    #[test]
    fn rejects_bad_input_and_writes_nothing() {
        let mut p = vec![1.0f32; 3];
        assert!(sgd_update(&SgdConfig::new(0.1), &mut p, &[1.0; 2], None).is_err());
        assert!(sgd_update(&SgdConfig::new(-0.1), &mut p, &[1.0; 3], None).is_err());
        assert!(sgd_update(&SgdConfig::new(0.1).momentum(1.0), &mut p, &[1.0; 3], None).is_err());
        let mut v = vec![0.0f32; 2];
        assert!(sgd_update(&SgdConfig::new(0.1), &mut p, &[1.0; 3], Some(&mut v)).is_err());
        assert_eq!(p, vec![1.0; 3]);
        assert!(Sgd::<f32>::new(SgdConfig::new(f64::NAN)).is_err());
    }
}
