//! The report's plots, drawn with plotters into SVG strings embedded in the page (no files, no
//! scripts, no fonts to ship: the browser renders the text).

use chrono::TimeZone;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const W: u32 = 640;
const H: u32 = 340;
/// Tableau's ten: series get these; campaigns keep theirs across renders (see [`campaign_colours`]).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const BLUE: RGBColor = RGBColor(31, 119, 180);
const NOTE: RGBColor = RGBColor(110, 116, 128);
/// Room right of the plot so the last x label is not cut at the edge.
const RIGHT_MARGIN: u32 = 30;
const DAY: f64 = 86_400.0;

type Res = Result<String, String>;

fn finish(buf: String) -> String {
    // plotters writes a fixed-size SVG; a viewBox lets it scale with the page.
    buf.replacen(
        &format!("<svg width=\"{W}\" height=\"{H}\""),
        &format!(
            "<svg width=\"100%\" viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"xMidYMid meet\""
        ),
        1,
    )
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A stable 64-bit FNV-1a hash: the same name gets the same colour in every render and build.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One colour per campaign name, decided by the name alone (a hash into the palette); when two
/// names of the same chart hash alike, the later one in name order takes the next free colour.
pub fn campaign_colours<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(String, RGBColor)> {
    let mut sorted: Vec<&str> = names.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut taken = [false; PALETTE.len()];
    let mut out = Vec::with_capacity(sorted.len());
    for name in sorted {
        let mut i = (fnv1a(name) % PALETTE.len() as u64) as usize;
        if taken.iter().all(|&t| t) {
            taken = [false; PALETTE.len()];
        }
        while taken[i] {
            i = (i + 1) % PALETTE.len();
        }
        taken[i] = true;
        out.push((name.to_string(), PALETTE[i]));
    }
    out
}

/// The x axis of a line chart.
pub enum XAxis<'a> {
    /// Unix seconds, shown as calendar days in this zone: one label per distinct day at most,
    /// and at least a week wide so a single point does not stretch over a few seconds.
    Days(chrono_tz::Tz),
    /// A fixed range (probabilities, shares) labelled by the function.
    Fixed((f64, f64), &'a dyn Fn(&f64) -> String),
}

/// Unix seconds to local days since the epoch (local midnight on an integer).
fn local_days(tz: chrono_tz::Tz, t: f64) -> f64 {
    use chrono::Offset;
    let offset = chrono::DateTime::from_timestamp(t as i64, 0).map_or(0, |d| {
        tz.offset_from_utc_datetime(&d.naive_utc())
            .fix()
            .local_minus_utc()
    });
    (t + f64::from(offset)) / DAY
}

fn note_text<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x: (f64, f64),
    y: (f64, f64),
    note: &str,
) -> Result<(), String> {
    let style = ("sans-serif", 15)
        .into_font()
        .color(&NOTE)
        .pos(Pos::new(HPos::Center, VPos::Center));
    chart
        .draw_series(std::iter::once(Text::new(
            note.to_string(),
            ((x.0 + x.1) / 2.0, (y.0 + y.1) / 2.0),
            style,
        )))
        .map_err(err)?;
    Ok(())
}

/// Lines over x, each a named series. `diagonal` draws y = x with that legend label (perfect
/// calibration, random targeting). With no points, `empty_note` is written in the plot.
pub fn lines(
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y: (f64, f64),
    x_axis: XAxis<'_>,
    diagonal: Option<&str>,
    empty_note: &str,
) -> Res {
    let day_axis = matches!(x_axis, XAxis::Days(_));
    // Date axes are drawn in local days; everything else as given.
    let series: Vec<(String, Vec<(f64, f64)>)> = match &x_axis {
        XAxis::Days(tz) => series
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    p.iter().map(|&(x, v)| (local_days(*tz, x), v)).collect(),
                )
            })
            .collect(),
        XAxis::Fixed(..) => series.to_vec(),
    };
    let has_points = series.iter().any(|(_, p)| !p.is_empty());
    let (x0, x1) = match &x_axis {
        XAxis::Fixed(r, _) => *r,
        XAxis::Days(tz) => {
            let (mut a, mut b) = series
                .iter()
                .flat_map(|(_, p)| p.iter())
                .fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
                    (a.min(*x), b.max(*x))
                });
            if a > b {
                let today = local_days(*tz, chrono::Utc::now().timestamp() as f64).floor();
                (a, b) = (today, today);
            }
            // At least a week, centred on the points, on whole days.
            let (mut a, mut b) = (a.floor(), b.ceil());
            let short = 7.0 - (b - a);
            if short > 0.0 {
                a -= (short / 2.0).ceil();
                b += (short / 2.0).floor();
            }
            (a, b)
        }
    };
    let span_days = (x1 - x0).round() as usize;
    let day_fmt = |x: &f64| {
        // Ticks between days (half-day steps on short ranges) get no label: no date twice.
        if (x - x.round()).abs() > 1e-6 {
            return String::new();
        }
        // 719 163: days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
        chrono::NaiveDate::from_num_days_from_ce_opt(x.round() as i32 + 719_163)
            .map(|d| d.format("%d %b %y").to_string())
            .unwrap_or_default()
    };
    let x_fmt: &dyn Fn(&f64) -> String = match &x_axis {
        XAxis::Days(_) => &day_fmt,
        XAxis::Fixed(_, f) => *f,
    };
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .margin_right(RIGHT_MARGIN)
            .x_label_area_size(32)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y.0..y.1)
            .map_err(err)?;
        let x_labels = if day_axis { (span_days + 1).min(6) } else { 6 };
        chart
            .configure_mesh()
            .y_desc(y_desc)
            .x_label_formatter(x_fmt)
            .x_labels(x_labels)
            .draw()
            .map_err(err)?;
        if let Some(label) = diagonal {
            let (a, b) = (x0.max(y.0), x1.min(y.1));
            chart
                .draw_series(LineSeries::new([(a, a), (b, b)], BLACK.mix(0.3)))
                .map_err(err)?
                .label(label)
                .legend(|(a, b)| PathElement::new(vec![(a, b), (a + 18, b)], BLACK.mix(0.3)));
        }
        for (i, (name, p)) in series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            if p.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(a, b)| {
                    PathElement::new(vec![(a, b), (a + 18, b)], c.stroke_width(2))
                });
            chart
                .draw_series(p.iter().map(|&(a, b)| Circle::new((a, b), 4, c.filled())))
                .map_err(err)?;
        }
        if !has_points {
            note_text(&mut chart, (x0, x1), y, empty_note)?;
        }
        if has_points || diagonal.is_some() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(finish(buf))
}

/// The y labels of a bar chart.
#[derive(Clone, Copy)]
pub enum YScale {
    /// Counts: whole numbers with digit grouping, the axis at least 0..5.
    Counts,
    /// Shares: 0..1.
    Share,
}

fn grouped(n: f64) -> String {
    let s = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < -0.5 { format!("-{out}") } else { out }
}

/// Grouped bars: one group per category, one bar per series (with its colour). With no
/// positive value, `empty_note` is written in the plot.
pub fn bars(
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, Vec<f64>, RGBColor)],
    scale: YScale,
    empty_note: &str,
) -> Res {
    let max = series
        .iter()
        .flat_map(|(_, v, _)| v.iter().copied())
        .fold(0.0, f64::max);
    let top = match scale {
        YScale::Share => 1.0,
        YScale::Counts => (max * 1.15).max(5.0),
    };
    let n = categories.len().max(1) as f64;
    let k = series.len().max(1) as f64;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let cats = categories.to_vec();
        let fmt = move |x: &f64| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                cats.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let y_fmt = move |y: &f64| match scale {
            // Whole counts only: a tick between two integers gets no label.
            YScale::Counts => {
                if (y - y.round()).abs() < 1e-6 {
                    grouped(*y)
                } else {
                    String::new()
                }
            }
            YScale::Share => format!("{y:.1}"),
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .margin_right(RIGHT_MARGIN)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_desc)
            .y_label_formatter(&y_fmt)
            .x_labels(categories.len() * 2 + 1)
            .x_label_formatter(&fmt)
            .draw()
            .map_err(err)?;
        for (j, (name, values, c)) in series.iter().enumerate() {
            let c = *c;
            let w = 0.8 / k;
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x = i as f64 + 0.1 + j as f64 * w;
                    Rectangle::new([(x, 0.0), (x + w * 0.95, v.max(0.0))], c.filled())
                }))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(a, b)| Rectangle::new([(a, b - 5), (a + 12, b + 5)], c.filled()));
        }
        if max > 0.0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(err)?;
        } else {
            note_text(&mut chart, (0.0, n), (0.0, top), empty_note)?;
        }
        root.present().map_err(err)?;
    }
    Ok(finish(buf))
}

/// The palette's colour `i` (series without a campaign of their own).
pub fn series_colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Estimates with 95% intervals (e.g. uplift per campaign, in percentage points) around a zero
/// line. With no items, `empty_note` is written in the plot.
pub fn intervals(
    title: &str,
    y_desc: &str,
    items: &[(String, f64, f64, f64)],
    empty_note: &str,
) -> Res {
    let lo = items.iter().map(|i| i.2).fold(0.0, f64::min);
    let hi = items.iter().map(|i| i.3).fold(0.0, f64::max);
    // At least ±1 point: a zero-width axis (±0.001) says nothing.
    let pad = ((hi - lo) * 0.15).max(1.0);
    let n = items.len().max(1) as f64;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let names: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
        let fmt = move |x: &f64| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .margin_right(RIGHT_MARGIN)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_desc)
            .x_labels(items.len() * 2 + 1)
            .x_label_formatter(&fmt)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (n, 0.0)], BLACK.mix(0.5)))
            .map_err(err)?;
        for (i, (_, est, l, h)) in items.iter().enumerate() {
            let x = i as f64 + 0.5;
            let c = if *l > 0.0 {
                GREEN
            } else if *h < 0.0 {
                RED
            } else {
                BLUE
            };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, *l), (x, *h)],
                    c.stroke_width(3),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x - 0.08, *l), (x + 0.08, *l)],
                    c.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x - 0.08, *h), (x + 0.08, *h)],
                    c.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Circle::new((x, *est), 5, c.filled())))
                .map_err(err)?;
        }
        if items.is_empty() {
            note_text(&mut chart, (0.0, n), (lo - pad, hi + pad), empty_note)?;
        }
        root.present().map_err(err)?;
    }
    Ok(finish(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of every `<text>` element, in order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                Some(
                    t.split_once('>')?
                        .1
                        .split_once("</text>")?
                        .0
                        .trim()
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn charts_are_svg_with_their_text() {
        let s = lines(
            "Model metrics",
            "AUC",
            &[("AUC".into(), vec![(0.1, 0.8), (0.2, 0.82)])],
            (0.5, 1.0),
            XAxis::Fixed((0.0, 1.0), &|x| format!("d{x}")),
            Some("perfect"),
            "none",
        )
        .unwrap();
        assert!(
            s.starts_with("<svg")
                && s.contains("viewBox")
                && s.contains("Model metrics")
                && s.contains("<polyline"),
            "{s}"
        );
        let b = bars(
            "Funnel",
            "customers",
            &["selected".into(), "sent".into()],
            &[("all".into(), vec![100.0, 80.0], series_colour(0))],
            YScale::Counts,
            "none",
        )
        .unwrap();
        assert!(b.contains("selected") && b.contains("<rect"), "{b}");
        let i = intervals(
            "Uplift",
            "points",
            &[("a".into(), 2.0, 0.5, 3.5), ("b".into(), -1.0, -3.0, 1.0)],
            "none",
        )
        .unwrap();
        assert!(
            i.contains("Uplift") && i.matches("<circle").count() >= 2,
            "{i}"
        );
    }

    #[test]
    fn date_axes_label_each_day_once_and_never_1970() {
        let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        // One model version: a single instant.
        let t = 1_796_000_000.0; // 2026-11-29
        let s = lines(
            "m",
            "metric",
            &[("auc".into(), vec![(t, 0.8)])],
            (0.0, 1.0),
            XAxis::Days(tz),
            None,
            "none",
        )
        .unwrap();
        let dates: Vec<String> = texts(&s)
            .into_iter()
            .filter(|t| t.ends_with(" 26"))
            .collect();
        assert!(dates.len() >= 3, "{dates:?}");
        let mut unique = dates.clone();
        unique.dedup();
        assert_eq!(unique, dates, "a date repeated on the axis");
        assert!(dates.iter().any(|d| d == "29 Nov 26"), "{dates:?}");
        // No points at all: still a calendar around today, not the epoch.
        let e = lines(
            "m",
            "metric",
            &[("auc".into(), vec![])],
            (0.0, 1.0),
            XAxis::Days(tz),
            None,
            "no metrics yet",
        )
        .unwrap();
        assert!(!e.contains(" 70<") && e.contains("no metrics yet"), "{e}");
        // Two instants hours apart on the same day: one label for that day.
        let s = lines(
            "m",
            "metric",
            &[("auc".into(), vec![(t, 0.8), (t + 3600.0, 0.81)])],
            (0.0, 1.0),
            XAxis::Days(tz),
            None,
            "none",
        )
        .unwrap();
        let dates: Vec<String> = texts(&s)
            .into_iter()
            .filter(|t| t.ends_with(" 26"))
            .collect();
        assert_eq!(
            dates.iter().filter(|d| *d == "29 Nov 26").count(),
            1,
            "{dates:?}"
        );
    }

    #[test]
    fn fixed_axes_and_empty_charts_say_so() {
        // Calibration of a single bin: the axis stays 0..1 ("0.0 … 1.0"), not "0.3 0.3 0.3".
        let f = |x: &f64| format!("{x:.1}");
        let c = lines(
            "cal",
            "observed",
            &[("b".into(), vec![(0.3, 0.31)])],
            (0.0, 1.0),
            XAxis::Fixed((0.0, 1.0), &f),
            Some("perfectly calibrated"),
            "none",
        )
        .unwrap();
        let labels = texts(&c);
        assert!(
            labels.iter().any(|t| t == "0.0") && labels.iter().any(|t| t == "1.0"),
            "{labels:?}"
        );
        assert!(
            labels.iter().any(|t| t == "perfectly calibrated"),
            "{labels:?}"
        );
        assert_eq!(
            labels.iter().filter(|t| *t == "0.3").count(),
            1,
            "{labels:?}"
        );
        // A funnel with nothing: whole-number axis (not 0 0 0) and the note.
        let b = bars(
            "Funnel",
            "customers",
            &["selected".into()],
            &[("x".into(), vec![0.0], series_colour(0))],
            YScale::Counts,
            "no outreach yet",
        )
        .unwrap();
        let labels = texts(&b);
        assert!(
            labels.iter().any(|t| t == "5") && labels.iter().filter(|t| *t == "0").count() == 1,
            "{labels:?}"
        );
        assert!(labels.iter().any(|t| t == "no outreach yet"), "{labels:?}");
        // Uplift without data: no ±0.001 axis.
        let u = intervals("Uplift", "points", &[], "too early").unwrap();
        let labels = texts(&u);
        assert!(
            labels.iter().any(|t| t == "too early") && !labels.iter().any(|t| t.contains("0.001")),
            "{labels:?}"
        );
        assert_eq!(grouped(1_234_567.0), "1,234,567");
    }

    #[test]
    fn campaign_colours_depend_on_the_name_only() {
        let a = campaign_colours(["slipping-away", "due-soon", "cross-sell"]);
        let b = campaign_colours(["due-soon", "cross-sell", "slipping-away"]);
        assert_eq!(a, b);
        let alone = campaign_colours(["due-soon"]);
        let with_others = a.iter().find(|(n, _)| n == "due-soon").unwrap();
        // Without a collision, a campaign's colour does not depend on the others.
        if a.iter()
            .map(|(_, c)| c)
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 3
            && (fnv1a("cross-sell") % 10 != fnv1a("due-soon") % 10)
        {
            assert_eq!(alone[0].1, with_others.1);
        }
        let many = campaign_colours(
            (0..12).map(|i| ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"][i]),
        );
        assert_eq!(many.len(), 12);
        let first_ten: std::collections::HashSet<_> =
            many.iter().take(10).map(|(_, c)| *c).collect();
        assert_eq!(
            first_ten.len(),
            10,
            "distinct colours while the palette lasts"
        );
    }
}
