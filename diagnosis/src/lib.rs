//! nodectl-diagnosis: where a llama.cpp run stopped and why, from its log and its node's state, as pure functions over the model's data.
//!
//! The client gathers the inputs (a log, a pod's log, a live server's answers, the agent's
//! snapshot, processes and kernel incidents, the experiment log) and renders the result; the
//! agent can call the same [`correlate::diagnose`]. Nothing here reads a node or the network.

pub mod catalog;
pub mod correlate;
pub mod experiments;
pub mod llama_bench;
pub mod llama_log;
pub mod probe;

pub use correlate::{
    Confidence, DEFAULT_STALL_AFTER, Diagnosis, LogSource, NodeInputs, RunInputs, RunLog,
    TimelineEntry, WindowIncident, diagnose,
};
