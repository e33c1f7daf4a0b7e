//! Cost anomaly scoring: three methods on daily cost per (org, service), each against a trailing
//! baseline that excludes the day scored (SPEC section 5).
//!
//! For a day `d`, the baseline is the cost of the same org and service on the days in
//! `[d - window_days, d)` that have usage. With fewer than `min_baseline_days` such days nothing
//! is scored (no flag: too little history to call anything unusual).
//!
//! - z-score: `(x - mean) / stddev` (sample stddev); flag when above `zscore_threshold`;
//! - MAD (robust z): `0.6745 * (x - median) / MAD`; flag when above `mad_threshold`;
//! - percentile ratio: `x / p(percentile)` of the baseline; flag when above `pctl_factor`.
//!
//! Only upward deviations flag (a cost anomaly is a spike). A day is an anomaly when at least
//! `min_methods` methods flag it. Every score and flag is kept. Pure functions, no I/O.

use serde::{Deserialize, Serialize};

/// Thresholds, configurable in the `[anomaly]` table of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Trailing window in days (the scored day excluded).
    pub window_days: i32,
    /// Fewest baseline days needed to score.
    pub min_baseline_days: usize,
    /// z-score above which the z method flags.
    pub zscore_threshold: f64,
    /// Robust z above which the MAD method flags.
    pub mad_threshold: f64,
    /// Baseline percentile of the percentile rule, in (0, 1].
    pub percentile: f64,
    /// Ratio to that percentile above which the percentile rule flags.
    pub pctl_factor: f64,
    /// Methods that must agree for `is_anomaly`.
    pub min_methods: u8,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            window_days: 28,
            min_baseline_days: 7,
            zscore_threshold: 3.0,
            mad_threshold: 3.5,
            percentile: 0.99,
            pctl_factor: 1.5,
            min_methods: 2,
        }
    }
}

impl AnomalyConfig {
    /// Checks the thresholds; the error names the bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=3660).contains(&self.window_days) {
            return Err(format!("[anomaly] window_days must be 1..3660, not {}", self.window_days));
        }
        if !(self.percentile > 0.0 && self.percentile <= 1.0) {
            return Err(format!("[anomaly] percentile must be in (0, 1], not {}", self.percentile));
        }
        for (name, v) in [
            ("zscore_threshold", self.zscore_threshold),
            ("mad_threshold", self.mad_threshold),
            ("pctl_factor", self.pctl_factor),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("[anomaly] {name} must be a positive number, not {v}"));
            }
        }
        if !(1..=3).contains(&self.min_methods) {
            return Err(format!("[anomaly] min_methods must be 1, 2 or 3, not {}", self.min_methods));
        }
        Ok(())
    }
}

/// The scores of one day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Baseline days used.
    pub baseline_days: usize,
    /// Baseline mean cost (None without enough history).
    pub baseline_mean: Option<f64>,
    /// z-score.
    pub zscore: Option<f64>,
    /// Robust z (MAD).
    pub mad_score: Option<f64>,
    /// Ratio to the baseline percentile.
    pub pctl_ratio: Option<f64>,
    /// z method flagged.
    pub zscore_flag: bool,
    /// MAD method flagged.
    pub mad_flag: bool,
    /// Percentile method flagged.
    pub pctl_flag: bool,
    /// How many methods flagged.
    pub methods_flagged: u8,
    /// At least `min_methods` flagged.
    pub is_anomaly: bool,
}

/// Scores one series: `days` are `(day number, cost)` sorted by day, one entry per day.
///
/// The baseline's sorted copy is kept as the window slides (one insertion and the removals per
/// day, by binary search) instead of sorted again for each day; the results are those of
/// [`score`] over each day's baseline, bit for bit (tested).
pub fn score_series(days: &[(i32, f64)], cfg: &AnomalyConfig) -> Vec<Score> {
    let costs: Vec<f64> = days.iter().map(|d| d.1).collect();
    let mut out = Vec::with_capacity(days.len());
    let mut sorted: Vec<f64> = Vec::new();
    let mut scratch = Vec::new();
    let mut start = 0;
    for (i, &(day, x)) in days.iter().enumerate() {
        while start < i && days[start].0 < day - cfg.window_days {
            let gone = costs[start];
            if let Ok(at) = sorted.binary_search_by(|v| v.total_cmp(&gone)) {
                sorted.remove(at);
            }
            start += 1;
        }
        out.push(score_sorted(x, &costs[start..i], &sorted, cfg, &mut scratch));
        let at = sorted.binary_search_by(|v| v.total_cmp(&x)).unwrap_or_else(|at| at);
        sorted.insert(at, x);
    }
    out
}

/// Scores `x` against `baseline`.
pub fn score(x: f64, baseline: &[f64], cfg: &AnomalyConfig) -> Score {
    let mut sorted = baseline.to_vec();
    sorted.sort_by(f64::total_cmp);
    score_sorted(x, baseline, &sorted, cfg, &mut Vec::new())
}

/// [`score`] given the baseline (in day order: the mean and variance add in that order) and
/// its values sorted; `scratch` is reused for the deviations.
fn score_sorted(
    x: f64,
    baseline: &[f64],
    sorted: &[f64],
    cfg: &AnomalyConfig,
    scratch: &mut Vec<f64>,
) -> Score {
    let n = baseline.len();
    if n < cfg.min_baseline_days.max(2) {
        return Score { baseline_days: n, ..Default::default() };
    }
    let mean = baseline.iter().sum::<f64>() / n as f64;
    let var = baseline.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let median = quantile(sorted, 0.5);
    scratch.clear();
    scratch.extend(sorted.iter().map(|b| (b - median).abs()));
    scratch.sort_by(f64::total_cmp);
    let mad = quantile(scratch, 0.5);
    let p = quantile(sorted, cfg.percentile);

    let zscore = (sd > 0.0).then(|| (x - mean) / sd);
    let mad_score = (mad > 0.0).then(|| 0.6745 * (x - median) / mad);
    let pctl_ratio = (p > 0.0).then(|| x / p);
    let zscore_flag = zscore.is_some_and(|z| z > cfg.zscore_threshold);
    let mad_flag = mad_score.is_some_and(|m| m > cfg.mad_threshold);
    let pctl_flag = pctl_ratio.is_some_and(|r| r > cfg.pctl_factor);
    let methods_flagged = zscore_flag as u8 + mad_flag as u8 + pctl_flag as u8;
    Score {
        baseline_days: n,
        baseline_mean: Some(mean),
        zscore,
        mad_score,
        pctl_ratio,
        zscore_flag,
        mad_flag,
        pctl_flag,
        methods_flagged,
        is_anomaly: methods_flagged >= cfg.min_methods.max(1),
    }
}

/// Linear-interpolated quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(costs: &[f64]) -> Vec<(i32, f64)> {
        costs.iter().enumerate().map(|(i, c)| (i as i32, *c)).collect()
    }

    #[test]
    fn a_spike_after_steady_days_is_flagged_by_all_three_methods() {
        let mut costs = vec![10.0, 11.0, 9.0, 10.5, 9.5, 10.0, 10.2, 9.8];
        costs.push(60.0);
        let s = score_series(&series(&costs), &AnomalyConfig::default());
        let last = s.last().unwrap();
        assert_eq!(last.baseline_days, 8);
        assert!(last.zscore_flag && last.mad_flag && last.pctl_flag, "{last:?}");
        assert!(last.is_anomaly);
        assert!(s[..8].iter().all(|x| !x.is_anomaly));
    }

    #[test]
    fn the_scored_day_is_not_in_its_own_baseline() {
        // With the spike in its baseline the z-score could never exceed sqrt(n-1); here it does.
        let costs = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 100.0];
        let s = score_series(&series(&costs), &AnomalyConfig::default());
        assert!(s[7].zscore.unwrap() > 100.0);
        assert!((s[7].baseline_mean.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn too_little_history_scores_nothing() {
        let s = score_series(&series(&[1.0, 2.0, 50.0]), &AnomalyConfig::default());
        assert!(s.iter().all(|x| x.zscore.is_none() && !x.is_anomaly));
    }

    #[test]
    fn the_window_drops_old_days() {
        let days: Vec<(i32, f64)> = vec![
            (0, 1000.0),
            (40, 1.0),
            (41, 1.0),
            (42, 1.0),
            (43, 1.0),
            (44, 1.0),
            (45, 1.0),
            (46, 1.0),
            (47, 1.2),
        ];
        let s = score_series(&days, &AnomalyConfig::default());
        assert_eq!(s[8].baseline_days, 7); // day 0 is outside [47 - 28, 47)
    }

    #[test]
    fn flat_baselines_do_not_divide_by_zero() {
        let s = score(5.0, &[2.0; 10], &AnomalyConfig::default());
        assert_eq!((s.zscore, s.mad_score), (None, None));
        assert!(s.pctl_flag && !s.is_anomaly); // one method is not enough by default
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 1.0), 3.0);
    }

    #[test]
    fn the_sliding_sorted_window_scores_exactly_as_scoring_each_day_alone() {
        let cfg = AnomalyConfig { window_days: 6, min_baseline_days: 2, ..Default::default() };
        // Gaps, repeated values, negatives, zeros and a spike.
        let mut days = Vec::new();
        let mut x = 7u64;
        for d in 0..200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if x.is_multiple_of(5) {
                continue;
            }
            let cost = match x % 7 {
                0 => 0.0,
                1 => -0.01,
                2 => 10.0,
                _ => (x >> 40) as f64 / 1e5,
            };
            days.push((d, if d == 150 { 900.0 } else { cost }));
        }
        let slid = score_series(&days, &cfg);
        for (i, &(day, x)) in days.iter().enumerate() {
            let baseline: Vec<f64> =
                days[..i].iter().filter(|(d, _)| *d >= day - cfg.window_days).map(|(_, c)| *c).collect();
            assert_eq!(slid[i], score(x, &baseline, &cfg), "day {day}");
        }
        assert!(slid.iter().any(|s| s.is_anomaly));
    }
}
