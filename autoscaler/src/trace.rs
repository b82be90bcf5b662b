//! Event-volume traces: `timestamp,value` CSV, where each row counts the events of the
//! interval that ends at its timestamp, spread evenly over that interval.
//!
//! Timestamps carry no zone and are read as UTC; the forecast's hour-of-day and day-of-week
//! terms are therefore in the trace's own clock.

use std::path::Path;

use chrono::{DateTime, NaiveDateTime};

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("line {line}: timestamp {at} does not come after the previous row's")]
    NotIncreasing { line: usize, at: String },
    #[error("the trace has {rows} data row(s); at least two are needed to know the interval")]
    TooShort { rows: usize },
}

/// A parsed trace: row `i` covers `(ends[i-1], ends[i]]`; the first row covers an interval as
/// long as the second's, since nothing before it says where it began.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    ends: Vec<i64>,
    values: Vec<f64>,
    start: i64,
}

impl Trace {
    /// Read and parse a trace file.
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parse `timestamp,value` rows. A first line whose value is not a number is a header;
    /// blank lines and surrounding spaces are ignored, `\r\n` endings accepted.
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        let mut ends: Vec<i64> = Vec::new();
        let mut values = Vec::new();
        let mut seen_first = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let row = raw.trim();
            if row.is_empty() {
                continue;
            }
            let first = !seen_first;
            seen_first = true;
            let Some((ts, value)) = row.split_once(',') else {
                return Err(TraceError::Line {
                    line,
                    reason: "expected two columns, `timestamp,value`".into(),
                });
            };
            let (ts, value) = (ts.trim(), value.trim());
            if value.contains(',') {
                return Err(TraceError::Line {
                    line,
                    reason: "expected two columns, `timestamp,value`".into(),
                });
            }
            let parsed: Result<f64, _> = value.parse();
            if first && parsed.is_err() {
                continue;
            }
            let value = parsed.map_err(|_| TraceError::Line {
                line,
                reason: format!("value {value:?} is not a number"),
            })?;
            if !value.is_finite() || value < 0.0 {
                return Err(TraceError::Line {
                    line,
                    reason: format!("value {value} is not a finite count of zero or more"),
                });
            }
            let at = parse_timestamp(ts).ok_or_else(|| TraceError::Line {
                line,
                reason: format!(
                    "timestamp {ts:?} is neither `YYYY-MM-DD HH:MM:SS`, RFC 3339 nor Unix seconds"
                ),
            })?;
            if ends.last().is_some_and(|&prev| at <= prev) {
                return Err(TraceError::NotIncreasing {
                    line,
                    at: ts.to_owned(),
                });
            }
            ends.push(at);
            values.push(value);
        }
        if ends.len() < 2 {
            return Err(TraceError::TooShort { rows: ends.len() });
        }
        let start = ends[0] - (ends[1] - ends[0]);
        Ok(Self {
            ends,
            values,
            start,
        })
    }

    /// Unix seconds at which the first row's interval begins.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Unix seconds at which the last row's interval ends.
    pub fn end(&self) -> i64 {
        self.ends.last().copied().unwrap_or(self.start)
    }

    /// Seconds the trace spans.
    pub fn span_secs(&self) -> i64 {
        self.end() - self.start
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: a parsed trace has at least two rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// All events of the trace.
    pub fn total(&self) -> f64 {
        self.values.iter().sum()
    }

    /// Mean events per second over the whole span.
    pub fn mean_rate(&self) -> f64 {
        self.total() / self.span_secs() as f64
    }

    /// A cursor yielding the events of consecutive windows of `step` seconds from the start.
    pub fn windows(&self, step: i64) -> Windows<'_> {
        Windows {
            trace: self,
            step,
            at: self.start,
            row: 0,
        }
    }
}

/// Consecutive windows over a trace; see [`Trace::windows`].
#[derive(Debug)]
pub struct Windows<'a> {
    trace: &'a Trace,
    step: i64,
    at: i64,
    row: usize,
}

impl Iterator for Windows<'_> {
    /// Events in `(at, at + step]`, the window ending at the first field.
    type Item = (i64, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.trace.end() || self.step <= 0 {
            return None;
        }
        let (from, to) = (self.at, self.at + self.step);
        let mut events = 0.0;
        let mut row = self.row;
        while row < self.trace.ends.len() {
            let row_start = if row == 0 {
                self.trace.start
            } else {
                self.trace.ends[row - 1]
            };
            let row_end = self.trace.ends[row];
            let overlap = (to.min(row_end) - from.max(row_start)).max(0);
            events += self.trace.values[row] * overlap as f64 / (row_end - row_start) as f64;
            if row_end > to {
                break;
            }
            row += 1;
        }
        self.row = row;
        self.at = to;
        Some((to, events))
    }
}

fn parse_timestamp(ts: &str) -> Option<i64> {
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(ts, format) {
            return Some(at.and_utc().timestamp());
        }
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(ts) {
        return Some(at.timestamp());
    }
    ts.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_and_rows_parse_into_intervals_ending_at_each_timestamp() {
        let trace =
            Trace::parse("timestamp,value\n2015-02-26 21:42:53,57\n2015-02-26 21:47:53,43\n")
                .unwrap();
        assert_eq!(trace.len(), 2);
        assert_eq!(trace.end() - trace.start(), 600);
        assert_eq!(trace.total(), 100.0);
    }

    #[test]
    fn a_file_without_header_parses_too() {
        let trace = Trace::parse("0,1\n60,2\n120,3\n").unwrap();
        assert_eq!(trace.start(), -60);
        assert_eq!(trace.len(), 3);
    }

    #[test]
    fn blank_lines_spaces_and_crlf_are_ignored() {
        let trace = Trace::parse("timestamp,value\r\n\r\n 0 , 1 \r\n\n60,2.5\r\n").unwrap();
        assert_eq!(trace.total(), 3.5);
    }

    #[test]
    fn rfc3339_timestamps_are_read_with_their_offset() {
        let trace = Trace::parse("2015-01-01T00:00:00Z,1\n2015-01-01T02:00:00+01:00,1\n").unwrap();
        assert_eq!(trace.span_secs(), 7200);
    }

    #[test]
    fn a_trace_with_fewer_than_two_rows_is_refused() {
        assert!(matches!(
            Trace::parse("timestamp,value\n"),
            Err(TraceError::TooShort { rows: 0 })
        ));
        assert!(matches!(
            Trace::parse("0,1\n"),
            Err(TraceError::TooShort { rows: 1 })
        ));
        assert!(matches!(
            Trace::parse(""),
            Err(TraceError::TooShort { rows: 0 })
        ));
    }

    #[test]
    fn timestamps_going_backwards_or_repeating_are_refused_with_their_line() {
        let err = Trace::parse("timestamp,value\n60,1\n0,1\n").unwrap_err();
        assert!(
            matches!(err, TraceError::NotIncreasing { line: 3, .. }),
            "{err}"
        );
        let err = Trace::parse("0,1\n60,1\n60,1\n").unwrap_err();
        assert!(
            matches!(err, TraceError::NotIncreasing { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn negative_or_non_finite_or_non_numeric_values_are_refused() {
        for bad in [
            "0,1\n60,-1\n",
            "0,1\n60,NaN\n",
            "0,1\n60,inf\n",
            "0,1\n60,lots\n",
        ] {
            let err = Trace::parse(bad).unwrap_err();
            assert!(
                matches!(err, TraceError::Line { line: 2, .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn a_row_with_a_missing_or_extra_column_is_refused() {
        assert!(matches!(
            Trace::parse("0,1\n60\n"),
            Err(TraceError::Line { line: 2, .. })
        ));
        assert!(matches!(
            Trace::parse("0,1\n60,1,2\n"),
            Err(TraceError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn an_unreadable_timestamp_is_refused() {
        let err = Trace::parse("0,1\nyesterday,1\n").unwrap_err();
        assert!(matches!(err, TraceError::Line { line: 2, .. }), "{err}");
    }

    #[test]
    fn windows_spread_each_value_evenly_over_its_interval() {
        let trace = Trace::parse("300,300\n600,600\n").unwrap();
        let windows: Vec<_> = trace.windows(100).collect();
        assert_eq!(windows.len(), 6);
        assert_eq!(windows[0], (100, 100.0));
        assert_eq!(windows[2], (300, 100.0));
        assert_eq!(windows[3], (400, 200.0));
        let total: f64 = windows.iter().map(|w| w.1).sum();
        assert!((total - trace.total()).abs() < 1e-9);
    }

    #[test]
    fn windows_straddling_rows_take_a_share_of_each() {
        let trace = Trace::parse("10,10\n20,20\n30,30\n").unwrap();
        let windows: Vec<_> = trace.windows(15).collect();
        // (0,15]: all of row one and half of row two; (15,30]: the rest.
        assert_eq!(windows, vec![(15, 20.0), (30, 40.0)]);
    }

    #[test]
    fn the_last_window_may_reach_past_the_end_and_counts_only_what_is_there() {
        let trace = Trace::parse("10,10\n20,10\n").unwrap();
        let windows: Vec<_> = trace.windows(15).collect();
        assert_eq!(windows, vec![(15, 15.0), (30, 5.0)]);
    }
}
