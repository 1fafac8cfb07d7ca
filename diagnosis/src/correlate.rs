//! The correlation: from what was gathered about one llama.cpp run (its log, the live server's answers, its process) and its node (snapshot, kernel incidents, experiment history) to a [`Diagnosis`], as a pure function.
//!
//! The phase comes from the log when it says, else from the node, with how sure it is; the
//! kernel incidents of the run's window are placed against its last line; the catalog names the
//! known issues and ranks the strategies, those tried before on the node last.

use std::collections::BTreeMap;
use std::time::Duration;

use nodectl_model::diagnosis::{DiagnosisStamp, RunKey};
use nodectl_model::inference::{Activity, InferenceProcess, InferenceProcesses, MemoryTrend};
use nodectl_model::snapshot::Severity;
use nodectl_model::text::{cell, human_bytes, human_duration};
use nodectl_model::{Incident, Snapshot};
use serde::Serialize;

use crate::catalog::{Catalog, Facts, LeftOut, MatchedIssue, Proposed};
use crate::experiments::{self, Experiment};
use crate::llama_log::{LlamaLog, Phase, RunOutcome};
use crate::probe::{Health, Probe};

/// How long before a run's first line a kernel incident still belongs to its window.
const WINDOW_LEAD: Duration = Duration::from_secs(60);

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
    #[serde(skip_serializing_if = "nodectl_model::is_zero")]
    pub bytes_skipped: u64,
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
    pub outcome: Option<RunOutcome>,
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

/// A run's log, parsed, with where it came from.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub log: LlamaLog,
    pub source: LogSource,
    /// The file's (or the pod log's) last change: the log's age when its lines carry no clock.
    pub modified_at: Option<jiff::Timestamp>,
}

/// What was gathered about one run.
#[derive(Debug, Clone, Default)]
pub struct RunInputs {
    /// What the diagnosis is of: the process, the log or the URL.
    pub subject: String,
    pub log: Option<RunLog>,
    pub probe: Option<Probe>,
    /// The inference process the run is, when the node has it.
    pub process: Option<InferenceProcess>,
    /// What could not be read about this run.
    pub unknowns: Vec<String>,
}

/// What the node said, read once for every run diagnosed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInputs {
    /// The node as the diagnosis names it.
    pub label: String,
    pub snapshot: Option<Snapshot>,
    pub processes: Option<InferenceProcesses>,
    /// The node's kernel incidents (the latest update of each); `None` when they could not be read.
    pub incidents: Option<Vec<Incident>>,
    /// Strategies tried before, from the experiment log.
    pub experiments: Vec<Experiment>,
    /// What could not be read about the node.
    pub unknowns: Vec<String>,
}

/// One card's GPU memory over the process sample.
#[derive(Debug, Clone)]
struct CardMemory {
    card: String,
    trend: MemoryTrend,
    growth_bytes: i128,
}

/// The run's phase and why.
struct PhasePlaced {
    phase: Option<Phase>,
    confidence: Confidence,
    evidence: Vec<String>,
    /// The log is at the default verbosity and shows none of the loading phases.
    terse: bool,
    /// The run is somewhere before ready (stalled, incomplete, or the server says loading).
    loading: bool,
}

/// The diagnosis of one run on its node, as of `now`: a log quiet for `stall_after` before
/// ready is a stall.
pub fn diagnose(
    run: RunInputs,
    node: &NodeInputs,
    catalog: &Catalog,
    stall_after: Duration,
    now: jiff::Timestamp,
) -> Diagnosis {
    let mut unknowns = node.unknowns.clone();
    unknowns.extend(run.unknowns);
    let sample_ms = node.processes.as_ref().map_or(0, |p| p.sample_ms);
    let process = run.process;
    let activity = process.as_ref().map(|p| p.activity(sample_ms));
    let (log, log_source, modified_at) = match run.log {
        Some(RunLog {
            log,
            source,
            modified_at,
        }) => (Some(log), Some(source), modified_at),
        None => (None, None, None),
    };

    // How long the log has been quiet, and when its last line was written.
    let quiet_for = log.as_ref().and_then(|l| l.quiet_for(now, modified_at));
    let last_line_at = log.as_ref().and_then(|l| l.last_time.wall.or(modified_at));
    let outcome = run_outcome(
        log.as_ref(),
        quiet_for,
        stall_after,
        run.probe.as_ref(),
        activity,
    );
    let cards = card_memory(node.processes.as_ref());
    let placed = place_phase(
        log.as_ref(),
        outcome,
        run.probe.as_ref(),
        activity,
        &cards,
        sample_ms,
    );
    let incidents = window_incidents(
        log.as_ref(),
        process.as_ref(),
        node.incidents.as_deref(),
        last_line_at,
    );
    let findings = node.snapshot.as_ref().map(findings_of).unwrap_or_default();

    let facts = Facts {
        phase: placed.phase,
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
        log_signs: log
            .iter()
            .filter(|l| l.error_after_checkpoint_restore.is_some())
            .map(|_| "crash_after_checkpoint_restore".to_owned())
            .collect(),
        activity,
        load_mode: load_mode_of(log.as_ref(), process.as_ref()),
        flash_attention: log.as_ref().and_then(|l| l.flash_attention.clone()),
        params: node
            .snapshot
            .as_ref()
            .map(module_parameters_of)
            .unwrap_or_default(),
        env: process.as_ref().map(|p| p.env.clone()).unwrap_or_default(),
        args: process.as_ref().map(|p| p.args.clone()).unwrap_or_default(),
    };
    let known_issues = if matches!(outcome, Some(RunOutcome::Stalled | RunOutcome::Crashed))
        || !facts.incident_kinds.is_empty()
        || !facts.findings.is_empty()
    {
        catalog.match_issues(&facts)
    } else {
        Vec::new()
    };
    let (mut strategies, already_in_effect) = catalog.propose(&known_issues, &facts);
    if placed.terse && placed.confidence != Confidence::High && placed.loading {
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

    let stalled_for_s = (outcome == Some(RunOutcome::Stalled))
        .then_some(quiet_for.as_ref().map(Duration::as_secs))
        .flatten();
    let node_state = node_state_words(process.as_ref(), activity, sample_ms, &cards);
    let timeline = joined_timeline(
        log.as_ref(),
        &incidents,
        last_line_at,
        process.as_ref().map(|p| p.pid),
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
    let mut diagnosis = Diagnosis {
        stamp: DiagnosisStamp {
            made_at: now.to_string(),
            node: node.label.clone(),
            run: run_key,
        },
        subject: run.subject,
        phase: placed.phase,
        phase_confidence: placed.confidence,
        phase_evidence: placed.evidence,
        outcome,
        stalled_for_s,
        quiet_for_s: quiet_for.as_ref().map(Duration::as_secs),
        verdict: String::new(),
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
    };
    diagnosis.verdict = verdict(&diagnosis, node.incidents.is_some());
    diagnosis
}

/// The run's outcome from its log; a live server's answer settles what an old log cannot. A
/// server whose `/health` answers while `/slots` does not, with its process asleep or held in
/// the kernel (not computing), is stuck while serving.
fn run_outcome(
    log: Option<&LlamaLog>,
    quiet_for: Option<Duration>,
    stall_after: Duration,
    probe: Option<&Probe>,
    activity: Option<Activity>,
) -> Option<RunOutcome> {
    let from_log = log.map(|l| l.outcome(quiet_for, stall_after));
    if serving_hang(probe, activity) && from_log != Some(RunOutcome::Crashed) {
        return Some(RunOutcome::Stalled);
    }
    match (probe.map(|p| p.health), from_log) {
        (Some(Health::Ready), None | Some(RunOutcome::Incomplete | RunOutcome::Stalled)) => {
            Some(RunOutcome::Ready)
        }
        (Some(Health::Loading), None) => Some(RunOutcome::Incomplete),
        (_, from_log) => from_log,
    }
}

/// `/health` says ready, `/slots` (which waits for the task loop) gave no answer, and the
/// process does not compute: the task loop is stuck, not busy with a long prompt.
fn serving_hang(probe: Option<&Probe>, activity: Option<Activity>) -> bool {
    probe.is_some_and(|p| p.health == Health::Ready && p.slots_no_answer)
        && matches!(
            activity,
            Some(Activity::Idle | Activity::BlockedInKfd | Activity::BlockedInKernel)
        )
}

/// The memory trend of each card over the process sample.
fn card_memory(processes: Option<&InferenceProcesses>) -> Vec<CardMemory> {
    processes
        .iter()
        .flat_map(|p| &p.cards)
        .filter_map(|c| {
            Some(CardMemory {
                card: c.card.clone(),
                trend: c.trend()?,
                growth_bytes: c.growth_bytes()?,
            })
        })
        .collect()
}

/// The phase: the log's when it says, else the node's (rising GPU memory is the upload; a
/// thread in a KFD ioctl or a busy-wait is a GPU operation that does not finish).
fn place_phase(
    log: Option<&LlamaLog>,
    outcome: Option<RunOutcome>,
    probe: Option<&Probe>,
    activity: Option<Activity>,
    cards: &[CardMemory],
    sample_ms: u32,
) -> PhasePlaced {
    let log_phase = log.and_then(LlamaLog::last_phase);
    let terse = log.is_some_and(|l| l.verbosity.is_none_or(|v| v <= 3) && !shows_loading_phases(l));
    let loading = matches!(outcome, Some(RunOutcome::Stalled | RunOutcome::Incomplete))
        || (outcome.is_none() && probe.is_some_and(|p| p.health == Health::Loading));
    let mut placed = PhasePlaced {
        phase: log_phase,
        confidence: if log_phase.is_some() {
            Confidence::High
        } else {
            Confidence::Low
        },
        evidence: Vec::new(),
        terse,
        loading,
    };
    if let Some(l) = log
        && let Some(p) = log_phase
    {
        let line = l.timeline.last().map_or(0, |m| m.line);
        placed
            .evidence
            .push(format!("the log enters {} at line {line}", p.as_str()));
    }
    if serving_hang(probe, activity) {
        placed.evidence.push(
            "/health answered 200 but /slots gave no answer within the probe's deadline, and the process does not compute: the server's task loop does not come back (a serving hang)"
                .to_owned(),
        );
        if placed.phase.is_none_or(|p| p <= Phase::Ready) {
            placed.phase = Some(Phase::PromptProcessing);
            placed.confidence = Confidence::Medium;
        }
        placed.loading = false;
        return placed;
    }
    if !(loading && (terse || log.is_none())) {
        return placed;
    }
    placed.confidence = Confidence::Low;
    if terse {
        placed.evidence.push(
            "the log is at the default verbosity: it prints nothing between `loading model` and `model loaded`"
                .to_owned(),
        );
    }
    let rising: Vec<&CardMemory> = cards
        .iter()
        .filter(|c| c.trend == MemoryTrend::Rising)
        .collect();
    if !rising.is_empty() {
        placed.phase = Some(Phase::Upload);
        placed.confidence = Confidence::Medium;
        for card in rising {
            placed.evidence.push(format!(
                "{}: VRAM+GTT in use grew by {} in {} ms: the weights are still being loaded",
                card.card,
                human_bytes(u64::try_from(card.growth_bytes).unwrap_or(0)),
                sample_ms
            ));
        }
    } else if let Some(a @ (Activity::BlockedInKfd | Activity::Spinning)) = activity {
        placed.confidence = Confidence::Medium;
        placed.evidence.push(match a {
            Activity::BlockedInKfd => {
                "GPU memory flat and a thread waits in an ioctl on /dev/kfd: a GPU operation that does not finish (upload, graph reserve or warmup)".to_owned()
            }
            _ => "GPU memory flat and a core busy-waiting (ROCr's hsa_signal_wait): a GPU operation that does not finish (upload, graph reserve or warmup)".to_owned(),
        });
    }
    placed
}

/// The kernel incidents of the run's window (from [`WINDOW_LEAD`] before its first dated line,
/// or its process's start), each placed against the run's last line.
fn window_incidents(
    log: Option<&LlamaLog>,
    process: Option<&InferenceProcess>,
    incidents: Option<&[Incident]>,
    last_line_at: Option<jiff::Timestamp>,
) -> Vec<WindowIncident> {
    let window_start = log
        .and_then(|l| l.timeline.iter().find_map(|m| m.time.wall))
        .or_else(|| {
            process
                .and_then(|p| p.started_at.as_deref())
                .and_then(|t| t.parse().ok())
        })
        .map(|t: jiff::Timestamp| {
            t - jiff::SignedDuration::try_from(WINDOW_LEAD).unwrap_or_default()
        });
    let mut placed = Vec::new();
    for incident in incidents.unwrap_or_default() {
        let start = incident.first_time.or(incident.last_time);
        let in_window = match (window_start, start) {
            (Some(from), Some(at)) => at >= from,
            // Without a start of the run (or a wall time of the incident), every incident of
            // this boot is shown: better one too many than a missed one.
            _ => true,
        };
        if in_window {
            let after_last_line_s = last_line_at
                .zip(start)
                .map(|(last, at)| at.duration_since(last).as_secs_f64().round() as i64);
            placed.push(WindowIncident {
                incident: incident.clone(),
                after_last_line_s,
            });
        }
    }
    placed
}

/// The node checks that fired (warning or worse) by id, and those that could not run.
fn findings_of(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .findings
        .iter()
        .filter_map(|f| match f.severity {
            Severity::Warning | Severity::Critical => Some(f.id.clone()),
            Severity::Unknown => Some(format!("{} (could not run)", f.id)),
            _ => None,
        })
        .collect()
}

/// `module.name` → value as read (`amdgpu.cwsr_enable` → `1`).
fn module_parameters_of(snapshot: &Snapshot) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for (module, values) in [
        ("amdgpu", &snapshot.module_parameters.amdgpu),
        ("ttm", &snapshot.module_parameters.ttm),
    ] {
        for (name, value) in values {
            params.insert(format!("{module}.{name}"), value.raw());
        }
    }
    params
}

/// How the weights are loaded: the log says, else the arguments (`--no-mmap` is `none`).
fn load_mode_of(log: Option<&LlamaLog>, process: Option<&InferenceProcess>) -> Option<String> {
    log.and_then(|l| l.load_mode.clone())
        .or_else(|| process.and_then(|p| p.arg_value(&["-lm", "--load-mode"]).map(str::to_owned)))
        .or_else(|| {
            process
                .filter(|p| p.has_arg(&["--no-mmap"]))
                .map(|_| "none".to_owned())
        })
}

/// Whether the log shows any of the loading phases that only `-lv 4` prints.
fn shows_loading_phases(log: &LlamaLog) -> bool {
    log.timeline.iter().any(|m| {
        matches!(
            m.phase,
            Phase::MemoryFit
                | Phase::FitGraphReserve
                | Phase::ModelMetadata
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
    cards: &[CardMemory],
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
    for c in cards {
        let change = match c.trend {
            MemoryTrend::Rising => format!(
                "rising (+{})",
                human_bytes(u64::try_from(c.growth_bytes).unwrap_or(0))
            ),
            MemoryTrend::Falling => format!(
                "falling (-{})",
                human_bytes(u64::try_from(-c.growth_bytes).unwrap_or(0))
            ),
            MemoryTrend::Flat => "flat".to_owned(),
        };
        words.push(format!(
            "{}: GPU memory in use {change} over {sample_ms} ms",
            c.card
        ));
    }
    words
}

/// The log's phases, its last line and the kernel incidents in one timeline.
fn joined_timeline(
    log: Option<&LlamaLog>,
    incidents: &[WindowIncident],
    last_line_at: Option<jiff::Timestamp>,
    run_pid: Option<u32>,
) -> Vec<TimelineEntry> {
    /// An entry with its time, and its rank among entries of the same time (phases before
    /// the last line, the log before the kernel).
    struct Placed {
        at: Option<jiff::Timestamp>,
        order: u8,
        entry: TimelineEntry,
    }
    let mut entries: Vec<Placed> = Vec::new();
    if let Some(log) = log {
        for mark in &log.timeline {
            entries.push(Placed {
                at: mark.time.wall,
                order: 0,
                entry: TimelineEntry {
                    time: mark.time.wall.map(|t| t.to_string()),
                    since_start_s: mark.time.since_start_s,
                    kind: "phase",
                    what: format!("{} (line {})", mark.phase.as_str(), mark.line),
                },
            });
        }
        if let Some((line, text)) = &log.last_line {
            entries.push(Placed {
                at: log.last_time.wall.or(last_line_at),
                order: 1,
                entry: TimelineEntry {
                    time: log.last_time.wall.or(last_line_at).map(|t| t.to_string()),
                    since_start_s: log.last_time.since_start_s,
                    kind: "last_line",
                    what: format!("line {line}: {}", cell(text)),
                },
            });
        }
    }
    for i in incidents {
        let at = i.incident.first_time.or(i.incident.last_time);
        let relative = i
            .after_last_line_s
            .map(|s| format!(" ({s:+} s after the last log line)"))
            .unwrap_or_default();
        // The kernel (or its KFD channel) named this run's own process: evidence about the
        // run, not only an event of the same moment.
        let evidence = match (i.incident.pid, run_pid) {
            (Some(pid), Some(run)) if pid == run => {
                let by = if i.incident.sources.contains(&nodectl_model::Source::KfdSmi) {
                    "the KFD channel"
                } else {
                    "the kernel"
                };
                format!("; evidence: {by} named this run's process (pid {pid})")
            }
            _ => String::new(),
        };
        entries.push(Placed {
            at,
            order: 2,
            entry: TimelineEntry {
                time: at.map(|t| t.to_string()),
                since_start_s: None,
                kind: "incident",
                what: format!(
                    "kernel incident {} {}{}{}{}",
                    i.incident.incident_id,
                    i.incident.kind,
                    i.incident
                        .device
                        .as_deref()
                        .map(|d| format!(" on {d}"))
                        .unwrap_or_default(),
                    relative,
                    evidence
                ),
            },
        });
    }
    // In time order where times are known; the log's own order otherwise (a stable sort keeps it).
    if entries.iter().all(|p| p.at.is_some()) {
        entries.sort_by_key(|p| (p.at, p.order));
    }
    entries.into_iter().map(|p| p.entry).collect()
}

/// The answer in one sentence: the outcome and phase, the process's state, the kernel incidents
/// near the run's end, or that the kernel, read, said nothing of a stall (amdgpu's hang check
/// never fired: a silent hang).
fn verdict(d: &Diagnosis, kernel_log_read: bool) -> String {
    let phase_text = match d.phase {
        Some(Phase::FitGraphReserve) => "graph_reserve (during the memory-fit pre-pass)",
        Some(p) => p.as_str(),
        None => "an unknown phase",
    };
    let hedge = match d.phase_confidence {
        Confidence::High => "",
        Confidence::Medium => " (from the node's state)",
        Confidence::Low => " (the log cannot tell which loading phase)",
    };
    let mut text = match d.outcome {
        Some(RunOutcome::Stalled) => match d.stalled_for_s {
            Some(quiet) => format!(
                "stalled in {phase_text}{hedge} for {}",
                human_duration(quiet)
            ),
            None => format!("stalled in {phase_text}{hedge}"),
        },
        Some(RunOutcome::Crashed) => format!("crashed in {phase_text}"),
        Some(RunOutcome::Ready) => "ready".to_owned(),
        Some(RunOutcome::Serving) => format!("serving (last: {phase_text})"),
        Some(RunOutcome::Incomplete) => {
            format!("in {phase_text}{hedge}, not quiet long enough to call it stalled")
        }
        None if d.log.is_none() && d.probe.is_none() => {
            "no log: the process state alone".to_owned()
        }
        None => "no outcome".to_owned(),
    };
    if let Some(a) = d.activity {
        text.push_str(&format!(
            "; the process is {}",
            a.as_str().replace('_', " ")
        ));
    }
    let near: Vec<&WindowIncident> = d
        .incidents
        .iter()
        .filter(|i| i.after_last_line_s.is_none_or(|s| s > -300))
        .collect();
    match near.as_slice() {
        [] if kernel_log_read && d.outcome == Some(RunOutcome::Stalled) => {
            text.push_str("; the kernel logged nothing (a silent hang)");
        }
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

/// The process as a person names it: `llama-server pid 4242 (pod llm/llama-0)`.
pub fn process_label(p: &InferenceProcess) -> String {
    match &p.pod {
        Some(pod) => format!("{} pid {} (pod {pod})", p.program, p.pid),
        None => format!("{} pid {}", p.program, p.pid),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nodectl_model::inference::{CardMemoryTrend, ProcessThread};
    use std::sync::Arc;

    const MIB: u64 = 1024 * 1024;

    /// A saved log of these lines, named `name`.
    fn run_log<'a>(name: &str, lines: impl IntoIterator<Item = &'a str>) -> RunLog {
        RunLog {
            log: crate::llama_log::parse(lines),
            source: LogSource {
                name: name.to_owned(),
                bytes_skipped: 0,
            },
            modified_at: None,
        }
    }

    /// A default-verbosity run that stopped after `loading model`, its lines dated by kubectl
    /// `--timestamps` from 10:00:00.
    fn terse_loading_log() -> RunLog {
        let lines = [
            "2026-12-01T10:00:00.000000000Z 0.00.000.512 I srv  llama_server: initializing ...",
            "2026-12-01T10:00:00.300000000Z 0.00.318.852 I cmn  common_param: common_params_print_info: verbosity = 3 (adjust with the `-lv N` CLI arg)",
            "2026-12-01T10:00:00.310000000Z 0.00.321.532 I srv    load_model: loading model '/models/m.gguf'",
        ];
        run_log("run.log", lines)
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn server(state: &str, cpu_ms: u64, in_kfd: bool) -> InferenceProcess {
        InferenceProcess {
            pid: 4242,
            program: "llama-server".to_owned(),
            comm: "llama-server".to_owned(),
            args: vec!["-m".to_owned(), "/models/m.gguf".to_owned()],
            state: state.to_owned(),
            threads: vec![ProcessThread {
                tid: 4243,
                name: "llama-server".to_owned(),
                state: if in_kfd { "D" } else { "S" }.to_owned(),
                wchan: in_kfd.then(|| "amdgpu_amdkfd_ioctl".to_owned()),
                in_kfd_ioctl: in_kfd,
                cpu_ms_in_sample: None,
            }],
            threads_total: 1,
            cpu_ms_in_sample: Some(cpu_ms),
            kfd_handles: 1,
            ..InferenceProcess::default()
        }
    }

    fn node_with(process: &InferenceProcess, gtt_growth_bytes: u64) -> NodeInputs {
        NodeInputs {
            label: "node-a".to_owned(),
            processes: Some(InferenceProcesses {
                sample_ms: 1000,
                processes: vec![process.clone()],
                cards: vec![CardMemoryTrend {
                    card: "card0".to_owned(),
                    vram_used_bytes_start: Some(512 * MIB),
                    vram_used_bytes_end: Some(512 * MIB),
                    gtt_used_bytes_start: Some(1024 * MIB),
                    gtt_used_bytes_end: Some(1024 * MIB + gtt_growth_bytes),
                }],
                ..InferenceProcesses::default()
            }),
            incidents: Some(Vec::new()),
            ..NodeInputs::default()
        }
    }

    fn incident(id: u64, kind: &str, first_time: &str) -> Incident {
        Incident {
            incident_id: id,
            kind: Arc::from(kind),
            device: Some("0000:c5:00.0".to_owned()),
            first_seq: Some(id),
            last_seq: Some(id + 3),
            first_line: None,
            last_line: None,
            first_monotonic_usec: None,
            last_monotonic_usec: None,
            first_time: Some(at(first_time)),
            last_time: Some(at(first_time)),
            event_counts: [(Arc::from("mes_remove_queue_failed"), 2)]
                .into_iter()
                .collect(),
            process: None,
            pid: None,
            recovered: Some(true),
            closed: true,
            drill: false,
            sources: [nodectl_model::Source::Kmsg].into(),
        }
    }

    fn run_of(log: Option<RunLog>, process: Option<InferenceProcess>) -> RunInputs {
        RunInputs {
            subject: "run".to_owned(),
            log,
            process,
            ..RunInputs::default()
        }
    }

    fn catalog() -> Catalog {
        Catalog::embedded().unwrap()
    }

    const TEN_MINUTES_LATER: &str = "2026-12-01T10:10:00Z";

    /// The diagnosis ten minutes after the run's last line, with the built-in catalog.
    fn diagnosed(run: RunInputs, node: &NodeInputs) -> Diagnosis {
        diagnose(
            run,
            node,
            &catalog(),
            DEFAULT_STALL_AFTER,
            at(TEN_MINUTES_LATER),
        )
    }

    #[test]
    fn a_terse_stall_with_rising_gpu_memory_is_the_upload_from_the_node() {
        let process = server("S", 10, false);
        let node = node_with(&process, 400 * MIB);
        let d = diagnosed(run_of(Some(terse_loading_log()), Some(process)), &node);
        assert_eq!(d.outcome, Some(RunOutcome::Stalled));
        assert_eq!(d.phase, Some(Phase::Upload));
        assert_eq!(d.phase_confidence, Confidence::Medium);
        assert!(
            d.phase_evidence
                .iter()
                .any(|e| e.contains("card0: VRAM+GTT in use grew by 400.0 MiB")),
            "{:?}",
            d.phase_evidence
        );
        assert_eq!(d.stalled_for_s, Some(599));
        assert_eq!(
            d.verdict,
            "stalled in upload (from the node's state) for 9 min 59 s; the process is idle; the kernel logged nothing (a silent hang)"
        );
        // The terse log cannot say more: raising the verbosity is proposed.
        assert!(
            d.strategies
                .iter()
                .any(|s| s.strategy.id == "log_verbosity_4")
        );
    }

    #[test]
    fn a_terse_stall_with_flat_memory_and_a_thread_in_kfd_stays_with_the_log_phase() {
        let process = server("D", 0, true);
        let node = node_with(&process, 0);
        let d = diagnosed(run_of(Some(terse_loading_log()), Some(process)), &node);
        assert_eq!(d.activity, Some(Activity::BlockedInKfd));
        assert_eq!(d.phase, d.log.as_ref().and_then(LlamaLog::last_phase));
        assert_eq!(d.phase_confidence, Confidence::Medium);
        assert!(
            d.phase_evidence
                .iter()
                .any(|e| e.contains("waits in an ioctl on /dev/kfd")),
            "{:?}",
            d.phase_evidence
        );
        assert!(
            d.node_state
                .iter()
                .any(|w| w
                    .contains("waits in an ioctl on /dev/kfd (threads 4243 amdgpu_amdkfd_ioctl)")),
            "{:?}",
            d.node_state
        );
        assert!(
            d.node_state
                .iter()
                .any(|w| w == "card0: GPU memory in use flat over 1000 ms")
        );
    }

    #[test]
    fn incidents_of_the_window_are_placed_against_the_last_line_and_name_the_known_issue() {
        let process = server("S", 0, false);
        let mut node = node_with(&process, 0);
        node.incidents = Some(vec![
            // Two hours before the run: not of its window.
            incident(100, "mes_hang_reset", "2026-12-01T08:00:00Z"),
            // Ninety seconds after its last line.
            incident(200, "mes_hang_reset", "2026-12-01T10:01:30.310Z"),
        ]);
        let d = diagnosed(run_of(Some(terse_loading_log()), Some(process)), &node);
        let ids: Vec<u64> = d.incidents.iter().map(|i| i.incident.incident_id).collect();
        assert_eq!(ids, [200]);
        assert_eq!(d.incidents[0].after_last_line_s, Some(90));
        assert!(
            d.verdict
                .ends_with("; the kernel logged incident 200 mes_hang_reset"),
            "{}",
            d.verdict
        );
        // cwsr_enable was not read: the issue's `param_not` holds, so it matches.
        assert!(
            d.known_issues.iter().any(|m| m.issue.id == "mes_hang_cwsr"),
            "{:?}",
            d.known_issues
        );
        // The timeline is in time order: phases, the last line, then the incident.
        let kinds: Vec<&str> = d.timeline.iter().map(|e| e.kind).collect();
        assert_eq!(kinds.last(), Some(&"incident"));
        assert_eq!(kinds.iter().filter(|k| **k == "last_line").count(), 1);
    }

    #[test]
    fn a_vm_fault_the_kfd_channel_names_of_the_run_process_is_evidence() {
        let process = server("S", 0, false);
        let mut node = node_with(&process, 0);
        let fault = Incident {
            kind: Arc::from("gpu_fault"),
            pid: Some(4242),
            process: Some("llama-server".to_owned()),
            event_counts: [(Arc::from("kfd_smi_vm_fault"), 1)].into_iter().collect(),
            sources: [nodectl_model::Source::KfdSmi].into(),
            ..incident(7, "gpu_fault", "2026-12-01T10:00:05Z")
        };
        let other = Incident {
            pid: Some(99),
            ..fault.clone()
        };
        node.incidents = Some(vec![
            fault,
            Incident {
                incident_id: 8,
                ..other
            },
        ]);
        let d = diagnosed(run_of(Some(terse_loading_log()), Some(process)), &node);
        let lines: Vec<&str> = d
            .timeline
            .iter()
            .filter(|e| e.kind == "incident")
            .map(|e| e.what.as_str())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("kernel incident 7")
                && lines[0]
                    .contains("evidence: the KFD channel named this run's process (pid 4242)"),
            "{lines:?}"
        );
        assert!(!lines[1].contains("evidence"), "{lines:?}");
    }

    #[test]
    fn a_spinning_mmap_load_with_a_silent_kernel_is_the_hip_mmap_upload_hang() {
        let mut process = server("R", 990, false);
        process
            .args
            .extend(["--load-mode".to_owned(), "mmap".to_owned()]);
        let node = node_with(&process, 0);
        let d = diagnosed(run_of(Some(terse_loading_log()), Some(process)), &node);
        assert_eq!(d.activity, Some(Activity::Spinning));
        assert_eq!(d.phase, Some(Phase::Loading));
        assert_eq!(
            d.known_issues.first().map(|m| m.issue.id.as_str()),
            Some("mmap_upload_hang_hip"),
            "{:?}",
            d.known_issues
        );
        assert_eq!(
            d.strategies.first().map(|s| s.strategy.id.as_str()),
            Some("load_mode_none")
        );
        assert!(d.verdict.contains("a silent hang"), "{}", d.verdict);
    }

    #[test]
    fn a_gpu_that_did_not_initialise_names_the_firmware_extension() {
        let process = server("S", 0, false);
        let mut node = node_with(&process, 0);
        node.incidents = Some(vec![incident(7, "gpu_init_failed", "2026-12-01T09:59:30Z")]);
        let d = diagnosed(run_of(Some(terse_loading_log()), Some(process)), &node);
        let issues: Vec<&str> = d.known_issues.iter().map(|m| m.issue.id.as_str()).collect();
        assert!(issues.contains(&"gpu_init_firmware"), "{issues:?}");
        assert_eq!(
            d.strategies.first().map(|s| s.strategy.id.as_str()),
            Some("talos_amdgpu_extension"),
            "{:?}",
            d.strategies
        );
    }

    #[test]
    fn a_ready_server_settles_what_an_old_log_calls_a_stall() {
        let mut run = run_of(Some(terse_loading_log()), None);
        run.probe = Some(Probe {
            health: Health::Ready,
            health_detail: "200 OK".to_owned(),
            ..Probe::new("http://127.0.0.1:8080".to_owned())
        });
        let d = diagnosed(run, &NodeInputs::default());
        assert_eq!(d.outcome, Some(RunOutcome::Ready));
        assert_eq!(d.stalled_for_s, None);
        assert!(d.known_issues.is_empty());
        assert_eq!(d.verdict, "ready");
    }

    #[test]
    fn health_ok_while_slots_never_answers_and_the_process_sleeps_is_a_serving_hang() {
        let probe = |slots_no_answer| Probe {
            health: Health::Ready,
            health_detail: "200 {\"status\":\"ok\"}".to_owned(),
            slots_no_answer,
            ..Probe::new("http://127.0.0.1:8080".to_owned())
        };
        let sleeping = server("S", 0, false);
        let node = node_with(&sleeping, 0);
        let mut run = run_of(None, Some(sleeping.clone()));
        run.probe = Some(probe(true));
        let d = diagnosed(run, &node);
        assert_eq!(d.outcome, Some(RunOutcome::Stalled));
        assert_eq!(d.phase, Some(Phase::PromptProcessing));
        assert_eq!(d.phase_confidence, Confidence::Medium);
        assert!(
            d.phase_evidence[0].contains("a serving hang"),
            "{:?}",
            d.phase_evidence
        );
        assert_eq!(
            d.verdict,
            "stalled in prompt_processing (from the node's state); the process is idle; the kernel logged nothing (a silent hang)"
        );
        assert!(
            d.known_issues
                .iter()
                .any(|m| m.issue.id == "silent_mes_hang"),
            "{:?}",
            d.known_issues
        );
        // Shorter dispatches first, and the MES's own log for the next time.
        let proposed: Vec<&str> = d
            .strategies
            .iter()
            .map(|p| p.strategy.id.as_str())
            .collect();
        assert_eq!(proposed.first(), Some(&"smaller_ubatch"), "{proposed:?}");
        assert!(proposed.contains(&"mes_event_log"), "{proposed:?}");
        // With the MES event log on, it is in effect, not proposed again.
        let mut logging = node.clone();
        let mut snapshot = Snapshot::default();
        snapshot.module_parameters.amdgpu.insert(
            "mes_log_enable".to_owned(),
            nodectl_model::snapshot::ParameterValue::Integer(1),
        );
        logging.snapshot = Some(snapshot);
        let mut run = run_of(None, Some(sleeping.clone()));
        run.probe = Some(probe(true));
        let d = diagnosed(run, &logging);
        assert!(
            d.already_in_effect
                .iter()
                .any(|l| l.id == "mes_event_log" && l.in_effect.contains("mes_log_enable")),
            "{:?}",
            d.already_in_effect
        );
        // Computing (a long prompt keeps the task loop busy): not a hang.
        let computing = server("R", 990, false);
        let mut run = run_of(None, Some(computing.clone()));
        run.probe = Some(probe(true));
        let d = diagnosed(run, &node_with(&computing, 0));
        assert_eq!(d.outcome, Some(RunOutcome::Ready));
        // /slots answered: ready.
        let mut run = run_of(None, Some(sleeping));
        run.probe = Some(probe(false));
        let d = diagnosed(run, &node);
        assert_eq!(d.outcome, Some(RunOutcome::Ready));
    }

    #[test]
    fn a_stall_in_the_fit_pre_pass_graph_reserve_says_so() {
        let lines = [
            "2026-12-01T10:00:00.000000000Z 0.00.003.000 I srv    load_model: loading model '/models/m.gguf'",
            "2026-12-01T10:00:00.100000000Z 0.00.004.000 I cmn  common_init_: fitting params to device memory, ...",
            "2026-12-01T10:00:00.200000000Z 0.00.006.000 I sched_reserve: reserving ...",
            "2026-12-01T10:00:00.300000000Z 0.00.006.100 D graph_reserve: reserving a graph for ubatch with n_tokens =    4, n_seqs =  4, n_outputs =    4",
        ];
        let log = run_log("fit.log", lines);
        let d = diagnosed(run_of(Some(log), None), &NodeInputs::default());
        assert_eq!(d.phase, Some(Phase::FitGraphReserve));
        assert!(
            d.verdict
                .starts_with("stalled in graph_reserve (during the memory-fit pre-pass) for"),
            "{}",
            d.verdict
        );
        assert!(
            d.known_issues
                .iter()
                .any(|m| m.issue.id == "graph_reserve_hang"),
            "{:?}",
            d.known_issues
        );
    }

    #[test]
    fn a_hip_vmm_pool_abort_proposes_a_build_without_it() {
        let lines = [
            "ggml_cuda.cu:648: HipVMM Failure: invalid argument",
            "ggml_abort()                              libggml-base.so",
            "ggml_cuda_pool_vmm::alloc()               libggml-hip.so",
            "llama_context::decode()                   libllama.so",
        ];
        let log = run_log("crash.log", lines);
        let d = diagnosed(run_of(Some(log), None), &NodeInputs::default());
        assert_eq!(d.outcome, Some(RunOutcome::Crashed));
        assert_eq!(d.phase, None, "a backtrace frame is no phase");
        assert!(
            d.known_issues
                .iter()
                .any(|m| m.issue.id == "hip_vmm_pool_failure"),
            "{:?}",
            d.known_issues
        );
        assert_eq!(
            d.strategies.first().map(|s| s.strategy.id.as_str()),
            Some("hip_no_vmm_build")
        );
    }

    #[test]
    fn a_crash_right_after_a_checkpoint_restore_proposes_running_without_checkpoints() {
        let lines = [
            "2026-12-01T10:00:00.000000000Z 9.22.451.312 I slot   operator(): id  0 | task 6364 | restored context checkpoint (pos_min = 23285, pos_max = 23285, n_tokens = 23286, n_past = 23286, size = 241.031 MiB)",
            "2026-12-01T10:00:00.100000000Z ROCm error: an illegal memory access was encountered",
        ];
        let log = || run_log("crash.log", lines);
        let d = diagnosed(run_of(Some(log()), None), &NodeInputs::default());
        assert_eq!(d.outcome, Some(RunOutcome::Crashed));
        let matched = d
            .known_issues
            .iter()
            .find(|m| m.issue.id == "checkpoint_restore_crash")
            .unwrap_or_else(|| panic!("{:?}", d.known_issues));
        assert!(
            matched
                .because
                .contains(&"log shows crash after checkpoint restore".to_owned())
        );
        assert!(
            d.strategies
                .iter()
                .any(|s| s.strategy.id == "ctx_checkpoints_0")
        );
        // Already run without checkpoints: said so, not proposed again.
        let mut process = server("S", 0, false);
        process
            .args
            .extend(["--ctx-checkpoints".to_owned(), "0".to_owned()]);
        let d = diagnosed(
            run_of(Some(log()), Some(process.clone())),
            &node_with(&process, 0),
        );
        assert!(
            !d.strategies
                .iter()
                .any(|s| s.strategy.id == "ctx_checkpoints_0")
        );
        assert!(
            d.already_in_effect
                .iter()
                .any(|l| l.id == "ctx_checkpoints_0")
        );
    }

    #[test]
    fn vulkan_losing_the_device_proposes_a_longer_compute_timeout_and_a_smaller_ubatch() {
        let lines = [
            "2026-12-01T10:00:00.000000000Z radv/amdgpu: The CS has been cancelled because the context is lost. This context is innocent.",
            "2026-12-01T10:00:00.100000000Z 3.45.098.561 E srv  update_slots: decode() failed: vk::Queue::submit: ErrorDeviceLost",
        ];
        let log = run_log("lost.log", lines);
        let d = diagnosed(run_of(Some(log), None), &NodeInputs::default());
        assert_eq!(d.outcome, Some(RunOutcome::Crashed));
        let ids: Vec<&str> = d
            .strategies
            .iter()
            .map(|s| s.strategy.id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["lockup_timeout_compute_60s", "smaller_ubatch"],
            "{:?}",
            d.known_issues
        );
    }

    #[test]
    fn not_quiet_long_enough_is_incomplete_not_stalled() {
        let d = diagnose(
            run_of(Some(terse_loading_log()), None),
            &NodeInputs::default(),
            &catalog(),
            DEFAULT_STALL_AFTER,
            at("2026-12-01T10:00:30Z"),
        );
        assert_eq!(d.outcome, Some(RunOutcome::Incomplete));
        assert_eq!(d.quiet_for_s, Some(29));
        assert!(d.verdict.contains("not quiet long enough"), "{}", d.verdict);
    }

    #[test]
    fn without_a_log_the_process_state_alone_is_said_so() {
        let process = server("S", 2, false);
        let node = node_with(&process, 0);
        let d = diagnosed(run_of(None, Some(process)), &node);
        assert_eq!(d.outcome, None);
        assert_eq!(d.phase, None);
        assert_eq!(d.phase_confidence, Confidence::Low);
        assert_eq!(
            d.verdict,
            "no log: the process state alone; the process is idle"
        );
        assert_eq!(d.stamp.run.model.as_deref(), Some("/models/m.gguf"));
        assert_eq!(d.stamp.run.pid, Some(4242));
    }

    #[test]
    fn a_strategy_that_failed_on_this_node_before_ranks_last_and_says_when() {
        let process = server("S", 10, false);
        let mut node = node_with(&process, 400 * MIB);
        let run = || run_of(Some(terse_loading_log()), Some(process.clone()));
        let first = diagnosed(run(), &node);
        assert!(first.strategies.len() >= 2, "{:?}", first.strategies);
        let top = first.strategies[0].strategy.id.clone();
        node.experiments = vec![Experiment {
            recorded_at: at("2026-11-30T12:00:00Z"),
            strategy: top.clone(),
            node: Some("node-a".to_owned()),
            image: None,
            env: Vec::new(),
            kernel_args: Vec::new(),
            args: Vec::new(),
            result: Some("still stalled".to_owned()),
            run: Some(crate::experiments::RunSummary {
                phase: Some(Phase::Upload),
                phase_confidence: None,
                outcome: Some(RunOutcome::Stalled),
                passed_upload: false,
                stalled_for_s: Some(600),
                backend: None,
                verdict: String::new(),
            }),
            bench: Vec::new(),
        }];
        let second = diagnosed(run(), &node);
        let last = second.strategies.last().unwrap();
        assert_eq!(last.strategy.id, top);
        let tried = last.tried_before.as_deref().unwrap();
        assert!(
            tried.contains("on node-a (2026-11-30") && tried.ends_with("still stalled"),
            "{tried}"
        );
        assert_ne!(second.strategies[0].strategy.id, top);
    }
}
