//! The kernel log pipeline: read `/dev/kmsg` or saved logs, classify amdgpu/KFD events, group them into incidents.
//!
//! `record` parses kmsg records, `reader` reads the device, `offline` parses saved logs,
//! `classify` holds the rules, `incident` groups events, `analyze` ties them into one
//! stream of outputs, `hub` runs it in the agent and feeds subscribers, `metrics` counts.

pub mod analyze;
pub mod classify;
pub mod hub;
pub mod incident;
pub mod metrics;
pub mod offline;
pub mod reader;
pub mod record;
pub mod state;
pub mod stream;

pub use analyze::{Analyzer, Event, Output};
pub use classify::{Class, Classifier};
pub use incident::Incident;
