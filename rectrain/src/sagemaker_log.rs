//! Every line in SageMaker's training-log format: the log prefix, the configuration
//! and parameter blocks, MXNet `fit`'s per-epoch lines and the Speedometer.

use std::fmt::Write as _;
use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::hparams::{self, Hyperparameters};
use resnet::backend::Precision;
use resnet::metrics::{Accumulator, EpochMetrics};

/// SageMaker's defaults file (`default-input.json`), as its training log prints it.
pub const SAGEMAKER_DEFAULT_INPUT: &[(&str, &str)] = &[
    ("beta_1", "0.9"),
    ("gamma", "0.9"),
    ("beta_2", "0.999"),
    ("optimizer", "sgd"),
    ("use_pretrained_model", "0"),
    ("eps", "1e-08"),
    ("epochs", "30"),
    ("lr_scheduler_factor", "0.1"),
    ("num_layers", "152"),
    ("image_shape", "3,224,224"),
    ("precision_dtype", "float32"),
    ("mini_batch_size", "32"),
    ("weight_decay", "0.0001"),
    ("learning_rate", "0.1"),
    ("momentum", "0"),
];

/// `{u'key': u'value', ...}`: a dict of strings as Python 2 prints it, the form of
/// SageMaker's configuration log lines.
pub fn python2_dict<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let quote = |s: &str| format!("u'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let items: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// SageMaker's configuration lines (without the log prefix): the defaults, then the
/// final configuration, which holds every resolved hyperparameter, `num_classes` and
/// `num_training_samples` included (tools scrape `num_training_samples` from it).
pub fn configuration_lines(h: &Hyperparameters) -> Vec<String> {
    let defaults = python2_dict(SAGEMAKER_DEFAULT_INPUT.iter().copied());
    let raw = h.to_raw();
    let last = python2_dict(raw.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vec![
        format!(
            "Reading default configuration from rectrain's built-in default-input.json: {defaults}"
        ),
        format!("Final configuration: {last}"),
    ]
}

/// SageMaker's `---- Parameters ----` block (without the log prefix).
pub fn parameter_lines(h: &Hyperparameters) -> Vec<String> {
    let mut v = vec!["---- Parameters ----".to_string()];
    v.push(format!("num_layers: {}", h.num_layers));
    let dtype = match h.precision_dtype {
        Precision::F32 => "float32",
        Precision::F16 => "float16",
        Precision::Bf16 => "bfloat16",
    };
    v.push(format!("data type: <type 'numpy.{dtype}'>"));
    v.push(format!("epochs: {}", h.epochs));
    if let Some(r) = h.resize {
        v.push(format!("image resize size: {r}"));
    }
    v.push(format!("optimizer: {}", h.optimizer));
    v.push(format!("momentum: {}", h.momentum));
    v.push(format!("weight_decay: {}", h.weight_decay));
    v.push(format!("learning_rate: {}", h.learning_rate));
    if let Some(n) = h.num_training_samples {
        v.push(format!("num_training_samples: {n}"));
    }
    v.push(format!("mini_batch_size: {}", h.mini_batch_size));
    let [c, hh, w] = h.image_shape;
    v.push(format!("image_shape: {c},{hh},{w}"));
    if let Some(n) = h.num_classes {
        v.push(format!("num_classes: {n}"));
    }
    v.push(format!(
        "augmentation_type: {}",
        hparams::augmentation_name(h.augmentation_type).unwrap_or("None")
    ));
    v.push(format!(
        "kv_store: {}",
        h.kv_store.as_deref().unwrap_or("device")
    ));
    if let Some(k) = h.top_k {
        v.push(format!("top_k: {k}"));
    }
    match h.checkpoint_frequency {
        None => v.push("checkpoint_frequency not set, will store the best model".into()),
        Some(f) => v.push(format!("checkpoint_frequency: {f}")),
    }
    v.push("--------------------".into());
    v
}

/// Write one SageMaker-style log line; errors writing the log are ignored.
pub fn info(log: &mut dyn Write, msg: &str) {
    // One write per line: the lines of several processes that share a stderr (the ranks
    // of an MPI job) then never cut into each other.
    let mut line = log_line(msg);
    line.push('\n');
    let _ = log.write_all(line.as_bytes());
}

/// Prefix a message the way SageMaker's algorithm logs do:
/// `[MM/DD/YYYY HH:MM:SS INFO <id>] <message>` (UTC; the id is the process id).
pub fn log_line(message: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "[{} INFO {}] {message}",
        format_timestamp(secs),
        std::process::id()
    )
}

/// `MM/DD/YYYY HH:MM:SS` for a Unix time in seconds (UTC).
pub fn format_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{month:02}/{day:02}/{year:04} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The per-epoch lines of MXNet's `fit` (without the log prefix), in SageMaker's order:
/// train accuracy, train top-k (when set), time cost, validation accuracy.
pub fn epoch_log_lines(m: &EpochMetrics, top_k: Option<usize>) -> Vec<String> {
    let e = m.epoch;
    let mut lines = vec![format!("Epoch[{e}] Train-accuracy={:.6}", m.train_accuracy)];
    if let (Some(k), Some(acc)) = (top_k, m.train_top_k_accuracy) {
        lines.push(format!("Epoch[{e}] Train-top_k_accuracy_{k}={acc:.6}"));
    }
    lines.push(format!("Epoch[{e}] Time cost={:.3}", m.seconds));
    lines.push(format!(
        "Epoch[{e}] Validation-accuracy={:.6}",
        m.validation_accuracy
    ));
    lines
}

/// MXNet's `Speedometer` callback as SageMaker's training log shows it: every
/// `frequent` batches, `Epoch[e] Batch [b]\tSpeed: 191.406 samples/sec\taccuracy=0.976190`
/// (the speed over the last `frequent` batches; the accuracy over the batches since the
/// previous line, MXNet's `auto_reset`, so the first line of an epoch covers batches
/// 0..=b). Feed every batch to [`window`](Self::window) before calling
/// [`after_batch`](Self::after_batch).
#[derive(Debug, Clone)]
pub struct Speedometer {
    batch_size: usize,
    frequent: usize,
    tic: Option<Instant>,
    /// The batches since the last line.
    pub window: Accumulator,
}

impl Speedometer {
    /// SageMaker's frequency: one line every 20 batches.
    pub const FREQUENT: usize = 20;

    /// A speedometer for mini-batches of `batch_size` images, a line every `frequent`.
    pub fn new(batch_size: usize, frequent: usize) -> Self {
        Self {
            batch_size,
            frequent: frequent.max(1),
            tic: None,
            window: Accumulator::default(),
        }
    }

    /// Forget the previous epoch (its clock and its window).
    pub fn start_epoch(&mut self) {
        self.tic = None;
        self.window = Accumulator::default();
    }

    /// The line due after 0-based batch `nbatch` of `epoch`, if one is (at `now`).
    pub fn after_batch(
        &mut self,
        epoch: usize,
        nbatch: usize,
        top_k: Option<usize>,
        now: Instant,
    ) -> Option<String> {
        // The first batch seen starts the clock, as MXNet's first call does.
        let tic = self.tic.replace(now)?;
        if !nbatch.is_multiple_of(self.frequent) {
            self.tic = Some(tic);
            return None;
        }
        let seconds = now.duration_since(tic).as_secs_f64();
        let speed = if seconds > 0.0 {
            (self.frequent * self.batch_size) as f64 / seconds
        } else {
            0.0
        };
        let mut line = format!(
            "Epoch[{epoch}] Batch [{nbatch}]\tSpeed: {speed:.3} samples/sec\taccuracy={:.6}",
            self.window.accuracy()
        );
        if let Some(k) = top_k {
            let _ = write!(
                line,
                "\ttop_k_accuracy_{k}={:.6}",
                self.window.top_k_accuracy()
            );
        }
        self.window = Accumulator::default();
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resnet::metrics::json_line;

    #[test]
    fn parameter_block_matches_sagemaker() {
        let mut h = Hyperparameters {
            num_layers: 18,
            epochs: 2,
            num_classes: Some(2),
            num_training_samples: Some(64),
            ..Hyperparameters::default()
        };
        let lines = parameter_lines(&h);
        assert_eq!(lines[0], "---- Parameters ----");
        assert_eq!(lines[1], "num_layers: 18");
        assert_eq!(lines[2], "data type: <type 'numpy.float32'>");
        assert!(lines.contains(&"kv_store: device".to_string()));
        assert!(
            lines.contains(&"checkpoint_frequency not set, will store the best model".to_string())
        );
        assert!(!lines.iter().any(|l| l.starts_with("image resize size")));
        h.resize = Some(256);
        h.top_k = Some(3);
        let lines = parameter_lines(&h);
        assert!(lines.contains(&"image resize size: 256".to_string()));
        assert!(lines.contains(&"top_k: 3".to_string()));
    }

    /// The configuration lines are Python 2 dict reprs of strings; the final one holds
    /// the resolved values, num_training_samples included (notebooks scrape it).
    #[test]
    fn configuration_lines_like_sagemakers() {
        let h = Hyperparameters {
            num_layers: 18,
            num_classes: Some(2),
            num_training_samples: Some(64),
            ..Hyperparameters::default()
        };
        let lines = configuration_lines(&h);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with(
                "Reading default configuration from rectrain's built-in default-input.json: \
                 {u'beta_1': u'0.9', u'gamma': u'0.9', u'beta_2': u'0.999', u'optimizer': u'sgd', "
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("u'momentum': u'0'}"), "{}", lines[0]);
        let last = &lines[1];
        assert!(last.starts_with("Final configuration: {u'"), "{last}");
        for item in [
            "u'num_training_samples': u'64'",
            "u'num_classes': u'2'",
            "u'num_layers': u'18'",
            "u'image_shape': u'3,224,224'",
            "u'early_stopping': u'False'",
        ] {
            assert!(last.contains(item), "{item} not in {last}");
        }
        assert_eq!(python2_dict([("a'b", "c\\d")]), "{u'a\\'b': u'c\\\\d'}");
    }

    /// Lines at batches 20 and 40 only; the first covers batches 0..=20 (21 batches,
    /// as in SageMaker's log where 656 of 672 images gave 0.976190), the speed is
    /// 20 batches over the time since the previous line.
    #[test]
    fn speedometer_lines_like_sagemakers() {
        use std::time::Duration;
        let mut s = Speedometer::new(32, Speedometer::FREQUENT);
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for b in 0..45 {
            // Logits of 2 classes for 32 images, all labelled 0; one wrong in batch 3.
            let logits: Vec<f32> = (0..32)
                .flat_map(|i| {
                    if b == 3 && i == 0 {
                        [0.0, 1.0]
                    } else {
                        [1.0, 0.0]
                    }
                })
                .collect();
            s.window.add_batch(
                &logits,
                2,
                &vec![vec![0.0]; 32],
                0.5,
                resnet::Head::Softmax,
                Some(1),
            );
            let now = t0 + Duration::from_millis(160 * b as u64);
            lines.extend(s.after_batch(7, b, Some(1), now));
        }
        assert_eq!(
            lines,
            [
                "Epoch[7] Batch [20]\tSpeed: 200.000 samples/sec\taccuracy=0.998512\ttop_k_accuracy_1=0.998512",
                "Epoch[7] Batch [40]\tSpeed: 200.000 samples/sec\taccuracy=1.000000\ttop_k_accuracy_1=1.000000",
            ]
        );
        s.start_epoch();
        assert_eq!(s.after_batch(8, 0, None, t0), None);
        assert_eq!(s.window.samples, 0);
    }

    #[test]
    fn timestamp_format() {
        assert_eq!(format_timestamp(0), "01/01/1970 00:00:00");
        // 2020-07-14 08:05:09 UTC
        assert_eq!(format_timestamp(1_594_713_909), "07/14/2020 08:05:09");
        assert_eq!(format_timestamp(951_782_400), "02/29/2000 00:00:00");
    }

    #[test]
    fn log_lines_match_mxnet_fit() {
        let m = EpochMetrics {
            epoch: 0,
            train_loss: 1.0,
            train_accuracy: 0.366_666_7,
            train_top_k_accuracy: Some(0.9),
            validation_loss: 1.2,
            validation_accuracy: 0.5,
            validation_top_k_accuracy: Some(1.0),
            learning_rate: 0.1,
            images_per_second: 10.0,
            seconds: 12.3454,
        };
        assert_eq!(
            epoch_log_lines(&m, Some(5)),
            vec![
                "Epoch[0] Train-accuracy=0.366667",
                "Epoch[0] Train-top_k_accuracy_5=0.900000",
                "Epoch[0] Time cost=12.345",
                "Epoch[0] Validation-accuracy=0.500000",
            ]
        );
        let line = json_line(&m);
        let back: EpochMetrics = serde_json::from_str(&line).unwrap();
        assert_eq!(back, m);
        assert!(line.starts_with("{\"epoch\":0,\"train_loss\":1.0,"));
        assert!(log_line("x").ends_with(&format!(" INFO {}] x", std::process::id())));
    }
}
