//! One day of a metric as an SVG chart (`GET /api/metrics/<metric>/<id>.svg`), so a customer
//! sees CPU, memory, traffic and hits without writing code. Counters (CPU time, bytes, hits)
//! are drawn as rates between consecutive samples, gauges (memory, disk) as they are.

use plotters::prelude::*;

/// How a metric is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    /// Cumulative counter: draw the rate per second between samples.
    pub counter: bool,
    /// What one unit of the drawn value is, for the axis label.
    pub unit: &'static str,
    /// Multiplies the (rate of the) stored value into `unit`.
    pub scale: f64,
}

/// The drawing rule of a metric the API serves.
pub fn style(metric: &str) -> Style {
    match metric {
        // nanoseconds of CPU per second -> percent of one core
        "container.cpu" => Style { counter: true, unit: "% of one CPU", scale: 100.0 / 1e9 },
        "container.mem" | "container.mem.rss" | "container.mem.cache" | "container.quota" => {
            Style { counter: false, unit: "MiB", scale: 1.0 / (1024.0 * 1024.0) }
        }
        "domain.hits" => Style { counter: true, unit: "requests/min", scale: 60.0 },
        // container.io.*, container.net.*, domain.net.*
        _ => Style { counter: true, unit: "KiB/s", scale: 1.0 / 1024.0 },
    }
}

/// The points to draw: `(seconds since the day's start, value in the style's unit)`. A counter
/// that went down (the container restarted) starts a new segment: `None` breaks the line.
pub fn points(style: Style, day_start: i64, samples: &[(i64, i64)]) -> Points {
    if !style.counter {
        return samples.iter().map(|(t, v)| Some(((t - day_start) as f64, *v as f64 * style.scale))).collect();
    }
    let mut out = Vec::new();
    for pair in samples.windows(2) {
        let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
        if t1 <= t0 || v1 < v0 {
            out.push(None);
            continue;
        }
        let rate = (v1 - v0) as f64 / (t1 - t0) as f64;
        out.push(Some(((t1 - day_start) as f64, rate * style.scale)));
    }
    out
}

/// A line's points; `None` breaks it.
type Points = Vec<Option<(f64, f64)>>;

/// One named line of the chart (a domain's chart has one per container serving it).
pub struct Series {
    pub name: String,
    pub samples: Vec<(i64, i64)>,
}

/// The chart as an SVG document: the UTC day's 24 hours across, the metric's unit up.
pub fn render_svg(title: &str, metric: &str, day_start: i64, series: &[Series]) -> Result<String, String> {
    let style = style(metric);
    let lines: Vec<(&str, Points)> =
        series.iter().map(|s| (s.name.as_str(), points(style, day_start, &s.samples))).collect();
    let top = lines.iter().flat_map(|(_, p)| p.iter().flatten().map(|(_, y)| *y)).fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 360)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| format!("drawing the chart: {e}");
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..86_400f64, 0f64..top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(13)
            .x_label_formatter(&|x| format!("{:02}:00", (*x / 3600.0).round() as i64))
            .x_desc("UTC")
            .y_desc(style.unit)
            .draw()
            .map_err(e)?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            // Each run of consecutive points is one line; a break (restart) ends it.
            let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for p in points {
                match p {
                    Some(p) => segments.last_mut().expect("one segment").push(*p),
                    None => segments.push(Vec::new()),
                }
            }
            let mut labelled = false;
            for segment in segments.into_iter().filter(|s| !s.is_empty()) {
                let drawn = chart.draw_series(LineSeries::new(segment, color.stroke_width(2))).map_err(e)?;
                if !labelled && lines.len() > 1 {
                    drawn.label(*name).legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
                    labelled = true;
                }
            }
        }
        if lines.len() > 1 {
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_rates_and_a_reset_breaks_the_line() {
        let cpu = style("container.cpu");
        // 3 s of CPU over 60 s = 5 % of a core; then the container restarted.
        let p = points(cpu, 1000, &[(1000, 0), (1060, 3_000_000_000), (1120, 1_000)]);
        assert_eq!(p.len(), 2);
        let (x, y) = p[0].unwrap();
        assert_eq!(x, 60.0);
        assert!((y - 5.0).abs() < 1e-9, "{y}");
        assert_eq!(p[1], None);
        let mem = points(style("container.mem"), 0, &[(10, 2 << 20)]);
        assert_eq!(mem, vec![Some((10.0, 2.0))]);
    }

    #[test]
    fn an_svg_with_one_path_per_segment() {
        let s = Series { name: "30701".into(), samples: vec![(100, 0), (160, 600), (220, 1200), (280, 5)] };
        let svg = render_svg("container.net.rx of 30701", "container.net.rx", 0, &[s]).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("container.net.rx of 30701"));
        // The data line is the only 2-px polyline (the mesh is 1 px); 2 rates, then the reset.
        let data: Vec<&str> =
            svg.lines().filter(|l| l.contains("<polyline") && l.contains("stroke-width=\"2\"")).collect();
        assert_eq!(data.len(), 1, "{svg}");
        assert_eq!(
            data[0].split("points=\"").nth(1).unwrap().split('"').next().unwrap().split_whitespace().count(),
            2,
            "{}",
            data[0]
        );
    }
}
