//! Turns log entries (live records or saved lines) into events, incident updates and lost-record notices.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::classify::Classifier;
pub use nodectl_model::KernelEvent;

use super::incident::{EventPlace, Incident, IncidentTracker};
use super::offline::{JournalYear, LineFormat, LogLine};
use super::reader::follows_plausibly;
use super::record::{Record, pci_of_device};
use crate::limits::{MAX_HELD_INCIDENTS, MAX_SAVED_LINE_BYTES};
use nodectl_model::kfd_smi::SmiRecord;
use nodectl_model::line_reader;
use nodectl_model::{Class, Source};

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
    /// Fed in by `nodectl-agent inject`, not read from the log.
    pub injected: bool,
}

impl Entry {
    /// A drill: `message` as if the kernel had logged it at `monotonic_usec`, marked injected.
    pub fn injected(
        message: String,
        monotonic_usec: Option<u64>,
        boot_time: Option<jiff::Timestamp>,
    ) -> Self {
        let time = boot_time
            .zip(monotonic_usec)
            .and_then(|(boot, usec)| nodectl_model::clock::at_monotonic(boot, usec))
            .or_else(|| Some(jiff::Timestamp::now()));
        Entry {
            seq: None,
            line: None,
            monotonic_usec,
            time,
            facility: 0,
            level: Some(3),
            message,
            subsystem: None,
            device: None,
            injected: true,
        }
    }

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
            injected: false,
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
            injected: false,
        }
    }
}

/// One KFD SMI record and where it sits.
#[derive(Debug, Clone, Default)]
pub struct SmiEntry {
    pub record: SmiRecord,
    /// Its number in this boot (the live channel), `None` in a saved file.
    pub cursor: Option<u64>,
    /// Line number in a saved file of records.
    pub line: Option<u64>,
    /// When it was read, on the kernel log's clock: records of resets carry no time of their
    /// own, and the reading time is what puts them beside the kernel log's lines.
    pub monotonic_usec: Option<u64>,
    pub time: Option<jiff::Timestamp>,
    /// PCI address of the GPU whose channel gave it.
    pub device: Option<String>,
    /// The container and pod of its pid, as the live reader found them.
    pub placement: BTreeMap<String, String>,
    /// A drill (`nodectl-agent inject` of a KFD SMI rule).
    pub injected: bool,
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
    /// The KFD channel's GPU resets, per device: a record the kernel dropped shows as a gap.
    resets: BTreeMap<Option<String>, ResetSequence>,
}

/// The reset records of one GPU's KFD channel so far. The kernel drops a record without a
/// trace when the channel's 8 KiB buffer is full; a pre-reset without its post-reset, or a
/// reset number skipped, is how that shows.
#[derive(Debug, Default)]
struct ResetSequence {
    last_seq: Option<u32>,
    /// The pre-reset whose post-reset has not come yet.
    open: Option<u32>,
}

impl ResetSequence {
    /// What this record says was dropped before it, if anything.
    fn follow(&mut self, record: &SmiRecord) -> Option<String> {
        use nodectl_model::kfd_smi::SmiEventKind;
        let seq = record.reset_seq?;
        let mut gaps = Vec::new();
        match record.kind {
            SmiEventKind::GpuPreReset => {
                if let Some(open) = self.open {
                    gaps.push(format!("the post-reset of reset {open} never came"));
                }
                if let Some(last) = self.last_seq
                    && seq > last.saturating_add(1)
                {
                    gaps.push(if seq == last + 2 {
                        format!("reset {} was not seen", last + 1)
                    } else {
                        format!("resets {}..={} were not seen", last + 1, seq - 1)
                    });
                }
                self.open = Some(seq);
            }
            SmiEventKind::GpuPostReset => {
                // Before any reset record (an agent that started mid-reset, a file cut there)
                // nothing says a pre-reset was dropped.
                if self.last_seq.is_some() && self.open != Some(seq) {
                    gaps.push(format!("the pre-reset of reset {seq} never came"));
                }
                self.open = None;
            }
            _ => return None,
        }
        self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
        (!gaps.is_empty()).then(|| {
            format!(
                "{}: the KFD channel dropped records (its buffer was full)",
                gaps.join("; ")
            )
        })
    }
}

impl Analyzer {
    pub fn new(classifier: Arc<Classifier>) -> Self {
        Self {
            incidents: IncidentTracker::new(classifier.clone()),
            classifier,
            resets: BTreeMap::new(),
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
            source: Source::Kmsg,
            cursor: entry.seq,
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
            injected: entry.injected,
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
            rule.role(),
            EventPlace {
                source: Source::Kmsg,
                seq: event.seq,
                line: event.line,
                monotonic_usec: event.monotonic_usec,
                time: event.time,
                device: event.device.as_deref(),
                process: event.fields.get("process").map(String::as_str),
                pid: event.fields.get("pid").and_then(|p| p.parse().ok()),
                injected: event.injected,
            },
            &mut updates,
        );
        out.push(Output::Event(event));
        out.extend(updates.into_iter().map(Output::Incident));
    }

    /// Classifies one KFD SMI record; pushes its event, then any incident updates it caused.
    pub fn push_smi(&mut self, smi: SmiEntry, out: &mut Vec<Output>) {
        let record = smi.record;
        let mut fields = BTreeMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                fields.insert(key.to_owned(), value);
            }
        };
        put("smi_event", Some(record.kind.as_str().to_owned()));
        put("pid", record.pid.map(|p| p.to_string()));
        put("process", record.comm.clone());
        put("gpu_id", record.gpu_id.map(|g| g.to_string()));
        put("reset_seq", record.reset_seq.map(|n| n.to_string()));
        put(
            "reset_cause",
            record.reset_cause.clone().filter(|c| !c.is_empty()),
        );
        put("trigger", record.trigger.clone());
        put(
            "address",
            record.address_pages.map(|a| format!("{:#x}", a << 12)),
        );
        put("boottime_ns", record.boottime_ns.map(|n| n.to_string()));
        put("unparsed", record.unparsed.clone());
        put(
            "sequence_gap",
            self.resets
                .entry(smi.device.clone())
                .or_default()
                .follow(&record),
        );
        fields.extend(smi.placement);
        let rule = self.classifier.classify_smi(&record);
        let mut event = KernelEvent {
            source: Source::KfdSmi,
            cursor: smi.cursor,
            seq: None,
            line: smi.line,
            monotonic_usec: smi.monotonic_usec,
            time: smi.time,
            class: rule.map(|r| r.class),
            id: rule.map(|r| r.id.clone()),
            device: smi.device,
            fields,
            facility: 0,
            level: None,
            user_written: false,
            subsystem: None,
            message: record.raw,
            injected: smi.injected,
        };
        let Some(rule) = rule else {
            out.push(Output::Event(event));
            return;
        };
        let mut updates = Vec::new();
        self.incidents.add(
            rule.role(),
            EventPlace {
                source: Source::KfdSmi,
                seq: None,
                line: event.line,
                monotonic_usec: event.monotonic_usec,
                time: event.time,
                device: event.device.as_deref(),
                process: event.fields.get("process").map(String::as_str),
                // The process of a faulting thread, when the reader found it: what a run's
                // pid is compared with.
                pid: event
                    .fields
                    .get("tgid")
                    .and_then(|t| t.parse().ok())
                    .or(record.pid),
                injected: event.injected,
            },
            &mut updates,
        );
        event.level = Some(if rule.class == Class::Info { 6 } else { 3 });
        out.push(Output::Event(event));
        out.extend(updates.into_iter().map(Output::Incident));
    }

    /// The incident tracker: what a restarted pipeline saves and takes up again.
    pub fn incidents(&self) -> &IncidentTracker {
        &self.incidents
    }

    pub fn incidents_mut(&mut self) -> &mut IncidentTracker {
        &mut self.incidents
    }

    /// The ids of the incidents open now.
    pub fn open_incident_ids(&self) -> Vec<u64> {
        self.incidents.open_ids()
    }

    /// The incident open longest, if any.
    pub fn oldest_open_incident(&self) -> Option<&Incident> {
        self.incidents.oldest_open()
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

/// What reading a saved log counted, besides its events and incidents.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct LogCounts {
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

impl LogCounts {
    /// Whether the log's lines carry kernel sequence numbers (kmsg records do).
    pub fn has_sequence_numbers(&self) -> bool {
        self.formats.contains_key(&LineFormat::Kmsg)
    }

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

/// Result of analysing a whole saved log, held in memory (for logs known to be small).
#[derive(Debug, Default, serde::Serialize)]
pub struct LogSummary {
    pub events: Vec<KernelEvent>,
    /// Final state of every incident, in the order they began.
    pub incidents: Vec<Incident>,
    #[serde(flatten)]
    pub counts: LogCounts,
}

/// What a saved log gives as it is read, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Event(KernelEvent),
    /// A closed incident; incidents come in the order they began (see [`MAX_HELD_INCIDENTS`]).
    Incident(Incident),
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

/// [`analyze_text`] over lines as they come: memory stays with what `keep` keeps and the
/// incidents, not with the size of the log.
pub fn analyze_lines<L: AsRef<str>>(
    lines: impl Iterator<Item = L>,
    classifier: Arc<Classifier>,
    year: i16,
    mut keep: impl FnMut(&KernelEvent) -> bool,
) -> LogSummary {
    let mut events = Vec::new();
    let mut incidents = Vec::new();
    let mut log = SavedLog::new(classifier, JournalYear::given(year), |found| {
        match found {
            Found::Event(e) if keep(&e) => events.push(e),
            Found::Event(_) => {}
            Found::Incident(i) => incidents.push(i),
        }
        ControlFlow::Continue(())
    });
    for line in lines {
        log.push(line.as_ref());
    }
    let counts = log.finish();
    incidents.sort_by_key(start_of);
    LogSummary {
        events,
        incidents,
        counts,
    }
}

/// Literals at least one of which every GPU marker holds (`amdgpu`; `drm` of `[drm`, `drm:`,
/// `drmn`; `kfd`; `TTM]` of `[TTM]`; `ttm:`), so a line without any holds no GPU event: each
/// is one SIMD search over a whole read, far faster than one automaton for all of them.
const GPU_MARKER_LITERALS: [&str; 5] = ["amdgpu", "drm", "kfd", "TTM]", "ttm:"];

static GPU_MARKER_FINDERS: std::sync::LazyLock<Vec<memchr::memmem::Finder<'static>>> =
    std::sync::LazyLock::new(|| {
        GPU_MARKER_LITERALS
            .iter()
            .map(|l| memchr::memmem::Finder::new(l.as_bytes()))
            .collect()
    });

/// Analyses a saved log straight from a reader, for a log of any size, giving each event and
/// each closed incident to `sink` as it is found (memory stays with the open incidents and the
/// counts; `sink` stops the reading by breaking). Lines are cut out of the reader's buffer (no
/// copy unless one spans two reads, each cut at [`MAX_SAVED_LINE_BYTES`] with a marker),
/// invalid UTF-8 becomes U+FFFD, and when unclassified events are not wanted one search over
/// each read finds the lines with a GPU marker, the only ones whose message is read; the rest
/// are read only for their format and sequence number. `years` dates journal lines.
pub fn analyze_reader(
    reader: impl std::io::BufRead,
    classifier: Arc<Classifier>,
    years: JournalYear,
    unclassified_wanted: bool,
    sink: impl FnMut(Found) -> ControlFlow<()>,
) -> std::io::Result<LogCounts> {
    let mut lines = SavedLogLines {
        log: SavedLog::new(classifier, years, sink),
        unclassified_wanted,
        markers: Vec::new(),
    };
    line_reader::read_lines(reader, MAX_SAVED_LINE_BYTES, &mut lines)?;
    if lines.log.stopped {
        return Ok(lines.log.summary);
    }
    Ok(lines.log.finish())
}

/// A saved log fed by the line reader: the runs of whole lines searched once for GPU markers
/// when only classified events are wanted.
struct SavedLogLines<S> {
    log: SavedLog<S>,
    unclassified_wanted: bool,
    /// Where the markers of the current run are, reused from run to run.
    markers: Vec<usize>,
}

impl<S: FnMut(Found) -> ControlFlow<()>> line_reader::LineSink for SavedLogLines<S> {
    fn text_lines(&mut self, text: &str) -> ControlFlow<()> {
        if self.unclassified_wanted {
            let mut from = 0;
            for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
                self.text_line(text.get(from..end).unwrap_or_default())?;
                from = end + 1;
            }
            return self.flow();
        }
        self.markers.clear();
        for finder in GPU_MARKER_FINDERS.iter() {
            self.markers.extend(finder.find_iter(text.as_bytes()));
        }
        self.markers.sort_unstable();
        let mut next_marker = self.markers.iter().copied().peekable();
        let mut from = 0;
        for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
            while next_marker.next_if(|&at| at < from).is_some() {}
            let marked = next_marker.peek().is_some_and(|&at| at < end);
            let line = text.get(from..end).unwrap_or_default();
            if line.len() > MAX_SAVED_LINE_BYTES {
                self.log.push_bytes(line.as_bytes(), false);
            } else if marked {
                self.log.push(line);
            } else {
                self.log.push_unmarked(line);
            }
            from = end + 1;
        }
        self.flow()
    }

    fn text_line(&mut self, line: &str) -> ControlFlow<()> {
        self.log.push_bytes(line.as_bytes(), false);
        self.flow()
    }

    fn raw_line(&mut self, line: line_reader::RawLine<'_>) -> ControlFlow<()> {
        self.log.push_bytes(line.bytes, line.cut);
        self.flow()
    }
}

impl<S> SavedLogLines<S> {
    fn flow(&self) -> ControlFlow<()> {
        if self.log.stopped {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// The state of one saved log being analysed, a line at a time.
struct SavedLog<S> {
    analyzer: Analyzer,
    summary: LogCounts,
    out: Vec<Output>,
    /// A kmsg record whose dictionary lines may follow.
    pending: Option<Entry>,
    /// The line before was a kmsg record read only for its format: its dictionary lines are
    /// counted, not read.
    after_unread_record: bool,
    last_seq: Option<u64>,
    /// The number of the plain line pushed last: recognised if a rule classifies it.
    plain_line: Option<u64>,
    years: JournalYear,
    /// Closed incidents waiting for those that began before them (by start, then arrival).
    held: BTreeMap<(IncidentStart, u64), Incident>,
    /// Incidents closed so far: the arrival order of `held`.
    closed: u64,
    sink: S,
    /// The sink asked to stop.
    stopped: bool,
}

/// Where an incident began: the order incidents are given in.
type IncidentStart = (Option<u64>, Option<u64>, u64);

fn start_of(incident: &Incident) -> IncidentStart {
    (
        incident.first_line,
        incident.first_seq,
        incident.incident_id,
    )
}

impl<S: FnMut(Found) -> ControlFlow<()>> SavedLog<S> {
    fn new(classifier: Arc<Classifier>, years: JournalYear, sink: S) -> Self {
        SavedLog {
            analyzer: Analyzer::new(classifier),
            summary: LogCounts::default(),
            out: Vec::new(),
            pending: None,
            after_unread_record: false,
            last_seq: None,
            plain_line: None,
            years,
            held: BTreeMap::new(),
            closed: 0,
            sink,
            stopped: false,
        }
    }

    fn give(&mut self, found: Found) {
        if !self.stopped {
            self.stopped = (self.sink)(found).is_break();
        }
    }

    /// A line as bytes: cut at [`MAX_SAVED_LINE_BYTES`] with a marker, invalid UTF-8 as U+FFFD,
    /// a trailing `\r` dropped.
    fn push_bytes(&mut self, bytes: &[u8], cut: bool) {
        let cut = cut || bytes.len() > MAX_SAVED_LINE_BYTES;
        let bytes = &bytes[..bytes.len().min(MAX_SAVED_LINE_BYTES)];
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let mut text = String::from_utf8_lossy(bytes);
        if cut {
            self.summary.lines_cut += 1;
            text.to_mut().push_str(" …(line cut)");
        }
        self.push(&text);
    }

    /// Counts the line and reads a kmsg record's dictionary line; `true` when that was all.
    fn begin(&mut self, line: &str) -> bool {
        self.summary.lines_read += 1;
        let is_dictionary = self.pending.is_some() || self.after_unread_record;
        if is_dictionary && let Some((key, value)) = super::offline::dictionary_entry(line) {
            self.summary.lines_recognised += 1;
            if let Some(entry) = self.pending.as_mut() {
                match key {
                    "DEVICE" => entry.device = Some(value.to_owned()),
                    "SUBSYSTEM" => entry.subsystem = Some(value.to_owned()),
                    _ => {}
                }
            }
            return true;
        }
        self.after_unread_record = false;
        if let Some(entry) = self.pending.take() {
            self.analyzer.push(entry, &mut self.out);
            self.sink();
        }
        line.is_empty()
    }

    /// Counts a line's format, and a kmsg record's sequence number.
    fn count(&mut self, format: LineFormat, seq: Option<u64>) {
        let number = self.summary.lines_read;
        if format.is_kernel_log() {
            self.summary.lines_recognised += 1;
        } else {
            self.plain_line = Some(number);
        }
        if format != LineFormat::Plain {
            *self.summary.formats.entry(format).or_insert(0) += 1;
        }
        if let Some(seq) = seq {
            match self.last_seq {
                Some(last) if !follows_plausibly(last, seq) => self.summary.seq_restarts += 1,
                Some(last) if seq > last.saturating_add(1) => {
                    self.analyzer.lost(last + 1, seq - 1, &mut self.out);
                }
                _ => {}
            }
            self.last_seq = Some(seq);
        }
    }

    fn push(&mut self, line: &str) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if self.begin(line) {
            return;
        }
        let parsed = super::offline::parse_dated(line, &mut self.years);
        if parsed.format == LineFormat::Plain && self.push_smi(line) {
            return;
        }
        self.count(parsed.format, parsed.seq);
        let is_kmsg = parsed.format == LineFormat::Kmsg;
        let entry = Entry::from_line(parsed, self.summary.lines_read);
        if is_kmsg {
            // Its dictionary lines may follow.
            self.pending = Some(entry);
        } else {
            self.analyzer.push(entry, &mut self.out);
        }
        self.sink();
    }

    /// A line without a GPU marker, when unclassified events are not wanted: it can be no
    /// event, so only its format and sequence number are read.
    fn push_unmarked(&mut self, line: &str) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if self.begin(line) {
            return;
        }
        let (format, seq) = super::offline::line_format(line, &mut self.years);
        if format == LineFormat::Plain && self.push_smi(line) {
            return;
        }
        self.count(format, seq);
        self.after_unread_record = format == LineFormat::Kmsg;
        self.sink();
    }

    /// A line that is a KFD SMI record: read as the channel's event. Records carry no time a
    /// line of the kernel log has (resets none at all), so they take part in incidents by
    /// their place in the file.
    fn push_smi(&mut self, line: &str) -> bool {
        let Some(record) = nodectl_model::kfd_smi::parse_saved_line(line) else {
            return false;
        };
        self.count(LineFormat::KfdSmi, None);
        let entry = SmiEntry {
            record,
            line: Some(self.summary.lines_read),
            ..SmiEntry::default()
        };
        self.analyzer.push_smi(entry, &mut self.out);
        self.sink();
        true
    }

    fn sink(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        let mut closed_any = false;
        for o in out.drain(..) {
            match o {
                Output::Event(e) => {
                    if e.id.is_some() && e.line.is_some() && self.plain_line == e.line {
                        self.summary.lines_recognised += 1;
                        self.plain_line = None;
                    }
                    self.give(Found::Event(e));
                }
                Output::Incident(i) => {
                    if i.closed {
                        self.closed += 1;
                        self.held.insert((start_of(&i), self.closed), i);
                        closed_any = true;
                    }
                }
                Output::Lost {
                    first_seq,
                    last_seq,
                } => {
                    self.summary.records_lost = self
                        .summary
                        .records_lost
                        .saturating_add(last_seq.saturating_sub(first_seq).saturating_add(1));
                }
            }
        }
        // The buffer is kept for the next line.
        self.out = out;
        if closed_any {
            self.release(false);
        }
    }

    /// Gives the held incidents that no open incident began before (all of them at the end),
    /// and the earliest past [`MAX_HELD_INCIDENTS`].
    fn release(&mut self, all: bool) {
        let open_since = self.analyzer.oldest_open_incident().map(start_of);
        loop {
            let crowded = self.held.len() > MAX_HELD_INCIDENTS;
            let Some(entry) = self.held.first_entry() else {
                break;
            };
            if !(all || crowded || open_since.is_none_or(|open| entry.key().0 < open)) {
                break;
            }
            let incident = entry.remove();
            self.give(Found::Incident(incident));
        }
    }

    fn finish(mut self) -> LogCounts {
        if let Some(entry) = self.pending.take() {
            self.analyzer.push(entry, &mut self.out);
        }
        self.analyzer.finish(&mut self.out);
        self.sink();
        self.release(true);
        self.summary
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn classifier() -> Arc<Classifier> {
        Arc::new(Classifier::embedded().unwrap())
    }

    #[test]
    fn a_fault_of_a_thread_is_the_incident_of_its_process() {
        let mut analyzer = Analyzer::new(classifier());
        let mut out = Vec::new();
        analyzer.push_smi(
            SmiEntry {
                record: nodectl_model::kfd_smi::parse_record(b"1 10e1:llama-server"),
                placement: [("tgid".to_owned(), "4242".to_owned())].into(),
                ..SmiEntry::default()
            },
            &mut out,
        );
        let incident = out
            .iter()
            .find_map(|o| match o {
                Output::Incident(i) => Some(i),
                _ => None,
            })
            .unwrap();
        // The record names thread 4321 (0x10e1); the incident, its process.
        assert_eq!(incident.pid, Some(4242));
        assert_eq!(incident.process.as_deref(), Some("llama-server"));
        let Some(Output::Event(event)) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(event.fields.get("pid").map(String::as_str), Some("4321"));
    }

    #[test]
    fn dropped_reset_records_show_on_the_record_after_them() {
        let mut resets = ResetSequence::default();
        let mut follow =
            |line: &str| resets.follow(&nodectl_model::kfd_smi::parse_record(line.as_bytes()));
        let dropped = |what: &str| {
            Some(format!(
                "{what}: the KFD channel dropped records (its buffer was full)"
            ))
        };
        // Started mid-reset: a post-reset first says nothing.
        assert_eq!(follow("4 1 "), None);
        assert_eq!(follow("3 2 MES hang"), None);
        assert_eq!(follow("4 2 "), None);
        // Resets 3 and 4 were dropped whole.
        assert_eq!(
            follow("3 5 MES hang"),
            dropped("resets 3..=4 were not seen")
        );
        // Reset 5's post-reset was dropped.
        assert_eq!(
            follow("3 6 MES hang"),
            dropped("the post-reset of reset 5 never came")
        );
        assert_eq!(
            follow("4 9 "),
            dropped("the pre-reset of reset 9 never came")
        );
        assert_eq!(follow("1 10e1:llama-server"), None);
    }

    /// [`analyze_reader`] collected, as [`analyze_lines`] collects.
    fn read_all(
        reader: impl std::io::BufRead,
        classifier: Arc<Classifier>,
        unclassified_wanted: bool,
        keep: impl Fn(&KernelEvent) -> bool,
    ) -> LogSummary {
        let mut s = LogSummary::default();
        s.counts = analyze_reader(
            reader,
            classifier,
            JournalYear::given(2025),
            unclassified_wanted,
            |found| {
                match found {
                    Found::Event(e) if keep(&e) => s.events.push(e),
                    Found::Event(_) => {}
                    Found::Incident(i) => s.incidents.push(i),
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        s
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
        assert_eq!(s.counts.records_lost, 2);
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
        assert_eq!(s.counts.records_lost, 2, "4 and 5 between 3 and 6");
        assert_eq!(s.counts.seq_restarts, 2);
        assert_eq!(s.events.len(), 4);
    }

    fn ring_timeout(device: &str) -> String {
        format!("amdgpu {device}: amdgpu: ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=2")
    }

    #[test]
    fn incidents_come_in_the_order_they_began_even_when_a_later_one_closes_first() {
        let (a, b) = ("0000:c1:00.0", "0000:c2:00.0");
        let log = format!(
            "[10.0] {}\n[10.1] {}\n[15.0] {}\n[20.0] {}\n[25.0] {}\n[30.0] {}\n",
            ring_timeout(a),
            ring_timeout(b),
            ring_timeout(a),
            ring_timeout(a),
            ring_timeout(a),
            ring_timeout(a)
        );
        // b's incident closes at 25.0, quiet for more than the gap; a's only at the end.
        let s = read_all(log.as_bytes(), classifier(), false, |_| false);
        let devices: Vec<_> = s.incidents.iter().map(|i| i.device.as_deref()).collect();
        assert_eq!(devices, [Some(a), Some(b)]);
        assert_eq!(s.incidents[0].event_counts["ring_timeout"], 5);
    }

    #[test]
    fn open_and_held_incidents_are_bounded() {
        // Lines without a time never close an incident by the gap: one device busy all through
        // the log, and a new device on every other line.
        let busy = ring_timeout("0000:c1:00.0");
        let open_cap = crate::limits::MAX_OPEN_INCIDENTS;
        let others = MAX_HELD_INCIDENTS + 4 * open_cap;
        let mut log = String::new();
        for n in 0..others {
            log.push_str(&format!("{busy}\n"));
            log.push_str(&ring_timeout(&format!(
                "0001:{:02x}:{:02x}.0",
                n / 256,
                n % 256
            )));
            log.push('\n');
        }
        let mut events = 0usize;
        let mut first_incident_after = None;
        let mut incidents = Vec::new();
        let counts = analyze_reader(
            log.as_bytes(),
            classifier(),
            JournalYear::given(2025),
            false,
            |found| {
                match found {
                    Found::Event(_) => events += 1,
                    Found::Incident(i) => {
                        first_incident_after.get_or_insert(events);
                        incidents.push(i);
                    }
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(counts.lines_read, 2 * others as u64);
        assert_eq!(incidents.len(), others + 1, "every incident closed once");
        // Incidents came out while the log was still being read: held back behind the busy
        // device's, which began first, until more than the bound were waiting.
        assert!(
            first_incident_after.is_some_and(|n| n < events - 2 * open_cap),
            "{first_incident_after:?} of {events}"
        );
        let mut analyzer = Analyzer::new(classifier());
        let mut out = Vec::new();
        for n in 0..others {
            let entry = Entry {
                line: Some(n as u64 + 1),
                message: ring_timeout(&format!("0001:{:02x}:{:02x}.0", n / 256, n % 256)),
                ..Entry::default()
            };
            analyzer.push(entry, &mut out);
            assert!(analyzer.open_incident_ids().len() <= open_cap);
        }
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

    /// Every marker of a GPU message holds a literal the reader searches for.
    #[test]
    fn the_marker_literals_cover_every_marker() {
        for marker in super::super::classify::GPU_STACK_PREFIXES {
            assert!(
                GPU_MARKER_LITERALS.iter().any(|l| marker.contains(l)),
                "{marker}"
            );
        }
    }

    #[test]
    fn the_reader_cuts_long_lines_and_replaces_invalid_bytes() {
        let long = "x".repeat(MAX_SAVED_LINE_BYTES * 3);
        let mut input = format!("first\r\n{long}\nlast").into_bytes();
        input.extend_from_slice(b"\n\xff\xfe\n");
        for capacity in [100, 1 << 20] {
            let reader = std::io::BufReader::with_capacity(capacity, input.as_slice());
            let s = read_all(reader, classifier(), true, |_| true);
            let messages: Vec<&str> = s.events.iter().map(|e| e.message.as_str()).collect();
            assert_eq!(messages.len(), 4, "{capacity}");
            assert_eq!(messages[0], "first");
            assert!(
                messages[1].len() < MAX_SAVED_LINE_BYTES + 20
                    && messages[1].ends_with("(line cut)")
            );
            assert_eq!(messages[2], "last");
            assert_eq!(messages[3], "\u{fffd}\u{fffd}");
            assert_eq!((s.counts.lines_read, s.counts.lines_cut), (4, 1));
        }
        let empty = read_all(&b""[..], classifier(), false, |_| true);
        assert_eq!(empty.counts.lines_read, 0);
    }

    /// What the reader's fast path must leave as it was: every classified event, incident and
    /// count.
    fn outcome(s: &LogSummary) -> String {
        let events: Vec<_> = s
            .events
            .iter()
            .filter(|e| e.id.is_some())
            .map(|e| (e.line, format!("{:?} {:?} {:?}", e.id, e.device, e.fields)))
            .collect();
        format!("{events:?}\n{:?}\n{:?}", s.incidents, s.counts)
    }

    proptest::proptest! {
        /// Reading only the marked lines whole gives what reading every line does, whatever
        /// the mix of formats and where the reads end.
        #[test]
        fn the_fast_reader_finds_what_reading_every_line_finds(
            picks in proptest::collection::vec((0usize..1000, 0usize..13, 0usize..6), 0..60),
            capacity in 1usize..400,
        ) {
            static C: std::sync::LazyLock<Arc<Classifier>> = std::sync::LazyLock::new(classifier);
            static MESSAGES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(catalogue_messages);
            const OTHER: [&str; 4] = [
                "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
                "EXT4-fs (nvme0n1p3): mounted filesystem",
                " SUBSYSTEM=pci",
                "",
            ];
            let mut text = String::new();
            for (seq, (pick, style, kind)) in picks.iter().enumerate() {
                let message = match kind {
                    0..=2 => MESSAGES[pick % MESSAGES.len()].clone(),
                    _ => OTHER[pick % OTHER.len()].to_owned(),
                };
                let line = match (kind, style) {
                    (_, 0) => format!("3,{},{},-;{message}\n DEVICE=+pci:0000:c1:00.0", seq * 2, seq * 1000),
                    (5, _) => message,
                    _ => prefixed(*style, &message),
                };
                text.push_str(&line);
                text.push('\n');
            }
            let every_line = analyze_lines(text.lines(), C.clone(), 2025, |e| e.id.is_some());
            let reader = std::io::BufReader::with_capacity(capacity, text.as_bytes());
            let fast = read_all(reader, C.clone(), false, |e| e.id.is_some());
            proptest::prop_assert_eq!(outcome(&fast), outcome(&every_line));
        }

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
