//! Takes one snapshot: runs every collector over a host root, then the checks.

use std::time::Duration;

use crate::{HostRoot, model};

/// How many clock/busy readings to take per card, and how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleOptions {
    pub count: u32,
    pub interval: Duration,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            count: 1,
            interval: Duration::from_millis(500),
        }
    }
}

/// Reads everything; never fails: what could not be read is in `problems`.
/// Blocking (file I/O and sampling pauses): call it from `spawn_blocking` in async code.
pub fn take(root: &HostRoot, _options: &SampleOptions) -> model::Snapshot {
    let kernel_release = std::fs::read_to_string(root.path("proc/sys/kernel/osrelease"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    model::Snapshot {
        agent_version: crate::AGENT_VERSION.to_owned(),
        taken_at: jiff::Timestamp::now().to_string(),
        host: model::Host {
            kernel_release,
            ..Default::default()
        },
        ..Default::default()
    }
}
