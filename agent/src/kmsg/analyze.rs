//! Turns log entries (live records or saved lines) into events, incident updates and lost-record notices.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::classify::Classifier;
pub use nodectl_model::KernelEvent;

use super::incident::{EventPlace, Incident, IncidentTracker};
use super::offline::{LineFormat, LogLine};
use super::reader::follows_plausibly;
use super::record::{Record, pci_of_device};

/// One kernel log entry, before classification.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub seq: Option<u64>,
    /// Line number in a saved log.
    pub line: Option<u64>,
    pub monotonic_usec: Option<u64>,
    pub time: Option<jiff::Timestamp>,
    pub facility: u32,
    pub level: Option<u8>,
    pub message: String,
    pub subsystem: Option<String>,
    /// `DEVICE=` dictionary value.
    pub device: Option<String>,
}

impl Entry {
    /// A live record; `boot_time` turns its monotonic µs into wall time.
    pub fn from_record(record: Record, boot_time: Option<jiff::Timestamp>) -> Self {
        let time =
            boot_time.and_then(|boot| nodectl_model::clock::at_monotonic(boot, record.ts_usec));
        Entry {
            seq: Some(record.seq),
            line: None,
            monotonic_usec: Some(record.ts_usec),
            time,
            facility: record.facility,
            level: Some(record.level),
            message: record.message,
            subsystem: record.subsystem,
            device: record.device,
        }
    }

    /// A line of a saved log.
    pub fn from_line(line: LogLine, number: u64) -> Self {
        Entry {
            seq: line.seq,
            line: Some(number),
            monotonic_usec: line.monotonic_usec,
            time: line.wall,
            facility: line.facility,
            level: line.level,
            message: line.message,
            subsystem: line.subsystem,
            device: line.device,
        }
    }
}

/// What the analyzer produces, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Event(KernelEvent),
    Incident(Incident),
    /// Records first_seq ..= last_seq were lost.
    Lost {
        first_seq: u64,
        last_seq: u64,
    },
}

/// Classifier plus incident tracker.
#[derive(Debug)]
pub struct Analyzer {
    classifier: Arc<Classifier>,
    incidents: IncidentTracker,
}

impl Analyzer {
    pub fn new(classifier: Arc<Classifier>) -> Self {
        Self {
            incidents: IncidentTracker::new(classifier.clone()),
            classifier,
        }
    }

    pub fn classifier(&self) -> &Arc<Classifier> {
        &self.classifier
    }

    /// Classifies one entry; pushes its event, then any incident updates it caused.
    pub fn push(&mut self, entry: Entry, out: &mut Vec<Output>) {
        let user_written = entry.facility != 0;
        let classification = if user_written {
            None
        } else {
            self.classifier.classify(&entry.message)
        };
        let dict_device = entry
            .device
            .as_deref()
            .and_then(pci_of_device)
            .map(str::to_owned);
        let mut event = KernelEvent {
            seq: entry.seq,
            line: entry.line,
            monotonic_usec: entry.monotonic_usec,
            time: entry.time,
            class: None,
            id: None,
            device: dict_device,
            fields: BTreeMap::new(),
            facility: entry.facility,
            level: entry.level,
            user_written,
            subsystem: entry.subsystem,
            message: entry.message,
        };
        let Some(classification) = classification else {
            out.push(Output::Event(event));
            return;
        };
        let Some(rule) = self.classifier.rule(classification.rule) else {
            out.push(Output::Event(event));
            return;
        };
        event.class = Some(rule.class);
        event.id = Some(rule.id.clone());
        if classification.device.is_some() {
            event.device = classification.device;
        }
        event.fields = classification.fields;
        let mut updates = Vec::new();
        self.incidents.add(
            rule,
            EventPlace {
                seq: event.seq,
                line: event.line,
                monotonic_usec: event.monotonic_usec,
                time: event.time,
                device: event.device.as_deref(),
                process: event.fields.get("process").map(String::as_str),
                pid: event.fields.get("pid").and_then(|p| p.parse().ok()),
            },
            &mut updates,
        );
        out.push(Output::Event(event));
        out.extend(updates.into_iter().map(Output::Incident));
    }

    /// Records that were lost (ring overrun, or a gap across restarts).
    pub fn lost(&mut self, first_seq: u64, last_seq: u64, out: &mut Vec<Output>) {
        out.push(Output::Lost {
            first_seq,
            last_seq,
        });
    }

    /// Closes incidents quiet for longer than the gap, at monotonic time `now_usec`.
    pub fn tick(&mut self, now_usec: u64, out: &mut Vec<Output>) {
        let mut closed = Vec::new();
        self.incidents.expire(now_usec, &mut closed);
        out.extend(closed.into_iter().map(Output::Incident));
    }

    /// Closes every open incident (end of a saved log).
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        let mut closed = Vec::new();
        self.incidents.close_all(&mut closed);
        out.extend(closed.into_iter().map(Output::Incident));
    }
}

/// Result of analysing a whole saved log.
#[derive(Debug, Default, serde::Serialize)]
pub struct LogSummary {
    pub events: Vec<KernelEvent>,
    /// Final state of every incident.
    pub incidents: Vec<Incident>,
    pub records_lost: u64,
    /// Times the sequence numbers started over (see [`ReadOutcome::Restarted`](super::reader::ReadOutcome)).
    pub seq_restarts: u64,
    /// Lines read (a kmsg record's dictionary lines included).
    pub lines_read: u64,
    /// Lines in a kernel log format (kmsg, dmesg, journal, `talosctl dmesg`), or plain lines
    /// that a rule classified: what makes the input a kernel log at all.
    pub lines_recognised: u64,
    /// Lines longer than the bound of a saved line, cut (set by the reader of the lines).
    pub lines_cut: u64,
    /// Lines of each kernel log format, and lines in which a GPU message was found (`located`).
    pub formats: BTreeMap<LineFormat, u64>,
}

impl LogSummary {
    /// The file's format: the one format its lines have, `mixed`, or `none`.
    pub fn format(&self) -> String {
        let mut formats = self.formats.keys().filter(|f| f.is_kernel_log());
        match (formats.next(), formats.next()) {
            (None, _) => "none".to_owned(),
            (Some(only), None) => only.as_str().to_owned(),
            (Some(_), Some(_)) => "mixed".to_owned(),
        }
    }
}

/// Analyses a saved log (any mix of the supported formats). `keep` decides which events to
/// return; incidents are always kept. Lines are numbered from 1.
pub fn analyze_text(
    text: &str,
    classifier: Arc<Classifier>,
    year: i16,
    keep: impl FnMut(&KernelEvent) -> bool,
) -> LogSummary {
    analyze_lines(text.lines(), classifier, year, keep)
}

/// [`analyze_text`] over lines as they come (a file read line by line): memory stays with what
/// `keep` keeps and the incidents, not with the size of the log.
pub fn analyze_lines<L: AsRef<str>>(
    lines: impl Iterator<Item = L>,
    classifier: Arc<Classifier>,
    year: i16,
    mut keep: impl FnMut(&KernelEvent) -> bool,
) -> LogSummary {
    use super::offline::{dictionary_entry, parse_line};
    let mut analyzer = Analyzer::new(classifier);
    let mut summary = LogSummary::default();
    let mut out = Vec::new();
    let mut pending: Option<Entry> = None;
    let mut last_seq: Option<u64> = None;
    // The number of the plain line pushed last: recognised if a rule classifies it.
    let mut plain_line: Option<u64> = None;
    let mut sink = |out: &mut Vec<Output>, summary: &mut LogSummary, plain: &mut Option<u64>| {
        for o in out.drain(..) {
            match o {
                Output::Event(e) => {
                    if e.id.is_some() && e.line.is_some() && *plain == e.line {
                        summary.lines_recognised += 1;
                        *plain = None;
                    }
                    if keep(&e) {
                        summary.events.push(e);
                    }
                }
                Output::Incident(i) => {
                    if i.closed {
                        summary.incidents.push(i);
                    }
                }
                Output::Lost {
                    first_seq,
                    last_seq,
                } => {
                    summary.records_lost = summary
                        .records_lost
                        .saturating_add(last_seq.saturating_sub(first_seq).saturating_add(1));
                }
            }
        }
    };
    for (index, line) in lines.enumerate() {
        let line = line.as_ref();
        let number = u64::try_from(index).unwrap_or(u64::MAX).saturating_add(1);
        summary.lines_read = number;
        if let Some(entry) = pending.as_mut()
            && let Some((key, value)) = dictionary_entry(line)
        {
            summary.lines_recognised += 1;
            match key {
                "DEVICE" => entry.device = Some(value.to_owned()),
                "SUBSYSTEM" => entry.subsystem = Some(value.to_owned()),
                _ => {}
            }
            continue;
        }
        if let Some(entry) = pending.take() {
            analyzer.push(entry, &mut out);
            sink(&mut out, &mut summary, &mut plain_line);
        }
        if line.is_empty() {
            continue;
        }
        let parsed = parse_line(line, year);
        let is_kmsg = parsed.format == LineFormat::Kmsg;
        if parsed.format.is_kernel_log() {
            summary.lines_recognised += 1;
        } else {
            plain_line = Some(number);
        }
        if parsed.format != LineFormat::Plain {
            *summary.formats.entry(parsed.format).or_insert(0) += 1;
        }
        if let Some(seq) = parsed.seq {
            match last_seq {
                Some(last) if !follows_plausibly(last, seq) => summary.seq_restarts += 1,
                Some(last) if seq > last.saturating_add(1) => {
                    analyzer.lost(last + 1, seq - 1, &mut out);
                }
                _ => {}
            }
            last_seq = Some(seq);
        }
        let entry = Entry::from_line(parsed, number);
        if is_kmsg {
            // Its dictionary lines may follow.
            pending = Some(entry);
        } else {
            analyzer.push(entry, &mut out);
            sink(&mut out, &mut summary, &mut plain_line);
        }
    }
    if let Some(entry) = pending.take() {
        analyzer.push(entry, &mut out);
    }
    analyzer.finish(&mut out);
    sink(&mut out, &mut summary, &mut plain_line);
    summary
        .incidents
        .sort_by_key(|i| (i.first_line, i.first_seq, i.incident_id));
    summary
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn classifier() -> Arc<Classifier> {
        Arc::new(Classifier::embedded().unwrap())
    }

    #[test]
    fn the_typical_mes_hang_chain_is_one_recovered_incident() {
        let log = "\
[ 100.000000] amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE
[ 100.000100] amdgpu 0000:c1:00.0: amdgpu: failed to remove hardware queue from MES, doorbell=0x1002
[ 100.000200] amdgpu 0000:c1:00.0: amdgpu: MES might be in unrecoverable state, issue a GPU reset
[ 100.000300] amdgpu: Failed to evict queue 1
[ 100.100000] amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!
[ 100.200000] amdgpu: Failed to evict process queues
[ 100.300000] amdgpu 0000:c1:00.0: amdgpu: Dumping IP State
[ 100.400000] amdgpu 0000:c1:00.0: amdgpu: MODE2 reset
[ 101.000000] amdgpu 0000:c1:00.0: amdgpu: GPU reset succeeded, trying to resume
[ 101.100000] amdgpu 0000:c1:00.0: amdgpu: SMU is resuming...
[ 102.000000] amdgpu 0000:c1:00.0: amdgpu: GPU reset(1) succeeded!
[ 200.000000] usb 1-1: new device
";
        let s = analyze_text(log, classifier(), 2025, |e| e.id.is_some());
        assert_eq!(s.events.len(), 11);
        assert_eq!(s.incidents.len(), 1);
        let i = &s.incidents[0];
        assert_eq!(&*i.kind, "mes_hang_reset");
        assert_eq!(i.device.as_deref(), Some("0000:c1:00.0"));
        assert_eq!(i.recovered, Some(true));
        assert_eq!(i.event_counts["queue_evict_failed"], 2);
        assert_eq!((i.first_line, i.last_line), (Some(1), Some(11)));
    }

    #[test]
    fn repeated_ring_full_is_wedged_and_user_lines_are_never_gpu_events() {
        let log = "\
6,1,1000000,-;amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=MISC (WAIT_REG_MEM)
 SUBSYSTEM=pci
 DEVICE=+pci:0000:c1:00.0
6,2,2000000,-;amdgpu 0000:c1:00.0: amdgpu: MES ring buffer is full.
6,5,3000000,-;amdgpu 0000:c1:00.0: amdgpu: MES ring buffer is full.
14,6,3000001,-;amdgpu 0000:c1:00.0: amdgpu: GPU reset(1) succeeded!
";
        let s = analyze_text(log, classifier(), 2025, |_| true);
        assert_eq!(s.records_lost, 2);
        assert_eq!(s.events[0].subsystem.as_deref(), Some("pci"));
        assert_eq!(s.events[0].fields["mes_misc_op"], "WAIT_REG_MEM");
        let user = &s.events[3];
        assert!(user.user_written && user.id.is_none());
        assert_eq!(s.incidents.len(), 1);
        assert_eq!(&*s.incidents[0].kind, "mes_wedged");
        assert_eq!(s.incidents[0].recovered, None);
    }

    #[test]
    fn user_written_lines_of_dmesg_x_are_never_gpu_events() {
        let log = "\
kern  :err   : [    1.000000] amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!
user  :err   : [    2.000000] amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!
";
        let s = analyze_text(log, classifier(), 2025, |_| true);
        assert_eq!(s.events.len(), 2);
        assert!(s.events[0].id.is_some() && !s.events[0].user_written);
        assert!(s.events[1].id.is_none() && s.events[1].user_written);
    }

    #[test]
    fn events_far_apart_are_separate_incidents() {
        let log = "\
[ 10.0] amdgpu 0000:c1:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32769)
[ 10.1] amdgpu 0000:c1:00.0: amdgpu:  in process llama-server pid 77 thread llama-server pid 78)
[ 10.2] amdgpu 0000:c1:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32769)
[ 10.3] amdgpu 0000:c1:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32769)
[ 99.0] amdgpu 0000:c1:00.0: amdgpu: ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=2
";
        let s = analyze_text(log, classifier(), 2025, |_| false);
        let kinds: Vec<&str> = s.incidents.iter().map(|i| &*i.kind).collect();
        assert_eq!(kinds, ["page_fault_storm", "ring_timeout"]);
        assert_eq!(s.incidents[0].process.as_deref(), Some("llama-server"));
        assert_eq!(s.incidents[0].pid, Some(77));
    }

    #[test]
    fn seqs_going_back_or_jumping_are_restarts_not_losses() {
        let log = "6,5,1,-;a\n6,18446744073709551615,2,-;b\n6,3,3,-;c\n6,6,4,-;d\n";
        let s = analyze_text(log, classifier(), 2025, |_| true);
        assert_eq!(s.records_lost, 2, "4 and 5 between 3 and 6");
        assert_eq!(s.seq_restarts, 2);
        assert_eq!(s.events.len(), 4);
    }

    /// The catalogue fixture: every message form of the rules once, in dmesg style.
    const CATALOGUE: &str = include_str!("../../../tests/fixtures/kmsg/catalogue.dmesg.log");

    /// Every prefix a saved line can carry before its message.
    fn prefixed(style: usize, message: &str) -> String {
        match style {
            0 => format!("3,17,950818166,-;{message}"),
            1 => format!("[  950.818166] {message}"),
            2 => format!("[Tue Aug  5 09:03:24 2025] {message}"),
            3 => format!("kern  :err   : [  950.818166] {message}"),
            4 => format!("<3>[  950.818166] {message}"),
            5 => format!("Aug 05 09:03:24 node1 kernel: {message}"),
            6 => format!("Aug  5 09:03:24.804673 node1 kernel: [  950.818166] {message}"),
            7 => format!("sie 05 09:03:24 węzeł kernel: {message}"),
            8 => format!("2025-08-05T09:03:24+0200 node1 kernel: {message}"),
            9 => format!("[  950.818166] node1 kernel: {message}"),
            10 => format!("172.20.0.5: kern:     err: [2025-08-05T09:03:24.804673000Z]: {message}"),
            11 => format!("2025-08-05T09:03:24.804673000Z [  950.818166] {message}"),
            _ => format!("  gpu1 | kernel | {message}"),
        }
    }

    fn catalogue_messages() -> Vec<String> {
        CATALOGUE
            .lines()
            .map(|line| super::super::offline::parse_line(line, 2025).message)
            .collect()
    }

    #[test]
    fn the_catalogue_classifies_under_every_prefix() {
        let c = classifier();
        for message in catalogue_messages() {
            let bare = c.classify(&message).map(|x| x.rule);
            assert!(bare.is_some(), "{message}");
            for style in 0..13 {
                let line = prefixed(style, &message);
                let parsed = super::super::offline::parse_line(&line, 2025);
                assert_eq!(c.classify(&parsed.message).map(|x| x.rule), bare, "{line}");
            }
        }
    }

    proptest::proptest! {
        /// Any catalogue line under any recognised prefix is the same event.
        #[test]
        fn any_catalogue_line_under_any_prefix_is_the_same_event(pick in 0usize..1000, style in 0usize..13) {
            static C: std::sync::LazyLock<Arc<Classifier>> = std::sync::LazyLock::new(classifier);
            static MESSAGES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(catalogue_messages);
            let message = &MESSAGES[pick % MESSAGES.len()];
            let parsed = super::super::offline::parse_line(&prefixed(style, message), 2025);
            let id = |m: &str| C.classify(m).and_then(|x| C.rule(x.rule)).map(|r| r.id.clone());
            proptest::prop_assert_eq!(id(&parsed.message), id(message));
            proptest::prop_assert!(id(message).is_some());
        }

        /// Overflow checks are on in the test profile: kmsg lines with any seq and stamp, u64
        /// extremes included, analyse without a panic.
        #[test]
        fn any_kmsg_lines_analyse_without_overflow(
            lines in proptest::collection::vec(
                (
                    proptest::prop_oneof![proptest::prelude::any::<u64>(), 0u64..30, proptest::strategy::Just(u64::MAX)],
                    proptest::prop_oneof![proptest::prelude::any::<u64>(), proptest::strategy::Just(u64::MAX)],
                    0usize..3,
                ),
                0..30,
            )
        ) {
            const MESSAGES: [&str; 3] = [
                "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE",
                "amdgpu 0000:c1:00.0: amdgpu: GPU reset(1) succeeded!",
                "usb 1-1: new device",
            ];
            let text: String = lines
                .iter()
                .map(|(seq, ts, m)| format!("3,{seq},{ts},-;{}\n", MESSAGES[*m]))
                .collect();
            let s = analyze_text(&text, classifier(), 2025, |_| true);
            proptest::prop_assert_eq!(s.events.len(), lines.len());
        }
    }
}
