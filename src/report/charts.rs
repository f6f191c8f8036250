//! The report's plots, drawn with plotters into SVG strings embedded in the page (no files, no
//! scripts, no fonts to ship: the browser renders the text).

use plotters::prelude::*;

const W: u32 = 640;
const H: u32 = 340;
const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

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

/// Lines over x (e.g. unix days), each a named series; `x_fmt` labels the x axis.
pub fn lines(
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y: (f64, f64),
    x_fmt: &dyn Fn(&f64) -> String,
    diagonal: bool,
) -> Res {
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1) = pts.clone().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if (x1 - x0).abs() < 1e-9 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y.0..y.1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .y_desc(y_desc)
            .x_label_formatter(x_fmt)
            .x_labels(6)
            .draw()
            .map_err(err)?;
        if diagonal {
            chart
                .draw_series(LineSeries::new(
                    [(x0.max(y.0), x0.max(y.0)), (x1.min(y.1), x1.min(y.1))],
                    BLACK.mix(0.3),
                ))
                .map_err(err)?
                .label("perfect")
                .legend(|(a, b)| PathElement::new(vec![(a, b), (a + 18, b)], BLACK.mix(0.3)));
        }
        for (i, (name, p)) in series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
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
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(finish(buf))
}

/// Grouped bars: one group per category, one bar per series.
pub fn bars(
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    y_max: Option<f64>,
) -> Res {
    let top = y_max
        .unwrap_or_else(|| {
            series
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .fold(0.0, f64::max)
                * 1.15
        })
        .max(1e-9);
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
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_desc)
            .x_labels(categories.len() * 2 + 1)
            .x_label_formatter(&fmt)
            .draw()
            .map_err(err)?;
        for (j, (name, values)) in series.iter().enumerate() {
            let c = PALETTE[j % PALETTE.len()];
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
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(finish(buf))
}

/// Estimates with 95% intervals (e.g. uplift per campaign) around a zero line.
pub fn intervals(title: &str, y_desc: &str, items: &[(String, f64, f64, f64)]) -> Res {
    let lo = items.iter().map(|i| i.2).fold(0.0, f64::min);
    let hi = items.iter().map(|i| i.3).fold(0.0, f64::max);
    let pad = ((hi - lo) * 0.15).max(1e-3);
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
                PALETTE[2]
            } else if *h < 0.0 {
                PALETTE[3]
            } else {
                PALETTE[0]
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
        root.present().map_err(err)?;
    }
    Ok(finish(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_text() {
        let s = lines(
            "Model metrics",
            "AUC",
            &[("AUC".into(), vec![(1.0, 0.8), (2.0, 0.82)])],
            (0.5, 1.0),
            &|x| format!("d{x}"),
            true,
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
            &[("all".into(), vec![100.0, 80.0])],
            None,
        )
        .unwrap();
        assert!(b.contains("selected") && b.contains("<rect"), "{b}");
        let i = intervals(
            "Uplift",
            "points",
            &[("a".into(), 2.0, 0.5, 3.5), ("b".into(), -1.0, -3.0, 1.0)],
        )
        .unwrap();
        assert!(
            i.contains("Uplift") && i.matches("<circle").count() >= 2,
            "{i}"
        );
    }
}
