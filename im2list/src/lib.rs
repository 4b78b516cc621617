//! `im2list`: make MXNet `.lst` image lists from a folder of class folders, byte-identical
//! to `im2rec.py --list` (MXNet 1.9.1), plus the pieces every later tool reuses:
//! the `.lst` row format ([`lst`]). The shell conventions every tool keeps (exit codes,
//! messages, closed pipes) are the `tool-cli` crate's.
//!
//! The listing itself: [`walk`] finds the images in im2rec.py's order, [`pyrandom`]
//! shuffles them like CPython 3's `random`, [`split`] cuts chunks and train/val/test
//! lists with im2rec.py's arithmetic, and [`list`] ties it together and writes files.
#![deny(missing_docs)]

pub mod app;
pub mod list;
pub mod lst;
pub mod pypath;
pub mod pyrandom;
pub mod split;
pub mod walk;
