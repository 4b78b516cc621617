//! The network's head: how its logits become class probabilities, and so how it is
//! trained and scored.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the last layer's logits mean: one class per image (softmax) or independent
/// classes (SageMaker's `multi_label=1`: a sigmoid per class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Head {
    /// Single-label: a softmax over the classes, trained with softmax cross-entropy.
    #[default]
    Softmax,
    /// Multi-label: a sigmoid per class, trained with binary cross-entropy.
    Sigmoid,
}

impl Head {
    /// The head of SageMaker's `multi_label` hyperparameter (and of the artifact's
    /// `multi_label` field).
    pub fn from_multi_label(multi_label: bool) -> Self {
        if multi_label {
            Head::Sigmoid
        } else {
            Head::Softmax
        }
    }

    /// Whether this is the multi-label head (labels are multi-hot vectors).
    pub fn is_multi_label(self) -> bool {
        self == Head::Sigmoid
    }

    /// Row-wise softmax, or per-element sigmoid, of `[n, classes]` logits, computed in
    /// f64 (so that half-precision logits keep their small probabilities).
    pub fn probabilities(self, logits: &[f32], classes: usize) -> Vec<Vec<f32>> {
        logits
            .chunks(classes.max(1))
            .map(|row| match self {
                Head::Sigmoid => row
                    .iter()
                    .map(|&z| (1.0 / (1.0 + (-f64::from(z)).exp())) as f32)
                    .collect(),
                Head::Softmax => {
                    let max = row
                        .iter()
                        .fold(f64::NEG_INFINITY, |m, &z| m.max(f64::from(z)));
                    let exps: Vec<f64> = row.iter().map(|&z| (f64::from(z) - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    exps.iter().map(|e| (e / sum) as f32).collect()
                }
            })
            .collect()
    }
}

/// Written as SageMaker's boolean `multi_label` (the artifact's `config.json` field).
impl Serialize for Head {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(self.is_multi_label())
    }
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bool::deserialize(d).map(Head::from_multi_label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_sum_to_one_and_sigmoids_are_independent() {
        let p = Head::Softmax.probabilities(&[0.0, 0.0, 1000.0, 0.0, 0.0, 0.0], 3);
        assert_eq!(p[0], [0.0, 0.0, 1.0], "large logits do not overflow");
        assert!(p[1].iter().all(|&x| (x - 1.0 / 3.0).abs() < 1e-7));
        let s = Head::Sigmoid.probabilities(&[0.0, 2.0, 1000.0, -1000.0], 2);
        assert_eq!(s[0][0], 0.5);
        assert!((s[0][1] - 0.880_797).abs() < 1e-6);
        assert_eq!(s[1], [1.0, 0.0]);
    }

    #[test]
    fn serialised_as_the_multi_label_flag() {
        assert_eq!(serde_json::to_string(&Head::Sigmoid).unwrap(), "true");
        assert_eq!(
            serde_json::from_str::<Head>("false").unwrap(),
            Head::Softmax
        );
        assert!(serde_json::from_str::<Head>("\"sigmoid\"").is_err());
    }
}
