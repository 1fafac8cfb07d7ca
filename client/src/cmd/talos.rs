//! `nodectl talos kernel-arg set|remove ARG` (a kernel argument through the node's boot path) and `nodectl talos apply-patch FILE...` (any machine-config patch): planned, confirmed, applied and read back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use nodectl_model::KernelArgument;

use crate::context::Context;
use crate::exit::ExitStatus;
use crate::render::{self, Format};
use crate::talos::api::{ApplyMode, TalosClient};
use crate::talos::factory::{DEFAULT_FACTORY_URL, Factory};
use crate::talos::machine_config::{MachineConfig, Patch};
use crate::talos::plan::{
    self, ApidDryRun, Execution, KernelArgChange, ParameterCheck, ParameterExpectation, PatchPlan,
    Progress, module_parameter_path,
};
use crate::talos::workflow::{self, DEFAULT_TIMEOUT, Waited};

/// Prints one line on standard output (a closed pipe ends the command quietly).
macro_rules! out {
    ($($arg:tt)*) => {
        render::line(format!($($arg)*))?
    };
}

#[derive(Debug, Subcommand)]
pub enum TalosCommand {
    /// Apply strategic-merge or JSON6902 patches to the node's machine configuration.
    ApplyPatch(ApplyPatchArgs),
    /// Set or remove a kernel argument through the node's boot path (Image Factory schematic
    /// on systemd-boot/UKI and grubUseUKICmdline, extraKernelArgs on legacy GRUB).
    #[command(subcommand)]
    KernelArg(KernelArgCommand),
}

#[derive(Debug, Subcommand)]
pub enum KernelArgCommand {
    /// Boot the node with ARG (`amdgpu.gpu_recovery=1`); other values of its key are dropped.
    Set(KernelArgArgs),
    /// Boot the node without ARG (`KEY=VALUE`, or `KEY` for every value of it).
    Remove(KernelArgArgs),
}

#[derive(Debug, Args)]
pub struct KernelArgArgs {
    /// The argument, as on a kernel command line: `amdgpu.gpu_recovery=1`, `amd_iommu=off`.
    #[arg(value_name = "ARG")]
    pub argument: String,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// How a boot-path change is carried out (`cwsr disable|enable`, `talos kernel-arg`).
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// The Talos node.
    #[command(flatten)]
    pub talos: crate::cli::TalosTarget,
    /// Print the plan (and apid's dry-run answer where there is one) and change nothing;
    /// with `-o json` the plan is printed as JSON.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Image Factory to post the schematic to and take the installer from.
    #[arg(long, value_name = "URL", default_value = DEFAULT_FACTORY_URL)]
    pub factory: String,
    /// How long to wait for the node to reboot and come back (e.g. 30s, 15m).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

impl ChangeArgs {
    /// Plans, confirms, executes and verifies `change` on the context's Talos node.
    pub async fn run(&self, ctx: &Context, change: &KernelArgChange) -> anyhow::Result<ExitStatus> {
        let client = ctx.talos().await?;
        let factory = Factory::new(&self.factory)?;
        plan::change_kernel_arg(
            &client,
            &factory,
            change,
            Execution {
                dry_run: self.dry_run,
                yes: self.yes,
                timeout: self.timeout,
                format: ctx.format,
            },
        )
        .await
    }
}

/// The change `talos kernel-arg set|remove ARG` asks for. A module parameter (`amdgpu.NAME`)
/// is read back too after `set`; its value after `remove` is the module's default, unknown here.
pub fn kernel_arg_change(text: &str, present: bool) -> anyhow::Result<KernelArgChange> {
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains('"') {
        anyhow::bail!(
            "ARG `{text}`: one argument without spaces or quotes, like amdgpu.gpu_recovery=1"
        );
    }
    let argument = KernelArgument::parse(text);
    if argument.key.is_empty() {
        anyhow::bail!("ARG `{text}`: the key left of `=` is empty");
    }
    let parameter = match (&argument.value, present) {
        (Some(value), true) => module_parameter_path(&argument.key).map(|path| ParameterCheck {
            path,
            expect: ParameterExpectation::Equals(value.clone()),
            required: false,
        }),
        _ => None,
    };
    Ok(KernelArgChange {
        argument,
        present,
        parameter,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatchMode {
    /// apid decides: without a reboot when it can, else with one.
    Auto,
    /// Only changes that apply without a reboot (refused otherwise).
    NoReboot,
    /// Persist for the next reboot; the running configuration stays.
    Staged,
    /// In memory only, reverted automatically after a minute unless a later apply confirms it.
    Try,
}

impl PatchMode {
    /// The flag's spelling: `no-reboot`.
    fn name(self) -> &'static str {
        match self {
            PatchMode::Auto => "auto",
            PatchMode::NoReboot => "no-reboot",
            PatchMode::Staged => "staged",
            PatchMode::Try => "try",
        }
    }

    fn wire(self) -> ApplyMode {
        match self {
            PatchMode::Auto => ApplyMode::Auto,
            PatchMode::NoReboot => ApplyMode::NoReboot,
            PatchMode::Staged => ApplyMode::Staged,
            PatchMode::Try => ApplyMode::Try,
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyPatchArgs {
    /// The Talos node.
    #[command(flatten)]
    pub talos: crate::cli::TalosTarget,
    /// Patch files, applied in order (strategic merge YAML or JSON6902 JSON/YAML).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// How apid applies the configuration (never `reboot`).
    #[arg(long, value_enum, default_value_t = PatchMode::Auto)]
    pub mode: PatchMode,
    /// Print the plan and apid's dry-run answer; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long to wait when apid reboots the node (e.g. 30s, 15m).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(command: TalosCommand, ctx: &Context) -> anyhow::Result<ExitStatus> {
    match command {
        TalosCommand::ApplyPatch(args) => apply_patch(&args, ctx).await,
        TalosCommand::KernelArg(KernelArgCommand::Set(args)) => {
            let change = kernel_arg_change(&args.argument, true)?;
            args.change.run(ctx, &change).await
        }
        TalosCommand::KernelArg(KernelArgCommand::Remove(args)) => {
            let change = kernel_arg_change(&args.argument, false)?;
            args.change.run(ctx, &change).await
        }
    }
}

/// Parts of the config whose change apid accepts without a reboot but which act only later.
fn delayed_effect_notes(old: &MachineConfig, new: &MachineConfig) -> Vec<&'static str> {
    let at = |cfg: &MachineConfig, pointer: &str| {
        cfg.v1alpha1().and_then(|d| d.pointer(pointer)).cloned()
    };
    let mut notes = Vec::new();
    if at(old, "/machine/install/extraKernelArgs") != at(new, "/machine/install/extraKernelArgs") {
        notes.push("machine.install.extraKernelArgs changes act only after an upgrade (a same-version upgrade is enough) and never on systemd-boot/UKI or with grubUseUKICmdline: use `nodectl cwsr` or an Image Factory schematic there");
    }
    if at(old, "/machine/kernel") != at(new, "/machine/kernel") {
        notes.push("machine.kernel changes act only when the module is next loaded (a reboot); amdgpu is loaded by udev before the configuration, so its parameters here are ignored");
    }
    if at(old, "/machine/install") != at(new, "/machine/install") {
        notes.push("machine.install changes act only at the next install or upgrade");
    }
    notes.dedup();
    notes
}

/// The document `-o json|yaml` prints for `talos apply-patch`.
#[derive(Debug, serde::Serialize)]
struct PatchReport {
    plan: PatchPlan,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    apid_dry_run: Option<ApidDryRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<PatchResult>,
}

/// How an applied patch was read back.
#[derive(Debug, serde::Serialize)]
struct PatchResult {
    verified: bool,
    detail: String,
}

async fn apply_patch(args: &ApplyPatchArgs, ctx: &Context) -> anyhow::Result<ExitStatus> {
    let mut patches = Vec::new();
    for file in &args.files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read patch {}", file.display()))?;
        patches.push(Patch::parse(&text, &file.display().to_string())?);
    }
    let client = ctx.talos().await?;
    let running_yaml = client.machine_config().await?;
    let running = MachineConfig::parse(&running_yaml, "the node's machine configuration")?;
    let mut patched = running.clone();
    for (patch, file) in patches.iter().zip(&args.files) {
        patched
            .apply(patch)
            .with_context(|| format!("patch {}", file.display()))?;
    }
    let notes = delayed_effect_notes(&running, &patched)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let plan = plan::plan_patch(
        &client.node,
        args.files.iter().map(|f| f.display().to_string()).collect(),
        args.mode.name(),
        &running,
        patched.clone(),
        notes,
    )?;
    let progress = Progress::new(ctx.format);
    let mut report = PatchReport {
        plan,
        dry_run: args.dry_run,
        apid_dry_run: None,
        result: None,
    };
    if ctx.format == Format::Table {
        render::emit(&plan::render_patch_plan(&report.plan))?;
    }
    if report.plan.up_to_date {
        render::print_structured(&report, ctx.format)?;
        return Ok(ExitStatus::Ok);
    }
    let new_yaml = patched.to_yaml()?;
    if args.dry_run {
        let answer = client
            .apply_configuration(&new_yaml, args.mode.wire(), true)
            .await?;
        let dry = ApidDryRun {
            summary: crate::talos::api::dry_run_summary(&answer.mode_details),
            warnings: answer.warnings,
        };
        if !render::print_structured(
            &PatchReport {
                apid_dry_run: Some(dry.clone()),
                ..report
            },
            ctx.format,
        )? {
            out!("apid dry run:");
            render::emit(&render::indented(&dry.summary, 5))?;
            out!("dry run: nothing was changed");
        }
        return Ok(ExitStatus::Ok);
    }
    if !workflow::confirm(args.yes, &format!("Apply to node {}?", client.node))? {
        progress.say("not confirmed: nothing was changed")?;
        return Ok(ExitStatus::Ok);
    }
    let result = execute_patch(
        &client,
        args,
        &running,
        &patched,
        &new_yaml,
        &report.plan,
        &progress,
    )
    .await?;
    progress.say(&result.detail)?;
    let outcome = if result.verified {
        ExitStatus::Ok
    } else {
        ExitStatus::Critical
    };
    report.result = Some(result);
    render::print_structured(&report, ctx.format)?;
    Ok(outcome)
}

/// Applies the patched configuration and reads it back as the mode apid chose requires.
async fn execute_patch(
    client: &TalosClient,
    args: &ApplyPatchArgs,
    running: &MachineConfig,
    patched: &MachineConfig,
    new_yaml: &str,
    plan: &PatchPlan,
    progress: &Progress,
) -> anyhow::Result<PatchResult> {
    let answer = client
        .apply_configuration(new_yaml, args.mode.wire(), false)
        .await?;
    progress.say(format!("applied: {}", answer.mode_details.trim()))?;
    for warning in &answer.warnings {
        progress.say(format!("  warning: {warning}"))?;
    }
    if !plan.notes.is_empty() {
        progress.say("  accepted, but not all of it is effective yet (see the notes above)")?;
    }

    let client = if answer.mode == ApplyMode::Reboot {
        eprintln!(
            "apid reboots the node to apply this; waiting (up to {}s):",
            args.timeout.as_secs()
        );
        match workflow::wait_for_node(client, args.timeout, async |c: &TalosClient| {
            config_matches(c, "v1alpha1", patched).await
        })
        .await?
        {
            Waited::Done(c) | Waited::BackWithoutChange(c) | Waited::NeverWentDown(c) => c,
        }
    } else {
        client.clone()
    };
    let result = |verified: bool, detail: &str| PatchResult {
        verified,
        detail: detail.to_owned(),
    };

    if answer.mode == ApplyMode::Staged {
        let running_now = client.machine_config().await?;
        let unchanged =
            MachineConfig::parse(&running_now, "the node's machine configuration")? == *running;
        return Ok(match client.machine_config_by_id("persistent").await {
            Ok(Some(persisted)) => {
                if MachineConfig::parse(&persisted, "persisted configuration")? == *patched {
                    result(
                        true,
                        "verified: the configuration is staged; it takes effect at the next reboot",
                    )
                } else {
                    result(
                        false,
                        "NOT verified: the persisted configuration is not the one sent",
                    )
                }
            }
            _ if unchanged => result(
                true,
                "staged: it takes effect at the next reboot; the running configuration is unchanged, as expected (the staged one cannot be read back here)",
            ),
            _ => result(
                false,
                "NOT verified: the running configuration changed although the mode was staged",
            ),
        });
    }
    Ok(if config_matches(&client, "v1alpha1", patched).await? {
        if answer.mode == ApplyMode::Try {
            result(
                true,
                "verified: the running configuration is the one sent\n  try mode: apid reverts it automatically unless a non-try apply follows",
            )
        } else {
            result(true, "verified: the running configuration is the one sent")
        }
    } else {
        result(
            false,
            "NOT verified: the running configuration read back differs from the one sent",
        )
    })
}

async fn config_matches(
    client: &TalosClient,
    id: &str,
    expected: &MachineConfig,
) -> anyhow::Result<bool> {
    let Some(text) = client.machine_config_by_id(id).await? else {
        return Ok(false);
    };
    Ok(MachineConfig::parse(&text, "the node's machine configuration")? == *expected)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn notes_for_changes_that_act_later() {
        let old = MachineConfig::parse("machine:\n  install:\n    disk: /dev/sda\n", "a").unwrap();
        let mut new = old.clone();
        new.set_extra_kernel_arg(&crate::talos::kernel_args::cwsr_disabled(), true)
            .unwrap();
        let notes = delayed_effect_notes(&old, &new);
        assert!(notes.iter().any(|n| n.contains("extraKernelArgs")));
        assert!(delayed_effect_notes(&old, &old).is_empty());
    }

    #[test]
    fn mode_names_are_the_flag_values() {
        for mode in PatchMode::value_variants() {
            assert_eq!(
                mode.to_possible_value().map(|v| v.get_name().to_owned()),
                Some(mode.name().to_owned())
            );
        }
    }

    #[test]
    fn mode_reboot_is_not_offered() {
        let names: Vec<String> = PatchMode::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        assert_eq!(names, ["auto", "no-reboot", "staged", "try"]);
    }
}
