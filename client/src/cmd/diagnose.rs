//! `nodectl diagnose`: where a llama.cpp run stopped, what the node and the process did then, which known problem it is, and what to try next.
//!
//! One diagnosis joins a run's log (a file, a pod's log, or none), the live server's answers
//! (`--url`), the inference process the agent sees, the kernel incidents of the run's window
//! and the node's findings; the phase comes from the log when it says, else from the node, with
//! how sure it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use nodectl_model::diagnosis::{DiagnosisStamp, RunKey};
use nodectl_model::inference::{
    Activity, InferenceProcess, InferenceProcesses, MemoryTrend, PodLog,
};
use nodectl_model::log_wrapper::JournalYear;
use nodectl_model::snapshot::Severity;
use nodectl_model::{Incident, Snapshot, StreamMessage};
use serde::Serialize;
use tokio_stream::StreamExt as _;

use crate::catalog::{Catalog, Facts, LeftOut, MatchedIssue, Proposed};
use crate::context::Context;
use crate::embedded::EmbeddedOptions;
use crate::exit::Outcome as ExitOutcome;
use crate::experiments::{self, Experiment};
use crate::llama_log::{self, LlamaLog, Outcome, Phase};
use crate::llama_probe::{self, Health, Probe};
use crate::nodes::{KernelEventsRequest, NodeClient, PodLogRequest, Target};
use crate::render;

/// How long CPU time and GPU memory are watched: long enough to tell a busy-wait from sleep and
/// a load from a stall, short enough for a command someone waits on.
const PROCESS_SAMPLE: Duration = Duration::from_secs(1);
/// Bytes of a log read from a file or standard input; a verbose run of days is far less.
const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// A log's read size: lines are cut out of the buffer, and one that spans two reads is copied,
/// so reads much longer than a line.
const LOG_READ_BUFFER_BYTES: usize = 256 * 1024;
/// How long before a run's first line a kernel incident still belongs to its window.
const WINDOW_LEAD: Duration = Duration::from_secs(60);
/// How long waiting for the agent's kernel event history may take.
const KERNEL_EVENTS_TIMEOUT: Duration = Duration::from_secs(20);
/// Evidence and error lines the table output shows, at most (JSON has them all).
const MAX_EVIDENCE: usize = 16;

/// Flags of `nodectl diagnose`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct DiagnoseArgs {
    /// Where node state comes from (the agent, or this host / --host-root in-process).
    #[command(flatten)]
    pub source: crate::cli::NodeSource,
    /// A llama.cpp log to read (`-` for standard input): llama-server, ollama, LM Studio or
    /// lemonade output, plain or with journald, kubectl --timestamps or CRI prefixes.
    #[arg(long, value_name = "FILE|-")]
    pub log: Option<String>,
    /// A pod's log, read by the agent from /var/log/pods: NAMESPACE/POD[/CONTAINER].
    #[arg(long, value_name = "NS/POD[/CONTAINER]")]
    pub pod: Option<String>,
    /// A running llama-server to ask: /health, /props, /slots, /metrics.
    #[arg(long, value_name = "http://HOST:PORT")]
    pub url: Option<String>,
    /// How long a log must be quiet before a run that is not ready counts as stalled
    /// (seconds, or with a unit: 90s, 2m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = crate::duration::parse_duration)]
    pub stall_after: Duration,
    /// The experiment log whose failed runs on this node rank their strategies last
    /// (default: the one `nodectl experiment` writes, when it exists).
    #[arg(long, value_name = "PATH")]
    pub experiments: Option<PathBuf>,
    /// Year of the first journald line of --log, which prints none (as `events --year`).
    /// Default: the latest year that puts the first line no later than tomorrow.
    #[arg(long, value_name = "YEAR")]
    pub year: Option<i16>,
}

/// `--stall-after`'s default.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(120);

/// How sure the phase is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The log names the phase.
    High,
    /// The log cannot tell; the node's state points to it.
    Medium,
    /// Neither the log nor the node tells; the phase is the last one the log shows.
    Low,
}

/// Where a run's log came from.
#[derive(Debug, Clone, Serialize)]
pub struct LogSource {
    /// `FILE`, `standard input`, or `pod NS/POD/CONTAINER (PATH)`.
    pub name: String,
    /// The agent sent only the end of a long pod log.
    #[serde(skip_serializing_if = "is_zero")]
    pub bytes_skipped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A kernel incident of the run's window, placed against the run's last log line.
#[derive(Debug, Clone, Serialize)]
pub struct WindowIncident {
    #[serde(flatten)]
    pub incident: Incident,
    /// Seconds from the run's last log line to the incident's start (negative: before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_last_line_s: Option<i64>,
}

/// One step of the joined timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Seconds since the process started, from llama.cpp's own stamps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_start_s: Option<f64>,
    /// `phase`, `incident`, `last_line`, `node`.
    pub kind: &'static str,
    pub what: String,
}

/// The diagnosis of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// When, on which node, and which run (`made_at`, `node`, `run`): reads back as a
    /// `nodectl_model::diagnosis::DiagnosisStamp`.
    #[serde(flatten)]
    pub stamp: DiagnosisStamp,
    /// What this diagnosis is of: the process, the log or the URL.
    pub subject: String,
    /// The phase the run reached (the last one, serving included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    pub phase_confidence: Confidence,
    /// What decided the phase.
    pub phase_evidence: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_for_s: Option<u64>,
    /// Seconds since the log's last line (its clock, else the file's mtime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_for_s: Option<u64>,
    /// The answer in one sentence.
    pub verdict: String,
    /// What the node did then: the process's state and the GPU memory, in words.
    pub node_state: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_source: Option<LogSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LlamaLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<InferenceProcess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    pub timeline: Vec<TimelineEntry>,
    pub incidents: Vec<WindowIncident>,
    /// Node checks that fired (warning or worse), by id, and those that could not run.
    pub findings: Vec<String>,
    pub known_issues: Vec<MatchedIssue>,
    pub strategies: Vec<Proposed>,
    /// Strategies of the matched issues that are in effect already.
    pub already_in_effect: Vec<LeftOut>,
    /// What could not be read, so what this diagnosis could not use.
    pub unknowns: Vec<String>,
}

/// `-o json` of the whole node when no log, pod or URL was named.
#[derive(Debug, Serialize)]
pub struct NodeDiagnoses {
    pub node: String,
    pub diagnoses: Vec<Diagnosis>,
    /// Inference processes the agent found beyond those it lists: not diagnosed.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub processes_not_listed: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknowns: Vec<String>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// What the node says, read once for every run diagnosed.
struct NodeState {
    label: String,
    snapshot: Option<Snapshot>,
    processes: Option<InferenceProcesses>,
    /// Why the processes could not be listed: with nothing named to diagnose, that is the answer.
    processes_error: Option<anyhow::Error>,
    /// The agent's incidents (latest update of each), and the event ids seen in each.
    incidents: Option<Vec<Incident>>,
    /// Strategies tried before, from the experiment log.
    experiments: Vec<Experiment>,
    unknowns: Vec<String>,
}

/// One run to diagnose, before the diagnosis.
struct Run {
    subject: String,
    log: Option<(LlamaLog, LogSource, Option<jiff::Timestamp>)>,
    probe: Option<Probe>,
    process: Option<InferenceProcess>,
    unknowns: Vec<String>,
}

pub async fn run(args: DiagnoseArgs, ctx: &Context) -> anyhow::Result<ExitOutcome> {
    let targets = ctx.nodes().await?.targets();
    let [target] = targets.as_slice() else {
        return run_fleet(args, targets, ctx).await;
    };
    let found = diagnoses(&args, target, None).await?;
    let bad = found.any_stalled_or_crashed();
    match found {
        Diagnoses::One(one) => {
            if !render::print_structured(&one, ctx.format)? {
                render::emit(&diagnosis_text(&one))?;
            }
        }
        Diagnoses::Node(document) => print_node(&document, ctx)?,
    }
    Ok(if bad {
        ExitOutcome::Critical
    } else {
        ExitOutcome::Ok
    })
}

/// `diagnose` over several agents: every inference process of each node, the nodes asked at
/// once, each within its deadline (plus the process window); a node that fails is listed.
async fn run_fleet(
    args: DiagnoseArgs,
    targets: Vec<Target>,
    ctx: &Context,
) -> anyhow::Result<ExitOutcome> {
    if args.log.is_some() || args.pod.is_some() || args.url.is_some() {
        anyhow::bail!(
            "--log, --pod and --url name one run on one node; give one --endpoint, or none of them to diagnose every run of every node"
        );
    }
    let args = std::sync::Arc::new(args);
    let deadline = ctx.node_timeout().saturating_add(PROCESS_SAMPLE);
    let answers = crate::fleet::ask_each(targets, deadline, move |target| {
        let args = std::sync::Arc::clone(&args);
        async move { diagnoses(&args, &target, None).await }
    })
    .await;
    #[derive(Serialize)]
    struct FleetDiagnoses<'a> {
        nodes: Vec<crate::fleet::NodeDocument<'a, Diagnoses>>,
    }
    let document = FleetDiagnoses {
        nodes: answers.iter().map(crate::fleet::Answer::document).collect(),
    };
    if !render::print_structured(&document, ctx.format)? {
        let mut out = String::new();
        for answer in &answers {
            if let Ok(found) = &answer.result {
                out.push_str(&format!("== node {}\n", answer.label));
                out.push_str(&found.text());
                out.push('\n');
            }
        }
        out.push_str(&crate::fleet::failures_text(&answers));
        render::emit(&out)?;
    }
    Ok(crate::fleet::outcome_of(&answers, |found| {
        if found.any_stalled_or_crashed() {
            ExitOutcome::Critical
        } else {
            ExitOutcome::Ok
        }
    }))
}

/// What `diagnose` found: the run named by `--log`, `--pod` or `--url`, or every inference
/// process of the node.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Diagnoses {
    One(Box<Diagnosis>),
    Node(NodeDiagnoses),
}

impl Diagnoses {
    pub fn all(&self) -> Vec<&Diagnosis> {
        match self {
            Diagnoses::One(one) => vec![one],
            Diagnoses::Node(node) => node.diagnoses.iter().collect(),
        }
    }

    pub fn any_stalled_or_crashed(&self) -> bool {
        self.all()
            .iter()
            .any(|d| matches!(d.outcome, Some(Outcome::Stalled | Outcome::Crashed)))
    }

    /// The diagnoses as text, as `diagnose` prints them.
    pub fn text(&self) -> String {
        match self {
            Diagnoses::One(one) => diagnosis_text(one),
            Diagnoses::Node(node) => node_text(node),
        }
    }
}

/// Gathers what the node and the named sources say and diagnoses each run, at the node's time.
/// `shown_as` names the node instead of its target (a bundle's tree diagnosed for its node).
pub async fn diagnoses(
    args: &DiagnoseArgs,
    target: &Target,
    shown_as: Option<&str>,
) -> anyhow::Result<Diagnoses> {
    let catalog = Catalog::embedded()?;
    let url = args
        .url
        .as_deref()
        .map(llama_probe::check_url)
        .transpose()?;
    let pod = args.pod.as_deref().map(parse_pod).transpose()?;
    // The log is read first: a bad --log is an input error before any node is asked.
    let file_log = match &args.log {
        Some(path) => Some(read_log_file(path, args.year)?),
        None => None,
    };
    let options = EmbeddedOptions {
        kernel_log: true,
        rules: None,
    };
    let mut client = target.connect(&options).await?;
    let mut node = read_node(&mut client, target).await;
    if let Some(label) = shown_as {
        node.label = label.to_owned();
    }
    node.experiments = read_experiments(args.experiments.as_deref(), &mut node.unknowns);

    let mut runs = Vec::new();
    let named = file_log.is_some() || pod.is_some() || url.is_some();
    if !named && let Some(e) = node.processes_error.take() {
        // Not "no process found": the node could not say.
        return Err(e.context(format!("listing the inference processes of {}", node.label)));
    }
    if named {
        let mut run = Run {
            subject: String::new(),
            log: None,
            probe: None,
            process: None,
            unknowns: Vec::new(),
        };
        let mut subject = Vec::new();
        if let Some((log, source, mtime)) = file_log {
            subject.push(source.name.clone());
            run.log = Some((log, source, mtime));
        }
        if let Some(request) = &pod {
            let shown = pod_shown(request);
            subject.push(format!("pod {shown}"));
            let log = client.pod_log(request.clone()).await?;
            if run.log.is_some() {
                run.unknowns.push(format!(
                    "pod {shown}: its log was not read (--log was given); the pod names the process"
                ));
            } else {
                run.log = Some(parse_pod_log(&log));
            }
            run.process = node.processes.as_ref().and_then(|p| {
                p.processes
                    .iter()
                    .find(|proc| {
                        proc.pod.as_deref() == Some(&format!("{}/{}", log.namespace, log.pod))
                    })
                    .cloned()
            });
        }
        if let Some(url) = &url {
            subject.push(url.clone());
            run.probe = Some(llama_probe::probe(url).await?);
        }
        if run.process.is_none()
            && let Some(processes) = &node.processes
        {
            let model = run
                .log
                .as_ref()
                .and_then(|(log, _, _)| log.model.as_deref());
            let serving_model: Vec<&InferenceProcess> = processes
                .processes
                .iter()
                .filter(|p| model.is_some() && p.arg_value(&["-m", "--model"]) == model)
                .collect();
            match (processes.processes.as_slice(), serving_model.as_slice()) {
                ([only], _) => run.process = Some(only.clone()),
                (_, [only]) => run.process = Some((*only).clone()),
                ([], _) => {}
                (many, _) => run.unknowns.push(format!(
                    "{} inference processes run on the node and none alone loads this log's model; name its pod with --pod",
                    many.len()
                )),
            }
        }
        if run.process.is_none()
            && let Some(processes) = &node.processes
            && processes.processes_not_listed > 0
        {
            // The run's process may be one of those the agent did not list.
            run.unknowns.push(format!(
                "{} more inference processes run on the node than the agent lists ({}): the run's process may be one of them",
                processes.processes_not_listed,
                processes.processes.len()
            ));
        }
        run.subject = subject.join(", ");
        runs.push(run);
    } else if let Some(processes) = &node.processes {
        for process in &processes.processes {
            let mut run = Run {
                subject: process_label(process),
                log: None,
                probe: None,
                process: Some(process.clone()),
                unknowns: Vec::new(),
            };
            if let Some(uid) = &process.pod_uid {
                let request = PodLogRequest {
                    pod_uid: uid.clone(),
                    ..PodLogRequest::default()
                };
                match client.pod_log(request).await {
                    Ok(log) => run.log = Some(parse_pod_log(&log)),
                    Err(e) => run.unknowns.push(format!("the pod's log: {e:#}")),
                }
            } else {
                run.unknowns
                    .push("not in a pod: no log to read (give it with --log FILE)".to_owned());
            }
            runs.push(run);
        }
    }

    // The node's clock: a saved tree (a bundle) is diagnosed as of the moment it was taken.
    let now = node
        .snapshot
        .as_ref()
        .and_then(|s| s.taken_at.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let diagnoses: Vec<Diagnosis> = runs
        .into_iter()
        .map(|run| diagnose(run, &node, &catalog, args.stall_after, now))
        .collect();
    if named {
        let Some(one) = diagnoses.into_iter().next() else {
            anyhow::bail!("internal: a named run gave no diagnosis");
        };
        return Ok(Diagnoses::One(Box::new(one)));
    }
    Ok(Diagnoses::Node(NodeDiagnoses {
        node: node.label.clone(),
        diagnoses,
        processes_not_listed: node
            .processes
            .as_ref()
            .map_or(0, |p| p.processes_not_listed),
        unknowns: node.unknowns.clone(),
    }))
}

fn print_node(document: &NodeDiagnoses, ctx: &Context) -> anyhow::Result<()> {
    if !render::print_structured(document, ctx.format)? {
        render::emit(&node_text(document))?;
    }
    Ok(())
}

fn node_text(document: &NodeDiagnoses) -> String {
    let mut text = String::new();
    if document.diagnoses.is_empty() {
        text.push_str(&format!(
            "{}: no llama.cpp or ollama inference process found\n",
            document.node
        ));
        for unknown in &document.unknowns {
            text.push_str(&format!("  could not read: {unknown}\n"));
        }
        text.push_str("  Diagnose a saved run with --log FILE, a pod with --pod NS/POD, a server with --url.\n");
    }
    for (i, d) in document.diagnoses.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&diagnosis_text(d));
    }
    let not_listed =
        super::node::not_listed_line(document.processes_not_listed, document.diagnoses.len());
    if !not_listed.is_empty() {
        text.push_str(&format!("\n{not_listed}"));
    }
    text
}

/// `NS/POD[/CONTAINER]`.
pub fn parse_pod(text: &str) -> anyhow::Result<PodLogRequest> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [namespace, pod] | [namespace, pod, ""] if !namespace.is_empty() && !pod.is_empty() => {
            Ok(PodLogRequest {
                namespace: (*namespace).to_owned(),
                pod: (*pod).to_owned(),
                ..PodLogRequest::default()
            })
        }
        [namespace, pod, container]
            if !namespace.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            Ok(PodLogRequest {
                namespace: (*namespace).to_owned(),
                pod: (*pod).to_owned(),
                container: (*container).to_owned(),
                ..PodLogRequest::default()
            })
        }
        _ => anyhow::bail!("--pod {text}: expected NAMESPACE/POD or NAMESPACE/POD/CONTAINER"),
    }
}

fn pod_shown(request: &PodLogRequest) -> String {
    if request.container.is_empty() {
        format!("{}/{}", request.namespace, request.pod)
    } else {
        format!(
            "{}/{}/{}",
            request.namespace, request.pod, request.container
        )
    }
}

fn process_label(p: &InferenceProcess) -> String {
    match &p.pod {
        Some(pod) => format!("{} pid {} (pod {pod})", p.program, p.pid),
        None => format!("{} pid {}", p.program, p.pid),
    }
}

/// A log file (or standard input) parsed line by line, with the file's mtime.
fn read_log_file(
    path: &str,
    year: Option<i16>,
) -> anyhow::Result<(LlamaLog, LogSource, Option<jiff::Timestamp>)> {
    let (reader, name, mtime): (Box<dyn std::io::BufRead>, String, Option<jiff::Timestamp>) =
        if path == "-" {
            (
                Box::new(std::io::BufReader::with_capacity(
                    LOG_READ_BUFFER_BYTES,
                    std::io::stdin(),
                )),
                "standard input".to_owned(),
                None,
            )
        } else {
            let file = std::fs::File::open(path).with_context(|| format!("--log {path}"))?;
            let mtime = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok());
            (
                Box::new(std::io::BufReader::with_capacity(
                    LOG_READ_BUFFER_BYTES,
                    file,
                )),
                path.to_owned(),
                mtime,
            )
        };
    let log = llama_log::parse_reader(reader, MAX_LOG_BYTES, JournalYear::given_or_today(year))
        .with_context(|| format!("--log {name}"))?;
    check_log(&log, &name)?;
    Ok((
        log,
        LogSource {
            name,
            bytes_skipped: 0,
        },
        mtime,
    ))
}

/// Parses a stream as [`llama_log::parse_reader`] does, up to [`MAX_LOG_BYTES`], its journald
/// lines dated by today.
pub fn parse_reader(reader: impl std::io::BufRead) -> std::io::Result<LlamaLog> {
    llama_log::parse_reader(reader, MAX_LOG_BYTES, JournalYear::given_or_today(None))
}

/// An empty log, or one with nothing of llama.cpp's in it, is an input error.
fn check_log(log: &LlamaLog, name: &str) -> anyhow::Result<()> {
    if log.lines_read == 0 {
        anyhow::bail!("{name} is empty: there is no llama.cpp log to read");
    }
    if log.lines_recognised == 0 {
        anyhow::bail!(
            "{name}: none of its {} lines is a llama.cpp, ollama, LM Studio or lemonade line; is it the right log?",
            log.lines_read
        );
    }
    Ok(())
}

fn parse_pod_log(log: &PodLog) -> (LlamaLog, LogSource, Option<jiff::Timestamp>) {
    let parsed = llama_log::parse(String::from_utf8_lossy(&log.tail).lines());
    let mtime = log.modified_at.as_deref().and_then(|t| t.parse().ok());
    (
        parsed,
        LogSource {
            name: format!(
                "pod {}/{}/{} ({})",
                log.namespace, log.pod, log.container, log.path
            ),
            bytes_skipped: log.bytes_skipped,
        },
        mtime,
    )
}

/// Reads what the node can tell; what fails is an unknown of the diagnosis, not its end.
async fn read_node(client: &mut NodeClient, target: &Target) -> NodeState {
    let mut unknowns = Vec::new();
    let snapshot = match client.snapshot(1, Duration::ZERO).await {
        Ok(s) => Some(s),
        Err(e) => {
            unknowns.push(format!("node snapshot: {e:#}"));
            None
        }
    };
    let mut processes_error = None;
    let processes = match client.inference_processes(PROCESS_SAMPLE).await {
        Ok(p) => {
            for problem in &p.problems {
                unknowns.push(format!("{}: {}", problem.path, problem.reason));
            }
            Some(p)
        }
        Err(e) => {
            unknowns.push(format!("inference processes: {e:#}"));
            processes_error = Some(e);
            None
        }
    };
    let incidents =
        match tokio::time::timeout(KERNEL_EVENTS_TIMEOUT, kernel_incidents(client)).await {
            Ok(Ok(incidents)) => Some(incidents),
            Ok(Err(e)) => {
                unknowns.push(format!("kernel log: {e:#}"));
                None
            }
            Err(_) => {
                unknowns.push(format!(
                    "kernel log: no answer within {} s",
                    KERNEL_EVENTS_TIMEOUT.as_secs()
                ));
                None
            }
        };
    NodeState {
        label: target.label(),
        snapshot,
        processes,
        processes_error,
        incidents,
        experiments: Vec::new(),
        unknowns,
    }
}

/// The experiment log named, else the default one if it exists; one that cannot be read is
/// said among the unknowns, never the end of the diagnosis.
fn read_experiments(named: Option<&Path>, unknowns: &mut Vec<String>) -> Vec<Experiment> {
    let path = match named {
        Some(path) => path.to_path_buf(),
        None => match experiments::default_path() {
            Some(path) if path.exists() => path,
            _ => return Vec::new(),
        },
    };
    experiments::read(&path).unwrap_or_else(|e| {
        unknowns.push(format!("experiment log: {e}"));
        Vec::new()
    })
}

/// Every incident the agent holds (the latest update of each).
async fn kernel_incidents(client: &mut NodeClient) -> anyhow::Result<Vec<Incident>> {
    let mut stream = client
        .kernel_events(KernelEventsRequest {
            since_seq: 0,
            follow: false,
            classes: Vec::new(),
            include_unclassified: false,
        })
        .await?;
    let mut incidents: BTreeMap<u64, Incident> = BTreeMap::new();
    while let Some(message) = stream.next().await {
        if let StreamMessage::Incident(incident) = message? {
            incidents.insert(incident.incident_id, incident);
        }
    }
    Ok(incidents.into_values().collect())
}

fn diagnose(
    run: Run,
    node: &NodeState,
    catalog: &Catalog,
    stall_after: Duration,
    now: jiff::Timestamp,
) -> Diagnosis {
    let mut unknowns = node.unknowns.clone();
    unknowns.extend(run.unknowns);
    let sample_ms = node.processes.as_ref().map_or(0, |p| p.sample_ms);
    let activity = run.process.as_ref().map(|p| p.activity(sample_ms));

    // How long the log has been quiet, and when its last line was written.
    let (log, log_source, mtime) = match run.log {
        Some((log, source, mtime)) => (Some(log), Some(source), mtime),
        None => (None, None, None),
    };
    let quiet_for = log.as_ref().and_then(|l| l.quiet_for(now, mtime));
    let last_line_at = log.as_ref().and_then(|l| l.last_time.wall.or(mtime));
    let mut outcome = log.as_ref().map(|l| l.outcome(quiet_for, stall_after));
    // A live server's answer settles what an old log cannot.
    if let Some(probe) = &run.probe {
        match (probe.health, outcome) {
            (Health::Ready, None | Some(Outcome::Incomplete | Outcome::Stalled)) => {
                outcome = Some(Outcome::Ready);
            }
            (Health::Loading, None) => outcome = Some(Outcome::Incomplete),
            _ => {}
        }
    }

    // The memory trend of the cards over the same window.
    let trends: Vec<(String, MemoryTrend, i128)> = node
        .processes
        .iter()
        .flat_map(|p| &p.cards)
        .filter_map(|c| Some((c.card.clone(), c.trend()?, c.growth_bytes()?)))
        .collect();
    let memory_rising = trends.iter().any(|(_, t, _)| *t == MemoryTrend::Rising);

    // The phase: the log's when it says, else the node's.
    let log_phase = log.as_ref().and_then(LlamaLog::last_phase);
    let terse = log
        .as_ref()
        .is_some_and(|l| l.verbosity.is_none_or(|v| v <= 3) && !shows_loading_phases(l));
    let loading = matches!(outcome, Some(Outcome::Stalled | Outcome::Incomplete))
        || (outcome.is_none()
            && run
                .probe
                .as_ref()
                .is_some_and(|p| p.health == Health::Loading));
    let mut phase = log_phase;
    let mut confidence = if log_phase.is_some() {
        Confidence::High
    } else {
        Confidence::Low
    };
    let mut phase_evidence = Vec::new();
    if let Some(l) = &log
        && let Some(p) = log_phase
    {
        let line = l.timeline.last().map_or(0, |m| m.line);
        phase_evidence.push(format!("the log enters {} at line {line}", p.as_str()));
    }
    if loading && (terse || log.is_none()) {
        confidence = Confidence::Low;
        if terse {
            phase_evidence.push(
                "the log is at the default verbosity: it prints nothing between `loading model` and `model loaded`"
                    .to_owned(),
            );
        }
        if memory_rising {
            phase = Some(Phase::Upload);
            confidence = Confidence::Medium;
            for (card, _, growth) in trends.iter().filter(|(_, t, _)| *t == MemoryTrend::Rising) {
                phase_evidence.push(format!(
                    "{card}: VRAM+GTT in use grew by {} in {} ms: the weights are still being loaded",
                    render::human_bytes(u64::try_from(*growth).unwrap_or(0)),
                    sample_ms
                ));
            }
        } else if matches!(activity, Some(Activity::BlockedInKfd | Activity::Spinning)) {
            confidence = Confidence::Medium;
            phase_evidence.push(match activity {
                Some(Activity::BlockedInKfd) => {
                    "GPU memory flat and a thread waits in an ioctl on /dev/kfd: a GPU operation that does not finish (upload, graph reserve or warmup)".to_owned()
                }
                _ => "GPU memory flat and a core busy-waiting (ROCr's hsa_signal_wait): a GPU operation that does not finish (upload, graph reserve or warmup)".to_owned(),
            });
        }
    }

    // Kernel incidents of the run's window.
    let window_start = log
        .as_ref()
        .and_then(|l| l.timeline.iter().find_map(|m| m.time.wall))
        .or_else(|| {
            run.process
                .as_ref()
                .and_then(|p| p.started_at.as_deref())
                .and_then(|t| t.parse().ok())
        })
        .map(|t: jiff::Timestamp| {
            t - jiff::SignedDuration::try_from(WINDOW_LEAD).unwrap_or_default()
        });
    let mut incidents = Vec::new();
    if let Some(all) = &node.incidents {
        for incident in all {
            let start = incident.first_time.or(incident.last_time);
            let in_window = match (window_start, start) {
                (Some(from), Some(at)) => at >= from,
                // Without a start of the run (or a wall time of the incident), every
                // incident of this boot is shown: better one too many than a missed one.
                _ => true,
            };
            if in_window {
                let after_last_line_s = last_line_at
                    .zip(start)
                    .map(|(last, at)| at.duration_since(last).as_secs_f64().round() as i64);
                incidents.push(WindowIncident {
                    incident: incident.clone(),
                    after_last_line_s,
                });
            }
        }
    }

    // The node's findings.
    let mut findings = Vec::new();
    let mut params = BTreeMap::new();
    if let Some(snapshot) = &node.snapshot {
        for f in &snapshot.findings {
            match f.severity {
                Severity::Warning | Severity::Critical => findings.push(f.id.clone()),
                Severity::Unknown => findings.push(format!("{} (could not run)", f.id)),
                _ => {}
            }
        }
        for (module, values) in [
            ("amdgpu", &snapshot.module_parameters.amdgpu),
            ("ttm", &snapshot.module_parameters.ttm),
        ] {
            for (name, value) in values {
                params.insert(format!("{module}.{name}"), value.raw());
            }
        }
    }

    // The catalogs.
    let process = run.process;
    let load_mode = log
        .as_ref()
        .and_then(|l| l.load_mode.clone())
        .or_else(|| {
            process
                .as_ref()
                .and_then(|p| p.arg_value(&["-lm", "--load-mode"]).map(str::to_owned))
        })
        .or_else(|| {
            process
                .as_ref()
                .filter(|p| p.has_arg(&["--no-mmap"]))
                .map(|_| "none".to_owned())
        });
    let facts = Facts {
        phase,
        outcome,
        backend: log.as_ref().and_then(|l| l.backend),
        incident_kinds: incidents
            .iter()
            .map(|i| i.incident.kind.to_string())
            .collect(),
        event_ids: incidents
            .iter()
            .flat_map(|i| i.incident.event_counts.keys().map(|k| k.to_string()))
            .collect(),
        findings: findings.iter().cloned().collect(),
        errors: log
            .iter()
            .flat_map(|l| l.errors.iter().map(|e| e.kind))
            .collect(),
        activity,
        load_mode,
        flash_attention: log.as_ref().and_then(|l| l.flash_attention.clone()),
        params,
        env: process.as_ref().map(|p| p.env.clone()).unwrap_or_default(),
        args: process.as_ref().map(|p| p.args.clone()).unwrap_or_default(),
    };
    let known_issues = if matches!(outcome, Some(Outcome::Stalled | Outcome::Crashed))
        || !facts.incident_kinds.is_empty()
        || !facts.findings.is_empty()
    {
        catalog.match_issues(&facts)
    } else {
        Vec::new()
    };
    let (mut strategies, already_in_effect) = catalog.propose(&known_issues, &facts);
    if terse && confidence != Confidence::High && loading {
        let verbose_already = process
            .as_ref()
            .and_then(|p| p.arg_value(&["-lv", "--verbosity", "--log-verbosity"]))
            .and_then(|v| v.parse::<u8>().ok())
            .is_some_and(|v| v >= 4);
        if !verbose_already
            && catalog.in_effect("log_verbosity_4", &facts).is_none()
            && let Some(s) = catalog.strategy("log_verbosity_4")
        {
            strategies.push(Proposed {
                strategy: s.clone(),
                for_issues: Vec::new(),
                tried_before: None,
            });
        }
    }

    experiments::rank_tried_last(&mut strategies, &node.experiments, &node.label, catalog);

    let stalled_for_s = (outcome == Some(Outcome::Stalled))
        .then_some(quiet_for.as_ref().map(Duration::as_secs))
        .flatten();
    let node_state = node_state_words(process.as_ref(), activity, sample_ms, &trends);
    let timeline = joined_timeline(log.as_ref(), &incidents, last_line_at);
    let verdict = verdict(
        phase,
        confidence,
        outcome,
        stalled_for_s,
        &incidents,
        activity,
        &run.probe,
        log.is_some(),
    );
    let run_key = RunKey {
        pod_uid: process.as_ref().and_then(|p| p.pod_uid.clone()),
        pod: process.as_ref().and_then(|p| p.pod.clone()),
        pid: process.as_ref().map(|p| p.pid),
        model: log.as_ref().and_then(|l| l.model.clone()).or_else(|| {
            process
                .as_ref()
                .and_then(|p| p.arg_value(&["-m", "--model"]).map(str::to_owned))
        }),
        build: log.as_ref().and_then(|l| l.build.clone()),
    };
    Diagnosis {
        stamp: DiagnosisStamp {
            made_at: now.to_string(),
            node: node.label.clone(),
            run: run_key,
        },
        subject: run.subject,
        phase,
        phase_confidence: confidence,
        phase_evidence,
        outcome,
        stalled_for_s,
        quiet_for_s: quiet_for.as_ref().map(Duration::as_secs),
        verdict,
        node_state,
        log_source,
        log,
        probe: run.probe,
        activity,
        process,
        timeline,
        incidents,
        findings,
        known_issues,
        strategies,
        already_in_effect,
        unknowns,
    }
}

/// Whether the log shows any of the loading phases that only `-lv 4` prints.
fn shows_loading_phases(log: &LlamaLog) -> bool {
    log.timeline.iter().any(|m| {
        matches!(
            m.phase,
            Phase::ModelMetadata
                | Phase::TensorLoad
                | Phase::Upload
                | Phase::Context
                | Phase::GraphReserve
                | Phase::Warmup
        )
    })
}

fn node_state_words(
    process: Option<&InferenceProcess>,
    activity: Option<Activity>,
    sample_ms: u32,
    trends: &[(String, MemoryTrend, i128)],
) -> Vec<String> {
    let mut words = Vec::new();
    if let (Some(p), Some(a)) = (process, activity) {
        let what = match a {
            Activity::Stopped => {
                "is stopped (SIGSTOP or a debugger): it makes no progress until continued"
                    .to_owned()
            }
            Activity::BlockedInKfd => {
                let waiting: Vec<String> = p
                    .threads
                    .iter()
                    .filter(|t| t.in_kfd_ioctl)
                    .map(|t| format!("{} {}", t.tid, t.wchan.as_deref().unwrap_or("?")))
                    .collect();
                format!(
                    "waits in an ioctl on /dev/kfd (threads {})",
                    waiting.join(", ")
                )
            }
            Activity::BlockedInKernel => {
                let waiting: Vec<String> = p
                    .threads
                    .iter()
                    .filter(|t| t.is_blocked(p.pid))
                    .map(|t| {
                        format!(
                            "{} {} in {}",
                            t.tid,
                            t.state,
                            t.wchan.as_deref().unwrap_or("?")
                        )
                    })
                    .collect();
                format!("is held in the kernel (threads {})", waiting.join(", "))
            }
            Activity::Spinning => format!(
                "is busy: {} ms of CPU in {sample_ms} ms (a busy-wait such as hsa_signal_wait, or work)",
                p.cpu_ms_in_sample.unwrap_or(0)
            ),
            Activity::Idle => match p.cpu_ms_in_sample {
                Some(cpu) => format!("sleeps: {cpu} ms of CPU in {sample_ms} ms"),
                None => "sleeps".to_owned(),
            },
            Activity::Running => "is running".to_owned(),
            Activity::Zombie => "has exited (zombie)".to_owned(),
        };
        let mut handles = Vec::new();
        if p.kfd_handles > 0 {
            handles.push("/dev/kfd".to_owned());
        }
        handles.extend(p.dri_handles.iter().map(|d| format!("/dev/dri/{d}")));
        let handles = if handles.is_empty() {
            "no GPU device open".to_owned()
        } else {
            format!("holds {}", handles.join(", "))
        };
        words.push(format!("{} {what}; {handles}", process_label(p)));
        if let Some(kfd) = &p.kfd
            && let Some(evicted) = kfd.evicted_ms_in_sample.filter(|e| *e > 0)
        {
            words.push(format!(
                "its GPU queues were evicted for {evicted} ms of the {sample_ms} ms watched"
            ));
        }
    }
    for (card, trend, growth) in trends {
        let change = match trend {
            MemoryTrend::Rising => format!(
                "rising (+{})",
                render::human_bytes(u64::try_from(*growth).unwrap_or(0))
            ),
            MemoryTrend::Falling => format!(
                "falling (-{})",
                render::human_bytes(u64::try_from(-*growth).unwrap_or(0))
            ),
            MemoryTrend::Flat => "flat".to_owned(),
        };
        words.push(format!(
            "{card}: GPU memory in use {change} over {sample_ms} ms"
        ));
    }
    words
}

fn joined_timeline(
    log: Option<&LlamaLog>,
    incidents: &[WindowIncident],
    last_line_at: Option<jiff::Timestamp>,
) -> Vec<TimelineEntry> {
    let mut entries: Vec<(Option<jiff::Timestamp>, u8, TimelineEntry)> = Vec::new();
    if let Some(log) = log {
        for mark in &log.timeline {
            entries.push((
                mark.time.wall,
                0,
                TimelineEntry {
                    time: mark.time.wall.map(|t| t.to_string()),
                    since_start_s: mark.time.since_start_s,
                    kind: "phase",
                    what: format!("{} (line {})", mark.phase.as_str(), mark.line),
                },
            ));
        }
        if let Some((line, text)) = &log.last_line {
            entries.push((
                log.last_time.wall.or(last_line_at),
                1,
                TimelineEntry {
                    time: log.last_time.wall.or(last_line_at).map(|t| t.to_string()),
                    since_start_s: log.last_time.since_start_s,
                    kind: "last_line",
                    what: format!("line {line}: {}", render::cell(text)),
                },
            ));
        }
    }
    for i in incidents {
        let at = i.incident.first_time.or(i.incident.last_time);
        let relative = i
            .after_last_line_s
            .map(|s| format!(" ({s:+} s after the last log line)"))
            .unwrap_or_default();
        entries.push((
            at,
            2,
            TimelineEntry {
                time: at.map(|t| t.to_string()),
                since_start_s: None,
                kind: "incident",
                what: format!(
                    "kernel incident {} {}{}{}",
                    i.incident.incident_id,
                    i.incident.kind,
                    i.incident
                        .device
                        .as_deref()
                        .map(|d| format!(" on {d}"))
                        .unwrap_or_default(),
                    relative
                ),
            },
        ));
    }
    // In time order where times are known; the log's own order otherwise (a stable sort keeps it).
    if entries.iter().all(|(t, _, _)| t.is_some()) {
        entries.sort_by_key(|(t, order, _)| (*t, *order));
    }
    entries.into_iter().map(|(_, _, e)| e).collect()
}

#[allow(clippy::too_many_arguments)]
fn verdict(
    phase: Option<Phase>,
    confidence: Confidence,
    outcome: Option<Outcome>,
    stalled_for_s: Option<u64>,
    incidents: &[WindowIncident],
    activity: Option<Activity>,
    probe: &Option<Probe>,
    has_log: bool,
) -> String {
    let phase_text = phase.map_or("an unknown phase", Phase::as_str);
    let hedge = match confidence {
        Confidence::High => "",
        Confidence::Medium => " (from the node's state)",
        Confidence::Low => " (the log cannot tell which loading phase)",
    };
    let mut text = match outcome {
        Some(Outcome::Stalled) => format!(
            "stalled in {phase_text}{hedge} for {}",
            render::human_duration(stalled_for_s.unwrap_or(0))
        ),
        Some(Outcome::Crashed) => format!("crashed in {phase_text}"),
        Some(Outcome::Ready) => "ready".to_owned(),
        Some(Outcome::Serving) => format!("serving (last: {phase_text})"),
        Some(Outcome::Incomplete) => {
            format!("in {phase_text}{hedge}, not quiet long enough to call it stalled")
        }
        None if !has_log && probe.is_none() => "no log: the process state alone".to_owned(),
        None => "no outcome".to_owned(),
    };
    if let Some(a) = activity {
        text.push_str(&format!(
            "; the process is {}",
            a.as_str().replace('_', " ")
        ));
    }
    let near: Vec<&WindowIncident> = incidents
        .iter()
        .filter(|i| i.after_last_line_s.is_none_or(|s| s > -300))
        .collect();
    match near.as_slice() {
        [] => {}
        [one] => text.push_str(&format!(
            "; the kernel logged incident {} {}",
            one.incident.incident_id, one.incident.kind
        )),
        many => text.push_str(&format!(
            "; the kernel logged {} incidents ({})",
            many.len(),
            many.iter()
                .map(|i| i.incident.kind.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    text
}

fn diagnosis_text(d: &Diagnosis) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(&mut out, format!("{} on {}", d.subject, d.stamp.node));
    line(&mut out, format!("  verdict: {}", d.verdict));
    line(
        &mut out,
        format!(
            "  phase: {} (confidence {})",
            d.phase.map_or("unknown", Phase::as_str),
            match d.phase_confidence {
                Confidence::High => "high",
                Confidence::Medium => "medium",
                Confidence::Low => "low",
            }
        ),
    );
    for e in d.phase_evidence.iter().take(MAX_EVIDENCE) {
        line(&mut out, format!("    - {e}"));
    }
    if let (Some(log), Some(source)) = (&d.log, &d.log_source) {
        let mut facts = vec![format!(
            "{} lines ({} llama.cpp)",
            log.lines_read, log.lines_recognised
        )];
        if let Some(b) = log.backend {
            facts.push(format!("backend {}", b.as_str()));
        }
        if let Some(g) = log.devices.iter().find_map(|d| d.gfx_target.as_deref()) {
            facts.push(g.to_owned());
        }
        if let Some(m) = &log.model {
            facts.push(format!("model {m}"));
        }
        if let Some(mode) = &log.load_mode {
            facts.push(format!("load_mode {mode}"));
        }
        if let Some(v) = log.verbosity {
            facts.push(format!("verbosity {v}"));
        }
        line(
            &mut out,
            format!("  log: {}: {}", source.name, facts.join(", ")),
        );
        if source.bytes_skipped > 0 {
            line(
                &mut out,
                format!(
                    "    (the first {} were not sent: the start of the run may be missing)",
                    render::human_bytes(source.bytes_skipped)
                ),
            );
        }
        for e in log.errors.iter().take(MAX_EVIDENCE) {
            line(
                &mut out,
                format!(
                    "    error {} at line {}: {}",
                    e.kind.as_str(),
                    e.line,
                    render::cell(&e.text)
                ),
            );
        }
    }
    if let Some(p) = &d.probe {
        line(
            &mut out,
            format!(
                "  server {}: /health {:?}: {}",
                p.url,
                p.health,
                render::cell(&p.health_detail)
            ),
        );
    }
    if !d.timeline.is_empty() {
        line(&mut out, "  timeline:".to_owned());
        for e in &d.timeline {
            let when = match (&e.time, e.since_start_s) {
                (Some(t), _) => t.clone(),
                (None, Some(s)) => format!("+{s:.3} s"),
                (None, None) => "-".to_owned(),
            };
            line(&mut out, format!("    {when:<30} {:<9} {}", e.kind, e.what));
        }
    }
    if !d.node_state.is_empty() {
        line(&mut out, "  node:".to_owned());
        for s in &d.node_state {
            line(&mut out, format!("    {s}"));
        }
    }
    if let Some(p) = &d.process
        && !p.env.is_empty()
    {
        let env: Vec<String> = p.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line(
            &mut out,
            format!("    environment (allowlisted): {}", env.join(" ")),
        );
    }
    if !d.findings.is_empty() {
        line(
            &mut out,
            format!("  node findings: {}", d.findings.join(", ")),
        );
    }
    if d.known_issues.is_empty() {
        let scope = if d.unknowns.is_empty() {
            "none matches"
        } else {
            "none matches what could be read (below)"
        };
        line(&mut out, format!("  known issues: {scope}"));
    } else {
        line(&mut out, "  known issues:".to_owned());
        for m in &d.known_issues {
            line(
                &mut out,
                format!(
                    "    {}: {} ({})",
                    m.issue.id,
                    m.issue.title,
                    m.because.join(", ")
                ),
            );
            for link in &m.issue.links {
                line(&mut out, format!("      {link}"));
            }
        }
    }
    if !d.strategies.is_empty() {
        line(&mut out, "  try next:".to_owned());
        for (i, s) in d.strategies.iter().enumerate() {
            line(
                &mut out,
                format!("    {}. {}: {}", i + 1, s.strategy.id, s.strategy.action),
            );
            line(&mut out, format!("       why: {}", s.strategy.why));
            if let Some(tried) = &s.tried_before {
                line(&mut out, format!("       tried before: {tried}"));
            }
        }
    }
    for l in &d.already_in_effect {
        line(
            &mut out,
            format!("  already in effect: {} ({})", l.id, l.in_effect),
        );
    }
    for u in &d.unknowns {
        line(&mut out, format!("  could not read: {u}"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pods_by_namespace_name_and_container() {
        let p = parse_pod("llm/llama-0").unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.pod.as_str(), p.container.as_str()),
            ("llm", "llama-0", "")
        );
        let p = parse_pod("llm/llama-0/server").unwrap();
        assert_eq!(p.container, "server");
        assert!(parse_pod("llama-0").is_err());
        assert!(parse_pod("a/b/c/d").is_err());
    }
}
