//! The SVG plot: step GFLOP/s against batch size, one line per feature size (in = out), the
//! raw-GEMM floor dashed beside each, and the measured FMA peak; one panel per dtype.

use crate::report::{Header, Row};
use affine_blas::workload::Pass;
use plotters::prelude::*;
use plotters::series::DashedLineSeries;
use std::path::Path;

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws the plot of `rows` into `path`.
pub fn svg(h: &Header, rows: &[Row], path: &Path) -> Result<(), String> {
    let dtypes: Vec<&str> = {
        let mut d: Vec<&str> = rows.iter().map(|r| r.dtype).collect();
        d.dedup();
        d
    };
    let panels = dtypes.len().max(1);
    let root = SVGBackend::new(path, (620 * panels as u32, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels));
    for (area, dtype) in areas.iter().zip(&dtypes) {
        panel(h, rows, dtype, area).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn panel<DB: DrawingBackend>(
    h: &Header,
    rows: &[Row],
    dtype: &str,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let step: Vec<&Row> = rows
        .iter()
        .filter(|r| r.dtype == dtype && r.pass == Pass::Step && r.shape.is_square())
        .collect();
    let mut features: Vec<usize> = step.iter().map(|r| r.shape.inp).collect();
    features.sort_unstable();
    features.dedup();
    let max_batch = step.iter().map(|r| r.shape.batch).max().unwrap_or(2) as f64;
    let peak = h.peak.gflops(dtype);
    let top = step
        .iter()
        .map(|r| r.gflops(&r.floor).max(r.gflops(&r.layer)))
        .fold(peak, f64::max)
        * 1.08;

    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{dtype} layer step (forward + backward), {} threads",
                h.openblas_threads
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(56)
        .build_cartesian_2d((0.8f64..max_batch * 1.25).log_scale(), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("batch size")
        .y_desc("GFLOP/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| format!("{}", v.round()))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    chart
        .draw_series(DashedLineSeries::new(
            [(0.8, peak), (max_batch * 1.25, peak)],
            8,
            5,
            RED.stroke_width(2),
        ))?
        .label(format!("FMA peak {peak:.0}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));

    for (i, &f) in features.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<&Row> = step.iter().copied().filter(|r| r.shape.inp == f).collect();
        pts.sort_by_key(|r| r.shape.batch);
        let layer: Vec<(f64, f64)> = pts
            .iter()
            .map(|r| (r.shape.batch as f64, r.gflops(&r.layer)))
            .collect();
        let floor: Vec<(f64, f64)> = pts
            .iter()
            .map(|r| (r.shape.batch as f64, r.gflops(&r.floor)))
            .collect();
        chart
            .draw_series(LineSeries::new(layer.clone(), color.stroke_width(2)))?
            .label(format!("layer, in = out = {f}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(layer.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        chart
            .draw_series(DashedLineSeries::new(floor, 4, 4, color.stroke_width(1)))?
            .label(format!("raw GEMM floor, {f}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}
