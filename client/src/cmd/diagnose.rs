//! `nodectl diagnose`: gathers what a diagnosis needs (a run's log, a pod's log, a live server's answers, the node's snapshot, processes and kernel incidents, the experiment log) and renders what `nodectl_diagnosis` makes of it.
//!
//! The correlation itself (phase, outcome, incidents of the window, known issues, strategies)
//! is [`nodectl_diagnosis::diagnose`], a pure function; this file only reads and prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use nodectl_diagnosis::catalog::Catalog;
use nodectl_diagnosis::correlate::process_label;
use nodectl_diagnosis::experiments::{self, Experiment};
use nodectl_diagnosis::llama_log::{self, JournalYear, LlamaLog, Phase, RunOutcome};
use nodectl_diagnosis::{
    Confidence, Diagnosis, LogSource, NodeInputs, RunInputs, RunLog, diagnose,
};
use nodectl_model::inference::{InferenceProcess, PodLog};
use nodectl_model::{Incident, StreamMessage};
use serde::Serialize;
use tokio_stream::StreamExt as _;

use crate::context::Context;
use crate::embedded::EmbeddedOptions;
use crate::exit::ExitStatus;
use crate::llama_probe;
use crate::nodes::{KernelEventsRequest, NodeClient, PodLogRequest, Target};
use crate::render;

/// How long CPU time and GPU memory are watched: long enough to tell a busy-wait from sleep and
/// a load from a stall, short enough for a command someone waits on.
const PROCESS_SAMPLE: Duration = Duration::from_secs(1);
/// Bytes of a log read from a file or standard input; a verbose run of days is far less.
const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// A log's read size (one for every saved log; see there).
const LOG_READ_BUFFER_BYTES: usize = nodectl_model::line_reader::READ_BUFFER_BYTES;
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
    /// lemonade output, plain or with journald, kubectl --timestamps or CRI prefixes, or
    /// `docker compose logs` (of several services: the first one that is llama.cpp's).
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

/// `-o json` of the whole node when no log, pod or URL was named.
#[derive(Debug, Serialize)]
pub struct NodeDiagnoses {
    pub node: String,
    pub diagnoses: Vec<Diagnosis>,
    /// Inference processes the agent found beyond those it lists: not diagnosed.
    #[serde(skip_serializing_if = "nodectl_model::is_zero")]
    pub processes_not_listed: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknowns: Vec<String>,
}

pub async fn run(args: DiagnoseArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
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
        ExitStatus::Critical
    } else {
        ExitStatus::Ok
    })
}

/// `diagnose` over several agents: every inference process of each node, the nodes asked at
/// once, each within its deadline (plus the process window); a node that fails is listed.
async fn run_fleet(
    args: DiagnoseArgs,
    targets: Vec<Target>,
    ctx: &Context,
) -> anyhow::Result<ExitStatus> {
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
            ExitStatus::Critical
        } else {
            ExitStatus::Ok
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
            .any(|d| matches!(d.outcome, Some(RunOutcome::Stalled | RunOutcome::Crashed)))
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
    let catalog = Catalog::embedded().context("the built-in catalog")?;
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
    let options = EmbeddedOptions { kernel_log: true };
    let mut client = target.connect(&options).await?;
    let mut node = read_node(&mut client, target).await;
    if let Some(label) = shown_as {
        node.inputs.label = label.to_owned();
    }
    let experiments = read_experiments(args.experiments.as_deref(), &mut node.inputs.unknowns);
    node.inputs.experiments = experiments;

    let mut runs = Vec::new();
    let named = file_log.is_some() || pod.is_some() || url.is_some();
    if !named && let Some(e) = node.processes_error.take() {
        // Not "no process found": the node could not say.
        return Err(e.context(format!(
            "listing the inference processes of {}",
            node.inputs.label
        )));
    }
    if named {
        let mut run = RunInputs::default();
        let mut subject = Vec::new();
        if let Some(log) = file_log {
            subject.push(log.source.name.clone());
            run.log = Some(log);
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
            run.process = node.inputs.processes.as_ref().and_then(|p| {
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
            && let Some(processes) = &node.inputs.processes
        {
            let model = run.log.as_ref().and_then(|l| l.log.model.as_deref());
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
            && let Some(processes) = &node.inputs.processes
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
    } else if let Some(processes) = &node.inputs.processes {
        for process in &processes.processes {
            let mut run = RunInputs {
                subject: process_label(process),
                process: Some(process.clone()),
                ..RunInputs::default()
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
        .inputs
        .snapshot
        .as_ref()
        .and_then(|s| s.taken_at.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let diagnoses: Vec<Diagnosis> = runs
        .into_iter()
        .map(|run| diagnose(run, &node.inputs, &catalog, args.stall_after, now))
        .collect();
    if named {
        let Some(one) = diagnoses.into_iter().next() else {
            anyhow::bail!("internal: a named run gave no diagnosis");
        };
        return Ok(Diagnoses::One(Box::new(one)));
    }
    Ok(Diagnoses::Node(NodeDiagnoses {
        node: node.inputs.label.clone(),
        diagnoses,
        processes_not_listed: node
            .inputs
            .processes
            .as_ref()
            .map_or(0, |p| p.processes_not_listed),
        unknowns: node.inputs.unknowns.clone(),
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

/// A log file (or standard input) parsed line by line, with the file's mtime.
fn read_log_file(path: &str, year: Option<i16>) -> anyhow::Result<RunLog> {
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
    Ok(RunLog {
        log,
        source: LogSource {
            name,
            bytes_skipped: 0,
        },
        modified_at: mtime,
    })
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

fn parse_pod_log(log: &PodLog) -> RunLog {
    RunLog {
        log: llama_log::parse(String::from_utf8_lossy(&log.tail).lines()),
        source: LogSource {
            name: format!(
                "pod {}/{}/{} ({})",
                log.namespace, log.pod, log.container, log.path
            ),
            bytes_skipped: log.bytes_skipped,
        },
        modified_at: log.modified_at.as_deref().and_then(|t| t.parse().ok()),
    }
}

/// What the node said, and why its processes could not be listed: with nothing named to
/// diagnose, that is the answer.
struct NodeRead {
    inputs: NodeInputs,
    processes_error: Option<anyhow::Error>,
}

/// Reads what the node can tell; what fails is an unknown of the diagnosis, not its end.
async fn read_node(client: &mut NodeClient, target: &Target) -> NodeRead {
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
    NodeRead {
        inputs: NodeInputs {
            label: target.label(),
            snapshot,
            processes,
            incidents,
            experiments: Vec::new(),
            unknowns,
        },
        processes_error,
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
            since_cursor: BTreeMap::new(),
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
        if let Some(service) = &log.compose_service
            && !log.other_services.is_empty()
        {
            line(
                &mut out,
                format!(
                    "    (read as compose service {service}'s run: {} lines of {} left out; `docker compose logs SERVICE` reads another)",
                    log.other_service_lines,
                    log.other_services.join(", ")
                ),
            );
        }
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
