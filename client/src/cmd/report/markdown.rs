//! `report.md`: a summary table ready to paste into a GitHub issue, then one `<details>` section per part, within GitHub's limit of 65,536 characters.

use std::collections::BTreeMap;

use nodectl_model::Snapshot;
use nodectl_model::snapshot::Severity;

use super::SectionOutcome;
use crate::cmd::diagnose::Diagnoses;

/// GitHub refuses an issue or comment body longer than this many characters.
pub const GITHUB_BODY_LIMIT_CHARS: usize = 65_536;

/// Characters kept free for the closing of a cut section and the line saying where the rest is.
const CUT_RESERVE_CHARS: usize = 600;

/// What `report.md` is made from.
pub struct Report<'a> {
    pub node: &'a str,
    pub taken_at: &'a str,
    pub command: &'a [String],
    pub snapshot: Option<&'a Snapshot>,
    pub diagnoses: Option<&'a Diagnoses>,
    pub sections: &'a [SectionOutcome],
    pub redactions: &'a BTreeMap<String, u64>,
    pub redacted: bool,
    pub experiments: Option<&'a str>,
    /// `node/kernel.json`.
    pub kernel: Option<&'a str>,
}

/// One summary row: what and its value, `unknown` (and why) when the bundle does not say.
#[derive(Debug, serde::Serialize)]
pub struct SummaryRow {
    pub field: &'static str,
    pub value: String,
}

impl Report<'_> {
    /// The summary table's rows (also in report.json).
    pub fn summary(&self) -> Vec<SummaryRow> {
        let unknown = || "unknown (no snapshot)".to_owned();
        let snapshot = self.snapshot;
        let cards = snapshot.map(|s| s.cards.as_slice()).unwrap_or_default();
        let per_card = |pick: &dyn Fn(&nodectl_model::snapshot::Card) -> Option<String>| {
            if snapshot.is_none() {
                return unknown();
            }
            if cards.is_empty() {
                return "no amdgpu card".to_owned();
            }
            cards
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.name,
                        pick(c).unwrap_or_else(|| "unknown".to_owned())
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let host = snapshot.map(|s| &s.host);
        let findings = match snapshot {
            None => unknown(),
            Some(s) => {
                let worst: Vec<String> = s
                    .findings
                    .iter()
                    .filter(|f| matches!(f.severity, Severity::Critical | Severity::Warning))
                    .map(|f| format!("{} ({})", f.id, severity_name(f.severity)))
                    .collect();
                if worst.is_empty() {
                    format!("none of warning or worse ({} checks)", s.findings.len())
                } else {
                    worst.join(", ")
                }
            }
        };
        let diagnoses = self.diagnoses.map(Diagnoses::all).unwrap_or_default();
        let verdict = match (self.diagnoses, diagnoses.as_slice()) {
            (None, _) => "no diagnosis (see Sections)".to_owned(),
            (Some(_), []) => "no llama.cpp run found on the node".to_owned(),
            (Some(_), runs) => runs
                .iter()
                .map(|d| d.verdict.clone())
                .collect::<Vec<_>>()
                .join(" / "),
        };
        let next = diagnoses
            .iter()
            .find_map(|d| d.strategies.first())
            .map_or_else(
                || "none proposed".to_owned(),
                |s| format!("{}: {}", s.strategy.id, s.strategy.title),
            );
        vec![
            SummaryRow {
                field: "Node",
                value: self.node.to_owned(),
            },
            SummaryRow {
                field: "Kernel",
                value: host
                    .and_then(|h| h.kernel_release.clone())
                    .unwrap_or_else(unknown),
            },
            SummaryRow {
                field: "Talos",
                value: match host {
                    None => unknown(),
                    Some(h) => h
                        .os_release
                        .as_ref()
                        .and_then(|o| o.talos_version.clone().or_else(|| o.pretty_name.clone()))
                        .unwrap_or_else(|| "not Talos (no os-release)".to_owned()),
                },
            },
            SummaryRow {
                field: "gfx target",
                value: per_card(&|c| c.gfx_target.clone()),
            },
            SummaryRow {
                field: "MES firmware",
                value: per_card(&|c| c.firmware.get("mes_fw_version").cloned()),
            },
            SummaryRow {
                field: "cwsr_enable",
                value: match snapshot {
                    None => unknown(),
                    Some(s) => s.module_parameters.amdgpu.get("cwsr_enable").map_or_else(
                        || "unknown (amdgpu not loaded, or the parameter is not there)".to_owned(),
                        |v| serde_json::to_string(v).unwrap_or_default(),
                    ),
                },
            },
            SummaryRow {
                field: "Findings",
                value: findings,
            },
            SummaryRow {
                field: "Verdict",
                value: verdict,
            },
            SummaryRow {
                field: "Next strategy",
                value: next,
            },
        ]
    }

    /// The Markdown, cut to fit GitHub's limit, with a line naming `bundle_name` when cut.
    pub fn render(&self, bundle_name: &str) -> String {
        let mut out = format!(
            "## nodectl report: {}\n\nTaken {} by nodectl {}{}.\n\n| | |\n|---|---|\n",
            md(self.node),
            md(self.taken_at),
            env!("CARGO_PKG_VERSION"),
            if self.redacted {
                ", redacted"
            } else {
                ", NOT redacted"
            }
        );
        for row in self.summary() {
            out.push_str(&format!("| {} | {} |\n", row.field, md(&row.value)));
        }
        out.push('\n');
        let mut cut = false;
        for (title, body) in self.details() {
            let block = details(&title, &body);
            let room = GITHUB_BODY_LIMIT_CHARS.saturating_sub(CUT_RESERVE_CHARS);
            let used = out.chars().count();
            if used + block.chars().count() <= room {
                out.push_str(&block);
                continue;
            }
            cut = true;
            // The part of the body that fits, closed properly.
            let fits = room.saturating_sub(used + title.chars().count() + 80);
            if fits > 200 {
                let body: String = body.chars().take(fits).collect();
                let body = match body.rfind('\n') {
                    Some(at) => body[..at].to_owned(),
                    None => body,
                };
                out.push_str(&details(&format!("{title} (cut)"), &format!("{body}\n…")));
            }
            break;
        }
        if cut {
            out.push_str(&format!(
                "\n_Cut to stay within GitHub's {GITHUB_BODY_LIMIT_CHARS}-character limit: everything is in `{}` (report.json, diagnosis.txt, node/, host/)._\n",
                md(bundle_name)
            ));
        }
        out
    }

    /// Titles and bodies of the `<details>` sections, most useful first.
    fn details(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(diagnoses) = self.diagnoses {
            out.push(("Diagnosis".to_owned(), fenced(&diagnoses.text())));
        }
        if let Some(snapshot) = self.snapshot {
            let mut body = String::new();
            for f in &snapshot.findings {
                body.push_str(&format!(
                    "- **{}** `{}`: {}\n",
                    severity_name(f.severity),
                    md(&f.id),
                    md(&f.title)
                ));
                for e in &f.evidence {
                    body.push_str(&format!("  - {}\n", md(e)));
                }
            }
            if body.is_empty() {
                body.push_str("No check ran.\n");
            }
            out.push((format!("Findings ({})", snapshot.findings.len()), body));
        }
        if let Some(kernel) = self.kernel {
            out.push((
                "Kernel incidents of this boot".to_owned(),
                kernel_body(kernel),
            ));
        }
        if let Some(snapshot) = self.snapshot {
            let mut body = String::new();
            for p in &snapshot.inference_processes {
                body.push_str(&format!(
                    "- pid {} `{}` ({}){}: `{}`\n",
                    p.pid,
                    md(&p.program),
                    md(&p.state),
                    p.pod
                        .as_deref()
                        .map(|pod| format!(", pod {}", md(pod)))
                        .unwrap_or_default(),
                    md(&p.args.join(" "))
                ));
            }
            if body.is_empty() {
                body.push_str("No llama.cpp or ollama process.\n");
            }
            out.push((
                format!(
                    "Inference processes ({})",
                    snapshot.inference_processes.len()
                ),
                body,
            ));
        }
        if let Some(table) = self.experiments {
            out.push(("Experiment log".to_owned(), table.to_owned()));
        }
        let mut body = String::from("| Section | Status | Reason | ms |\n|---|---|---|---|\n");
        for s in self.sections {
            body.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                md(&s.name),
                md(&s.status),
                md(s.reason.as_deref().unwrap_or("")),
                s.duration_ms
            ));
        }
        out.push(("Sections".to_owned(), body));
        let mut body = String::new();
        if !self.redacted {
            body.push_str("Nothing was redacted (--no-redact).\n");
        } else if self.redactions.is_empty() {
            body.push_str("Nothing needed redacting.\n");
        } else {
            body.push_str("| Kind | Replaced |\n|---|---|\n");
            for (kind, n) in self.redactions {
                body.push_str(&format!("| {} | {n} |\n", md(kind)));
            }
        }
        out.push(("Redactions".to_owned(), body));
        out.push(("Command".to_owned(), fenced(&self.command.join(" "))));
        out
    }
}

fn kernel_body(kernel: &str) -> String {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(kernel) else {
        return "node/kernel.json could not be read.\n".to_owned();
    };
    let incidents = doc
        .get("incidents")
        .and_then(|i| i.as_array())
        .cloned()
        .unwrap_or_default();
    let events = doc
        .get("events")
        .and_then(|e| e.as_array())
        .map_or(0, Vec::len);
    // An incident is sent again on every update: the last update of each id counts.
    let mut latest: BTreeMap<u64, &serde_json::Value> = BTreeMap::new();
    for incident in &incidents {
        if let Some(id) = incident.get("incident_id").and_then(|v| v.as_u64()) {
            latest.insert(id, incident);
        }
    }
    let mut body = format!(
        "{events} classified events, {} incidents.\n\n",
        latest.len()
    );
    if !latest.is_empty() {
        body.push_str("| Incident | Kind | Device | First | Last | Events | Recovered |\n|---|---|---|---|---|---|---|\n");
        for (id, i) in latest {
            let text = |key: &str| {
                i.get(key)
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            let total: u64 = i
                .get("event_counts")
                .and_then(|c| c.as_object())
                .map_or(0, |c| c.values().filter_map(|v| v.as_u64()).sum());
            body.push_str(&format!(
                "| {id} | {} | {} | {} | {} | {total} | {} |\n",
                md(&text("kind")),
                md(&text("device")),
                md(&text("first_time")),
                md(&text("last_time")),
                md(&text("recovered"))
            ));
        }
    }
    body
}

fn severity_name(severity: Severity) -> String {
    serde_json::to_value(severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{severity:?}").to_lowercase())
}

fn details(title: &str, body: &str) -> String {
    format!(
        "<details><summary>{}</summary>\n\n{}\n</details>\n\n",
        md(title),
        body.trim_end()
    )
}

/// Text in a code block whose fence is longer than any backtick run in it.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}text\n{}\n{fence}\n", text.trim_end())
}

/// Text safe in a table cell or a line: no pipes, no line breaks, no HTML.
fn md(text: &str) -> String {
    text.replace('|', "\\|")
        .replace(['\n', '\r'], " ")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
