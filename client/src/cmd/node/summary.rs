//! The fleet summary of `node show|check` over several nodes: one row per node (gfx, MES, cwsr_enable, open incidents, worst finding, llama.cpp runs), read concurrently.

use std::time::Duration;

use nodectl_model::inference::InferenceProcesses;
use nodectl_model::snapshot::{Severity, Snapshot};
use nodectl_model::{Incident, StreamMessage};
use tokio_stream::StreamExt as _;

use crate::embedded::EmbeddedOptions;
use crate::fleet::Answer;
use crate::nodes::{KernelEventsRequest, Target};

/// What one node said for the summary: its snapshot, and (each may fail alone) its kernel
/// incidents and its inference processes.
#[derive(Debug, serde::Serialize)]
pub struct NodeReading {
    pub snapshot: Snapshot,
    #[serde(skip)]
    pub incidents: Result<Vec<Incident>, String>,
    #[serde(skip)]
    pub processes: Result<InferenceProcesses, String>,
}

/// Reads a node for the summary: the snapshot (its failure fails the node), then the incidents
/// the agent holds and one reading of its processes.
pub async fn read_node(
    target: Target,
    count: u32,
    interval: Duration,
) -> anyhow::Result<NodeReading> {
    let mut client = target.connect(&EmbeddedOptions::default()).await?;
    let snapshot = client.snapshot(count, interval).await?;
    let incidents = incidents(&mut client).await.map_err(|e| format!("{e:#}"));
    let processes = client
        .inference_processes(Duration::ZERO)
        .await
        .map_err(|e| format!("{e:#}"));
    Ok(NodeReading {
        snapshot,
        incidents,
        processes,
    })
}

/// The latest update of each incident the agent holds.
async fn incidents(client: &mut crate::nodes::NodeClient) -> anyhow::Result<Vec<Incident>> {
    let mut stream = client.kernel_events(KernelEventsRequest::default()).await?;
    let mut incidents: Vec<Incident> = Vec::new();
    while let Some(message) = stream.next().await {
        if let StreamMessage::Incident(incident) = message? {
            match incidents
                .iter_mut()
                .find(|i| i.incident_id == incident.incident_id)
            {
                Some(existing) => *existing = incident,
                None => incidents.push(incident),
            }
        }
    }
    Ok(incidents)
}

/// One row of the fleet summary.
#[derive(Debug, serde::Serialize)]
pub struct SummaryRow {
    /// The node's hostname (its endpoint when it gave none or did not answer).
    pub node: String,
    /// The endpoint it was asked at.
    pub source: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub gfx_targets: Vec<String>,
    pub mes_firmware: Vec<String>,
    pub cwsr_enable: Option<String>,
    /// Incidents not yet closed; `None`: the kernel log could not be read.
    pub open_incidents: Option<usize>,
    /// The most severe finding (`severity: id`), if any.
    pub worst_finding: Option<String>,
    /// Each llama.cpp/ollama process as `program (activity)`; `None`: not listed.
    pub inference_runs: Option<Vec<String>>,
}

impl SummaryRow {
    pub fn of(answer: &Answer<NodeReading>) -> Self {
        let reading = match &answer.result {
            Ok(reading) => reading,
            Err(failure) => {
                return SummaryRow {
                    node: answer.label.clone(),
                    source: answer.label.clone(),
                    status: "failed",
                    error: Some(failure.reason.clone()),
                    gfx_targets: Vec::new(),
                    mes_firmware: Vec::new(),
                    cwsr_enable: None,
                    open_incidents: None,
                    worst_finding: None,
                    inference_runs: None,
                };
            }
        };
        let s = &reading.snapshot;
        let mut gfx_targets: Vec<String> = s
            .cards
            .iter()
            .filter_map(|c| c.gfx_target.clone())
            .collect();
        gfx_targets.dedup();
        let mut mes_firmware: Vec<String> = s
            .cards
            .iter()
            .filter_map(|c| c.mes_firmware().map(str::to_owned))
            .collect();
        mes_firmware.dedup();
        let worst_finding = s
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .max_by_key(|f| f.severity)
            .map(|f| format!("{}: {}", f.severity.as_str(), f.id));
        SummaryRow {
            node: s
                .host
                .hostname
                .clone()
                .unwrap_or_else(|| answer.label.clone()),
            source: answer.label.clone(),
            status: "ok",
            error: None,
            gfx_targets,
            mes_firmware,
            cwsr_enable: s
                .module_parameters
                .amdgpu
                .get("cwsr_enable")
                .map(|v| v.raw()),
            open_incidents: reading
                .incidents
                .as_ref()
                .ok()
                .map(|all| all.iter().filter(|i| !i.closed).count()),
            worst_finding,
            inference_runs: reading.processes.as_ref().ok().map(|p| {
                p.processes
                    .iter()
                    .map(|process| {
                        format!(
                            "{} ({})",
                            process.program,
                            process.activity(p.sample_ms).as_str()
                        )
                    })
                    .collect()
            }),
        }
    }
}

/// The summary as a table, failed nodes included (with their reason).
pub fn summary_table(rows: &[SummaryRow]) -> String {
    const NONE: &str = "-";
    const UNKNOWN: &str = "?";
    let list = |values: &[String]| {
        if values.is_empty() {
            NONE.to_owned()
        } else {
            values.join(", ")
        }
    };
    let mut t = crate::render::table_wrapping(
        &[
            "node",
            "endpoint",
            "gfx",
            "MES",
            "cwsr_enable",
            "open incidents",
            "worst finding",
            "llama.cpp runs",
        ],
        &[6, 7],
    );
    for row in rows {
        if let Some(error) = &row.error {
            t.add_row(vec![
                row.node.clone(),
                row.source.clone(),
                "FAILED".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                crate::render::cell(error),
                String::new(),
            ]);
            continue;
        }
        t.add_row(vec![
            crate::render::cell(&row.node),
            row.source.clone(),
            list(&row.gfx_targets),
            list(&row.mes_firmware),
            row.cwsr_enable.clone().unwrap_or_else(|| NONE.to_owned()),
            row.open_incidents
                .map_or_else(|| UNKNOWN.to_owned(), |n| n.to_string()),
            row.worst_finding
                .clone()
                .unwrap_or_else(|| "none".to_owned()),
            row.inference_runs.as_deref().map_or_else(
                || UNKNOWN.to_owned(),
                |runs| {
                    if runs.is_empty() {
                        "none".to_owned()
                    } else {
                        runs.join(", ")
                    }
                },
            ),
        ]);
    }
    format!("{t}\n")
}
