//! PNG plots of a run's history: `plots/reward.png`, `plots/accuracy.png`, `plots/loss.png` (the
//! supervised stages) and `plots/grpo_loss.png` (the RL stages, whose loss is orders of magnitude
//! smaller), one line per stage that logged the metric, x = global step.
//!
//! Drawing is plotters' bitmap backend into a buffer, encoded by the `png` crate. Text goes
//! through plotters' `ab_glyph` feature, which needs the bytes of a TrueType font and looks up no
//! system font library: the font is the file named by `RLVR_PLOT_FONT`, else the first of a few
//! common sans fonts (DejaVu, Liberation, Noto, Free, Arial) under the usual font folders, else
//! any `.ttf` there. With none, plots are drawn without text (the lines only) and a note says
//! so once: a missing font never fails a run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::{MetricsError, StepRecord};

/// Where a chart's legend goes (plotters' type).
pub use plotters::chart::SeriesLabelPosition;

/// Plot size in pixels.
pub const SIZE: (u32, u32) = (900, 540);

/// Which records a plot takes: all, or only the RL stages' (records with a `reward`), or only the
/// others. The GRPO surrogate loss (~1e-8 with mean-only advantages) and a supervised loss (~1)
/// on one axis would show the former as a flat 0, so each gets its own plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Records {
    All,
    Rl,
    NotRl,
}

/// The plots: file stem and title, metric key, y-axis label, where the legend goes (the corner a
/// rising or a falling curve usually leaves free), and which records.
const PLOTS: [(&str, &str, &str, SeriesLabelPosition, Records); 4] = [
    ("reward", "reward", "mean reward", SeriesLabelPosition::LowerRight, Records::All),
    ("accuracy", "accuracy", "accuracy", SeriesLabelPosition::LowerRight, Records::All),
    ("loss", "loss", "loss", SeriesLabelPosition::UpperRight, Records::NotRl),
    ("grpo_loss", "loss", "GRPO loss", SeriesLabelPosition::UpperRight, Records::Rl),
];

/// Each plot's file stem and its series, as [`write_plots`] draws them (plots without points left
/// out): `loss` holds the supervised stages, `grpo_loss` the RL ones.
pub fn plot_series(history: &[StepRecord]) -> Vec<(&'static str, Vec<Series>)> {
    PLOTS
        .iter()
        .map(|&(stem, key, _, _, records)| {
            let is_rl = |r: &StepRecord| r.get("reward").is_some();
            let kept: Vec<StepRecord> = history
                .iter()
                .filter(|r| match records {
                    Records::All => true,
                    Records::Rl => is_rl(r),
                    Records::NotRl => !is_rl(r),
                })
                .cloned()
                .collect();
            (stem, series(&kept, key))
        })
        .filter(|(_, series)| !series.is_empty())
        .collect()
}

/// Line colours, one per stage in order of first appearance.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The points of one stage: its name and (step, value) in step order.
pub type Series = (String, Vec<(u64, f64)>);

/// Writes `run_dir/plots/{reward,accuracy,loss,grpo_loss}.png` from `history`; a plot without
/// points gets no file. Returns the files written.
pub fn write_plots(run_dir: &Path, history: &[StepRecord]) -> Result<Vec<PathBuf>, MetricsError> {
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir).map_err(|e| MetricsError::io(&dir, e))?;
    let mut written = Vec::new();
    for (stem, series) in plot_series(history) {
        let plot = PLOTS.iter().find(|p| p.0 == stem).expect("a plot of PLOTS");
        let (y_label, legend) = (plot.2, plot.3.clone());
        let path = dir.join(format!("{stem}.png"));
        let png = render_png(stem, y_label, &series, legend, font_available())
            .map_err(|message| MetricsError::Plot { path: path.clone(), message })?;
        // Through a rename, so that a kill mid-write leaves the previous plot, not half a PNG.
        let tmp = path.with_extension("png.tmp");
        std::fs::write(&tmp, png).map_err(|e| MetricsError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| MetricsError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// The values of `key` in `history`, one series per stage in order of first appearance.
pub fn series(history: &[StepRecord], key: &str) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for record in history {
        let Some(value) = record.get(key).filter(|v| v.is_finite()) else { continue };
        let point = (record.step, value);
        match series.iter_mut().find(|(stage, _)| *stage == record.stage) {
            Some((_, points)) => points.push(point),
            None => series.push((record.stage.clone(), vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by_key(|&(step, _)| step);
    }
    series
}

/// One chart as PNG bytes: `title` on top, x = step, y = `y_label`, a legend of the stages at
/// `legend`. With `text` false nothing is written in it (for when no font is found).
pub fn render_png(
    title: &str,
    y_label: &str,
    series: &[Series],
    legend: SeriesLabelPosition,
    text: bool,
) -> Result<Vec<u8>, String> {
    let (width, height) = SIZE;
    // (H, W, 3) RGB
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    draw(&mut pixels, (title, y_label), series, legend, text).map_err(|e| e.to_string())?;
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(png)
}

fn draw(
    pixels: &mut [u8],
    (title, y_label): (&str, &str),
    series: &[Series],
    legend: SeriesLabelPosition,
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (x_range, y_range) = ranges(series);
    let span = y_range.end - y_range.start;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder.caption(title, ("sans-serif", 28)).x_label_area_size(45).y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(x_range, y_range)?;
    // The grid comes with its tick labels, so no font means no grid.
    if text {
        chart
            .configure_mesh()
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .x_desc("step")
            .y_desc(y_label)
            .label_style(("sans-serif", 15))
            .x_labels(8)
            .y_labels(8)
            .y_label_formatter(&|v: &f64| tick_label(*v, span))
            .draw()?;
    }
    for (i, (stage, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(stage.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(legend)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// A y tick's text with as many digits as an axis of height `span` needs: fixed decimals down to
/// spans of 1e-3, scientific below (a GRPO loss of ~1e-8 would otherwise read `-0.0`).
pub fn tick_label(v: f64, span: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if span > 0.0 && span < 1e-3 {
        return format!("{v:.2e}");
    }
    let decimals = if span > 0.0 { (2.0 - span.log10().floor()).clamp(0.0, 6.0) as usize } else { 2 };
    format!("{v:.decimals$}")
}

/// Axis ranges covering every point, padded so that a flat or single-point series is visible.
fn ranges(series: &[Series]) -> (std::ops::Range<u64>, std::ops::Range<f64>) {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (u64::MAX, 0, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return (0..1, 0.0..1.0);
    }
    let x_pad = u64::from(x1 == x0);
    let y_pad = if y1 > y0 { 0.08 * (y1 - y0) } else { 0.5f64.max(0.1 * y0.abs()) };
    (x0.saturating_sub(x_pad)..x1 + x_pad, y0 - y_pad..y1 + y_pad)
}

/// Registers a font with plotters on first use; false when none was found (plots without text).
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let registered = find_font().is_some_and(|bytes| {
            // ab_glyph keeps `&'static` font bytes for the life of the process; one font, once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        });
        if !registered {
            eprintln!("rlvr: no usable TrueType font (set RLVR_PLOT_FONT to a .ttf); plots are drawn without text");
        }
        registered
    })
}

/// The bytes of the font to use: `RLVR_PLOT_FONT`, a known sans font, or any `.ttf`.
fn find_font() -> Option<Vec<u8>> {
    const KNOWN: [&str; 8] = [
        "DejaVuSans.ttf",
        "LiberationSans-Regular.ttf",
        "NotoSans-Regular.ttf",
        "FreeSans.ttf",
        "Arial.ttf",
        "arial.ttf",
        "Helvetica.ttf",
        "Verdana.ttf",
    ];
    if let Some(path) = std::env::var_os("RLVR_PLOT_FONT").map(PathBuf::from) {
        return std::fs::read(path).ok();
    }
    let mut fonts = Vec::new();
    for dir in ["/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "/System/Library/Fonts"] {
        collect_ttf(Path::new(dir), 4, &mut fonts);
    }
    if let Some(home) = std::env::var_os("HOME") {
        collect_ttf(&Path::new(&home).join(".local/share/fonts"), 4, &mut fonts);
    }
    fonts.sort();
    let name = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    let known = KNOWN.iter().find_map(|k| fonts.iter().find(|p| name(p) == *k));
    known.into_iter().chain(fonts.iter()).find_map(|path| std::fs::read(path).ok())
}

/// Adds the `.ttf` files under `dir`, descending at most `depth` folders.
fn collect_ttf(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() && depth > 0 {
            collect_ttf(&path, depth - 1, out);
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(path);
        }
    }
}
