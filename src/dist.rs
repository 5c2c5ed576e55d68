//! Data-parallel training over MPI (feature `mpi`): every process (rank) runs the same layers on
//! its shard of the batch, the gradients are averaged across ranks, and every rank applies the
//! same update.
//!
//! With `n_r` rows on rank `r` and `g_r` the gradient of the mean loss over them, the gradient of
//! the mean loss over the whole batch of `N = Σ n_r` rows is
//!
//! ```text
//! g = Σ_r n_r·g_r / N
//! ```
//!
//! so shards may be uneven (a batch not divisible by the number of ranks). [`GradAverager`] packs
//! `n_r·dw` and `n_r·db` of every layer and `n_r` itself into one buffer, sums it across ranks with
//! one `MPI_Allreduce`, and writes `Σ/N` back into each layer's `dw`, `db`. Its two buffers are
//! kept across steps: a steady-state step allocates nothing.
//!
//! A failing rank must not leave the others waiting in a collective forever:
//! [`abort_on_panic`] makes a panic anywhere end the whole job with `MPI_Abort`.

use crate::element::Element;
use crate::error::{AffineError, Result};
use crate::layer::Affine;
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::Equivalence;
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};

/// Averages the gradients of a list of layers across the ranks of a communicator, weighted by
/// each rank's number of rows (see the module docs). Reusable across steps.
#[derive(Debug, Default)]
pub struct GradAverager<T> {
    send: Vec<T>,
    recv: Vec<T>,
}

impl<T: Element + Equivalence> GradAverager<T> {
    /// An averager with no buffers yet (they are sized at the first [`GradAverager::pack`]).
    pub fn new() -> Self {
        GradAverager {
            send: Vec::new(),
            recv: Vec::new(),
        }
    }

    /// Elements exchanged per all-reduce for these layers: every `dw` and `db`, and the row count.
    pub fn len_for(layers: &[&mut Affine<T>]) -> usize {
        layers
            .iter()
            .map(|l| l.in_dim() * l.out_dim() + l.out_dim())
            .sum::<usize>()
            + 1
    }

    /// Writes `rows·dw`, `rows·db` of every layer and `rows` into the send buffer. A rank with
    /// no rows sends zeros (whatever its gradients hold).
    ///
    /// # Errors
    /// [`AffineError::InvalidArgument`] if `rows` cannot be represented exactly in `T` (over
    /// 2²⁴ for `f32`).
    pub fn pack(&mut self, layers: &mut [&mut Affine<T>], rows: usize) -> Result<()> {
        let n = T::from_f64(rows as f64);
        if n.to_f64() != Some(rows as f64) {
            return Err(AffineError::InvalidArgument(format!(
                "{rows} rows cannot be counted exactly in {}",
                T::NAME
            )));
        }
        let len = Self::len_for(layers);
        if self.send.len() != len {
            self.send = vec![T::zero(); len];
            self.recv = vec![T::zero(); len];
        }
        let mut off = 0;
        for layer in layers.iter_mut() {
            let (dw, db) = layer.grads_mut();
            for v in dw.iter().chain(db.iter()) {
                self.send[off] = if rows == 0 { T::zero() } else { n * *v };
                off += 1;
            }
        }
        self.send[off] = n;
        Ok(())
    }

    /// Sums the send buffers of all ranks into every rank's receive buffer (blocking).
    pub fn all_reduce<C: CommunicatorCollectives>(&mut self, comm: &C) {
        comm.all_reduce_into(&self.send[..], &mut self.recv[..], SystemOperation::sum());
    }

    /// Starts the same sum without waiting for it: overlap it with other work, then wait on the
    /// request before [`GradAverager::unpack`].
    pub fn start_all_reduce<'a, C, Sc>(&'a mut self, comm: &C, scope: Sc) -> Request<'a, [T], Sc>
    where
        C: CommunicatorCollectives,
        Sc: Scope<'a>,
    {
        comm.immediate_all_reduce_into(
            scope,
            &self.send[..],
            &mut self.recv[..],
            SystemOperation::sum(),
        )
    }

    /// Writes the averaged gradients `Σ_r n_r·g_r / N` into the layers' `dw`, `db`; returns the
    /// total row count `N`.
    ///
    /// # Errors
    /// [`AffineError::Shape`] if `layers` are not those packed (a different element count);
    /// [`AffineError::InvalidArgument`] if no rank had any rows. Nothing is written on error.
    pub fn unpack(&self, layers: &mut [&mut Affine<T>]) -> Result<usize> {
        let len = Self::len_for(layers);
        if len != self.recv.len() {
            return Err(AffineError::Shape {
                op: "dist::unpack",
                detail: format!(
                    "the layers hold {} gradient elements and a row count, the buffer {}",
                    len - 1,
                    self.recv.len()
                ),
            });
        }
        let total = self.recv[len - 1];
        let total_rows = total.to_f64().unwrap_or(0.0);
        if total_rows < 1.0 {
            return Err(AffineError::InvalidArgument(
                "no rank had any rows: the gradients have no average".into(),
            ));
        }
        let mut off = 0;
        for layer in layers.iter_mut() {
            let (mut dw, mut db) = layer.grads_mut();
            for v in dw.iter_mut().chain(db.iter_mut()) {
                *v = self.recv[off] / total;
                off += 1;
            }
        }
        Ok(total_rows as usize)
    }

    /// [`GradAverager::pack`], [`GradAverager::all_reduce`] and [`GradAverager::unpack`]: after
    /// it every rank's layers hold the gradients of the whole batch. Returns its row count.
    ///
    /// # Errors
    /// As `pack` and `unpack`.
    pub fn all_reduce_mean<C: CommunicatorCollectives>(
        &mut self,
        comm: &C,
        layers: &mut [&mut Affine<T>],
        rows: usize,
    ) -> Result<usize> {
        self.pack(layers, rows)?;
        self.all_reduce(comm);
        self.unpack(layers)
    }
}

/// Copies every layer's `w` and `b` from rank `root` to all ranks (at the start of training, so
/// all ranks begin from the same parameters).
pub fn broadcast_params<T, C>(comm: &C, root: i32, layers: &mut [&mut Affine<T>])
where
    T: Element + Equivalence,
    C: Communicator,
{
    let root = comm.process_at_rank(root);
    for layer in layers.iter_mut() {
        let (w, b, _, _) = layer.params_and_grads_mut();
        root.broadcast_into(w);
        root.broadcast_into(b);
    }
}

/// The `[lo, hi)` rows of a batch of `batch` rows that rank `rank` of `size` takes: contiguous
/// shards whose sizes differ by at most one (the first `batch % size` ranks take one more).
pub fn shard(batch: usize, rank: usize, size: usize) -> (usize, usize) {
    let size = size.max(1);
    let (q, r) = (batch / size, batch % size);
    let lo = rank * q + rank.min(r);
    let hi = lo + q + usize::from(rank < r);
    (lo.min(batch), hi.min(batch))
}

/// Makes a panic on this rank end the whole MPI job at once (`MPI_Abort` on the world
/// communicator with `code`), after the usual panic message. Without it the other ranks wait in
/// their next collective forever.
pub fn abort_on_panic(code: i32) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        SimpleCommunicator::world().abort(code);
    }));
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn shards_cover_the_batch_once() {
        for batch in 0..40 {
            for size in 1..7 {
                let mut next = 0;
                for rank in 0..size {
                    let (lo, hi) = shard(batch, rank, size);
                    assert_eq!(lo, next, "batch {batch}, size {size}, rank {rank}");
                    assert!(hi - lo == batch / size || hi - lo == batch / size + 1);
                    next = hi;
                }
                assert_eq!(next, batch);
            }
        }
    }
}
