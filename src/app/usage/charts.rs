//! The 用量 tab's charts, drawn on the server with plotters' SVG backend, so the browser's
//! WASM carries no charting code: the page receives finished `<svg>` text and inserts it.
//!
//! Three shapes cover the four charts: stacked bars per day (spend by model; requests by
//! outcome), lines per day (tokens in and out) and grouped horizontal bars per category
//! (first-token p50/p95 by model). Each draws its legend along the top and its category
//! labels itself (plotters' own legend sits inside the plot and would hide bars).
//!
//! The SVG is inserted with `inner_html` under a strict CSP: plotters writes presentation
//! attributes only (`fill`, `font-size`, …), never `style=` or scripts, and escapes text;
//! [`sanitize`] checks that once more. The text's font is the page's (CSS), and its
//! layout is estimated here (plotters without a font backend guesses 0.7 em per byte).

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The drawing's size in SVG units; CSS scales it to the box (`width: 100%`). The
/// per-day charts have a fixed height; the per-category one grows with its categories.
const WIDTH: u32 = 380;
const HEIGHT: u32 = 250;
/// Per bar of the per-category chart, and the room around them.
const HBAR: u32 = 17;
const HBAR_GAP: u32 = 16;
/// Font size as plotters takes it (the SVG gets `size / 1.24`: about 13.7 px).
const FONT: f64 = 17.0;
const FONT_PX: f64 = FONT / 1.24;
const FAMILY: &str = "sans-serif";

const INK: RGBColor = RGBColor(0x4b, 0x55, 0x63);
const AXIS: RGBColor = RGBColor(0x9c, 0xa3, 0xaf);
const GRID: RGBColor = RGBColor(0xe5, 0xe7, 0xeb);

/// Colours for models, in order of spend; the rest share [`OTHER`].
pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(0x25, 0x63, 0xeb),
    RGBColor(0xf5, 0x9e, 0x0b),
    RGBColor(0x10, 0xb9, 0x81),
    RGBColor(0x8b, 0x5c, 0xf6),
    RGBColor(0xec, 0x48, 0x99),
    RGBColor(0x14, 0xb8, 0xa6),
];
pub(crate) const OTHER: RGBColor = RGBColor(0x9c, 0xa3, 0xaf);
pub(crate) const BLUE: RGBColor = PALETTE[0];
pub(crate) const AMBER: RGBColor = PALETTE[1];
pub(crate) const RED: RGBColor = RGBColor(0xdc, 0x26, 0x26);
pub(crate) const GREY: RGBColor = RGBColor(0xb6, 0xbc, 0xc6);

/// One named series of values (per day, or per category).
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub name: String,
    pub color: RGBColor,
    pub values: Vec<f64>,
}

/// What the values count, for the axis labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Yuan,
    Count,
    Tokens,
    Millis,
}

impl Unit {
    /// An axis label: short, and with as many decimals as the axis step needs.
    fn label(self, value: f64, max: f64) -> String {
        match self {
            Unit::Yuan if value == 0.0 => "¥0".into(),
            _ if value == 0.0 => "0".into(),
            Unit::Yuan => {
                // Decimals for about two significant digits of the axis top.
                let decimals = if max >= 10.0 {
                    0
                } else {
                    (1.0 - max.log10().floor()).clamp(1.0, 6.0) as usize
                };
                format!("¥{value:.decimals$}")
            }
            Unit::Count => format!("{value:.0}"),
            Unit::Tokens => {
                if max >= 100_000_000.0 {
                    format!("{}亿", trim(value / 100_000_000.0))
                } else if max >= 10_000.0 {
                    format!("{}万", trim(value / 10_000.0))
                } else {
                    format!("{value:.0}")
                }
            }
            Unit::Millis => {
                if max >= 2_000.0 {
                    format!("{}s", trim(value / 1000.0))
                } else {
                    format!("{value:.0}ms")
                }
            }
        }
    }
}

/// One decimal, without a trailing `.0`.
fn trim(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").unwrap_or(&text).to_owned()
}

/// The estimated width in px of `text` at [`FONT_PX`]: CJK and other wide characters one
/// em, the rest about 0.62 em.
fn text_width(text: &str) -> f64 {
    text.chars()
        .map(|c| if c.is_ascii() { 0.62 } else { 1.0 })
        .sum::<f64>()
        * FONT_PX
}

fn font(color: RGBColor) -> TextStyle<'static> {
    (FAMILY, FONT).into_font().color(&color)
}

/// Stacked bars, one per day: each series a layer, in order from the bottom.
pub(crate) fn stacked_bars(x_labels: &[String], series: &[Series], unit: Unit) -> String {
    render(series, HEIGHT, |root, area| {
        let n = x_labels.len().max(1);
        let totals: Vec<f64> = (0..n)
            .map(|i| series.iter().map(|s| value(s, i)).sum())
            .collect();
        let max = axis_max(totals.iter().copied());
        let mut chart = day_chart(area, n, unit, max)?;
        let mut bottoms = vec![0.0; n];
        for s in series {
            let bars = (0..n).filter(|&i| value(s, i) > 0.0).map(|i| {
                let (lo, hi) = (bottoms[i], bottoms[i] + value(s, i));
                bottoms[i] = hi;
                Rectangle::new(
                    [(i as f64 + 0.18, lo), (i as f64 + 0.82, hi)],
                    s.color.filled(),
                )
            });
            chart.draw_series(bars.collect::<Vec<_>>())?;
        }
        day_labels(root, &chart, x_labels)
    })
}

/// Lines with a dot per day, one per series.
pub(crate) fn lines(x_labels: &[String], series: &[Series], unit: Unit) -> String {
    render(series, HEIGHT, |root, area| {
        let n = x_labels.len().max(1);
        let max = axis_max(series.iter().flat_map(|s| s.values.iter().copied()));
        let mut chart = day_chart(area, n, unit, max)?;
        for s in series {
            let points = (0..n).map(|i| (i as f64 + 0.5, value(s, i)));
            chart.draw_series(LineSeries::new(points, s.color.stroke_width(2)).point_size(3))?;
        }
        day_labels(root, &chart, x_labels)
    })
}

/// Horizontal bars, one group per category (top to bottom), one bar per series, each
/// with its value written after it.
pub(crate) fn grouped_hbars(categories: &[String], series: &[Series], unit: Unit) -> String {
    let m = categories.len().max(1);
    let per_category = HBAR * series.len().max(1) as u32 + HBAR_GAP;
    let height = (70 + per_category * m as u32).max(150);
    render(series, height, |root, area| {
        // Room on the right for the value written after the longest bar.
        let max = axis_max(series.iter().flat_map(|s| s.values.iter().copied())) * 1.35;
        let names: Vec<String> = categories.iter().map(|c| shorten(c, 16)).collect();
        let label_width = names.iter().map(|n| text_width(n)).fold(40.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .margin_top(6)
            .margin_right(12)
            .x_label_area_size(26)
            .y_label_area_size((label_width + 12.0).min(f64::from(WIDTH) * 0.42) as u32)
            .build_cartesian_2d(0.0..max, 0.0..m as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(5)
            .x_label_formatter(&|v| unit.label(*v, max))
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .label_style(font(INK))
            .draw()?;
        let k = series.len().max(1) as f64;
        // Each category is 1 unit tall, category 0 at the top; its bars fill the middle,
        // `band` each, series `j` below series `j - 1`.
        let band = (1.0 - f64::from(HBAR_GAP) / f64::from(per_category)) / k;
        let top = |c: usize, j: usize| (m - c) as f64 - (1.0 - band * k) / 2.0 - band * j as f64;
        for (j, s) in series.iter().enumerate() {
            let bars = (0..m).map(|c| {
                let top = top(c, j);
                Rectangle::new(
                    [(0.0, top), (value(s, c), top - band * 0.9)],
                    s.color.filled(),
                )
            });
            chart.draw_series(bars.collect::<Vec<_>>())?;
            for c in 0..m {
                let v = value(s, c);
                let top = top(c, j);
                let (x, y) = chart.backend_coord(&(v, top - band * 0.45));
                let text = format!("{} {}", s.name, unit.label(v, max));
                let style = font(INK).pos(Pos::new(HPos::Left, VPos::Center));
                root.draw(&Text::new(text, (x + 4, y), style))?;
            }
        }
        let style = font(INK).pos(Pos::new(HPos::Right, VPos::Center));
        for (c, name) in names.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(0.0, (m - c) as f64 - 0.5));
            root.draw(&Text::new(name.clone(), (x - 6, y), style.clone()))?;
        }
        Ok(())
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;

/// Draws the legend of `series` along the top and the chart below it (`draw` gets the
/// whole drawing, for text at `backend_coord`s, and the chart's area); returns the
/// sanitized SVG, or an empty string (logged) should plotters fail.
fn render(
    series: &[Series],
    height: u32,
    draw: impl FnOnce(&Area<'_>, &Area<'_>) -> DrawResult,
) -> String {
    let mut svg = String::new();
    let result = (|| -> DrawResult {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let legend_height = legend(&root, series)?;
        let (_, chart_area) = root.split_vertically(legend_height);
        draw(&root, &chart_area)?;
        root.present()?;
        Ok(())
    })();
    match result {
        Ok(()) => sanitize(&svg),
        Err(err) => {
            tracing::error!("drawing a usage chart failed: {err}");
            String::new()
        }
    }
}

/// Swatches and names in rows along the top; returns the height they took.
fn legend(root: &Area<'_>, series: &[Series]) -> Result<u32, Box<dyn std::error::Error>> {
    const ROW: i32 = 22;
    let (mut x, mut y) = (8_i32, 4_i32);
    let style = font(INK).pos(Pos::new(HPos::Left, VPos::Center));
    for s in series {
        let width = 18 + text_width(&s.name).ceil() as i32;
        if x > 8 && x + width > WIDTH as i32 - 8 {
            (x, y) = (8, y + ROW);
        }
        root.draw(&Rectangle::new(
            [(x, y + 5), (x + 12, y + 17)],
            s.color.filled(),
        ))?;
        root.draw(&Text::new(s.name.clone(), (x + 17, y + 11), style.clone()))?;
        x += width + 14;
    }
    Ok((y + ROW + 2) as u32)
}

/// The y grid and its labels; the x axis line without labels (see [`day_labels`]).
/// The axes of a per-day chart: `days` columns, 0..`max` in `unit`, with its grid.
fn day_chart<'a, 'b>(
    area: &'a Area<'b>,
    days: usize,
    unit: Unit,
    max: f64,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error + 'static>> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(6)
        .margin_right(12)
        .x_label_area_size(26)
        .y_label_area_size(y_label_width(unit, max))
        .build_cartesian_2d(0.0..days as f64, 0.0..max)?;
    mesh(&mut chart, unit, max)?;
    Ok(chart)
}

fn mesh(chart: &mut Chart<'_, '_>, unit: Unit, max: f64) -> DrawResult {
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(5)
        .y_label_formatter(&|v| unit.label(*v, max))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .label_style(font(INK))
        .draw()?;
    Ok(())
}

/// Day labels under the bars: about five, evenly spaced, the last day always, so they
/// never crowd each other on a phone.
fn day_labels(root: &Area<'_>, chart: &Chart<'_, '_>, labels: &[String]) -> DrawResult {
    let n = labels.len();
    let step = n.div_ceil(5).max(1);
    let style = font(INK).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, label) in labels.iter().enumerate() {
        let last = i + 1 == n;
        if !(last || (i % step == 0 && n - 1 - i >= step)) {
            continue;
        }
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(label.clone(), (x, y + 6), style.clone()))?;
    }
    Ok(())
}

fn value(series: &Series, i: usize) -> f64 {
    series
        .values
        .get(i)
        .copied()
        .filter(|v| v.is_finite())
        .unwrap_or(0.0)
}

/// The top of the value axis: a little above the largest value; 1 when all are zero.
fn axis_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.1
    } else {
        1.0
    }
}

/// Room for the widest value label.
fn y_label_width(unit: Unit, max: f64) -> u32 {
    let widest = [0.0, max / 2.0, max]
        .iter()
        .map(|v| text_width(&unit.label(*v, max)))
        .fold(0.0, f64::max);
    (widest + 12.0).ceil() as u32
}

/// At most `chars` characters, with an ellipsis when cut.
fn shorten(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(chars - 1).collect();
    out.push('…');
    out
}

/// The SVG as the page may insert it: no `style` attributes (the CSP forbids inline
/// styles), no scripts or event handlers (plotters writes none; this makes sure).
pub(crate) fn sanitize(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(at) = rest.find(" style=\"") {
        out.push_str(&rest[..at]);
        let value = &rest[at + 8..];
        rest = value.find('"').map_or("", |end| &value[end + 1..]);
    }
    out.push_str(rest);
    let lower = out.to_ascii_lowercase();
    if lower.contains("<script") || has_handler(&lower) {
        tracing::error!("a usage chart held markup it must not; dropped");
        return String::new();
    }
    out
}

/// An `on…=` attribute inside a tag.
fn has_handler(lower: &str) -> bool {
    let mut in_tag = false;
    let bytes = lower.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => in_tag = true,
            b'>' => in_tag = false,
            b' ' if in_tag && lower[i + 1..].starts_with("on") => {
                let name: String = lower[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                if lower[i + 1 + name.len()..].starts_with('=') {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: usize) -> Vec<String> {
        (1..=n).map(|d| format!("11-{d:02}")).collect()
    }

    fn series(name: &str, values: Vec<f64>) -> Series {
        Series {
            name: name.into(),
            color: BLUE,
            values,
        }
    }

    #[test]
    fn charts_are_svg_without_inline_styles() {
        let svgs = [
            stacked_bars(
                &days(7),
                &[series("deepseek-chat", vec![0.01; 7])],
                Unit::Yuan,
            ),
            lines(&days(30), &[series("输入", vec![1200.0; 30])], Unit::Tokens),
            grouped_hbars(
                &["a".into(), "b".into()],
                &[
                    series("p50", vec![300.0, 800.0]),
                    series("p95", vec![900.0, 2500.0]),
                ],
                Unit::Millis,
            ),
            // Nothing at all.
            stacked_bars(&days(7), &[], Unit::Count),
        ];
        for svg in svgs {
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.contains("viewBox=\"0 0 380 "));
            assert!(!svg.contains("style="), "{svg}");
            assert!(!svg.contains("NaN"), "{svg}");
        }
    }

    #[test]
    fn text_is_escaped() {
        let svg = stacked_bars(
            &days(7),
            &[series("<script>alert(1)</script>", vec![1.0; 7])],
            Unit::Count,
        );
        assert!(!svg.is_empty());
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn sanitize_drops_styles_and_refuses_scripts() {
        assert_eq!(
            sanitize(r#"<svg><rect style="fill:red" x="1"/></svg>"#),
            r#"<svg><rect x="1"/></svg>"#
        );
        assert_eq!(sanitize("<svg><script>x</script></svg>"), "");
        assert_eq!(sanitize(r#"<svg onload="x()"></svg>"#), "");
        assert_eq!(
            sanitize("<svg><text>one two</text></svg>"),
            "<svg><text>one two</text></svg>"
        );
    }

    #[test]
    fn axis_labels_fit_their_range() {
        assert_eq!(Unit::Yuan.label(0.0123, 0.02), "¥0.012");
        assert_eq!(Unit::Yuan.label(12.0, 30.0), "¥12");
        assert_eq!(Unit::Tokens.label(25_000.0, 40_000.0), "2.5万");
        assert_eq!(Unit::Millis.label(1500.0, 3000.0), "1.5s");
        assert_eq!(Unit::Millis.label(400.0, 900.0), "400ms");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
