//! The experiment log: one JSON line per strategy tried on a node (image, environment, kernel and server arguments, how far the run got, llama-bench figures), appended to a file and read back.
//!
//! It replaces the table operators keep by hand while they chase a ROCm hang ("image X with
//! HSA_ENABLE_SDMA=0: past the upload, stalled at graph reserve"). A record made from a
//! diagnosis keeps its phase and outcome, so `diagnose` can tell that a strategy was already
//! tried on the node and did not help.

use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Facts, Proposed};
use crate::llama_bench::BenchResult;
use crate::llama_log::{Phase, RunOutcome};

/// Longest line of an experiment log read: a record is a few KiB (its bench results included);
/// a longer line is not one, and is an error naming it rather than memory.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Largest experiment log read: a record is a few KiB, so this is tens of thousands of
/// experiments; a larger file is not a log kept by hand and is refused rather than read whole.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// One strategy tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub recorded_at: jiff::Timestamp,
    /// What was tried, in the operator's words or a catalog strategy id.
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `NAME=VALUE`, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
    /// The server's own arguments (`-fa off`, `--load-mode none`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The result in the operator's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// What a diagnosis of the run said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bench: Vec<BenchResult>,
}

/// The part of a diagnosis an experiment keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_confidence: Option<String>,
    /// The run's outcome (stalled, crashed, serving, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// The log showed the upload of the weights (the first place ROCm runs hung).
    #[serde(default)]
    pub passed_upload: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_for_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default)]
    pub verdict: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
}

/// The diagnosis fields an experiment reads (the JSON of `nodectl diagnose -o json`).
#[derive(Debug, Deserialize)]
struct DiagnosisJson {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    phase: Option<Phase>,
    #[serde(default)]
    phase_confidence: Option<String>,
    #[serde(default)]
    outcome: Option<RunOutcome>,
    #[serde(default)]
    stalled_for_s: Option<u64>,
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    log: Option<DiagnosisLogJson>,
}

#[derive(Debug, Deserialize)]
struct DiagnosisLogJson {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    timeline: Vec<TimelinePhase>,
}

#[derive(Debug, Deserialize)]
struct TimelinePhase {
    phase: Phase,
}

/// The node and the run summary of a diagnosis as `nodectl diagnose -o json` printed it: one
/// diagnosis, or a node's list holding exactly one.
pub fn summary_of_diagnosis(json: &str) -> Result<(Option<String>, RunSummary), String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let one = match value.get("diagnoses").and_then(|d| d.as_array()) {
        Some(list) if list.len() == 1 => list[0].clone(),
        Some(list) => {
            return Err(format!(
                "holds {} diagnoses; record one (nodectl diagnose --pod or --log names one run)",
                list.len()
            ));
        }
        None => value,
    };
    let d: DiagnosisJson = serde_json::from_value(one)
        .map_err(|e| format!("not a nodectl diagnosis (diagnose -o json): {e}"))?;
    if d.phase.is_none() && d.outcome.is_none() {
        return Err("the diagnosis names no phase and no outcome".to_owned());
    }
    let (backend, passed_upload) = match &d.log {
        Some(log) => (
            log.backend.clone(),
            log.timeline.iter().any(|t| t.phase == Phase::Upload),
        ),
        None => (None, false),
    };
    Ok((
        d.node,
        RunSummary {
            phase: d.phase,
            phase_confidence: d.phase_confidence,
            outcome: d.outcome,
            passed_upload,
            stalled_for_s: d.stalled_for_s,
            backend,
            verdict: d.verdict,
        },
    ))
}

impl Experiment {
    /// The phase as a person reads it: `graph reserve`.
    pub fn phase_reached(&self) -> Option<String> {
        let phase = self.run.as_ref()?.phase?;
        Some(phase.as_str().replace('_', " "))
    }

    /// The result in words: the operator's, else the diagnosis's ("past the upload, stalled at
    /// graph reserve").
    pub fn result_text(&self) -> Option<String> {
        if let Some(result) = &self.result {
            return Some(result.clone());
        }
        let run = self.run.as_ref()?;
        let phase = self.phase_reached();
        let past_upload = run.passed_upload && run.phase.is_some_and(|p| p > Phase::Upload);
        let text = match (run.outcome, phase) {
            (Some(RunOutcome::Stalled), Some(p)) => format!("stalled at {p}"),
            (Some(RunOutcome::Crashed), Some(p)) => format!("crashed in {p}"),
            (Some(RunOutcome::Incomplete), Some(p)) => format!("incomplete, last in {p}"),
            (Some(outcome), _) => outcome.as_str().to_owned(),
            (None, Some(p)) => format!("reached {p}"),
            (None, None) => return None,
        };
        let stopped = matches!(
            run.outcome,
            Some(RunOutcome::Stalled | RunOutcome::Crashed | RunOutcome::Incomplete)
        );
        Some(if past_upload && stopped {
            format!("past the upload, {text}")
        } else {
            text
        })
    }

    /// Whether the run did not come up (stalled or crashed), as its diagnosis said.
    pub fn failed(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| matches!(r.outcome, Some(RunOutcome::Stalled | RunOutcome::Crashed)))
    }

    /// The changes tried, as the catalog's signs of a strategy in effect read them.
    pub fn facts(&self) -> Facts {
        let mut facts = Facts::default();
        for setting in &self.env {
            if let Some((name, value)) = setting.split_once('=') {
                facts.env.insert(name.to_owned(), value.to_owned());
            }
        }
        facts.args = self.args.iter().flat_map(|a| split_words(a)).collect();
        for arg in &self.kernel_args {
            if let Some((key, value)) = arg.split_once('=') {
                facts.params.insert(key.to_owned(), value.to_owned());
            }
        }
        facts
    }
}

/// Moves the strategies that a failed experiment on `node` had in effect (by its strategy name,
/// or by the catalog's signs over its environment, arguments and kernel arguments) after the
/// others, each saying which experiment; the latest such experiment is named.
pub fn rank_tried_last(
    strategies: &mut [Proposed],
    experiments: &[Experiment],
    node: &str,
    catalog: &Catalog,
) {
    let failed_here: Vec<&Experiment> = experiments
        .iter()
        .filter(|e| e.failed() && e.node.as_deref() == Some(node))
        .collect();
    if failed_here.is_empty() {
        return;
    }
    for proposed in strategies.iter_mut() {
        let id = proposed.strategy.id.as_str();
        let tried = failed_here
            .iter()
            .rev()
            .find(|e| e.strategy == id || catalog.in_effect(id, &e.facts()).is_some());
        if let Some(e) = tried {
            let image = e
                .image
                .as_deref()
                .map(|i| format!(", image {i}"))
                .unwrap_or_default();
            proposed.tried_before = Some(format!(
                "{:?} on {} ({}{image}): {}",
                e.strategy,
                node,
                e.recorded_at.strftime("%Y-%m-%d"),
                e.result_text().unwrap_or_default()
            ));
        }
    }
    // Stable: untried ones keep their rank, tried ones follow in theirs.
    strategies.sort_by_key(|p| p.tried_before.is_some());
}

/// `-fa off` given as one argument is two words on a command line.
fn split_words(arg: &str) -> Vec<String> {
    arg.split_whitespace().map(str::to_owned).collect()
}

/// `NAME=VALUE` with a name a shell would take.
pub fn check_env_setting(setting: &str) -> Result<(), String> {
    let Some((name, _)) = setting.split_once('=') else {
        return Err(format!("--env {setting:?}: expected NAME=VALUE"));
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "--env {setting:?}: {name:?} is not a variable name (letters, digits, _)"
        ))
    }
}

/// Where the log lives when no file is named: `$XDG_DATA_HOME/nodectl/experiments.jsonl`, else
/// `~/.local/share/nodectl/experiments.jsonl`.
pub fn default_path() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })?;
    Some(data.join("nodectl/experiments.jsonl"))
}

/// Appends one record as one line. A single write of a line opened for appending: records
/// written at once by two shells never interleave.
pub fn append(path: &Path, experiment: &Experiment) -> Result<(), ExperimentError> {
    let file_error = |e: std::io::Error| ExperimentError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file_error)?;
    }
    let mut line = serde_json::to_string(experiment).map_err(|e| ExperimentError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(file_error)?;
    check_regular(&file, path)?;
    file.write_all(line.as_bytes()).map_err(file_error)
}

fn check_regular(file: &std::fs::File, path: &Path) -> Result<(), ExperimentError> {
    if file.metadata().is_ok_and(|m| m.is_file()) {
        Ok(())
    } else {
        Err(ExperimentError::File {
            path: path.display().to_string(),
            reason: "not a regular file".to_owned(),
        })
    }
}

/// Every record of the log, in the order recorded; a missing file is an empty log.
pub fn read(path: &Path) -> Result<Vec<Experiment>, ExperimentError> {
    let shown = path.display().to_string();
    // Non-blocking: a FIFO at the path opens at once, then fails the regular-file test,
    // instead of holding `diagnose` in open() until someone writes to it.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ExperimentError::File {
                path: shown,
                reason: e.to_string(),
            });
        }
    };
    check_regular(&file, path)?;
    if file.metadata().is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        return Err(ExperimentError::File {
            path: shown,
            reason: format!(
                "longer than {} MiB: not an experiment log",
                MAX_LOG_BYTES >> 20
            ),
        });
    }
    // A file that grows while it is read still stops at the bound.
    let mut reader = std::io::BufReader::new(file.take(MAX_LOG_BYTES));
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        let read = (&mut reader)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| ExperimentError::File {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if read == 0 {
            break;
        }
        let line_error = |reason: String| ExperimentError::Line {
            path: shown.clone(),
            line: number,
            reason,
        };
        if line.len() > MAX_RECORD_BYTES {
            return Err(line_error(format!(
                "longer than {} KiB: not an experiment record",
                MAX_RECORD_BYTES / 1024
            )));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| line_error("not UTF-8 text".to_owned()))?
            .trim();
        if text.is_empty() {
            continue;
        }
        let experiment: Experiment = serde_json::from_str(text)
            .map_err(|e| line_error(format!("not an experiment record: {e}")))?;
        out.push(experiment);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn experiment(strategy: &str) -> Experiment {
        Experiment {
            recorded_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            strategy: strategy.to_owned(),
            node: Some("node1".to_owned()),
            image: None,
            env: vec!["HSA_ENABLE_SDMA=0".to_owned()],
            kernel_args: vec!["amdgpu.cwsr_enable=0".to_owned()],
            args: vec!["-fa off".to_owned()],
            result: None,
            run: Some(RunSummary {
                phase: Some(Phase::GraphReserve),
                phase_confidence: Some("high".to_owned()),
                outcome: Some(RunOutcome::Stalled),
                passed_upload: true,
                stalled_for_s: Some(600),
                backend: Some("rocm".to_owned()),
                verdict: String::new(),
            }),
            bench: Vec::new(),
        }
    }

    #[test]
    fn records_append_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/experiments.jsonl");
        assert!(read(&path).unwrap().is_empty());
        let (a, b) = (experiment("a"), experiment("b"));
        append(&path, &a).unwrap();
        append(&path, &b).unwrap();
        assert_eq!(read(&path).unwrap(), vec![a, b]);
        let fifo = dir.path().join("fifo.jsonl");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = append(&fifo, &experiment("c")).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") || e.contains("No such device"),
            "{e}"
        );
        std::fs::write(&path, "{\"strategy\": 1}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains("experiments.jsonl:1: not an experiment record"),
            "{e}"
        );
    }

    #[test]
    fn results_in_words_and_what_was_in_effect() {
        let mut e = experiment("x");
        assert_eq!(e.phase_reached().as_deref(), Some("graph reserve"));
        assert_eq!(
            e.result_text().as_deref(),
            Some("past the upload, stalled at graph reserve")
        );
        assert!(e.failed());
        let facts = e.facts();
        assert_eq!(
            facts.env.get("HSA_ENABLE_SDMA").map(String::as_str),
            Some("0")
        );
        assert_eq!(facts.args, ["-fa", "off"]);
        assert_eq!(
            facts.params.get("amdgpu.cwsr_enable").map(String::as_str),
            Some("0")
        );
        if let Some(run) = &mut e.run {
            run.passed_upload = false;
        }
        assert_eq!(e.result_text().as_deref(), Some("stalled at graph reserve"));
        e.result = Some("hung, no dmesg".to_owned());
        assert_eq!(e.result_text().as_deref(), Some("hung, no dmesg"));
    }

    #[test]
    fn a_diagnosis_is_read_from_its_json() {
        let json = r#"{"node": "n1", "phase": "graph_reserve", "phase_confidence": "high",
            "outcome": "stalled", "stalled_for_s": 60, "verdict": "stalled in graph_reserve",
            "log": {"backend": "rocm", "timeline": [{"phase": "tensor_load", "line": 3}, {"phase": "upload", "line": 9}]}}"#;
        let (node, run) = summary_of_diagnosis(json).unwrap();
        assert_eq!(node.as_deref(), Some("n1"));
        assert!(run.passed_upload);
        assert_eq!(run.outcome, Some(RunOutcome::Stalled));
        let two = r#"{"node": "n", "diagnoses": [{"phase": "ready"}, {"phase": "ready"}]}"#;
        assert!(
            summary_of_diagnosis(two)
                .unwrap_err()
                .contains("2 diagnoses")
        );
        assert!(summary_of_diagnosis("{}").is_err());
        assert!(check_env_setting("HSA_ENABLE_SDMA=0").is_ok());
        assert!(check_env_setting("=0").is_err());
        assert!(check_env_setting("A B=1").is_err());
    }
}
