//! `im2rec`: pack the images of MXNet `.lst` files into RecordIO `.rec` + `.idx`, a
//! drop-in for `im2rec.py PREFIX ROOT` (the command line is [`im2rec::app`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    im2rec::app::main_from(std::env::args_os())
}
