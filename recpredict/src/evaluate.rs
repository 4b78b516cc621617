//! `--evaluate`: accuracy, top-k accuracy, per-class precision/recall and the
//! confusion matrix of a single-label model over inputs whose true class is known
//! (`.lst` or `.rec`).
//!
//! The summary is one JSON object, the last line of the output:
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `type` | `"summary"` | the only line that has a `type` field |
//! | `images` | integer | images evaluated (predicted and with a valid true class) |
//! | `errors` | integer | inputs that failed (error lines) or whose true class is not a class of the model; not counted in `images` |
//! | `accuracy` | number or null | fraction of `images` whose top class is the true class (null when `images` is 0) |
//! | `top_k` | integer | the k of `top_k_accuracy` (`--top-k`) |
//! | `top_k_accuracy` | number or null | fraction whose true class is among the k most probable |
//! | `per_class` | array | per class, in class order: `{"class", "label", "precision", "recall", "support"}`; precision (recall) is null when the class was never predicted (never true) |
//! | `confusion_matrix` | array of arrays | `confusion_matrix[t][p]`: images of true class `t` predicted as `p` |

use std::io::{self, Write};

use serde::Serialize;

use crate::output::top_k;

/// One class's row of the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassStats {
    /// The class index.
    pub class: usize,
    /// Its name, when the model has class names.
    pub label: Option<String>,
    /// Of the images predicted as this class, the fraction that truly are.
    pub precision: Option<f64>,
    /// Of the images of this class, the fraction predicted as it.
    pub recall: Option<f64>,
    /// Images of this class.
    pub support: u64,
}

/// The `--evaluate` summary line (see the module docs for the fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Always `"summary"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Images evaluated.
    pub images: u64,
    /// Inputs that failed or had an unusable true class.
    pub errors: u64,
    /// Top-1 accuracy.
    pub accuracy: Option<f64>,
    /// The k of `top_k_accuracy`.
    pub top_k: usize,
    /// Top-k accuracy.
    pub top_k_accuracy: Option<f64>,
    /// Per-class precision, recall and support.
    pub per_class: Vec<ClassStats>,
    /// `[true][predicted]` counts.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// Accumulates predictions against true classes.
#[derive(Debug, Clone)]
pub struct Evaluator {
    k: usize,
    class_names: Option<Vec<String>>,
    confusion: Vec<Vec<u64>>,
    top_k_hits: u64,
    errors: u64,
}

impl Evaluator {
    /// An evaluator for `num_classes` classes and top-`k` accuracy.
    pub fn new(num_classes: usize, k: usize, class_names: Option<Vec<String>>) -> Self {
        Evaluator {
            k,
            class_names,
            confusion: vec![vec![0; num_classes]; num_classes],
            top_k_hits: 0,
            errors: 0,
        }
    }

    /// Record one prediction. `Err` (with a message) when `true_class` is not a
    /// class of the model; the image is then counted in `errors` instead.
    pub fn add(&mut self, true_class: Option<u64>, probs: &[f32]) -> Result<(), String> {
        let n = self.confusion.len();
        let t = match true_class {
            Some(t) if (t as usize) < n => t as usize,
            Some(t) => {
                self.errors += 1;
                return Err(format!(
                    "true class {t} is not a class of this model ({n} classes); left out of the summary"
                ));
            }
            None => {
                self.errors += 1;
                return Err(
                    "the true label is not a class index; left out of the summary".to_string(),
                );
            }
        };
        let ranked = top_k(probs, self.k.max(1));
        let predicted = ranked[0];
        self.confusion[t][predicted.min(n - 1)] += 1;
        if ranked.iter().take(self.k).any(|&c| c == t) {
            self.top_k_hits += 1;
        }
        Ok(())
    }

    /// Count an input that failed before it could be evaluated.
    pub fn add_error(&mut self) {
        self.errors += 1;
    }

    /// The summary of everything recorded so far.
    pub fn summary(&self) -> Summary {
        let n = self.confusion.len();
        let images: u64 = self.confusion.iter().flatten().sum();
        let correct: u64 = (0..n).map(|i| self.confusion[i][i]).sum();
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let per_class = (0..n)
            .map(|c| {
                let support: u64 = self.confusion[c].iter().sum();
                let predicted: u64 = self.confusion.iter().map(|row| row[c]).sum();
                ClassStats {
                    class: c,
                    label: self.class_names.as_ref().and_then(|v| v.get(c).cloned()),
                    precision: ratio(self.confusion[c][c], predicted),
                    recall: ratio(self.confusion[c][c], support),
                    support,
                }
            })
            .collect();
        Summary {
            kind: "summary",
            images,
            errors: self.errors,
            accuracy: ratio(correct, images),
            top_k: self.k,
            top_k_accuracy: ratio(self.top_k_hits, images),
            per_class,
            confusion_matrix: self.confusion.clone(),
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.4}", v))
}

/// Print the summary as a readable table (for a terminal).
pub fn write_table(w: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(
        w,
        "images: {}  errors: {}  accuracy: {}  top-{} accuracy: {}",
        s.images,
        s.errors,
        pct(s.accuracy),
        s.top_k,
        pct(s.top_k_accuracy)
    )?;
    let names: Vec<String> = s
        .per_class
        .iter()
        .map(|c| match &c.label {
            Some(l) => format!("{} {}", c.class, l),
            None => c.class.to_string(),
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(5).max(5);
    writeln!(
        w,
        "{:<width$}  {:>9}  {:>9}  {:>7}",
        "class", "precision", "recall", "support"
    )?;
    for (c, name) in s.per_class.iter().zip(&names) {
        writeln!(
            w,
            "{:<width$}  {:>9}  {:>9}  {:>7}",
            name,
            pct(c.precision),
            pct(c.recall),
            c.support
        )?;
    }
    let cell = s
        .confusion_matrix
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1)
        .max(s.confusion_matrix.len().saturating_sub(1).to_string().len());
    writeln!(
        w,
        "confusion matrix (rows: true class, columns: predicted):"
    )?;
    write!(w, "{:<width$} ", "")?;
    for p in 0..s.confusion_matrix.len() {
        write!(w, " {:>cell$}", p)?;
    }
    writeln!(w)?;
    for (row, name) in s.confusion_matrix.iter().zip(&names) {
        write!(w, "{:<width$} ", name)?;
        for v in row {
            write!(w, " {:>cell$}", v)?;
        }
        writeln!(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_confusion_gives_exact_numbers() {
        let mut e = Evaluator::new(3, 2, Some(vec!["a".into(), "b".into(), "c".into()]));
        // true 0: predicted 0, 0, 1 (second choice 0 → top-2 hit)
        e.add(Some(0), &[0.8, 0.1, 0.1]).unwrap();
        e.add(Some(0), &[0.7, 0.2, 0.1]).unwrap();
        e.add(Some(0), &[0.3, 0.6, 0.1]).unwrap();
        // true 1: predicted 1; true 2: predicted 0 with 2 third (top-2 miss)
        e.add(Some(1), &[0.1, 0.8, 0.1]).unwrap();
        e.add(Some(2), &[0.5, 0.3, 0.2]).unwrap();
        assert!(e.add(Some(3), &[0.5, 0.3, 0.2]).is_err());
        assert!(e.add(None, &[0.5, 0.3, 0.2]).is_err());
        e.add_error();
        let s = e.summary();
        assert_eq!(s.images, 5);
        assert_eq!(s.errors, 3);
        assert_eq!(s.accuracy, Some(3.0 / 5.0));
        assert_eq!(s.top_k_accuracy, Some(4.0 / 5.0));
        assert_eq!(
            s.confusion_matrix,
            vec![vec![2, 1, 0], vec![0, 1, 0], vec![1, 0, 0]]
        );
        assert_eq!(s.per_class[0].precision, Some(2.0 / 3.0));
        assert_eq!(s.per_class[0].recall, Some(2.0 / 3.0));
        assert_eq!(s.per_class[1].precision, Some(0.5));
        assert_eq!(s.per_class[1].recall, Some(1.0));
        assert_eq!(s.per_class[2].precision, None);
        assert_eq!(s.per_class[2].recall, Some(0.0));
        assert_eq!(s.per_class[2].support, 1);
        assert_eq!(s.per_class[2].label.as_deref(), Some("c"));
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.starts_with("{\"type\":\"summary\",\"images\":5,"),
            "{json}"
        );
    }

    #[test]
    fn empty_summary_has_null_ratios() {
        let s = Evaluator::new(2, 1, None).summary();
        assert_eq!((s.images, s.accuracy, s.top_k_accuracy), (0, None, None));
        assert_eq!(s.per_class[0].precision, None);
    }

    #[test]
    fn table_lists_every_class() {
        let mut e = Evaluator::new(2, 1, None);
        e.add(Some(1), &[0.2, 0.8]).unwrap();
        let mut buf = Vec::new();
        write_table(&mut buf, &e.summary()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("accuracy: 1.0000"), "{text}");
        assert!(text.contains("confusion matrix"), "{text}");
        assert_eq!(text.lines().count(), 1 + 1 + 2 + 1 + 1 + 2);
    }
}
