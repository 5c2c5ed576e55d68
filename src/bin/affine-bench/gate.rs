//! The regression gate: a run against a saved baseline, both in the report's
//! github-action-benchmark JSON (`[{name, unit, value, range, extra}]`, bigger is better).
//!
//! A benchmark regresses when it is slower than the baseline by more than the threshold **and**
//! by more than `k` times the two runs' combined noise (each entry's `range`, half its
//! interquartile range): the threshold ignores drifts too small to matter, the noise test ignores
//! drops that one noisy run explains.

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
    /// Smallest relative drop that counts (0.10 = 10 % slower).
    pub threshold: f64,
    /// The drop must also exceed `k · √(range_base² + range_current²)`.
    pub k: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            threshold: DEFAULT_THRESHOLD,
            k: DEFAULT_K,
        }
    }
}

/// Default relative threshold; see the README for the false-alarm and detection rates measured
/// with it.
pub const DEFAULT_THRESHOLD: f64 = 0.10;
/// Default noise multiple.
pub const DEFAULT_K: f64 = 2.0;

/// One benchmark's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub name: String,
    pub base: f64,
    pub current: f64,
    /// `(base − current) / base`: positive = slower.
    pub drop: f64,
    /// `k · √(range_base² + range_current²)`.
    pub noise: f64,
    pub regressed: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Comparison {
    /// Benchmarks in both runs, in name order.
    pub verdicts: Vec<Verdict>,
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
}

/// Compares `current` with `base` under `policy`, keeping only names containing `filter`.
pub fn compare(base: &[Entry], current: &[Entry], policy: Policy, filter: &str) -> Comparison {
    let keep = |e: &&Entry| e.name.contains(filter);
    let b: BTreeMap<&str, &Entry> = base
        .iter()
        .filter(keep)
        .map(|e| (e.name.as_str(), e))
        .collect();
    let c: BTreeMap<&str, &Entry> = current
        .iter()
        .filter(keep)
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut out = Comparison::default();
    for (name, be) in &b {
        let Some(ce) = c.get(name) else {
            out.missing.push(name.to_string());
            continue;
        };
        let drop = if be.value > 0.0 {
            (be.value - ce.value) / be.value
        } else {
            0.0
        };
        let noise = policy.k * be.range.hypot(ce.range);
        out.verdicts.push(Verdict {
            name: name.to_string(),
            base: be.value,
            current: ce.value,
            drop,
            noise,
            regressed: drop > policy.threshold && be.value - ce.value > noise,
        });
    }
    out.added = c
        .keys()
        .filter(|n| !b.contains_key(*n))
        .map(|n| n.to_string())
        .collect();
    out
}

/// The gate's printout.
pub fn render(cmp: &Comparison, policy: Policy) -> String {
    let mut s = String::new();
    let offenders: Vec<&Verdict> = cmp.offenders().collect();
    s.push_str(&format!(
        "gate: {} benchmarks compared, threshold {:.1}% and {} × noise: {} regressed\n",
        cmp.verdicts.len(),
        policy.threshold * 100.0,
        policy.k,
        offenders.len()
    ));
    for v in &offenders {
        s.push_str(&format!(
            "  REGRESSED {}: {:.2} → {:.2} GFLOP/s ({:+.1}%, noise allowance {:.2})\n",
            v.name,
            v.base,
            v.current,
            -v.drop * 100.0,
            v.noise
        ));
    }
    if let Some(worst) = cmp
        .verdicts
        .iter()
        .filter(|v| !v.regressed)
        .max_by(|a, b| a.drop.total_cmp(&b.drop))
    {
        s.push_str(&format!(
            "  largest drop that passed: {} ({:+.1}%)\n",
            worst.name,
            -worst.drop * 100.0
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
        let cmp = compare(&base, &base, Policy::default(), "");
        assert_eq!(cmp.offenders().count(), 0);
        assert_eq!(cmp.verdicts.len(), 4);
        // noisy.json: step 12% slower, but its range (±20) says one run explains it
        let cmp = compare(&base, &fixture("noisy.json"), Policy::default(), "");
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
        let cmp = compare(&base, &fixture("slower.json"), Policy::default(), "");
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
            threshold: 0.3,
            k: 2.0,
        };
        assert_eq!(
            compare(&base, &fixture("slower.json"), loose, "")
                .offenders()
                .count(),
            0
        );
        let only_fwd = compare(
            &base,
            &fixture("slower.json"),
            Policy::default(),
            "forward/",
        );
        assert_eq!(only_fwd.offenders().count(), 0);
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
        let cmp = compare(
            &base,
            &faster,
            Policy {
                threshold: 0.0,
                k: 0.0,
            },
            "",
        );
        assert_eq!(cmp.offenders().count(), 0);
        assert!(cmp.verdicts.iter().all(|v| v.drop < 0.0));
    }
}
