//! `nodectl knowledge list|show ID|check PATH`: the knowledge catalog in effect, one entry in full, and a user's files validated as the agent and the diagnosis would use them.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::context::Context;
use crate::exit::ExitStatus;
use crate::render::{self, cell};
use nodectl_model::knowledge::{Entry, Kind, Knowledge};

#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Every entry of the catalog in effect: kind, id, severity, actions, title.
    List(ListArgs),
    /// One id in full (every kind that has it): explanation, references, what to do, its own keys and where it was read.
    Show(ShowArgs),
    /// Validates knowledge files (a TOML file, or a folder of them) over the embedded catalog:
    /// every error with its file and line; exit 2 when there is one.
    Check(CheckArgs),
}

/// Flags of `nodectl knowledge list`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ListArgs {
    /// Only entries of this kind: rule, incident_kind, check, known_issue, strategy.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<Kind>,
}

/// Flags of `nodectl knowledge show`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ShowArgs {
    /// The id, e.g. `mes_timeout` or `cwsr_disable`.
    pub id: String,
}

/// Flags of `nodectl knowledge check`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct CheckArgs {
    /// Knowledge files to check: a TOML file or a folder of them; none checks the shipped catalog.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

fn parse_kind(name: &str) -> Result<Kind, String> {
    Kind::parse(name).ok_or_else(|| {
        format!(
            "no kind `{name}`; one of {}",
            Kind::ALL.map(Kind::as_str).join(", ")
        )
    })
}

pub async fn run(command: KnowledgeCommand, ctx: &Context) -> anyhow::Result<ExitStatus> {
    match command {
        KnowledgeCommand::List(args) => list(&args, ctx),
        KnowledgeCommand::Show(args) => show(&args, ctx),
        KnowledgeCommand::Check(args) => check(&args, ctx),
    }
}

/// The embedded catalog overlaid with `paths`, checked as a whole: cross-references (the model),
/// rules and checks (the agent), known issues and strategies (the diagnosis). Every problem is
/// one line naming its file and line.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Knowledge> {
    let knowledge = Knowledge::load(paths)?;
    let mut problems = nodectl_agent::knowledge::problems(&knowledge);
    if let Err(e) = nodectl_diagnosis::catalog::Catalog::from_knowledge(&knowledge) {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(knowledge)
    } else {
        anyhow::bail!("{}", problems.join("\n"))
    }
}

fn current() -> anyhow::Result<std::borrow::Cow<'static, Knowledge>> {
    Ok(Knowledge::current()?)
}

fn severity(entry: &Entry) -> &'static str {
    entry.severity.map_or("", |s| s.as_str())
}

fn list(args: &ListArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let knowledge = current()?;
    let entries: Vec<&Entry> = knowledge
        .entries()
        .iter()
        .filter(|e| !e.wording && args.kind.is_none_or(|k| k == e.kind))
        .collect();
    if render::print_structured(&entries, ctx.format)? {
        return Ok(ExitStatus::Ok);
    }
    let mut table =
        render::table_wrapping(&["KIND", "ID", "SEVERITY", "ACTIONS", "TITLE"], &[3, 4]);
    for e in &entries {
        table.add_row(vec![
            e.kind.to_string(),
            cell(&e.id),
            severity(e).to_owned(),
            cell(&e.actions.join(", ")),
            cell(&e.title),
        ]);
    }
    render::emit(&format!("{table}\n"))?;
    Ok(ExitStatus::Ok)
}

/// An entry as `show -o json` prints it: the row, and its actions' text.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    what_to_do: Vec<Action<'a>>,
}

#[derive(Debug, Serialize)]
struct Action<'a> {
    strategy: &'a str,
    action: &'a str,
}

fn show(args: &ShowArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let knowledge = current()?;
    let shown: Vec<Shown<'_>> = knowledge
        .entries()
        .iter()
        .filter(|e| e.id == args.id && !e.wording)
        .map(|entry| Shown {
            entry,
            what_to_do: entry
                .actions
                .iter()
                .filter_map(|id| {
                    Some(Action {
                        strategy: id,
                        action: knowledge.action_of(id)?,
                    })
                })
                .collect(),
        })
        .collect();
    if shown.is_empty() {
        anyhow::bail!(
            "no knowledge entry `{}` (nodectl knowledge list shows every id)",
            args.id
        );
    }
    if render::print_structured(&shown, ctx.format)? {
        return Ok(ExitStatus::Ok);
    }
    let mut text = String::new();
    for (n, s) in shown.iter().enumerate() {
        let e = s.entry;
        if n > 0 {
            text.push('\n');
        }
        let severity = e
            .severity
            .map(|s| format!(" ({})", s.as_str()))
            .unwrap_or_default();
        text.push_str(&format!("{} {}{severity}\n", e.kind, cell(&e.id)));
        text.push_str(&format!("  {}\n", cell(&e.title)));
        if !e.explanation.is_empty() {
            text.push_str(&format!("\n  {}\n", cell(&e.explanation)));
        }
        if !s.what_to_do.is_empty() {
            text.push_str("\nWhat to do, best first:\n");
            for (i, a) in s.what_to_do.iter().enumerate() {
                text.push_str(&format!(
                    "  {}. {} ({})\n",
                    i + 1,
                    cell(a.action),
                    a.strategy
                ));
            }
        }
        if let Some(action) = e.text("action") {
            text.push_str(&format!("\nWhat to do:\n  {}\n", cell(action)));
        }
        if !e.references.is_empty() {
            text.push_str("\nReferences:\n");
            for r in &e.references {
                text.push_str(&format!("  {}\n", cell(r)));
            }
        }
        let mut keys = e.body.clone();
        keys.remove("action");
        let keys = toml::to_string(&keys).unwrap_or_default();
        if !keys.trim().is_empty() {
            let wordings = knowledge
                .entries()
                .iter()
                .filter(|w| w.kind == e.kind && w.id == e.id)
                .count();
            let of = if wordings > 1 {
                format!(" (the first of {wordings} wordings)")
            } else {
                String::new()
            };
            text.push_str(&format!("\nIts own keys{of}:\n"));
            for line in keys.trim_end().lines() {
                text.push_str(&format!("  {}\n", cell(line)));
            }
        }
        text.push_str(&format!("\nRead from {}\n", e.at));
    }
    render::emit(&text)?;
    Ok(ExitStatus::Ok)
}

#[derive(Debug, Serialize)]
struct Checked {
    files: Vec<String>,
    entries: usize,
}

fn check(args: &CheckArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let knowledge = load(&args.paths)?;
    let checked = Checked {
        files: knowledge.files.clone(),
        entries: knowledge.entries().iter().filter(|e| !e.wording).count(),
    };
    if render::print_structured(&checked, ctx.format)? {
        return Ok(ExitStatus::Ok);
    }
    render::line(format!(
        "ok: {} entries from {} files ({})",
        checked.entries,
        checked.files.len(),
        checked.files.join(", ")
    ))?;
    Ok(ExitStatus::Ok)
}
