//! Conventions shared by every tool of the workspace (`im2list`, `im2rec`, `rectrain`,
//! `recpredict`): one exit-code policy, quiet exit on a closed pipe, and one way to
//! print errors and warnings on stderr.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | finished, but some items failed (each one named on stderr) |
//! | 2    | usage error or fatal error (clap also exits 2 on bad arguments) |
//! | 130  | interrupted by Ctrl-C (after saving what can be saved) |
//!
//! A closed stdout (`tool | head`) is a normal way to end: the tool stops quietly
//! with exit code 0, like ripgrep and bat do.

#![deny(missing_docs)]

use std::io::{self, Write};
use std::process::ExitCode;

/// How a run ended, mapped onto the exit-code table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked: exit code 0.
    Success,
    /// The run finished but some items failed: exit code 1.
    SomeFailed,
    /// Stopped by Ctrl-C: exit code 130.
    Interrupted,
}

impl Outcome {
    /// `SomeFailed` when `failures > 0`, else `Success`.
    pub fn from_failures(failures: usize) -> Self {
        if failures > 0 {
            Outcome::SomeFailed
        } else {
            Outcome::Success
        }
    }

    /// The process exit code for this outcome.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::SomeFailed => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// Exit code for usage and fatal errors.
pub const FATAL: u8 = 2;

/// True when any error in the chain is an `io::Error` of kind `BrokenPipe`.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Print one message on stderr as `<tool>: <msg>`. Errors writing to stderr are
/// ignored: there is nowhere left to report them.
pub fn message(tool: &str, msg: impl std::fmt::Display) {
    // One write: lines of processes sharing a stderr never cut into each other.
    let _ = io::stderr()
        .lock()
        .write_all(format!("{tool}: {msg}\n").as_bytes());
}

/// Print a warning on stderr as `<tool>: warning: <msg>`.
pub fn warn(tool: &str, msg: impl std::fmt::Display) {
    message(tool, format_args!("warning: {msg}"));
}

/// An error and its causes as one line, `a: b: c`. A cause whose text the message so
/// far already holds (an error type that prints its own source) is not repeated.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// Run a tool's body and turn its result into the process exit code.
///
/// An error whose chain holds a broken pipe ends quietly with 0; any other error is
/// printed once with its whole context chain (`<tool>: error: a: b: c`, see
/// [`error_text`]) and gives 2.
pub fn run(tool: &str, body: impl FnOnce() -> anyhow::Result<Outcome>) -> ExitCode {
    match body() {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            message(tool, format_args!("error: {}", error_text(err.as_ref())));
            ExitCode::from(FATAL)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_found_through_context() {
        let err = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing stdout");
        assert!(is_broken_pipe(&err));
        let other = anyhow::Error::from(io::Error::from(io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
    }

    #[test]
    fn error_text_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x.json: {source}")]
        struct PrintsItsSource {
            source: io::Error,
        }
        let io = || io::Error::new(io::ErrorKind::NotFound, "No such file or directory");
        let err = anyhow::Error::from(PrintsItsSource { source: io() }).context("hyperparameters");
        assert_eq!(
            error_text(err.as_ref()),
            "hyperparameters: cannot read x.json: No such file or directory"
        );
        let err = anyhow::Error::from(io()).context("cannot read y.rec");
        assert_eq!(
            error_text(err.as_ref()),
            "cannot read y.rec: No such file or directory"
        );
    }

    #[test]
    fn outcome_codes() {
        assert_eq!(Outcome::from_failures(0).code(), 0);
        assert_eq!(Outcome::from_failures(3).code(), 1);
        assert_eq!(Outcome::Interrupted.code(), 130);
    }
}
