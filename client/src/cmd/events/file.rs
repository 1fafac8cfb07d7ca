//! `nodectl events --file`: a saved kernel log printed as it is read (a table, one JSON or YAML document, or JSON lines with `--follow`), in memory bounded by a window of events, the open incidents and the counts, whatever the size of the log.
//!
//! Events are written as they are found. Incidents come after the events in every form, so
//! the closed ones wait for the end in a [`Spool`] (memory up to a size, then an unnamed
//! temporary file), already rendered. The JSON and YAML documents have the shape of
//! [`EventsReport`] (a test holds them to it); the table's columns are laid out from the
//! first events ([`WINDOW_EVENTS`]) and kept for the rest.

use std::collections::BTreeMap;
use std::io::{BufRead, Read as _, Seek as _, Write as _};
use std::ops::ControlFlow;

use anyhow::Context as _;
use nodectl_model::{Class, Incident, KernelEvent, Source};

#[cfg(test)]
use super::EventsReport;
use super::{
    EventsArgs, EventsLayout, IncidentsLayout, InputCounts, ReportTail, count_line, counts_table,
    event_line, incident_cells, incident_line, notes,
};
use crate::embedded::{self, Found, JournalYear, LogCounts};
use crate::exit::ExitStatus;
use crate::render::{self, Format, Output, StreamingTable};

/// Events held before anything is printed: enough to lay out the table's columns from, and
/// all of a short log, so that an input that turns out empty or not a kernel log prints nothing
/// but its error.
const WINDOW_EVENTS: usize = 1000;

/// Incidents the incidents' table is laid out from (it is printed at the end, from the spool):
/// their kinds, processes and counts are much alike, and each row is several lines to lay out.
const WINDOW_INCIDENTS: usize = 256;

/// Room kept in the table for line and sequence numbers after the first rows: ten digits, a
/// log of ten billion lines.
const NUMBER_DIGITS: u16 = 10;

/// Room kept for seconds since boot (`1234567.890123`): uptimes up to 115 days.
const SECONDS_DIGITS: u16 = 14;

/// Bytes of messages the held events may have (a message can be 64 KiB): the window ends at
/// whichever bound comes first.
const WINDOW_BYTES: usize = 1 << 20;

/// Bytes of rendered incidents kept in memory for the end of the output; past it they go to an
/// unnamed temporary file, so a log of a million incidents costs disk, not memory.
const SPOOL_MEMORY_BYTES: usize = 1 << 20;

/// A saved log's read size (one for every saved log; see there).
const SAVED_LOG_READ_BYTES: usize = nodectl_model::line_reader::READ_BUFFER_BYTES;

/// Runs `nodectl events --file FILE`.
pub(super) fn run(
    args: &EventsArgs,
    classes: &[Class],
    mut cursors: BTreeMap<Source, u64>,
    format: Format,
    file: &str,
) -> anyhow::Result<ExitStatus> {
    let name = if file == "-" { "standard input" } else { file };
    let since = cursors.remove(&Source::Kmsg).unwrap_or_default();
    if let Some(source) = cursors.keys().next() {
        anyhow::bail!(
            "--since-cursor {}: a saved log's records of that source carry no cursor; only kmsg=SEQ applies to a file",
            source.as_str()
        );
    }
    let years = JournalYear::given_or_today(args.year);
    let lines = args.follow && !args.summary;
    let document: Box<dyn Document> = match format {
        _ if lines => Box::new(Lines { format }),
        Format::Table => Box::<TableDocument>::default(),
        Format::Json => Box::<JsonDocument>::default(),
        Format::Yaml => Box::<YamlDocument>::default(),
    };
    let mut reading = Reading {
        filter: Filter {
            since,
            classes,
            unclassified: args.include_unclassified,
            summary: args.summary,
        },
        counts: BTreeMap::new(),
        // JSON lines go out at once, as `--follow` promises.
        window: (!lines).then(Vec::new),
        window_bytes: 0,
        document,
        out: Output::stdout(),
        failed: None,
    };
    let read = embedded::analyze_saved_log(
        open_input(file)?,
        years,
        classes,
        args.include_unclassified,
        |found| reading.take(found),
    )?;
    if let Some(error) = reading.failed.take() {
        return Err(error);
    }
    let problem = problem(&read, name, since);
    // Nothing printed yet: the error is all there is to say, as for a short log before.
    if let (Some(problem), Some(_)) = (&problem, &reading.window) {
        anyhow::bail!("{problem}");
    }
    let tail = ReportTail {
        records_lost: read.records_lost,
        seq_restarts: read.seq_restarts,
        lagged: 0,
        counts: std::mem::take(&mut reading.counts)
            .into_iter()
            .map(|((class, id), n)| (format!("{class}/{id}"), n))
            .collect(),
        input: Some(InputCounts {
            lines_read: read.lines_read,
            lines_recognised: read.lines_recognised,
            lines_cut: read.lines_cut,
            format: read.format(),
            lines_by_format: read
                .formats
                .iter()
                .map(|(f, n)| (f.as_str().to_owned(), *n))
                .collect(),
        }),
    };
    reading.end(&tail)?;
    // Found only after output began (a huge input of no kernel log line): the document is
    // whole, and the exit code still says the input was wrong.
    if let Some(problem) = problem {
        anyhow::bail!("{problem}");
    }
    Ok(ExitStatus::Ok)
}

/// What makes the input an error rather than a log without events.
fn problem(read: &LogCounts, name: &str, since: u64) -> Option<String> {
    if read.lines_read == 0 {
        return Some(format!("{name} is empty: there is no kernel log to read"));
    }
    if read.lines_recognised == 0 {
        return Some(format!(
            "{name}: none of the {} line{} read is a kernel log line (a /dev/kmsg record, dmesg [-T|-x], journalctl or syslog, talosctl dmesg) or a known GPU message; is it the right input?",
            read.lines_read,
            if read.lines_read == 1 { "" } else { "s" }
        ));
    }
    if since > 0 && !read.has_sequence_numbers() {
        return Some(format!(
            "a start after kernel seq {since} (--since-seq, --since-cursor kmsg=): {name} has no kernel sequence numbers (only kmsg records carry them)"
        ));
    }
    None
}

/// The saved log to read, buffered: a file, or standard input for `-`.
fn open_input(file: &str) -> anyhow::Result<Box<dyn BufRead>> {
    if file == "-" {
        return Ok(Box::new(std::io::BufReader::with_capacity(
            SAVED_LOG_READ_BYTES,
            std::io::stdin(),
        )));
    }
    let opened = std::fs::File::open(file).with_context(|| format!("--file {file}"))?;
    Ok(Box::new(std::io::BufReader::with_capacity(
        SAVED_LOG_READ_BYTES,
        opened,
    )))
}

/// Which events are shown.
struct Filter<'a> {
    since: u64,
    classes: &'a [Class],
    unclassified: bool,
    /// `--summary`: events are counted, not shown.
    summary: bool,
}

/// The log being read and printed.
struct Reading<'a> {
    filter: Filter<'a>,
    /// `--summary`: events by class and id (no allocation per event; named `class/id` at the
    /// end).
    counts: BTreeMap<(&'static str, std::sync::Arc<str>), u64>,
    /// The first events, until [`WINDOW_EVENTS`] or [`WINDOW_BYTES`] or the end; `None` once
    /// given to the document.
    window: Option<Vec<KernelEvent>>,
    window_bytes: usize,
    document: Box<dyn Document>,
    out: Output,
    /// Why printing stopped (the reader is told to stop, then this is returned).
    failed: Option<anyhow::Error>,
}

impl Reading<'_> {
    /// One event or closed incident, as the reader finds it.
    fn take(&mut self, found: Found) -> ControlFlow<()> {
        let done = match found {
            Found::Event(event) => self.event(event),
            Found::Incident(incident) => {
                if incident
                    .last_seq
                    .is_none_or(|last| last > self.filter.since)
                {
                    self.document.incident(&mut self.out, incident)
                } else {
                    Ok(())
                }
            }
        };
        match done {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                self.failed = Some(error);
                ControlFlow::Break(())
            }
        }
    }

    fn event(&mut self, event: KernelEvent) -> anyhow::Result<()> {
        let f = &self.filter;
        let class_wanted = match event.class {
            None => f.unclassified,
            Some(c) => f.classes.is_empty() || f.classes.contains(&c),
        };
        if event.seq.is_some_and(|seq| seq <= f.since) || !class_wanted {
            return Ok(());
        }
        if f.summary {
            let class = event.class.map_or("unclassified", Class::as_str);
            let id = event.id.unwrap_or_else(|| std::sync::Arc::from("-"));
            *self.counts.entry((class, id)).or_insert(0) += 1;
            return Ok(());
        }
        let Some(window) = &mut self.window else {
            return self.document.event(&mut self.out, event);
        };
        self.window_bytes += event.message.len();
        window.push(event);
        if window.len() >= WINDOW_EVENTS || self.window_bytes >= WINDOW_BYTES {
            self.begin(true)?;
        }
        Ok(())
    }

    /// Gives the held events to the document, which starts printing.
    fn begin(&mut self, more: bool) -> anyhow::Result<()> {
        if let Some(window) = self.window.take() {
            self.document.begin(&mut self.out, window, more)?;
        }
        Ok(())
    }

    fn end(&mut self, tail: &ReportTail) -> anyhow::Result<()> {
        self.begin(false)?;
        self.document.end(&mut self.out, tail)?;
        self.out.flush()
    }
}

/// One output form, written as the log is read.
trait Document {
    /// The first events, held until there were enough of them (`more` may follow) or the log
    /// ended; called once, before any other event.
    fn begin(
        &mut self,
        out: &mut Output,
        first: Vec<KernelEvent>,
        _more: bool,
    ) -> anyhow::Result<()> {
        first.into_iter().try_for_each(|e| self.event(out, e))
    }
    fn event(&mut self, out: &mut Output, event: KernelEvent) -> anyhow::Result<()>;
    /// A closed incident, in the order incidents began.
    fn incident(&mut self, out: &mut Output, incident: Incident) -> anyhow::Result<()>;
    /// What follows the events and incidents.
    fn end(&mut self, out: &mut Output, tail: &ReportTail) -> anyhow::Result<()>;
}

/// `--follow`: one line per event and per closed incident, a JSON object (`{"event": …}`,
/// `{"incident": …}`) with `-o json`, as from a node.
struct Lines {
    format: Format,
}

impl Lines {
    fn line(&self, out: &mut Output, value: serde_json::Value, text: String) -> anyhow::Result<()> {
        match self.format {
            Format::Json => {
                let mut line = render::json_compact(&value)?;
                line.push('\n');
                out.structured(&line)
            }
            _ => out.text(&format!("{text}\n")),
        }
    }
}

impl Document for Lines {
    fn event(&mut self, out: &mut Output, event: KernelEvent) -> anyhow::Result<()> {
        let text = event_line(&event);
        self.line(out, serde_json::json!({ "event": event }), text)
    }

    fn incident(&mut self, out: &mut Output, incident: Incident) -> anyhow::Result<()> {
        let text = incident_line(&incident);
        self.line(out, serde_json::json!({ "incident": incident }), text)
    }

    fn end(&mut self, _out: &mut Output, _tail: &ReportTail) -> anyhow::Result<()> {
        Ok(())
    }
}

/// `-o json`: `{"events": [ … ], "incidents": [ … ], "records_lost": …}` written as
/// `serde_json::to_string_pretty` writes [`EventsReport`], an element at a time.
#[derive(Default)]
struct JsonDocument {
    events: u64,
    incidents: Spool,
}

/// `text` (pretty JSON, one value) indented to stand at `depth` levels of two spaces. JSON
/// strings hold no raw newline, so every newline in it is its layout's.
fn indented_json(text: &str, depth: usize) -> String {
    let pad = "  ".repeat(depth);
    format!("{pad}{}", text.replace('\n', &format!("\n{pad}")))
}

/// Elements of a pretty JSON array, from its opening bracket: `[]` when none.
fn json_elements(
    out: &mut Output,
    elements: impl IntoIterator<Item = anyhow::Result<String>>,
) -> anyhow::Result<()> {
    let mut any = false;
    for element in elements {
        out.structured(if any { ",\n" } else { "\n" })?;
        out.structured(&element?)?;
        any = true;
    }
    out.structured(if any { "\n  ]" } else { "]" })
}

impl Document for JsonDocument {
    fn begin(
        &mut self,
        out: &mut Output,
        first: Vec<KernelEvent>,
        _more: bool,
    ) -> anyhow::Result<()> {
        out.structured("{\n  \"events\": [")?;
        first.into_iter().try_for_each(|e| self.event(out, e))
    }

    fn event(&mut self, out: &mut Output, event: KernelEvent) -> anyhow::Result<()> {
        out.structured(if self.events == 0 { "\n" } else { ",\n" })?;
        out.structured(&indented_json(&render::json_pretty(&event)?, 2))?;
        self.events += 1;
        Ok(())
    }

    fn incident(&mut self, _out: &mut Output, incident: Incident) -> anyhow::Result<()> {
        self.incidents
            .push(indented_json(&render::json_pretty(&incident)?, 2))
    }

    fn end(&mut self, out: &mut Output, tail: &ReportTail) -> anyhow::Result<()> {
        out.structured(if self.events == 0 { "]" } else { "\n  ]" })?;
        out.structured(",\n  \"incidents\": [")?;
        json_elements(out, std::mem::take(&mut self.incidents).records()?)?;
        // The tail's fields, as they stand inside its own object.
        let tail = render::json_pretty(tail)?;
        let fields = tail
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_default();
        if !fields.trim().is_empty() {
            out.structured(",")?;
        }
        out.structured(fields)?;
        out.structured("}\n")
    }
}

/// `-o yaml`: the same document as serde-saphyr writes [`EventsReport`], an element at a time
/// (each one a sequence of one, which is how an element of a sequence under a key reads).
#[derive(Default)]
struct YamlDocument {
    events: u64,
    incidents: Spool,
}

impl Document for YamlDocument {
    fn event(&mut self, out: &mut Output, event: KernelEvent) -> anyhow::Result<()> {
        if self.events == 0 {
            out.structured("events:\n")?;
        }
        out.structured(&render::yaml(&[event])?)?;
        self.events += 1;
        Ok(())
    }

    fn incident(&mut self, _out: &mut Output, incident: Incident) -> anyhow::Result<()> {
        self.incidents.push(render::yaml(&[incident])?)
    }

    fn end(&mut self, out: &mut Output, tail: &ReportTail) -> anyhow::Result<()> {
        if self.events == 0 {
            out.structured("events: []\n")?;
        }
        let incidents = std::mem::take(&mut self.incidents);
        if incidents.is_empty() {
            out.structured("incidents: []\n")?;
        } else {
            out.structured("incidents:\n")?;
            for record in incidents.records()? {
                out.structured(&record?)?;
            }
        }
        out.structured(&render::yaml(tail)?)
    }
}

/// The table: events as they come (columns laid out from the first ones), then the count line
/// and the incidents' table, laid out from all of them (see [`IncidentsLayout`]).
#[derive(Default)]
struct TableDocument {
    events: Option<(StreamingTable, EventsLayout)>,
    shown: u64,
    /// Every cell of each incident ([`incident_cells`]) as a JSON array of strings.
    incidents: Spool,
    incidents_layout: IncidentsLayout,
}

impl Document for TableDocument {
    fn begin(
        &mut self,
        out: &mut Output,
        first: Vec<KernelEvent>,
        more: bool,
    ) -> anyhow::Result<()> {
        if first.is_empty() {
            return Ok(());
        }
        let layout = EventsLayout::of(&first);
        let header = layout.header();
        let rows = first.iter().map(|e| layout.row(e)).collect();
        // Lines and sequence numbers, and seconds since boot, grow as the log goes on.
        let later = more.then_some(&[(0, NUMBER_DIGITS), (1, SECONDS_DIGITS)][..]);
        let (table, text) = StreamingTable::start(&header, &[header.len() - 1], rows, later);
        out.text(&layout.preamble())?;
        out.text(&text)?;
        self.shown = u64::try_from(first.len()).unwrap_or(u64::MAX);
        self.events = Some((table, layout));
        Ok(())
    }

    fn event(&mut self, out: &mut Output, event: KernelEvent) -> anyhow::Result<()> {
        let Some((table, layout)) = &mut self.events else {
            return self.begin(out, vec![event], true);
        };
        self.shown += 1;
        match table.row(layout.row(&event)) {
            Some(text) => out.text(&text),
            None => Ok(()),
        }
    }

    fn incident(&mut self, _out: &mut Output, incident: Incident) -> anyhow::Result<()> {
        self.incidents_layout.add(&incident);
        self.incidents
            .push(serde_json::to_string(&incident_cells(&incident))?)
    }

    fn end(&mut self, out: &mut Output, tail: &ReportTail) -> anyhow::Result<()> {
        if let Some((table, _)) = self.events.take() {
            out.text(&table.finish())?;
        }
        let mut text = counts_table(tail);
        text.push_str(&count_line(tail, self.shown));
        out.text(&text)?;
        let incidents = std::mem::take(&mut self.incidents);
        if incidents.is_empty() {
            out.text("No incidents.\n")?;
        } else {
            let layout = &self.incidents_layout;
            let header = layout.header();
            let mut rows = incidents
                .records()?
                .map(|record| -> anyhow::Result<_> {
                    let cells: Vec<String> = serde_json::from_str(&record?)?;
                    Ok(layout.row(cells))
                })
                .peekable();
            let first = rows
                .by_ref()
                .take(WINDOW_INCIDENTS)
                .collect::<anyhow::Result<Vec<_>>>()?;
            // Incident ids are line or sequence numbers, which grow as the log goes on.
            let later = rows.peek().is_some().then_some(&[(0, NUMBER_DIGITS)][..]);
            let (mut table, text) =
                StreamingTable::start(&header, &[header.len() - 1], first, later);
            out.text(&layout.preamble())?;
            out.text(&text)?;
            for row in rows {
                if let Some(text) = table.row(row?) {
                    out.text(&text)?;
                }
            }
            out.text(&table.finish())?;
        }
        out.text(&notes(tail))
    }
}

/// Records kept for the end of the output, in order: in memory up to [`SPOOL_MEMORY_BYTES`],
/// the rest in an unnamed temporary file (gone when closed), each as its length and its bytes.
#[derive(Default)]
struct Spool {
    memory: Vec<String>,
    memory_bytes: usize,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Spool {
    fn push(&mut self, record: String) -> anyhow::Result<()> {
        if self.file.is_none() && self.memory_bytes + record.len() <= SPOOL_MEMORY_BYTES {
            self.memory_bytes += record.len();
            self.memory.push(record);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(std::io::BufWriter::new(
                tempfile::tempfile().context("a temporary file for the incidents")?,
            )),
        };
        let length = u64::try_from(record.len()).unwrap_or(u64::MAX);
        file.write_all(&length.to_le_bytes())?;
        file.write_all(record.as_bytes())?;
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.file.is_none()
    }

    /// The records in the order they came.
    fn records(self) -> anyhow::Result<impl Iterator<Item = anyhow::Result<String>>> {
        let mut file = match self.file {
            Some(file) => {
                let mut file = file.into_inner().map_err(|e| e.into_error())?;
                file.rewind()?;
                Some(std::io::BufReader::new(file))
            }
            None => None,
        };
        let from_file = std::iter::from_fn(move || {
            let reader = file.as_mut()?;
            let mut length = [0u8; 8];
            match reader.read_exact(&mut length) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => return Some(Err(e.into())),
                Ok(()) => {}
            }
            let length = usize::try_from(u64::from_le_bytes(length)).unwrap_or(usize::MAX);
            let mut record = Vec::new();
            Some(
                reader
                    .by_ref()
                    .take(u64::try_from(length).unwrap_or(u64::MAX))
                    .read_to_end(&mut record)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| Ok(String::from_utf8(record)?)),
            )
        });
        Ok(self.memory.into_iter().map(Ok).chain(from_file))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn event(line: u64, message: &str) -> KernelEvent {
        KernelEvent {
            source: nodectl_model::Source::Kmsg,
            cursor: None,
            seq: None,
            line: Some(line),
            monotonic_usec: Some(line * 1000),
            time: None,
            class: Some(Class::Hang),
            id: Some("mes_timeout".into()),
            device: Some("0000:c1:00.0".into()),
            fields: BTreeMap::from([("mes_op".to_owned(), "REMOVE_QUEUE".to_owned())]),
            facility: 0,
            level: Some(3),
            user_written: false,
            subsystem: None,
            message: message.to_owned(),
            injected: false,
        }
    }

    fn incident(id: u64) -> Incident {
        Incident {
            incident_id: id,
            kind: "mes_hang_reset".into(),
            device: Some("0000:c1:00.0".into()),
            first_seq: None,
            last_seq: None,
            first_line: Some(id),
            last_line: Some(id + 3),
            first_monotonic_usec: Some(1),
            last_monotonic_usec: Some(2_500_000),
            first_time: None,
            last_time: None,
            event_counts: BTreeMap::from([
                ("mes_timeout".into(), 2),
                ("gpu_reset_begin".into(), 1),
            ]),
            process: Some("llama-server".into()),
            pid: Some(4242),
            recovered: Some(true),
            closed: true,
            drill: false,
            sources: [nodectl_model::Source::Kmsg].into(),
        }
    }

    fn tail(counts: bool) -> ReportTail {
        ReportTail {
            records_lost: 2,
            seq_restarts: 1,
            lagged: 0,
            counts: if counts {
                BTreeMap::from([("hang/mes_timeout".to_owned(), 3)])
            } else {
                BTreeMap::new()
            },
            input: Some(InputCounts {
                lines_read: 10,
                lines_recognised: 9,
                lines_cut: 0,
                format: "dmesg".to_owned(),
                lines_by_format: BTreeMap::from([("dmesg".to_owned(), 9)]),
            }),
        }
    }

    /// What `document` writes for these events (the first `held` of them as the window) and
    /// incidents.
    fn streamed(
        mut document: impl Document,
        events: &[KernelEvent],
        held: usize,
        incidents: &[Incident],
        tail: &ReportTail,
    ) -> String {
        let mut out = Output::memory();
        let held = held.min(events.len());
        let more = held < events.len();
        document
            .begin(&mut out, events[..held].to_vec(), more)
            .unwrap();
        for e in &events[held..] {
            document.event(&mut out, e.clone()).unwrap();
        }
        for i in incidents {
            document.incident(&mut out, i.clone()).unwrap();
        }
        document.end(&mut out, tail).unwrap();
        out.into_text()
    }

    fn report(events: &[KernelEvent], incidents: &[Incident], tail: &ReportTail) -> EventsReport {
        EventsReport {
            boot_id: None,
            boot_time: None,
            sources: Vec::new(),
            events: events.to_vec(),
            incidents: incidents.to_vec(),
            tail: tail.clone(),
        }
    }

    #[test]
    fn streamed_json_and_yaml_are_the_documents_of_the_whole_report() {
        let events: Vec<KernelEvent> = (1..=5)
            .map(|n| event(n, &format!("MES failed \u{9b}31m \u{202e}{n}")))
            .collect();
        let incidents = [incident(1), incident(4)];
        for (events, incidents, counts) in [
            (&events[..], &incidents[..], false),
            (&[][..], &[][..], true),
            (&events[..1], &[][..], false),
            (&[][..], &incidents[..1], false),
        ] {
            let tail = tail(counts);
            let whole = report(events, incidents, &tail);
            for held in [0, 2, 10] {
                let json = streamed(JsonDocument::default(), events, held, incidents, &tail);
                let expected = render::structured(&whole, Format::Json).unwrap().unwrap();
                assert_eq!(json, expected);
                let yaml = streamed(YamlDocument::default(), events, held, incidents, &tail);
                let expected = render::structured(&whole, Format::Yaml).unwrap().unwrap();
                assert_eq!(yaml, expected);
            }
        }
    }

    #[test]
    fn a_streamed_table_of_a_short_log_is_the_whole_table() {
        let events: Vec<KernelEvent> = (1..=5)
            .map(|n| event(n, "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond"))
            .collect();
        let incidents = [incident(1), incident(4)];
        let tail = tail(false);
        let table = streamed(TableDocument::default(), &events, 10, &incidents, &tail);
        let whole = super::super::render_table(&report(&events, &incidents, &tail));
        assert_eq!(table, whole);
        assert!(
            table.starts_with("Events of device 0000:c1:00.0"),
            "{table}"
        );
    }

    #[test]
    fn a_long_streamed_table_keeps_its_columns_and_names_other_devices() {
        let mut events: Vec<KernelEvent> = (1..=3000)
            .map(|n| event(n, "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond"))
            .collect();
        events[2500].device = Some("0000:c2:00.0".into());
        events[2500].message = "amdgpu 0000:c2:00.0: amdgpu: MES failed to respond".into();
        let incidents: Vec<Incident> = (1..=3000).map(incident).collect();
        let tail = tail(false);
        let table = streamed(
            TableDocument::default(),
            &events,
            WINDOW_EVENTS,
            &incidents,
            &tail,
        );
        assert!(table.contains("│ 2501 "), "{table}");
        assert!(
            table.contains("[0000:c2:00.0] MES failed to respond"),
            "{table}"
        );
        assert!(table.contains("3000 events"), "{table}");
        let rows = |header: &str| {
            table
                .lines()
                .skip_while(|l| !l.contains(header))
                .take_while(|l| !l.starts_with('└'))
                .map(|l| l.chars().count())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(rows("│ LINE ").len(), 1, "every events row as wide");
        assert_eq!(rows("│ INCIDENT ").len(), 1, "every incident row as wide");
        assert_eq!(
            table
                .lines()
                .filter(|l| l.contains("mes_hang_reset"))
                .count(),
            3000
        );
    }

    #[test]
    fn the_spool_gives_back_what_went_to_its_file_in_order() {
        let mut spool = Spool::default();
        let record = |n: usize| format!("{n} {}", "é".repeat(n % 300));
        let count = 20_000;
        for n in 0..count {
            spool.push(record(n)).unwrap();
        }
        assert!(spool.file.is_some(), "past the memory bound");
        let back: Vec<String> = spool.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(back.len(), count);
        assert!(back.iter().enumerate().all(|(n, r)| *r == record(n)));
        assert!(Spool::default().is_empty());
    }
}
