//! Report figures (PNG, plotters): training curves, confusion matrix, ROC curves, and a panel of
//! heatmap overlays like the paper's Fig. 7 (image · attention · centre-zoom box · zoom view).

use super::metrics::{Metrics, roc_curve};
use crate::model::infer::Prediction;
use anyhow::{Context, Result};
use cdnet_shared::Rect;
use cdnet_shared::heatmap::heatmap_picture;
use cdnet_shared::postprocess::heat_colour;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Once;

/// The bundled font (DejaVu Sans), so reports render without system font libraries.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled file is a valid TTF; if registration failed, text would be missing, not wrong.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One epoch's summary, as drawn in the curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochPoint {
    /// 1-based epoch across both stages.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Validation macro F1.
    pub val_f1: Option<f64>,
}

fn palette(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLOURS[i % COLOURS.len()]
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e:?}")
}

/// Loss (left) and validation accuracy / macro F1 (right) per epoch.
pub fn curves(points: &[EpochPoint], path: &Path) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(550);
    let last = points.iter().map(|p| p.epoch).max().unwrap_or(1).max(2);
    let max_loss = points.iter().map(|p| p.loss).filter(|l| l.is_finite()).fold(0.0, f64::max).max(1e-3) * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(1..last, 0.0..max_loss)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("epoch").draw().map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.epoch, p.loss)), palette(0).stroke_width(2)))
        .map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&right)
        .caption("validation", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(1..last, 0.0..1.0)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("epoch").draw().map_err(plot_err)?;
    type Series = (&'static str, fn(&EpochPoint) -> Option<f64>);
    let series: [Series; 2] = [("accuracy", |p| p.val_accuracy), ("macro F1", |p| p.val_f1)];
    for (i, (name, get)) in series.into_iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                points.iter().filter_map(|p| get(p).map(|v| (p.epoch, v))),
                palette(i + 1).stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], palette(i + 1).stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The confusion matrix, cells shaded by row share, with counts.
pub fn confusion(metrics: &Metrics, path: &Path) -> Result<()> {
    register_font();
    let k = metrics.per_class.len();
    let cell = 90;
    let margin = 160;
    let size = (margin + k as u32 * cell + 30, margin + k as u32 * cell + 30);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let text = |s: &str, x: i32, y: i32, size: u32, colour: &RGBColor| {
        Text::new(
            s.to_string(),
            (x, y),
            ("sans-serif", size).into_font().color(colour).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            )),
        )
    };
    root.draw(&text("predicted", margin as i32 + (k as i32 * cell as i32) / 2, 20, 20, &BLACK)).map_err(plot_err)?;
    for (t, row) in metrics.confusion.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        let name = &metrics.per_class[t].name;
        root.draw(&text(
            name,
            margin as i32 - 70,
            margin as i32 + t as i32 * cell as i32 + cell as i32 / 2,
            16,
            &BLACK,
        ))
        .map_err(plot_err)?;
        root.draw(&text(
            name,
            margin as i32 + t as i32 * cell as i32 + cell as i32 / 2,
            margin as i32 - 30,
            16,
            &BLACK,
        ))
        .map_err(plot_err)?;
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let shade = (255.0 * (1.0 - 0.85 * share)) as u8;
            let (x0, y0) = (margin as i32 + p as i32 * cell as i32, margin as i32 + t as i32 * cell as i32);
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                RGBColor(shade, shade, 255).filled(),
            ))
            .map_err(plot_err)?;
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell as i32, y0 + cell as i32)], BLACK.stroke_width(1)))
                .map_err(plot_err)?;
            let colour = if share > 0.6 { WHITE } else { BLACK };
            root.draw(&text(&count.to_string(), x0 + cell as i32 / 2, y0 + cell as i32 / 2, 22, &colour))
                .map_err(plot_err)?;
        }
    }
    root.draw(&text("true", 20, margin as i32 + (k as i32 * cell as i32) / 2, 20, &BLACK)).map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// One-vs-rest ROC curve per class.
pub fn roc(metrics: &Metrics, labels: &[usize], probabilities: &[Vec<f32>], path: &Path) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (620, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let title = match metrics.macro_auc {
        Some(auc) => format!("ROC, one vs rest (macro AUC {auc:.3})"),
        None => "ROC, one vs rest".to_string(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("false positive rate").y_desc("sensitivity").draw().map_err(plot_err)?;
    chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3))).map_err(plot_err)?;
    for (c, class) in metrics.per_class.iter().enumerate() {
        let scores: Vec<f32> = probabilities.iter().map(|p| p[c]).collect();
        let positives: Vec<bool> = labels.iter().map(|&l| l == c).collect();
        let label = match class.auc {
            Some(auc) => format!("{} ({auc:.3})", class.name),
            None => format!("{} (n/a)", class.name),
        };
        chart
            .draw_series(LineSeries::new(roc_curve(&scores, &positives), palette(c).stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], palette(c).stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// An RGB image buffer.
struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let o = (y * self.width + x) * 3;
            self.rgb[o..o + 3].copy_from_slice(&c);
        }
    }

    fn outline(&mut self, ox: usize, oy: usize, r: Rect, scale: f64, c: [u8; 3]) {
        let (x0, y0) = ((r.x0 as f64 * scale) as usize, (r.y0 as f64 * scale) as usize);
        let (x1, y1) = ((r.x1 as f64 * scale) as usize, (r.y1 as f64 * scale) as usize);
        for t in 0..2 {
            for x in x0..x1.max(x0 + 1) {
                self.put(ox + x, oy + y0 + t, c);
                self.put(ox + x, oy + y1.saturating_sub(1 + t), c);
            }
            for y in y0..y1.max(y0 + 1) {
                self.put(ox + x0 + t, oy + y, c);
                self.put(ox + x1.saturating_sub(1 + t), oy + y, c);
            }
        }
    }
}

/// Gray value of a normalised plane pixel.
fn gray(v: f32, norm: &cdnet_shared::Normalization) -> u8 {
    norm.invert(v).clamp(0.0, 255.0) as u8
}

/// The heatmap of `p` placed on the `n × n` input by
/// [`cdnet_shared::heatmap::HeatmapGeometry`], as heatmap bytes (255 at its peak).
pub fn heatmap_bytes(p: &Prediction, n: usize) -> Vec<u8> {
    heatmap_picture(&p.heatmap, p.heatmap_side, n, n, n)
}

/// A panel of rows `image | attention overlay | zoom box | zoom view` (the paper's Fig. 7).
pub fn heatmap_panel(
    rows: &[(&[f32], &Prediction, String)],
    n: usize,
    norm: &cdnet_shared::Normalization,
    path: &Path,
) -> Result<()> {
    register_font();
    let tile = 200;
    let (gap, header, label_w) = (6, 30, 0);
    let width = label_w + 4 * (tile + gap) + gap;
    let height = header + rows.len() * (tile + 24 + gap) + gap;
    let mut canvas = Canvas { width, height, rgb: vec![255; width * height * 3] };
    let scale = tile as f64 / n as f64;
    for (r, (plane, prediction, _)) in rows.iter().enumerate() {
        let oy = header + r * (tile + 24 + gap) + 24;
        let heat = heatmap_bytes(prediction, n);
        for ty in 0..tile {
            for tx in 0..tile {
                let (sx, sy) = ((tx as f64 / scale) as usize, (ty as f64 / scale) as usize);
                let i = sy.min(n - 1) * n + sx.min(n - 1);
                let g = gray(plane[i], norm);
                let hc = heat_colour(heat[i]);
                let alpha = 0.55 * heat[i] as f32 / 255.0 + 0.15;
                let blend = |c: u8| (g as f32 * (1.0 - alpha) + c as f32 * alpha) as u8;
                let zoom = prediction.zoom_view.as_ref().map_or(255, |v| gray(v[i], norm));
                canvas.put(gap + tx, oy + ty, [g, g, g]);
                canvas.put(2 * gap + tile + tx, oy + ty, [blend(hc[0]), blend(hc[1]), blend(hc[2])]);
                canvas.put(3 * gap + 2 * tile + tx, oy + ty, [g, g, g]);
                canvas.put(4 * gap + 3 * tile + tx, oy + ty, [zoom, zoom, zoom]);
            }
        }
        if let Some(rect) = prediction.zoom_box {
            canvas.outline(3 * gap + 2 * tile, oy, rect, scale, [230, 40, 40]);
        }
    }
    let root = BitMapBackend::with_buffer(&mut canvas.rgb, (width as u32, height as u32)).into_drawing_area();
    let style = ("sans-serif", 16).into_font().color(&BLACK);
    for (c, title) in ["image", "heatmap", "centre-zoom box", "zoom view"].iter().enumerate() {
        root.draw(&Text::new(title.to_string(), ((gap + c * (tile + gap) + 4) as i32, 8), style.clone()))
            .map_err(plot_err)?;
    }
    for (r, (_, _, caption)) in rows.iter().enumerate() {
        let y = header + r * (tile + 24 + gap) + 4;
        root.draw(&Text::new(caption.clone(), (gap as i32 + 4, y as i32), style.clone())).map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    drop(root);
    image::save_buffer(path, &canvas.rgb, width as u32, height as u32, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot write {}", path.display()))
}
