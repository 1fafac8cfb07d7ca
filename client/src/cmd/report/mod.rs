//! `nodectl report`: a bug-report bundle that the same tool replays offline: the node's part from its agent, the diagnosis, the experiment log, report.md, report.json and a MANIFEST.
//!
//! The node's part (`host/`, `node/`) is recorded and redacted where the node is read: by the
//! agent on the node, or by the in-process agent here. This side adds what only it has (a
//! `--log` file, the `--url` probe, the experiment log, the command), diagnoses the run on the
//! unpacked `host/` (so the recorded diagnosis is the one a maintainer's replay gives), and
//! writes the tarball. It never fails for want of a part: each is recorded as ok, skipped or
//! error with its reason and duration, and a node's part cut short is kept up to the cut.

mod bundle;
mod markdown;
mod talos;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use tokio_stream::StreamExt as _;

use crate::cli::NodeSource;
use crate::cmd::diagnose::{self, DiagnoseArgs};
use crate::context::Context;
use crate::embedded::{BundleRedactor, EmbeddedOptions};
use crate::exit::ExitStatus;
use crate::nodes::{ReportRequest, Target};
use crate::render;
use bundle::Bundle;

/// Flags of `nodectl report`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ReportArgs {
    /// The node: its agent (--endpoint), or this host or --host-root DIR in-process.
    #[command(flatten)]
    pub source: NodeSource,
    /// A llama.cpp log to diagnose and include (redacted).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// A pod whose log the node keeps and the diagnosis reads: NAMESPACE/POD[/CONTAINER].
    #[arg(long, value_name = "NS/POD[/CONTAINER]")]
    pub pod: Option<String>,
    /// A running llama-server to probe for the diagnosis.
    #[arg(long, value_name = "http://HOST:PORT")]
    pub url: Option<String>,
    /// Where to write the bundle (default: nodectl-report-NODE-TIME.tar.gz here; `.age` added
    /// with --encrypt-to).
    #[arg(long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Read only plain sysfs and procfs files: no debugfs (for a GPU whose SMU hangs).
    #[arg(long)]
    pub safe_mode: bool,
    /// Keep secrets and identifiers in (in-process only; an agent always redacts).
    #[arg(long)]
    pub no_redact: bool,
    /// Also replace IP addresses.
    #[arg(long)]
    pub redact_ips: bool,
    /// Encrypt the bundle to this age recipient (`age1…`); repeat for several.
    #[arg(long, value_name = "AGE_RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// The experiment log to include (default: the one `nodectl experiment` writes, if any).
    #[arg(long, value_name = "PATH")]
    pub experiments: Option<PathBuf>,
    /// The Talos node whose version, boot path, schematic and machine configuration (its
    /// secrets replaced) go in too, when a talosconfig reaches it.
    #[command(flatten)]
    pub talos: crate::cli::TalosTarget,
}

/// Longest a node's part may take in all: each of its steps has its own deadline well within.
const NODE_PART_DEADLINE: Duration = Duration::from_secs(180);

/// Bytes of the node's part accepted: the agent stops at 16 MiB compressed; this bounds a
/// hostile one.
const MAX_NODE_PART_BYTES: usize = 32 * 1024 * 1024;

/// How one part of the bundle went (the node's sections and this side's).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SectionOutcome {
    pub name: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    #[serde(default)]
    pub files: Vec<String>,
}

impl SectionOutcome {
    fn new(
        name: &str,
        status: &str,
        reason: Option<String>,
        started: Instant,
        files: Vec<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            status: status.to_owned(),
            reason,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            files,
        }
    }
}

/// Nodes whose bundles are made at once: each holds up to a few tens of MiB while it is made.
const REPORTS_AT_ONCE: usize = 4;

pub async fn run(args: ReportArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let targets = ctx.nodes().await?.targets();
    let [target] = targets.as_slice() else {
        return run_fleet(args, targets, ctx).await;
    };
    let written = report_one(&args, target, Some(ctx), args.out.clone()).await?;
    render::emit(&written)?;
    Ok(ExitStatus::Ok)
}

/// One bundle per node, in `--out DIR` (default: here), the nodes asked a few at a time; a node
/// that fails is listed. The Talos facts are left out: a talosconfig names one node.
async fn run_fleet(
    args: ReportArgs,
    targets: Vec<Target>,
    ctx: &Context,
) -> anyhow::Result<ExitStatus> {
    if args.log.is_some() || args.pod.is_some() || args.url.is_some() {
        anyhow::bail!("--log, --pod and --url name one run on one node; give one --endpoint");
    }
    if let Some(dir) = &args.out
        && !dir.is_dir()
    {
        anyhow::bail!(
            "--out {}: with several nodes, --out names an existing directory for their bundles",
            dir.display()
        );
    }
    let dir = args.out.clone().unwrap_or_default();
    let args = std::sync::Arc::new(args);
    // A node's part has its own deadline; this adds the time to diagnose and pack it.
    let deadline = NODE_PART_DEADLINE.saturating_add(ctx.node_timeout());
    let answers =
        crate::fleet::ask_each_limited(targets, deadline, REPORTS_AT_ONCE, move |target| {
            let args = std::sync::Arc::clone(&args);
            let dir = dir.clone();
            async move {
                let out = default_out(
                    &target.label(),
                    &jiff::Timestamp::now().to_string(),
                    !args.encrypt_to.is_empty(),
                );
                report_one(&args, &target, None, Some(dir.join(out))).await
            }
        })
        .await;
    let mut out = String::new();
    for answer in &answers {
        if let Ok(written) = &answer.result {
            out.push_str(written);
        }
    }
    out.push_str(&crate::fleet::failures_text(&answers));
    render::emit(&out)?;
    Ok(crate::fleet::outcome_of(&answers, |_| ExitStatus::Ok))
}

/// Makes and writes one node's bundle (at `out`, or a name of its own here); the text says
/// where it went and which sections did not go well. `talos`: the context whose talosconfig
/// reaches this node, if any.
async fn report_one(
    args: &ReportArgs,
    target: &Target,
    talos: Option<&Context>,
    out: Option<PathBuf>,
) -> anyhow::Result<String> {
    let started = Instant::now();
    if args.no_redact && matches!(target, Target::Agent(_)) {
        anyhow::bail!(
            "--no-redact: an agent always redacts what leaves its node; run nodectl report --no-redact on the node itself"
        );
    }
    let recipients = bundle::age_recipients(&args.encrypt_to)?;
    let pod = args.pod.as_deref().map(diagnose::parse_pod).transpose()?;
    let mut redactor = BundleRedactor::new(!args.no_redact, args.redact_ips);
    let mut sections = Vec::new();
    let mut bundle = Bundle::default();

    // The command, with what looks like a secret in it removed.
    let mut command: Vec<String> = std::env::args().collect();
    if !args.no_redact {
        crate::embedded::redact_args(&mut command);
    }

    // 1. The node's part, recorded and redacted where the node is read.
    let node_started = Instant::now();
    let request = ReportRequest {
        safe_mode: args.safe_mode,
        no_redact: args.no_redact,
        redact_ips: args.redact_ips,
        pods: pod.iter().cloned().collect(),
    };
    let (received, node_error) = node_part(target, request).await;
    let (entries, cut) = bundle::unpack(&received);
    let node_status = match (&node_error, &cut) {
        (None, None) => None,
        (Some(e), _) => Some(format!("{e:#}")),
        (None, Some(cut)) => Some(cut.clone()),
    };
    for entry in entries {
        bundle.push(entry);
    }
    let node_sections: Vec<SectionOutcome> = bundle
        .text("node/sections.json")
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|doc| serde_json::from_value(doc.get("sections")?.clone()).ok())
        .unwrap_or_default();
    sections.push(SectionOutcome::new(
        "node",
        if node_status.is_some() { "error" } else { "ok" },
        node_status.map(|reason| {
            format!(
                "{reason}; the bundle holds what arrived before ({} files)",
                bundle.len()
            )
        }),
        node_started,
        vec!["host/".to_owned(), "node/".to_owned()],
    ));
    sections.extend(node_sections.iter().map(|s| SectionOutcome {
        name: format!("node: {}", s.name),
        ..s.clone()
    }));

    // 2. The --log file, redacted here before anything reads it.
    let work = tempfile::tempdir().context("a temporary directory for the bundle")?;
    let mut log_in_bundle = None;
    if let Some(path) = &args.log {
        let log_started = Instant::now();
        match read_log(path) {
            Ok(text) => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(bundle::safe_name)
                    .unwrap_or_else(|| "llama.log".to_owned());
                let at = format!("logs/{name}");
                let redacted = redactor.text(&text).into_owned();
                let local = work.path().join(&name);
                std::fs::write(&local, &redacted)
                    .with_context(|| format!("writing {}", local.display()))?;
                bundle.add_file(&at, redacted.into_bytes());
                log_in_bundle = Some((local, at.clone()));
                sections.push(SectionOutcome::new(
                    "log",
                    "ok",
                    None,
                    log_started,
                    vec![at],
                ));
            }
            Err(e) => sections.push(SectionOutcome::new(
                "log",
                "error",
                Some(format!("{e:#}")),
                log_started,
                Vec::new(),
            )),
        }
    }

    // The node as the bundle names it: its host name, else how it was reached.
    let snapshot: Option<nodectl_model::Snapshot> = bundle
        .text("node/snapshot.json")
        .and_then(|text| serde_json::from_str(&text).ok());
    let node_label = snapshot
        .as_ref()
        .and_then(|s| s.host.hostname.clone())
        .unwrap_or_else(|| target.label());

    // 3. The diagnosis, of the unpacked node as a maintainer will replay it.
    let diagnosis_started = Instant::now();
    let replay = work.path().join("replay");
    let diagnosis = match bundle.materialize_host(&replay) {
        Err(e) => {
            sections.push(SectionOutcome::new(
                "diagnosis",
                "skipped",
                Some(format!("no node state to diagnose against: {e:#}")),
                diagnosis_started,
                Vec::new(),
            ));
            None
        }
        Ok(host) => {
            let diagnose_args = DiagnoseArgs {
                source: NodeSource::default(),
                log: log_in_bundle
                    .as_ref()
                    .map(|(local, _)| local.display().to_string()),
                pod: args.pod.clone(),
                url: args.url.clone(),
                stall_after: nodectl_diagnosis::DEFAULT_STALL_AFTER,
                experiments: args.experiments.clone(),
                year: None,
            };
            match tokio::time::timeout(
                NODE_PART_DEADLINE,
                diagnose::diagnoses(&diagnose_args, &Target::Embedded(host), Some(&node_label)),
            )
            .await
            {
                Ok(Ok(found)) => {
                    let mut json = serde_json::to_value(&found)?;
                    // Derived from redacted inputs; credentials the --url probe returned go too.
                    redactor.json_credentials(&mut json);
                    bundle.add_file("diagnosis.json", pretty(&json));
                    bundle.add_file(
                        "diagnosis.txt",
                        redactor.text(&found.text()).into_owned().into_bytes(),
                    );
                    sections.push(SectionOutcome::new(
                        "diagnosis",
                        "ok",
                        None,
                        diagnosis_started,
                        vec!["diagnosis.json".to_owned(), "diagnosis.txt".to_owned()],
                    ));
                    Some((found, json))
                }
                Ok(Err(e)) => {
                    sections.push(SectionOutcome::new(
                        "diagnosis",
                        "error",
                        Some(format!("{e:#}")),
                        diagnosis_started,
                        Vec::new(),
                    ));
                    None
                }
                Err(_) => {
                    sections.push(SectionOutcome::new(
                        "diagnosis",
                        "timed_out",
                        Some(format!(
                            "no diagnosis within {} s",
                            NODE_PART_DEADLINE.as_secs()
                        )),
                        diagnosis_started,
                        Vec::new(),
                    ));
                    None
                }
            }
        }
    };

    // 4. The experiment log.
    let experiments_started = Instant::now();
    let experiments_md = match experiments_table(args.experiments.as_deref()) {
        Ok(Some(table)) => {
            let table = redactor.text(&table).into_owned();
            bundle.add_file("experiments.md", table.clone().into_bytes());
            sections.push(SectionOutcome::new(
                "experiments",
                "ok",
                None,
                experiments_started,
                vec!["experiments.md".to_owned()],
            ));
            Some(table)
        }
        Ok(None) => {
            sections.push(SectionOutcome::new(
                "experiments",
                "skipped",
                Some("no experiment log (nodectl experiment record writes one)".to_owned()),
                experiments_started,
                Vec::new(),
            ));
            None
        }
        Err(e) => {
            sections.push(SectionOutcome::new(
                "experiments",
                "error",
                Some(format!("{e:#}")),
                experiments_started,
                Vec::new(),
            ));
            None
        }
    };

    // 5. The Talos node, when a talosconfig reaches it.
    if let Some(ctx) = talos {
        let (talos_section, talos_files) = talos::section(ctx, &mut redactor).await;
        sections.push(talos_section);
        for (name, bytes) in talos_files {
            bundle.add_file(&name, bytes);
        }
    }

    // 6. report.json, report.md, MANIFEST.
    let mut redactions = bundle
        .text("node/redactions.json")
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|doc| {
            serde_json::from_value::<std::collections::BTreeMap<String, u64>>(
                doc.get("by_kind")?.clone(),
            )
            .ok()
        })
        .unwrap_or_default();
    for (kind, n) in redactor.counts() {
        *redactions.entry(kind.clone()).or_default() += n;
    }
    let label = node_label;
    let taken_at = snapshot
        .as_ref()
        .map(|s| s.taken_at.clone())
        .unwrap_or_else(|| jiff::Timestamp::now().to_string());
    let kernel_json = bundle.text("node/kernel.json");
    let report = markdown::Report {
        node: &label,
        taken_at: &taken_at,
        command: &command,
        snapshot: snapshot.as_ref(),
        diagnoses: diagnosis.as_ref().map(|(found, _)| found),
        sections: &sections,
        redactions: &redactions,
        redacted: !args.no_redact,
        experiments: experiments_md.as_deref(),
        kernel: kernel_json.as_deref(),
    };
    let json = serde_json::json!({
        "format": "nodectl-report/1",
        "nodectl_version": env!("CARGO_PKG_VERSION"),
        "command": command,
        "node": label,
        "taken_at": taken_at,
        "safe_mode": args.safe_mode,
        "redacted": !args.no_redact,
        "redactions": redactions,
        "sections": sections,
        "summary": report.summary(),
        "diagnosis": diagnosis.as_ref().map(|(_, json)| json),
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    let mut json = json;
    redactor.json_credentials(&mut json);
    let out = out.unwrap_or_else(|| default_out(&label, &taken_at, !recipients.is_empty()));
    bundle.add_file("report.json", pretty(&json));
    let out_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    bundle.add_file("report.md", report.render(&out_name).into_bytes());
    bundle.add_manifest();

    let bytes = bundle.tar_gz()?;
    let bytes = if recipients.is_empty() {
        bytes
    } else {
        bundle::age_encrypt(recipients, &bytes)?
    };
    write_new(&out, &bytes)?;
    let mut written = format!(
        "{}: bundle written to {} ({} files, {} KiB){}\n",
        label,
        out.display(),
        bundle.len(),
        bytes.len().div_ceil(1024),
        if args.encrypt_to.is_empty() {
            String::new()
        } else {
            format!(", encrypted to {} age recipient(s)", args.encrypt_to.len())
        }
    );
    for section in &sections {
        if section.status != "ok" {
            written.push_str(&format!(
                "  {}: {}{}\n",
                section.name,
                section.status,
                section
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(written)
}

/// Asks the node for its part; what arrived and, when it stopped short, why.
async fn node_part(target: &Target, request: ReportRequest) -> (Vec<u8>, Option<anyhow::Error>) {
    let mut received = Vec::new();
    let result = tokio::time::timeout(NODE_PART_DEADLINE, async {
        let mut client = target.connect(&EmbeddedOptions::default()).await?;
        let mut stream = client.report(request).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            anyhow::ensure!(
                received.len() + chunk.len() <= MAX_NODE_PART_BYTES,
                "the node's part grew past {} MiB; kept up to there",
                MAX_NODE_PART_BYTES >> 20
            );
            received.extend_from_slice(&chunk);
        }
        Ok(())
    })
    .await;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(anyhow::anyhow!(
            "the node's part did not end within {} s",
            NODE_PART_DEADLINE.as_secs()
        )),
    };
    (received, error)
}

/// Bytes of a `--log` file read: llama.cpp logs of a long run are large, a bundle is not the
/// place for gigabytes; the end is what a diagnosis needs.
const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// The end of a log file, from a line start, as text.
fn read_log(path: &Path) -> anyhow::Result<String> {
    use std::io::{Read as _, Seek as _};
    let mut file =
        std::fs::File::open(path).with_context(|| format!("--log {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let skip = len.saturating_sub(MAX_LOG_BYTES);
    file.seek(std::io::SeekFrom::Start(skip))?;
    let mut bytes = Vec::new();
    file.take(MAX_LOG_BYTES).read_to_end(&mut bytes)?;
    if skip > 0
        && let Some(at) = bytes.iter().position(|b| *b == b'\n')
    {
        bytes.drain(..=at);
    }
    anyhow::ensure!(!bytes.is_empty(), "--log {}: empty", path.display());
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The experiment log as Markdown; `None` when there is none.
fn experiments_table(named: Option<&Path>) -> anyhow::Result<Option<String>> {
    let path = match named {
        Some(path) => path.to_path_buf(),
        None => match nodectl_diagnosis::experiments::default_path() {
            Some(path) if path.exists() => path,
            _ => return Ok(None),
        },
    };
    let records = nodectl_diagnosis::experiments::read(&path)?;
    if records.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::cmd::experiment::table_markdown(&records)?))
}

fn default_out(label: &str, taken_at: &str, encrypted: bool) -> PathBuf {
    let node = bundle::safe_name(label);
    let time: String = taken_at
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect();
    let ext = if encrypted { "tar.gz.age" } else { "tar.gz" };
    PathBuf::from(format!("nodectl-report-{node}-{time}.{ext}"))
}

/// Writes a new file (never over an existing one: a bundle is evidence).
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("writing the bundle to {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing the bundle to {}", path.display()))
}

fn pretty(value: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}
