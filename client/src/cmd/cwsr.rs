//! `nodectl cwsr status|disable|enable`: amdgpu's `cwsr_enable` on a Talos node, read, planned per boot path, changed and verified.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cmd::talos::ChangeArgs;
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::nodes::Target;
use crate::render::{self, Format};
use crate::talos::factory::{self, DEFAULT_FACTORY_URL, Factory};
use crate::talos::kernel_args::{self, CWSR_KEY, KernelArgument};
use crate::talos::plan::{
    BootPath, KernelArgChange, NodeFacts, ParameterCheck, ParameterExpectation,
};

/// The module parameter amdgpu exposes.
pub const CWSR_PARAMETER_PATH: &str = "/sys/module/amdgpu/parameters/cwsr_enable";

#[derive(Debug, Subcommand)]
pub enum CwsrCommand {
    /// Show the effective and configured cwsr_enable, the boot path, and any pending change.
    Status(StatusArgs),
    /// Boot the node with `amdgpu.cwsr_enable=0` (plan, confirm, apply, wait, verify).
    Disable(ChangeArgs),
    /// Remove `amdgpu.cwsr_enable=0` again (plan, confirm, apply, wait, verify).
    Enable(ChangeArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A nodectl agent on the node (`http://HOST:PORT`, not Talos apid) to read the effective
    /// value from; without it the value is read through Talos.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The Talos node.
    #[command(flatten)]
    pub talos: crate::cli::TalosTarget,
    /// Image Factory that holds the node's schematic (to read the configured value on UKI paths).
    #[arg(long, value_name = "URL", default_value = DEFAULT_FACTORY_URL)]
    pub factory: String,
}

pub async fn run(command: CwsrCommand, ctx: &Context) -> anyhow::Result<ExitStatus> {
    match command {
        CwsrCommand::Status(args) => status(&args, ctx).await,
        CwsrCommand::Disable(args) => change(&args, ctx, true).await,
        CwsrCommand::Enable(args) => change(&args, ctx, false).await,
    }
}

/// `amdgpu.cwsr_enable=0` on (`disable`) or off the command line, read back through the
/// module parameter: `0` when disabled, anything else (the default is 1) when enabled.
pub fn cwsr_change(disable: bool) -> KernelArgChange {
    KernelArgChange {
        argument: kernel_args::cwsr_disabled(),
        present: disable,
        parameter: Some(ParameterCheck {
            path: CWSR_PARAMETER_PATH.to_owned(),
            expect: if disable {
                ParameterExpectation::Equals("0".to_owned())
            } else {
                ParameterExpectation::Differs("0".to_owned())
            },
            required: true,
        }),
    }
}

/// `/proc/cmdline` and amdgpu's `cwsr_enable` as the node agent at `endpoint` sees them (each
/// `None` when the agent reports nothing).
async fn agent_effective(agent: &Target) -> anyhow::Result<(Option<String>, Option<String>)> {
    let mut agent = agent.connect(&Default::default()).await?;
    let snapshot = agent.snapshot(1, Duration::ZERO).await?;
    let cmdline = snapshot
        .host
        .cmdline
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let parameter = snapshot
        .module_parameters
        .amdgpu
        .get("cwsr_enable")
        .map(|p| p.raw().trim().to_owned());
    Ok((cmdline, parameter))
}

/// Whether the running kernel has CWSR off, from the module parameter when amdgpu is loaded,
/// else from the command line.
pub fn effective_disabled(cmdline: Option<&str>, parameter: Option<&str>) -> Option<bool> {
    match parameter {
        Some(value) => Some(value.trim() == "0"),
        None => cmdline.map(|c| kernel_args::cmdline_has(c, &kernel_args::cwsr_disabled())),
    }
}

#[derive(Debug, Serialize)]
pub struct CwsrStatus {
    pub node: String,
    pub talos_version: String,
    pub boot_path: BootPath,
    pub secure_boot: bool,
    pub schematic_id: Option<String>,
    pub extensions: Vec<String>,
    pub effective: Effective,
    pub configured: Configured,
    /// The configured value differs from what the running kernel has (`null` when unknown).
    pub pending_change: Option<bool>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Effective {
    /// `/sys/module/amdgpu/parameters/cwsr_enable` (`null` when amdgpu is not loaded).
    pub cwsr_enable: Option<String>,
    /// The value of `amdgpu.cwsr_enable` on `/proc/cmdline` (`null` when absent).
    pub cmdline_value: Option<String>,
    /// CWSR is off on the running kernel.
    pub cwsr_disabled: Option<bool>,
    pub source: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Configured {
    /// `amdgpu.cwsr_enable=0` is in the kernel arguments the next boot gets.
    pub cwsr_disabled: Option<bool>,
    /// `schematic` or `machine.install.extraKernelArgs`.
    pub source: &'static str,
    pub kernel_args: Vec<String>,
    pub error: Option<String>,
}

async fn status(args: &StatusArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let client = ctx.talos().await?;
    let facts = NodeFacts::read(&client, Some(CWSR_PARAMETER_PATH)).await?;
    let boot_path = facts.boot_path();
    let disabled_arg = kernel_args::cwsr_disabled();
    let mut notes = Vec::new();
    let configured = if boot_path.uses_schematic() {
        match &facts.schematic_id {
            None => Configured {
                cwsr_disabled: None,
                source: "schematic",
                kernel_args: Vec::new(),
                error: Some("the node reports no schematic id".to_owned()),
            },
            Some(id) => {
                match async { Factory::new(&args.factory)?.get_schematic(id).await }.await {
                    Ok(schematic) => {
                        let args = factory::schematic_kernel_args(&schematic);
                        Configured {
                            cwsr_disabled: Some(args.contains(&disabled_arg.render())),
                            source: "schematic",
                            kernel_args: args,
                            error: None,
                        }
                    }
                    Err(e) => Configured {
                        cwsr_disabled: None,
                        source: "schematic",
                        kernel_args: Vec::new(),
                        error: Some(format!("{e:#}")),
                    },
                }
            }
        }
    } else {
        let args = facts.config.extra_kernel_args();
        Configured {
            cwsr_disabled: Some(args.contains(&disabled_arg.render())),
            source: "machine.install.extraKernelArgs",
            kernel_args: args,
            error: None,
        }
    };
    if boot_path.uses_schematic()
        && facts
            .config
            .extra_kernel_args()
            .iter()
            .any(|a| KernelArgument::parse(a).key == CWSR_KEY)
    {
        notes.push(
            "machine.install.extraKernelArgs mentions amdgpu.cwsr_enable, but this boot path ignores it"
                .to_owned(),
        );
    }
    let mut effective_source = "talos-read";
    let mut facts = facts;
    let agent = if ctx.endpoints().is_empty() {
        None
    } else {
        ctx.nodes().await?.targets().into_iter().next()
    };
    if let Some(agent) = &agent {
        match agent_effective(agent).await {
            Ok((cmdline, parameter)) => {
                if cmdline.is_some() || parameter.is_some() {
                    effective_source = "agent";
                }
                facts.cmdline = cmdline.or(facts.cmdline);
                facts.parameter = parameter.or(facts.parameter);
            }
            Err(e) => notes.push(format!(
                "the agent at {} could not be read ({e:#}); the effective value comes from Talos Read", agent.label()
            )),
        }
    }
    if facts.parameter.is_none() {
        notes.push("amdgpu is not loaded (no cwsr_enable parameter): the effective value comes from /proc/cmdline".to_owned());
    }
    let cmdline_disabled = facts
        .cmdline
        .as_deref()
        .map(|c| kernel_args::cmdline_has(c, &disabled_arg));
    let pending_change = match (configured.cwsr_disabled, cmdline_disabled) {
        (Some(c), Some(e)) => Some(c != e),
        _ => None,
    };
    if pending_change == Some(true) {
        notes.push(if boot_path.uses_schematic() {
            "the schematic differs from the running command line: upgrade the node to an installer of that schematic".to_owned()
        } else {
            "extraKernelArgs differs from the running command line: it takes effect only after an upgrade (a same-version upgrade is enough)".to_owned()
        });
    }
    let report = CwsrStatus {
        node: client.node.clone(),
        talos_version: facts.talos_version.clone(),
        boot_path,
        secure_boot: facts.secure_boot,
        schematic_id: facts.schematic_id.clone(),
        extensions: facts.extensions.iter().map(|e| e.name.clone()).collect(),
        effective: Effective {
            cwsr_enable: facts.parameter.clone(),
            cmdline_value: facts.cmdline.as_deref().and_then(|c| {
                kernel_args::cmdline_value(c, CWSR_KEY).map(Option::unwrap_or_default)
            }),
            cwsr_disabled: effective_disabled(facts.cmdline.as_deref(), facts.parameter.as_deref()),
            source: effective_source,
        },
        configured,
        pending_change,
        notes,
    };
    print_status(&report, ctx.format)?;
    Ok(ExitStatus::Ok)
}

fn yes_no(value: Option<bool>, yes: &str, no: &str) -> String {
    match value {
        Some(true) => yes.to_owned(),
        Some(false) => no.to_owned(),
        None => "unknown".to_owned(),
    }
}

fn print_status(report: &CwsrStatus, format: Format) -> anyhow::Result<()> {
    if render::print_structured(report, format)? {
        return Ok(());
    }
    let rows: Vec<(&str, String)> = vec![
        ("node", report.node.clone()),
        ("Talos", report.talos_version.clone()),
        ("boot path", report_boot_path(report.boot_path)),
        (
            "secure boot",
            if report.secure_boot { "yes" } else { "no" }.to_owned(),
        ),
        (
            "schematic",
            report
                .schematic_id
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "extensions",
            if report.extensions.is_empty() {
                "-".to_owned()
            } else {
                report.extensions.join(", ")
            },
        ),
        (
            "effective",
            format!(
                "{} (cwsr_enable={}, /proc/cmdline {})",
                yes_no(
                    report.effective.cwsr_disabled,
                    "CWSR disabled",
                    "CWSR enabled"
                ),
                report.effective.cwsr_enable.as_deref().unwrap_or("n/a"),
                match &report.effective.cmdline_value {
                    Some(v) => format!("has {CWSR_KEY}={v}"),
                    None => format!("has no {CWSR_KEY}"),
                }
            ),
        ),
        (
            "configured",
            match &report.configured.error {
                Some(e) => format!("unknown ({}: {e})", report.configured.source),
                None => format!(
                    "{} (in {})",
                    yes_no(
                        report.configured.cwsr_disabled,
                        "CWSR disabled",
                        "CWSR enabled"
                    ),
                    report.configured.source
                ),
            },
        ),
        ("pending change", yes_no(report.pending_change, "yes", "no")),
    ];
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{key:<15} {value}\n"));
    }
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    render::emit(&out)
}

fn report_boot_path(path: BootPath) -> String {
    path.describe().to_owned()
}

async fn change(args: &ChangeArgs, ctx: &Context, disable: bool) -> anyhow::Result<ExitStatus> {
    args.run(ctx, &cwsr_change(disable)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn boot_paths() {
        assert_eq!(BootPath::decide(true, None), BootPath::Uki);
        assert_eq!(BootPath::decide(true, Some(false)), BootPath::Uki);
        assert_eq!(
            BootPath::decide(false, Some(true)),
            BootPath::GrubUkiCmdline
        );
        assert_eq!(BootPath::decide(false, Some(false)), BootPath::LegacyGrub);
        assert_eq!(BootPath::decide(false, None), BootPath::LegacyGrub);
        assert!(BootPath::Uki.uses_schematic() && !BootPath::LegacyGrub.uses_schematic());
    }

    #[test]
    fn effective_values() {
        let on = "console=tty0";
        let off = "console=tty0 amdgpu.cwsr_enable=0";
        assert_eq!(effective_disabled(Some(off), Some("0")), Some(true));
        assert_eq!(effective_disabled(Some(off), Some("1")), Some(false));
        assert_eq!(effective_disabled(Some(off), None), Some(true));
        assert_eq!(effective_disabled(None, None), None);
        let effective_matches = |cmdline: Option<&str>, parameter: Option<&str>, disabled: bool| {
            cwsr_change(disabled).effective(cmdline, parameter, false)
        };
        assert!(effective_matches(Some(off), Some("0\n"), true));
        assert!(!effective_matches(Some(off), Some("1"), true));
        assert!(!effective_matches(Some(on), Some("0"), true));
        assert!(effective_matches(Some(on), Some("1"), false));
        assert!(effective_matches(Some(on), None, false));
        assert!(!effective_matches(None, Some("1"), false));
    }
}
