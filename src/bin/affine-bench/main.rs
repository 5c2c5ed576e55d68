//! `affine-bench`: the benchmark report and the regression gate.
//!
//! ```text
//! affine-bench [report] [--full] [--threads N] [--budget-ms MS] [--dtype f32|f64|both]
//!                       [--batch B | --shape BxIxO] [--out DIR] [--inject-slowdown FRACTION]
//! affine-bench gate BASELINE.json [MORE_BASELINES.json ...] CURRENT.json
//!                   [--threshold PCT] [--group-threshold PCT] [--noise-k K] [--min-time-us US] [--filter TEXT]
//! ```
//!
//! `report` times every pass of the layer beside its raw-GEMM floor (the quick grid, or the full
//! one with `--full`), prints the table and writes `bench.json` (github-action-benchmark's
//! `customBiggerIsBetter`), `results.csv`, `table.md`, `report.txt` and `plot.svg` into `--out`
//! (default `target/affine-bench`). `gate` exits 1 when a benchmark of CURRENT is slower than in
//! the baselines beyond both the threshold and its noise, or a whole group is slower beyond the
//! group threshold, naming the offenders; 2 on bad usage. By default it gates the `vs_floor`
//! entries (`--filter ""` gates every entry).

mod gate;
mod plot;
mod report;
mod timing;

use affine_blas::workload::{grid, quick_grid, Shape};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  affine-bench [report] [--full] [--threads N] [--budget-ms MS] [--dtype f32|f64|both]
                        [--batch B | --shape BxIxO] [--out DIR] [--inject-slowdown FRACTION]
  affine-bench gate BASELINE.json [MORE_BASELINES.json ...] CURRENT.json
                    [--threshold PCT] [--group-threshold PCT] [--noise-k K] [--min-time-us US] [--filter TEXT]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gate") => run_gate(&args[1..]),
        Some("report") => run_report(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => run_report(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("affine-bench: {e}\n{USAGE}");
        ExitCode::from(2)
    })
}

/// Splits `--flag value` pairs and bare flags from positional arguments.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str], bare: &[&str]) -> Result<Args, String> {
        let mut out = Args {
            positional: Vec::new(),
            flags: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if with_value.contains(&a.as_str()) {
                let v = it.next().ok_or(format!("{a} needs a value"))?;
                out.flags.push((a.clone(), Some(v.clone())));
            } else if bare.contains(&a.as_str()) {
                out.flags.push((a.clone(), None));
            } else if a.starts_with("--") {
                return Err(format!("unknown option {a}"));
            } else {
                out.positional.push(a.clone());
            }
        }
        Ok(out)
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|(f, _)| f == flag)
    }

    fn value<T: std::str::FromStr>(&self, flag: &str) -> Result<Option<T>, String> {
        match self.flags.iter().rev().find(|(f, _)| f == flag) {
            Some((_, Some(v))) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{flag}: cannot read {v:?}")),
            _ => Ok(None),
        }
    }
}

fn run_report(args: &[String]) -> Result<ExitCode, String> {
    let a = Args::parse(
        args,
        &[
            "--threads",
            "--budget-ms",
            "--dtype",
            "--out",
            "--inject-slowdown",
            "--batch",
            "--shape",
        ],
        &["--full", "--quick"],
    )?;
    if let Some(p) = a.positional.first() {
        return Err(format!("unexpected argument {p:?}"));
    }
    let full = a.has("--full");
    let threads = a
        .value("--threads")?
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let default_budget = if full { 600 } else { 300 };
    let budget = Duration::from_millis(a.value("--budget-ms")?.unwrap_or(default_budget));
    let dtypes = match a.value::<String>("--dtype")?.as_deref() {
        None | Some("both") => vec!["f32", "f64"],
        Some("f32") => vec!["f32"],
        Some("f64") => vec!["f64"],
        Some(d) => return Err(format!("--dtype: {d:?} is not f32, f64 or both")),
    };
    let out: PathBuf = a
        .value::<String>("--out")?
        .map_or_else(|| PathBuf::from("target/affine-bench"), PathBuf::from);
    let slowdown: f64 = a.value("--inject-slowdown")?.unwrap_or(0.0);
    let batch: Option<usize> = a.value("--batch")?;
    let shapes: Vec<Shape> = match a.value::<String>("--shape")? {
        Some(spec) => vec![parse_shape(&spec)?],
        None => if full { grid() } else { quick_grid() }
            .into_iter()
            .filter(|s| batch.is_none_or(|b| s.batch == b))
            .collect(),
    };
    if shapes.is_empty() {
        return Err(format!("no shape of the grid has batch {batch:?}"));
    }
    let cfg = report::Config {
        shapes,
        mode: if full { "full" } else { "quick" },
        dtypes,
        threads,
        budget,
        slowdown,
    };

    let start = Instant::now();
    let (header, rows) = report::sweep(&cfg)?;
    let wall = start.elapsed();
    let mut text = report::table(&header, &rows);
    text.push_str(&format!(
        "\n{} passes in {:.1} s; layer/floor = layer time over the same GEMMs alone\n",
        rows.len(),
        wall.as_secs_f64()
    ));
    print!("{text}");

    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: &str, body: &str| {
        let p = out.join(name);
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))
    };
    let json =
        serde_json::to_string_pretty(&report::json(&header, &rows)).map_err(|e| e.to_string())?;
    write("bench.json", &json)?;
    write("results.csv", &report::csv(&header, &rows))?;
    write("table.md", &report::markdown(&header, &rows))?;
    write("report.txt", &text)?;
    plot::svg(&header, &rows, &out.join("plot.svg"))?;
    println!(
        "wrote {0}/bench.json, {0}/results.csv, {0}/table.md, {0}/report.txt, {0}/plot.svg",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `"BxIxO"` → the shape.
fn parse_shape(spec: &str) -> Result<Shape, String> {
    let dims: Vec<usize> = spec
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--shape: {spec:?} is not BxIxO"))?;
    match dims.as_slice() {
        &[b, i, o] if i > 0 && o > 0 => Ok(Shape::new(b, i, o)),
        _ => Err(format!("--shape: {spec:?} is not BxIxO with I, O > 0")),
    }
}

fn run_gate(args: &[String]) -> Result<ExitCode, String> {
    let a = Args::parse(
        args,
        &[
            "--threshold",
            "--group-threshold",
            "--noise-k",
            "--filter",
            "--min-time-us",
        ],
        &[],
    )?;
    let Some((current, bases)) = a.positional.split_last().filter(|(_, b)| !b.is_empty()) else {
        return Err("gate needs at least one BASELINE.json and the CURRENT.json".into());
    };
    let read = |p: &String| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("{p}: {e}"))
            .and_then(|t| gate::parse(&t).map_err(|e| format!("{p}: {e}")))
    };
    let pct = |flag: &str, default: f64| -> Result<f64, String> {
        Ok(a.value::<f64>(flag)?.map_or(default, |p| p / 100.0))
    };
    let policy = gate::Policy {
        threshold: pct("--threshold", gate::DEFAULT_THRESHOLD)?,
        group_threshold: pct("--group-threshold", gate::DEFAULT_GROUP_THRESHOLD)?,
        k: a.value("--noise-k")?.unwrap_or(gate::DEFAULT_K),
        min_time_us: a
            .value("--min-time-us")?
            .unwrap_or(gate::DEFAULT_MIN_TIME_US),
    };
    let filter: String = a
        .value("--filter")?
        .unwrap_or_else(|| gate::DEFAULT_FILTER.to_string());
    let bases = bases.iter().map(read).collect::<Result<Vec<_>, _>>()?;
    let cmp = gate::compare(&bases, &read(current)?, policy, &filter);
    print!("{}", gate::render(&cmp, policy));
    if cmp.verdicts.is_empty() {
        return Err(format!("no benchmark matching {filter:?} is in both runs"));
    }
    Ok(if cmp.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
