//! `affine-dp`: the example MLP trained data-parallel over MPI (feature `mpi`), and the checks and
//! measurements of that training. Run it under `mpirun`; every rank runs this same program.
//!
//! ```text
//! mpirun -np R affine-dp train [--epochs E] [--batch B] [--hidden H] [--points P] [--overlap]
//! mpirun -np R affine-dp check [--steps N] [--batch B]
//! mpirun -np R affine-dp fail --rank R --step S [--error]
//! mpirun -np R affine-dp allreduce [--max-elems N] [--reps K]
//! ```
//!
//! - `train`: spirals, each global mini-batch of B rows split into contiguous shards (uneven when
//!   R does not divide B), gradients averaged with [`GradAverager`], the same SGD step on every
//!   rank. Prints per-rank throughput and the share of step time spent communicating.
//!   `--overlap` starts the all-reduce of the top layer's gradients while the bottom layer's
//!   backward runs (non-blocking `MPI_Iallreduce`).
//! - `check`: the averaged gradients against a single process's full-batch gradients, and after
//!   N data-parallel steps, parameters bit-identical across ranks and close to a single-process
//!   run. Exits 1 (on every rank) if any comparison fails.
//! - `fail`: trains, and rank R panics (or returns an error) at step S: the job must end at once
//!   with a non-zero exit instead of hanging.
//! - `allreduce`: all-reduce time against gradient size.

#[path = "../../../examples/mlp/mod.rs"]
mod mlp;

use affine_blas::dist::{self, GradAverager};
use affine_blas::{blas, Sgd, SgdConfig};
use mlp::{gather, shuffle, spirals, Data, Mlp};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::topology::{Communicator, SimpleCommunicator};
use ndarray::{s, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts heap allocations, so that `check` can show a steady-state data-parallel step makes none.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: affine-dp train|check|fail|allreduce [options] (see the source's docs)";

fn main() -> ExitCode {
    let Some(universe) = mpi::initialize() else {
        eprintln!("affine-dp: MPI is already initialised or failed to start");
        return ExitCode::FAILURE;
    };
    dist::abort_on_panic(101);
    let world = universe.world();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&world, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("affine-dp rank {}: {e}", world.rank());
            // the other ranks may be waiting in a collective: end them all
            world.abort(2)
        }
    }
}

fn run(world: &SimpleCommunicator, args: &[String]) -> Res<ExitCode> {
    let threads = threads_per_rank();
    blas::set_openblas_threads(threads);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    // every worker runs once now, so that none starts up (and allocates) in the middle of a
    // measured step on a busy machine
    rayon::broadcast(|_| ());
    let opts = Opts::parse(args.get(1..).unwrap_or_default())?;
    match args.first().map(String::as_str) {
        Some("train") => train(world, &opts),
        Some("check") => check(world, &opts),
        Some("fail") => fail(world, &opts),
        Some("allreduce") => allreduce(world, &opts),
        _ => Err(USAGE.into()),
    }
}

/// The cores of this machine shared among the ranks on it (mpirun says how many there are), so
/// that OpenBLAS's and rayon's threads do not oversubscribe the cores.
fn threads_per_rank() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    (cores / local).max(1)
}

/// `--name value` options and `--flag`s.
struct Opts(Vec<(String, Option<String>)>);

impl Opts {
    fn parse(args: &[String]) -> Res<Opts> {
        let mut v = Vec::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            if !a.starts_with("--") {
                return Err(format!("unexpected argument {a:?}\n{USAGE}").into());
            }
            let value = it.next_if(|n| !n.starts_with("--")).cloned();
            v.push((a.clone(), value));
        }
        Ok(Opts(v))
    }

    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Res<T> {
        match self.0.iter().find(|(n, _)| n == name) {
            None => Ok(default),
            Some((_, Some(v))) => v
                .parse()
                .map_err(|_| format!("{name}: cannot read {v:?}").into()),
            Some((_, None)) => Err(format!("{name} needs a value").into()),
        }
    }
}

/// Time spent in one step, split.
#[derive(Default, Clone, Copy)]
struct Split {
    compute: Duration,
    comm: Duration,
}

/// One data-parallel step on this rank's shard of the global batch `idx`; returns (summed loss
/// over the shard, correct predictions, shard rows) and adds to `split`.
#[allow(clippy::too_many_arguments)]
fn dp_step(
    world: &SimpleCommunicator,
    net: &mut Mlp,
    avg: &mut [GradAverager<f32>; 2],
    opt: &mut Sgd<f32>,
    data: &Data,
    idx: &[usize],
    bufs: &mut (Array2<f32>, Vec<usize>),
    overlap: bool,
    split: &mut Split,
) -> Res<(f64, usize, usize)> {
    let (lo, hi) = dist::shard(idx.len(), world.rank() as usize, world.size() as usize);
    let rows = hi - lo;
    gather(data, &idx[lo..hi], &mut bufs.0, &mut bufs.1);
    let t0 = Instant::now();
    let (loss, correct) = net.forward_loss(bufs.0.slice(s![..rows, ..]), &bufs.1)?;
    net.backward_top(rows)?;
    let comm;
    if overlap {
        // the top layer's gradients travel while the bottom layer's backward runs
        let [a1, a2] = avg;
        a2.pack(&mut [&mut net.l2], rows)?;
        comm = mpi::request::scope(|sc| -> Res<Duration> {
            let req = a2.start_all_reduce(world, sc);
            net.backward_bottom(rows)?;
            a1.pack(&mut [&mut net.l1], rows)?;
            let tc = Instant::now();
            a1.all_reduce(world);
            req.wait_without_status();
            Ok(tc.elapsed())
        })?;
        a2.unpack(&mut [&mut net.l2])?;
        a1.unpack(&mut [&mut net.l1])?;
    } else {
        net.backward_bottom(rows)?;
        let tc = Instant::now();
        avg[0].all_reduce_mean(world, &mut net.layers(), rows)?;
        comm = tc.elapsed();
    }
    opt.step(&mut net.layers())?;
    split.comm += comm;
    split.compute += t0.elapsed() - comm;
    Ok((loss * rows as f64, correct, rows))
}

fn new_run(hidden: usize) -> Res<(Mlp, Sgd<f32>)> {
    let net = Mlp::new(2, hidden, 3, 42)?;
    let opt = Sgd::new(SgdConfig::new(0.1).momentum(0.9).weight_decay(1e-4))?;
    Ok((net, opt))
}

fn train(world: &SimpleCommunicator, o: &Opts) -> Res<ExitCode> {
    let (epochs, batch, hidden, points) = (
        o.num("--epochs", 30usize)?,
        o.num("--batch", 64usize)?,
        o.num("--hidden", 64usize)?,
        o.num("--points", 300usize)?,
    );
    let overlap = o.flag("--overlap");
    let (rank, size) = (world.rank(), world.size());
    let data = spirals(points, 3, 0.2, 7);
    let (mut net, mut opt) = new_run(hidden)?;
    dist::broadcast_params(world, 0, &mut net.layers());
    let mut avg = [GradAverager::new(), GradAverager::new()];
    let mut bufs = (Array2::zeros((batch, 2)), Vec::with_capacity(batch));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut order: Vec<usize> = (0..data.x.nrows()).collect();
    let (mut split, mut steps, mut rows_done) = (Split::default(), 0usize, 0usize);
    let start = Instant::now();
    for epoch in 0..epochs {
        shuffle(&mut order, &mut rng);
        let mut sums = [0.0f64; 3]; // loss·rows, correct, rows
        for idx in order.chunks(batch) {
            let (l, c, r) = dp_step(
                world, &mut net, &mut avg, &mut opt, &data, idx, &mut bufs, overlap, &mut split,
            )?;
            sums[0] += l;
            sums[1] += c as f64;
            sums[2] += r as f64;
            steps += 1;
            rows_done += r;
        }
        let mut total = [0.0f64; 3];
        world.all_reduce_into(&sums[..], &mut total[..], SystemOperation::sum());
        if rank == 0 && ((epoch + 1) % 10 == 0 || epoch + 1 == epochs) {
            println!(
                "epoch {:>3}: loss {:.4}, accuracy {:.1}%",
                epoch + 1,
                total[0] / total[2],
                100.0 * total[1] / total[2]
            );
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let per_step = |d: Duration| d.as_secs_f64() * 1e6 / steps.max(1) as f64;
    let mine = [
        rows_done as f64 / wall,
        per_step(split.compute),
        per_step(split.comm),
    ];
    let mut all = vec![0.0f64; 3 * size as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    if rank == 0 {
        let (loss, acc) = net.evaluate(&data, 256)?;
        println!(
            "{size} ranks, global batch {batch}, hidden {hidden}, {steps} steps in {wall:.2} s{}; \
             final training loss {loss:.4}, accuracy {:.1}%",
            if overlap {
                ", overlapped all-reduce"
            } else {
                ""
            },
            acc * 100.0
        );
        println!("rank  rows/s   compute µs/step  comm µs/step  comm share");
        for (r, v) in all.chunks(3).enumerate() {
            println!(
                "{r:>4}  {:>7.0}  {:>15.1}  {:>12.1}  {:>9.1}%",
                v[0],
                v[1],
                v[2],
                100.0 * v[2] / (v[1] + v[2])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Largest `|a − b| / (1 + |b|)` over two equally long lists.
fn max_rel_diff<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f64 {
    a.zip(b)
        .map(|(x, y)| f64::from((x - y).abs()) / (1.0 + f64::from(y.abs())))
        .fold(0.0, f64::max)
}

/// The parameters (or, with `grads`, the gradients) of both layers, flattened.
fn flat(net: &mut Mlp, grads: bool) -> Vec<f32> {
    let mut v = Vec::new();
    for l in net.layers() {
        if grads {
            let (dw, db) = l.grads_mut();
            v.extend(dw.iter().chain(db.iter()));
        } else {
            let p = l.param();
            v.extend(p.w.iter().chain(p.b.iter()));
        }
    }
    v
}

fn check(world: &SimpleCommunicator, o: &Opts) -> Res<ExitCode> {
    let (steps, batch) = (o.num("--steps", 40usize)?, o.num("--batch", 103usize)?);
    let (rank, size) = (world.rank(), world.size());
    const GRAD_TOL: f64 = 1e-5;
    const PARAM_TOL: f64 = 1e-5;
    let data = spirals(100, 3, 0.2, 7);
    let mut avg = [GradAverager::new(), GradAverager::new()];
    let mut bufs = (Array2::zeros((batch, 2)), Vec::with_capacity(batch));

    // 1. one step's averaged gradients against the full batch's in one process
    let idx: Vec<usize> = (0..batch).collect();
    let (mut net, _) = new_run(32)?;
    let (lo, hi) = dist::shard(batch, rank as usize, size as usize);
    gather(&data, &idx[lo..hi], &mut bufs.0, &mut bufs.1);
    net.forward_loss(bufs.0.slice(s![..hi - lo, ..]), &bufs.1)?;
    net.backward_top(hi - lo)?;
    net.backward_bottom(hi - lo)?;
    let total = avg[0].all_reduce_mean(world, &mut net.layers(), hi - lo)?;
    let (mut single, _) = new_run(32)?;
    gather(&data, &idx, &mut bufs.0, &mut bufs.1);
    single.forward_loss(bufs.0.slice(s![..batch, ..]), &bufs.1)?;
    single.backward_top(batch)?;
    single.backward_bottom(batch)?;
    let grad_diff = max_rel_diff(flat(&mut net, true).iter(), flat(&mut single, true).iter());

    // 2. `steps` data-parallel steps against the same steps in one process
    let (mut net, mut opt) = new_run(32)?;
    let (mut single, mut opt1) = new_run(32)?;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut order: Vec<usize> = (0..data.x.nrows()).collect();
    let mut split = Split::default();
    let (mut done, mut steady_allocations) = (0, 0);
    'outer: loop {
        shuffle(&mut order, &mut rng);
        for idx in order.chunks(batch) {
            if done == steps {
                break 'outer;
            }
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            dp_step(
                world, &mut net, &mut avg, &mut opt, &data, idx, &mut bufs, false, &mut split,
            )?;
            if done >= 5 {
                // after warm-up: buffers sized, optimiser velocities made
                steady_allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
            }
            gather(&data, idx, &mut bufs.0, &mut bufs.1);
            single.train_step(bufs.0.slice(s![..idx.len(), ..]), &bufs.1, &mut opt1)?;
            done += 1;
        }
    }
    let mine = flat(&mut net, false);
    let mut root = mine.clone();
    world.process_at_rank(0).broadcast_into(&mut root[..]);
    let differing = mine
        .iter()
        .zip(&root)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count() as u64;
    let param_diff = max_rel_diff(mine.iter(), flat(&mut single, false).iter());

    // every rank decides the same way
    let local_fail = u64::from(
        grad_diff > GRAD_TOL || param_diff > PARAM_TOL || differing > 0 || steady_allocations > 0,
    );
    let mut fails = 0u64;
    world.all_reduce_into(&local_fail, &mut fails, SystemOperation::sum());
    let mut worst = [0.0f64; 2];
    world.all_reduce_into(
        &[grad_diff, param_diff][..],
        &mut worst[..],
        SystemOperation::max(),
    );
    let mut differ_total = 0u64;
    world.all_reduce_into(&differing, &mut differ_total, SystemOperation::sum());
    let mut alloc_total = 0u64;
    world.all_reduce_into(
        &(steady_allocations as u64),
        &mut alloc_total,
        SystemOperation::sum(),
    );
    if rank == 0 {
        println!(
            "check, {size} ranks, batch {batch} ({total} rows averaged): gradients vs one process: \
             max rel diff {:.2e} (tol {GRAD_TOL:.0e}); after {steps} steps: {differ_total} \
             parameters differ from rank 0's bits, max rel diff vs one process {:.2e} (tol \
             {PARAM_TOL:.0e}); {alloc_total} heap allocations in steps 6 to {steps} -> {}",
            worst[0],
            worst[1],
            if fails == 0 { "ok" } else { "FAILED" }
        );
    }
    Ok(if fails == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn fail(world: &SimpleCommunicator, o: &Opts) -> Res<ExitCode> {
    let (bad_rank, at) = (o.num("--rank", 1i32)?, o.num("--step", 5usize)?);
    let data = spirals(100, 3, 0.2, 7);
    let (mut net, mut opt) = new_run(32)?;
    let mut avg = [GradAverager::new(), GradAverager::new()];
    let mut bufs = (Array2::zeros((64, 2)), Vec::with_capacity(64));
    let order: Vec<usize> = (0..data.x.nrows()).collect();
    let mut split = Split::default();
    for step in 0.. {
        if step == at && world.rank() == bad_rank {
            if o.flag("--error") {
                return Err(format!("injected error at step {step}").into());
            }
            panic!("injected panic at step {step}");
        }
        let idx = &order[(step * 64) % 256..][..64];
        dp_step(
            world, &mut net, &mut avg, &mut opt, &data, idx, &mut bufs, false, &mut split,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn allreduce(world: &SimpleCommunicator, o: &Opts) -> Res<ExitCode> {
    let (max_elems, reps) = (
        o.num("--max-elems", 1usize << 24)?,
        o.num("--reps", 20usize)?,
    );
    if world.rank() == 0 {
        println!(
            "all-reduce (sum, f32), {} ranks, slowest rank, median of {reps}",
            world.size()
        );
        println!("  elements        MB    median ms    GB/s (size / time)");
    }
    let mut n = 1024usize;
    while n <= max_elems {
        let send = vec![1.0f32; n];
        let mut recv = vec![0.0f32; n];
        let mut times = Vec::with_capacity(reps);
        for rep in 0..reps + 2 {
            world.barrier();
            let t = Instant::now();
            world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
            let mine = t.elapsed().as_secs_f64();
            let mut slowest = 0.0f64;
            world.all_reduce_into(&mine, &mut slowest, SystemOperation::max());
            if rep >= 2 {
                times.push(slowest);
            }
        }
        if recv.iter().any(|&v| v != world.size() as f32) {
            return Err("all-reduce gave a wrong sum".into());
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        if world.rank() == 0 {
            let mb = (n * 4) as f64 / 1e6;
            println!(
                "{n:>10}  {mb:>8.2}  {:>11.3}  {:>8.2}",
                med * 1e3,
                mb / 1e3 / med
            );
        }
        n *= 4;
    }
    Ok(ExitCode::SUCCESS)
}
