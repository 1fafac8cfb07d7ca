//! `nodectl events`: classified amdgpu/KFD kernel events and incidents, from an agent, the agent in this process, or a saved log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use nodectl_model::kernel_log::{RecordsLost, time_text};
use nodectl_model::{Class, Incident, KernelEvent, StreamMessage};
use tokio_stream::StreamExt as _;

use crate::context::Context;
use crate::embedded::{self, EmbeddedOptions};
use crate::exit::Outcome;
use crate::nodes::{KernelEventsRequest, Nodes};
use crate::render::{self, Format, table};

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
    /// Start after this kernel sequence number (resume where an earlier run stopped).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub since_seq: u64,
    /// Only events of these classes, and incidents with such an event: hang, reset, fault,
    /// oom, firmware, info (comma-separated).
    #[arg(long, value_name = "CLASS,...", value_delimiter = ',')]
    pub class: Vec<String>,
    /// Also print records no rule classified, and records user space wrote (an agent without
    /// --full-kernel-log sends only the GPU driver's own lines).
    #[arg(long)]
    pub include_unclassified: bool,
    /// Kernel message rules (TOML, same format as the embedded ones) for in-process and offline use.
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
    pub events: Vec<KernelEvent>,
    pub incidents: Vec<Incident>,
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

impl EventsReport {
    /// Events shown, or counted with `--summary`.
    fn event_count(&self) -> u64 {
        let shown = u64::try_from(self.events.len()).unwrap_or(u64::MAX);
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

/// Runs `nodectl events`.
pub async fn run(args: EventsArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let classes = parse_classes(&args.class)?;
    if args.file.is_some() && !ctx.endpoints().is_empty() {
        anyhow::bail!("--file and --endpoint exclude each other");
    }
    let mut printer = Printer::new(ctx.format, args.follow, args.summary)?;
    if let Some(file) = &args.file {
        let years = match args.year {
            Some(year) => embedded::JournalYear::given(year),
            None => embedded::JournalYear::before(jiff::ZonedDateTime::now().date()),
        };
        let keeps = |class: Option<Class>| match class {
            None => args.include_unclassified,
            Some(c) => classes.is_empty() || classes.contains(&c),
        };
        // `--summary` counts as the log streams by and keeps no event (by class and id, which
        // cost no allocation per event; named `class/id` at the end).
        let mut counts: BTreeMap<(&'static str, Option<Arc<str>>), u64> = BTreeMap::new();
        let summary_only = args.summary;
        let since = args.since_seq;
        let keep = |e: &KernelEvent| {
            if e.seq.is_some_and(|seq| seq <= since) || !keeps(e.class) {
                return false;
            }
            if summary_only {
                let class = e.class.map_or("unclassified", Class::as_str);
                *counts.entry((class, e.id.clone())).or_insert(0) += 1;
                return false;
            }
            true
        };
        let summary = embedded::analyze_saved_log(
            open_input(file)?,
            args.rules.as_deref(),
            years,
            &classes,
            args.include_unclassified,
            keep,
        )?;
        let name = if file == "-" {
            "standard input".to_owned()
        } else {
            file.clone()
        };
        if summary.lines_read == 0 {
            anyhow::bail!("{name} is empty: there is no kernel log to read");
        }
        if summary.lines_recognised == 0 {
            anyhow::bail!(
                "{name}: none of the {} line{} read is a kernel log line (a /dev/kmsg record, dmesg [-T|-x], journalctl or syslog, talosctl dmesg) or a known GPU message; is it the right input?",
                summary.lines_read,
                if summary.lines_read == 1 { "" } else { "s" }
            );
        }
        if since > 0 && !summary.has_sequence_numbers() {
            anyhow::bail!(
                "--since-seq {since}: {file} has no kernel sequence numbers (only kmsg records carry them)"
            );
        }
        let mut summary = summary;
        let format = summary.format();
        summary
            .incidents
            .retain(|i| i.last_seq.is_none_or(|last| last > since));
        printer.report.counts = counts
            .into_iter()
            .map(|((class, id), n)| (format!("{class}/{}", id.as_deref().unwrap_or("-")), n))
            .collect();
        for event in summary.events {
            printer.event(event)?;
        }
        printer.incidents = summary.incidents;
        printer.report.records_lost = summary.records_lost;
        printer.report.seq_restarts = summary.seq_restarts;
        printer.report.input = Some(InputCounts {
            lines_read: summary.lines_read,
            lines_recognised: summary.lines_recognised,
            lines_cut: summary.lines_cut,
            format,
            lines_by_format: summary
                .formats
                .iter()
                .map(|(f, n)| (f.as_str().to_owned(), *n))
                .collect(),
        });
        return printer.finish();
    }
    let nodes = ctx.nodes()?;
    if let Nodes::Agents(endpoints) = &nodes {
        if args.rules.is_some() {
            anyhow::bail!("--rules applies in-process; an agent uses its own --rules");
        }
        if args.follow && endpoints.len() > 1 {
            anyhow::bail!("--follow takes one --endpoint");
        }
    }
    let options = EmbeddedOptions {
        kernel_log: true,
        rules: args.rules.clone(),
    };
    for target in nodes.targets() {
        let mut client = target.connect(&options).await?;
        let request = KernelEventsRequest {
            since_seq: args.since_seq,
            follow: args.follow,
            classes: classes.clone(),
            include_unclassified: args.include_unclassified,
        };
        let mut stream = client.kernel_events(request).await?;
        // `--follow --summary` counts until Ctrl-C, then prints what it counted.
        let count_until_interrupted = args.follow && args.summary;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => printer.message(message?)?,
                    None => break,
                },
                interrupted = tokio::signal::ctrl_c(), if count_until_interrupted => {
                    interrupted.context("waiting for Ctrl-C")?;
                    return printer.finish();
                }
            }
        }
    }
    printer.finish()
}

/// The saved log to read, buffered: a file, or standard input for `-`.
/// A saved log's read size: lines are cut out of the buffer and one search per read finds
/// the GPU lines, so reads far longer than a line (a line spanning two reads is copied).
const SAVED_LOG_READ_BYTES: usize = 256 * 1024;

fn open_input(file: &str) -> anyhow::Result<Box<dyn std::io::BufRead>> {
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
            *self.report.counts.entry(summary_key(&event)).or_insert(0) += 1;
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
        self.report.records_lost = self.report.records_lost.saturating_add(lost.count);
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
                if self.follow {
                    let boot_time = h.boot_time.map(|t| t.to_string()).unwrap_or_default();
                    self.line(
                        serde_json::json!({ "header": { "boot_id": h.boot_id, "boot_time": boot_time, "records_lost_total": h.records_lost_total } }),
                        format!("boot {} at {boot_time}", h.boot_id),
                    )?;
                }
            }
            StreamMessage::Event(e) => self.event(e)?,
            StreamMessage::Incident(i) => self.incident(i)?,
            StreamMessage::RecordsLost(l) => self.lost(l)?,
            StreamMessage::Lagged { missed } => {
                self.report.lagged = self.report.lagged.saturating_add(missed);
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

    fn finish(mut self) -> anyhow::Result<Outcome> {
        if self.follow && !self.summary {
            return Ok(Outcome::Ok);
        }
        self.report.incidents = std::mem::take(&mut self.incidents);
        if !render::print_structured(&self.report, self.format)? {
            render::emit(&render_table(&self.report))?;
        }
        Ok(Outcome::Ok)
    }
}

fn time_or_dash(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

fn event_line(e: &KernelEvent) -> String {
    let at = e
        .seq
        .map(|s| format!("seq {s}"))
        .or_else(|| e.line.map(|l| format!("line {l}")))
        .unwrap_or_default();
    let what = match (e.class, &e.id) {
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
        "incident {} {} on {}: {} events{}{}",
        i.incident_id,
        i.kind,
        i.device.as_deref().unwrap_or("?"),
        i.event_total(),
        match i.recovered {
            Some(true) => ", recovered",
            Some(false) => ", NOT recovered",
            None => "",
        },
        if i.closed { ", closed" } else { "" },
    )
}

/// The events as a table: SEQ (or LINE), TIME, ID, DEVICE and MESSAGE; the device column only
/// when the events name more than one, else it is said once above the table; the message
/// without the `amdgpu <device>: amdgpu: ` prefix the device column already says.
fn events_table(events: &[KernelEvent]) -> String {
    let (one_device, first_device) = single_device(events.iter().map(|e| e.device.as_deref()));
    let by_line = events.iter().all(|e| e.seq.is_none());
    let mut header = vec![if by_line { "LINE" } else { "SEQ" }, "TIME", "ID"];
    if !one_device {
        header.push("DEVICE");
    }
    header.push("MESSAGE");
    let mut t = render::table_wrapping(&header, &[header.len() - 1]);
    for e in events {
        let mut row = vec![
            e.seq.or(e.line).map(|n| n.to_string()).unwrap_or_default(),
            e.time
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .or_else(|| {
                    e.monotonic_usec
                        .map(|u| format!("{}.{:06}", u / 1_000_000, u % 1_000_000))
                })
                .unwrap_or_default(),
            match (&e.id, e.user_written) {
                (Some(id), _) => id.to_string(),
                (None, true) => "(user-written)".to_owned(),
                (None, false) => "-".to_owned(),
            },
        ];
        if !one_device {
            row.push(e.device.clone().unwrap_or_default());
        }
        row.push(render::cell(message_after_device(
            &e.message,
            e.device.as_deref(),
        )));
        t.add_row(row);
    }
    let mut out = String::new();
    if let (true, Some(device)) = (one_device, first_device) {
        out.push_str(&format!("Events of device {device} (or of none):\n"));
    }
    out.push_str(&format!("{t}\n"));
    out
}

/// The incidents as a table; DEVICE and PROCESS only when some incident has one (and, for the
/// device, when they differ: one device is said above the table), EVENTS last, wrapping.
fn incidents_table(incidents: &[Incident]) -> String {
    let (one_device, first_device) = single_device(incidents.iter().map(|i| i.device.as_deref()));
    // All on one day (UTC): the day is said once, above the table.
    let first_day = incidents
        .first()
        .and_then(|i| i.first_time)
        .map(|t| t.strftime("%Y-%m-%d").to_string());
    let one_day = first_day.filter(|day| {
        incidents.iter().all(|i| {
            i.first_time
                .is_some_and(|t| t.strftime("%Y-%m-%d").to_string() == *day)
        })
    });
    let mut header = vec!["INCIDENT", "KIND", "WHEN", "FOR", "RECOVERED"];
    if !one_device {
        header.push("DEVICE");
    }
    header.push("EVENTS");
    let mut t = render::table_wrapping(&header, &[header.len() - 1]);
    for i in incidents {
        // The process (when the kernel named one) under the kind: no column of its own.
        let process = match (&i.process, i.pid) {
            (Some(p), Some(pid)) => Some(format!("{p} ({pid})")),
            (Some(p), None) => Some(p.clone()),
            (None, Some(pid)) => Some(format!("pid {pid}")),
            (None, None) => None,
        };
        let mut row = vec![
            i.incident_id.to_string(),
            match process {
                Some(process) => format!("{}\n{}", i.kind, render::cell(&process)),
                None => i.kind.to_string(),
            },
            incident_start(i, one_day.is_some()),
            incident_span(i),
            match i.recovered {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "unknown".into(),
            },
        ];
        if !one_device {
            row.push(i.device.clone().unwrap_or_default());
        }
        let counts: Vec<String> = i
            .event_counts
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        row.push(render::cell(&counts.join("\n")));
        t.add_row(row);
    }
    let mut out = String::new();
    let mut about = Vec::new();
    if let (true, Some(device)) = (one_device, first_device) {
        about.push(format!("of device {device} (or of none)"));
    }
    if let Some(day) = one_day {
        about.push(format!("on {day} (UTC)"));
    }
    if !about.is_empty() {
        out.push_str(&format!("Incidents {}:\n", about.join(", ")));
    }
    out.push_str(&format!("{t}\n"));
    out
}

/// When an incident began: its wall time, else its first sequence number or line.
fn incident_start(i: &Incident, time_only: bool) -> String {
    let format = if time_only {
        "%H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    i.first_time
        .map(|t| t.strftime(format).to_string())
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
    let mut out = String::new();
    if !report.counts.is_empty() {
        let mut t = table(&["CLASS/ID", "COUNT"]);
        for (k, v) in &report.counts {
            t.add_row([k.clone(), v.to_string()]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if !report.events.is_empty() {
        out.push_str(&events_table(&report.events));
    }
    let events = report.event_count();
    out.push_str(&format!(
        "{events} event{}",
        if events == 1 { "" } else { "s" }
    ));
    if let Some(input) = &report.input {
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
    if report.incidents.is_empty() {
        out.push_str("No incidents.\n");
    } else {
        out.push_str(&incidents_table(&report.incidents));
    }
    if report.records_lost > 0 {
        out.push_str(&format!(
            "{} kernel log records were lost.\n",
            report.records_lost
        ));
    }
    if report.seq_restarts > 0 {
        out.push_str(&format!(
            "The sequence numbers started over {} time(s) (records of several boots, or a corrupt input); nothing was counted as lost there.\n",
            report.seq_restarts
        ));
    }
    if report.lagged > 0 {
        out.push_str(&format!(
            "{} messages were dropped because this client read too slowly.\n",
            report.lagged
        ));
    }
    out
}
