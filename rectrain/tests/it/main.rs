//! rectrain's integration tests, one binary (each test binary links burn, so fewer of
//! them build faster): the real `rectrain` binary on generated data (`cli`), and the
//! weight formats against files written by PyTorch (`weights`).

mod cli;
mod weights;
