//! `im2list`: make MXNet `.lst` image lists from a folder of class folders, byte-identical
//! to `im2rec.py --list` (MXNet 1.9.1), plus the pieces every later tool reuses:
//! the `.lst` row format ([`lst`]) and the shared command-line conventions ([`cli`]).
#![deny(missing_docs)]

pub mod cli;
pub mod lst;
