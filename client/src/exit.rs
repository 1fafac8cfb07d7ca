//! Exit codes and the error kinds that choose them: 0 ok, 1 critical finding, 2 usage/input, 3 unreachable, 4 a critical check could not run.

use std::process::ExitCode;

/// The exit codes, as `--help` lists them (the README says the same).
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 a check, diagnosis or verification found a critical problem; 2 usage or input error; 3 a node, agent or service could not be reached (with several nodes: none answered); 4 no critical finding, but a critical check could not run (node check), or some of several nodes gave no answer.";

/// What a command found, when it ran to the end; declared from best to worst, so the worst of
/// several nodes is their `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// Nothing critical.
    Ok,
    /// No critical finding, but a critical check could not run: its inputs were unreadable, or
    /// some of several nodes gave no answer (exit 4). Not "all clear".
    CriticalUnknown,
    /// A check, diagnosis or verification found a critical problem (exit 1).
    Critical,
    /// Of several nodes, none answered (exit 3); each is listed with its reason.
    Unreachable,
}

impl ExitStatus {
    pub fn exit_code(self) -> ExitCode {
        match self {
            ExitStatus::Ok => ExitCode::SUCCESS,
            ExitStatus::Critical => ExitCode::from(1),
            ExitStatus::CriticalUnknown => ExitCode::from(4),
            ExitStatus::Unreachable => ExitCode::from(3),
        }
    }
}

/// A node, an agent or a service could not be reached (exit 3). Wrap the cause in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Exit code for an error that ended a command: 3 when something could not be reached, else 2
/// (the input, a flag or a file was wrong; the message says which).
pub fn exit_code_for(error: &anyhow::Error) -> ExitCode {
    if error.chain().any(|cause| cause.is::<Unreachable>()) {
        ExitCode::from(3)
    } else {
        ExitCode::from(2)
    }
}

/// The error and its sources on one line (tonic's transport errors hide the useful part inside).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
