//! `nodectl cwsr status|disable|enable`: amdgpu's `cwsr_enable` on a Talos node, read, planned per boot path, changed and verified.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::api::{ApplyMode, Extension, SCHEMATIC_EXTENSION, TalosClient};
use super::factory::{self, DEFAULT_FACTORY_URL, Factory};
use super::kernel_args::{self, CWSR_KEY, KernelArg};
use super::machine_config::{MachineConfig, unified_diff, write_documents};
use super::talosconfig;
use super::workflow::{self, DEFAULT_TIMEOUT, Waited};
use crate::cli::GlobalArgs;
use crate::exit::Outcome;
use crate::output::{self, Format};

/// The module parameter amdgpu exposes.
pub const CWSR_PARAMETER_PATH: &str = "/sys/module/amdgpu/parameters/cwsr_enable";
pub const CMDLINE_PATH: &str = "/proc/cmdline";

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
    /// Image Factory that holds the node's schematic (to read the configured value on UKI paths).
    #[arg(long, value_name = "URL", default_value = DEFAULT_FACTORY_URL)]
    pub factory: String,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Print the plan (and apid's dry-run answer where there is one) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Image Factory to post the schematic to and take the installer from.
    #[arg(long, value_name = "URL", default_value = DEFAULT_FACTORY_URL)]
    pub factory: String,
    /// How long to wait for the node to reboot and come back (e.g. 30s, 15m).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = workflow::parse_timeout)]
    pub timeout: Duration,
}

pub async fn run(command: CwsrCommand, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    match command {
        CwsrCommand::Status(args) => status(&args, global).await,
        CwsrCommand::Disable(args) => change(&args, global, true).await,
        CwsrCommand::Enable(args) => change(&args, global, false).await,
    }
}

/// How the node boots, which decides how a kernel argument reaches its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootPath {
    /// systemd-boot with a UKI: the command line is inside the UKI (Image Factory schematic).
    Uki,
    /// GRUB taking the command line from the UKI (`grubUseUKICmdline: true`).
    GrubUkiCmdline,
    /// GRUB building the command line from `machine.install.extraKernelArgs` at install/upgrade.
    LegacyGrub,
}

impl BootPath {
    pub fn decide(booted_with_uki: bool, grub_use_uki_cmdline: Option<bool>) -> BootPath {
        if booted_with_uki {
            BootPath::Uki
        } else if grub_use_uki_cmdline == Some(true) {
            BootPath::GrubUkiCmdline
        } else {
            BootPath::LegacyGrub
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            BootPath::Uki => {
                "systemd-boot/UKI (kernel arguments come from the Image Factory schematic)"
            }
            BootPath::GrubUkiCmdline => {
                "GRUB with grubUseUKICmdline (kernel arguments come from the Image Factory schematic)"
            }
            BootPath::LegacyGrub => {
                "legacy GRUB (kernel arguments come from machine.install.extraKernelArgs, applied on upgrade)"
            }
        }
    }

    pub fn uses_schematic(self) -> bool {
        !matches!(self, BootPath::LegacyGrub)
    }
}

/// What the node says about itself, read in one go.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub talos_version: String,
    pub booted_with_uki: bool,
    /// Booted with secure boot: the installer must be the signed `-secureboot` one.
    pub secure_boot: bool,
    pub config: MachineConfig,
    pub schematic_id: Option<String>,
    pub extensions: Vec<Extension>,
    pub cmdline: Option<String>,
    pub cwsr_parameter: Option<String>,
}

impl NodeFacts {
    pub async fn read(client: &TalosClient) -> anyhow::Result<NodeFacts> {
        let talos_version = client.version().await?;
        let security = client.security_state().await?;
        let booted_with_uki = security.as_ref().is_some_and(|s| s.booted_with_uki);
        let secure_boot = security.as_ref().is_some_and(|s| s.secure_boot);
        let config_yaml = client.machine_config().await?;
        let config = MachineConfig::parse(&config_yaml, "the node's machine configuration")?;
        let all = client.extensions().await?;
        let schematic_id = all
            .iter()
            .find(|e| e.name == SCHEMATIC_EXTENSION)
            .map(|e| e.version.clone())
            .filter(|v| !v.is_empty());
        let extensions = all
            .into_iter()
            .filter(|e| e.name != SCHEMATIC_EXTENSION)
            .collect();
        let (cmdline, cwsr_parameter) = read_effective(client).await?;
        Ok(NodeFacts {
            talos_version,
            booted_with_uki,
            secure_boot,
            config,
            schematic_id,
            extensions,
            cmdline,
            cwsr_parameter,
        })
    }

    pub fn boot_path(&self) -> BootPath {
        BootPath::decide(self.booted_with_uki, self.config.grub_use_uki_cmdline())
    }
}

/// `/proc/cmdline` and amdgpu's `cwsr_enable` (each `None` when the node has no such file).
async fn read_effective(client: &TalosClient) -> anyhow::Result<(Option<String>, Option<String>)> {
    let cmdline = client.read_text(CMDLINE_PATH).await?;
    let parameter = client.read_text(CWSR_PARAMETER_PATH).await?;
    Ok((cmdline, parameter))
}

/// `/proc/cmdline` and amdgpu's `cwsr_enable` as the node agent at `endpoint` sees them (each
/// `None` when the agent reports nothing).
async fn agent_effective(endpoint: &str) -> anyhow::Result<(Option<String>, Option<String>)> {
    let mut agent = crate::source::connect(endpoint).await?;
    let snapshot = agent
        .get_snapshot(nodectl_proto::nodectl::v1::GetSnapshotRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!("GetSnapshot: {}", s.message()))?
        .into_inner();
    let cmdline = snapshot
        .host
        .map(|h| h.cmdline.trim().to_owned())
        .filter(|c| !c.is_empty());
    let parameter = snapshot
        .amdgpu_parameters
        .get("cwsr_enable")
        .map(|p| p.raw.trim().to_owned());
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

/// The node's state with respect to the wanted value: both the parameter (when readable) and
/// the command line agree with it.
pub fn effective_matches(cmdline: Option<&str>, parameter: Option<&str>, disabled: bool) -> bool {
    let cmdline_ok = cmdline
        .is_some_and(|c| kernel_args::cmdline_has(c, &kernel_args::cwsr_disabled()) == disabled);
    let parameter_ok = parameter.is_none_or(|p| (p.trim() == "0") == disabled);
    cmdline_ok && parameter_ok
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

async fn connect(global: &GlobalArgs) -> anyhow::Result<TalosClient> {
    let ctx = talosconfig::load(global.talosconfig.as_deref(), global.context.as_deref())?;
    TalosClient::connect(&ctx, global.node.as_deref()).await
}

async fn status(args: &StatusArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let client = connect(global).await?;
    let facts = NodeFacts::read(&client).await?;
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
            .any(|a| KernelArg::parse(a).key == CWSR_KEY)
    {
        notes.push(
            "machine.install.extraKernelArgs mentions amdgpu.cwsr_enable, but this boot path ignores it"
                .to_owned(),
        );
    }
    let mut effective_source = "talos-read";
    let mut facts = facts;
    if let Some(endpoint) = global.endpoint.first() {
        match agent_effective(endpoint).await {
            Ok((cmdline, parameter)) => {
                if cmdline.is_some() || parameter.is_some() {
                    effective_source = "agent";
                }
                facts.cmdline = cmdline.or(facts.cmdline);
                facts.cwsr_parameter = parameter.or(facts.cwsr_parameter);
            }
            Err(e) => notes.push(format!(
                "the agent at {endpoint} could not be read ({e:#}); the effective value comes from Talos Read"
            )),
        }
    }
    if facts.cwsr_parameter.is_none() {
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
            cwsr_enable: facts.cwsr_parameter.clone(),
            cmdline_value: facts.cmdline.as_deref().and_then(|c| {
                kernel_args::cmdline_value(c, CWSR_KEY).map(Option::unwrap_or_default)
            }),
            cwsr_disabled: effective_disabled(
                facts.cmdline.as_deref(),
                facts.cwsr_parameter.as_deref(),
            ),
            source: effective_source,
        },
        configured,
        pending_change,
        notes,
    };
    print_status(&report, global.output)?;
    Ok(Outcome::Ok)
}

fn yes_no(value: Option<bool>, yes: &str, no: &str) -> String {
    match value {
        Some(true) => yes.to_owned(),
        Some(false) => no.to_owned(),
        None => "unknown".to_owned(),
    }
}

fn print_status(report: &CwsrStatus, format: Format) -> anyhow::Result<()> {
    if let Some(text) = output::structured(report, format)? {
        print!("{text}");
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
    for (key, value) in rows {
        println!("{key:<15} {value}");
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    Ok(())
}

fn report_boot_path(path: BootPath) -> String {
    path.describe().to_owned()
}

async fn change(args: &ChangeArgs, global: &GlobalArgs, disable: bool) -> anyhow::Result<Outcome> {
    let wanted = if disable { "disabled" } else { "enabled" };
    let client = connect(global).await?;
    let facts = NodeFacts::read(&client).await?;
    let boot_path = facts.boot_path();
    let arg = kernel_args::cwsr_disabled();
    println!("node {} (Talos {})", client.node, facts.talos_version);
    println!("boot path: {}", boot_path.describe());
    println!(
        "now: {} (cwsr_enable={}, /proc/cmdline {} {})",
        yes_no(
            effective_disabled(facts.cmdline.as_deref(), facts.cwsr_parameter.as_deref()),
            "CWSR disabled",
            "CWSR enabled"
        ),
        facts
            .cwsr_parameter
            .as_deref()
            .unwrap_or("n/a (amdgpu not loaded)"),
        if facts
            .cmdline
            .as_deref()
            .is_some_and(|c| kernel_args::cmdline_has(c, &arg))
        {
            "has"
        } else {
            "lacks"
        },
        arg.render()
    );
    let effective_ok = effective_matches(
        facts.cmdline.as_deref(),
        facts.cwsr_parameter.as_deref(),
        disable,
    );
    let factory = Factory::new(&args.factory)?;
    let current_schematic = facts.schematic_id.clone().with_context(|| {
        format!(
            "node {}: no schematic id (the `schematic` extension is missing), so the installer image cannot be named; upgrade the node once to a factory installer first",
            client.node
        )
    })?;

    // Plan.
    let plan = if boot_path.uses_schematic() {
        let schematic = factory.get_schematic(&current_schematic).await?;
        let mut edited = schematic.clone();
        let changed = factory::set_schematic_kernel_arg(&mut edited, &arg, disable)?;
        if !changed && effective_ok {
            println!(
                "CWSR is already {wanted} on node {} and in its schematic {current_schematic}: nothing to do",
                client.node
            );
            return Ok(Outcome::Ok);
        }
        println!("plan:");
        if changed {
            let old = write_documents(std::slice::from_ref(&schematic))?;
            let new = write_documents(std::slice::from_ref(&edited))?;
            println!(
                "  1. post the edited schematic to {}/schematics (every extension kept):",
                factory.url()
            );
            print_indented(&unified_diff(
                &old,
                &new,
                &format!("schematic {current_schematic}"),
                "new schematic",
            ));
            println!(
                "  2. upgrade the node to {}",
                factory.installer_image(
                    "<new schematic id>",
                    &facts.talos_version,
                    facts.secure_boot
                )
            );
        } else {
            println!(
                "  1. the schematic already {} {}; the running kernel does not reflect it yet",
                if disable { "has" } else { "lacks" },
                arg.render()
            );
            println!(
                "  2. upgrade the node to {}",
                factory.installer_image(
                    &current_schematic,
                    &facts.talos_version,
                    facts.secure_boot
                )
            );
        }
        println!(
            "  3. wait for the reboot (up to {}s), then read back /proc/cmdline and cwsr_enable",
            args.timeout.as_secs()
        );
        Plan::Schematic { edited, changed }
    } else {
        let mut edited = facts.config.clone();
        let changed = edited.set_extra_kernel_arg(&arg, disable)?;
        if !changed && effective_ok {
            println!(
                "CWSR is already {wanted} on node {} and in machine.install.extraKernelArgs: nothing to do",
                client.node
            );
            return Ok(Outcome::Ok);
        }
        let image =
            factory.installer_image(&current_schematic, &facts.talos_version, facts.secure_boot);
        println!("plan:");
        let mut step = 1;
        if changed {
            println!(
                "  {step}. apply the machine configuration with mode no-reboot (the full configuration; diff below)"
            );
            print_indented(&unified_diff(
                &facts.config.to_yaml()?,
                &edited.to_yaml()?,
                "running configuration",
                "new configuration",
            ));
            println!(
                "     this changes only the configuration: GRUB's command line changes at the upgrade below"
            );
            step += 1;
        } else {
            println!(
                "  {step}. machine.install.extraKernelArgs already {} {}; the running kernel does not reflect it yet",
                if disable { "has" } else { "lacks" },
                arg.render()
            );
            step += 1;
        }
        println!(
            "  {step}. upgrade the node to {image} (the same Talos version and schematic: a no-op upgrade that rewrites the GRUB command line)"
        );
        step += 1;
        println!(
            "  {step}. wait for the reboot (up to {}s), then read back /proc/cmdline and cwsr_enable",
            args.timeout.as_secs()
        );
        Plan::ExtraKernelArgs {
            edited,
            changed,
            image,
        }
    };

    if args.dry_run {
        if let Plan::ExtraKernelArgs {
            edited,
            changed: true,
            ..
        } = &plan
        {
            let answer = client
                .apply_configuration(&edited.to_yaml()?, ApplyMode::NoReboot, true)
                .await?;
            println!("apid dry run:");
            print_indented(&super::api::dry_run_summary(&answer.mode_details));
            for warning in &answer.warnings {
                println!("  warning: {warning}");
            }
        }
        println!("dry run: nothing was changed");
        return Ok(Outcome::Ok);
    }
    if !workflow::confirm(
        args.yes,
        &format!(
            "{} CWSR on node {}?",
            if disable { "Disable" } else { "Enable" },
            client.node
        ),
    )? {
        println!("not confirmed: nothing was changed");
        return Ok(Outcome::Ok);
    }

    // Execute.
    let image = match plan {
        Plan::Schematic { edited, changed } => {
            let id = if changed {
                let id = factory.post_schematic(&edited).await?;
                println!("posted the schematic: id {id}");
                id
            } else {
                current_schematic
            };
            factory.installer_image(&id, &facts.talos_version, facts.secure_boot)
        }
        Plan::ExtraKernelArgs {
            edited,
            changed,
            image,
        } => {
            if changed {
                let answer = client
                    .apply_configuration(&edited.to_yaml()?, ApplyMode::NoReboot, false)
                    .await?;
                println!("configuration accepted: {}", answer.mode_details.trim());
                for warning in &answer.warnings {
                    println!("  warning: {warning}");
                }
                println!(
                    "  machine.install.extraKernelArgs now {} {}, but the running kernel does NOT reflect it: it takes effect with the upgrade that follows",
                    if disable { "has" } else { "lacks" },
                    arg.render()
                );
            }
            image
        }
    };
    let ack = client.upgrade(&image).await?;
    println!(
        "upgrade to {image} accepted{}; the node reboots",
        if ack.is_empty() {
            String::new()
        } else {
            format!(" ({ack})")
        }
    );
    eprintln!(
        "waiting for node {} (up to {}s):",
        client.node,
        args.timeout.as_secs()
    );
    let waited = workflow::wait_for_node(&client, args.timeout, async |c: &TalosClient| {
        let (cmdline, parameter) = read_effective(c).await?;
        Ok(cmdline.is_some()
            && parameter.is_some()
            && effective_matches(cmdline.as_deref(), parameter.as_deref(), disable))
    })
    .await?;
    let client = match waited {
        Waited::Done(c) | Waited::BackWithoutChange(c) | Waited::NeverWentDown(c) => c,
    };
    let (cmdline, parameter) = read_effective(&client).await?;
    let cmdline_ok = cmdline
        .as_deref()
        .is_some_and(|c| kernel_args::cmdline_has(c, &arg) == disable);
    let parameter_ok = parameter
        .as_deref()
        .is_some_and(|p| (p.trim() == "0") == disable);
    println!(
        "read back: /proc/cmdline {} {}; cwsr_enable={}",
        if cmdline
            .as_deref()
            .is_some_and(|c| kernel_args::cmdline_has(c, &arg))
        {
            "has"
        } else {
            "lacks"
        },
        arg.render(),
        parameter.as_deref().unwrap_or("n/a (amdgpu not loaded)")
    );
    if cmdline_ok && parameter_ok {
        println!("verified: CWSR is {wanted} on node {}", client.node);
        Ok(Outcome::Ok)
    } else {
        println!(
            "NOT verified: CWSR is not {wanted} on node {} after the upgrade{}",
            client.node,
            if parameter.is_none() {
                " (amdgpu is not loaded, so cwsr_enable cannot be read)"
            } else {
                ""
            }
        );
        Ok(Outcome::Critical)
    }
}

enum Plan {
    Schematic {
        edited: serde_json::Value,
        changed: bool,
    },
    ExtraKernelArgs {
        edited: MachineConfig,
        changed: bool,
        image: String,
    },
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("     {line}");
    }
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
        assert!(effective_matches(Some(off), Some("0\n"), true));
        assert!(!effective_matches(Some(off), Some("1"), true));
        assert!(!effective_matches(Some(on), Some("0"), true));
        assert!(effective_matches(Some(on), Some("1"), false));
        assert!(effective_matches(Some(on), None, false));
        assert!(!effective_matches(None, Some("1"), false));
    }
}
