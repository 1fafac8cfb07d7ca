//! `nodectl experiment`: record a strategy tried on a node, list the log, print it as the Markdown table of an investigation.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::context::Context;
use crate::exit::ExitStatus;
use crate::render::{self, Format};
use nodectl_diagnosis::experiments::{self, Experiment};
use nodectl_diagnosis::llama_bench::{self, BenchResult};

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Append one tried strategy (image, environment, arguments, result or diagnosis, bench) to the log.
    Record(RecordArgs),
    /// Print every recorded experiment.
    List(LogArgs),
    /// Print the log as a Markdown table: Strategy | Image | Key changes | Phase reached | Result,
    /// and with bench results the pp and tg tokens/s and their ratio to a baseline.
    Table(TableArgs),
}

/// Which log.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct LogArgs {
    /// The experiment log (default: $XDG_DATA_HOME/nodectl/experiments.jsonl, else
    /// ~/.local/share/nodectl/experiments.jsonl).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// Flags of `nodectl experiment record`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct RecordArgs {
    /// Which log.
    #[command(flatten)]
    pub log: LogArgs,
    /// What was tried: a name of yours, or a strategy id of `diagnose` (`flash_attention_off`).
    #[arg(long, value_name = "NAME")]
    pub strategy: String,
    /// The node it ran on (default: the node of --from-diagnosis).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The container image of the server.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// An environment variable of the server (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// A kernel argument in effect (repeatable): `amdgpu.cwsr_enable=0`.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
    /// An argument of the server (repeatable): `--arg=-fa --arg=off` or `--arg '-fa off'`.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// The result in your words.
    #[arg(long, value_name = "TEXT", required_unless_present = "from_diagnosis")]
    pub result: Option<String>,
    /// A diagnosis of the run (`nodectl diagnose -o json > FILE`): its phase and outcome.
    #[arg(long, value_name = "FILE")]
    pub from_diagnosis: Option<PathBuf>,
    /// llama-bench's output for this setup: its Markdown table, or -o json / -o jsonl.
    #[arg(long, value_name = "FILE")]
    pub bench: Option<PathBuf>,
}

/// Flags of `nodectl experiment table`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct TableArgs {
    /// Which log.
    #[command(flatten)]
    pub log: LogArgs,
    /// The strategy whose bench results the others are compared with (e.g. a Vulkan run);
    /// default: the first one with bench results.
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
}

/// Bytes read of a diagnosis or a llama-bench output: both are a few KiB to a few hundred.
const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

fn read_input(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{what} {}: not UTF-8 text", path.display()))?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_INPUT_BYTES,
        "{what} {}: longer than {} MiB",
        path.display(),
        MAX_INPUT_BYTES >> 20
    );
    Ok(text)
}

fn log_path(log: &LogArgs) -> anyhow::Result<PathBuf> {
    log.file.clone().or_else(experiments::default_path).context(
        "no experiment log named and neither XDG_DATA_HOME nor HOME is set: give --file PATH",
    )
}

pub async fn run(command: ExperimentCommand, ctx: &Context) -> anyhow::Result<ExitStatus> {
    match command {
        ExperimentCommand::Record(args) => record(args, ctx),
        ExperimentCommand::List(args) => list(&args, ctx),
        ExperimentCommand::Table(args) => table(&args, ctx),
    }
}

fn record(args: RecordArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let path = log_path(&args.log)?;
    for setting in &args.env {
        experiments::check_env_setting(setting).map_err(anyhow::Error::msg)?;
    }
    let (diagnosed_node, run) = match &args.from_diagnosis {
        Some(file) => {
            let text = read_input(file, "--from-diagnosis")?;
            let (node, run) = experiments::summary_of_diagnosis(&text)
                .map_err(|e| anyhow::anyhow!("--from-diagnosis {}: {e}", file.display()))?;
            (node, Some(run))
        }
        None => (None, None),
    };
    let bench = match &args.bench {
        Some(file) => {
            let text = read_input(file, "--bench")?;
            llama_bench::parse(&text)
                .map_err(|e| anyhow::anyhow!("--bench {}: {e}", file.display()))?
        }
        None => Vec::new(),
    };
    let experiment = Experiment {
        recorded_at: jiff::Timestamp::now(),
        strategy: args.strategy,
        node: args.node.or(diagnosed_node),
        image: args.image,
        env: args.env,
        kernel_args: args.kernel_args,
        args: args.args,
        result: args.result,
        run,
        bench,
    };
    experiments::append(&path, &experiment)?;
    if !render::print_structured(&experiment, ctx.format)? {
        render::line(format!(
            "recorded {:?} ({}) in {}",
            experiment.strategy,
            experiment.result_text().unwrap_or_default(),
            path.display()
        ))?;
    }
    Ok(ExitStatus::Ok)
}

fn list(args: &LogArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let path = log_path(args)?;
    let records = experiments::read(&path)?;
    if render::print_structured(&records, ctx.format)? {
        return Ok(ExitStatus::Ok);
    }
    if records.is_empty() {
        render::line(format!(
            "no experiments in {} (record one with `nodectl experiment record`)",
            path.display()
        ))?;
        return Ok(ExitStatus::Ok);
    }
    let mut t = render::table(&["#", "RECORDED", "NODE", "STRATEGY", "IMAGE", "RESULT"]);
    for (i, e) in records.iter().enumerate() {
        t.add_row(vec![
            render::cell(&(i + 1).to_string()),
            render::cell(&e.recorded_at.strftime("%Y-%m-%d %H:%M").to_string()),
            render::cell(e.node.as_deref().unwrap_or("-")),
            render::cell(&e.strategy),
            render::cell(e.image.as_deref().unwrap_or("-")),
            render::cell(&e.result_text().unwrap_or_else(|| "-".to_owned())),
        ]);
    }
    render::line(t.to_string())?;
    Ok(ExitStatus::Ok)
}

/// One row of the investigation table.
#[derive(Debug, serde::Serialize)]
struct Row {
    strategy: String,
    image: Option<String>,
    key_changes: String,
    phase_reached: Option<String>,
    result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pp_tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tg_tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pp_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tg_ratio: Option<f64>,
}

fn first(bench: &[BenchResult], pick: fn(&BenchResult) -> bool) -> Option<&BenchResult> {
    bench.iter().find(|b| pick(b))
}

/// A Markdown cell: pipes escaped, lines joined.
fn md(text: &str) -> String {
    let text = render::escape_controls(text);
    text.replace('|', "\\|").replace('\n', " ")
}

fn rows(records: &[Experiment], baseline: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let base = match baseline {
        Some(name) => Some(
            records
                .iter()
                .rev()
                .find(|e| e.strategy == name && !e.bench.is_empty())
                .with_context(|| {
                    format!("--baseline {name:?}: no experiment of that strategy has bench results")
                })?,
        ),
        None => records.iter().find(|e| !e.bench.is_empty()),
    };
    let base_pp = base.and_then(|b| first(&b.bench, BenchResult::is_prompt_processing));
    let base_tg = base.and_then(|b| first(&b.bench, BenchResult::is_generation));
    // Ratios compare the same test only: pp512 with pp512.
    let ratio = |mine: Option<&BenchResult>, theirs: Option<&BenchResult>| match (mine, theirs) {
        (Some(m), Some(t)) if m.test == t.test && t.tokens_per_s > 0.0 => {
            Some(m.tokens_per_s / t.tokens_per_s)
        }
        _ => None,
    };
    Ok(records
        .iter()
        .map(|e| {
            let pp = first(&e.bench, BenchResult::is_prompt_processing);
            let tg = first(&e.bench, BenchResult::is_generation);
            let key_changes = e
                .env
                .iter()
                .chain(&e.kernel_args)
                .chain(&e.args)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            Row {
                strategy: e.strategy.clone(),
                image: e.image.clone(),
                key_changes,
                phase_reached: e.phase_reached(),
                result: e.result_text(),
                pp_tokens_per_s: pp.map(|b| b.tokens_per_s),
                tg_tokens_per_s: tg.map(|b| b.tokens_per_s),
                pp_ratio: ratio(pp, base_pp),
                tg_ratio: ratio(tg, base_tg),
            }
        })
        .collect())
}

fn table(args: &TableArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let path = log_path(&args.log)?;
    let records = experiments::read(&path)?;
    let rows = rows(&records, args.baseline.as_deref())?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        render::print_structured(&rows, ctx.format)?;
        return Ok(ExitStatus::Ok);
    }
    render::emit(&markdown(&records, &rows, args.baseline.as_deref()))?;
    Ok(ExitStatus::Ok)
}

/// The table `experiment table` prints, against the default baseline (for a bundle).
pub fn table_markdown(records: &[Experiment]) -> anyhow::Result<String> {
    let rows = rows(records, None)?;
    Ok(markdown(records, &rows, None))
}

fn markdown(records: &[Experiment], rows: &[Row], baseline: Option<&str>) -> String {
    let with_bench = rows
        .iter()
        .any(|r| r.pp_tokens_per_s.is_some() || r.tg_tokens_per_s.is_some());
    let test_name = |pick: fn(&BenchResult) -> bool, kind: &str| {
        records
            .iter()
            .find_map(|e| first(&e.bench, pick))
            .map_or_else(|| kind.to_owned(), |b| md(&b.test))
    };
    let base_name = baseline.map(str::to_owned).or_else(|| {
        records
            .iter()
            .find(|e| !e.bench.is_empty())
            .map(|e| e.strategy.clone())
    });
    let mut out = String::from("| Strategy | Image | Key changes | Phase reached | Result |");
    if with_bench {
        let base = md(base_name.as_deref().unwrap_or("baseline"));
        let pp = test_name(BenchResult::is_prompt_processing, "pp");
        let tg = test_name(BenchResult::is_generation, "tg");
        out.push_str(&format!(
            " {pp} t/s | {tg} t/s | {pp} vs {base} | {tg} vs {base} |"
        ));
    }
    out.push_str("\n|---|---|---|---|---|");
    if with_bench {
        out.push_str("---:|---:|---:|---:|");
    }
    out.push('\n');
    let number = |n: Option<f64>| n.map_or_else(|| "—".to_owned(), |n| format!("{n:.2}"));
    for row in rows {
        let dash = |s: &Option<String>| s.as_deref().map_or_else(|| "—".to_owned(), md);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |",
            md(&row.strategy),
            dash(&row.image),
            if row.key_changes.is_empty() {
                "—".to_owned()
            } else {
                md(&row.key_changes)
            },
            dash(&row.phase_reached),
            dash(&row.result),
        ));
        if with_bench {
            out.push_str(&format!(
                " {} | {} | {} | {} |",
                number(row.pp_tokens_per_s),
                number(row.tg_tokens_per_s),
                number(row.pp_ratio),
                number(row.tg_ratio)
            ));
        }
        out.push('\n');
    }
    out
}
