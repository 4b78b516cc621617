//! `rectrain`: train a ResNet image classifier from MXNet RecordIO (or an image folder
//! plus a `.lst`) with SageMaker's built-in image-classification hyperparameters.

use std::process::ExitCode;

use clap::Parser;
use rectrain::app::{self, Opts};

fn main() -> ExitCode {
    resnet::kernels::cpu::keep_freed_memory();
    tool_cli::run(app::TOOL, || app::run(Opts::parse()))
}
