//! `im2list`: make MXNet `.lst` image lists, byte-identical to `im2rec.py --list`
//! (the command line is [`im2list::app`], which `im2rec --list` runs too).

use std::process::ExitCode;

fn main() -> ExitCode {
    im2list::app::main_from(std::env::args_os())
}
