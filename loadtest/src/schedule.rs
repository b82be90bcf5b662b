//! When each request is due. A schedule is fixed before the run starts — an open loop: the
//! arrivals do not wait for answers, so a slow server meets the same load as a fast one.
//!
//! Shapes: a constant rate, a linear ramp, a replayed `timestamp,value` trace (each row one
//! step of constant rate, the rows scaled so the busiest one reaches a given peak), and
//! bursts (many requests due at the same instant, at a fixed period). Arrivals are evenly
//! spaced within a rate: arrival `k` is due when the integral of the rate reaches `k`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{MAX_DURATION_CAP, MAX_REQUESTS_CAP};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the trace {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trace {path}, line {line}: {message}")]
    Trace {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The shape of the arrival rate over time.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// `rate` requests per second for `duration`.
    Constant { rate: f64, duration: Duration },
    /// From `from` to `to` requests per second, linearly, over `duration`.
    Ramp {
        from: f64,
        to: f64,
        duration: Duration,
    },
    /// One step of `step` per rate (requests per second), in order.
    Steps {
        rates: Vec<f64>,
        step: Duration,
        label: String,
    },
    /// `size` requests due at once, every `every`, for `duration`.
    Bursts {
        size: u64,
        every: Duration,
        duration: Duration,
    },
}

/// What a report says about the schedule it ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub description: String,
    pub planned_requests: u64,
    pub planned_duration_s: f64,
    /// Requests per second over the whole schedule.
    pub mean_rate: f64,
    /// Whether the plan was cut at the request cap.
    pub truncated: bool,
}

/// The due times of every request of a run, from its start, in order.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub offsets: Vec<Duration>,
    pub duration: Duration,
    pub info: ScheduleInfo,
}

impl Shape {
    pub fn duration(&self) -> Duration {
        match self {
            Shape::Constant { duration, .. }
            | Shape::Ramp { duration, .. }
            | Shape::Bursts { duration, .. } => *duration,
            Shape::Steps { rates, step, .. } => {
                step.saturating_mul(u32::try_from(rates.len()).unwrap_or(u32::MAX))
            }
        }
    }

    pub fn describe(&self) -> String {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Shape::Constant { rate, duration } => format!("constant {rate}/s for {}", d(duration)),
            Shape::Ramp { from, to, duration } => {
                format!("ramp {from}/s to {to}/s over {}", d(duration))
            }
            Shape::Steps { rates, step, label } => {
                format!("{label}: {} steps of {}", rates.len(), d(step))
            }
            Shape::Bursts {
                size,
                every,
                duration,
            } => format!("bursts of {size} every {} for {}", d(every), d(duration)),
        }
    }

    fn validate(&self) -> Result<(), ScheduleError> {
        let bad = |m: String| Err(ScheduleError::Invalid(m));
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        let duration = self.duration();
        if duration.is_zero() {
            return bad("the schedule has no duration".into());
        }
        if duration > MAX_DURATION_CAP {
            return bad(format!(
                "the schedule lasts {}, more than the cap of {}",
                humantime::format_duration(duration),
                humantime::format_duration(MAX_DURATION_CAP)
            ));
        }
        match self {
            Shape::Constant { rate, .. } if !rate_ok(*rate) || *rate == 0.0 => {
                bad(format!("invalid rate {rate}"))
            }
            Shape::Ramp { from, to, .. } if !rate_ok(*from) || !rate_ok(*to) => {
                bad(format!("invalid ramp {from} to {to}"))
            }
            Shape::Ramp { from, to, .. } if *from == 0.0 && *to == 0.0 => {
                bad("a ramp from 0 to 0 sends nothing".into())
            }
            Shape::Steps { rates, .. } if rates.iter().any(|r| !rate_ok(*r)) => {
                bad("a step has an invalid rate".into())
            }
            Shape::Bursts { size, every, .. } if *size == 0 || every.is_zero() => {
                bad("bursts need a size and a period".into())
            }
            _ => Ok(()),
        }
    }
}

/// The rate `from` → `to` over `length` seconds.
#[derive(Clone, Copy, Debug)]
struct Segment {
    length: f64,
    from: f64,
    to: f64,
}

impl Segment {
    /// Requests due in the whole segment.
    fn area(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.length
    }

    /// The time into the segment at which `x` requests are due (0 ≤ x ≤ area).
    fn time_of(&self, x: f64) -> f64 {
        // r(τ) = from + a·τ; N(τ) = from·τ + a·τ²/2; solved in the form that stays exact
        // when a is 0 or negative.
        let a = (self.to - self.from) / self.length;
        let disc = (self.from * self.from + 2.0 * a * x).max(0.0);
        let denom = self.from + disc.sqrt();
        if denom <= 0.0 {
            0.0
        } else {
            (2.0 * x / denom).clamp(0.0, self.length)
        }
    }
}

fn arrivals(segments: &[Segment], max: u64) -> (Vec<Duration>, bool) {
    let mut out = Vec::new();
    let mut start = 0.0_f64;
    let mut due_before = 0.0_f64;
    let mut k = 0_u64;
    for seg in segments {
        let end_count = due_before + seg.area();
        #[allow(
            clippy::cast_precision_loss,
            reason = "request counts stay far below 2^52"
        )]
        while (k as f64) < end_count - 1e-9 {
            if k >= max {
                return (out, true);
            }
            #[allow(
                clippy::cast_precision_loss,
                reason = "request counts stay far below 2^52"
            )]
            let t = start + seg.time_of(k as f64 - due_before);
            out.push(Duration::from_secs_f64(t));
            k += 1;
        }
        start += seg.length;
        due_before = end_count;
    }
    (out, false)
}

impl Schedule {
    /// Plans every arrival of `shape`, at most `max_requests` of them.
    pub fn build(shape: &Shape, max_requests: u64) -> Result<Self, ScheduleError> {
        shape.validate()?;
        let max = max_requests.min(MAX_REQUESTS_CAP);
        let duration = shape.duration();
        let (offsets, truncated) = match shape {
            Shape::Constant { rate, duration } => arrivals(
                &[Segment {
                    length: duration.as_secs_f64(),
                    from: *rate,
                    to: *rate,
                }],
                max,
            ),
            Shape::Ramp { from, to, duration } => arrivals(
                &[Segment {
                    length: duration.as_secs_f64(),
                    from: *from,
                    to: *to,
                }],
                max,
            ),
            Shape::Steps { rates, step, .. } => {
                let segments: Vec<Segment> = rates
                    .iter()
                    .map(|r| Segment {
                        length: step.as_secs_f64(),
                        from: *r,
                        to: *r,
                    })
                    .collect();
                arrivals(&segments, max)
            }
            Shape::Bursts {
                size,
                every,
                duration,
            } => {
                let mut out = Vec::new();
                let mut at = Duration::ZERO;
                let mut truncated = false;
                'bursts: while at < *duration {
                    for _ in 0..*size {
                        if out.len() as u64 >= max {
                            truncated = true;
                            break 'bursts;
                        }
                        out.push(at);
                    }
                    at += *every;
                }
                (out, truncated)
            }
        };
        let planned = offsets.len() as u64;
        #[allow(
            clippy::cast_precision_loss,
            reason = "request counts stay far below 2^52"
        )]
        let mean_rate = planned as f64 / duration.as_secs_f64();
        Ok(Self {
            offsets,
            duration,
            info: ScheduleInfo {
                description: shape.describe(),
                planned_requests: planned,
                planned_duration_s: duration.as_secs_f64(),
                mean_rate,
                truncated,
            },
        })
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// Reads the values of a `timestamp,value` CSV (a header line is skipped), rows
/// `start..start + rows`.
pub fn read_trace(path: &Path, start: usize, rows: usize) -> Result<Vec<f64>, ScheduleError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScheduleError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| ScheduleError::Trace {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let (_, value) = line
            .split_once(',')
            .ok_or_else(|| err("expected timestamp,value".into()))?;
        match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => values.push(v),
            Ok(v) => return Err(err(format!("invalid value {v}"))),
            Err(_) if i == 0 => {} // the header
            Err(_) => return Err(err(format!("{:?} is not a number", value.trim()))),
        }
    }
    let window: Vec<f64> = values.into_iter().skip(start).take(rows).collect();
    if window.is_empty() {
        return Err(ScheduleError::Invalid(format!(
            "trace {} has no rows from row {start}",
            path.display()
        )));
    }
    Ok(window)
}

/// Scales trace values to rates so that the largest becomes `peak` requests per second.
pub fn scale_trace(values: &[f64], peak: f64) -> Result<Vec<f64>, ScheduleError> {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    if max <= 0.0 || !peak.is_finite() || peak <= 0.0 {
        return Err(ScheduleError::Invalid(
            "a trace needs a positive value and a positive peak rate".into(),
        ));
    }
    Ok(values.iter().map(|v| v / max * peak).collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_constant_rate_spaces_arrivals_evenly() {
        let s = Schedule::build(
            &Shape::Constant {
                rate: 10.0,
                duration: secs(2),
            },
            1000,
        )
        .unwrap();
        assert_eq!(s.len(), 20);
        assert_eq!(s.offsets[0], Duration::ZERO);
        assert_eq!(s.offsets[1], Duration::from_millis(100));
        assert!(s.offsets.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.offsets.last().unwrap() < &secs(2));
        assert!((s.info.mean_rate - 10.0).abs() < 1e-9);
        assert!(!s.info.truncated);
    }

    #[test]
    fn a_ramp_sends_the_area_under_its_rate() {
        let s = Schedule::build(
            &Shape::Ramp {
                from: 0.0,
                to: 100.0,
                duration: secs(10),
            },
            10_000,
        )
        .unwrap();
        assert_eq!(s.len(), 500);
        // Arrivals get denser: the first second holds 5, the last one 95.
        let first = s.offsets.iter().filter(|o| **o < secs(1)).count();
        let last = s.offsets.iter().filter(|o| **o >= secs(9)).count();
        assert_eq!(first, 5);
        assert_eq!(last, 95);
        assert!(s.offsets.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_falling_ramp_is_ordered_too() {
        let s = Schedule::build(
            &Shape::Ramp {
                from: 100.0,
                to: 10.0,
                duration: secs(4),
            },
            10_000,
        )
        .unwrap();
        assert_eq!(s.len(), 220);
        assert!(s.offsets.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.offsets.last().unwrap() < &secs(4));
    }

    #[test]
    fn steps_carry_fractions_across_their_boundaries() {
        let s = Schedule::build(
            &Shape::Steps {
                rates: vec![1.5, 1.5, 0.0, 3.0],
                step: secs(1),
                label: "t".into(),
            },
            100,
        )
        .unwrap();
        assert_eq!(s.len(), 6);
        assert!(s.offsets.iter().all(|o| *o < secs(2) || *o >= secs(3)));
    }

    #[test]
    fn bursts_are_due_at_the_same_instant() {
        let s = Schedule::build(
            &Shape::Bursts {
                size: 3,
                every: secs(2),
                duration: secs(5),
            },
            100,
        )
        .unwrap();
        assert_eq!(
            s.offsets,
            vec![
                secs(0),
                secs(0),
                secs(0),
                secs(2),
                secs(2),
                secs(2),
                secs(4),
                secs(4),
                secs(4)
            ]
        );
    }

    #[test]
    fn the_request_cap_truncates_the_plan() {
        let s = Schedule::build(
            &Shape::Constant {
                rate: 1000.0,
                duration: secs(10),
            },
            50,
        )
        .unwrap();
        assert_eq!(s.len(), 50);
        assert!(s.info.truncated);
    }

    #[test]
    fn schedules_longer_than_the_cap_or_without_rate_are_refused() {
        assert!(
            Schedule::build(
                &Shape::Constant {
                    rate: 1.0,
                    duration: secs(3600)
                },
                10
            )
            .is_err()
        );
        assert!(
            Schedule::build(
                &Shape::Constant {
                    rate: 0.0,
                    duration: secs(1)
                },
                10
            )
            .is_err()
        );
        assert!(
            Schedule::build(
                &Shape::Constant {
                    rate: f64::NAN,
                    duration: secs(1)
                },
                10
            )
            .is_err()
        );
    }

    #[test]
    fn a_trace_is_read_windowed_and_scaled_to_its_peak() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "timestamp,value\n2015-01-01 00:00:00,10\n2015-01-01 00:05:00,40\n2015-01-01 00:10:00,20"
        )
        .unwrap();
        let all = read_trace(f.path(), 0, 100).unwrap();
        assert_eq!(all, vec![10.0, 40.0, 20.0]);
        let window = read_trace(f.path(), 1, 1).unwrap();
        assert_eq!(window, vec![40.0]);
        assert_eq!(scale_trace(&all, 200.0).unwrap(), vec![50.0, 200.0, 100.0]);
        assert!(read_trace(f.path(), 5, 1).is_err());
    }

    #[test]
    fn a_trace_with_a_bad_value_names_its_line() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "timestamp,value\n2015-01-01 00:00:00,x").unwrap();
        let err = read_trace(f.path(), 0, 10).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
