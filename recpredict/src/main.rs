//! `recpredict`: predict images with a `rectrain` model, one JSON line per image.

use std::process::ExitCode;

use clap::Parser;
use recpredict::app::{self, Opts};

fn main() -> ExitCode {
    resnet::kernels::cpu::keep_freed_memory();
    tool_cli::run(app::TOOL, || {
        app::run(Opts::parse_from(app::args_with_sagemaker_entry(
            std::env::args_os(),
        )))
    })
}
