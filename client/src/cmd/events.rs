//! `nodectl events`: classified amdgpu/KFD kernel events and incidents, from an agent, the agent in this process, or a saved log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use nodectl_model::kernel_log::{RecordsLost, SourceStatus, time_text};
use nodectl_model::{Class, Incident, KernelEvent, Source, StreamMessage};
use tokio_stream::StreamExt as _;

use crate::context::Context;
use crate::embedded::EmbeddedOptions;
use crate::exit::ExitStatus;
use crate::nodes::{KernelEventsRequest, Nodes};
use crate::render::{self, Format, table};

mod file;
mod fleet;

/// Flags of `nodectl events`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct EventsArgs {
    /// Where node state comes from.
    #[command(flatten)]
    pub source: crate::cli::NodeSource,
    /// Keep the stream open and print new records as they come (one JSON object per line with -o json).
    #[arg(long)]
    pub follow: bool,
    /// Start after this kernel sequence number (resume where an earlier run stopped); the same
    /// as --since-cursor kmsg=N.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub since_seq: u64,
    /// Start a source after this cursor: `kmsg=SEQ`, `kfd_smi=N` (repeat for each source).
    /// `--follow` prints the cursors to resume from when it stops; a source not named starts
    /// from the history the agent holds.
    #[arg(long, value_name = "SOURCE=N", value_parser = parse_source_cursor)]
    pub since_cursor: Vec<(Source, u64)>,
    /// Only events of these classes, and incidents with such an event: hang, reset, fault,
    /// oom, firmware, info (comma-separated).
    #[arg(long, value_name = "CLASS,...", value_delimiter = ',')]
    pub class: Vec<String>,
    /// Also print records no rule classified, and records user space wrote (an agent without
    /// --full-kernel-log sends only the GPU driver's own lines).
    #[arg(long)]
    pub include_unclassified: bool,
    /// A knowledge file of kernel rules (the format of knowledge/kernel-rules.toml) over the
    /// embedded ones, for in-process and offline use; the same as --knowledge FILE.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Read a saved log instead of a node (`-` for standard input): kmsg records, dmesg,
    /// dmesg -T, journalctl short/short-precise or talosctl dmesg lines.
    #[arg(long, value_name = "PATH|-")]
    pub file: Option<String>,
    /// Year of the first journalctl or syslog line, which print none; each New Year the log
    /// crosses (December, then January) advances it, so times keep increasing. Default: the
    /// latest year that puts the first line no later than tomorrow (a log of last December
    /// read in January is last year's).
    #[arg(long, value_name = "YEAR")]
    pub year: Option<i16>,
    /// Print counts per event id instead of every event.
    #[arg(long)]
    pub summary: bool,
}

/// `-o json` document.
#[derive(Debug, Default, serde::Serialize)]
pub struct EventsReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "time_text")]
    pub boot_time: Option<jiff::Timestamp>,
    /// Streams from a node: each source asked for, and whether the agent reads it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
    pub events: Vec<KernelEvent>,
    pub incidents: Vec<Incident>,
    /// What follows the incidents (`--file` prints it after streaming the rest).
    #[serde(flatten)]
    pub tail: ReportTail,
}

/// The fields of the report after its events and incidents.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReportTail {
    pub records_lost: u64,
    /// `--file`: times the sequence numbers started over (records of several boots, or a
    /// corrupt input); nothing was counted as lost there.
    #[serde(skip_serializing_if = "is_zero")]
    pub seq_restarts: u64,
    /// Messages the agent dropped for this client because it read too slowly.
    #[serde(skip_serializing_if = "is_zero")]
    pub lagged: u64,
    /// `--summary`: events per `class/id`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// `--file`: what was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<InputCounts>,
}

/// How much of a saved log was read, and how much of it was a kernel log.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct InputCounts {
    pub lines_read: u64,
    /// Lines in a kernel log format, or holding a known GPU message.
    pub lines_recognised: u64,
    /// Lines longer than 64 KiB, cut.
    #[serde(skip_serializing_if = "is_zero")]
    pub lines_cut: u64,
    /// The kernel log format of the lines (`kmsg`, `dmesg`, `journal`, …), `mixed`, or `none`.
    pub format: String,
    /// Lines of each format; `located`: lines of no known format in which a GPU message was
    /// found after some other prefix.
    pub lines_by_format: BTreeMap<String, u64>,
}

impl ReportTail {
    /// Events shown (`shown`), and those counted with `--summary`.
    fn event_count(&self, shown: u64) -> u64 {
        shown.saturating_add(self.counts.values().sum::<u64>())
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The classes asked for, checked here so a typo is an input error before anything is read.
fn parse_classes(names: &[String]) -> anyhow::Result<Vec<Class>> {
    names
        .iter()
        .map(|name| {
            Class::parse(name.trim()).with_context(|| {
                format!("--class {name}: unknown class; known: {}", Class::known())
            })
        })
        .collect()
}

/// `SOURCE=N` of `--since-cursor`.
fn parse_source_cursor(text: &str) -> Result<(Source, u64), String> {
    let (name, cursor) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected SOURCE=N, e.g. kfd_smi=42"))?;
    let source = Source::parse(name.trim())
        .filter(|_| !name.trim().is_empty())
        .ok_or_else(|| format!("`{name}`: unknown source; known: {}", Source::known()))?;
    let cursor = cursor
        .trim()
        .parse()
        .map_err(|e| format!("`{cursor}`: not a cursor (a whole number): {e}"))?;
    Ok((source, cursor))
}

/// Where each source starts: `--since-cursor`, with `--since-seq` as the kernel log's.
fn since_cursors(args: &EventsArgs) -> anyhow::Result<BTreeMap<Source, u64>> {
    let mut cursors = BTreeMap::new();
    for &(source, cursor) in &args.since_cursor {
        if let Some(earlier) = cursors.insert(source, cursor) {
            anyhow::bail!(
                "--since-cursor names {} twice ({earlier} and {cursor})",
                source.as_str()
            );
        }
    }
    if args.since_seq > 0 {
        if let Some(cursor) = cursors.get(&Source::Kmsg) {
            anyhow::bail!(
                "--since-seq {} and --since-cursor kmsg={cursor} both say where the kernel log starts; give one",
                args.since_seq
            );
        }
        cursors.insert(Source::Kmsg, args.since_seq);
    }
    Ok(cursors)
}

/// Runs `nodectl events`.
pub async fn run(args: EventsArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let classes = parse_classes(&args.class)?;
    let since_cursor = since_cursors(&args)?;
    if args.file.is_some() && ctx.names_agents() {
        anyhow::bail!("--file and --endpoint exclude each other");
    }
    let mut printer = Printer::new(ctx.format, args.follow, args.summary)?;
    if let Some(file) = &args.file {
        return file::run(&args, &classes, since_cursor, ctx.format, file);
    }
    let nodes = ctx.nodes().await?;
    if let Nodes::Agents(endpoints) = &nodes {
        if args.rules.is_some() {
            anyhow::bail!("--rules applies in-process; an agent uses its own --knowledge");
        }
        if args.follow && endpoints.len() > 1 {
            anyhow::bail!("--follow takes one --endpoint");
        }
        if endpoints.len() > 1 {
            return fleet::run(&args, classes, since_cursor, nodes.targets(), ctx).await;
        }
    }
    let options = EmbeddedOptions { kernel_log: true };
    for target in nodes.targets() {
        let mut client = target.connect(&options).await?;
        let request = KernelEventsRequest {
            since_cursor: since_cursor.clone(),
            follow: args.follow,
            classes: classes.clone(),
            include_unclassified: args.include_unclassified,
        };
        let mut stream = client.kernel_events(request).await?;
        // Where each source was, for the resume line `--follow` leaves when it stops.
        let mut resume = since_cursor.clone();
        // One listener for the whole stream: a Ctrl-C that comes while a message is printed
        // waits for it, where a listener made anew each turn would miss it.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        let message = message?;
                        if let StreamMessage::Event(KernelEvent { source, cursor: Some(cursor), .. }) = &message {
                            resume.insert(*source, *cursor);
                        }
                        printer.message(message)?;
                    }
                    None => break,
                },
                // `--follow` stops at Ctrl-C: `--summary` prints what it counted, and both
                // say where to resume.
                stopped = &mut interrupted, if args.follow => {
                    stopped.context("waiting for Ctrl-C")?;
                    print_resume(&resume);
                    return printer.finish();
                }
            }
        }
        if args.follow {
            print_resume(&resume);
        }
    }
    printer.finish()
}

/// The flags that resume a stream after the last event it showed, on standard error (standard
/// output carries the events).
fn print_resume(cursors: &BTreeMap<Source, u64>) {
    if cursors.is_empty() {
        return;
    }
    let flags: Vec<String> = cursors
        .iter()
        .map(|(source, cursor)| format!("--since-cursor {}={cursor}", source.as_str()))
        .collect();
    eprintln!("resume after the last event shown: {}", flags.join(" "));
}

/// `class/id` of an event, the key of `--summary`.
fn summary_key(event: &KernelEvent) -> String {
    format!(
        "{}/{}",
        event.class.map_or("unclassified", Class::as_str),
        event.id.as_deref().unwrap_or("-")
    )
}

/// Prints as things come (follow) or collects them for one report.
struct Printer {
    format: Format,
    follow: bool,
    summary: bool,
    report: EventsReport,
    /// Latest update of each incident, in order of first appearance.
    incidents: Vec<Incident>,
}

impl Printer {
    fn new(format: Format, follow: bool, summary: bool) -> anyhow::Result<Self> {
        if follow && format == Format::Yaml {
            anyhow::bail!("--follow prints a table or JSON lines; -o yaml is not streamable");
        }
        Ok(Printer {
            format,
            follow,
            summary,
            report: EventsReport::default(),
            incidents: Vec::new(),
        })
    }

    fn line(&self, value: serde_json::Value, table_line: String) -> anyhow::Result<()> {
        match self.format {
            Format::Json => render::json_line(&value),
            _ => render::line(table_line),
        }
    }

    fn event(&mut self, event: KernelEvent) -> anyhow::Result<()> {
        if self.summary {
            *self
                .report
                .tail
                .counts
                .entry(summary_key(&event))
                .or_insert(0) += 1;
            return Ok(());
        }
        if self.follow {
            let text = event_line(&event);
            return self.line(serde_json::json!({ "event": event }), text);
        }
        self.report.events.push(event);
        Ok(())
    }

    fn incident(&mut self, incident: Incident) -> anyhow::Result<()> {
        if self.follow {
            let text = incident_line(&incident);
            return self.line(serde_json::json!({ "incident": incident }), text);
        }
        match self
            .incidents
            .iter_mut()
            .find(|i| i.incident_id == incident.incident_id)
        {
            Some(existing) => *existing = incident,
            None => self.incidents.push(incident),
        }
        Ok(())
    }

    fn lost(&mut self, lost: RecordsLost) -> anyhow::Result<()> {
        self.report.tail.records_lost = self.report.tail.records_lost.saturating_add(lost.count);
        if self.follow {
            return self.line(
                serde_json::json!({ "records_lost": lost }),
                format!(
                    "!! {} kernel log records lost (seq {}..={})",
                    lost.count, lost.first_lost_seq, lost.last_lost_seq
                ),
            );
        }
        Ok(())
    }

    fn message(&mut self, message: StreamMessage) -> anyhow::Result<()> {
        match message {
            StreamMessage::Header(h) => {
                self.report.boot_id = Some(h.boot_id.clone());
                self.report.boot_time = h.boot_time;
                self.report.sources.clone_from(&h.sources);
                if self.follow {
                    let boot_time = h.boot_time.map(|t| t.to_string()).unwrap_or_default();
                    let not_read: String = h
                        .sources
                        .iter()
                        .filter_map(|s| {
                            s.reason
                                .as_ref()
                                .map(|r| format!("; {} not read: {}", s.source, render::cell(r)))
                        })
                        .collect();
                    self.line(
                        serde_json::json!({ "header": { "boot_id": h.boot_id, "boot_time": boot_time, "records_lost_total": h.records_lost_total, "sources": h.sources } }),
                        format!("boot {} at {boot_time}{not_read}", h.boot_id),
                    )?;
                }
            }
            StreamMessage::Event(e) => self.event(e)?,
            StreamMessage::Incident(i) => self.incident(i)?,
            StreamMessage::RecordsLost(l) => self.lost(l)?,
            StreamMessage::Lagged { missed } => {
                self.report.tail.lagged = self.report.tail.lagged.saturating_add(missed);
                if self.follow {
                    self.line(
                        serde_json::json!({ "lagged": { "missed": missed } }),
                        format!("!! this client fell behind; {missed} messages were dropped"),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// What was collected, as the report printed at the end.
    fn into_report(mut self) -> EventsReport {
        self.report.incidents = std::mem::take(&mut self.incidents);
        self.report
    }

    fn finish(self) -> anyhow::Result<ExitStatus> {
        if self.follow && !self.summary {
            return Ok(ExitStatus::Ok);
        }
        let format = self.format;
        let report = self.into_report();
        if !render::print_structured(&report, format)? {
            render::emit(&render_table(&report))?;
        }
        Ok(ExitStatus::Ok)
    }
}

fn time_or_dash(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

fn event_line(e: &KernelEvent) -> String {
    let at = match e.source {
        Source::Kmsg => e.seq.map(|s| format!("seq {s}")),
        other => e.cursor.map(|c| format!("{other} {c}")),
    }
    .or_else(|| e.line.map(|l| format!("line {l}")))
    .unwrap_or_default();
    let what = match (e.class, &e.id) {
        (Some(c), Some(i)) if e.injected => format!("{}/{i} (drill)", c.as_str()),
        (Some(c), Some(i)) => format!("{}/{i}", c.as_str()),
        _ if e.user_written => "user-written".to_owned(),
        _ => "-".to_owned(),
    };
    format!(
        "{at} {} {what} {} {}",
        time_or_dash(e.time),
        e.device.as_deref().unwrap_or("-"),
        render::cell(&e.message)
    )
}

fn incident_line(i: &Incident) -> String {
    format!(
        "incident {} {}{} on {}: {} events{}{}{}",
        i.incident_id,
        i.kind,
        if i.drill { " (drill)" } else { "" },
        i.device.as_deref().unwrap_or("?"),
        i.event_total(),
        if i.sources.len() > 1 {
            let names: Vec<&str> = i.sources.iter().map(|s| s.as_str()).collect();
            format!(" ({})", names.join(" + "))
        } else {
            String::new()
        },
        match i.recovered {
            Some(true) => ", recovered",
            Some(false) => ", NOT recovered",
            None => "",
        },
        if i.closed { ", closed" } else { "" },
    )
}

/// How the events table is laid out, decided from the events it shows (first).
#[derive(Debug, Clone, PartialEq)]
struct EventsLayout {
    /// No event has a sequence number: the first column numbers lines.
    by_line: bool,
    /// A DEVICE column: the events name more than one device.
    device_column: bool,
    /// Without the column, the one device named (said once above the table).
    device: Option<String>,
    /// A SOURCE column: some event is not the kernel log's (a KFD SMI record); SEQ is then
    /// the event's cursor within its source.
    source_column: bool,
}

impl EventsLayout {
    fn of(events: &[KernelEvent]) -> Self {
        Self::of_each(events.iter())
    }

    fn of_each<'e>(events: impl Iterator<Item = &'e KernelEvent> + Clone) -> Self {
        let (one_device, device) = single_device(events.clone().map(|e| e.device.as_deref()));
        let mut events = events;
        let source_column = events.clone().any(|e| e.source != Source::Kmsg);
        EventsLayout {
            source_column,
            by_line: events.all(|e| e.seq.is_none() && e.cursor.is_none()),
            device_column: !one_device,
            device: device.map(str::to_owned),
        }
    }

    /// What is said above the table.
    fn preamble(&self) -> String {
        match &self.device {
            Some(device) => format!("Events of device {device} (or of none):\n"),
            None => String::new(),
        }
    }

    fn header(&self) -> Vec<&'static str> {
        let mut header = Vec::with_capacity(6);
        if self.source_column {
            header.push("SOURCE");
        }
        header.extend([if self.by_line { "LINE" } else { "SEQ" }, "TIME", "ID"]);
        if self.device_column {
            header.push("DEVICE");
        }
        header.push("MESSAGE");
        header
    }

    /// An event's row: SEQ (or LINE), TIME, ID, DEVICE and MESSAGE, the message without the
    /// `amdgpu <device>: amdgpu: ` prefix the device column (or the preamble) already says. An
    /// event of a device other than the preamble's (a row printed after the layout was
    /// decided) names its device in brackets before the message.
    fn row(&self, e: &KernelEvent) -> Vec<String> {
        let mut row = Vec::with_capacity(6);
        if self.source_column {
            row.push(e.source.as_str().to_owned());
        }
        row.extend([
            e.cursor
                .or(e.seq)
                .or(e.line)
                .map(|n| n.to_string())
                .unwrap_or_default(),
            e.time
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .or_else(|| {
                    e.monotonic_usec
                        .map(|u| format!("{}.{:06}", u / 1_000_000, u % 1_000_000))
                })
                .unwrap_or_default(),
            match (&e.id, e.user_written) {
                (Some(id), _) if e.injected => format!("{id} (drill)"),
                (Some(id), _) => id.to_string(),
                (None, true) => "(user-written)".to_owned(),
                (None, false) => "-".to_owned(),
            },
        ]);
        if self.device_column {
            row.push(e.device.clone().unwrap_or_default());
        }
        let message = message_after_device(&e.message, e.device.as_deref());
        match &e.device {
            Some(device) if !self.device_column && self.device.as_ref() != Some(device) => {
                row.push(render::cell(&format!("[{device}] {message}")));
            }
            _ => row.push(render::cell(message)),
        }
        row
    }
}

/// The events as a table (see [`EventsLayout`]): the device column only when the events name
/// more than one, else it is said once above the table.
fn events_table(events: &[KernelEvent]) -> String {
    let layout = EventsLayout::of(events);
    let header = layout.header();
    let mut t = render::table_wrapping(&header, &[header.len() - 1]);
    for e in events {
        t.add_row(layout.row(e));
    }
    format!("{}{t}\n", layout.preamble())
}

/// How the incidents table is laid out, decided from all the incidents it shows: kept as they
/// come, so a table of any number of incidents needs only this.
#[derive(Debug, Clone, Default)]
struct IncidentsLayout {
    /// Devices named: the first, and whether another was.
    device: Option<String>,
    several_devices: bool,
    /// The day (UTC) of the first incident's start, and whether another began on another day
    /// or without a time.
    day: Option<String>,
    several_days: bool,
    incidents: u64,
}

impl IncidentsLayout {
    fn add(&mut self, i: &Incident) {
        if let Some(device) = &i.device {
            match &self.device {
                None => self.device = Some(device.clone()),
                Some(seen) if seen != device => self.several_devices = true,
                Some(_) => {}
            }
        }
        let day = i.first_time.map(|t| t.strftime("%Y-%m-%d").to_string());
        match (&self.day, day) {
            (_, None) => self.several_days = true,
            (None, Some(day)) if self.incidents == 0 => self.day = Some(day),
            (Some(seen), Some(day)) if *seen != day => self.several_days = true,
            _ => {}
        }
        self.incidents += 1;
    }

    /// All on one day (UTC): the day, said once above the table.
    fn one_day(&self) -> Option<&str> {
        self.day.as_deref().filter(|_| !self.several_days)
    }

    fn preamble(&self) -> String {
        let mut about = Vec::new();
        if let (false, Some(device)) = (self.several_devices, &self.device) {
            about.push(format!("of device {device} (or of none)"));
        }
        if let Some(day) = self.one_day() {
            about.push(format!("on {day} (UTC)"));
        }
        if about.is_empty() {
            return String::new();
        }
        format!("Incidents {}:\n", about.join(", "))
    }

    /// DEVICE only when the incidents name more than one device (one is said above the table),
    /// EVENTS last, wrapping.
    fn header(&self) -> Vec<&'static str> {
        let mut header = vec!["INCIDENT", "KIND", "WHEN", "FOR", "RECOVERED"];
        if self.several_devices {
            header.push("DEVICE");
        }
        header.push("EVENTS");
        header
    }

    /// An incident's [`incident_cells`] as this layout shows them: WHEN without its day when
    /// all are on one day, DEVICE only when there are several.
    fn row(&self, mut cells: Vec<String>) -> Vec<String> {
        if self.one_day().is_some()
            && let Some(when) = cells.get_mut(INCIDENT_WHEN)
            && let Some((_day, time)) = when.split_once(' ')
        {
            *when = time.to_owned();
        }
        if !self.several_devices && cells.len() > INCIDENT_DEVICE {
            cells.remove(INCIDENT_DEVICE);
        }
        cells
    }
}

/// The columns of [`incident_cells`] that [`IncidentsLayout::row`] changes.
const INCIDENT_WHEN: usize = 2;
const INCIDENT_DEVICE: usize = 5;

/// Every cell an incident can show: INCIDENT, KIND (the process, when the kernel named one,
/// under it: no column of its own), WHEN (date and time), FOR, RECOVERED, DEVICE, EVENTS.
fn incident_cells(i: &Incident) -> Vec<String> {
    let process = match (&i.process, i.pid) {
        (Some(p), Some(pid)) => Some(format!("{p} ({pid})")),
        (Some(p), None) => Some(p.clone()),
        (None, Some(pid)) => Some(format!("pid {pid}")),
        (None, None) => None,
    };
    let counts: Vec<String> = i
        .event_counts
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect();
    vec![
        i.incident_id.to_string(),
        match process {
            Some(process) => format!("{}\n{}", i.kind, render::cell(&process)),
            None => i.kind.to_string(),
        },
        incident_start(i),
        incident_span(i),
        match i.recovered {
            Some(true) => "yes".into(),
            Some(false) => "NO".into(),
            None => "unknown".into(),
        },
        i.device.clone().unwrap_or_default(),
        render::cell(&counts.join("\n")),
    ]
}

/// The incidents as a table (see [`IncidentsLayout`]).
fn incidents_table(incidents: &[Incident]) -> String {
    let mut layout = IncidentsLayout::default();
    for i in incidents {
        layout.add(i);
    }
    let header = layout.header();
    let mut t = render::table_wrapping(&header, &[header.len() - 1]);
    for i in incidents {
        t.add_row(layout.row(incident_cells(i)));
    }
    format!("{}{t}\n", layout.preamble())
}

/// When an incident began: its wall time (UTC), else its first sequence number or line.
fn incident_start(i: &Incident) -> String {
    i.first_time
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .or_else(|| i.first_seq.map(|s| format!("seq {s}")))
        .or_else(|| i.first_line.map(|l| format!("line {l}")))
        .unwrap_or_default()
}

/// How long an incident lasted, on the kernel's clock (or the wall clock); else the records or
/// lines it spans.
fn incident_span(i: &Incident) -> String {
    let usec = match (i.first_monotonic_usec, i.last_monotonic_usec) {
        (Some(first), Some(last)) => Some(last.saturating_sub(first)),
        _ => match (i.first_time, i.last_time) {
            (Some(first), Some(last)) => {
                u64::try_from(last.as_microsecond() - first.as_microsecond()).ok()
            }
            _ => None,
        },
    };
    if let Some(usec) = usec {
        #[allow(clippy::cast_precision_loss)]
        let seconds = usec as f64 / 1e6;
        return if seconds < 10.0 {
            format!("{seconds:.1} s")
        } else {
            format!("{seconds:.0} s")
        };
    }
    match (i.first_seq, i.last_seq, i.first_line, i.last_line) {
        (Some(a), Some(b), _, _) => format!("seq {a}–{b}"),
        (_, _, Some(a), Some(b)) => format!("lines {a}–{b}"),
        _ => String::new(),
    }
}

/// Whether at most one device is named (`None`s aside), and which.
fn single_device<'d>(devices: impl Iterator<Item = Option<&'d str>>) -> (bool, Option<&'d str>) {
    let mut named = None;
    for device in devices.flatten() {
        match named {
            None => named = Some(device),
            Some(seen) if seen != device => return (false, None),
            Some(_) => {}
        }
    }
    (true, named)
}

/// `message` without a leading `amdgpu <device>: ` (and a following `amdgpu: `).
fn message_after_device<'m>(message: &'m str, device: Option<&str>) -> &'m str {
    let Some(device) = device else {
        return message;
    };
    let Some(rest) = message
        .strip_prefix("amdgpu ")
        .and_then(|m| m.strip_prefix(device))
        .and_then(|m| m.strip_prefix(": "))
    else {
        return message;
    };
    rest.strip_prefix("amdgpu: ").unwrap_or(rest)
}

fn render_table(report: &EventsReport) -> String {
    let mut out = counts_table(&report.tail);
    if !report.events.is_empty() {
        out.push_str(&events_table(&report.events));
    }
    let shown = u64::try_from(report.events.len()).unwrap_or(u64::MAX);
    out.push_str(&count_line(&report.tail, shown));
    if report.incidents.is_empty() {
        out.push_str("No incidents.\n");
    } else {
        out.push_str(&incidents_table(&report.incidents));
    }
    out.push_str(&notes(&report.tail));
    out
}

/// `--summary`'s table of events per `class/id` (empty without it).
fn counts_table(tail: &ReportTail) -> String {
    if tail.counts.is_empty() {
        return String::new();
    }
    let mut t = table(&["CLASS/ID", "COUNT"]);
    for (k, v) in &tail.counts {
        t.add_row([k.clone(), v.to_string()]);
    }
    format!("{t}\n")
}

/// How many events there were and, for a saved log, how much of it was read and recognised.
fn count_line(tail: &ReportTail, shown: u64) -> String {
    let events = tail.event_count(shown);
    let mut out = format!("{events} event{}", if events == 1 { "" } else { "s" });
    if let Some(input) = &tail.input {
        out.push_str(&format!(
            " in {} lines read ({} recognised as kernel log lines, format {}",
            input.lines_read, input.lines_recognised, input.format
        ));
        if let Some(located) = input.lines_by_format.get("located") {
            out.push_str(&format!(
                ", {located} with a GPU message after an unknown prefix"
            ));
        }
        if input.lines_cut > 0 {
            out.push_str(&format!(", {} cut at 64 KiB", input.lines_cut));
        }
        out.push(')');
    }
    out.push_str(".\n");
    out
}

/// What was lost or odd on the way, one line each.
fn notes(tail: &ReportTail) -> String {
    let mut out = String::new();
    if tail.records_lost > 0 {
        out.push_str(&format!(
            "{} kernel log records were lost.\n",
            tail.records_lost
        ));
    }
    if tail.seq_restarts > 0 {
        out.push_str(&format!(
            "The sequence numbers started over {} time(s) (records of several boots, or a corrupt input); nothing was counted as lost there.\n",
            tail.seq_restarts
        ));
    }
    if tail.lagged > 0 {
        out.push_str(&format!(
            "{} messages were dropped because this client read too slowly.\n",
            tail.lagged
        ));
    }
    out
}
