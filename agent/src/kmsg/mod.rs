//! The kernel log pipeline: read `/dev/kmsg` or saved logs, classify amdgpu/KFD events, group them into incidents.
//!
//! `record` parses kmsg records, `reader` reads the device, `offline` parses saved logs,
//! `classify` holds the rules, `incident` groups events, `analyze` ties them into one
//! stream of outputs, `pipeline` runs it in the agent and feeds subscribers, `stream` serves
//! one subscriber, `metrics` counts.

pub mod analyze;
pub mod classify;
pub(crate) mod incident;
pub mod metrics;
pub(crate) mod offline;
pub mod pipeline;
pub mod reader;
pub mod record;
pub(crate) mod state;
pub(crate) mod stream;

pub use analyze::{Analyzer, KernelEvent, Output};
pub use classify::{Class, Classifier, RulesError};
pub use incident::Incident;
pub use offline::JournalYear;
