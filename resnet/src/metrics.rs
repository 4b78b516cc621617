//! Accuracy, loss and per-epoch records, the best-model and early-stopping rules,
//! and the top-k rule (MXNet's). SageMaker's log lines are
//! `rectrain::sagemaker_log`'s.
//!
//! Accuracy follows MXNet's metrics, on the network's probabilities (softmax, or a
//! sigmoid per class for multi-label models): single-label accuracy is the fraction of
//! images whose arg-max class equals the label (the first maximum wins a tie), top-k
//! counts the label when fewer than k classes are strictly more probable, and
//! multi-label accuracy is the average over classes of the fraction of images whose
//! thresholded probability (> 0.5) matches the label. `recpredict --evaluate` uses the
//! same functions, so its accuracy on a validation set is the one training logs.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::Head;

/// One epoch's results: the JSON object written on stdout and to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochMetrics {
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's images.
    pub train_loss: f64,
    /// Training accuracy (see the module documentation).
    pub train_accuracy: f64,
    /// Training top-k accuracy, when `top_k` is set.
    pub train_top_k_accuracy: Option<f64>,
    /// Mean validation loss.
    pub validation_loss: f64,
    /// Validation accuracy.
    pub validation_accuracy: f64,
    /// Validation top-k accuracy, when `top_k` is set.
    pub validation_top_k_accuracy: Option<f64>,
    /// Learning rate used during the epoch.
    pub learning_rate: f64,
    /// Training throughput.
    pub images_per_second: f64,
    /// Wall time of the training part of the epoch.
    pub seconds: f64,
}

/// Running sums of loss and correct predictions over an epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accumulator {
    /// Sum over images of the per-image loss.
    pub loss_sum: f64,
    /// Images seen.
    pub samples: usize,
    /// Sum over images of the per-image accuracy (0/1, or a fraction for multi-label).
    pub correct: f64,
    /// Images whose label is within the top k.
    pub top_k_correct: f64,
}

impl Accumulator {
    /// Add one batch: `logits` is `n × classes` row-major, `labels[i]` the label of
    /// image `i` (one class index, or a multi-hot vector for [`Head::Sigmoid`]),
    /// `mean_loss` the batch's mean loss.
    ///
    /// The metrics are computed on the probabilities, as MXNet's metrics read the
    /// `SoftmaxOutput` and as `recpredict --evaluate` reads its output: the same
    /// [`Head::probabilities`] turns the logits into probabilities, so a tie that
    /// rounding creates between probabilities (very confident outputs are exactly 0
    /// or 1) counts the same in both tools.
    pub fn add_batch(
        &mut self,
        logits: &[f32],
        classes: usize,
        labels: &[Vec<f32>],
        mean_loss: f64,
        head: Head,
        top_k: Option<usize>,
    ) {
        debug_assert_eq!(logits.len(), labels.len() * classes);
        let probabilities = head.probabilities(logits, classes);
        self.add_probabilities(&probabilities, labels, mean_loss, head, top_k);
    }

    /// Add another accumulator's sums (e.g. a batch's, summed over the ranks of a
    /// multi-process run).
    pub fn merge(&mut self, other: &Accumulator) {
        self.loss_sum += other.loss_sum;
        self.samples += other.samples;
        self.correct += other.correct;
        self.top_k_correct += other.top_k_correct;
    }

    /// [`add_batch`](Self::add_batch) for probabilities already computed (one row per
    /// image), so that several accumulators of one batch share one softmax.
    pub fn add_probabilities(
        &mut self,
        probabilities: &[Vec<f32>],
        labels: &[Vec<f32>],
        mean_loss: f64,
        head: Head,
        top_k: Option<usize>,
    ) {
        let n = labels.len();
        self.loss_sum += mean_loss * n as f64;
        self.samples += n;
        for (row, label) in probabilities.iter().zip(labels) {
            if head.is_multi_label() {
                self.correct += multi_label_accuracy(row, label);
            } else {
                let target = label.first().copied().unwrap_or(-1.0) as usize;
                if argmax(row) == target {
                    self.correct += 1.0;
                }
                if let Some(k) = top_k {
                    if in_top_k(row, target, k) {
                        self.top_k_correct += 1.0;
                    }
                }
            }
        }
    }

    /// Mean loss per image (0 when empty).
    pub fn loss(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.loss_sum / self.samples as f64
        }
    }

    /// Accuracy over the images seen (0 when empty).
    pub fn accuracy(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.correct / self.samples as f64
        }
    }

    /// Top-k accuracy over the images seen (0 when empty).
    pub fn top_k_accuracy(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.top_k_correct / self.samples as f64
        }
    }
}

/// Index of the largest value; the first one wins a tie, NaN never wins (0 when every
/// value is NaN or the row is empty). The predicted class of both tools: `rectrain`'s
/// accuracy and `recpredict`'s `class` and `--evaluate` accuracy.
pub fn argmax(row: &[f32]) -> usize {
    let mut best: Option<usize> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|b| v > row[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}

/// MXNet's top-k rule, used by both tools' top-k accuracy: the target counts as within
/// the top k when fewer than `k` scores are strictly greater than its own, so classes
/// tied with it do not push it out. A NaN target score, or a target that is not a
/// class, never counts.
pub fn in_top_k(row: &[f32], target: usize, k: usize) -> bool {
    let Some(&t) = row.get(target) else {
        return false;
    };
    if t.is_nan() {
        return false;
    }
    let greater = row.iter().filter(|&&v| v > t).count();
    greater < k
}

/// The classes of `row` ordered by score, highest first, cut to `k`: the `top_k` list
/// `recpredict` prints. Ties keep the lower index first and NaN comes last, so the
/// first class is [`argmax`]'s.
pub fn ranked(row: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (row[a], row[b]);
        match (pa.is_nan(), pb.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => pb.total_cmp(&pa).then(a.cmp(&b)),
        }
    });
    order.truncate(k);
    order
}

/// Fraction of classes whose thresholded probability (> 0.5) equals the multi-hot label.
pub fn multi_label_accuracy(row: &[f32], label: &[f32]) -> f64 {
    if row.is_empty() {
        return 0.0;
    }
    let hits = row
        .iter()
        .zip(label)
        .filter(|(&p, &y)| (p > 0.5) == (y > 0.5))
        .count();
    hits as f64 / row.len() as f64
}

/// SageMaker's rule for the best model: a strictly greater validation accuracy
/// replaces it, a tie does not. The first epoch always becomes the best.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BestTracker {
    /// `(epoch, accuracy)` of the best epoch so far.
    pub best: Option<(usize, f64)>,
}

impl BestTracker {
    /// Record an epoch; true when it becomes the new best.
    pub fn update(&mut self, epoch: usize, accuracy: f64) -> bool {
        let better = match self.best {
            None => true,
            Some((_, best)) => accuracy > best,
        };
        if better {
            self.best = Some((epoch, accuracy));
        }
        better
    }
}

/// SageMaker's early stopping: after at least `min_epochs` epochs, stop when
/// `patience` epochs in a row brought no improvement. An epoch improves when its
/// validation accuracy beats the best so far and the relative gain
/// `(acc - best) / best` is at least `tolerance` (any gain over a best of 0 counts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs that must run before stopping is considered.
    pub min_epochs: usize,
    /// Epochs without improvement that stop the run.
    pub patience: usize,
    /// Relative gain below which an epoch is not an improvement.
    pub tolerance: f64,
    /// Best accuracy so far.
    pub best: Option<f64>,
    /// Epochs in a row without improvement.
    pub stale_epochs: usize,
}

impl EarlyStopping {
    /// A fresh tracker.
    pub fn new(min_epochs: usize, patience: usize, tolerance: f64) -> Self {
        EarlyStopping {
            min_epochs,
            patience,
            tolerance,
            best: None,
            stale_epochs: 0,
        }
    }

    /// Record epoch `epoch`'s validation accuracy; true when training should stop now.
    pub fn should_stop(&mut self, epoch: usize, accuracy: f64) -> bool {
        let improved = match self.best {
            None => true,
            Some(best) if best <= 0.0 => accuracy > best,
            Some(best) => accuracy > best && (accuracy - best) / best >= self.tolerance,
        };
        if improved {
            self.stale_epochs = 0;
        } else {
            self.stale_epochs += 1;
        }
        if self.best.is_none_or(|b| accuracy > b) {
            self.best = Some(accuracy);
        }
        epoch + 1 >= self.min_epochs && self.stale_epochs >= self.patience
    }
}

/// One JSON line (no trailing newline) for an epoch.
pub fn json_line(m: &EpochMetrics) -> String {
    // Serialising plain numbers and options cannot fail; NaN becomes null.
    serde_json::to_string(m).unwrap_or_default()
}

/// The `metrics.jsonl` text for a whole history.
pub fn jsonl(history: &[EpochMetrics]) -> String {
    let mut out = String::new();
    for m in history {
        let _ = writeln!(out, "{}", json_line(m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ranked_and_top_k_agree() {
        let row = [0.2, 0.4, 0.4, f32::NAN, 0.0];
        assert_eq!(ranked(&row, 5), vec![1, 2, 0, 4, 3]);
        assert_eq!(ranked(&row, 1), vec![argmax(&row)]);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0, 2.0]), 2);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        // Ties: class 2 is tied with the best, so it is within the top 1 by MXNet's rule
        // even though the ranked list puts class 1 first.
        assert!(in_top_k(&row, 2, 1));
        assert!(in_top_k(&row, 1, 1));
        assert!(!in_top_k(&row, 0, 2));
        assert!(in_top_k(&row, 0, 3));
        assert!(!in_top_k(&row, 3, 5), "a NaN score never counts");
        assert!(!in_top_k(&row, 9, 5), "not a class");
    }

    #[test]
    fn accuracy_and_top_k() {
        let logits = [
            0.1, 0.9, 0.0, // argmax 1
            0.5, 0.2, 0.3, // argmax 0
            0.2, 0.2, 0.1, // tie: first wins → 0
            0.0, 0.1, 0.2, // argmax 2
        ];
        let labels = vec![vec![1.0], vec![2.0], vec![1.0], vec![0.0]];
        let mut acc = Accumulator::default();
        acc.add_batch(&logits, 3, &labels, 0.5, Head::Softmax, Some(2));
        assert_eq!(acc.samples, 4);
        assert_eq!(acc.accuracy(), 0.25);
        // top-2: row0 yes, row1 (0.3 second) yes, row2 (tie at top) yes, row3 (lowest) no.
        assert_eq!(acc.top_k_accuracy(), 0.75);
        assert_eq!(acc.loss(), 0.5);
        acc.add_batch(
            &[1.0, 0.0, 0.0],
            3,
            &[vec![0.0]],
            1.0,
            Head::Softmax,
            Some(2),
        );
        assert_eq!(acc.accuracy(), 0.4);
        assert_eq!(acc.loss(), 0.6);
    }

    #[test]
    fn multi_label_is_average_over_classes() {
        let logits = [2.0, -1.0, 0.5, -3.0];
        let labels = vec![vec![1.0, 0.0], vec![0.0, 0.0]];
        let mut acc = Accumulator::default();
        acc.add_batch(&logits, 2, &labels, 0.1, Head::Sigmoid, None);
        // image 0: both right (1.0); image 1: class 0 wrong, class 1 right (0.5).
        assert_eq!(acc.accuracy(), 0.75);
    }

    #[test]
    fn best_needs_strictly_greater() {
        let mut b = BestTracker::default();
        assert!(b.update(0, 0.5));
        assert!(!b.update(1, 0.5));
        assert!(b.update(2, 0.6));
        assert!(!b.update(3, 0.1));
        assert_eq!(b.best, Some((2, 0.6)));
    }

    #[test]
    fn early_stopping_waits_for_min_epochs_and_patience() {
        let mut es = EarlyStopping::new(3, 2, 0.0);
        let accs = [0.5, 0.5, 0.5, 0.5, 0.5];
        let stops: Vec<bool> = accs
            .iter()
            .enumerate()
            .map(|(e, &a)| es.should_stop(e, a))
            .collect();
        // stale after epochs 1 and 2 → patience reached at epoch 2 (3 epochs run).
        assert_eq!(stops, vec![false, false, true, true, true]);
    }

    #[test]
    fn early_stopping_tolerance_is_relative() {
        let mut es = EarlyStopping::new(1, 1, 0.1);
        assert!(!es.should_stop(0, 0.5));
        // 0.54 is +8% relative: below the 10% tolerance → no improvement → stop.
        assert!(es.should_stop(1, 0.54));
        let mut es = EarlyStopping::new(1, 1, 0.1);
        es.should_stop(0, 0.5);
        assert!(!es.should_stop(1, 0.56));
    }
}
