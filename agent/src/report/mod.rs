//! Takes a bug-report bundle of a host root: each section with its outcome and duration, every host file read kept and redacted, streamed as a gzip-compressed tar while it is taken.
//!
//! The bundle is a host root: `host/` holds every file the collectors, the kernel-log reader and
//! the pod-log reader read (through a [`Recording`]), so `nodectl --host-root host …` answers
//! as the node did. Beside it, `node/` holds what the agent made of them: the snapshot with its
//! findings, kernel events and incidents, the inference processes (watched over a window, which
//! a replay cannot do), every read with its outcome (`reads.tsv`), each section's outcome
//! (`sections.json`) and what was redacted (`redactions.json`).
//!
//! It never fails as a whole: a section that errs or runs past its deadline is recorded so, and
//! the next one runs. Volatile state is taken first (the snapshot, then the kernel log, then the
//! processes and their logs), and each section is flushed as it ends, so a bundle cut short (the
//! agent killed, the connection lost) still unpacks up to there.

mod tarball;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::HostRoot;
use crate::host_root::{Recorded, Recording};
use crate::kmsg::classify::Classifier;
use crate::kmsg::metrics::KmsgMetrics;
use crate::kmsg::pipeline::{KernelLog, KernelLogConfig};
use crate::limits::{KERNEL_LOG_FIRST_PASS, REPORT_STEP_DEADLINE};
use crate::pod_log::PodLogQuery;
use crate::redact::bundle::BundleRedactor;
use crate::snapshot::{SampleOptions, Snapshotter};
use tarball::Tarball;
pub use tarball::{ChunkSink, TarballError};

/// What a bundle holds beyond the node's own state.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Read only plain sysfs and procfs files: debugfs is refused at the host root.
    pub safe_mode: bool,
    /// Redact (the default); off only for a bundle taken in-process.
    pub redact: bool,
    pub redact_ips: bool,
    /// Pods whose logs to keep, besides those of every inference process found.
    pub pods: Vec<PodLogQuery>,
}

/// How long the processes are watched for CPU time and GPU memory, as `diagnose` does.
const PROCESS_WINDOW: Duration = Duration::from_millis(1000);

/// Host files written so far.
#[derive(Debug, Default)]
struct HostFilesWritten {
    files: usize,
    records_left_out: u64,
    /// What each file was written with: one read again by a later section (the boot id) is
    /// written again only when it changed.
    digests: std::collections::HashMap<PathBuf, [u8; 32]>,
}

/// How one section went.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub name: String,
    /// `ok`, `skipped`, `error`, `timed_out`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    /// The bundle's files it wrote.
    pub files: Vec<String>,
}

/// What the agent's part of a bundle records about itself (`node/sections.json`).
#[derive(Debug, Serialize)]
struct SectionsDocument<'a> {
    agent_version: &'static str,
    taken_at: String,
    safe_mode: bool,
    redacted: bool,
    sections: &'a [Section],
}

/// The node's part of a bundle, taken and written into `sink` as it goes.
pub struct ReportTaker {
    root: HostRoot,
    classifier: Arc<Classifier>,
    stop: CancellationToken,
    /// Keep every kernel record; else only the GPU stack's, as the agent serves them.
    full_kernel_log: bool,
    /// The running agent's event pipeline: the KFD channel's records it holds (they are read
    /// live and kept nowhere else).
    events: Option<crate::kmsg::pipeline::KernelLog>,
}

impl ReportTaker {
    pub fn new(root: HostRoot, classifier: Arc<Classifier>, stop: CancellationToken) -> Self {
        Self {
            root,
            classifier,
            stop,
            full_kernel_log: false,
            events: None,
        }
    }

    /// Takes the KFD channel's records from the running agent's pipeline into the bundle.
    pub fn with_events(mut self, events: Option<crate::kmsg::pipeline::KernelLog>) -> Self {
        self.events = events;
        self
    }

    /// Keeps the whole kernel log in the bundle (an agent run with `--full-kernel-log`, or the
    /// in-process one); by default records other than the GPU stack's are left out, as the
    /// agent's event stream leaves them out.
    pub fn with_full_kernel_log(mut self, full: bool) -> Self {
        self.full_kernel_log = full;
        self
    }

    /// A saved kmsg stream with every record that is neither classified nor the GPU stack's
    /// replaced by a stand-in that keeps its sequence number and time (a gap would read as
    /// records lost); how many were replaced.
    fn gpu_records_only(&self, kmsg: &[u8]) -> (Vec<u8>, u64) {
        let text = String::from_utf8_lossy(kmsg);
        let mut out = String::with_capacity(text.len() / 4);
        let mut left_out = 0;
        let mut skipping = false;
        for line in text.split_inclusive('\n') {
            if line.starts_with(' ') {
                // A dictionary line (` SUBSYSTEM=…`) belongs to the record before it.
                if !skipping {
                    out.push_str(line);
                }
                continue;
            }
            let message = line.split_once(';').map_or("", |(_, m)| m.trim_end());
            let keep = crate::kmsg::classify::is_gpu_stack_message(message)
                || self.classifier.classify(message).is_some();
            skipping = !keep;
            if keep {
                out.push_str(line);
            } else if let Some((head, _)) = line.split_once(';') {
                left_out += 1;
                out.push_str(head);
                out.push_str(";<left out: not the GPU stack's; the agent keeps the whole kernel log with --full-kernel-log>\n");
            }
        }
        (out.into_bytes(), left_out)
    }

    /// Takes the bundle; blocking (call from `spawn_blocking`), with `runtime` for the parts
    /// that wait on async work. An error is the sink's (the client went away, or the bundle
    /// grew past its bound): the sections before it were sent.
    pub fn take(
        &self,
        options: &ReportOptions,
        runtime: &tokio::runtime::Handle,
        sink: ChunkSink,
    ) -> Result<(), TarballError> {
        let recording = Arc::new(Recording::default());
        let mut root = self.root.recorded(Arc::clone(&recording));
        if options.safe_mode {
            root = root.safe_mode();
        }
        let mut redactor = BundleRedactor::new(options.redact, options.redact_ips);
        let mut tar = Tarball::new(sink);
        let mut sections = Vec::new();
        let mut host_files = HostFilesWritten::default();

        // 1. The snapshot, with the checks' findings: what the GPU says now.
        let snapshotter = Arc::new(Snapshotter::new(root.clone()));
        let started = Instant::now();
        let taken = {
            let snapshotter = Arc::clone(&snapshotter);
            runtime.block_on(async {
                tokio::time::timeout(
                    REPORT_STEP_DEADLINE,
                    tokio::task::spawn_blocking(move || {
                        snapshotter.take(&SampleOptions::default())
                    }),
                )
                .await
            })
        };
        let section = match taken {
            Ok(Ok(snapshot)) => json_section(
                "snapshot",
                "node/snapshot.json",
                &snapshot,
                &mut redactor,
                &mut tar,
                started,
            )?,
            Ok(Err(e)) => failed(
                "snapshot",
                format!("the snapshot task failed: {e}"),
                started,
            ),
            Err(_) => timed_out("snapshot", started),
        };
        sections.push(section);
        self.write_host_files(&recording, &mut redactor, &mut tar, &mut host_files)?;
        tar.flush()?;

        // 1b. The MES's own event log, read twice: whether it still advances.
        sections.push(mes_event_log_section(
            &root,
            runtime,
            &mut redactor,
            &mut tar,
        )?);
        self.write_host_files(&recording, &mut redactor, &mut tar, &mut host_files)?;
        tar.flush()?;

        // 2. The kernel log of this boot: every record kept, events and incidents classified.
        sections.push(self.kernel_section(&root, runtime, &mut redactor, &mut tar)?);
        self.write_host_files(&recording, &mut redactor, &mut tar, &mut host_files)?;
        tar.flush()?;

        // 2b. The KFD channel's records, as it gave them: they are kept nowhere else.
        sections.push(kfd_smi_section(
            self.events.as_ref(),
            &mut redactor,
            &mut tar,
        )?);
        tar.flush()?;

        // 3. Inference processes, watched over a window, and the logs of their pods.
        let started = Instant::now();
        let listed = runtime.block_on(async {
            tokio::time::timeout(
                REPORT_STEP_DEADLINE,
                snapshotter.inference_processes(PROCESS_WINDOW),
            )
            .await
        });
        let mut pods = options.pods.clone();
        let section = match listed {
            Ok(Ok(processes)) => {
                for process in &processes.processes {
                    if let Some(uid) = &process.pod_uid
                        && !pods.iter().any(|p| &p.pod_uid == uid)
                    {
                        pods.push(PodLogQuery {
                            pod_uid: uid.clone(),
                            ..PodLogQuery::default()
                        });
                    }
                }
                json_section(
                    "processes",
                    "node/processes.json",
                    &processes,
                    &mut redactor,
                    &mut tar,
                    started,
                )?
            }
            Ok(Err(e)) => failed("processes", e.to_string(), started),
            Err(_) => timed_out("processes", started),
        };
        sections.push(section);
        self.write_host_files(&recording, &mut redactor, &mut tar, &mut host_files)?;
        tar.flush()?;

        sections.push(pod_logs_section(&root, &pods, runtime));

        // 4. What is left of the files read, and the log of every read.
        let started = Instant::now();
        self.write_host_files(&recording, &mut redactor, &mut tar, &mut host_files)?;
        let contents = recording.take();
        let files = vec!["host/".to_owned(), "node/reads.tsv".to_owned()];
        let mut reads = String::from("path\tkind\toutcome\tdetail\n");
        for read in &contents.reads {
            let line = format!(
                "{}\t{}\t{}\t{}\n",
                read.path,
                read.kind,
                read.outcome.as_str(),
                read.detail.as_deref().unwrap_or("")
            );
            reads.push_str(&redactor.text(&line));
        }
        if contents.reads_not_logged > 0 {
            reads.push_str(&format!(
                "…\t\t\t{} more reads not logged\n",
                contents.reads_not_logged
            ));
        }
        tar.file(Path::new("node/reads.tsv"), reads.as_bytes(), None)?;
        let mut reason = format!("{} files", host_files.files);
        if host_files.records_left_out > 0 {
            reason.push_str(&format!(
                "; {} kernel records other than the GPU stack's left out of dev/kmsg (the agent runs without --full-kernel-log)",
                host_files.records_left_out
            ));
        }
        sections.push(Section {
            name: "host-files".to_owned(),
            status: "ok",
            reason: Some(reason),
            duration_ms: elapsed_ms(started),
            files,
        });

        // 5. What this part holds and what was redacted.
        let redactions = serde_json::json!({
            "enabled": redactor.enabled(),
            "ip_addresses": options.redact_ips,
            "by_kind": redactor.counts(),
        });
        tar.file(
            Path::new("node/redactions.json"),
            &pretty(&redactions),
            None,
        )?;
        let document = SectionsDocument {
            agent_version: crate::AGENT_VERSION,
            taken_at: self.root.now().to_string(),
            safe_mode: options.safe_mode,
            redacted: options.redact,
            sections: &sections,
        };
        tar.file(Path::new("node/sections.json"), &pretty(&document), None)?;
        tar.finish()
    }

    /// Writes the files recorded since the last call under `host/`: each section's files
    /// follow it, so a bundle cut short still holds the host files of its sections.
    fn write_host_files(
        &self,
        recording: &Recording,
        redactor: &mut BundleRedactor,
        tar: &mut Tarball,
        written: &mut HostFilesWritten,
    ) -> Result<(), TarballError> {
        let contents = recording.take_entries();
        for (path, entry) in contents.entries {
            let at = Path::new("host").join(redactor.path(&path));
            let modified = contents.modified.get(&path).copied();
            match entry {
                Recorded::File(mut bytes) => {
                    let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
                    if written.digests.insert(path.clone(), digest) == Some(digest) {
                        continue;
                    }
                    if path == Path::new("dev/kmsg") && !self.full_kernel_log {
                        let (kept, left_out) = self.gpu_records_only(&bytes);
                        bytes = kept;
                        written.records_left_out += left_out;
                    }
                    let bytes = redactor.host_file(&path, bytes);
                    tar.file(&at, &bytes, modified)?;
                    written.files = written.digests.len();
                }
                Recorded::Link(target) => tar.link(&at, &redactor.path(&target))?,
                Recorded::Dir => tar.dir(&at)?,
            }
        }
        Ok(())
    }

    fn kernel_section(
        &self,
        root: &HostRoot,
        runtime: &tokio::runtime::Handle,
        redactor: &mut BundleRedactor,
        tar: &mut Tarball,
    ) -> Result<Section, TarballError> {
        let started = Instant::now();
        let cancel = self.stop.child_token();
        let log = KernelLog::start(
            root,
            KernelLogConfig::new(Arc::clone(&self.classifier)),
            KmsgMetrics::default(),
            cancel.clone(),
        );
        let deadline = KERNEL_LOG_FIRST_PASS.min(REPORT_STEP_DEADLINE);
        let caught_up = runtime.block_on(log.caught_up(deadline));
        let filter = crate::kmsg::pipeline::StreamFilter::default();
        let section = match log.subscribe(&filter) {
            Err(unavailable) => Section {
                name: "kernel-log".to_owned(),
                status: "skipped",
                reason: Some(unavailable.to_string()),
                duration_ms: elapsed_ms(started),
                files: Vec::new(),
            },
            Ok(subscription) => {
                use nodectl_model::kernel_log::StreamMessage;
                use nodectl_proto::nodectl::v1 as pb;
                let header = match StreamMessage::try_from(pb::KernelStreamMessage {
                    message: Some(pb::kernel_stream_message::Message::Header(
                        subscription.header.clone(),
                    )),
                }) {
                    Ok(StreamMessage::Header(header)) => header,
                    Ok(_) | Err(_) => {
                        cancel.cancel();
                        log.join();
                        return Ok(failed(
                            "kernel-log",
                            "the kernel log's header could not be read".to_owned(),
                            started,
                        ));
                    }
                };
                let (mut events, mut incidents, mut lost) = (Vec::new(), Vec::new(), Vec::new());
                for item in &subscription.feed.backlog {
                    match StreamMessage::try_from(item.message.clone()) {
                        Ok(StreamMessage::Event(event)) => events.push(event),
                        Ok(StreamMessage::Incident(incident)) => incidents.push(incident),
                        Ok(StreamMessage::RecordsLost(records)) => lost.push(records),
                        Ok(StreamMessage::Header(_) | StreamMessage::Lagged { .. }) | Err(_) => {}
                    }
                }
                let document = serde_json::json!({
                    "header": header,
                    "events": events,
                    "incidents": incidents,
                    "records_lost": lost,
                });
                let mut section = json_section(
                    "kernel-log",
                    "node/kernel.json",
                    &document,
                    redactor,
                    tar,
                    started,
                )?;
                if !caught_up {
                    section.status = "timed_out";
                    section.reason = Some(format!(
                        "the kernel log was not read to its end within {} s; what was read is kept",
                        deadline.as_secs()
                    ));
                }
                section
            }
        };
        cancel.cancel();
        log.join();
        Ok(section)
    }
}

/// How far apart the MES event log is read twice. A ring that stops advancing while a run is
/// stalled is the MES's own trace of a hang the driver never noticed (ROCm/legacy-rocm-build#6630);
/// an idle GPU's does not advance either, so it is evidence beside a stall, not alone.
const MES_EVENT_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One card's MES event log, as `node/mes-event-log.json` describes it.
#[derive(Debug, Serialize)]
struct MesEventLog {
    /// debugfs `dri/N/amdgpu_mes_event_log`, as on the host.
    path: String,
    bytes: usize,
    /// The second read differs from the first.
    advanced: bool,
}

/// debugfs `dri/*/amdgpu_mes_event_log` of every card, read twice [`MES_EVENT_LOG_INTERVAL`]
/// apart; the file itself lands in `host/` (the second read). Present only when the kernel runs
/// with `amdgpu.mes_log_enable=1` and debugfs is mounted, so its absence is a skip with the reason.
fn mes_event_log_section(
    root: &HostRoot,
    runtime: &tokio::runtime::Handle,
    redactor: &mut BundleRedactor,
    tar: &mut Tarball,
) -> Result<Section, TarballError> {
    const NAME: &str = "mes-event-log";
    let started = Instant::now();
    let reader = root.clone();
    let read = runtime.block_on(async {
        tokio::time::timeout(
            REPORT_STEP_DEADLINE,
            tokio::task::spawn_blocking(move || read_mes_event_logs(&reader)),
        )
        .await
    });
    match read {
        Ok(Ok(Ok(logs))) if logs.is_empty() => Ok(Section {
            name: NAME.to_owned(),
            status: "skipped",
            reason: Some(
                "no dri/*/amdgpu_mes_event_log in debugfs: the kernel writes it only with amdgpu.mes_log_enable=1 (and debugfs mounted)"
                    .to_owned(),
            ),
            duration_ms: elapsed_ms(started),
            files: Vec::new(),
        }),
        Ok(Ok(Ok(logs))) => json_section(NAME, "node/mes-event-log.json", &logs, redactor, tar, started),
        Ok(Ok(Err(reason))) => Ok(Section {
            name: NAME.to_owned(),
            status: "skipped",
            reason: Some(reason),
            duration_ms: elapsed_ms(started),
            files: Vec::new(),
        }),
        Ok(Err(e)) => Ok(failed(NAME, format!("the read task failed: {e}"), started)),
        Err(_) => Ok(timed_out(NAME, started)),
    }
}

/// The KFD SMI records the running agent holds, one per line as the channel gave them
/// (`nodectl events --file` reads them back, beside the bundle's kernel log).
fn kfd_smi_section(
    events: Option<&crate::kmsg::pipeline::KernelLog>,
    redactor: &mut BundleRedactor,
    tar: &mut Tarball,
) -> Result<Section, TarballError> {
    const NAME: &str = "kfd-smi";
    const FILE: &str = "node/kfd-smi.records";
    let started = Instant::now();
    let skipped = |reason: String| Section {
        name: NAME.to_owned(),
        status: "skipped",
        reason: Some(reason),
        duration_ms: elapsed_ms(started),
        files: Vec::new(),
    };
    // In-process, or an agent over a tree: nothing reads a channel here.
    let not_read = || skipped(crate::kmsg::pipeline::SMI_NOT_READ_HERE.to_owned());
    let Some(events) = events else {
        return Ok(not_read());
    };
    if *events.smi_status().borrow() == crate::kmsg::pipeline::SmiStatus::NotStarted {
        return Ok(not_read());
    }
    let (records, count) = match kfd_smi_records(events) {
        Ok(held) => held,
        Err(unavailable) => return Ok(skipped(unavailable.to_string())),
    };
    let records = redactor.text(&records).into_owned();
    let status = events.smi_unavailable();
    if count == 0 {
        return Ok(skipped(status.map_or_else(
            || "the KFD channel gave no record since the agent started".to_owned(),
            |reason| format!("KFD event channel unavailable: {reason}"),
        )));
    }
    tar.file(Path::new(FILE), records.as_bytes(), None)?;
    Ok(Section {
        name: NAME.to_owned(),
        status: "ok",
        reason: Some(match status {
            Some(reason) => format!("{count} records; the channel is not read now: {reason}"),
            None => format!("{count} records"),
        }),
        duration_ms: elapsed_ms(started),
        files: vec![FILE.to_owned()],
    })
}

/// The KFD SMI records a pipeline holds, one per line, and how many.
fn kfd_smi_records(
    events: &crate::kmsg::pipeline::KernelLog,
) -> Result<(String, u64), crate::kmsg::pipeline::Unavailable> {
    let filter = crate::kmsg::pipeline::StreamFilter {
        sources: vec![nodectl_model::Source::KfdSmi],
        include_unclassified: true,
        ..Default::default()
    };
    let subscription = events.subscribe(&filter)?;
    let mut records = String::new();
    let mut count = 0_u64;
    for item in &subscription.feed.backlog {
        if let Some(nodectl_proto::nodectl::v1::kernel_stream_message::Message::Event(e)) =
            &item.message.message
        {
            records.push_str(&e.message);
            records.push('\n');
            count += 1;
        }
    }
    Ok((records, count))
}

fn read_mes_event_logs(root: &HostRoot) -> Result<Vec<MesEventLog>, String> {
    let dri = root.debugfs().join("dri");
    let cards = match root.read_dir(&dri) {
        Ok(cards) => cards,
        // No debugfs, or no DRM device: nothing to read, as without mes_log_enable.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", root.host_display(&dri))),
    };
    let mut paths: Vec<PathBuf> = cards
        .into_iter()
        .filter(|(name, _)| name.parse::<u32>().is_ok())
        .map(|(_, path)| path.join("amdgpu_mes_event_log"))
        .filter(|path| root.metadata(path).is_ok())
        .collect();
    paths.sort();
    let first: Vec<Result<Vec<u8>, String>> = paths
        .iter()
        .map(|p| root.read_file(p).map_err(|e| e.to_string()))
        .collect();
    if !paths.is_empty() {
        std::thread::sleep(MES_EVENT_LOG_INTERVAL);
    }
    let mut logs = Vec::new();
    for (path, first) in paths.iter().zip(first) {
        let second = root.read_file(path);
        let (first, second) = match (first, second) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) => return Err(format!("{}: {e}", root.host_display(path))),
            (_, Err(e)) => return Err(format!("{}: {e}", root.host_display(path))),
        };
        logs.push(MesEventLog {
            path: root.host_display(path),
            bytes: second.len(),
            advanced: first != second,
        });
    }
    Ok(logs)
}

/// Keeps the log of each pod (through the pod-log reads' own bounds); the tails land in `host/`.
fn pod_logs_section(
    root: &HostRoot,
    pods: &[PodLogQuery],
    runtime: &tokio::runtime::Handle,
) -> Section {
    let started = Instant::now();
    if pods.is_empty() {
        return Section {
            name: "pod-logs".to_owned(),
            status: "skipped",
            reason: Some("no pod named and no inference process in a pod".to_owned()),
            duration_ms: 0,
            files: Vec::new(),
        };
    }
    let mut kept = Vec::new();
    let mut errors = Vec::new();
    for query in pods {
        let shown = if query.pod_uid.is_empty() {
            format!("{}/{}", query.namespace, query.pod)
        } else {
            format!("pod uid {}", query.pod_uid)
        };
        let read = runtime.block_on(async {
            tokio::time::timeout(
                REPORT_STEP_DEADLINE,
                crate::pod_log::reads::shared().tail(root.clone(), query.clone()),
            )
            .await
        });
        match read {
            Ok(Ok((log, _held))) => kept.push(format!("host{}", log.path)),
            Ok(Err(e)) => errors.push(format!("{shown}: {e}")),
            Err(_) => errors.push(format!("{shown}: timed out")),
        }
    }
    Section {
        name: "pod-logs".to_owned(),
        status: if errors.is_empty() { "ok" } else { "error" },
        reason: (!errors.is_empty()).then(|| errors.join("; ")),
        duration_ms: elapsed_ms(started),
        files: kept,
    }
}

fn json_section<T: Serialize>(
    name: &str,
    file: &str,
    value: &T,
    redactor: &mut BundleRedactor,
    tar: &mut Tarball,
    started: Instant,
) -> Result<Section, TarballError> {
    let mut json = match serde_json::to_value(value) {
        Ok(json) => json,
        Err(e) => {
            return Ok(failed(
                name,
                format!("cannot be written as JSON: {e}"),
                started,
            ));
        }
    };
    redactor.json(&mut json);
    tar.file(Path::new(file), &pretty(&json), None)?;
    Ok(Section {
        name: name.to_owned(),
        status: "ok",
        reason: None,
        duration_ms: elapsed_ms(started),
        files: vec![file.to_owned()],
    })
}

fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\": \"cannot be written as JSON: {e}\"}}").into_bytes()
    });
    out.push(b'\n');
    out
}

fn failed(name: &str, reason: String, started: Instant) -> Section {
    Section {
        name: name.to_owned(),
        status: "error",
        reason: Some(reason),
        duration_ms: elapsed_ms(started),
        files: Vec::new(),
    }
}

fn timed_out(name: &str, started: Instant) -> Section {
    Section {
        name: name.to_owned(),
        status: "timed_out",
        reason: Some(format!(
            "no answer within {} s; the next sections were taken",
            REPORT_STEP_DEADLINE.as_secs()
        )),
        duration_ms: elapsed_ms(started),
        files: Vec::new(),
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::kmsg::metrics::KmsgMetrics;
    use crate::kmsg::pipeline::{KernelLog, KernelLogConfig, SmiInput};
    use crate::kmsg::reader::ScriptedSource;

    #[test]
    fn a_bundle_carries_the_kfd_records_as_the_channel_gave_them() {
        let cancel = CancellationToken::new();
        let log = KernelLog::start_with_source(
            ScriptedSource::new([Some(b"6,1,1,-;usb 1\n".to_vec())]),
            "b".into(),
            None,
            KernelLogConfig::new(Arc::new(Classifier::embedded().unwrap())),
            KmsgMetrics::default(),
            cancel.clone(),
        );
        let sink = log.smi_sink().unwrap();
        // Classified or not, every record is kept, in its order.
        let lines = ["3 1 MES hang", "4 1 ", "9 90000000000 -4321 d2bb 1"];
        for line in lines {
            sink.send(SmiInput {
                record: nodectl_model::kfd_smi::parse_record(line.as_bytes()),
                monotonic_usec: nodectl_model::clock::monotonic_usec_now(),
                device: None,
                placement: std::collections::BTreeMap::new(),
            });
        }
        let mut held = (String::new(), 0);
        for _ in 0..300 {
            held = kfd_smi_records(&log).unwrap();
            if held.1 == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(held.0, lines.map(|l| format!("{l}\n")).concat());
        cancel.cancel();
        log.join();
    }
}
