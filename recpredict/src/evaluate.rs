//! `--evaluate`: the summary of a model's predictions over inputs whose true labels
//! are known (`.lst` or `.rec`). Single-label models get accuracy, top-k accuracy,
//! per-class precision/recall and the confusion matrix ([`SingleLabelSummary`]); multi-label
//! models get per-class precision/recall/F1 at a 0.5 threshold, their micro and macro
//! averages, exact-match accuracy and Hamming loss ([`MultiLabelSummary`]).
//!
//! The summary is one JSON object, the last line of the output. For a single-label
//! model:
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `type` | `"summary"` | the only line that has a `type` field |
//! | `images` | integer | images evaluated (predicted and with a valid true class) |
//! | `errors` | integer | inputs that failed (error lines) or whose true class is not a class of the model; not counted in `images` |
//! | `accuracy` | number or null | fraction of `images` whose top class is the true class (null when `images` is 0) |
//! | `top_k` | integer | the k of `top_k_accuracy` (`--top-k`) |
//! | `top_k_accuracy` | number or null | fraction whose true class is within the k most probable, by MXNet's rule (as rectrain): fewer than k classes strictly more probable, so ties count |
//! | `per_class` | array | per class, in class order: `{"class", "label", "precision", "recall", "support"}`; precision (recall) is null when the class was never predicted (never true) |
//! | `confusion_matrix` | array of arrays | `confusion_matrix[t][p]`: images of true class `t` predicted as `p` |
//!
//! For a multi-label model (the artifact's `multi_label` is true; true labels are
//! multi-hot vectors, one 0/1 column per class, from a `.lst` with one label column
//! per class or a `.rec` packed with `im2rec --pack-label`). A class is *predicted*
//! for an image when its probability is greater than 0.5 (its logit is positive,
//! rectrain's rule) and *true* when its label is greater than 0.5:
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `type` | `"summary"` | as above |
//! | `multi_label` | `true` | marks the multi-label form (absent from the single-label summary) |
//! | `images` | integer | images evaluated |
//! | `errors` | integer | inputs that failed, or whose label vector is not one 0..1 value per class |
//! | `threshold` | number | 0.5 |
//! | `accuracy` | number or null | fraction of correct image × class decisions, SageMaker's multi-label accuracy (what rectrain logs as validation accuracy); = 1 − `hamming_loss` |
//! | `exact_match_accuracy` | number or null | fraction of images whose whole predicted label set is right (subset accuracy) |
//! | `hamming_loss` | number or null | fraction of wrong image × class decisions |
//! | `micro` | object | `{"precision", "recall", "f1"}` of the true/false positive and negative counts summed over classes (null when undefined: no predicted, no true positives) |
//! | `macro` | object | `{"precision", "recall", "f1"}`: unweighted means of the per-class values over all classes, an undefined per-class value counting as 0 (scikit-learn's `average="macro"` default); null when there are no images |
//! | `per_class` | array | per class: `{"class", "label", "precision", "recall", "f1", "support", "predicted"}`; `support` = images where the class is true, `predicted` = images where it is predicted; precision is null when the class was never predicted, recall when it was never true, F1 when neither |

use std::io::{self, Write};

use serde::Serialize;

use resnet::metrics::{argmax, in_top_k};
use resnet::Head;

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
pub struct SingleLabelSummary {
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
pub struct SingleLabelEvaluator {
    k: usize,
    class_names: Option<Vec<String>>,
    confusion: Vec<Vec<u64>>,
    top_k_hits: u64,
    errors: u64,
}

impl SingleLabelEvaluator {
    /// An evaluator for `num_classes` classes and top-`k` accuracy.
    pub fn new(num_classes: usize, k: usize, class_names: Option<Vec<String>>) -> Self {
        SingleLabelEvaluator {
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
        // The predicted class and the top-k rule are training's (MXNet's), so that
        // this summary's accuracy equals the validation accuracy rectrain logs.
        let predicted = argmax(probs);
        self.confusion[t][predicted.min(n - 1)] += 1;
        if in_top_k(probs, t, self.k) {
            self.top_k_hits += 1;
        }
        Ok(())
    }

    /// Count an input that failed before it could be evaluated.
    pub fn add_error(&mut self) {
        self.errors += 1;
    }

    /// The summary of everything recorded so far.
    pub fn summary(&self) -> SingleLabelSummary {
        let n = self.confusion.len();
        let images: u64 = self.confusion.iter().flatten().sum();
        let correct: u64 = (0..n).map(|i| self.confusion[i][i]).sum();
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
        SingleLabelSummary {
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

/// The probability above which a class counts as predicted for a multi-label model
/// (a positive logit, the rule rectrain's multi-label accuracy uses).
pub const MULTI_LABEL_THRESHOLD: f32 = 0.5;

/// Precision, recall and F1 (null where undefined).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prf {
    /// True positives over predicted positives.
    pub precision: Option<f64>,
    /// True positives over true positives + false negatives.
    pub recall: Option<f64>,
    /// `2·TP / (2·TP + FP + FN)`, the harmonic mean of precision and recall.
    pub f1: Option<f64>,
}

impl Prf {
    fn from_counts(tp: u64, fp: u64, fn_: u64) -> Self {
        Prf {
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
        }
    }
}

/// One class's row of the multi-label summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiLabelClassStats {
    /// The class index.
    pub class: usize,
    /// Its name, when the model has class names.
    pub label: Option<String>,
    /// Of the images where this class is predicted, the fraction where it is true.
    pub precision: Option<f64>,
    /// Of the images where this class is true, the fraction where it is predicted.
    pub recall: Option<f64>,
    /// `2·TP / (2·TP + FP + FN)`.
    pub f1: Option<f64>,
    /// Images where this class is true.
    pub support: u64,
    /// Images where this class is predicted.
    pub predicted: u64,
}

/// The `--evaluate` summary line of a multi-label model (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiLabelSummary {
    /// Always `"summary"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Always true.
    pub multi_label: bool,
    /// Images evaluated.
    pub images: u64,
    /// Inputs that failed or had an unusable label vector.
    pub errors: u64,
    /// [`MULTI_LABEL_THRESHOLD`].
    pub threshold: f32,
    /// Fraction of correct image × class decisions (1 − Hamming loss).
    pub accuracy: Option<f64>,
    /// Fraction of images with every class right.
    pub exact_match_accuracy: Option<f64>,
    /// Fraction of wrong image × class decisions.
    pub hamming_loss: Option<f64>,
    /// Precision/recall/F1 over the counts summed over classes.
    pub micro: Prf,
    /// Unweighted means of the per-class values (undefined counts as 0).
    #[serde(rename = "macro")]
    pub macro_avg: Prf,
    /// Per-class precision, recall, F1, support and predicted count.
    pub per_class: Vec<MultiLabelClassStats>,
}

/// Accumulates multi-label predictions against multi-hot label vectors.
#[derive(Debug, Clone)]
pub struct MultiLabelEvaluator {
    class_names: Option<Vec<String>>,
    tp: Vec<u64>,
    fp: Vec<u64>,
    fn_: Vec<u64>,
    images: u64,
    exact: u64,
    wrong: u64,
    errors: u64,
}

impl MultiLabelEvaluator {
    /// An evaluator for `num_classes` classes.
    pub fn new(num_classes: usize, class_names: Option<Vec<String>>) -> Self {
        MultiLabelEvaluator {
            class_names,
            tp: vec![0; num_classes],
            fp: vec![0; num_classes],
            fn_: vec![0; num_classes],
            images: 0,
            exact: 0,
            wrong: 0,
            errors: 0,
        }
    }

    /// Record one prediction (`probs`: one probability per class) against its true
    /// multi-hot `labels`. `Err` (with a message) when the labels are missing or are
    /// not one value in `[0, 1]` per class; the image is then counted in `errors`.
    pub fn add(&mut self, labels: Option<&[f32]>, probs: &[f32]) -> Result<(), String> {
        let n = self.tp.len();
        let problem = match labels {
            None => Some("no true labels".to_string()),
            Some(l) if l.len() != n => Some(format!(
                "{} label value(s), but the model has {n} classes (a multi-label row needs \
                 one 0/1 value per class)",
                l.len()
            )),
            Some(l) => l.iter().position(|v| !(0.0..=1.0).contains(v)).map(|k| {
                format!(
                    "label {k} is {}, but multi-hot labels must be in [0, 1]",
                    l[k]
                )
            }),
        };
        if let Some(p) = problem {
            self.errors += 1;
            return Err(format!("{p}; left out of the summary"));
        }
        let labels = labels.unwrap_or_default();
        let mut all_right = true;
        for (c, (&y, &p)) in labels.iter().zip(probs).enumerate() {
            let truth = y > 0.5;
            let predicted = p > MULTI_LABEL_THRESHOLD;
            match (truth, predicted) {
                (true, true) => self.tp[c] += 1,
                (false, true) => self.fp[c] += 1,
                (true, false) => self.fn_[c] += 1,
                (false, false) => {}
            }
            if truth != predicted {
                all_right = false;
                self.wrong += 1;
            }
        }
        // A probability vector shorter than the class count (not produced by the
        // model) counts its missing classes as not predicted.
        for (c, &y) in labels.iter().enumerate().skip(probs.len().min(n)) {
            if y > 0.5 {
                self.fn_[c] += 1;
                self.wrong += 1;
                all_right = false;
            }
        }
        self.images += 1;
        self.exact += u64::from(all_right);
        Ok(())
    }

    /// Count an input that failed before it could be evaluated.
    pub fn add_error(&mut self) {
        self.errors += 1;
    }

    /// The summary of everything recorded so far.
    pub fn summary(&self) -> MultiLabelSummary {
        let n = self.tp.len();
        let per_class: Vec<MultiLabelClassStats> = (0..n)
            .map(|c| {
                let prf = Prf::from_counts(self.tp[c], self.fp[c], self.fn_[c]);
                MultiLabelClassStats {
                    class: c,
                    label: self.class_names.as_ref().and_then(|v| v.get(c).cloned()),
                    precision: prf.precision,
                    recall: prf.recall,
                    f1: prf.f1,
                    support: self.tp[c] + self.fn_[c],
                    predicted: self.tp[c] + self.fp[c],
                }
            })
            .collect();
        let sum = |v: &[u64]| v.iter().sum::<u64>();
        let micro = Prf::from_counts(sum(&self.tp), sum(&self.fp), sum(&self.fn_));
        let mean = |f: fn(&MultiLabelClassStats) -> Option<f64>| {
            (self.images > 0 && n > 0)
                .then(|| per_class.iter().map(|s| f(s).unwrap_or(0.0)).sum::<f64>() / n as f64)
        };
        let macro_avg = Prf {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
        };
        let decisions = self.images * n as u64;
        MultiLabelSummary {
            kind: "summary",
            multi_label: true,
            images: self.images,
            errors: self.errors,
            threshold: MULTI_LABEL_THRESHOLD,
            accuracy: ratio(decisions - self.wrong, decisions),
            exact_match_accuracy: ratio(self.exact, self.images),
            hamming_loss: ratio(self.wrong, decisions),
            micro,
            macro_avg,
            per_class,
        }
    }
}

/// The summary line of either kind of model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Summary {
    /// A single-label model's summary.
    SingleLabel(SingleLabelSummary),
    /// A multi-label model's summary.
    MultiLabel(MultiLabelSummary),
}

impl Summary {
    /// The single-label summary, if this is one.
    pub fn single(&self) -> Option<&SingleLabelSummary> {
        match self {
            Summary::SingleLabel(s) => Some(s),
            Summary::MultiLabel(_) => None,
        }
    }

    /// The multi-label summary, if this is one.
    pub fn multi_label(&self) -> Option<&MultiLabelSummary> {
        match self {
            Summary::MultiLabel(s) => Some(s),
            Summary::SingleLabel(_) => None,
        }
    }
}

/// The evaluator of either kind of model.
#[derive(Debug, Clone)]
pub enum Evaluator {
    /// Top class against a class index.
    SingleLabel(SingleLabelEvaluator),
    /// Thresholded probabilities against a multi-hot vector.
    MultiLabel(MultiLabelEvaluator),
}

impl Evaluator {
    /// The evaluator for a model with this head: top-`top_k` accuracy and per-class
    /// precision/recall for a softmax, thresholded per-class scores for sigmoids.
    pub fn new(
        head: Head,
        num_classes: usize,
        top_k: usize,
        class_names: Option<Vec<String>>,
    ) -> Self {
        match head {
            Head::Softmax => {
                Evaluator::SingleLabel(SingleLabelEvaluator::new(num_classes, top_k, class_names))
            }
            Head::Sigmoid => {
                Evaluator::MultiLabel(MultiLabelEvaluator::new(num_classes, class_names))
            }
        }
    }

    /// Record one prediction against the item's true labels (see [`SingleLabelEvaluator::add`]
    /// and [`MultiLabelEvaluator::add`]).
    pub fn add(&mut self, labels: Option<&[f32]>, probs: &[f32]) -> Result<(), String> {
        match self {
            Evaluator::SingleLabel(e) => {
                let t = labels
                    .and_then(|l| l.first().copied())
                    .and_then(crate::output::class_index);
                e.add(t, probs)
            }
            Evaluator::MultiLabel(e) => e.add(labels, probs),
        }
    }

    /// Count an input that failed before it could be evaluated.
    pub fn add_error(&mut self) {
        match self {
            Evaluator::SingleLabel(e) => e.add_error(),
            Evaluator::MultiLabel(e) => e.add_error(),
        }
    }

    /// The summary of everything recorded so far.
    pub fn summary(&self) -> Summary {
        match self {
            Evaluator::SingleLabel(e) => Summary::SingleLabel(e.summary()),
            Evaluator::MultiLabel(e) => Summary::MultiLabel(e.summary()),
        }
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.4}", v))
}

/// Print the summary as a readable table (for a terminal).
pub fn write_single_label_table(w: &mut dyn Write, s: &SingleLabelSummary) -> io::Result<()> {
    writeln!(
        w,
        "images: {}  errors: {}  accuracy: {}  top-{} accuracy: {}",
        s.images,
        s.errors,
        pct(s.accuracy),
        s.top_k,
        pct(s.top_k_accuracy)
    )?;
    let (names, width) = class_column(s.per_class.iter().map(|c| (c.class, c.label.as_deref())));
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

/// Print a multi-label summary as a readable table (for a terminal).
pub fn write_multi_label_table(w: &mut dyn Write, s: &MultiLabelSummary) -> io::Result<()> {
    writeln!(
        w,
        "images: {}  errors: {}  threshold: {}  accuracy: {}  exact match: {}  Hamming loss: {}",
        s.images,
        s.errors,
        s.threshold,
        pct(s.accuracy),
        pct(s.exact_match_accuracy),
        pct(s.hamming_loss)
    )?;
    let (names, width) = class_column(s.per_class.iter().map(|c| (c.class, c.label.as_deref())));
    writeln!(
        w,
        "{:<width$}  {:>9}  {:>9}  {:>9}  {:>7}  {:>9}",
        "class", "precision", "recall", "f1", "support", "predicted"
    )?;
    for (c, name) in s.per_class.iter().zip(&names) {
        writeln!(
            w,
            "{:<width$}  {:>9}  {:>9}  {:>9}  {:>7}  {:>9}",
            name,
            pct(c.precision),
            pct(c.recall),
            pct(c.f1),
            c.support,
            c.predicted
        )?;
    }
    for (name, a) in [("micro avg", &s.micro), ("macro avg", &s.macro_avg)] {
        writeln!(
            w,
            "{:<width$}  {:>9}  {:>9}  {:>9}",
            name,
            pct(a.precision),
            pct(a.recall),
            pct(a.f1)
        )?;
    }
    Ok(())
}

/// Print either kind of summary as a table.
pub fn write_summary_table(w: &mut dyn Write, s: &Summary) -> io::Result<()> {
    match s {
        Summary::SingleLabel(s) => write_single_label_table(w, s),
        Summary::MultiLabel(s) => write_multi_label_table(w, s),
    }
}

/// The first column of the terminal tables: "index name" per class, and its width
/// (at least that of the heading "class").
fn class_column<'a>(
    classes: impl Iterator<Item = (usize, Option<&'a str>)>,
) -> (Vec<String>, usize) {
    let names: Vec<String> = classes
        .map(|(class, label)| match label {
            Some(l) => format!("{class} {l}"),
            None => class.to_string(),
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(5).max(5);
    (names, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_confusion_gives_exact_numbers() {
        let mut e = SingleLabelEvaluator::new(3, 2, Some(vec!["a".into(), "b".into(), "c".into()]));
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

    /// Ties are counted as rectrain counts them (MXNet's rule, on probabilities): the
    /// evaluator and training's accumulator give the same accuracy and top-k accuracy,
    /// including ties that only appear once very confident logits are turned into
    /// probabilities (they round to exactly 0).
    #[test]
    fn ties_count_as_in_training() {
        let rows: [(u64, [f32; 4]); 5] = [
            (3, [1.0, 1.0, 1.0, 1.0]), // all tied: top-1 hit by MXNet's rule, not argmax
            (1, [2.0, 2.0, 0.5, 0.5]), // tied best: argmax says 0
            (0, [2.0, 2.0, 0.5, 0.5]),
            (2, [0.1, 3.0, 1.0, 1.0]),         // tied second: within top 2
            (3, [0.0, 200.0, -200.0, -300.0]), // 0, 2 and 3 all have probability 0
        ];
        let mut e = SingleLabelEvaluator::new(4, 2, None);
        let mut acc = resnet::metrics::Accumulator::default();
        for (t, logits) in &rows {
            let probs = &Head::Softmax.probabilities(logits, 4)[0];
            e.add(Some(*t), probs).unwrap();
            acc.add_batch(logits, 4, &[vec![*t as f32]], 0.0, Head::Softmax, Some(2));
        }
        let s = e.summary();
        assert_eq!(s.accuracy, Some(acc.accuracy()));
        assert_eq!(s.top_k_accuracy, Some(acc.top_k_accuracy()));
        assert_eq!(s.accuracy, Some(1.0 / 5.0));
        assert_eq!(s.top_k_accuracy, Some(1.0));
        // k = 1: the all-tied row and both tied-best rows count, as MXNet's top-1.
        let mut e1 = SingleLabelEvaluator::new(4, 1, None);
        for (t, logits) in &rows[..3] {
            let probs = &Head::Softmax.probabilities(logits, 4)[0];
            e1.add(Some(*t), probs).unwrap();
        }
        assert_eq!(e1.summary().top_k_accuracy, Some(1.0));
        assert_eq!(e1.summary().accuracy, Some(1.0 / 3.0));
    }

    #[test]
    fn empty_summary_has_null_ratios() {
        let s = SingleLabelEvaluator::new(2, 1, None).summary();
        assert_eq!((s.images, s.accuracy, s.top_k_accuracy), (0, None, None));
        assert_eq!(s.per_class[0].precision, None);
    }

    #[test]
    fn table_lists_every_class() {
        let mut e = SingleLabelEvaluator::new(2, 1, None);
        e.add(Some(1), &[0.2, 0.8]).unwrap();
        let mut buf = Vec::new();
        write_single_label_table(&mut buf, &e.summary()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("accuracy: 1.0000"), "{text}");
        assert!(text.contains("confusion matrix"), "{text}");
        assert_eq!(text.lines().count(), 1 + 1 + 2 + 1 + 1 + 2);
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    /// Four images, three classes, computed by hand (threshold: probability > 0.5):
    ///
    /// | image | true    | probabilities     | predicted | wrong decisions |
    /// |-------|---------|-------------------|-----------|-----------------|
    /// | 1     | 1 0 1   | 0.9 0.2 0.4       | 1 0 0     | class 2         |
    /// | 2     | 0 1 0   | 0.6 0.7 0.1       | 1 1 0     | class 0         |
    /// | 3     | 1 1 0   | 0.8 0.55 0.3      | 1 1 0     | -               |
    /// | 4     | 0 0 0   | 0.1 0.2 0.5       | 0 0 0     | - (0.5 is not > 0.5) |
    ///
    /// class 0: TP 2, FP 1, FN 0 → P 2/3, R 1, F1 4/5; class 1: TP 2 → 1, 1, 1;
    /// class 2: TP 0, FP 0, FN 1 → P undefined, R 0, F1 0.
    /// micro: TP 4, FP 1, FN 1 → 4/5, 4/5, 4/5. macro: P (2/3 + 1 + 0)/3 = 5/9,
    /// R 2/3, F1 (4/5 + 1 + 0)/3 = 3/5. Exact match 2/4; Hamming loss 2/12.
    #[test]
    fn multi_label_known_case_gives_hand_computed_numbers() {
        let mut e = MultiLabelEvaluator::new(3, Some(vec!["a".into(), "b".into(), "c".into()]));
        e.add(Some(&[1.0, 0.0, 1.0]), &[0.9, 0.2, 0.4]).unwrap();
        e.add(Some(&[0.0, 1.0, 0.0]), &[0.6, 0.7, 0.1]).unwrap();
        e.add(Some(&[1.0, 1.0, 0.0]), &[0.8, 0.55, 0.3]).unwrap();
        e.add(Some(&[0.0, 0.0, 0.0]), &[0.1, 0.2, 0.5]).unwrap();
        // Unusable label vectors are errors, not evaluated.
        let err = e.add(Some(&[1.0, 0.0]), &[0.9, 0.2, 0.4]).unwrap_err();
        assert!(
            err.contains("2 label value(s), but the model has 3 classes"),
            "{err}"
        );
        let err = e.add(Some(&[1.0, 2.0, 0.0]), &[0.9, 0.2, 0.4]).unwrap_err();
        assert!(err.contains("label 1 is 2"), "{err}");
        assert!(e.add(None, &[0.9, 0.2, 0.4]).is_err());
        e.add_error();
        let s = e.summary();
        assert_eq!((s.images, s.errors, s.threshold), (4, 4, 0.5));
        assert!(close(s.exact_match_accuracy, 0.5));
        assert!(close(s.hamming_loss, 2.0 / 12.0));
        assert!(close(s.accuracy, 10.0 / 12.0));
        assert!(close(s.micro.precision, 0.8));
        assert!(close(s.micro.recall, 0.8));
        assert!(close(s.micro.f1, 0.8));
        assert!(close(s.macro_avg.precision, 5.0 / 9.0));
        assert!(close(s.macro_avg.recall, 2.0 / 3.0));
        assert!(close(s.macro_avg.f1, 0.6));
        let c: Vec<_> = s
            .per_class
            .iter()
            .map(|c| (c.precision, c.recall, c.f1, c.support, c.predicted))
            .collect();
        assert!(close(c[0].0, 2.0 / 3.0) && close(c[0].1, 1.0) && close(c[0].2, 0.8));
        assert_eq!((c[0].3, c[0].4), (2, 3));
        assert_eq!(c[1], (Some(1.0), Some(1.0), Some(1.0), 2, 2));
        assert_eq!(c[2], (None, Some(0.0), Some(0.0), 1, 0));
        assert_eq!(s.per_class[2].label.as_deref(), Some("c"));

        let json = serde_json::to_value(Summary::MultiLabel(s.clone())).unwrap();
        assert_eq!(json["type"], "summary");
        assert_eq!(json["multi_label"], true);
        assert_eq!(json["macro"]["recall"], 2.0 / 3.0);
        assert_eq!(json["micro"]["f1"], 0.8);
        assert_eq!(json["per_class"][2]["precision"], serde_json::Value::Null);
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "type",
            "multi_label",
            "images",
            "errors",
            "threshold",
            "accuracy",
            "exact_match_accuracy",
            "hamming_loss",
            "micro",
            "macro",
            "per_class",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);

        let mut buf = Vec::new();
        write_summary_table(&mut buf, &Summary::MultiLabel(s)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("exact match: 0.5000"), "{text}");
        assert!(text.contains("macro avg"), "{text}");
        assert_eq!(text.lines().count(), 1 + 1 + 3 + 2);
    }

    #[test]
    fn multi_label_empty_and_degenerate_cases() {
        let s = MultiLabelEvaluator::new(2, None).summary();
        assert_eq!(
            (s.images, s.accuracy, s.exact_match_accuracy),
            (0, None, None)
        );
        assert_eq!(s.hamming_loss, None);
        assert_eq!(s.macro_avg.f1, None);
        assert_eq!(s.micro.precision, None);
        // Never true, never predicted: every per-class value is undefined, and counts
        // as 0 in the macro average; micro stays undefined too.
        let mut e = MultiLabelEvaluator::new(2, None);
        e.add(Some(&[0.0, 0.0]), &[0.1, 0.4]).unwrap();
        let s = e.summary();
        assert_eq!(s.exact_match_accuracy, Some(1.0));
        assert_eq!(s.hamming_loss, Some(0.0));
        assert_eq!(s.per_class[0].f1, None);
        assert_eq!(s.micro.f1, None);
        assert_eq!(s.macro_avg.f1, Some(0.0));
    }

    #[test]
    fn any_evaluator_reads_the_first_label_for_single_label_models() {
        let mut e = Evaluator::SingleLabel(SingleLabelEvaluator::new(2, 1, None));
        e.add(Some(&[1.0]), &[0.2, 0.8]).unwrap();
        assert!(e.add(Some(&[0.5]), &[0.2, 0.8]).is_err());
        let s = e.summary();
        assert!(s.multi_label().is_none());
        let s = s.single().unwrap();
        assert_eq!((s.images, s.errors, s.accuracy), (1, 1, Some(1.0)));
    }
}
