//! The SVG plot of a `weir bench` report: throughput over time above, ack
//! latency over time below, one line per run (weir and the transport, each
//! input), the warm-up shaded.
//!
//! Pure: it reads the report's JSON (each run's `timeline` of MB/s a
//! second and `latency_timeline` of ack latency by the second a request
//! was sent) and returns the document.

use std::fmt::Write as _;

use serde_json::Value;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const PLOT_RIGHT: f64 = 730.0;
/// Top and bottom of the throughput panel, then of the latency panel.
const PANELS: [(f64, f64); 2] = [(40.0, 260.0), (320.0, 540.0)];
const HEIGHT: f64 = 580.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// One line of the plot.
struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    /// (seconds since the run began, value).
    points: Vec<(f64, f64)>,
}

/// A y axis: linear from 0, or in decades.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    Linear { top: f64, step: f64 },
    Log { low_decade: i32, high_decade: i32 },
}

impl Scale {
    /// A linear axis from 0 to a round number at or above `max`, with
    /// about five steps of 1, 2 or 5 times a power of ten.
    fn linear(max: f64) -> Scale {
        // Positive and far from overflow (a step times its count).
        let max = if (f64::MIN_POSITIVE..1e300).contains(&max) {
            max
        } else {
            1.0
        };
        let raw = max / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * magnitude);
        Scale::Linear {
            top: (max / step).ceil() * step,
            step,
        }
    }

    /// Whole decades covering `min..=max` (positive values), at least one.
    fn log(min: f64, max: f64) -> Scale {
        let min = if min.is_finite() && min > 0.0 {
            min
        } else {
            1.0
        };
        let max = if max.is_finite() && max >= min {
            max
        } else {
            min
        };
        let low_decade = min.log10().floor() as i32;
        let high_decade = (max.log10().ceil() as i32).max(low_decade + 1);
        Scale::Log {
            low_decade,
            high_decade,
        }
    }

    /// Where `value` falls, 0 at the bottom and 1 at the top (clamped).
    fn fraction(self, value: f64) -> f64 {
        let f = match self {
            Scale::Linear { top, .. } => value / top,
            Scale::Log {
                low_decade,
                high_decade,
            } => {
                let value = value.max(f64::MIN_POSITIVE);
                (value.log10() - f64::from(low_decade)) / f64::from(high_decade - low_decade)
            }
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear { top, step } => {
                let steps = (top / step).round() as usize;
                (0..=steps).map(|i| i as f64 * step).collect()
            }
            Scale::Log {
                low_decade,
                high_decade,
            } => (low_decade..=high_decade).map(|d| 10f64.powi(d)).collect(),
        }
    }
}

/// The report as an SVG document.
pub(super) fn svg(report: &Value) -> String {
    let runs: Vec<&Value> = report["baselines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["target"] == "transport")
        .chain(report["runs"].as_array().into_iter().flatten())
        .collect();
    let mut throughput = Vec::new();
    let mut latency = Vec::new();
    for (run, color) in runs.iter().zip(COLORS.iter().cycle()) {
        let name = format!(
            "{}, {}",
            run["target"].as_str().unwrap_or("?"),
            run["input"].as_str().unwrap_or("?")
        );
        throughput.push(Series {
            label: name.clone(),
            color,
            dashed: false,
            points: points(&run["timeline"], "t_s", "mb_per_s"),
        });
        for (quantile, dashed) in [("p99", false), ("p50", true)] {
            latency.push(Series {
                label: format!("{name} {quantile}"),
                color,
                dashed,
                points: points(&run["latency_timeline"], "t_s", quantile),
            });
        }
    }
    let last_t = throughput
        .iter()
        .chain(&latency)
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let x_scale = Scale::linear(last_t);
    let max_of = |series: &[Series]| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
    };
    let min_latency = latency
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let panels = [
        (
            "acknowledged MB/s",
            Scale::linear(max_of(&throughput)),
            throughput,
        ),
        (
            "ack latency ms (p99 solid, p50 dashed), by second sent",
            Scale::log(min_latency, max_of(&latency)),
            latency,
        ),
    ];

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="14">weir bench: {} streams, {} rows a request</text>"#,
        report["streams"], report["rows_per_request"]
    );
    let x = |t: f64| LEFT + x_scale.fraction(t) * (PLOT_RIGHT - LEFT);
    let warmup = report["warmup_s"].as_f64().unwrap_or(0.0);
    for ((title, scale, series), (top, bottom)) in panels.iter().zip(PANELS) {
        let y = |v: f64| bottom - scale.fraction(v) * (bottom - top);
        if warmup > 0.0 {
            let _ = writeln!(
                out,
                r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{}" fill="#eeeeee"/>"##,
                x(warmup) - LEFT,
                bottom - top
            );
        }
        for tick in scale.ticks() {
            let at = y(tick);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{at:.1}" x2="{PLOT_RIGHT}" y2="{at:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                at + 4.0,
                number(tick)
            );
        }
        for tick in x_scale.ticks() {
            let at = x(tick);
            let _ = writeln!(
                out,
                r#"<text x="{at:.1}" y="{:.1}" text-anchor="middle">{} s</text>"#,
                bottom + 16.0,
                number(tick)
            );
        }
        let _ = writeln!(
            out,
            r#"<rect x="{LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/><text x="{LEFT}" y="{:.1}">{}</text>"#,
            PLOT_RIGHT - LEFT,
            bottom - top,
            top - 6.0,
            escape(title)
        );
        for (i, line) in series.iter().enumerate() {
            let points: Vec<String> = line
                .points
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            if !points.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.5"{} points="{}"/>"#,
                    line.color,
                    if line.dashed {
                        r#" stroke-dasharray="5,3""#
                    } else {
                        ""
                    },
                    points.join(" ")
                );
            }
            let legend_y = top + 14.0 + 16.0 * i as f64;
            let _ = writeln!(
                out,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                PLOT_RIGHT + 12.0,
                legend_y - 4.0,
                PLOT_RIGHT + 36.0,
                legend_y - 4.0,
                line.color,
                if line.dashed {
                    r#" stroke-dasharray="5,3""#
                } else {
                    ""
                },
                PLOT_RIGHT + 42.0,
                legend_y,
                escape(&line.label)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The (x, y) pairs of an array of objects, skipping entries without both.
fn points(entries: &Value, x: &str, y: &str) -> Vec<(f64, f64)> {
    entries
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e[x].as_f64()?, e[y].as_f64()?)))
        .collect()
}

/// A tick label: at most three decimals, none when it is whole.
fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_linear_axis_rounds_up_to_steps_of_one_two_or_five() {
        assert_eq!(
            Scale::linear(220.0),
            Scale::Linear {
                top: 250.0,
                step: 50.0
            }
        );
        assert_eq!(
            Scale::linear(12.0),
            Scale::Linear {
                top: 15.0,
                step: 5.0
            }
        );
        let labels: Vec<String> = Scale::linear(0.0).ticks().into_iter().map(number).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(Scale::linear(220.0).fraction(125.0), 0.5);
    }

    #[test]
    fn a_log_axis_covers_whole_decades() {
        let scale = Scale::log(0.4, 180.0);
        assert_eq!(
            scale,
            Scale::Log {
                low_decade: -1,
                high_decade: 3
            }
        );
        assert_eq!(scale.ticks(), [0.1, 1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(scale.fraction(10.0), 0.5);
        // One value still spans a decade.
        assert_eq!(
            Scale::log(5.0, 5.0),
            Scale::Log {
                low_decade: 0,
                high_decade: 1
            }
        );
    }

    #[test]
    fn the_plot_has_a_throughput_and_two_latency_lines_per_run() {
        let run = |target: &str, input: &str, mb: f64| {
            json!({
                "target": target,
                "input": input,
                "timeline": [{"t_s": 1.0, "mb_per_s": mb}, {"t_s": 2.0, "mb_per_s": mb / 2.0}],
                "latency_timeline": [{"t_s": 1.0, "p50": 2.0, "p99": 40.0}],
            })
        };
        let report = json!({
            "streams": 4,
            "rows_per_request": 10,
            "warmup_s": 0.5,
            "runs": [run("weir", "protobuf", 200.0)],
            "baselines": [run("transport", "protobuf", 900.0), {"target": "disk", "mb_per_s": 400.0}],
        });
        let svg = svg(&report);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2 * 3, "{svg}");
        for label in [
            "transport, protobuf",
            "weir, protobuf",
            "weir, protobuf p99",
            "transport, protobuf p50",
        ] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}: {svg}");
        }
        // 900 MB/s is the top of the throughput panel (1000 on its axis).
        assert!(svg.contains(">1000</text>"), "{svg}");
    }
}
