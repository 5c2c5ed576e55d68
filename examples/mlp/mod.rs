//! A two-layer perceptron on the crate's `Affine` layers, shared by `examples/train_mlp.rs` and the
//! training test: `logits = relu(x·w₁ + b₁)·w₂ + b₂`, softmax cross-entropy, SGD.
//!
//! All buffers are sized to the largest batch seen and reused, so a steady-state step allocates
//! nothing (the layers and the optimiser do the same).
#![allow(dead_code)]

use affine_blas::{Affine, Init, Result, Sgd};
use ndarray::{s, Array2, ArrayView2, Axis, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// A labelled data set: `x: (n, features)`, `labels[i] < classes`.
pub struct Data {
    pub x: Array2<f32>,
    pub labels: Vec<usize>,
    pub classes: usize,
}

/// `classes` interleaved spiral arms of `per_class` points each in the plane, with Gaussian-ish
/// noise: the classic data set no linear model separates.
pub fn spirals(per_class: usize, classes: usize, noise: f64, seed: u64) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = per_class * classes;
    let mut x = Array2::zeros((n, 2));
    let mut labels = Vec::with_capacity(n);
    for c in 0..classes {
        for i in 0..per_class {
            let r = i as f64 / per_class as f64;
            // sum of three uniforms: a cheap bell-shaped jitter
            let jitter: f64 = (0..3).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>() / 3.0;
            let t = (c as f64 * 4.0 + r * 4.0) + jitter * noise * 4.0;
            let row = c * per_class + i;
            x[[row, 0]] = (r * t.sin()) as f32;
            x[[row, 1]] = (r * t.cos()) as f32;
            labels.push(c);
        }
    }
    Data { x, labels, classes }
}

/// Wall time of one training step, split.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimes {
    pub forward: Duration,
    pub backward: Duration,
    pub update: Duration,
}

impl std::ops::AddAssign for StepTimes {
    fn add_assign(&mut self, o: StepTimes) {
        self.forward += o.forward;
        self.backward += o.backward;
        self.update += o.update;
    }
}

/// The network and its scratch buffers.
pub struct Mlp {
    pub l1: Affine<f32>,
    pub l2: Affine<f32>,
    /// ∂L/∂logits: (batch, classes).
    dlogits: Array2<f32>,
    /// ∂L/∂(x·w₁ + b₁): (batch, hidden).
    dz: Array2<f32>,
}

impl Mlp {
    /// `inputs → hidden → classes`, He-initialised from `seed`.
    pub fn new(inputs: usize, hidden: usize, classes: usize, seed: u64) -> Result<Mlp> {
        Ok(Mlp {
            l1: Affine::new(inputs, hidden, Init::He, seed)?,
            l2: Affine::new(hidden, classes, Init::Xavier, seed + 1)?,
            dlogits: Array2::zeros((0, classes)),
            dz: Array2::zeros((0, hidden)),
        })
    }

    fn reserve(&mut self, batch: usize) {
        if self.dz.nrows() < batch {
            self.dz = Array2::zeros((batch, self.l1.out_dim()));
            self.dlogits = Array2::zeros((batch, self.l2.out_dim()));
        }
    }

    /// Forward pass and loss: returns (mean cross-entropy, correct predictions); leaves
    /// ∂L/∂logits in `dlogits`.
    pub fn forward_loss(
        &mut self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
    ) -> Result<(f64, usize)> {
        let batch = x.nrows();
        self.reserve(batch);
        let z = self.l1.forward(x)?;
        // relu(z) written straight into the second layer's input: no copy of the activations
        let mut h = self.l2.input_mut(batch);
        Zip::from(&mut h).and(&z).for_each(|h, &z| *h = z.max(0.0));
        let logits = self.l2.forward_input()?;
        let dl = self.dlogits.slice_mut(s![..batch, ..]);
        Ok(softmax_cross_entropy(logits, labels, dl))
    }

    /// One SGD step on a mini-batch: returns (mean loss, correct predictions) before the update,
    /// and the time spent in each phase.
    pub fn train_step(
        &mut self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        opt: &mut Sgd<f32>,
    ) -> Result<(f64, usize, StepTimes)> {
        let batch = x.nrows();
        let t0 = Instant::now();
        let (loss, correct) = self.forward_loss(x, labels)?;
        let t1 = Instant::now();
        self.backward_top(batch)?;
        self.backward_bottom(batch)?;
        let t2 = Instant::now();
        opt.step(&mut self.layers())?;
        let t3 = Instant::now();
        let times = StepTimes {
            forward: t1 - t0,
            backward: t2 - t1,
            update: t3 - t2,
        };
        Ok((loss, correct, times))
    }

    /// Backward through the second layer and the ReLU, after [`Mlp::forward_loss`] on `batch`
    /// rows: stores dw₂, db₂ and ∂L/∂(x·w₁ + b₁).
    pub fn backward_top(&mut self, batch: usize) -> Result<()> {
        self.l2.backward(self.dlogits.slice(s![..batch, ..]))?;
        let missing = affine_blas::AffineError::BackwardBeforeForward;
        let dh = self.l2.grad_param().ok_or(missing.clone())?.x;
        // h = relu(z), the second layer's cached input
        let h = self.l2.cached_input().ok_or(missing)?;
        let mut dz = self.dz.slice_mut(s![..batch, ..]);
        // relu′: pass the gradient where the unit was active
        Zip::from(&mut dz)
            .and(&dh)
            .and(&h)
            .for_each(|dz, &dh, &h| *dz = if h > 0.0 { dh } else { 0.0 });
        Ok(())
    }

    /// Backward through the first layer, after [`Mlp::backward_top`]: stores dw₁, db₁.
    pub fn backward_bottom(&mut self, batch: usize) -> Result<()> {
        self.l1.backward(self.dz.slice(s![..batch, ..]))?;
        Ok(())
    }

    /// Both layers, first to last (for the optimiser or gradient averaging).
    pub fn layers(&mut self) -> [&mut Affine<f32>; 2] {
        [&mut self.l1, &mut self.l2]
    }

    /// Mean loss and accuracy over `data`, in batches of `batch`.
    pub fn evaluate(&mut self, data: &Data, batch: usize) -> Result<(f64, f64)> {
        let n = data.x.nrows();
        let (mut loss, mut correct) = (0.0, 0);
        for start in (0..n).step_by(batch.max(1)) {
            let end = (start + batch).min(n);
            let (l, c) =
                self.forward_loss(data.x.slice(s![start..end, ..]), &data.labels[start..end])?;
            loss += l * (end - start) as f64;
            correct += c;
        }
        Ok((loss / n as f64, correct as f64 / n as f64))
    }
}

/// Mean softmax cross-entropy of `logits: (batch, classes)` against `labels`; writes
/// ∂L/∂logits = (softmax − onehot) / batch into `dlogits`. Returns (loss, correct predictions).
pub fn softmax_cross_entropy(
    logits: ArrayView2<'_, f32>,
    labels: &[usize],
    mut dlogits: ndarray::ArrayViewMut2<'_, f32>,
) -> (f64, usize) {
    let batch = logits.nrows().max(1) as f32;
    let (mut loss, mut correct) = (0.0f64, 0);
    for ((row, mut d), &label) in logits
        .axis_iter(Axis(0))
        .zip(dlogits.axis_iter_mut(Axis(0)))
        .zip(labels)
    {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        Zip::from(&mut d).and(&row).for_each(|d, &v| {
            *d = (v - max).exp();
            sum += *d;
        });
        let argmax = row
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0;
        correct += usize::from(argmax == label);
        loss -= f64::from((d[label] / sum).ln());
        d.mapv_inplace(|e| e / sum / batch);
        d[label] -= 1.0 / batch;
    }
    (loss / f64::from(batch), correct)
}

/// Shuffles `0..n` in place with `rng` (Fisher–Yates).
pub fn shuffle(order: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
}

/// Gathers the rows `idx` of `data` into the first rows of `xb` and into `yb` (reused buffers;
/// `xb` grows only when `idx` has more rows than it).
pub fn gather(data: &Data, idx: &[usize], xb: &mut Array2<f32>, yb: &mut Vec<usize>) {
    if xb.nrows() < idx.len() {
        *xb = Array2::zeros((idx.len(), data.x.ncols()));
    }
    yb.clear();
    for (r, &i) in idx.iter().enumerate() {
        xb.row_mut(r).assign(&data.x.row(i));
        yb.push(data.labels[i]);
    }
}

/// Trains `mlp` for `epochs` over `data` in shuffled mini-batches of `batch`, calling
/// `on_epoch(epoch, mean loss, accuracy)` after each. Returns the summed step times and steps.
pub fn train(
    mlp: &mut Mlp,
    data: &Data,
    opt: &mut Sgd<f32>,
    epochs: usize,
    batch: usize,
    seed: u64,
    mut on_epoch: impl FnMut(usize, f64, f64),
) -> Result<(StepTimes, usize)> {
    let n = data.x.nrows();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut xb, mut yb) = (
        Array2::zeros((batch, data.x.ncols())),
        Vec::with_capacity(batch),
    );
    let (mut times, mut steps) = (StepTimes::default(), 0);
    for epoch in 0..epochs {
        shuffle(&mut order, &mut rng);
        let (mut loss, mut correct) = (0.0, 0);
        for idx in order.chunks(batch) {
            gather(data, idx, &mut xb, &mut yb);
            let (l, c, t) = mlp.train_step(xb.slice(s![..idx.len(), ..]), &yb, opt)?;
            loss += l * idx.len() as f64;
            correct += c;
            times += t;
            steps += 1;
        }
        on_epoch(epoch, loss / n as f64, correct as f64 / n as f64);
    }
    Ok((times, steps))
}
