//! The hyperparameter table: every hyperparameter's name, flag, help text and
//! default, in one place ([`TABLE`]), and [`KNOWN_NAMES`] made from it.

use FlagKind::{Hidden, Listed, Shared};
use HelpDefault::{Described, Value};

/// How a hyperparameter appears on `rectrain`'s command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name-with-dashes VALUE`, listed under "Hyperparameters" in `--help`.
    Listed,
    /// `--name-with-dashes VALUE`, accepted but not listed in `--help`.
    Hidden,
    /// The flag is declared with the options `recpredict` shares
    /// ([`resnet::cli::DeviceArgs`]'s `--precision-dtype`), so that both tools spell,
    /// parse and describe it alike; `rectrain` puts its value into the hyperparameters.
    Shared,
}

/// What `--help` says a hyperparameter's default is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelpDefault {
    /// A value: the text that, given as the hyperparameter, means the default (a test
    /// checks it against [`super::Hyperparameters::default`]).
    Value(&'static str),
    /// A description, for defaults that are not a value ("counted", "none").
    Described(&'static str),
}

/// One row of [`TABLE`]: a hyperparameter and its command-line flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HyperparameterSpec {
    /// SageMaker's name (`num_layers`); the flag is the name with dashes
    /// (`--num-layers`).
    pub name: &'static str,
    /// The flag's value placeholder in `--help` (`N`, `X`, `C,H,W`).
    pub value_name: &'static str,
    /// The flag's help text (the default is appended, see [`Self::help_text`]).
    pub help: &'static str,
    /// The default, as `--help` shows it.
    pub default: HelpDefault,
    /// How the flag appears.
    pub flag: FlagKind,
}

impl HyperparameterSpec {
    /// The long flag: the name with dashes for underscores (`num-layers`).
    pub fn long(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The help text with its default: `"Images per step. [default: 32]"`.
    pub fn help_text(&self) -> String {
        let (HelpDefault::Value(d) | HelpDefault::Described(d)) = self.default;
        format!("{} [default: {d}]", self.help)
    }
}

/// Every hyperparameter `rectrain` understands, in the order `--help` lists them:
/// SageMaker's name, the flag's value placeholder, how the flag appears, its help text
/// and its default. `rectrain`'s hyperparameter flags
/// ([`crate::cli::HyperparameterArgs`]) and [`KNOWN_NAMES`] are made from this table,
/// so a new hyperparameter is one row here (and its parsing in
/// [`super::Hyperparameters::from_raw`]).
#[rustfmt::skip]
pub const TABLE: &[HyperparameterSpec] = &[
    HyperparameterSpec { name: "num_layers", value_name: "N", flag: Listed,
        help: "ResNet depth: 18, 34, 50, 101, 152, 200.",
        default: Value("152") },
    HyperparameterSpec { name: "image_shape", value_name: "C,H,W", flag: Listed,
        help: "Network input \"C,H,W\" (C must be 3).",
        default: Value("3,224,224") },
    HyperparameterSpec { name: "num_classes", value_name: "N", flag: Listed,
        help: "Output classes.",
        default: Described("inferred from the labels") },
    HyperparameterSpec { name: "num_training_samples", value_name: "N", flag: Listed,
        help: "Training images (checked against the data).",
        default: Described("counted") },
    HyperparameterSpec { name: "mini_batch_size", value_name: "N", flag: Listed,
        help: "Images per step.",
        default: Value("32") },
    HyperparameterSpec { name: "epochs", value_name: "N", flag: Listed,
        help: "Passes over the training data.",
        default: Value("30") },
    HyperparameterSpec { name: "learning_rate", value_name: "X", flag: Listed,
        help: "Initial learning rate, 0..1.",
        default: Value("0.1") },
    HyperparameterSpec { name: "lr_scheduler_factor", value_name: "X", flag: Listed,
        help: "Learning-rate factor at each scheduled step, 0..1.",
        default: Value("0.1") },
    HyperparameterSpec { name: "lr_scheduler_step", value_name: "EPOCHS", flag: Listed,
        help: "Epochs after which the learning rate drops, e.g. \"10, 20\".",
        default: Described("none") },
    HyperparameterSpec { name: "optimizer", value_name: "NAME", flag: Listed,
        help: "sgd, adam, rmsprop or nag.",
        default: Value("sgd") },
    HyperparameterSpec { name: "momentum", value_name: "X", flag: Listed,
        help: "Momentum for sgd and nag, 0..1.",
        default: Value("0.9") },
    HyperparameterSpec { name: "weight_decay", value_name: "X", flag: Listed,
        help: "L2 weight decay for sgd and nag, 0..1, on weights and BatchNorm gammas (as MXNet).",
        default: Value("0.0001") },
    HyperparameterSpec { name: "beta_1", value_name: "X", flag: Listed,
        help: "Adam beta1, 0..1.",
        default: Value("0.9") },
    HyperparameterSpec { name: "beta_2", value_name: "X", flag: Listed,
        help: "Adam beta2, 0..1.",
        default: Value("0.999") },
    HyperparameterSpec { name: "eps", value_name: "X", flag: Listed,
        help: "Adam and rmsprop epsilon, 0..1.",
        default: Value("1e-8") },
    HyperparameterSpec { name: "gamma", value_name: "X", flag: Listed,
        help: "Rmsprop decay factor, 0..1.",
        default: Value("0.9") },
    HyperparameterSpec { name: "top_k", value_name: "K", flag: Listed,
        help: "Also report top-k accuracy (k > 1).",
        default: Described("none") },
    HyperparameterSpec { name: "use_pretrained_model", value_name: "0|1", flag: Listed,
        help: "1: start from --pretrained weights, re-initialising the last layer.",
        default: Value("0") },
    HyperparameterSpec { name: "multi_label", value_name: "0|1", flag: Listed,
        help: "1: multi-hot labels, sigmoid outputs, binary cross-entropy.",
        default: Value("0") },
    HyperparameterSpec { name: "use_weighted_loss", value_name: "0|1", flag: Listed,
        help: "1: weight the multi-label loss by class frequency (needs --multi-label 1).",
        default: Value("0") },
    HyperparameterSpec { name: "augmentation_type", value_name: "TYPE", flag: Listed,
        help: "crop, crop_color or crop_color_transform.",
        default: Described("none, centre crop") },
    HyperparameterSpec { name: "resize", value_name: "N", flag: Listed,
        help: "Shorter side in pixels before cropping (at least H and W).",
        default: Described("none") },
    HyperparameterSpec { name: "checkpoint_frequency", value_name: "N", flag: Listed,
        help: "Also keep a checkpoint every N epochs (N <= epochs).",
        default: Described("best only") },
    HyperparameterSpec { name: "early_stopping", value_name: "BOOL", flag: Listed,
        help: "True: stop when validation accuracy stops improving.",
        default: Value("False") },
    HyperparameterSpec { name: "early_stopping_min_epochs", value_name: "N", flag: Listed,
        help: "Epochs before early stopping may stop the run.",
        default: Value("10") },
    HyperparameterSpec { name: "early_stopping_patience", value_name: "N", flag: Listed,
        help: "Epochs without improvement that stop the run.",
        default: Value("5") },
    HyperparameterSpec { name: "early_stopping_tolerance", value_name: "X", flag: Listed,
        help: "Relative gain below which an epoch is no improvement, 0..1.",
        default: Value("0.0") },
    HyperparameterSpec { name: "precision_dtype", value_name: "DTYPE", flag: Shared,
        help: "float32, float16 or bfloat16 (the last two on CUDA only).",
        default: Value("float32") },
    HyperparameterSpec { name: "kv_store", value_name: "KIND", flag: Hidden,
        help: "SageMaker's dist_sync/dist_async (accepted and ignored: one machine).",
        default: Described("none") },
];

/// The row of [`TABLE`] named `name`.
pub fn spec(name: &str) -> Option<&'static HyperparameterSpec> {
    TABLE.iter().find(|s| s.name == name)
}

/// Every hyperparameter name `rectrain` understands (SageMaker's spelling), sorted:
/// the names of [`TABLE`]. A name listed twice there fails the build.
pub const KNOWN_NAMES: &[&str] = &sorted_names::<{ TABLE.len() }>();

/// `a < b`, byte-wise (`str`'s `Ord` is not usable in a `const fn`).
const fn str_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// The names of [`TABLE`], sorted (insertion sort, at compile time), none twice.
const fn sorted_names<const N: usize>() -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = TABLE[i].name;
        let mut j = i;
        while j > 0 && str_less(names[j], names[j - 1]) {
            let t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    let mut k = 1;
    while k < N {
        assert!(
            str_less(names[k - 1], names[k]),
            "a hyperparameter is listed twice in hparams::TABLE"
        );
        k += 1;
    }
    names
}
