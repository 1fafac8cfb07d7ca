//! `nodectl node show|check`: one snapshot per node, as a table or the documented JSON/YAML shape.

use std::time::Duration;

use clap::{Args, Subcommand};
use nodectl_agent::model::{self, Severity};
use nodectl_agent::snapshot::SampleOptions;

use crate::cli::GlobalArgs;
use crate::exit::Outcome;
use crate::output::{self, Format};
use crate::source::{self, NodeSnapshot};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Print everything the agent reads: host, cards, parameters, firmware, clocks, memory, KFD.
    Show,
    /// Run the checks and list the findings; exit 1 when one is critical.
    Check(CheckArgs),
}

/// Flags of `node check`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct CheckArgs {
    /// Watch clocks and busy % over this long (e.g. `3s`) for the trend checks (gpu_clock_stuck_low).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub sample: Option<Duration>,
}

/// Readings are taken this far apart while sampling.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("not a duration like 3s or 500ms: {e}"))?;
    Duration::try_from(signed).map_err(|_| "must not be negative".to_owned())
}

fn sample_options(sample: Option<Duration>) -> SampleOptions {
    match sample {
        None => SampleOptions::default(),
        Some(window) => {
            let steps = (window.as_millis() / SAMPLE_INTERVAL.as_millis()).max(2);
            SampleOptions {
                count: u32::try_from(steps + 1).unwrap_or(u32::MAX),
                interval: SAMPLE_INTERVAL,
            }
        }
    }
}

/// JSON/YAML document for one or several nodes: the snapshot itself for one, a list otherwise.
#[derive(serde::Serialize)]
struct NodeEntry<'a> {
    source: &'a str,
    snapshot: &'a model::Snapshot,
}

fn print_structured(nodes: &[NodeSnapshot], format: Format) -> anyhow::Result<bool> {
    let rendered = match nodes {
        [one] => output::structured(&one.snapshot, format)?,
        many => {
            let entries: Vec<NodeEntry<'_>> = many
                .iter()
                .map(|n| NodeEntry {
                    source: &n.source,
                    snapshot: &n.snapshot,
                })
                .collect();
            output::structured(&entries, format)?
        }
    };
    match rendered {
        Some(text) => {
            print!("{text}");
            Ok(true)
        }
        None => Ok(false),
    }
}

pub async fn run(command: NodeCommand, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let source = global.source()?;
    let options = match &command {
        NodeCommand::Show => SampleOptions::default(),
        NodeCommand::Check(args) => sample_options(args.sample),
    };
    let nodes = source::snapshots(&source, options).await?;
    let critical = nodes.iter().any(|n| {
        n.snapshot
            .findings
            .iter()
            .any(|f| f.severity == Severity::Critical)
    });
    if !print_structured(&nodes, global.output)? {
        for node in &nodes {
            match command {
                NodeCommand::Show => print!("{}", render_show(node)),
                NodeCommand::Check(_) => print!("{}", render_check(node)),
            }
        }
    }
    Ok(match command {
        NodeCommand::Check(_) if critical => Outcome::Critical,
        _ => Outcome::Ok,
    })
}

fn render_show(node: &NodeSnapshot) -> String {
    let s = &node.snapshot;
    let mut out = format!("node {}: kernel {}\n", node.source, s.host.kernel_release);
    if s.cards.is_empty() {
        out.push_str("no amdgpu device found\n");
    }
    out
}

fn render_check(node: &NodeSnapshot) -> String {
    let mut out = format!("node {}:\n", node.source);
    for f in &node.snapshot.findings {
        out.push_str(&format!("  {:?} {} {}\n", f.severity, f.id, f.title));
    }
    out
}
