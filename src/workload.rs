//! The benchmark workloads: the grid of shapes, their FLOP counts, and each pass of the layer
//! beside its raw-GEMM floor on the same inputs. `benches/affine.rs` (criterion) and the
//! `affine-bench` report both time these, so their figures describe the same work.
//!
//! The floor is what the layer cannot avoid: the same GEMMs through ndarray/OpenBLAS alone, into
//! preallocated outputs, with no bias, no reduction and no bookkeeping:
//! forward `y ← x·w`, backward `dx ← grad·wᵀ` and `dw ← xᵀ·grad`, step = all three.

use crate::blas::gemm;
use crate::element::Element;
use crate::error::Result;
use crate::init::Init;
use crate::layer::Affine;
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::time::{Duration, Instant};

/// A layer shape: `x: (batch, inp)`, `w: (inp, out)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    /// Rows of `x`.
    pub batch: usize,
    /// Input features.
    pub inp: usize,
    /// Output features.
    pub out: usize,
}

impl Shape {
    /// `batch × inp × out`.
    pub const fn new(batch: usize, inp: usize, out: usize) -> Self {
        Shape { batch, inp, out }
    }

    /// Floating-point operations of `pass`: forward `2·B·I·O`, backward `4·B·I·O + B·O`
    /// (two GEMMs and the bias reduction), step the sum.
    pub fn flops(self, pass: Pass) -> u64 {
        let (b, i, o) = (self.batch as u64, self.inp as u64, self.out as u64);
        let fwd = 2 * b * i * o;
        let bwd = 4 * b * i * o + b * o;
        match pass {
            Pass::Forward => fwd,
            Pass::Backward => bwd,
            Pass::Step => fwd + bwd,
        }
    }

    /// Whether in = out.
    pub fn is_square(self) -> bool {
        self.inp == self.out
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.batch, self.inp, self.out)
    }
}

/// Which part of a training step is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    /// `y = x·w + b`.
    Forward,
    /// `dx = grad·wᵀ`, `dw = xᵀ·grad`, `db = Σ_batch grad`.
    Backward,
    /// Forward then backward.
    Step,
}

impl Pass {
    /// All three, in report order.
    pub const ALL: [Pass; 3] = [Pass::Forward, Pass::Backward, Pass::Step];

    /// `"forward"`, `"backward"` or `"step"`.
    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
            Pass::Step => "step",
        }
    }
}

/// What runs the pass: the crate's layer, or the bare GEMMs it is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Impl {
    /// [`Affine::forward_input`] / [`Affine::backward`]: the layer without copying its input
    /// (see [`Affine::input_mut`]).
    Layer,
    /// The same GEMMs through ndarray/OpenBLAS alone (see the module docs).
    Floor,
}

impl Impl {
    /// `"layer"` or `"floor"`.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Layer => "layer",
            Impl::Floor => "floor",
        }
    }
}

/// Batch sizes of the grid.
pub const BATCHES: [usize; 6] = [1, 8, 32, 128, 512, 2048];
/// Feature sizes (in = out) of the grid.
pub const FEATURES: [usize; 4] = [64, 256, 1024, 4096];
/// The non-square layers, each at these batches.
pub const NON_SQUARE: [(usize, usize); 2] = [(1024, 4096), (4096, 1024)];
/// Batches of the non-square layers.
pub const NON_SQUARE_BATCHES: [usize; 2] = [128, 1024];

/// The full grid: [`BATCHES`] × [`FEATURES`] (square), then [`NON_SQUARE`] at
/// [`NON_SQUARE_BATCHES`]; 28 shapes.
pub fn grid() -> Vec<Shape> {
    let mut shapes: Vec<Shape> = FEATURES
        .iter()
        .flat_map(|&f| BATCHES.iter().map(move |&b| Shape::new(b, f, f)))
        .collect();
    for &(i, o) in &NON_SQUARE {
        shapes.extend(NON_SQUARE_BATCHES.iter().map(|&b| Shape::new(b, i, o)));
    }
    shapes
}

/// The quick grid: every batch at features 64, 256 and 1024, and the non-square layers at batch
/// 128; 20 shapes whose every pass takes under ~10 ms on two cores.
pub fn quick_grid() -> Vec<Shape> {
    grid()
        .into_iter()
        .filter(|s| {
            (s.is_square() && s.inp <= 1024) || (!s.is_square() && s.batch == NON_SQUARE_BATCHES[0])
        })
        .collect()
}

/// Whether one iteration of `pass` on `shape` in `T` is expected to take over a second on the
/// 2-core development machine, where OpenBLAS reaches about 150 GFLOP/s in f32 and 75 in f64 on
/// the largest shapes: the suite skips those. In the grid that is 2048 × 4096 × 4096's f32 step
/// (206 GFLOP), f64 backward (137) and f64 step.
pub fn over_a_second<T: Element>(shape: Shape, pass: Pass) -> bool {
    let sustained = if T::NAME == "f32" { 150e9 } else { 75e9 };
    shape.flops(pass) as f64 / sustained > 1.0
}

/// The buffers of one benchmark case: a seeded layer, an input and upstream gradient, and the
/// floor's own outputs (the layer writes into its own).
#[derive(Debug)]
pub struct Workload<T: Element> {
    shape: Shape,
    layer: Affine<T>,
    x: Array2<T>,
    grad: Array2<T>,
    y: Array2<T>,
    dx: Array2<T>,
    dw: Array2<T>,
    /// Extra time, as a fraction of each layer pass's own time, spent spinning after it.
    slowdown: f64,
}

impl<T: Element> Workload<T> {
    /// Seeded buffers for `shape`; the layer has run one step, so its buffers are warm.
    ///
    /// # Errors
    /// As [`Affine::new`] for a zero feature size.
    pub fn new(shape: Shape, seed: u64) -> Result<Self> {
        let Shape { batch, inp, out } = shape;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut uniform = |r, c| {
            Array2::from_shape_simple_fn((r, c), || T::from_f64(rng.random_range(-1.0..1.0)))
        };
        let x = uniform(batch, inp);
        let grad = uniform(batch, out);
        let layer = Affine::new(inp, out, Init::He, seed ^ 0x5eed)?;
        let mut wl = Workload {
            shape,
            layer,
            x,
            grad,
            y: Array2::zeros((batch, out)),
            dx: Array2::zeros((batch, inp)),
            dw: Array2::zeros((inp, out)),
            slowdown: 0.0,
        };
        wl.layer.input_mut(batch).assign(&wl.x);
        wl.run(Pass::Step, Impl::Layer)?;
        wl.run(Pass::Step, Impl::Floor)?;
        Ok(wl)
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Makes every layer pass spin for `fraction` of its own time afterwards: a known, injected
    /// slowdown for validating the regression gate. Never used by the crate itself.
    pub fn inject_slowdown(&mut self, fraction: f64) {
        self.slowdown = fraction.max(0.0);
    }

    /// Runs `pass` once through `imp`.
    ///
    /// # Errors
    /// None in practice: the shapes were fixed at construction.
    pub fn run(&mut self, pass: Pass, imp: Impl) -> Result<()> {
        match imp {
            Impl::Layer => {
                let start = Instant::now();
                if pass != Pass::Backward {
                    // the input was written into the layer once (`input_mut`), as a data loader
                    // or the previous layer would write each step's
                    self.layer.forward_input()?;
                }
                if pass != Pass::Forward {
                    self.layer.backward(self.grad.view())?;
                }
                if self.slowdown > 0.0 {
                    spin(start.elapsed().mul_f64(self.slowdown));
                }
            }
            Impl::Floor => {
                let w = self.layer.param().w;
                if pass != Pass::Backward {
                    floor_gemm(&self.x.view(), &w, &mut self.y);
                }
                if pass != Pass::Forward {
                    floor_gemm(&self.grad.view(), &w.t(), &mut self.dx);
                    floor_gemm(&self.x.t(), &self.grad.view(), &mut self.dw);
                }
            }
        }
        Ok(())
    }
}

fn floor_gemm<T: Element>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, c: &mut Array2<T>) {
    gemm(T::one(), a, b, T::zero(), &mut c.view_mut());
}

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_the_promised_shapes() {
        let g = grid();
        assert_eq!(g.len(), 28);
        assert!(g.contains(&Shape::new(2048, 4096, 4096)));
        assert!(g.contains(&Shape::new(1024, 4096, 1024)));
        let q = quick_grid();
        assert_eq!(q.len(), 20);
        assert!(q.iter().all(|s| g.contains(s) && s.inp.max(s.out) <= 4096));
        assert!(!q.contains(&Shape::new(1024, 1024, 4096)));
    }

    #[test]
    fn flops_and_skips() {
        let s = Shape::new(2, 3, 4);
        assert_eq!(s.flops(Pass::Forward), 48);
        assert_eq!(s.flops(Pass::Backward), 96 + 8);
        assert_eq!(s.flops(Pass::Step), 48 + 104);
        let big = Shape::new(2048, 4096, 4096);
        assert!(over_a_second::<f64>(big, Pass::Step));
        assert!(over_a_second::<f64>(big, Pass::Backward));
        assert!(!over_a_second::<f64>(big, Pass::Forward));
        assert!(over_a_second::<f32>(big, Pass::Step));
        assert!(!over_a_second::<f32>(big, Pass::Backward));
        let skipped = grid()
            .into_iter()
            .flat_map(|s| Pass::ALL.map(|p| (s, p)))
            .map(|(s, p)| {
                usize::from(over_a_second::<f64>(s, p)) + usize::from(over_a_second::<f32>(s, p))
            })
            .sum::<usize>();
        assert_eq!(skipped, 3);
    }

    #[test]
    fn floor_and_layer_compute_the_same_products() {
        let mut wl = Workload::<f64>::new(Shape::new(5, 7, 3), 1).unwrap();
        wl.run(Pass::Step, Impl::Layer).unwrap();
        wl.run(Pass::Step, Impl::Floor).unwrap();
        let b = wl.layer.param().b.to_owned();
        let y = wl.layer.forward(wl.x.view()).unwrap().to_owned();
        let close = |a: &Array2<f64>, b: &Array2<f64>| {
            a.iter()
                .zip(b)
                .all(|(p, q)| (p - q).abs() <= 1e-12 * (1.0 + q.abs()))
        };
        assert!(close(&y, &(&wl.y + &b)));
        let dx = wl.layer.backward(wl.grad.view()).unwrap().to_owned();
        assert!(close(&dx, &wl.dx));
        assert!(close(&wl.layer.grad_param().unwrap().w.to_owned(), &wl.dw));
    }
}
