//! The sweep: every shape, dtype and pass of the layer beside its raw-GEMM floor, and what it
//! writes: the printed table, github-action-benchmark JSON, CSV and a markdown table.

use crate::timing::{measure_pair, Stats};
use affine_blas::peak::Peak;
use affine_blas::workload::{over_a_second, Impl, Pass, Shape, Workload};
use affine_blas::{blas, Element};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shapes to sweep.
    pub shapes: Vec<Shape>,
    /// `"quick"` or `"full"`, for the header.
    pub mode: &'static str,
    /// `"f32"`, `"f64"` or both.
    pub dtypes: Vec<&'static str>,
    /// OpenBLAS and rayon threads.
    pub threads: usize,
    /// Timing budget of one pass (layer and floor together).
    pub budget: Duration,
    /// Injected slowdown of the layer (fraction of its own time), to validate the gate.
    pub slowdown: f64,
}

/// One measured pass.
#[derive(Debug, Clone)]
pub struct Row {
    /// `"f32"` or `"f64"`.
    pub dtype: &'static str,
    /// The layer's shape.
    pub shape: Shape,
    /// Forward, backward or step.
    pub pass: Pass,
    /// The layer's time per iteration.
    pub layer: Stats,
    /// The raw GEMMs' time per iteration.
    pub floor: Stats,
    /// Floor time over layer time of neighbouring samples (1 = as fast as the bare GEMMs): the
    /// figure the regression gate watches.
    pub vs_floor: Stats,
}

impl Row {
    /// GFLOP/s at the median of `s`.
    pub fn gflops(&self, s: &Stats) -> f64 {
        self.shape.flops(self.pass) as f64 / s.median / 1e9
    }

    /// Half the interquartile range of `s`, in GFLOP/s: the run's own noise.
    pub fn spread(&self, s: &Stats) -> f64 {
        let f = self.shape.flops(self.pass) as f64 / 1e9;
        (f / s.q1 - f / s.q3) / 2.0
    }

    /// Layer time over floor time (1 = no overhead), from neighbouring samples.
    pub fn ratio(&self) -> f64 {
        1.0 / self.vs_floor.median
    }
}

/// The machine and the build the figures were taken on.
#[derive(Debug, Clone)]
pub struct Header {
    pub mode: &'static str,
    pub cpu: String,
    pub openblas: String,
    pub openblas_core: String,
    /// The small-batch engine's state, e.g. `"libxsmm (cpx), batch 2–512, ≥ 65536 weights"`.
    pub engine: String,
    /// Where a batch-1 pass leaves GEMM (`affine_blas::blas::one_row_gemm`).
    pub batch1: String,
    /// OpenBLAS's idle spin (`affine_blas::threads::openblas_spin`).
    pub spin: String,
    pub openblas_threads: usize,
    pub rayon_threads: usize,
    pub git_rev: &'static str,
    pub peak: Peak,
    pub slowdown: f64,
}

impl Header {
    /// Reads the machine; sets OpenBLAS's threads to `threads` and measures the FMA peak.
    pub fn take(mode: &'static str, threads: usize, slowdown: f64) -> Header {
        blas::set_openblas_threads(threads);
        Header {
            mode,
            cpu: cpu_model(),
            openblas: blas::openblas_config(),
            openblas_core: blas::ensure_best_kernels().to_string(),
            engine: engine_state(),
            batch1: batch1_state(),
            spin: affine_blas::threads::openblas_spin().to_string(),
            openblas_threads: blas::openblas_threads(),
            rayon_threads: rayon::current_num_threads(),
            git_rev: env!("AFFINE_BLAS_GIT_REV"),
            peak: affine_blas::peak::measure(threads, Duration::from_millis(150)),
            slowdown,
        }
    }

    /// The header lines of the printed report.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![
            format!(
                "affine-bench {} sweep, git {}",
                self.mode, self.git_rev
            ),
            format!("CPU: {}", self.cpu),
            format!("BLAS: {} (kernels: {})", self.openblas, self.openblas_core),
            format!(
                "threads: OpenBLAS {}, rayon {} (the sweep runs inside the rayon pool); OpenBLAS idle spin {}",
                self.openblas_threads, self.rayon_threads, self.spin
            ),
            format!("small-batch engine: {}", self.engine),
            format!("batch 1: {}", self.batch1),
            format!(
                "FMA peak (measured, {} threads, {}-bit vectors): f32 {:.1} GFLOP/s, f64 {:.1} GFLOP/s",
                self.peak.threads, self.peak.vector_bits, self.peak.f32_gflops, self.peak.f64_gflops
            ),
        ];
        if self.slowdown > 0.0 {
            v.push(format!(
                "INJECTED SLOWDOWN: every layer pass spins {:.0}% of its own time (gate validation)",
                self.slowdown * 100.0
            ));
        }
        v
    }
}

fn batch1_state() -> String {
    match blas::one_row_gemm() {
        blas::OneRowGemm::Small => format!(
            "forward GEMV from {} weights, backward GEMV and outer product from {} (smaller: \
             one-row GEMMs on OpenBLAS's small-matrix kernels)",
            blas::gemv_forward_min_weight(),
            blas::single_row_min_weight()
        ),
        blas::OneRowGemm::Packed => "GEMV and outer product at every size (OpenBLAS's one-row \
                                     GEMM takes its packed path here)"
            .to_string(),
    }
}

fn engine_state() -> String {
    use affine_blas::xsmm;
    use xsmm::Product::{Backward, Forward};
    if xsmm::enabled() {
        format!(
            "libxsmm ({}, vectors against OpenBLAS's: {:?}) from batch {} and {} weights, at 1024 x 1024 forward to batch {} (f32) / {} (f64), backward to {} / {}, at 256 x 256 {} / {}, {} / {}{}; narrow layers ({}+ weights) from batch {} and {} multiply-adds",
            xsmm::target(),
            xsmm::vectors(),
            xsmm::MIN_BATCH,
            xsmm::MIN_WEIGHT,
            xsmm::max_batch::<f32>(Forward, (1024, 1024)),
            xsmm::max_batch::<f64>(Forward, (1024, 1024)),
            xsmm::max_batch::<f32>(Backward, (1024, 1024)),
            xsmm::max_batch::<f64>(Backward, (1024, 1024)),
            xsmm::max_batch::<f32>(Forward, (256, 256)),
            xsmm::max_batch::<f64>(Forward, (256, 256)),
            xsmm::max_batch::<f32>(Backward, (256, 256)),
            xsmm::max_batch::<f64>(Backward, (256, 256)),
            match (
                xsmm::large_batch_regime::<f32>(),
                xsmm::large_batch_regime::<f64>(),
            ) {
                (true, true) => Some("f32 and f64"),
                (true, false) => Some("f32"),
                (false, true) => Some("f64"),
                (false, false) => None,
            }
            .map_or_else(String::new, |dtypes| format!(
                " ({dtypes}: at any batch of twice the larger side where w has {} KB or less)",
                xsmm::LARGE_BATCH_MAX_BYTES / 1024
            )),
            xsmm::NARROW_MIN_WEIGHT,
            xsmm::NARROW_MIN_BATCH,
            xsmm::NARROW_MIN_WORK,
        )
    } else if xsmm::available() {
        "off (AFFINE_BLAS_XSMM=0)".to_string()
    } else {
        "not available (libxsmm not linked, or no AVX2)".to_string()
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Cases the sweep will time, for the progress bar.
fn cases(cfg: &Config) -> u64 {
    let n = |dtype: &str| {
        cfg.shapes
            .iter()
            .flat_map(|&s| Pass::ALL.map(|p| (s, p)))
            .filter(|&(s, p)| {
                !(if dtype == "f32" {
                    over_a_second::<f32>(s, p)
                } else {
                    over_a_second::<f64>(s, p)
                })
            })
            .count() as u64
    };
    cfg.dtypes.iter().map(|d| n(d)).sum()
}

/// Runs the sweep inside a rayon pool of `cfg.threads` threads, with a progress bar.
pub fn sweep(cfg: &Config) -> Result<(Header, Vec<Row>), String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| format!("rayon pool: {e}"))?;
    pool.install(|| {
        let header = Header::take(cfg.mode, cfg.threads, cfg.slowdown);
        let pb = ProgressBar::new(cases(cfg));
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}, ~{eta}] {msg}")
                .map_err(|e| e.to_string())?,
        );
        let mut rows = Vec::new();
        for &dtype in &cfg.dtypes {
            if dtype == "f32" {
                sweep_dtype::<f32>(cfg, &pb, &mut rows)?;
            } else {
                sweep_dtype::<f64>(cfg, &pb, &mut rows)?;
            }
        }
        pb.finish_and_clear();
        Ok((header, rows))
    })
}

fn sweep_dtype<T: Element>(
    cfg: &Config,
    pb: &ProgressBar,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    for (i, &shape) in cfg.shapes.iter().enumerate() {
        let mut wl = Workload::<T>::new(shape, i as u64).map_err(|e| e.to_string())?;
        wl.inject_slowdown(cfg.slowdown);
        for pass in Pass::ALL {
            if over_a_second::<T>(shape, pass) {
                continue;
            }
            pb.set_message(format!("{} {} {shape}", pass.name(), T::NAME));
            let mut failed = None;
            let pair = measure_pair(
                |which| {
                    let imp = if which == 0 { Impl::Layer } else { Impl::Floor };
                    if let Err(e) = wl.run(pass, imp) {
                        failed = Some(e);
                    }
                },
                cfg.budget,
            );
            if let Some(e) = failed {
                return Err(e.to_string());
            }
            rows.push(Row {
                dtype: T::NAME,
                shape,
                pass,
                layer: pair.a,
                floor: pair.b,
                vs_floor: pair.b_over_a,
            });
            pb.inc(1);
        }
    }
    Ok(())
}

/// A duration in seconds, with a unit that keeps three or four significant digits.
pub fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn pct_peak(h: &Header, r: &Row) -> f64 {
    100.0 * r.gflops(&r.layer) / h.peak.gflops(r.dtype)
}

/// The printed report: header, then one line per row.
pub fn table(h: &Header, rows: &[Row]) -> String {
    let mut out = String::new();
    for l in h.lines() {
        let _ = writeln!(out, "{l}");
    }
    let _ = writeln!(
        out,
        "\n{:<5} {:<16} {:<8} {:>11} {:>9} {:>9} {:>11} {:>7}",
        "dtype", "shape BxIxO", "pass", "time", "GFLOP/s", "floor", "layer/floor", "% peak"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<5} {:<16} {:<8} {:>11} {:>9.1} {:>9.1} {:>11.3} {:>7.1}",
            r.dtype,
            r.shape.to_string(),
            r.pass.name(),
            fmt_time(r.layer.median),
            r.gflops(&r.layer),
            r.gflops(&r.floor),
            r.ratio(),
            pct_peak(h, r)
        );
    }
    out
}

/// The step rows as a markdown table (for the README).
pub fn markdown(h: &Header, rows: &[Row]) -> String {
    let mut out = String::from(
        "| dtype | shape B×I×O | step time | GFLOP/s | floor GFLOP/s | layer/floor | % of peak |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| r.pass == Pass::Step) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.3} | {:.1} |",
            r.dtype,
            r.shape,
            fmt_time(r.layer.median),
            r.gflops(&r.layer),
            r.gflops(&r.floor),
            r.ratio(),
            pct_peak(h, r)
        );
    }
    out
}

/// Benchmark name of a row's layer or floor figure: `pass/dtype/shape/impl`.
pub fn name(r: &Row, imp: Impl) -> String {
    format!("{}/{}/{}/{}", r.pass.name(), r.dtype, r.shape, imp.name())
}

/// Name of a row's speed-versus-floor figure: `pass/dtype/shape/vs_floor`.
pub fn vs_floor_name(r: &Row) -> String {
    format!("{}/{}/{}/vs_floor", r.pass.name(), r.dtype, r.shape)
}

/// github-action-benchmark's `customBiggerIsBetter` list: per row the layer's and the floor's
/// GFLOP/s, and the layer's speed relative to the floor (`vs_floor`, floor time / layer time).
/// `range` is half the interquartile range of the samples.
pub fn json(h: &Header, rows: &[Row]) -> Value {
    let entries: Vec<Value> = rows
        .iter()
        .flat_map(|r| {
            let vs = json!({
                "name": vs_floor_name(r),
                "unit": "floor time / layer time",
                "value": round4(r.vs_floor.median),
                "range": format!("± {:.4}", (r.vs_floor.q3 - r.vs_floor.q1) / 2.0),
                "extra": format!(
                    "paired samples: {}; 1 = as fast as the raw GEMMs; layer {}, floor {}",
                    r.vs_floor.samples, fmt_time(r.layer.median), fmt_time(r.floor.median)
                ),
            });
            let gf = [(Impl::Layer, &r.layer), (Impl::Floor, &r.floor)].map(|(imp, s)| {
                json!({
                    "name": name(r, imp),
                    "unit": "GFLOP/s",
                    "value": round2(r.gflops(s)),
                    "range": format!("± {:.2}", r.spread(s)),
                    "extra": format!(
                        "median {} over {} samples; layer/floor {:.3}; {:.1}% of the {:.0} GFLOP/s {} peak; \
                         OpenBLAS {} threads, rayon {}; git {}",
                        fmt_time(s.median), s.samples, r.ratio(),
                        100.0 * r.gflops(s) / h.peak.gflops(r.dtype), h.peak.gflops(r.dtype), r.dtype,
                        h.openblas_threads, h.rayon_threads, h.git_rev
                    ),
                })
            });
            gf.into_iter().chain([vs])
        })
        .collect();
    Value::Array(entries)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

/// One CSV line per row, both implementations side by side, times in nanoseconds.
pub fn csv(h: &Header, rows: &[Row]) -> String {
    let mut out = String::from(
        "dtype,batch,in,out,pass,flops,layer_median_ns,layer_q1_ns,layer_q3_ns,layer_gflops,\
         floor_median_ns,floor_q1_ns,floor_q3_ns,floor_gflops,layer_over_floor,vs_floor_median,\
         vs_floor_q1,vs_floor_q3,pct_peak,samples,\
         openblas_threads,rayon_threads\n",
    );
    for r in rows {
        let ns = |v: f64| format!("{:.1}", v * 1e9);
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{:.3},{},{},{},{:.3},{:.4},{:.4},{:.4},{:.4},{:.2},{},{},{}",
            r.dtype,
            r.shape.batch,
            r.shape.inp,
            r.shape.out,
            r.pass.name(),
            r.shape.flops(r.pass),
            ns(r.layer.median),
            ns(r.layer.q1),
            ns(r.layer.q3),
            r.gflops(&r.layer),
            ns(r.floor.median),
            ns(r.floor.q1),
            ns(r.floor.q3),
            r.gflops(&r.floor),
            r.ratio(),
            r.vs_floor.median,
            r.vs_floor.q1,
            r.vs_floor.q3,
            pct_peak(h, r),
            r.layer.samples,
            h.openblas_threads,
            h.rayon_threads
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let s = |m: f64| Stats {
            median: m,
            q1: m * 0.9,
            q3: m * 1.1,
            samples: 7,
        };
        Row {
            dtype: "f32",
            shape: Shape::new(2, 1000, 500),
            pass: Pass::Forward,
            layer: s(2e-6),
            floor: s(1e-6),
            vs_floor: s(0.5),
        }
    }

    #[test]
    fn figures_follow_from_the_stats() {
        let r = row();
        // 2·2·1000·500 = 2 MFLOP in 2 µs = 1000 GFLOP/s
        assert!((r.gflops(&r.layer) - 1000.0).abs() < 1e-9);
        assert!((r.ratio() - 2.0).abs() < 1e-12);
        let spread = (1000.0 / 0.9 - 1000.0 / 1.1) / 2.0;
        assert!((r.spread(&r.layer) - spread).abs() < 1e-9);
        assert_eq!(name(&r, Impl::Floor), "forward/f32/2x1000x500/floor");
        assert_eq!(fmt_time(2e-6), "2.00 µs");
        assert_eq!(fmt_time(0.0123), "12.300 ms");
    }
}
