//! The regression gate: a run against a saved baseline, both in the report's
//! github-action-benchmark JSON (`[{name, unit, value, range, extra}]`, bigger is better).
//!
//! Two tests, each printing its offenders:
//! - **per benchmark**: slower than the baseline by more than the threshold **and** by more than
//!   `k` times the two runs' combined noise (each entry's `range`, half its interquartile range):
//!   the threshold ignores drifts too small to matter, the noise test drops that one noisy run
//!   explains;
//! - **per group** (the same pass, dtype and metric over all shapes): the geometric mean of
//!   current / baseline falls by more than the group threshold. Averaging over the shapes cancels
//!   most of the noise, so a small slowdown everywhere is caught that no single benchmark shows.
//!
//! By default only the `vs_floor` entries are gated (the layer's speed relative to the bare GEMMs,
//! measured in neighbouring samples): on a shared machine absolute GFLOP/s drift between runs far
//! more than any regression worth catching (see the README for the measured rates).

use serde_json::Value;
use std::collections::BTreeMap;

/// One benchmark figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `pass/dtype/shape/impl`.
    pub name: String,
    /// GFLOP/s (bigger is better).
    pub value: f64,
    /// Noise of `value`, same unit.
    pub range: f64,
}

/// Parses a `customBiggerIsBetter` list.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .as_array()
        .ok_or("expected a JSON list of {name, unit, value, range} objects")?;
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let name = e["name"]
                .as_str()
                .ok_or(format!("entry {i}: no string `name`"))?
                .to_string();
            let value = e["value"]
                .as_f64()
                .ok_or(format!("entry {i} ({name}): no numeric `value`"))?;
            let range = match &e["range"] {
                Value::Null => 0.0,
                Value::Number(n) => n.as_f64().unwrap_or(0.0),
                Value::String(s) => {
                    parse_range(s).ok_or(format!("entry {i} ({name}): unreadable range {s:?}"))?
                }
                other => return Err(format!("entry {i} ({name}): unreadable range {other}")),
            };
            Ok(Entry { name, value, range })
        })
        .collect()
}

/// `"± 1.5"`, `"+/- 1.5"` or `"1.5"` → 1.5.
fn parse_range(s: &str) -> Option<f64> {
    let t = s
        .trim()
        .trim_start_matches('±')
        .trim_start_matches("+/-")
        .trim();
    t.parse::<f64>().ok().map(f64::abs)
}

/// When a drop counts as a regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Smallest slowdown of one benchmark that counts (0.10 = takes 10 % longer).
    pub threshold: f64,
    /// The fall in value must also exceed `k` times the noise (see [`compare`]).
    pub k: f64,
    /// Smallest slowdown of a group's geometric mean that counts.
    pub group_threshold: f64,
    /// Benchmarks whose layer pass takes less than this many µs are judged in their group only:
    /// at that scale a run's figure is mostly timer and scheduling jitter.
    pub min_time_us: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            threshold: DEFAULT_THRESHOLD,
            k: DEFAULT_K,
            group_threshold: DEFAULT_GROUP_THRESHOLD,
            min_time_us: DEFAULT_MIN_TIME_US,
        }
    }
}

/// Default per-benchmark threshold; the README gives the false-alarm and detection rates
/// measured with these defaults.
pub const DEFAULT_THRESHOLD: f64 = 0.10;
/// Default noise multiple.
pub const DEFAULT_K: f64 = 4.0;
/// Default group threshold.
pub const DEFAULT_GROUP_THRESHOLD: f64 = 0.05;
/// Default shortest layer time judged on its own: the false alarms of unchanged code measured
/// with the other defaults were all at 0.3–0.6 µs (batch 1, 64 × 64).
pub const DEFAULT_MIN_TIME_US: f64 = 1.0;
/// Entries gated unless `--filter` says otherwise.
pub const DEFAULT_FILTER: &str = "/vs_floor";

/// One benchmark's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub name: String,
    pub base: f64,
    pub current: f64,
    /// `base / current − 1`: how much slower (0.25 = takes 25 % longer); negative = faster.
    pub slower: f64,
    /// `k` times the noise (see [`compare`]), in the entries' unit.
    pub noise: f64,
    /// The layer's time in the baseline runs (their median), µs, where the name says its pass
    /// and shape and the runs have its `/layer` entry.
    pub time_us: Option<f64>,
    pub regressed: bool,
}

/// One group's comparison: the geometric mean of current / baseline over its benchmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupVerdict {
    /// `pass/dtype/*/metric`.
    pub group: String,
    /// Benchmarks in the group.
    pub count: usize,
    /// `geometric mean(base / current) − 1`: positive = slower.
    pub slower: f64,
    pub regressed: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Comparison {
    /// Benchmarks in both runs, in name order.
    pub verdicts: Vec<Verdict>,
    /// Groups of them, in name order.
    pub groups: Vec<GroupVerdict>,
    /// In the baseline only.
    pub missing: Vec<String>,
    /// In the current run only.
    pub added: Vec<String>,
}

impl Comparison {
    /// The regressed benchmarks.
    pub fn offenders(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| v.regressed)
    }

    /// The regressed groups.
    pub fn group_offenders(&self) -> impl Iterator<Item = &GroupVerdict> {
        self.groups.iter().filter(|g| g.regressed)
    }

    /// Whether anything regressed.
    pub fn failed(&self) -> bool {
        self.offenders().next().is_some() || self.group_offenders().next().is_some()
    }
}

/// `pass/dtype/shape/metric` → `pass/dtype/*/metric`; other names are their own group.
fn group_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        [pass, dtype, _shape, metric] => format!("{pass}/{dtype}/*/{metric}"),
        _ => name.to_string(),
    }
}

/// The layer's time in µs for entry `name` (`pass/dtype/BxIxO/metric`), from the GFLOP/s of the
/// run's `pass/dtype/BxIxO/layer` entry and the pass's FLOPs.
fn layer_time_us(name: &str, run: &BTreeMap<&str, &Entry>) -> Option<f64> {
    let parts: Vec<&str> = name.split('/').collect();
    let [pass, dtype, shape, _] = parts.as_slice() else {
        return None;
    };
    let dims: Vec<f64> = shape
        .split('x')
        .map(|d| d.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let [b, i, o] = dims.as_slice() else {
        return None;
    };
    let (fwd, bwd) = (2.0 * b * i * o, 4.0 * b * i * o + b * o);
    let flops = match *pass {
        "forward" => fwd,
        "backward" => bwd,
        "step" => fwd + bwd,
        _ => return None,
    };
    let gflops = run
        .get(format!("{pass}/{dtype}/{shape}/layer").as_str())?
        .value;
    (gflops > 0.0).then(|| flops / gflops / 1e3)
}

/// Compares `current` with one or more baseline runs under `policy`, keeping only names
/// containing `filter`. A benchmark whose layer time in the baselines is under
/// `policy.min_time_us` counts only in its group (judged by the baselines' time, so that the
/// slowdown being judged cannot lift it over the limit).
///
/// A benchmark's baseline is the median of its values over `bases`; its noise is the larger of
/// half the spread of those values (the machine's run-to-run drift, which one run's own samples
/// cannot show) and `√(range_base² + range_current²)` (the runs' own noise, the largest `range`
/// among the baselines).
pub fn compare(
    bases: &[Vec<Entry>],
    current: &[Entry],
    policy: Policy,
    filter: &str,
) -> Comparison {
    let keep = |e: &&Entry| e.name.contains(filter);
    let mut b: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in bases.iter().flatten().filter(keep) {
        b.entry(e.name.as_str()).or_default().push(e);
    }
    let base_runs: Vec<BTreeMap<&str, &Entry>> = bases
        .iter()
        .map(|run| run.iter().map(|e| (e.name.as_str(), e)).collect())
        .collect();
    let c: BTreeMap<&str, &Entry> = current
        .iter()
        .filter(keep)
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut out = Comparison::default();
    for (name, runs) in &b {
        let Some(ce) = c.get(name) else {
            out.missing.push(name.to_string());
            continue;
        };
        let mut values: Vec<f64> = runs.iter().map(|e| e.value).collect();
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let base = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        let drift = (values[values.len() - 1] - values[0]) / 2.0;
        let own = runs
            .iter()
            .map(|e| e.range)
            .fold(0.0, f64::max)
            .hypot(ce.range);
        let noise = policy.k * drift.max(own);
        let slower = if ce.value > 0.0 {
            base / ce.value - 1.0
        } else {
            f64::INFINITY
        };
        let mut times: Vec<f64> = base_runs
            .iter()
            .filter_map(|run| layer_time_us(name, run))
            .collect();
        times.sort_by(f64::total_cmp);
        let time_us = times.get(times.len() / 2).copied();
        let long_enough = time_us.is_none_or(|t| t >= policy.min_time_us);
        out.verdicts.push(Verdict {
            name: name.to_string(),
            base,
            current: ce.value,
            slower,
            noise,
            time_us,
            regressed: long_enough && slower > policy.threshold && base - ce.value > noise,
        });
    }
    out.added = c
        .keys()
        .filter(|n| !b.contains_key(*n))
        .map(|n| n.to_string())
        .collect();
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for v in &out.verdicts {
        if v.base > 0.0 && v.current > 0.0 {
            groups
                .entry(group_of(&v.name))
                .or_default()
                .push((v.base / v.current).ln());
        }
    }
    out.groups = groups
        .into_iter()
        .map(|(group, logs)| {
            let slower = (logs.iter().sum::<f64>() / logs.len() as f64).exp() - 1.0;
            GroupVerdict {
                group,
                count: logs.len(),
                slower,
                regressed: logs.len() > 1 && slower > policy.group_threshold,
            }
        })
        .collect();
    out
}

/// The gate's printout.
pub fn render(cmp: &Comparison, policy: Policy) -> String {
    let mut s = String::new();
    let offenders: Vec<&Verdict> = cmp.offenders().collect();
    let groups: Vec<&GroupVerdict> = cmp.group_offenders().collect();
    s.push_str(&format!(
        "gate: {} benchmarks compared (threshold {:.1}% and {} × noise; under {} µs in groups \
         only): {} regressed; {} groups (geometric-mean threshold {:.1}%): {} regressed\n",
        cmp.verdicts.len(),
        policy.threshold * 100.0,
        policy.k,
        policy.min_time_us,
        offenders.len(),
        cmp.groups.len(),
        policy.group_threshold * 100.0,
        groups.len()
    ));
    for g in &groups {
        s.push_str(&format!(
            "  REGRESSED GROUP {} ({} benchmarks): {:.1}% slower (geometric mean)\n",
            g.group,
            g.count,
            g.slower * 100.0
        ));
    }
    for v in &offenders {
        s.push_str(&format!(
            "  REGRESSED {}: {:.4} → {:.4} ({:.1}% slower; noise allowance {:.4})\n",
            v.name,
            v.base,
            v.current,
            v.slower * 100.0,
            v.noise
        ));
    }
    if let Some(worst) = cmp
        .verdicts
        .iter()
        .filter(|v| !v.regressed)
        .max_by(|a, b| a.slower.total_cmp(&b.slower))
    {
        s.push_str(&format!(
            "  largest slowdown that passed: {} ({:.1}%)\n",
            worst.name,
            worst.slower * 100.0
        ));
    }
    for n in &cmp.missing {
        s.push_str(&format!("  missing from the current run: {n}\n"));
    }
    for n in &cmp.added {
        s.push_str(&format!("  new (no baseline): {n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<Entry> {
        let path = format!("{}/tests/fixtures/gate/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse(&text).unwrap()
    }

    #[test]
    fn parses_the_report_format() {
        let base = fixture("base.json");
        assert_eq!(base.len(), 4);
        assert_eq!(base[0].name, "step/f32/128x1024x1024/layer");
        assert_eq!((base[0].value, base[0].range), (290.5, 4.0));
        assert_eq!(parse_range("+/- 2.5"), Some(2.5));
        assert_eq!(parse_range("3"), Some(3.0));
        assert!(parse("{}").is_err());
        assert!(parse(r#"[{"name": "a", "value": 1, "range": "wide"}]"#).is_err());
    }

    #[test]
    fn unchanged_and_noisy_runs_pass() {
        let base = fixture("base.json");
        let cmp = compare(std::slice::from_ref(&base), &base, Policy::default(), "");
        assert!(!cmp.failed());
        assert_eq!(cmp.verdicts.len(), 4);
        // noisy.json: step 14% slower, but its range (±20) says one run explains it
        let cmp = compare(
            std::slice::from_ref(&base),
            &fixture("noisy.json"),
            Policy::default(),
            "",
        );
        assert_eq!(
            cmp.offenders().count(),
            0,
            "{}",
            render(&cmp, Policy::default())
        );
    }

    #[test]
    fn a_clear_slowdown_fails_and_is_named() {
        let base = fixture("base.json");
        let cmp = compare(
            std::slice::from_ref(&base),
            &fixture("slower.json"),
            Policy::default(),
            "",
        );
        let names: Vec<&str> = cmp.offenders().map(|v| v.name.as_str()).collect();
        // step layer 25% slower with tight ranges; forward layer only 5% slower (under threshold)
        assert_eq!(names, ["step/f32/128x1024x1024/layer"]);
        let text = render(&cmp, Policy::default());
        assert!(
            text.contains("REGRESSED step/f32/128x1024x1024/layer"),
            "{text}"
        );
        assert!(text.contains("missing from the current run: forward/f64/32x256x256/layer"));
        assert!(text.contains("new (no baseline): step/f64/1x64x64/layer"));
        // a looser threshold lets it through; a filter that excludes it too
        let loose = Policy {
            threshold: 0.5,
            group_threshold: 0.5,
            ..Policy::default()
        };
        let slower = fixture("slower.json");
        assert!(!compare(std::slice::from_ref(&base), &slower, loose, "").failed());
        let only_fwd = compare(&[base], &slower, Policy::default(), "forward/");
        assert!(!only_fwd.failed());
    }

    #[test]
    fn several_baselines_measure_the_drift() {
        let base = fixture("base.json");
        let noisy = fixture("noisy.json");
        let name = "step/f32/128x1024x1024/layer";
        // against base alone, a tight-range copy of noisy.json's step (14% slower) is flagged
        let tight: Vec<Entry> = noisy
            .iter()
            .map(|e| Entry {
                range: 1.0,
                ..e.clone()
            })
            .collect();
        let one = compare(std::slice::from_ref(&base), &tight, Policy::default(), name);
        assert_eq!(one.offenders().count(), 1);
        // with the noisy run among the baselines the spread widens: passes
        let runs = [base.clone(), noisy, base];
        let three = compare(&runs, &tight, Policy::default(), name);
        assert_eq!(three.verdicts[0].base, 290.5, "the median of the baselines");
        assert!(three.verdicts[0].noise >= 4.0 * (290.5 - 255.6) / 2.0);
        assert!(!three.failed(), "{}", render(&three, Policy::default()));
    }

    #[test]
    fn a_small_slowdown_everywhere_fails_its_group_only() {
        let base = fixture("group_base.json");
        let slower = fixture("group_slower.json");
        let cmp = compare(&[base], &slower, Policy::default(), DEFAULT_FILTER);
        // every step/f32 vs_floor entry 7.5% slower: under the 10% per-benchmark threshold
        assert_eq!(cmp.offenders().count(), 0);
        let groups: Vec<&str> = cmp.group_offenders().map(|g| g.group.as_str()).collect();
        assert_eq!(groups, ["step/f32/*/vs_floor"]);
        assert!(cmp.failed());
        // the forward group (±2%) passes; the GFLOP/s entries (40% slower) are not gated
        assert!(cmp.verdicts.iter().all(|v| v.name.ends_with("/vs_floor")));
        assert_eq!(cmp.groups.len(), 2);
        let text = render(&cmp, Policy::default());
        assert!(
            text.contains("REGRESSED GROUP step/f32/*/vs_floor (3 benchmarks)"),
            "{text}"
        );
    }

    #[test]
    fn faster_is_never_a_regression() {
        let base = fixture("base.json");
        let faster: Vec<Entry> = base
            .iter()
            .map(|e| Entry {
                value: e.value * 2.0,
                ..e.clone()
            })
            .collect();
        let eager = Policy {
            threshold: 0.0,
            k: 0.0,
            group_threshold: 0.0,
            min_time_us: 0.0,
        };
        let cmp = compare(&[base], &faster, eager, "");
        assert!(!cmp.failed());
        assert!(cmp.verdicts.iter().all(|v| v.slower < 0.0));
    }

    #[test]
    fn sub_microsecond_benchmarks_count_in_their_group_only() {
        // 1x64x64 forward: 16 KFLOP at 27 GFLOP/s = 0.6 µs; 128x1024x1024: 0.27 GFLOP, 1.5 ms
        let entry = |name: &str, value: f64| Entry {
            name: name.to_string(),
            value,
            range: 0.001,
        };
        let run = |tiny: f64, big: f64| {
            vec![
                entry("forward/f32/1x64x64/layer", 27.0),
                entry("forward/f32/1x64x64/vs_floor", tiny),
                entry("forward/f32/128x1024x1024/layer", 180.0),
                entry("forward/f32/128x1024x1024/vs_floor", big),
            ]
        };
        let base = run(0.60, 0.97);
        let run2 = |tiny: f64, big: f64| {
            let mut r = run(tiny, big);
            r[0].value = 10.0; // 1.6 µs
            r
        };
        // the tiny one 25% slower (and its time over 1 µs now, but not in the baseline): not an
        // offender of its own, but it still moves its group's geometric mean (by 11.8%, over the
        // 5% group threshold)
        let cmp = compare(
            std::slice::from_ref(&base),
            &run2(0.48, 0.97),
            Policy::default(),
            DEFAULT_FILTER,
        );
        assert_eq!(
            cmp.offenders().count(),
            0,
            "{}",
            render(&cmp, Policy::default())
        );
        let tiny = &cmp.verdicts[1];
        assert_eq!(tiny.name, "forward/f32/1x64x64/vs_floor");
        // the baseline's time
        let t = tiny.time_us.unwrap();
        assert!((t - 2.0 * 64.0 * 64.0 / 27.0 / 1e3).abs() < 1e-9, "{t}");
        assert_eq!(cmp.group_offenders().count(), 1);
        // the big one 25% slower is named
        let cmp = compare(
            std::slice::from_ref(&base),
            &run(0.60, 0.776),
            Policy::default(),
            DEFAULT_FILTER,
        );
        let names: Vec<&str> = cmp.offenders().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["forward/f32/128x1024x1024/vs_floor"]);
        // with the limit off, the tiny one is named too
        let strict = Policy {
            min_time_us: 0.0,
            ..Policy::default()
        };
        let cmp = compare(&[base], &run(0.48, 0.97), strict, DEFAULT_FILTER);
        assert_eq!(cmp.offenders().count(), 1);
    }
}
