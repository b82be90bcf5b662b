//! Forecast of job arrivals per region: a linear regression (linfa) over recent lags,
//! same-time-yesterday and same-time-last-week, and Fourier terms of hour-of-day and
//! day-of-week, fitted directly for each step of a 30-minute horizon, with an upper bound
//! from the quantile of recent out-of-sample residuals.
//!
//! Arrivals are kept in fixed buckets ([`History`]); the model works on `ln(jobs + k)` of a
//! bucket, with `k` the mean bucket of the training window: bursts do not dominate the fit,
//! the bound scales with the level, and near-empty buckets of a quiet series do not drag the
//! forecast towards zero as `ln(1 + jobs)` would. One model per horizon step (the direct
//! strategy) avoids feeding forecasts back in as lags. The models are refitted on a schedule
//! over a trailing window; until there is enough history for one, [`Forecaster::update`]
//! returns nothing and the policy falls back to reactive.
//!
//! For the next minutes, [`Forecaster::upper_rate_over`] also uses the bucket in progress:
//! its rate so far stands for the rest of it, and the step-one model, applied as if it were
//! complete, bounds the bucket after it.

use std::collections::VecDeque;

use linfa::Dataset;
use linfa::prelude::*;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Seconds in a week.
pub const WEEK: i64 = 7 * DAY;
/// Unix seconds of Monday 1970-01-05 00:00 UTC, where the day-of-week phase starts.
const FIRST_MONDAY: i64 = 4 * DAY;
/// Recent lags (in buckets before the origin) used as features.
const LAGS: u64 = 4;
/// Buckets averaged into the level feature (an hour of 5-minute buckets).
const LEVEL_BUCKETS: u64 = 12;
/// Harmonics of the daily and the weekly cycle.
const DAY_HARMONICS: usize = 4;
const WEEK_HARMONICS: usize = 3;
/// Out-of-sample residuals a horizon needs before they replace the in-sample ones.
const MIN_RESIDUALS: usize = 48;

/// Tuning of the forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Width of a history bucket, seconds. Default 300.
    pub bucket_secs: i64,
    /// How far ahead the forecast reaches, seconds. Default 1800 (30 minutes).
    pub horizon_secs: i64,
    /// Days of the most recent history a fit uses. Default 14.
    pub train_days: i64,
    /// Fewest training rows a fit needs; with less history the forecast is absent. The
    /// daily and weekly terms join once a full day of rows has them. Default 72 (six hours
    /// of 5-minute buckets).
    pub min_train_rows: usize,
    /// Seconds between refits. Default 21600 (6 hours).
    pub refit_every_secs: i64,
    /// Quantile of recent residuals that lifts the forecast to its upper bound. Default 0.9.
    pub upper_quantile: f64,
    /// Recent residuals per horizon step the bound is taken from. Default 576 (2 days).
    pub residual_window: usize,
    /// Ridge penalty per training row, which keeps the fit defined when features are
    /// collinear (a flat series). Default 0.001.
    pub ridge: f64,
    /// The offset `k` of the log transform, as a share of the training window's mean
    /// bucket. Default 0.3.
    pub log_offset_share: f64,
    /// Seconds of the bucket in progress that must have been seen before its rate so far
    /// counts. Default 15.
    pub nowcast_min_secs: i64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            bucket_secs: 300,
            horizon_secs: 1800,
            train_days: 14,
            min_train_rows: 72,
            refit_every_secs: 6 * 3600,
            upper_quantile: 0.9,
            residual_window: 576,
            ridge: 1e-3,
            log_offset_share: 0.3,
            nowcast_min_secs: 15,
        }
    }
}

impl ForecastConfig {
    /// Horizon steps.
    pub fn horizon(&self) -> usize {
        usize::try_from((self.horizon_secs / self.bucket_secs).max(1)).unwrap_or(1)
    }

    /// Buckets a history must keep for the weekly features and a full training window.
    pub fn retain_buckets(&self) -> usize {
        let days = self.train_days.max(0) + 8;
        usize::try_from(days * DAY / self.bucket_secs).unwrap_or(usize::MAX)
    }

    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket_secs <= 0 || DAY % self.bucket_secs != 0 {
            return Err("forecast bucket must be a positive divisor of a day".into());
        }
        if self.horizon_secs < self.bucket_secs {
            return Err("forecast horizon must be at least one bucket".into());
        }
        if !(0.5..1.0).contains(&self.upper_quantile) {
            return Err("upper quantile must be in [0.5, 1)".into());
        }
        if !(self.log_offset_share.is_finite() && self.log_offset_share > 0.0) {
            return Err("the log offset share must be positive".into());
        }
        if self.train_days < 1 || self.refit_every_secs <= 0 || self.min_train_rows < 24 {
            return Err("training window, refit period and minimum rows must be positive".into());
        }
        Ok(())
    }
}

/// Arrivals in fixed buckets counted from `start`. Bucket `i` covers
/// `(start + i·width, start + (i+1)·width]`; it is complete once a sample at or after its
/// end has been recorded.
#[derive(Debug, Clone)]
pub struct History {
    start: i64,
    bucket_secs: i64,
    first: u64,
    counts: VecDeque<f64>,
    open: f64,
    retain: usize,
}

impl History {
    /// An empty history keeping at most `retain` complete buckets.
    pub fn new(start: i64, bucket_secs: i64, retain: usize) -> Self {
        Self {
            start,
            bucket_secs: bucket_secs.max(1),
            first: 0,
            counts: VecDeque::new(),
            open: 0.0,
            retain: retain.max(1),
        }
    }

    /// Adds `jobs` that arrived in the sample interval ending at `at`. Samples come in time
    /// order; a sample before `start` counts towards the first bucket.
    pub fn record(&mut self, at: i64, jobs: f64) {
        let since = (at - self.start).max(1);
        let index = u64::try_from((since - 1) / self.bucket_secs).unwrap_or(0);
        while self.completed() < index {
            self.close();
        }
        self.open += jobs;
        if since % self.bucket_secs == 0 && self.completed() == index {
            self.close();
        }
    }

    fn close(&mut self) {
        self.counts.push_back(self.open);
        self.open = 0.0;
        if self.counts.len() > self.retain {
            self.counts.pop_front();
            self.first += 1;
        }
    }

    /// Number of complete buckets so far (the index of the open one).
    pub fn completed(&self) -> u64 {
        self.first + self.counts.len() as u64
    }

    /// Jobs in complete bucket `index`, if it is still kept.
    pub fn get(&self, index: u64) -> Option<f64> {
        let offset = usize::try_from(index.checked_sub(self.first)?).ok()?;
        self.counts.get(offset).copied()
    }

    /// Jobs recorded so far in the bucket in progress.
    pub fn open(&self) -> f64 {
        self.open
    }

    /// Index of the oldest bucket kept.
    pub fn first_kept(&self) -> u64 {
        self.first
    }

    /// Unix seconds at which bucket `index` begins.
    pub fn bucket_start(&self, index: u64) -> i64 {
        self.start + index as i64 * self.bucket_secs
    }

    /// Width of a bucket, seconds.
    pub fn bucket_secs(&self) -> i64 {
        self.bucket_secs
    }

    /// Unix seconds at which the buckets are counted from.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// The history as plain data, for storing it.
    pub fn snapshot(&self) -> HistorySnapshot {
        HistorySnapshot {
            start: self.start,
            bucket_secs: self.bucket_secs,
            first: self.first,
            counts: self.counts.iter().copied().collect(),
            open: self.open,
        }
    }

    /// A history from a stored snapshot, keeping at most `retain` complete buckets.
    pub fn restore(snapshot: HistorySnapshot, retain: usize) -> Self {
        let mut history = Self::new(snapshot.start, snapshot.bucket_secs, retain);
        let mut counts: VecDeque<f64> = snapshot.counts.into();
        let mut first = snapshot.first;
        while counts.len() > history.retain {
            counts.pop_front();
            first += 1;
        }
        history.first = first;
        history.counts = counts;
        history.open = snapshot.open;
        history
    }
}

/// A [`History`] as plain data: what the live autoscaler stores so that a restart keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistorySnapshot {
    /// Unix seconds at which bucket 0 begins.
    pub start: i64,
    /// Width of a bucket, seconds.
    pub bucket_secs: i64,
    /// Index of the first bucket in `counts`.
    pub first: u64,
    /// Jobs per complete bucket, oldest first.
    pub counts: Vec<f64>,
    /// Jobs so far in the bucket in progress.
    pub open: f64,
}

/// Arrivals expected in the buckets after a complete one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// Index of the last complete bucket, the forecast's origin.
    pub origin: u64,
    /// Unix seconds at which the first forecast bucket begins.
    pub first_bucket_start: i64,
    /// Width of a bucket, seconds.
    pub bucket_secs: i64,
    /// Expected jobs in each of the next buckets (the median of the fitted log model).
    pub mean: Vec<f64>,
    /// Upper bound on the jobs of each of the next buckets.
    pub upper: Vec<f64>,
}

impl Forecast {
    /// The highest upper-bound arrival rate, jobs per second, of the buckets that overlap
    /// `[from, to]`; `None` when the forecast does not reach that far.
    pub fn upper_rate_between(&self, from: i64, to: i64) -> Option<f64> {
        let mut best: Option<f64> = None;
        for (i, upper) in self.upper.iter().enumerate() {
            let begins = self.first_bucket_start + i as i64 * self.bucket_secs;
            let ends = begins + self.bucket_secs;
            if begins <= to && ends > from {
                let rate = upper / self.bucket_secs as f64;
                best = Some(best.map_or(rate, |b| b.max(rate)));
            }
        }
        best
    }
}

impl Forecast {
    /// The highest expected arrival rate (the forecast's mean), jobs per second, of the
    /// buckets that overlap `[from, to]`; `None` when the forecast does not reach that far.
    pub fn mean_rate_between(&self, from: i64, to: i64) -> Option<f64> {
        let mut best: Option<f64> = None;
        for (i, mean) in self.mean.iter().enumerate() {
            let begins = self.first_bucket_start + i as i64 * self.bucket_secs;
            let ends = begins + self.bucket_secs;
            if begins <= to && ends > from {
                let rate = mean / self.bucket_secs as f64;
                best = Some(best.map_or(rate, |b| b.max(rate)));
            }
        }
        best
    }
}

/// Which features a fitted model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Features {
    /// Recent lags only, while there is less than a day to learn the daily cycle from.
    Recent,
    /// Lags, yesterday and calendar terms.
    Daily,
    /// All of those and last week.
    Weekly,
}

impl Features {
    fn lookback(self, bucket_secs: i64) -> u64 {
        let span = match self {
            Self::Recent => 0,
            Self::Daily => DAY,
            Self::Weekly => WEEK,
        };
        u64::try_from(span / bucket_secs)
            .unwrap_or(u64::MAX)
            .max(LEVEL_BUCKETS)
    }

    fn count(self) -> usize {
        let lags = 1 + LAGS as usize + 1;
        let calendar = 2 * DAY_HARMONICS + 2 * WEEK_HARMONICS;
        match self {
            Self::Recent => lags,
            Self::Daily => lags + 2 + calendar,
            Self::Weekly => lags + 4 + calendar,
        }
    }
}

#[derive(Debug, Clone)]
struct Model {
    features: Features,
    /// `k` of the transform `ln(jobs + k)`.
    offset: f64,
    /// Coefficients per horizon step, the first one the intercept.
    coefs: Vec<Array1<f64>>,
    /// Upper quantile of in-sample residuals per horizon step, for use until enough
    /// out-of-sample ones are in.
    in_sample_quantile: Vec<f64>,
}

/// Why a fit failed.
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error("least-squares fit failed: {0}")]
    Fit(String),
    #[error("too little history: {rows} training rows, {needed} needed")]
    TooLittleHistory { rows: usize, needed: usize },
}

/// Fits, refits and evaluates the forecast as history comes in.
#[derive(Debug, Clone)]
pub struct Forecaster {
    config: ForecastConfig,
    model: Option<Model>,
    fitted_at: Option<i64>,
    latest: Option<Forecast>,
    /// Log-space predictions of recent origins with the offset they used, kept until all
    /// their targets are complete.
    issued: VecDeque<(u64, f64, Vec<f64>)>,
    /// Recent out-of-sample residuals (actual − predicted, log space) per horizon step.
    residuals: Vec<VecDeque<f64>>,
    /// Upper-bound lift per horizon step, log space, as of the last complete bucket.
    lifts: Vec<f64>,
    seen: u64,
}

impl Forecaster {
    /// A forecaster with no model yet.
    pub fn new(config: ForecastConfig) -> Self {
        let horizon = config.horizon();
        Self {
            config,
            model: None,
            fitted_at: None,
            latest: None,
            issued: VecDeque::new(),
            residuals: vec![VecDeque::new(); horizon],
            lifts: vec![0.0; horizon],
            seen: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// The forecast of the last [`Forecaster::update`], if there was one.
    pub fn latest(&self) -> Option<&Forecast> {
        self.latest.as_ref()
    }

    /// A forecaster that answers `forecast` until the history it is given moves on.
    #[cfg(test)]
    pub(crate) fn pinned(config: ForecastConfig, forecast: Forecast) -> Self {
        let mut forecaster = Self::new(config);
        forecaster.latest = Some(forecast);
        forecaster
    }

    /// The forecast from the last complete bucket of `history`, refitting first when the
    /// schedule says so; `None` while there is too little history for a model.
    pub fn update(&mut self, history: &History, now: i64) -> Option<&Forecast> {
        let completed = history.completed();
        if completed != self.seen {
            self.score(history, completed);
            self.seen = completed;
            self.latest = None;
            let due = match (self.model.as_ref(), self.fitted_at) {
                (Some(_), Some(at)) => now - at >= self.config.refit_every_secs,
                _ => true,
            };
            if due {
                match self.fit(history) {
                    Ok(model) => {
                        self.model = Some(model);
                        self.fitted_at = Some(now);
                    }
                    Err(ForecastError::TooLittleHistory { .. }) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "forecast refit failed; keeping the last model");
                        self.fitted_at = Some(now);
                    }
                }
            }
            if let Some(model) = &self.model {
                self.lifts = (0..model.coefs.len())
                    .map(|i| {
                        let recent = &self.residuals[i];
                        let lift = if recent.len() >= MIN_RESIDUALS {
                            quantile(recent.iter().copied().collect(), self.config.upper_quantile)
                        } else {
                            model.in_sample_quantile[i]
                        };
                        lift.max(0.0)
                    })
                    .collect();
            }
            if completed > 0 {
                self.latest = self.predict(history, completed - 1);
            }
        }
        self.latest.as_ref()
    }

    /// Records the residuals of predictions whose targets completed since the last call.
    fn score(&mut self, history: &History, completed: u64) {
        let horizon = self.config.horizon() as u64;
        let from = self.seen.max(completed.saturating_sub(horizon + 1));
        for target in from..completed {
            let Some(actual) = history.get(target) else {
                continue;
            };
            for (origin, offset, predicted) in &self.issued {
                let actual = (actual.max(0.0) + offset).ln();
                let Some(step) = target.checked_sub(*origin) else {
                    continue;
                };
                if step == 0 || step > horizon {
                    continue;
                }
                let Some(&p) = predicted.get(usize::try_from(step - 1).unwrap_or(usize::MAX))
                else {
                    continue;
                };
                if let Some(window) = self
                    .residuals
                    .get_mut(usize::try_from(step - 1).unwrap_or(usize::MAX))
                {
                    window.push_back(actual - p);
                    if window.len() > self.config.residual_window {
                        window.pop_front();
                    }
                }
            }
        }
        while self
            .issued
            .front()
            .is_some_and(|(origin, _, _)| origin + horizon < completed)
        {
            self.issued.pop_front();
        }
    }

    fn fit(&self, history: &History) -> Result<Model, ForecastError> {
        let cfg = &self.config;
        let horizon = cfg.horizon() as u64;
        let completed = history.completed();
        let train_rows = u64::try_from(cfg.train_days * DAY / cfg.bucket_secs).unwrap_or(0);
        let needed = cfg.min_train_rows as u64;
        let seasonal_needed = needed.max(u64::try_from(DAY / cfg.bucket_secs).unwrap_or(0));
        // Rows available for the longest step with a given feature set.
        let rows_with = |features: Features| -> u64 {
            let lo = history.first_kept() + features.lookback(cfg.bucket_secs);
            (completed.saturating_sub(horizon)).saturating_sub(lo)
        };
        let features = if rows_with(Features::Weekly) >= seasonal_needed {
            Features::Weekly
        } else if rows_with(Features::Daily) >= seasonal_needed {
            Features::Daily
        } else if rows_with(Features::Recent) >= needed {
            Features::Recent
        } else {
            return Err(ForecastError::TooLittleHistory {
                rows: usize::try_from(rows_with(Features::Recent)).unwrap_or(0),
                needed: cfg.min_train_rows,
            });
        };
        let first = history.first_kept();
        let window_start = completed.saturating_sub(train_rows).max(first);
        let (sum, n) = (window_start..completed)
            .filter_map(|i| history.get(i))
            .fold((0.0, 0u64), |(s, n), c| (s + c.max(0.0), n + 1));
        // A floor of one job keeps the transform defined on a series of empty buckets.
        let offset = (cfg.log_offset_share * sum / n.max(1) as f64).max(1.0);
        // Transformed once: the rows of the six fits share most of their values.
        let series = Series {
            history,
            open: None,
            offset,
            cache: Some((
                first,
                (first..completed)
                    .map(|i| (history.get(i).unwrap_or(0.0).max(0.0) + offset).ln())
                    .collect(),
            )),
        };

        let width = features.count();
        let mut coefs = Vec::with_capacity(cfg.horizon());
        let mut in_sample_quantile = Vec::with_capacity(cfg.horizon());
        let mut row = Vec::with_capacity(width);
        for step in 1..=horizon {
            let Some(last) = completed.checked_sub(1 + step) else {
                return Err(ForecastError::TooLittleHistory {
                    rows: 0,
                    needed: cfg.min_train_rows,
                });
            };
            let lo = (first + features.lookback(cfg.bucket_secs))
                .max((last + 1).saturating_sub(train_rows));
            let n = usize::try_from((last + 1).saturating_sub(lo)).unwrap_or(0);
            // Ridge rows after the data rows: sqrt(λ·n) on every coefficient but the intercept.
            let mut x = Array2::<f64>::zeros((n + width - 1, width));
            let mut y = Array1::<f64>::zeros(n + width - 1);
            for (i, origin) in (lo..=last).enumerate() {
                let target = series.z(origin + step);
                if series.features(origin, step, features, &mut row).is_none() || target.is_none() {
                    return Err(ForecastError::Fit("a training row lacks history".into()));
                }
                for (j, v) in row.iter().enumerate() {
                    x[[i, j]] = *v;
                }
                y[i] = target.unwrap_or_default();
            }
            let penalty = (cfg.ridge * n as f64).sqrt();
            for j in 1..width {
                x[[n + j - 1, j]] = penalty;
            }
            let dataset = Dataset::new(x, y);
            let fitted = LinearRegression::new()
                .with_intercept(false)
                .fit(&dataset)
                .map_err(|e| ForecastError::Fit(e.to_string()))?;
            let params = fitted.params().clone();
            if params.iter().any(|p| !p.is_finite()) {
                return Err(ForecastError::Fit("non-finite coefficients".into()));
            }
            let records = dataset.records();
            let targets = dataset.targets();
            let tail = n.saturating_sub(cfg.residual_window);
            let residuals: Vec<f64> = (tail..n)
                .map(|i| targets[i] - records.row(i).dot(&params))
                .collect();
            in_sample_quantile.push(quantile(residuals, cfg.upper_quantile));
            coefs.push(params);
        }
        Ok(Model {
            features,
            offset,
            coefs,
            in_sample_quantile,
        })
    }

    fn predict(&mut self, history: &History, origin: u64) -> Option<Forecast> {
        let model = self.model.as_ref()?;
        let series = Series {
            history,
            open: None,
            offset: model.offset,
            cache: None,
        };
        let mut row = Vec::new();
        let mut logs = Vec::with_capacity(model.coefs.len());
        let mut mean = Vec::with_capacity(model.coefs.len());
        let mut upper = Vec::with_capacity(model.coefs.len());
        for (i, coefs) in model.coefs.iter().enumerate() {
            series.features(origin, i as u64 + 1, model.features, &mut row)?;
            let z = dot(&row, coefs);
            let m = series.jobs(z);
            logs.push(z);
            mean.push(m);
            let lift = self.lifts.get(i).copied().unwrap_or(0.0);
            upper.push(series.jobs(z + lift).max(m));
        }
        self.issued.push_back((origin, model.offset, logs));
        Some(Forecast {
            origin,
            first_bucket_start: history.bucket_start(origin + 1),
            bucket_secs: history.bucket_secs(),
            mean,
            upper,
        })
    }

    /// The highest arrival rate, jobs per second, to expect over `[now, now + lead]`, for
    /// sizing a pool whose new workers take `lead` seconds to start. Once
    /// `nowcast_min_secs` of the bucket in progress have been seen, its rate so far stands
    /// for its rest, and the bucket after it is bounded by the step-one model applied as if
    /// the bucket in progress were complete at that rate; before that, and further out, the
    /// forecast of the last [`Forecaster::update`] bounds it. `None` without a forecast.
    pub fn upper_rate_over(&self, history: &History, now: i64, lead: i64) -> Option<f64> {
        let latest = self.latest.as_ref()?;
        let until = now + lead.max(0);
        let Some(model) = self.model.as_ref() else {
            return latest.upper_rate_between(now, until);
        };
        let bucket = history.bucket_secs();
        let open = history.completed();
        let open_start = history.bucket_start(open);
        let open_end = open_start + bucket;
        let elapsed = now - open_start;
        if elapsed < self.config.nowcast_min_secs.max(1) {
            return latest.upper_rate_between(now, until);
        }
        let rate_now = history.open().max(0.0) / elapsed as f64;
        if until < open_end {
            return Some(rate_now);
        }
        let series = Series {
            history,
            open: Some((open, rate_now * bucket as f64)),
            offset: model.offset,
            cache: None,
        };
        let mut row = Vec::new();
        series.features(open, 1, model.features, &mut row)?;
        let coefs = model.coefs.first()?;
        let lift = self.lifts.first().copied().unwrap_or(0.0);
        let next = series.jobs(dot(&row, coefs) + lift) / bucket as f64;
        let later = latest
            .upper_rate_between(open_end + bucket, until)
            .unwrap_or(0.0);
        Some(rate_now.max(next).max(later))
    }
}

fn dot(row: &[f64], coefs: &Array1<f64>) -> f64 {
    row.iter().zip(coefs.iter()).map(|(x, c)| x * c).sum()
}

/// The history as the model sees it: transformed, with the bucket in progress optionally
/// standing in as complete.
struct Series<'a> {
    history: &'a History,
    open: Option<(u64, f64)>,
    offset: f64,
    /// Transformed complete buckets from the first index on, when computed ahead.
    cache: Option<(u64, Vec<f64>)>,
}

impl Series<'_> {
    fn z(&self, index: u64) -> Option<f64> {
        if let Some((first, cached)) = &self.cache
            && let Some(z) = index
                .checked_sub(*first)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| cached.get(i))
        {
            return Some(*z);
        }
        let jobs = match self.open {
            Some((open, jobs)) if open == index => jobs,
            _ => self.history.get(index)?,
        };
        Some((jobs.max(0.0) + self.offset).ln())
    }

    fn jobs(&self, z: f64) -> f64 {
        (z.exp() - self.offset).max(0.0)
    }

    /// The feature row for predicting bucket `origin + step` from the buckets up to `origin`.
    fn features(
        &self,
        origin: u64,
        step: u64,
        features: Features,
        row: &mut Vec<f64>,
    ) -> Option<()> {
        let per_day = u64::try_from(DAY / self.history.bucket_secs()).ok()?;
        let target = origin + step;
        row.clear();
        row.push(1.0);
        for lag in 0..LAGS {
            row.push(self.z(origin.checked_sub(lag)?)?);
        }
        let mut level = 0.0;
        for lag in 0..LEVEL_BUCKETS {
            level += self.z(origin.checked_sub(lag)?)?;
        }
        row.push(level / LEVEL_BUCKETS as f64);
        if features == Features::Recent {
            return Some(());
        }
        // The target's own time yesterday, and the origin's, so the fit can carry over
        // yesterday's change between the two.
        row.push(self.z(target.checked_sub(per_day)?)?);
        row.push(self.z(origin.checked_sub(per_day)?)?);
        if features == Features::Weekly {
            let per_week = 7 * per_day;
            row.push(self.z(target.checked_sub(per_week)?)?);
            row.push(self.z(origin.checked_sub(per_week)?)?);
        }
        let mid = self.history.bucket_start(target) + self.history.bucket_secs() / 2;
        let day_phase = mid.rem_euclid(DAY) as f64 / DAY as f64;
        let week_phase = (mid - FIRST_MONDAY).rem_euclid(WEEK) as f64 / WEEK as f64;
        for k in 1..=DAY_HARMONICS {
            let a = std::f64::consts::TAU * k as f64 * day_phase;
            row.push(a.sin());
            row.push(a.cos());
        }
        for k in 1..=WEEK_HARMONICS {
            let a = std::f64::consts::TAU * k as f64 * week_phase;
            row.push(a.sin());
            row.push(a.cos());
        }
        Some(())
    }
}

/// The `q` quantile (nearest rank) of `values`; 0 when there are none.
pub fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return 0.0;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
    let (_, v, _) = values.select_nth_unstable_by(rank, f64::total_cmp);
    *v
}

/// Symmetric mean absolute percentage error, 0 to 2, of forecast/actual pairs; a pair of
/// zeros counts as exact.
pub fn smape(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u64);
    for (forecast, actual) in pairs {
        let denominator = forecast.abs() + actual.abs();
        if denominator > 0.0 {
            sum += 2.0 * (forecast - actual).abs() / denominator;
        }
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A noisy series with a daily and a weekly cycle, in 5-minute buckets.
    fn seasonal(days: i64) -> Vec<f64> {
        let per_day = DAY / 300;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..days * per_day)
            .map(|i| {
                let t = i * 300;
                let day = (t as f64 / DAY as f64) * std::f64::consts::TAU;
                let weekday = (t / DAY) % 7;
                let weekly = if weekday >= 5 { 0.6 } else { 1.0 };
                // xorshift: deterministic noise without a dependency
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state % 1000) as f64 / 1000.0 - 0.5;
                (200.0 + 150.0 * (day - 1.0).sin()) * weekly * (1.0 + 0.2 * noise)
            })
            .collect()
    }

    fn history_of(series: &[f64]) -> History {
        let mut history = History::new(FIRST_MONDAY, 300, 1 << 20);
        for (i, jobs) in series.iter().enumerate() {
            history.record(FIRST_MONDAY + (i as i64 + 1) * 300, *jobs);
        }
        history
    }

    #[test]
    fn a_sample_at_a_bucket_end_completes_that_bucket() {
        let mut history = History::new(0, 300, 10);
        history.record(100, 1.0);
        history.record(300, 2.0);
        assert_eq!(history.completed(), 1);
        assert_eq!(history.get(0), Some(3.0));
        history.record(305, 4.0);
        assert_eq!(history.completed(), 1);
        history.record(1000, 1.0);
        // buckets 1 and 2 closed by the jump, bucket 3 is open
        assert_eq!(history.completed(), 3);
        assert_eq!(history.get(1), Some(4.0));
        assert_eq!(history.get(2), Some(0.0));
    }

    #[test]
    fn a_restored_history_continues_where_its_snapshot_left_off() {
        let mut history = History::new(0, 10, 5);
        for i in 1..=7 {
            history.record(i * 10, i as f64);
        }
        history.record(75, 0.5);
        let json = serde_json::to_string(&history.snapshot()).unwrap();
        let mut restored = History::restore(serde_json::from_str(&json).unwrap(), 5);
        assert_eq!(restored.snapshot(), history.snapshot());
        assert_eq!(restored.get(6), Some(7.0));
        assert_eq!(restored.open(), 0.5);
        restored.record(80, 1.0);
        assert_eq!(restored.get(7), Some(1.5));
        // a smaller retention drops the oldest buckets
        let short = History::restore(history.snapshot(), 2);
        assert_eq!(short.first_kept(), 5);
        assert_eq!(short.completed(), 7);
    }

    #[test]
    fn history_keeps_only_the_most_recent_buckets() {
        let mut history = History::new(0, 10, 3);
        for i in 1..=5 {
            history.record(i * 10, i as f64);
        }
        assert_eq!(history.completed(), 5);
        assert_eq!(history.get(1), None);
        assert_eq!(history.get(2), Some(3.0));
        assert_eq!(history.first_kept(), 2);
    }

    #[test]
    fn with_less_than_the_minimum_history_there_is_no_forecast() {
        let config = ForecastConfig::default();
        let needed = config.min_train_rows + config.horizon() + LEVEL_BUCKETS as usize;
        let series = seasonal(1);
        let mut history = History::new(FIRST_MONDAY, 300, 1 << 20);
        let mut forecaster = Forecaster::new(config);
        for (i, jobs) in series.iter().enumerate() {
            let at = FIRST_MONDAY + (i as i64 + 1) * 300;
            history.record(at, *jobs);
            let forecast = forecaster.update(&history, at).is_some();
            assert_eq!(forecast, i + 1 >= needed, "after {} buckets", i + 1);
        }
    }

    #[test]
    fn the_forecast_beats_seasonal_naive_on_a_seasonal_series() {
        let series = seasonal(21);
        let per_week = (WEEK / 300) as usize;
        let mut history = History::new(FIRST_MONDAY, 300, 1 << 20);
        let mut forecaster = Forecaster::new(ForecastConfig::default());
        let horizon = forecaster.config().horizon();
        let mut ours = Vec::new();
        let mut naive = Vec::new();
        let mut covered = 0usize;
        for (i, jobs) in series.iter().enumerate() {
            let at = FIRST_MONDAY + (i as i64 + 1) * 300;
            history.record(at, *jobs);
            let Some(forecast) = forecaster.update(&history, at) else {
                continue;
            };
            let target = i + horizon;
            if target < series.len() && target >= per_week + 7 * 288 {
                ours.push((forecast.mean[horizon - 1], series[target]));
                naive.push((series[target - per_week], series[target]));
                covered += usize::from(series[target] <= forecast.upper[horizon - 1]);
            }
        }
        assert!(ours.len() > 1000);
        let ours_smape = smape(ours.iter().copied()).unwrap();
        let naive_smape = smape(naive.iter().copied()).unwrap();
        assert!(
            ours_smape < naive_smape,
            "forecast {ours_smape:.4} vs seasonal-naive {naive_smape:.4}"
        );
        // the 0.9 bound holds for most of the targets
        let coverage = covered as f64 / ours.len() as f64;
        assert!(coverage > 0.8, "coverage {coverage:.3}");
    }

    #[test]
    fn the_model_adds_yesterday_after_two_days_and_last_week_after_eight() {
        let series = seasonal(9);
        let forecaster = Forecaster::new(ForecastConfig::default());
        let fitted = |days: f64| {
            let buckets = (days * (DAY / 300) as f64) as usize;
            forecaster
                .fit(&history_of(&series[..buckets]))
                .unwrap()
                .features
        };
        assert_eq!(fitted(0.5), Features::Recent);
        assert_eq!(fitted(1.9), Features::Recent);
        assert_eq!(fitted(2.1), Features::Daily);
        assert_eq!(fitted(7.9), Features::Daily);
        assert_eq!(fitted(8.1), Features::Weekly);
    }

    #[test]
    fn the_rate_of_the_bucket_in_progress_stands_for_its_rest() {
        let series = seasonal(3);
        let mut history = history_of(&series);
        let end = FIRST_MONDAY + series.len() as i64 * 300;
        let mut forecaster = Forecaster::new(ForecastConfig::default());
        assert!(forecaster.update(&history, end).is_some());
        // a burst: 50 jobs a second for the first 30 s of the new bucket
        for t in (5..=30).step_by(5) {
            history.record(end + t, 250.0);
        }
        forecaster.update(&history, end + 30);
        let within = forecaster.upper_rate_over(&history, end + 30, 90).unwrap();
        assert!((within - 50.0).abs() < 1e-9, "{within}");
        // before the bucket has been seen long enough, the forecast alone answers
        let mut fresh = history_of(&series);
        fresh.record(end + 5, 250.0);
        let early = forecaster.upper_rate_over(&fresh, end + 5, 90).unwrap();
        assert!(early < 50.0, "{early}");
        // near its end the lead reaches the next bucket, bounded from the burst's level
        for t in (35..=240).step_by(5) {
            history.record(end + t, 250.0);
        }
        forecaster.update(&history, end + 240);
        let across = forecaster.upper_rate_over(&history, end + 240, 90).unwrap();
        assert!(across >= 50.0, "{across}");
    }

    #[test]
    fn a_flat_series_still_fits_thanks_to_the_ridge() {
        let history = history_of(&vec![50.0; (3 * DAY / 300) as usize]);
        let mut forecaster = Forecaster::new(ForecastConfig::default());
        let forecast = forecaster.update(&history, 3 * DAY).unwrap();
        for m in &forecast.mean {
            assert!((m - 50.0).abs() < 1.0, "{m}");
        }
    }

    #[test]
    fn the_upper_rate_is_the_highest_bound_over_the_overlapping_buckets() {
        let forecast = Forecast {
            origin: 0,
            first_bucket_start: 1000,
            bucket_secs: 100,
            mean: vec![10.0, 20.0, 30.0],
            upper: vec![100.0, 300.0, 200.0],
        };
        assert_eq!(forecast.upper_rate_between(1000, 1050), Some(1.0));
        assert_eq!(forecast.upper_rate_between(1050, 1150), Some(3.0));
        assert_eq!(forecast.upper_rate_between(1250, 1400), Some(2.0));
        assert_eq!(forecast.upper_rate_between(1300, 1400), None);
        assert_eq!(forecast.mean_rate_between(1050, 1150), Some(0.2));
        assert_eq!(forecast.mean_rate_between(1300, 1400), None);
    }

    #[test]
    fn smape_is_zero_for_exact_forecasts_and_two_for_a_zero_against_anything() {
        assert_eq!(smape([(1.0, 1.0), (0.0, 0.0)]), Some(0.0));
        assert_eq!(smape([(0.0, 5.0)]), Some(2.0));
        assert_eq!(smape(std::iter::empty()), None);
    }

    #[test]
    fn quantile_takes_the_nearest_rank() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(values.clone(), 0.9), 9.0);
        assert_eq!(quantile(values, 0.5), 5.0);
        assert_eq!(quantile(Vec::new(), 0.9), 0.0);
    }
}
