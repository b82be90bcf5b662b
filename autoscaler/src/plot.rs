//! The backtest's chart (SVG): arrivals, the forecast with its band and each policy's pool,
//! all in workers, so the series share one axis. Arrivals become workers as
//! rate × job seconds / slots, the pool the load would need at full use.
//!
//! The top panel spans the whole trace in hourly means; the bottom one shows the last days at
//! bucket resolution, where the forecast band and the policies' steps can be seen.

use std::path::Path;

use chrono::DateTime;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Why the chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

/// Everything the chart shows, per history bucket.
#[derive(Debug)]
pub struct Chart<'a> {
    pub title: String,
    /// Unix seconds at which bucket 0 begins.
    pub start: i64,
    pub bucket_secs: i64,
    /// Workers the arrivals of each bucket need.
    pub load: Vec<f64>,
    /// The forecast made a horizon earlier, as workers: (mean, upper).
    pub forecast: Vec<Option<(f64, f64)>>,
    /// Mean workers per bucket, per policy.
    pub pools: Vec<(&'a str, &'a [f64])>,
    /// Days the detailed panel shows, counted back from the end.
    pub detail_days: f64,
}

const LOAD: RGBColor = RGBColor(110, 110, 110);
const FORECAST: RGBColor = RGBColor(31, 119, 180);
const POOLS: [RGBColor; 3] = [
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draws `chart` into an SVG file at `path`.
pub fn render(path: &Path, chart: &Chart<'_>) -> Result<(), PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (top, bottom) = root.split_vertically(400);
    let buckets = chart.load.len();
    let per_hour = usize::try_from((3600 / chart.bucket_secs.max(1)).max(1)).unwrap_or(1);
    draw_panel(
        &top,
        chart,
        0..buckets,
        per_hour,
        &format!("{} — whole trace, hourly means", chart.title),
    )
    .map_err(|e| fail(&e))?;
    let detail = ((chart.detail_days * 86_400.0) / chart.bucket_secs as f64) as usize;
    let from = buckets.saturating_sub(detail.max(1));
    draw_panel(
        &bottom,
        chart,
        from..buckets,
        1,
        &format!(
            "last {} days, per {}-minute bucket",
            chart.detail_days,
            chart.bucket_secs / 60
        ),
    )
    .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// Means of `values[range]` in groups of `group`, as (day since start, value) points.
fn grouped(
    values: &[f64],
    range: std::ops::Range<usize>,
    group: usize,
    bucket_days: f64,
) -> Vec<(f64, f64)> {
    let slice = values.get(range.clone()).unwrap_or(&[]);
    slice
        .chunks(group.max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let x = (range.start + i * group.max(1)) as f64 * bucket_days;
            (x, chunk.iter().sum::<f64>() / chunk.len() as f64)
        })
        .collect()
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &Chart<'_>,
    range: std::ops::Range<usize>,
    group: usize,
    caption: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let bucket_days = chart.bucket_secs as f64 / 86_400.0;
    let load = grouped(&chart.load, range.clone(), group, bucket_days);
    let pools: Vec<(&str, Vec<(f64, f64)>)> = chart
        .pools
        .iter()
        .map(|(name, workers)| (*name, grouped(workers, range.clone(), group, bucket_days)))
        .collect();
    // The band is drawn per run of buckets that have a forecast.
    let mut runs: Vec<Vec<(f64, f64, f64)>> = Vec::new();
    let mut run = Vec::new();
    for (i, f) in chart
        .forecast
        .iter()
        .enumerate()
        .take(range.end)
        .skip(range.start)
    {
        match f {
            Some((mean, upper)) if group == 1 => run.push((i as f64 * bucket_days, *mean, *upper)),
            _ => {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
            }
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }

    let x0 = range.start as f64 * bucket_days;
    let x1 = (range.end.max(range.start + 1)) as f64 * bucket_days;
    let y_max = load
        .iter()
        .map(|p| p.1)
        .chain(pools.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)))
        .chain(runs.iter().flatten().map(|p| p.2))
        .fold(1.0_f64, f64::max)
        * 1.05;

    let start = chart.start;
    // Hours matter once the panel spans only a few days.
    let format = if x1 - x0 <= 3.0 {
        "%b %d %H:%M"
    } else {
        "%b %d"
    };
    let label = move |x: &f64| {
        let at = start + (x * 86_400.0) as i64;
        DateTime::from_timestamp(at, 0)
            .map(|d| d.format(format).to_string())
            .unwrap_or_default()
    };
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, 0.0..y_max)?;
    c.configure_mesh()
        .x_label_formatter(&label)
        .y_desc("workers")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    for (i, run) in runs.iter().enumerate() {
        let mut outline: Vec<(f64, f64)> = run.iter().map(|p| (p.0, p.2)).collect();
        outline.extend(run.iter().rev().map(|p| (p.0, p.1)));
        let band = c.draw_series(std::iter::once(Polygon::new(
            outline,
            FORECAST.mix(0.2).filled(),
        )))?;
        if i == 0 {
            band.label("forecast upper bound").legend(|(x, y)| {
                Rectangle::new([(x, y - 4), (x + 20, y + 4)], FORECAST.mix(0.2).filled())
            });
        }
    }
    c.draw_series(LineSeries::new(load, LOAD.stroke_width(1)))?
        .label("arrivals (workers needed)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LOAD.stroke_width(2)));
    for (i, run) in runs.iter().enumerate() {
        let line = c.draw_series(LineSeries::new(
            run.iter().map(|p| (p.0, p.1)),
            FORECAST.stroke_width(1),
        ))?;
        if i == 0 {
            line.label("forecast, 30 min ahead").legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], FORECAST.stroke_width(2))
            });
        }
    }
    for (i, (name, points)) in pools.into_iter().enumerate() {
        let color = POOLS[i % POOLS.len()];
        c.draw_series(LineSeries::new(points, color.stroke_width(1)))?
            .label(format!("workers, {name}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_points_are_means_placed_at_the_first_bucket_of_each_group() {
        let values = [1.0, 3.0, 5.0, 7.0, 9.0];
        let points = grouped(&values, 1..5, 2, 0.5);
        assert_eq!(points, vec![(0.5, 4.0), (1.5, 8.0)]);
    }

    #[test]
    fn a_chart_is_written_as_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let load: Vec<f64> = (0..600)
            .map(|i| 10.0 + (f64::from(i) / 40.0).sin() * 5.0)
            .collect();
        let workers: Vec<f64> = load.iter().map(|l| l.ceil() + 1.0).collect();
        let forecast = load.iter().map(|l| Some((*l, l * 1.2))).collect();
        let chart = Chart {
            title: "test".into(),
            start: 0,
            bucket_secs: 300,
            load,
            forecast,
            pools: vec![("reactive", &workers)],
            detail_days: 1.0,
        };
        render(&path, &chart).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("workers, reactive"));
    }
}
