//! `rectrain`'s hyperparameter flags, made from [`crate::hparams::TABLE`] by
//! [`HyperparameterArgs`], beside the groups it shares with `recpredict`
//! ([`resnet::cli`]); the tests here parse both tools' flag sets side by side.

use std::sync::LazyLock;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::hparams::{self, FlagKind, RawHyperparameters};
#[cfg(test)]
use resnet::cli::{DeviceArgs, WorkersArgs, PRECISION_HELP, PRECISION_VALUE_NAME};

/// `rectrain`'s hyperparameter flags, one `--name-with-dashes VALUE` per row of
/// [`hparams::TABLE`] (except `precision_dtype`, which is [`resnet::cli::DeviceArgs`]'s), listed
/// under "Hyperparameters" in `--help` with their help text and default. The values
/// are kept as text, by SageMaker name, like the strings of `hyperparameters.json`, and
/// validated by [`hparams::Hyperparameters::from_raw`]. A flag given twice takes its
/// last value; negative numbers are values (so that their range error names the
/// hyperparameter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HyperparameterArgs(pub RawHyperparameters);

/// The heading of the hyperparameter flags in `--help`.
pub const HYPERPARAMETERS_HEADING: &str = "Hyperparameters";

/// The table rows that get a flag here.
fn flag_rows() -> impl Iterator<Item = &'static hparams::HyperparameterSpec> {
    hparams::TABLE.iter().filter(|s| s.flag != FlagKind::Shared)
}

/// The long flags of [`flag_rows`], in order (clap keeps `&'static str`s).
static LONG_FLAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| flag_rows().map(|s| s.long()).collect());

impl clap::FromArgMatches for HyperparameterArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = Self::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for spec in flag_rows() {
            if let Some(value) = matches.get_one::<String>(spec.name) {
                self.0.insert(spec.name.to_string(), value.clone());
            }
        }
        Ok(())
    }
}

impl clap::Args for HyperparameterArgs {
    fn augment_args(mut cmd: Command) -> Command {
        for (spec, long) in flag_rows().zip(LONG_FLAGS.iter()) {
            cmd = cmd.arg(
                Arg::new(spec.name)
                    .long(long.as_str())
                    .value_name(spec.value_name)
                    .help(spec.help_text())
                    .help_heading(HYPERPARAMETERS_HEADING)
                    .hide(spec.flag == FlagKind::Hidden)
                    .action(ArgAction::Set)
                    .value_parser(clap::value_parser!(String))
                    .overrides_with(spec.name)
                    .allow_negative_numbers(true),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests;
