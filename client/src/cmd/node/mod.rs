//! `nodectl node show|check`: one snapshot per node, as a table or the documented JSON/YAML shape.

use std::time::Duration;

use clap::{Args, Subcommand};
use nodectl_model::snapshot::{self as model, Severity};

use crate::context::Context;
use crate::exit::ExitStatus;
use crate::nodes::{self, NodeSnapshot};
use crate::render::{self, table};

mod summary;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Print everything the agent reads: host, cards, parameters, firmware, clocks, memory, KFD.
    Show(ShowArgs),
    /// Run the checks and list the findings; exit 1 when one is critical, 4 when none is but a
    /// critical check could not run (its inputs were unreadable).
    Check(CheckArgs),
}

/// Flags of `node show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Where node state comes from.
    #[command(flatten)]
    pub source: crate::cli::NodeSource,
}

/// Flags of `node check`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct CheckArgs {
    /// Where node state comes from.
    #[command(flatten)]
    pub source: crate::cli::NodeSource,
    /// Watch clocks and busy % over this long (e.g. `3s`) for the trend checks (gpu_clock_stuck_low).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub sample: Option<Duration>,
}

/// Readings are taken this far apart while sampling.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// Readings per card and their spacing: one reading, or enough to cover the window.
fn sample_options(sample: Option<Duration>) -> (u32, Duration) {
    match sample {
        None => (1, SAMPLE_INTERVAL),
        Some(window) => {
            let steps = (window.as_millis() / SAMPLE_INTERVAL.as_millis()).max(2);
            (
                u32::try_from(steps + 1).unwrap_or(u32::MAX),
                SAMPLE_INTERVAL,
            )
        }
    }
}

/// The outcome of a node's snapshot under `command`: check's critical or unknown findings.
fn check_outcome(command: &NodeCommand, snapshot: &model::Snapshot) -> ExitStatus {
    if !matches!(command, NodeCommand::Check(_)) {
        return ExitStatus::Ok;
    }
    let any = |wanted: &dyn Fn(&model::Finding) -> bool| snapshot.findings.iter().any(wanted);
    if any(&|f| f.severity == Severity::Critical) {
        ExitStatus::Critical
    } else if any(&|f| {
        f.severity == Severity::Unknown && f.severity_if_found == Some(Severity::Critical)
    }) {
        ExitStatus::CriticalUnknown
    } else {
        ExitStatus::Ok
    }
}

fn render_node(command: &NodeCommand, node: &NodeSnapshot) -> String {
    match command {
        NodeCommand::Show(_) => render_show(node),
        NodeCommand::Check(_) => render_check(node),
    }
}

pub async fn run(command: NodeCommand, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let (count, interval) = match &command {
        NodeCommand::Show(_) => sample_options(None),
        NodeCommand::Check(args) => sample_options(args.sample),
    };
    let targets = ctx.nodes().await?.targets();
    if let [target] = targets.as_slice() {
        // One node: its snapshot, or the error that kept it (exit 2 or 3).
        let node = nodes::snapshot_of(target, count, interval).await?;
        if !render::print_structured(&node.snapshot, ctx.format)? {
            render::emit(&render_node(&command, &node))?;
        }
        return Ok(check_outcome(&command, &node.snapshot));
    }
    // Several: each within its deadline (plus the sampling window), none fatal.
    let window = interval.saturating_mul(count.saturating_sub(1));
    let deadline = ctx.node_timeout().saturating_add(window);
    let answers = crate::fleet::ask_each(targets, deadline, move |target| {
        summary::read_node(target, count, interval)
    })
    .await;
    let rows: Vec<summary::SummaryRow> = answers.iter().map(summary::SummaryRow::of).collect();
    let document = FleetDocument {
        fleet: &rows,
        nodes: answers.iter().map(crate::fleet::Answer::document).collect(),
    };
    if !render::print_structured(&document, ctx.format)? {
        let mut out = summary::summary_table(&rows);
        for answer in &answers {
            if let Ok(reading) = &answer.result {
                let node = NodeSnapshot {
                    source: answer.label.clone(),
                    selection: answer.target.selection(),
                    snapshot: reading.snapshot.clone(),
                };
                out.push('\n');
                out.push_str(&render_node(&command, &node));
            }
        }
        out.push('\n');
        out.push_str(&crate::fleet::failures_text(&answers));
        render::emit(&out)?;
    }
    Ok(crate::fleet::outcome_of(&answers, |reading| {
        check_outcome(&command, &reading.snapshot)
    }))
}

/// `-o json|yaml` of several nodes: the summary rows, then each node's snapshot or failure.
#[derive(serde::Serialize)]
struct FleetDocument<'a> {
    fleet: &'a [summary::SummaryRow],
    nodes: Vec<crate::fleet::NodeDocument<'a, summary::NodeReading>>,
}

/// Kernel arguments worth showing next to the cards: amdgpu/ttm knobs and IOMMU mode.
fn is_argument_of_interest(key: &str) -> bool {
    key.starts_with("amdgpu.")
        || key.starts_with("ttm.")
        || key.starts_with("amdttm.")
        || key == "amd_iommu"
        || key.starts_with("iommu")
}

const NONE: &str = "-";

fn or_none<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| NONE.to_owned(), |v| v.to_string())
}

/// `103079215104` → `96.0 GiB`; `-` when unknown.
fn bytes(value: Option<u64>) -> String {
    value.map_or_else(|| NONE.to_owned(), render::human_bytes)
}

fn sclk_now_min_max(card: &model::Card) -> String {
    let Some(levels) = card.sclk() else {
        return NONE.to_owned();
    };
    let numbered = levels.iter().filter(|l| l.index != "S");
    let min = numbered.clone().map(|l| l.mhz).min();
    let max = numbered.map(|l| l.mhz).max();
    let now = levels.iter().find(|l| l.current).map(|l| l.mhz);
    format!("{} / {} / {} MHz", or_none(now), or_none(min), or_none(max))
}

fn param(snapshot: &model::Snapshot, module: &str, name: &str) -> String {
    let params = match module {
        "ttm" => &snapshot.module_parameters.ttm,
        _ => &snapshot.module_parameters.amdgpu,
    };
    params
        .get(name)
        .map_or_else(|| NONE.to_owned(), |v| v.raw())
}

fn render_show(node: &NodeSnapshot) -> String {
    let s = &node.snapshot;
    let mut out = format!("node {}\n", node.source);
    if s.cards.is_empty() {
        out.push_str("no amdgpu device found\n");
    } else {
        let mut t = table(&[
            "card",
            "gfx target",
            "cwsr_enable",
            "MES firmware",
            "sclk now / min / max",
            "busy",
            "GTT size",
        ]);
        for card in &s.cards {
            t.add_row(vec![
                card.name.clone(),
                card.gfx_target.clone().unwrap_or_else(|| NONE.to_owned()),
                param(s, "amdgpu", "cwsr_enable"),
                card.mes_firmware().unwrap_or(NONE).to_owned(),
                sclk_now_min_max(card),
                card.gpu_busy_percent
                    .map_or_else(|| NONE.to_owned(), |b| format!("{b} %")),
                bytes(card.memory.gtt_total_bytes),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }

    let h = &s.host;
    let os = h.os_release.clone().unwrap_or_default();
    let mut t = table(&["host", ""]);
    t.add_row(vec!["hostname".to_owned(), or_none(h.hostname.as_ref())]);
    t.add_row(vec!["talos".to_owned(), or_none(os.talos_version.as_ref())]);
    t.add_row(vec!["os".to_owned(), or_none(os.pretty_name.as_ref())]);
    t.add_row(vec![
        "kernel".to_owned(),
        or_none(h.kernel_release.as_ref()),
    ]);
    t.add_row(vec!["boot id".to_owned(), or_none(h.boot_id.as_ref())]);
    t.add_row(vec![
        "memory total / available".to_owned(),
        format!(
            "{} / {}",
            bytes(h.mem_total_bytes),
            bytes(h.mem_available_bytes)
        ),
    ]);
    t.add_row(vec![
        "uptime".to_owned(),
        h.uptime_usec.map_or_else(
            || NONE.to_owned(),
            |u| render::human_duration(u / 1_000_000),
        ),
    ]);
    let interesting: Vec<String> = h
        .kernel_arguments
        .iter()
        .filter(|a| is_argument_of_interest(&a.key))
        .map(|a| match &a.value {
            Some(v) => format!("{}={v}", a.key),
            None => a.key.clone(),
        })
        .collect();
    t.add_row(vec![
        "cmdline (gpu)".to_owned(),
        if interesting.is_empty() {
            NONE.to_owned()
        } else {
            interesting.join("\n")
        },
    ]);
    t.add_row(vec![
        "ttm.pages_limit".to_owned(),
        param(s, "ttm", "pages_limit"),
    ]);
    out.push_str(&format!("{t}\n"));

    for card in &s.cards {
        out.push_str(&render_card(card));
    }
    if !s.kfd_nodes.is_empty() {
        let mut t = table(&[
            "KFD node",
            "gpu_id",
            "gfx target",
            "simd_count",
            "cwsr_size",
        ]);
        for n in &s.kfd_nodes {
            t.add_row(vec![
                n.node_id.to_string(),
                n.gpu_id.to_string(),
                n.gfx_target.clone().unwrap_or_else(|| NONE.to_owned()),
                or_none(n.properties.get("simd_count")),
                or_none(n.properties.get("cwsr_size")),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out.push_str(&render_processes(s));
    if !s.problems.is_empty() {
        let mut t = table(&["problem", "reason"]);
        for p in &s.problems {
            t.add_row(vec![p.path.clone(), p.reason.clone()]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out.push_str(&findings_line(node));
    out
}

/// The inference processes: program, pod, state, arguments and allowlisted environment (both
/// redacted by the agent), and how many more the agent found than it lists.
fn render_processes(s: &model::Snapshot) -> String {
    let mut out = String::new();
    if !s.inference_processes.is_empty() {
        let mut t = table(&[
            "inference process",
            "pid",
            "pod",
            "state",
            "arguments, allowlisted environment",
        ]);
        for p in &s.inference_processes {
            let mut command =
                render::cell(&p.args.iter().skip(1).cloned().collect::<Vec<_>>().join(" "));
            if !p.env.is_empty() {
                let env: Vec<String> = p.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                command.push('\n');
                command.push_str(&render::cell(&env.join(" ")));
            }
            t.add_row(vec![
                p.program.clone(),
                p.pid.to_string(),
                or_none(p.pod.as_ref()),
                p.state.clone(),
                command,
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out.push_str(&not_listed_line(
        s.inference_processes_not_listed,
        s.inference_processes.len(),
    ));
    out
}

/// `2 more inference processes run on the node: the agent lists the first 64.`; empty when
/// none was left out.
pub(crate) fn not_listed_line(not_listed: u32, listed: usize) -> String {
    match not_listed {
        0 => String::new(),
        1 => format!(
            "1 more inference process runs on the node: the agent lists the first {listed}.\n"
        ),
        n => format!(
            "{n} more inference processes run on the node: the agent lists the first {listed}.\n"
        ),
    }
}

/// The last line of `node show`: the findings by severity, and the command that shows them for
/// the same node.
fn findings_line(node: &NodeSnapshot) -> String {
    let node_flags = &node.selection;
    let findings = &node.snapshot.findings;
    if findings.is_empty() {
        return "No findings.\n".to_owned();
    }
    let mut by_severity = std::collections::BTreeMap::new();
    for f in findings {
        *by_severity
            .entry(std::cmp::Reverse(f.severity))
            .or_insert(0u32) += 1;
    }
    let counts: Vec<String> = by_severity
        .iter()
        .map(|(severity, n)| format!("{n} {}", severity.0.as_str()))
        .collect();
    format!(
        "{} finding{} ({}): run `nodectl{node_flags} node check` to see them.\n",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        counts.join(", ")
    )
}

fn render_card(card: &model::Card) -> String {
    let mut t = table(&[card.name.as_str(), ""]);
    t.add_row(vec!["pci id".to_owned(), or_none(card.pci_id.as_ref())]);
    t.add_row(vec!["bdf".to_owned(), or_none(card.bdf.as_ref())]);
    t.add_row(vec![
        "vbios".to_owned(),
        or_none(card.vbios_version.as_ref()),
    ]);
    t.add_row(vec![
        "performance level".to_owned(),
        or_none(card.performance_level.as_ref()),
    ]);
    t.add_row(vec![
        "busy gpu / mem".to_owned(),
        format!(
            "{} / {} %",
            or_none(card.gpu_busy_percent),
            or_none(card.mem_busy_percent)
        ),
    ]);
    let firmware: Vec<String> = card
        .firmware
        .iter()
        .filter(|(_, v)| v.as_str() != "0x00000000")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    t.add_row(vec![
        "firmware".to_owned(),
        if firmware.is_empty() {
            NONE.to_owned()
        } else {
            firmware.join("\n")
        },
    ]);
    for (domain, levels) in &card.dpm_clocks {
        let shown: Vec<String> = levels
            .iter()
            .map(|l| format!("{}: {}{}", l.index, l.mhz, if l.current { "*" } else { "" }))
            .collect();
        t.add_row(vec![format!("{domain} MHz"), shown.join("  ")]);
    }
    let m = &card.memory;
    t.add_row(vec![
        "VRAM used / total".to_owned(),
        format!(
            "{} / {}",
            bytes(m.vram_used_bytes),
            bytes(m.vram_total_bytes)
        ),
    ]);
    t.add_row(vec![
        "GTT used / total".to_owned(),
        format!("{} / {}", bytes(m.gtt_used_bytes), bytes(m.gtt_total_bytes)),
    ]);
    if let Some(h) = &card.hwmon {
        t.add_row(vec![
            format!("hwmon ({})", h.name),
            format!(
                "edge {} °C, power {} W ({}), sclk {} MHz",
                h.temp_edge_millicelsius
                    .map_or_else(|| NONE.to_owned(), |t| format!("{:.1}", t as f64 / 1000.0)),
                h.power_microwatts
                    .map_or_else(|| NONE.to_owned(), |p| format!("{:.1}", p as f64 / 1e6)),
                h.power_source.as_deref().unwrap_or(NONE),
                h.sclk_hz
                    .map_or_else(|| NONE.to_owned(), |f| (f / 1_000_000).to_string()),
            ),
        ]);
    }
    if let Some(g) = &card.gpu_metrics {
        let summary = if g.supported {
            format!(
                "v{}.{}: gfxclk {} MHz, gfx activity {} %, socket power {}",
                g.format_revision,
                g.content_revision,
                or_none(g.value("average_gfxclk_frequency")),
                or_none(g.value("average_gfx_activity")),
                g.value("average_socket_power")
                    .map_or_else(|| NONE.to_owned(), |p| format!("{p} mW")),
            )
        } else {
            format!(
                "v{}.{} ({} bytes): not decoded",
                g.format_revision, g.content_revision, g.structure_size
            )
        };
        t.add_row(vec!["gpu_metrics".to_owned(), summary]);
    }
    format!("{t}\n")
}

fn render_check(node: &NodeSnapshot) -> String {
    let s = &node.snapshot;
    let mut out = format!("node {}\n", node.source);
    if s.cards.is_empty() {
        out.push_str("no amdgpu device found\n");
    }
    if s.findings.is_empty() {
        out.push_str("no findings\n");
        return out;
    }
    let mut t = table(&["severity", "id", "card", "title"]);
    for f in &s.findings {
        t.add_row(vec![
            f.severity.as_str().to_owned(),
            f.id.clone(),
            f.card.clone().unwrap_or_else(|| NONE.to_owned()),
            f.title.clone(),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    for f in &s.findings {
        out.push_str(&format!(
            "\n[{}] {}: {}\n",
            f.severity.as_str(),
            f.id,
            f.title
        ));
        for e in &f.evidence {
            out.push_str(&format!("  evidence: {e}\n"));
        }
        out.push_str(&format!("  remedy: {}\n", f.remedy));
        for r in &f.references {
            out.push_str(&format!("  see: {r}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_two_largest_units() {
        assert_eq!(render::human_duration(0), "0 s");
        assert_eq!(render::human_duration(59), "59 s");
        assert_eq!(render::human_duration(3_600), "1 h");
        assert_eq!(render::human_duration(3_725), "1 h 2 min");
        assert_eq!(render::human_duration(93_784), "1 d 2 h");
        assert_eq!(render::human_duration(86_401), "1 d");
    }
}
