//! Wall-clock timing of a pass and its floor, interleaved so that both see the same machine.

use std::time::{Duration, Instant};

/// Seconds per iteration over a run's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// First quartile (faster quarter).
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Number of samples.
    pub samples: usize,
}

impl Stats {
    /// No samples.
    pub const EMPTY: Stats = Stats {
        median: f64::NAN,
        q1: f64::NAN,
        q3: f64::NAN,
        samples: 0,
    };

    /// Quartiles of `times` (seconds per iteration); `None` when empty.
    pub fn of(mut times: Vec<f64>) -> Option<Stats> {
        if times.is_empty() {
            return None;
        }
        times.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (times.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            times[lo] + (times[hi] - times[lo]) * (pos - lo as f64)
        };
        Some(Stats {
            median: q(0.5),
            q1: q(0.25),
            q3: q(0.75),
            samples: times.len(),
        })
    }
}

/// Fewest samples per measurement, whatever the budget.
const MIN_SAMPLES: usize = 5;
/// A sample repeats the call until it lasts about this long.
const SAMPLE_TARGET: Duration = Duration::from_millis(2);

/// What [`measure_pair`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// `run(0)`'s seconds per iteration.
    pub a: Stats,
    /// `run(1)`'s seconds per iteration.
    pub b: Stats,
    /// Per-sample `time(1) / time(0)` of neighbouring samples: the speed of `run(0)` relative to
    /// `run(1)`, nearly free of the machine's slow and fast spells, which hit both alike.
    pub b_over_a: Stats,
}

/// Times `run(0)` and `run(1)` in alternating samples for about `budget` in all (after a warm-up
/// of about a sixth of it), so that a slow spell of the machine hits both.
pub fn measure_pair(mut run: impl FnMut(usize), budget: Duration) -> Pair {
    let mut once = |which| {
        let t = Instant::now();
        run(which);
        t.elapsed()
    };
    let first = once(0).max(once(1)).max(Duration::from_nanos(1));
    let reps = (SAMPLE_TARGET.as_secs_f64() / first.as_secs_f64()).ceil() as usize;
    let reps = reps.clamp(1, 100_000);
    let warm = Instant::now();
    while warm.elapsed() < budget / 6 {
        run(0);
        run(1);
    }
    let mut times = [Vec::new(), Vec::new()];
    let start = Instant::now();
    while times[0].len() < MIN_SAMPLES || (start.elapsed() < budget && times[0].len() < 10_000) {
        for (which, ts) in times.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..reps {
                run(which);
            }
            ts.push(t.elapsed().as_secs_f64() / reps as f64);
        }
    }
    let ratios: Vec<f64> = times[0].iter().zip(&times[1]).map(|(a, b)| b / a).collect();
    let [a, b] = times.map(|ts| Stats::of(ts).unwrap_or(Stats::EMPTY));
    Pair {
        a,
        b,
        b_over_a: Stats::of(ratios).unwrap_or(Stats::EMPTY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate() {
        let s = Stats::of(vec![4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3, s.samples), (2.0, 3.0, 4.0, 5));
        let s = Stats::of(vec![1.0, 2.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (1.25, 1.5, 1.75));
        assert!(Stats::of(vec![]).is_none());
    }

    #[test]
    fn pairs_take_at_least_the_minimum_samples() {
        let mut calls = [0u64, 0];
        let p = measure_pair(|w| calls[w] += 1, Duration::ZERO);
        assert!(p.a.samples >= MIN_SAMPLES && p.b.samples == p.a.samples);
        assert!(p.b_over_a.samples == p.a.samples);
        assert!(calls[0] >= p.a.samples as u64 && calls[1] >= p.b.samples as u64);
        assert!(p.a.q1 <= p.a.median && p.a.median <= p.a.q3);
    }
}
