//! `accuracy.svg`: training and validation accuracy per epoch, drawn with plotters'
//! SVG backend (no font or bitmap stack: text sizes are estimated).

use std::path::Path;

use plotters::prelude::*;

use resnet::metrics::EpochMetrics;

/// The plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed while drawing.
    #[error("drawing the accuracy plot: {0}")]
    Draw(String),
    /// The SVG file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Reads one accuracy out of an epoch's metrics.
type Accuracy = fn(&EpochMetrics) -> f64;

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// How many x-axis labels to ask plotters for when the last epoch is `last_epoch`: one
/// per epoch (epochs 0..=last), at most 11.
fn epoch_ticks(last_epoch: usize) -> usize {
    (last_epoch + 1).min(11)
}

/// Render the SVG text of the accuracy curves (x: epoch, y: accuracy in [0, 1]).
pub fn accuracy_svg(history: &[EpochMetrics], title: &str) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let last_epoch = history.iter().map(|m| m.epoch).max().unwrap_or(0).max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..last_epoch as f64, 0f64..1f64)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy")
            // Epochs are whole numbers: at most one tick per epoch, so plotters picks a
            // step of 1, 2, 5, 10… epochs, and never labels a fraction.
            .x_labels(epoch_ticks(last_epoch))
            .x_label_formatter(&|x| {
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()
            .map_err(draw_err)?;
        let series: [(&str, RGBColor, Accuracy); 2] = [
            ("train", BLUE, |m| m.train_accuracy),
            ("validation", RED, |m| m.validation_accuracy),
        ];
        for (label, color, value) in series {
            let points: Vec<(f64, f64)> = history
                .iter()
                .map(|m| (m.epoch as f64, value(m).clamp(0.0, 1.0)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(draw_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Write `accuracy.svg` for `history` to `path`, through a temporary file renamed
/// into place.
pub fn write_accuracy_svg(
    path: &Path,
    history: &[EpochMetrics],
    title: &str,
) -> Result<(), PlotError> {
    let svg = accuracy_svg(history, title)?;
    resnet::artifact::write_atomic(path, svg.as_bytes()).map_err(|source| PlotError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(e: usize, train: f64, val: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: e,
            train_loss: 1.0,
            train_accuracy: train,
            train_top_k_accuracy: None,
            validation_loss: 1.0,
            validation_accuracy: val,
            validation_top_k_accuracy: None,
            learning_rate: 0.1,
            images_per_second: 1.0,
            seconds: 1.0,
        }
    }

    #[test]
    fn svg_has_both_series_and_labels() {
        let h = vec![epoch(0, 0.3, 0.25), epoch(1, 0.6, 0.5), epoch(2, 0.9, 0.75)];
        let svg = accuracy_svg(&h, "ResNet-18").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("ResNet-18"));
        assert!(svg.contains(">train\n</text>") || svg.contains("\ntrain\n</text>"));
        assert!(svg.contains("validation\n</text>"));
        assert!(svg.contains("<polyline"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    /// The x-axis texts of an SVG: the labels drawn below the plot area (plotters
    /// writes each label as its own `<text>` element).
    fn axis_numbers(svg: &str) -> Vec<String> {
        svg.split("<text")
            .filter_map(|t| t.split_once('>').map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once("</text>").map(|(text, _)| text.trim()))
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn epoch_axis_has_each_integer_once() {
        let h: Vec<_> = (0..6).map(|e| epoch(e, 0.5, 0.5)).collect();
        let labels = axis_numbers(&accuracy_svg(&h, "t").unwrap());
        let epochs: Vec<&str> = labels
            .iter()
            .map(String::as_str)
            .filter(|t| !t.contains('.'))
            .collect();
        assert_eq!(epochs, ["0", "1", "2", "3", "4", "5"], "{labels:?}");
        // Thirty epochs: labelled every few epochs, whole numbers, none twice.
        let h: Vec<_> = (0..30).map(|e| epoch(e, 0.5, 0.5)).collect();
        let labels = axis_numbers(&accuracy_svg(&h, "t").unwrap());
        let epochs: Vec<usize> = labels
            .iter()
            .filter(|t| !t.contains('.'))
            .map(|t| t.parse().unwrap())
            .collect();
        assert!(epochs.len() >= 3 && epochs.len() <= 11, "{labels:?}");
        assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{labels:?}");
    }

    #[test]
    fn single_epoch_and_empty_history_draw() {
        assert!(accuracy_svg(&[epoch(0, 0.5, 0.5)], "t").is_ok());
        assert!(accuracy_svg(&[], "t").is_ok());
    }

    #[test]
    fn writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("accuracy.svg");
        write_accuracy_svg(&p, &[epoch(0, 0.5, 0.4)], "t").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("<svg"));
    }
}
