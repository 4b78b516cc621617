//! `im2rec`: the MXNet RecordIO format ([`recordio`]) and the packer that turns the
//! images of a `.lst` into `.rec` + `.idx` files. This crate builds without burn or
//! any GPU code, so every tool can read and write RecordIO.
#![deny(missing_docs)]

pub mod imageops;
pub mod inspect;
pub mod pack;
pub mod recordio;
