//! `im2rec`: the MXNet RecordIO format ([`recordio`]), the packer that turns the
//! images of a `.lst` into `.rec` + `.idx` files, and the labelled-image reader
//! ([`dataset`]) that training and prediction share. This crate builds without burn or
//! any GPU code, so every tool can read and write RecordIO.
#![deny(missing_docs)]

pub mod app;
pub mod dataset;
pub mod imageops;
pub mod inspect;
pub mod pack;
pub mod recordio;
