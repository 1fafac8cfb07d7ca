//! Kernel log data as agent and client hold it: classified events, incidents, and the messages of an event stream.
//!
//! The serde form is the documented JSON of `nodectl events -o json`: times are RFC 3339 UTC
//! strings, an absent value is `null`, and the line number of a saved log only appears when
//! the event came from one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// What kind of GPU trouble an event is, as operators read it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Hang,
    Reset,
    Fault,
    Oom,
    Firmware,
    Info,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Hang,
        Class::Reset,
        Class::Fault,
        Class::Oom,
        Class::Firmware,
        Class::Info,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Hang => "hang",
            Class::Reset => "reset",
            Class::Fault => "fault",
            Class::Oom => "oom",
            Class::Firmware => "firmware",
            Class::Info => "info",
        }
    }

    pub fn parse(text: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The known class names, for error messages.
    pub fn known() -> String {
        Class::ALL.map(Class::as_str).join(", ")
    }
}

/// Where a kernel event was read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The kernel log (`/dev/kmsg`, or a saved copy of it).
    #[default]
    Kmsg,
    /// The KFD SMI event channel (`AMDKFD_IOC_SMI_EVENTS` on `/dev/kfd`), or saved records of it.
    KfdSmi,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Kmsg, Source::KfdSmi];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kmsg => "kmsg",
            Source::KfdSmi => "kfd_smi",
        }
    }

    /// A source by its name; the empty name is `kmsg` (what agents before sources sent).
    pub fn parse(text: &str) -> Option<Source> {
        if text.is_empty() {
            return Some(Source::Kmsg);
        }
        Source::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The known source names, for error messages.
    pub fn known() -> String {
        Source::ALL.map(Source::as_str).join(", ")
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kernel event after classification: a kernel log record, or a KFD SMI record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelEvent {
    /// Where it was read.
    pub source: Source,
    /// Its place within the source in this boot: a kernel log record's seq, a KFD SMI record's
    /// number as the agent counted it; `None` in a saved log without one (see `line`).
    pub cursor: Option<u64>,
    /// The kernel's sequence number (live records, saved kmsg streams).
    pub seq: Option<u64>,
    /// Line number in a saved log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// CLOCK_MONOTONIC µs since boot, as the kernel stamped the record.
    pub monotonic_usec: Option<u64>,
    #[serde(serialize_with = "time_text")]
    pub time: Option<jiff::Timestamp>,
    /// `None`: no rule matched.
    pub class: Option<Class>,
    /// The rule's id: `mes_timeout`.
    pub id: Option<Arc<str>>,
    /// PCI address of the device.
    pub device: Option<String>,
    /// Values taken from the line: ring, mes_op, pasid, pid, process, pci, fault_address, doorbell…
    pub fields: BTreeMap<String, String>,
    /// Syslog facility (0 = kernel).
    pub facility: u32,
    /// Syslog level (0 emerg … 7 debug).
    pub level: Option<u8>,
    /// User space wrote it (facility ≠ 0): never classified as a GPU event.
    pub user_written: bool,
    /// `SUBSYSTEM=` dictionary entry. Carried on the wire; not part of the JSON shape.
    #[serde(skip)]
    pub subsystem: Option<String>,
    pub message: String,
    /// Fed in by `nodectl-agent inject` as a drill, not read from the kernel log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub injected: bool,
}

/// Related events on one device: one hang, reset, fault storm… and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Incident {
    /// Allocated by the tracker when it opens, counting up from 1 in a boot (a saved log:
    /// in the file); the agent keeps the count across its restarts.
    pub incident_id: u64,
    /// `mes_hang_reset`, `page_fault_storm`, …
    pub kind: Arc<str>,
    pub device: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_line: Option<u64>,
    pub first_monotonic_usec: Option<u64>,
    pub last_monotonic_usec: Option<u64>,
    #[serde(serialize_with = "time_text")]
    pub first_time: Option<jiff::Timestamp>,
    #[serde(serialize_with = "time_text")]
    pub last_time: Option<jiff::Timestamp>,
    /// Events by rule id.
    pub event_counts: BTreeMap<Arc<str>, u32>,
    /// Process named by the events (`Process information`, page fault details).
    pub process: Option<String>,
    pub pid: Option<u32>,
    /// True after a successful reset or recovery, false after a failed one, None: unknown.
    pub recovered: Option<bool>,
    /// No more events will join it.
    pub closed: bool,
    /// It holds an injected event: a drill (`nodectl-agent inject`), not a GPU fault.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    /// The sources its events came from.
    #[serde(default)]
    pub sources: std::collections::BTreeSet<Source>,
}

impl Incident {
    /// Number of events in it.
    pub fn event_total(&self) -> u32 {
        self.event_counts.values().sum()
    }
}

/// First message of every event stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamHeader {
    /// The boot the sequence numbers belong to.
    pub boot_id: String,
    /// UTC wall clock of monotonic 0; `None` when the agent cannot tell (a saved log of
    /// another machine without its boot time).
    #[serde(serialize_with = "time_text")]
    pub boot_time: Option<jiff::Timestamp>,
    /// Oldest and newest seq the agent holds for the request's filter (0 when none).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Records lost since the agent started.
    pub records_lost_total: u64,
    /// Each source the request named, and whether the agent reads it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
}

/// Whether the agent reads a source, and how far it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub source: Source,
    /// Why the agent does not read it; `None` when it does.
    pub reason: Option<String>,
    /// Newest cursor held for the request's filter (0 when none).
    pub last_cursor: u64,
}

/// Records `first_lost_seq ..= last_lost_seq` were lost (ring overrun, or while no agent ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordsLost {
    pub count: u64,
    pub first_lost_seq: u64,
    pub last_lost_seq: u64,
}

impl RecordsLost {
    /// The gap `first ..= last`; its count saturates rather than overflows.
    pub fn between(first_lost_seq: u64, last_lost_seq: u64) -> Self {
        Self {
            count: last_lost_seq
                .saturating_sub(first_lost_seq)
                .saturating_add(1),
            first_lost_seq,
            last_lost_seq,
        }
    }
}

/// One message of an event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMessage {
    Header(StreamHeader),
    Event(KernelEvent),
    Incident(Incident),
    RecordsLost(RecordsLost),
    /// This stream fell behind the agent's reader; `missed` messages were dropped for it.
    Lagged {
        missed: u64,
    },
}

/// Serialises a time as its RFC 3339 text, or `null`.
pub fn time_text<S: Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in Class::ALL {
            assert_eq!(Class::parse(class.as_str()), Some(class));
        }
        assert_eq!(Class::parse("Hang"), None);
        assert_eq!(
            serde_json::to_string(&Class::Firmware).unwrap(),
            "\"firmware\""
        );
    }

    #[test]
    fn a_lost_range_never_overflows() {
        assert_eq!(RecordsLost::between(3, 8).count, 6);
        assert_eq!(RecordsLost::between(0, u64::MAX).count, u64::MAX);
        assert_eq!(RecordsLost::between(9, 3).count, 1);
    }
}
