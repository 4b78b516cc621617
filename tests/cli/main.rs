//! The rectrain and recpredict binaries on inputs made here through the libraries
//! (RecordIO written with im2rec's writer, a randomly initialised model saved as an
//! artifact through resnet), so these tests need neither training runs of their own
//! nor the other tools: every flag, input kind, output format, error and exit code.
//! One test binary for both (each one that links burn adds minutes to the build).

mod recpredict;
mod rectrain;
