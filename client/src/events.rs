//! `nodectl events`: classified amdgpu/KFD kernel events and incidents, from an agent, this host's /dev/kmsg, or a saved log.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use nodectl_agent::kmsg::analyze::{Analyzer, Entry, LogSummary, Output, analyze_text};
use nodectl_agent::kmsg::reader::{KmsgFile, KmsgReader, ReadOutcome};
use nodectl_agent::kmsg::{Class, Classifier, Event, Incident};
use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;

use crate::cli::GlobalArgs;
use crate::exit::{Outcome, Unreachable};
use crate::output::Format;
use crate::source::{self, Source};

/// Flags of `nodectl events`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct EventsArgs {
    /// Keep the stream open and print new records as they come (one JSON object per line with -o json).
    #[arg(long)]
    pub follow: bool,
    /// Start after this kernel sequence number (resume where an earlier run stopped).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub since_seq: u64,
    /// Only these classes: hang, reset, fault, oom, firmware, info (comma-separated).
    #[arg(long, value_name = "CLASS,...", value_delimiter = ',')]
    pub class: Vec<String>,
    /// Also print records no rule classified, and records user space wrote.
    #[arg(long)]
    pub include_unclassified: bool,
    /// Kernel message rules (TOML, same format as the embedded ones) for in-process and offline use.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Read a saved log instead of a node (`-` for standard input): kmsg records, dmesg,
    /// dmesg -T, journalctl short/short-precise or talosctl dmesg lines.
    #[arg(long, value_name = "PATH|-")]
    pub file: Option<String>,
    /// Year of journalctl lines, which print none (default: this year).
    #[arg(long, value_name = "YEAR")]
    pub year: Option<i16>,
    /// Print counts per event id instead of every event.
    #[arg(long)]
    pub summary: bool,
}

/// An event as printed (`-o json`: an element of `events`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventView {
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub monotonic_usec: Option<u64>,
    pub time: Option<String>,
    pub class: Option<String>,
    pub id: Option<String>,
    pub device: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub facility: u32,
    pub level: Option<u8>,
    pub user_written: bool,
    pub message: String,
}

/// An incident as printed (`-o json`: an element of `incidents`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct IncidentView {
    pub incident_id: u64,
    pub kind: String,
    pub device: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_line: Option<u64>,
    pub first_monotonic_usec: Option<u64>,
    pub last_monotonic_usec: Option<u64>,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    pub event_counts: BTreeMap<String, u32>,
    pub process: Option<String>,
    pub pid: Option<u32>,
    pub recovered: Option<bool>,
    pub closed: bool,
}

/// `-o json` document.
#[derive(Debug, Default, serde::Serialize)]
pub struct EventsReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_time: Option<String>,
    pub events: Vec<EventView>,
    pub incidents: Vec<IncidentView>,
    pub records_lost: u64,
    /// Messages the agent dropped for this client because it read too slowly.
    #[serde(skip_serializing_if = "is_zero")]
    pub lagged: u64,
    /// `--summary`: events per `class/id`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView {
            seq: e.seq,
            line: e.line,
            monotonic_usec: e.monotonic_usec,
            time: e.time.map(|t| t.to_string()),
            class: e.class.map(|c| c.as_str().to_owned()),
            id: e.id.as_deref().map(str::to_owned),
            device: e.device.clone(),
            fields: e.fields.clone(),
            facility: e.facility,
            level: e.level,
            user_written: e.user_written,
            message: e.message.clone(),
        }
    }
}

impl From<&Incident> for IncidentView {
    fn from(i: &Incident) -> Self {
        IncidentView {
            incident_id: i.incident_id,
            kind: i.kind.to_string(),
            device: i.device.clone(),
            first_seq: i.first_seq,
            last_seq: i.last_seq,
            first_line: i.first_line,
            last_line: i.last_line,
            first_monotonic_usec: i.first_monotonic_usec,
            last_monotonic_usec: i.last_monotonic_usec,
            first_time: i.first_time.map(|t| t.to_string()),
            last_time: i.last_time.map(|t| t.to_string()),
            event_counts: i
                .event_counts
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            process: i.process.clone(),
            pid: i.pid,
            recovered: i.recovered,
            closed: i.closed,
        }
    }
}

fn time_text(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    jiff::Timestamp::new(t.seconds, t.nanos)
        .ok()
        .map(|t| t.to_string())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl From<&pb::KernelEvent> for EventView {
    fn from(e: &pb::KernelEvent) -> Self {
        EventView {
            seq: Some(e.seq),
            line: None,
            monotonic_usec: Some(e.monotonic_usec),
            time: time_text(e.time.as_ref()),
            class: non_empty(&e.class),
            id: non_empty(&e.id),
            device: non_empty(&e.device),
            fields: e
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            facility: e.facility,
            level: u8::try_from(e.level).ok(),
            user_written: e.user_written,
            message: e.message.clone(),
        }
    }
}

impl From<&pb::IncidentUpdate> for IncidentView {
    fn from(i: &pb::IncidentUpdate) -> Self {
        IncidentView {
            incident_id: i.incident_id,
            kind: i.kind.clone(),
            device: non_empty(&i.device),
            first_seq: Some(i.first_seq),
            last_seq: Some(i.last_seq),
            first_line: None,
            last_line: None,
            first_monotonic_usec: Some(i.first_monotonic_usec),
            last_monotonic_usec: Some(i.last_monotonic_usec),
            first_time: time_text(i.first_time.as_ref()),
            last_time: time_text(i.last_time.as_ref()),
            event_counts: i
                .event_counts
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            process: non_empty(&i.process),
            pid: i.pid,
            recovered: i.recovered,
            closed: i.closed,
        }
    }
}

/// What to keep, from the flags.
struct Filter {
    classes: Vec<Class>,
    include_unclassified: bool,
}

impl Filter {
    fn from_args(args: &EventsArgs) -> anyhow::Result<Self> {
        let mut classes = Vec::new();
        for name in &args.class {
            let class = Class::parse(name.trim()).with_context(|| {
                format!(
                    "--class {name}: unknown class; known: hang, reset, fault, oom, firmware, info"
                )
            })?;
            classes.push(class);
        }
        Ok(Filter {
            classes,
            include_unclassified: args.include_unclassified,
        })
    }

    fn keeps(&self, class: Option<Class>) -> bool {
        match class {
            None => self.include_unclassified,
            Some(c) => self.classes.is_empty() || self.classes.contains(&c),
        }
    }
}

/// Runs `nodectl events`.
pub async fn run(args: EventsArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    match run_inner(args, global).await {
        Err(e) if e.chain().any(|c| c.is::<OutputClosed>()) => Ok(Outcome::Ok),
        other => other,
    }
}

async fn run_inner(args: EventsArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let filter = Filter::from_args(&args)?;
    if args.file.is_some() && !global.endpoint.is_empty() {
        anyhow::bail!("--file and --endpoint exclude each other");
    }
    let mut printer = Printer::new(global.output, args.follow, args.summary)?;
    if let Some(file) = &args.file {
        let classifier = Arc::new(Classifier::load(args.rules.as_deref())?);
        let text = read_input(file)?;
        let year = args
            .year
            .unwrap_or_else(|| jiff::ZonedDateTime::now().year());
        let summary = analyze_text(&text, classifier, year, |e| filter.keeps(e.class));
        printer.report_from_summary(&summary);
        return printer.finish();
    }
    match global.source()? {
        Source::Agents(endpoints) => {
            if args.rules.is_some() {
                anyhow::bail!("--rules applies in-process; an agent uses its own --rules");
            }
            if args.follow && endpoints.len() > 1 {
                anyhow::bail!("--follow takes one --endpoint");
            }
            for endpoint in &endpoints {
                stream_from_agent(endpoint, &args, &mut printer).await?;
            }
        }
        Source::Embedded(root) => {
            let classifier = Arc::new(Classifier::load(args.rules.as_deref())?);
            let path = root.dev_kmsg();
            let display = root.host_display(&path);
            let follow = args.follow;
            let since = args.since_seq;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Output>(256);
            let reader = tokio::task::spawn_blocking(move || {
                read_local(&path, &display, classifier, follow, since, &tx)
            });
            while let Some(output) = rx.recv().await {
                printer.output(output, &filter)?;
            }
            reader.await.context("kernel log reader")??;
            printer.report.boot_time = nodectl_agent::kmsg::hub::boot_time().map(|t| t.to_string());
        }
    }
    printer.finish()
}

fn read_input(file: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("--file {file}"))?;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads this host's /dev/kmsg in-process with the agent's reader.
fn read_local(
    path: &std::path::Path,
    display: &str,
    classifier: Arc<Classifier>,
    follow: bool,
    since_seq: u64,
    tx: &tokio::sync::mpsc::Sender<Output>,
) -> anyhow::Result<()> {
    let file =
        KmsgFile::open(path).with_context(|| format!("kernel log unavailable: {display}"))?;
    let boot_time = nodectl_agent::kmsg::hub::boot_time();
    let mut reader = KmsgReader::new(file);
    let mut analyzer = Analyzer::new(classifier);
    let mut out = Vec::new();
    loop {
        match reader
            .next_outcome()
            .with_context(|| format!("reading {display}"))?
        {
            ReadOutcome::Record(record) => {
                if record.seq > since_seq {
                    analyzer.push(Entry::from_record(record, boot_time), &mut out);
                }
            }
            ReadOutcome::Lost {
                first_seq,
                last_seq,
            } => analyzer.lost(first_seq, last_seq, &mut out),
            ReadOutcome::Malformed { reason } => {
                let path_shown = display;
                tracing::warn!("{path_shown}: {reason}");
            }
            ReadOutcome::Drained => {
                if !follow {
                    analyzer.finish(&mut out);
                }
                for o in out.drain(..) {
                    if tx.blocking_send(o).is_err() {
                        return Ok(());
                    }
                }
                if !follow {
                    return Ok(());
                }
                reader.wait(std::time::Duration::from_millis(500))?;
                if tx.is_closed() {
                    return Ok(());
                }
                continue;
            }
        }
        for o in out.drain(..) {
            if tx.blocking_send(o).is_err() {
                return Ok(());
            }
        }
    }
}

async fn stream_from_agent(
    endpoint: &str,
    args: &EventsArgs,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let mut client = source::connect(endpoint).await?;
    let request = pb::StreamKernelEventsRequest {
        since_seq: args.since_seq,
        follow: args.follow,
        classes: args.class.iter().map(|c| c.trim().to_owned()).collect(),
        include_unclassified: args.include_unclassified,
    };
    let status_error = |status: tonic::Status| -> anyhow::Error {
        if status.code() == tonic::Code::Unavailable {
            Unreachable(format!("agent at {endpoint}: {}", status.message())).into()
        } else {
            anyhow::anyhow!("agent at {endpoint}: {}", status.message())
        }
    };
    let mut stream = client
        .stream_kernel_events(request)
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(status_error)? {
        printer.wire(message)?;
    }
    Ok(())
}

/// Prints as things come (follow) or collects them for one report.
struct Printer {
    format: Format,
    follow: bool,
    summary: bool,
    report: EventsReport,
    /// Latest update of each incident, in order of first appearance.
    incidents: Vec<IncidentView>,
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
        let text = match self.format {
            Format::Json => format!("{value}\n"),
            _ => format!("{table_line}\n"),
        };
        emit(&text)
    }

    fn event(&mut self, event: EventView) -> anyhow::Result<()> {
        if self.summary {
            let key = format!(
                "{}/{}",
                event.class.as_deref().unwrap_or("unclassified"),
                event.id.as_deref().unwrap_or("-")
            );
            *self.report.counts.entry(key).or_insert(0) += 1;
            return Ok(());
        }
        if self.follow {
            let text = event_line(&event);
            return self.line(serde_json::json!({ "event": event }), text);
        }
        self.report.events.push(event);
        Ok(())
    }

    fn incident(&mut self, incident: IncidentView) -> anyhow::Result<()> {
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

    fn lost(&mut self, count: u64, first: u64, last: u64) -> anyhow::Result<()> {
        self.report.records_lost += count;
        if self.follow {
            return self.line(
                serde_json::json!({ "records_lost": { "count": count, "first_lost_seq": first, "last_lost_seq": last } }),
                format!("!! {count} kernel log records lost (seq {first}..={last})"),
            );
        }
        Ok(())
    }

    fn output(&mut self, output: Output, filter: &Filter) -> anyhow::Result<()> {
        match output {
            Output::Event(e) => {
                if filter.keeps(e.class) {
                    self.event(EventView::from(&e))?;
                }
            }
            Output::Incident(i) => self.incident(IncidentView::from(&i))?,
            Output::Lost {
                first_seq,
                last_seq,
            } => self.lost(last_seq - first_seq + 1, first_seq, last_seq)?,
        }
        Ok(())
    }

    fn wire(&mut self, message: pb::KernelStreamMessage) -> anyhow::Result<()> {
        match message.message {
            Some(Message::Header(h)) => {
                self.report.boot_id = Some(h.boot_id.clone());
                self.report.boot_time = time_text(h.boot_time.as_ref());
                if self.follow {
                    let boot_time = self.report.boot_time.clone().unwrap_or_default();
                    self.line(
                        serde_json::json!({ "header": { "boot_id": h.boot_id, "boot_time": boot_time, "records_lost_total": h.records_lost_total } }),
                        format!("boot {} at {boot_time}", h.boot_id),
                    )?;
                }
            }
            Some(Message::Event(e)) => self.event(EventView::from(&e))?,
            Some(Message::Incident(i)) => self.incident(IncidentView::from(&i))?,
            Some(Message::RecordsLost(l)) => {
                self.lost(l.count, l.first_lost_seq, l.last_lost_seq)?;
            }
            Some(Message::Lagged(l)) => {
                self.report.lagged += l.missed;
                if self.follow {
                    self.line(
                        serde_json::json!({ "lagged": { "missed": l.missed } }),
                        format!(
                            "!! this client fell behind; {} messages were dropped",
                            l.missed
                        ),
                    )?;
                }
            }
            None => {}
        }
        Ok(())
    }

    fn report_from_summary(&mut self, summary: &LogSummary) {
        for e in &summary.events {
            let _ = self.event(EventView::from(e));
        }
        self.incidents = summary.incidents.iter().map(IncidentView::from).collect();
        self.report.records_lost = summary.records_lost;
    }

    fn finish(mut self) -> anyhow::Result<Outcome> {
        if self.follow {
            return Ok(Outcome::Ok);
        }
        self.report.incidents = std::mem::take(&mut self.incidents);
        let text = match crate::output::structured(&self.report, self.format)? {
            Some(text) => text,
            None => render_table(&self.report),
        };
        emit(&text)?;
        Ok(Outcome::Ok)
    }
}

/// Standard output was closed by its reader (`| head`): the command ends quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
struct OutputClosed;

/// Writes to stdout.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(OutputClosed.into()),
        other => other.context("writing to standard output"),
    }
}

fn event_line(e: &EventView) -> String {
    let at = e
        .seq
        .map(|s| format!("seq {s}"))
        .or_else(|| e.line.map(|l| format!("line {l}")))
        .unwrap_or_default();
    let what = match (&e.class, &e.id) {
        (Some(c), Some(i)) => format!("{c}/{i}"),
        _ if e.user_written => "user-written".to_owned(),
        _ => "-".to_owned(),
    };
    format!(
        "{at} {} {what} {} {}",
        e.time.as_deref().unwrap_or("-"),
        e.device.as_deref().unwrap_or("-"),
        e.message
    )
}

fn incident_line(i: &IncidentView) -> String {
    format!(
        "incident {} {} on {}: {} events{}{}",
        i.incident_id,
        i.kind,
        i.device.as_deref().unwrap_or("?"),
        i.event_counts.values().sum::<u32>(),
        match i.recovered {
            Some(true) => ", recovered",
            Some(false) => ", NOT recovered",
            None => "",
        },
        if i.closed { ", closed" } else { "" },
    )
}

fn render_table(report: &EventsReport) -> String {
    use comfy_table::{ContentArrangement, Table};
    let mut out = String::new();
    if !report.counts.is_empty() {
        let mut t = Table::new();
        t.set_header(["CLASS/ID", "COUNT"]);
        for (k, v) in &report.counts {
            t.add_row([k.clone(), v.to_string()]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if !report.events.is_empty() {
        let mut t = Table::new();
        t.set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(["SEQ", "TIME", "CLASS", "ID", "DEVICE", "FIELDS", "MESSAGE"]);
        for e in &report.events {
            let fields: Vec<String> = e
                .fields
                .iter()
                .filter(|(k, _)| k.as_str() != "pci")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            t.add_row([
                e.seq
                    .map(|s| s.to_string())
                    .or_else(|| e.line.map(|l| format!("line {l}")))
                    .unwrap_or_default(),
                e.time
                    .clone()
                    .or_else(|| {
                        e.monotonic_usec
                            .map(|u| format!("{}.{:06}", u / 1_000_000, u % 1_000_000))
                    })
                    .unwrap_or_default(),
                e.class.clone().unwrap_or_else(|| {
                    if e.user_written {
                        "user".into()
                    } else {
                        "-".into()
                    }
                }),
                e.id.clone().unwrap_or_else(|| "-".into()),
                e.device.clone().unwrap_or_default(),
                fields.join(" "),
                e.message.clone(),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if report.incidents.is_empty() {
        out.push_str("No incidents.\n");
    } else {
        let mut t = Table::new();
        t.set_content_arrangement(ContentArrangement::Dynamic)
            .set_header([
                "INCIDENT",
                "KIND",
                "DEVICE",
                "FIRST",
                "LAST",
                "EVENTS",
                "PROCESS",
                "RECOVERED",
            ]);
        for i in &report.incidents {
            let where_ = |seq: Option<u64>, line: Option<u64>, time: &Option<String>| {
                time.clone()
                    .or_else(|| seq.map(|s| format!("seq {s}")))
                    .or_else(|| line.map(|l| format!("line {l}")))
                    .unwrap_or_default()
            };
            let counts: Vec<String> = i
                .event_counts
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect();
            t.add_row([
                i.incident_id.to_string(),
                i.kind.clone(),
                i.device.clone().unwrap_or_default(),
                where_(i.first_seq, i.first_line, &i.first_time),
                where_(i.last_seq, i.last_line, &i.last_time),
                counts.join(" "),
                match (&i.process, i.pid) {
                    (Some(p), Some(pid)) => format!("{p} ({pid})"),
                    (Some(p), None) => p.clone(),
                    (None, Some(pid)) => pid.to_string(),
                    (None, None) => String::new(),
                },
                match i.recovered {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "unknown".into(),
                },
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if report.records_lost > 0 {
        out.push_str(&format!(
            "{} kernel log records were lost.\n",
            report.records_lost
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
