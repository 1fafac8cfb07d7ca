//! A change to a Talos node as a plan value: built by a pure function from facts read off the node, rendered as a table or JSON/YAML, executed step by step, ended by a read-back check.
//!
//! A kernel argument reaches amdgpu only through the kernel command line, and how it gets
//! there depends on the boot path: systemd-boot/UKI (or GRUB with `grubUseUKICmdline`) takes it
//! from the Image Factory schematic, so the plan posts an edited schematic and upgrades to its
//! installer; legacy GRUB takes it from `machine.install.extraKernelArgs`, so the plan applies
//! the configuration without a reboot and then runs a same-version upgrade that rewrites GRUB.

use std::time::Duration;

use anyhow::Context as _;
use nodectl_model::KernelArgument;
use serde::Serialize;
use serde_json::Value;

use super::api::{ApplyMode, Extension, SCHEMATIC_EXTENSION, TalosClient};
use super::factory::{self, Factory};
use super::kernel_args;
use super::machine_config::{MachineConfig, write_documents};
use super::workflow::{self, Waited};
use crate::exit::ExitStatus;
use crate::render::{self, Format, unified_diff};

/// The kernel command line as the running kernel got it.
pub const CMDLINE_PATH: &str = "/proc/cmdline";

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

    /// Where the next boot's kernel arguments are configured on this path.
    pub fn configured_in(self) -> &'static str {
        if self.uses_schematic() {
            "schematic"
        } else {
            "machine.install.extraKernelArgs"
        }
    }
}

/// What the node says about itself, read in one go.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node: String,
    pub talos_version: String,
    pub booted_with_uki: bool,
    /// Booted with secure boot: the installer must be the signed `-secureboot` one.
    pub secure_boot: bool,
    pub config: MachineConfig,
    pub schematic_id: Option<String>,
    pub extensions: Vec<Extension>,
    pub cmdline: Option<String>,
    /// The module parameter the change concerns, as read (`None`: no such file).
    pub parameter: Option<String>,
}

impl NodeFacts {
    /// Reads the node's facts; `parameter_path` names the module parameter to read as well.
    pub async fn read(
        client: &TalosClient,
        parameter_path: Option<&str>,
    ) -> anyhow::Result<NodeFacts> {
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
        let (cmdline, parameter) = read_effective(client, parameter_path).await?;
        Ok(NodeFacts {
            node: client.node.clone(),
            talos_version,
            booted_with_uki,
            secure_boot,
            config,
            schematic_id,
            extensions,
            cmdline,
            parameter,
        })
    }

    pub fn boot_path(&self) -> BootPath {
        BootPath::decide(self.booted_with_uki, self.config.grub_use_uki_cmdline())
    }
}

/// `/proc/cmdline` and a module parameter (each `None` when the node has no such file).
pub async fn read_effective(
    client: &TalosClient,
    parameter_path: Option<&str>,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let cmdline = client.read_text(CMDLINE_PATH).await?;
    let parameter = match parameter_path {
        Some(path) => client.read_text(path).await?,
        None => None,
    };
    Ok((cmdline, parameter))
}

/// What a module parameter must read after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "expect", content = "value", rename_all = "snake_case")]
pub enum ParameterExpectation {
    /// The value given on the command line (`1` and `Y`, `0` and `N` count as the same).
    Equals(String),
    /// Anything but this value (the kernel's default is not known here).
    Differs(String),
}

impl ParameterExpectation {
    /// Whether a parameter file's content meets it.
    pub fn met_by(&self, content: &str) -> bool {
        fn canonical(v: &str) -> &str {
            match v.trim() {
                "Y" | "y" => "1",
                "N" | "n" => "0",
                other => other,
            }
        }
        match self {
            ParameterExpectation::Equals(v) => canonical(content) == canonical(v),
            ParameterExpectation::Differs(v) => canonical(content) != canonical(v),
        }
    }

    fn describe(&self) -> String {
        match self {
            ParameterExpectation::Equals(v) => format!("reads {v}"),
            ParameterExpectation::Differs(v) => format!("does not read {v}"),
        }
    }
}

/// The module parameter a change is read back through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParameterCheck {
    /// `/sys/module/amdgpu/parameters/cwsr_enable`.
    pub path: String,
    #[serde(flatten)]
    pub expect: ParameterExpectation,
    /// The check fails when the file cannot be read afterwards (the module is not loaded).
    pub required: bool,
}

/// The wanted kernel argument change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelArgChange {
    /// `amdgpu.cwsr_enable=0`; a bare key with `remove` removes every value of the key.
    #[serde(serialize_with = "render_argument")]
    pub argument: KernelArgument,
    /// Present (`set`) or absent (`remove`) afterwards.
    #[serde(rename = "action", serialize_with = "render_action")]
    pub present: bool,
    /// Read back through this module parameter too, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<ParameterCheck>,
}

fn render_argument<S: serde::Serializer>(arg: &KernelArgument, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&arg.render())
}

fn render_action<S: serde::Serializer>(present: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *present { "set" } else { "remove" })
}

/// The module parameter file of `amdgpu.NAME`-style keys: `/sys/module/amdgpu/parameters/NAME`.
pub fn module_parameter_path(key: &str) -> Option<String> {
    let (module, name) = key.split_once('.')?;
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (valid(module) && valid(name)).then(|| format!("/sys/module/{module}/parameters/{name}"))
}

impl KernelArgChange {
    /// Whether a command line (as the kernel splits it) carries the change.
    pub fn cmdline_matches(&self, cmdline: &str) -> bool {
        let value = kernel_args::cmdline_value(cmdline, &self.argument.key);
        match (self.present, &self.argument.value) {
            (true, wanted) => value.as_ref() == Some(wanted),
            (false, None) => value.is_none(),
            (false, Some(_)) => !kernel_args::cmdline_has(cmdline, &self.argument),
        }
    }

    /// Whether the running kernel carries the change: its command line, and the module
    /// parameter when it could be read (`strict`: it must be readable when required).
    pub fn effective(&self, cmdline: Option<&str>, parameter: Option<&str>, strict: bool) -> bool {
        let cmdline_ok = cmdline.is_some_and(|c| self.cmdline_matches(c));
        let parameter_ok = match (&self.parameter, parameter) {
            (None, _) => true,
            (Some(check), Some(value)) => check.expect.met_by(value),
            (Some(check), None) => !(strict && check.required),
        };
        cmdline_ok && parameter_ok
    }

    /// What the change does, in words: `add amdgpu.cwsr_enable=0`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            if self.present { "set" } else { "remove" },
            self.argument.render()
        )
    }
}

/// One step of a plan.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Post the edited schematic to the Image Factory (every extension kept).
    PostSchematic {
        factory: String,
        /// Unified diff of the schematic.
        diff: String,
        #[serde(skip)]
        schematic: Value,
    },
    /// Apply the whole edited machine configuration.
    ApplyConfiguration {
        mode: &'static str,
        /// Unified diff of the running configuration.
        diff: String,
        #[serde(skip)]
        config: MachineConfig,
    },
    /// Upgrade the node to an installer image; it reboots.
    Upgrade {
        /// The image; `<new schematic id>` stands for the id the factory returns.
        image: String,
        /// The image is the one of the schematic posted before.
        new_schematic: bool,
        /// Same version and schematic: only rewrites the boot loader's command line.
        no_op: bool,
    },
    /// Wait for the node to go down and come back.
    WaitForReboot { timeout_seconds: u64 },
    /// Read the running kernel back.
    ReadBack { checks: Vec<String> },
}

/// A planned change to one node.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub node: String,
    pub talos_version: String,
    pub boot_path: BootPath,
    pub secure_boot: bool,
    pub schematic_id: Option<String>,
    pub change: KernelArgChange,
    /// What the running kernel has now.
    pub now: Now,
    /// Where the next boot's arguments are configured, and whether they already carry the change.
    pub configured: ConfiguredArgument,
    /// The node and its configuration already carry the change: nothing to do.
    pub up_to_date: bool,
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// The running kernel before the change.
#[derive(Debug, Clone, Serialize)]
pub struct Now {
    /// The value of the key on `/proc/cmdline` (`""` for a bare key; `null`: absent).
    pub cmdline_value: Option<String>,
    /// The module parameter as read (`null`: not readable, e.g. the module is not loaded).
    pub parameter: Option<String>,
    /// The running kernel already carries the change.
    pub effective: bool,
}

/// The configuration of the next boot.
#[derive(Debug, Clone, Serialize)]
pub struct ConfiguredArgument {
    /// `schematic` or `machine.install.extraKernelArgs`.
    pub source: &'static str,
    /// It already carries the change.
    pub has_change: bool,
}

/// Everything the plan builder needs, read beforehand.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub facts: &'a NodeFacts,
    /// The node's current schematic (read from the factory on schematic boot paths).
    pub schematic: Option<&'a Value>,
    pub factory: &'a Factory,
    pub change: &'a KernelArgChange,
    pub timeout: Duration,
}

/// Builds the plan of a kernel argument change. Pure: reads nothing, changes nothing.
pub fn plan_kernel_arg(input: PlanInput<'_>) -> anyhow::Result<Plan> {
    let PlanInput {
        facts,
        schematic,
        factory,
        change,
        timeout,
    } = input;
    let boot_path = facts.boot_path();
    let current_schematic = facts.schematic_id.clone().with_context(|| {
        format!(
            "node {}: no schematic id (the `schematic` extension is missing), so the installer image cannot be named; upgrade the node once to a factory installer first",
            facts.node
        )
    })?;
    let effective = change.effective(facts.cmdline.as_deref(), facts.parameter.as_deref(), false);
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let changed = if boot_path.uses_schematic() {
        let schematic = schematic.with_context(|| {
            format!(
                "node {}: the schematic {current_schematic} was not read",
                facts.node
            )
        })?;
        let mut edited = schematic.clone();
        let changed =
            factory::set_schematic_kernel_arg(&mut edited, &change.argument, change.present)?;
        if changed {
            let old = write_documents(std::slice::from_ref(schematic))?;
            let new = write_documents(std::slice::from_ref(&edited))?;
            steps.push(Step::PostSchematic {
                factory: factory.url().to_owned(),
                diff: unified_diff(
                    &old,
                    &new,
                    &format!("schematic {current_schematic}"),
                    "new schematic",
                ),
                schematic: edited,
            });
        }
        changed
    } else {
        let mut edited = facts.config.clone();
        let changed = edited.set_extra_kernel_arg(&change.argument, change.present)?;
        if changed {
            steps.push(Step::ApplyConfiguration {
                mode: "no-reboot",
                diff: unified_diff(
                    &facts.config.to_yaml()?,
                    &edited.to_yaml()?,
                    "running configuration",
                    "new configuration",
                ),
                config: edited,
            });
            notes.push(
                "the configuration alone changes nothing the kernel sees: GRUB's command line changes at the upgrade".to_owned(),
            );
        }
        changed
    };
    let up_to_date = !changed && effective;
    if !up_to_date {
        if !changed {
            notes.push(format!(
                "the {} already carries `{}`; the running kernel does not reflect it yet",
                boot_path.configured_in(),
                change.describe()
            ));
        }
        let new_schematic = boot_path.uses_schematic() && changed;
        let schematic_id = if new_schematic {
            "<new schematic id>"
        } else {
            current_schematic.as_str()
        };
        steps.push(Step::Upgrade {
            image: factory.installer_image(schematic_id, &facts.talos_version, facts.secure_boot),
            new_schematic,
            no_op: !new_schematic,
        });
        steps.push(Step::WaitForReboot {
            timeout_seconds: timeout.as_secs(),
        });
        let mut checks = vec![format!(
            "{CMDLINE_PATH} {}",
            if change.present {
                format!("has {}", change.argument.render())
            } else if change.argument.value.is_none() {
                format!("has no {}", change.argument.key)
            } else {
                format!("lacks {}", change.argument.render())
            }
        )];
        if let Some(check) = &change.parameter {
            checks.push(format!("{} {}", check.path, check.expect.describe()));
        }
        steps.push(Step::ReadBack { checks });
    }
    if let Some(check) = &change.parameter
        && facts.parameter.is_none()
        && !check.required
    {
        notes.push(format!(
            "{} cannot be read on the node (the module is not loaded, or it has no such parameter: the kernel ignores unknown ones); only {CMDLINE_PATH} is read back for it",
            check.path
        ));
    }
    if boot_path.uses_schematic()
        && facts
            .config
            .extra_kernel_args()
            .iter()
            .any(|a| KernelArgument::parse(a).key == change.argument.key)
    {
        notes.push(format!(
            "machine.install.extraKernelArgs mentions {}, but this boot path ignores it",
            change.argument.key
        ));
    }
    Ok(Plan {
        node: facts.node.clone(),
        talos_version: facts.talos_version.clone(),
        boot_path,
        secure_boot: facts.secure_boot,
        schematic_id: facts.schematic_id.clone(),
        change: change.clone(),
        now: Now {
            cmdline_value: facts.cmdline.as_deref().and_then(|c| {
                kernel_args::cmdline_value(c, &change.argument.key).map(Option::unwrap_or_default)
            }),
            parameter: facts.parameter.as_ref().map(|p| p.trim().to_owned()),
            effective,
        },
        configured: ConfiguredArgument {
            source: boot_path.configured_in(),
            has_change: !changed,
        },
        up_to_date,
        steps,
        notes,
    })
}

/// The plan as lines for a terminal.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = format!("node {} (Talos {})\n", plan.node, plan.talos_version);
    out.push_str(&format!("boot path: {}\n", plan.boot_path.describe()));
    out.push_str(&format!(
        "now: /proc/cmdline {}{}\n",
        match &plan.now.cmdline_value {
            Some(v) if v.is_empty() => format!("has {}", plan.change.argument.key),
            Some(v) => format!("has {}={v}", plan.change.argument.key),
            None => format!("has no {}", plan.change.argument.key),
        },
        match (&plan.change.parameter, &plan.now.parameter) {
            (Some(check), Some(value)) => format!(", {} = {value}", check.path),
            (Some(check), None) => format!(", {} not readable (module not loaded)", check.path),
            (None, _) => String::new(),
        }
    ));
    if plan.up_to_date {
        out.push_str(&format!(
            "`{}` is already in effect on node {} and in its {}: nothing to do\n",
            plan.change.describe(),
            plan.node,
            plan.configured.source
        ));
        return out;
    }
    out.push_str(&format!("plan ({}):\n", plan.change.describe()));
    out.push_str(&render_steps(&plan.steps));
    for note in &plan.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}

/// Numbered steps, with their diffs indented below them.
fn render_steps(steps: &[Step]) -> String {
    let mut out = String::new();
    for (number, step) in steps.iter().enumerate() {
        let n = number + 1;
        match step {
            Step::PostSchematic { factory, diff, .. } => {
                out.push_str(&format!(
                    "  {n}. post the edited schematic to {factory}/schematics (every extension kept):\n"
                ));
                out.push_str(&render::indented(diff, 5));
            }
            Step::ApplyConfiguration { mode, diff, .. } => {
                out.push_str(&format!(
                    "  {n}. apply the full machine configuration with mode {mode} (diff of the running configuration):\n"
                ));
                out.push_str(&render::indented(diff, 5));
            }
            Step::Upgrade { image, no_op, .. } => {
                out.push_str(&format!(
                    "  {n}. upgrade the node to {image}{}\n",
                    if *no_op {
                        " (the same Talos version and schematic: a no-op upgrade that rewrites the boot command line)"
                    } else {
                        ""
                    }
                ));
            }
            Step::WaitForReboot { timeout_seconds } => {
                out.push_str(&format!(
                    "  {n}. wait for the reboot (up to {timeout_seconds}s)\n"
                ));
            }
            Step::ReadBack { checks } => {
                out.push_str(&format!("  {n}. read back: {}\n", checks.join("; ")));
            }
        }
    }
    out
}

/// A planned machine-configuration patch (`talos apply-patch`).
#[derive(Debug, Clone, Serialize)]
pub struct PatchPlan {
    pub node: String,
    /// The patch files, in the order they apply.
    pub files: Vec<String>,
    /// How apid is asked to apply it: `auto`, `no-reboot`, `staged`, `try`.
    pub mode: &'static str,
    /// The patches change nothing in the running configuration.
    pub up_to_date: bool,
    pub steps: Vec<Step>,
    /// Parts of the change that apid accepts now but that act only later.
    pub notes: Vec<String>,
}

/// Builds the plan of a patch from the running and the patched configuration. Pure.
pub fn plan_patch(
    node: &str,
    files: Vec<String>,
    mode: &'static str,
    running: &MachineConfig,
    patched: MachineConfig,
    notes: Vec<String>,
) -> anyhow::Result<PatchPlan> {
    let up_to_date = patched == *running;
    let mut steps = Vec::new();
    if !up_to_date {
        let diff = unified_diff(
            &running.to_yaml()?,
            &patched.to_yaml()?,
            "running",
            "patched",
        );
        steps.push(Step::ApplyConfiguration {
            mode,
            diff,
            config: patched,
        });
        steps.push(Step::ReadBack {
            checks: vec![if mode == "staged" {
                "the persisted configuration is the one sent; the running one is unchanged".to_owned()
            } else {
                "the running configuration is the one sent (after the reboot, if apid reboots the node)".to_owned()
            }],
        });
    }
    Ok(PatchPlan {
        node: node.to_owned(),
        files,
        mode,
        up_to_date,
        steps,
        notes,
    })
}

/// The patch plan as lines for a terminal.
pub fn render_patch_plan(plan: &PatchPlan) -> String {
    if plan.up_to_date {
        return format!(
            "node {}: the patches change nothing in the running configuration; nothing to apply\n",
            plan.node
        );
    }
    let mut out = format!("node {}: plan\n", plan.node);
    out.push_str(&render_steps(&plan.steps));
    for note in &plan.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}

/// apid's answer to a dry-run apply.
#[derive(Debug, Clone, Serialize)]
pub struct ApidDryRun {
    pub summary: String,
    pub warnings: Vec<String>,
}

/// How an executed plan ended.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub verified: bool,
    /// The key's value on `/proc/cmdline` after the change.
    pub cmdline_value: Option<String>,
    pub parameter: Option<String>,
}

/// The document `-o json|yaml` prints for a change.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub plan: Plan,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apid_dry_run: Option<ApidDryRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Verification>,
}

/// Where progress goes: stdout under a table, stderr when stdout carries JSON or YAML.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    format: Format,
}

impl Progress {
    pub fn new(format: Format) -> Self {
        Self { format }
    }

    pub fn say(&self, text: impl AsRef<str>) -> anyhow::Result<()> {
        match self.format {
            Format::Table => render::line(text),
            // Progress may quote what the node said (versions, errors): escaped like stdout.
            _ => {
                eprintln!("{}", render::escape_controls(text.as_ref()));
                Ok(())
            }
        }
    }
}

/// How the change is carried out.
#[derive(Debug, Clone, Copy)]
pub struct Execution {
    pub dry_run: bool,
    pub yes: bool,
    pub timeout: Duration,
    pub format: Format,
}

/// Reads the node, plans the change, prints the plan, and (unless a dry run) confirms,
/// executes and verifies it.
pub async fn change_kernel_arg(
    client: &TalosClient,
    factory: &Factory,
    change: &KernelArgChange,
    execution: Execution,
) -> anyhow::Result<ExitStatus> {
    let parameter_path = change.parameter.as_ref().map(|p| p.path.as_str());
    let facts = NodeFacts::read(client, parameter_path).await?;
    let schematic = match (&facts.schematic_id, facts.boot_path().uses_schematic()) {
        (Some(id), true) => Some(factory.get_schematic(id).await?),
        _ => None,
    };
    let plan = plan_kernel_arg(PlanInput {
        facts: &facts,
        schematic: schematic.as_ref(),
        factory,
        change,
        timeout: execution.timeout,
    })?;
    let progress = Progress::new(execution.format);
    let mut report = PlanReport {
        plan,
        dry_run: execution.dry_run,
        apid_dry_run: None,
        result: None,
    };
    if execution.format == Format::Table {
        render::emit(&render_plan(&report.plan))?;
    }
    if report.plan.up_to_date {
        render::print_structured(&report, execution.format)?;
        return Ok(ExitStatus::Ok);
    }
    if execution.dry_run {
        if let Some(Step::ApplyConfiguration { config, .. }) = report
            .plan
            .steps
            .iter()
            .find(|s| matches!(s, Step::ApplyConfiguration { .. }))
        {
            let answer = client
                .apply_configuration(&config.to_yaml()?, ApplyMode::NoReboot, true)
                .await?;
            let dry = ApidDryRun {
                summary: super::api::dry_run_summary(&answer.mode_details),
                warnings: answer.warnings,
            };
            if execution.format == Format::Table {
                render::line("apid dry run:")?;
                render::emit(&render::indented(&dry.summary, 5))?;
                for warning in &dry.warnings {
                    render::line(format!("  warning: {warning}"))?;
                }
            }
            report.apid_dry_run = Some(dry);
        }
        if !render::print_structured(&report, execution.format)? {
            render::line("dry run: nothing was changed")?;
        }
        return Ok(ExitStatus::Ok);
    }
    if !workflow::confirm(
        execution.yes,
        &format!(
            "{} on node {}?",
            capitalised(&change.describe()),
            report.plan.node
        ),
    )? {
        progress.say("not confirmed: nothing was changed")?;
        return Ok(ExitStatus::Ok);
    }
    let verification = execute(client, factory, &facts, &report.plan, &progress).await?;
    let outcome = if verification.verified {
        ExitStatus::Ok
    } else {
        ExitStatus::Critical
    };
    report.result = Some(verification);
    render::print_structured(&report, execution.format)?;
    Ok(outcome)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Carries out the steps in order, then reads the node back.
async fn execute(
    client: &TalosClient,
    factory: &Factory,
    facts: &NodeFacts,
    plan: &Plan,
    progress: &Progress,
) -> anyhow::Result<Verification> {
    let change = &plan.change;
    let parameter_path = change.parameter.as_ref().map(|p| p.path.clone());
    let mut posted: Option<String> = None;
    let mut client = client.clone();
    for step in &plan.steps {
        match step {
            Step::PostSchematic { schematic, .. } => {
                let id = factory.post_schematic(schematic).await?;
                progress.say(format!("posted the schematic: id {id}"))?;
                posted = Some(id);
            }
            Step::ApplyConfiguration { config, .. } => {
                let answer = client
                    .apply_configuration(&config.to_yaml()?, ApplyMode::NoReboot, false)
                    .await?;
                progress.say(format!(
                    "configuration accepted: {}",
                    answer.mode_details.trim()
                ))?;
                for warning in &answer.warnings {
                    progress.say(format!("  warning: {warning}"))?;
                }
                progress.say(format!(
                    "  machine.install.extraKernelArgs now carries `{}`, but the running kernel does NOT reflect it: it takes effect with the upgrade that follows",
                    change.describe()
                ))?;
            }
            Step::Upgrade {
                image,
                new_schematic,
                ..
            } => {
                let image = match (new_schematic, &posted) {
                    (true, Some(id)) => {
                        factory.installer_image(id, &facts.talos_version, facts.secure_boot)
                    }
                    (true, None) => {
                        anyhow::bail!("the plan upgrades to a schematic it never posted")
                    }
                    (false, _) => image.clone(),
                };
                let ack = client.upgrade(&image).await?;
                progress.say(format!(
                    "upgrade to {image} accepted{}; the node reboots",
                    if ack.is_empty() {
                        String::new()
                    } else {
                        format!(" ({ack})")
                    }
                ))?;
            }
            Step::WaitForReboot { timeout_seconds } => {
                let timeout = Duration::from_secs(*timeout_seconds);
                eprintln!(
                    "waiting for node {} (up to {timeout_seconds}s):",
                    client.node
                );
                let path = parameter_path.clone();
                let waited = workflow::wait_for_node(&client, timeout, async |c: &TalosClient| {
                    let (cmdline, parameter) = read_effective(c, path.as_deref()).await?;
                    Ok(change.effective(cmdline.as_deref(), parameter.as_deref(), true))
                })
                .await?;
                client = match waited {
                    Waited::Done(c) | Waited::BackWithoutChange(c) | Waited::NeverWentDown(c) => c,
                };
            }
            Step::ReadBack { .. } => {}
        }
    }
    let (cmdline, parameter) = read_effective(&client, parameter_path.as_deref()).await?;
    let verified = change.effective(cmdline.as_deref(), parameter.as_deref(), true);
    let cmdline_value = cmdline.as_deref().and_then(|c| {
        kernel_args::cmdline_value(c, &change.argument.key).map(Option::unwrap_or_default)
    });
    progress.say(format!(
        "read back: /proc/cmdline {}{}",
        match &cmdline_value {
            Some(v) => format!("has {}={v}", change.argument.key),
            None => format!("has no {}", change.argument.key),
        },
        match (&change.parameter, &parameter) {
            (Some(check), Some(value)) => format!("; {} = {}", check.path, value.trim()),
            (Some(check), None) => format!("; {} not readable (module not loaded)", check.path),
            (None, _) => String::new(),
        }
    ))?;
    progress.say(if verified {
        format!(
            "verified: `{}` is in effect on node {}",
            change.describe(),
            client.node
        )
    } else {
        format!(
            "NOT verified: `{}` is not in effect on node {} after the upgrade{}",
            change.describe(),
            client.node,
            if change.parameter.as_ref().is_some_and(|p| p.required) && parameter.is_none() {
                " (the module is not loaded, so its parameter cannot be read)"
            } else {
                ""
            }
        )
    })?;
    Ok(Verification {
        verified,
        cmdline_value,
        parameter: parameter.map(|p| p.trim().to_owned()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const LEGACY_CONFIG: &str = "version: v1alpha1\nmachine:\n  install:\n    disk: /dev/sda\n    extraKernelArgs:\n      - amd_iommu=off\n";
    const UKI_CONFIG: &str = "version: v1alpha1\nmachine:\n  install:\n    disk: /dev/sda\n";
    const GRUB_UKI_CONFIG: &str = "version: v1alpha1\nmachine:\n  install:\n    disk: /dev/sda\n    grubUseUKICmdline: true\n";

    fn facts(config: &str, uki: bool, cmdline: &str, parameter: Option<&str>) -> NodeFacts {
        NodeFacts {
            node: "10.0.0.5".into(),
            talos_version: "v1.12.1".into(),
            booted_with_uki: uki,
            secure_boot: false,
            config: MachineConfig::parse(config, "test").unwrap(),
            schematic_id: Some("abc123".into()),
            extensions: Vec::new(),
            cmdline: Some(cmdline.into()),
            parameter: parameter.map(str::to_owned),
        }
    }

    fn cwsr(present: bool) -> KernelArgChange {
        KernelArgChange {
            argument: KernelArgument::parse("amdgpu.cwsr_enable=0"),
            present,
            parameter: Some(ParameterCheck {
                path: "/sys/module/amdgpu/parameters/cwsr_enable".into(),
                expect: if present {
                    ParameterExpectation::Equals("0".into())
                } else {
                    ParameterExpectation::Differs("0".into())
                },
                required: true,
            }),
        }
    }

    fn schematic(args: &[&str]) -> Value {
        serde_json::json!({
            "customization": {
                "extraKernelArgs": args,
                "systemExtensions": { "officialExtensions": ["siderolabs/amdgpu"] }
            }
        })
    }

    fn plan(facts: &NodeFacts, schematic: Option<&Value>, change: &KernelArgChange) -> Plan {
        let factory = Factory::new("http://127.0.0.1:9").unwrap();
        plan_kernel_arg(PlanInput {
            facts,
            schematic,
            factory: &factory,
            change,
            timeout: Duration::from_secs(60),
        })
        .unwrap()
    }

    fn step_names(plan: &Plan) -> Vec<&'static str> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::PostSchematic { .. } => "post_schematic",
                Step::ApplyConfiguration { .. } => "apply_configuration",
                Step::Upgrade { .. } => "upgrade",
                Step::WaitForReboot { .. } => "wait_for_reboot",
                Step::ReadBack { .. } => "read_back",
            })
            .collect()
    }

    #[test]
    fn uki_posts_a_schematic_then_upgrades_to_its_installer() {
        let facts = facts(UKI_CONFIG, true, "quiet", Some("1\n"));
        let current = schematic(&["quiet"]);
        let p = plan(&facts, Some(&current), &cwsr(true));
        assert_eq!(p.boot_path, BootPath::Uki);
        assert_eq!(
            step_names(&p),
            ["post_schematic", "upgrade", "wait_for_reboot", "read_back"]
        );
        let Step::PostSchematic {
            schematic, diff, ..
        } = &p.steps[0]
        else {
            panic!("{p:?}")
        };
        assert_eq!(
            factory::schematic_kernel_args(schematic),
            ["quiet", "amdgpu.cwsr_enable=0"]
        );
        assert!(diff.contains("+  - amdgpu.cwsr_enable=0"), "{diff}");
        let Step::Upgrade {
            image,
            new_schematic,
            ..
        } = &p.steps[1]
        else {
            panic!("{p:?}")
        };
        assert!(*new_schematic);
        assert_eq!(
            image,
            "127.0.0.1:9/metal-installer/<new schematic id>:v1.12.1"
        );
        assert!(!p.up_to_date && !p.now.effective && !p.configured.has_change);
    }

    #[test]
    fn grub_with_uki_cmdline_goes_through_the_schematic_too() {
        let facts = facts(GRUB_UKI_CONFIG, false, "quiet", Some("1"));
        let p = plan(&facts, Some(&schematic(&[])), &cwsr(true));
        assert_eq!(p.boot_path, BootPath::GrubUkiCmdline);
        assert_eq!(step_names(&p)[0], "post_schematic");
    }

    #[test]
    fn legacy_grub_applies_extra_kernel_args_then_a_no_op_upgrade() {
        let facts = facts(LEGACY_CONFIG, false, "amd_iommu=off", Some("1"));
        let p = plan(&facts, None, &cwsr(true));
        assert_eq!(p.boot_path, BootPath::LegacyGrub);
        assert_eq!(
            step_names(&p),
            [
                "apply_configuration",
                "upgrade",
                "wait_for_reboot",
                "read_back"
            ]
        );
        let Step::ApplyConfiguration { config, mode, .. } = &p.steps[0] else {
            panic!("{p:?}")
        };
        assert_eq!(*mode, "no-reboot");
        assert_eq!(
            config.extra_kernel_args(),
            ["amd_iommu=off", "amdgpu.cwsr_enable=0"]
        );
        let Step::Upgrade { image, no_op, .. } = &p.steps[1] else {
            panic!("{p:?}")
        };
        assert!(*no_op);
        assert_eq!(image, "127.0.0.1:9/metal-installer/abc123:v1.12.1");
    }

    #[test]
    fn a_node_that_already_has_it_needs_nothing() {
        let facts = facts(
            "version: v1alpha1\nmachine:\n  install:\n    extraKernelArgs:\n      - amdgpu.cwsr_enable=0\n",
            false,
            "amdgpu.cwsr_enable=0",
            Some("0"),
        );
        let p = plan(&facts, None, &cwsr(true));
        assert!(p.up_to_date && p.steps.is_empty(), "{p:?}");
        // Configured but not yet effective: only the upgrade and the read-back remain.
        let pending = NodeFacts {
            cmdline: Some("quiet".into()),
            parameter: Some("1".into()),
            ..facts
        };
        let p = plan(&pending, None, &cwsr(true));
        assert_eq!(step_names(&p), ["upgrade", "wait_for_reboot", "read_back"]);
        assert!(p.configured.has_change);
    }

    #[test]
    fn removal_and_a_bare_key_and_secure_boot() {
        let facts = NodeFacts {
            secure_boot: true,
            ..facts(UKI_CONFIG, true, "quiet amdgpu.gpu_recovery=1", None)
        };
        let change = KernelArgChange {
            argument: KernelArgument::parse("amdgpu.gpu_recovery"),
            present: false,
            parameter: None,
        };
        let p = plan(
            &facts,
            Some(&schematic(&["amdgpu.gpu_recovery=1"])),
            &change,
        );
        let Step::PostSchematic { schematic, .. } = &p.steps[0] else {
            panic!("{p:?}")
        };
        assert!(factory::schematic_kernel_args(schematic).is_empty());
        let Step::Upgrade { image, .. } = &p.steps[1] else {
            panic!("{p:?}")
        };
        assert!(image.contains("/metal-installer-secureboot/"), "{image}");
        assert_eq!(p.now.cmdline_value.as_deref(), Some("1"));
        assert!(change.cmdline_matches("quiet"));
        assert!(!change.cmdline_matches("amdgpu.gpu_recovery=0"));
    }

    #[test]
    fn a_node_without_a_schematic_id_cannot_be_planned() {
        let mut facts = facts(LEGACY_CONFIG, false, "", None);
        facts.schematic_id = None;
        let factory = Factory::new("http://127.0.0.1:9").unwrap();
        let e = plan_kernel_arg(PlanInput {
            facts: &facts,
            schematic: None,
            factory: &factory,
            change: &cwsr(true),
            timeout: Duration::from_secs(1),
        })
        .unwrap_err();
        assert!(e.to_string().contains("no schematic id"), "{e}");
    }

    #[test]
    fn effective_values() {
        let off = "console=tty0 amdgpu.cwsr_enable=0";
        let on = "console=tty0";
        assert!(cwsr(true).effective(Some(off), Some("0\n"), true));
        assert!(!cwsr(true).effective(Some(off), Some("1"), true));
        assert!(!cwsr(true).effective(Some(on), Some("0"), true));
        assert!(cwsr(false).effective(Some(on), Some("1"), true));
        // Unreadable parameter: good enough to plan, not to verify.
        assert!(cwsr(false).effective(Some(on), None, false));
        assert!(!cwsr(false).effective(Some(on), None, true));
        assert!(!cwsr(false).effective(None, Some("1"), false));
        assert!(ParameterExpectation::Equals("1".into()).met_by("Y\n"));
        assert!(ParameterExpectation::Differs("0".into()).met_by("-1"));
    }

    #[test]
    fn module_parameters_are_named_by_their_key() {
        assert_eq!(
            module_parameter_path("amdgpu.gpu_recovery").as_deref(),
            Some("/sys/module/amdgpu/parameters/gpu_recovery")
        );
        assert_eq!(module_parameter_path("amd_iommu"), None);
        assert_eq!(module_parameter_path("a.b/../c"), None);
    }

    #[test]
    fn a_patch_plan_applies_once_and_reads_back() {
        let running = MachineConfig::parse(LEGACY_CONFIG, "t").unwrap();
        let mut patched = running.clone();
        patched
            .set_extra_kernel_arg(&KernelArgument::parse("x=1"), true)
            .unwrap();
        let p = plan_patch(
            "n",
            vec!["a.yaml".into()],
            "staged",
            &running,
            patched,
            vec![],
        )
        .unwrap();
        assert!(!p.up_to_date);
        let Step::ApplyConfiguration { mode, diff, .. } = &p.steps[0] else {
            panic!("{p:?}")
        };
        assert_eq!(*mode, "staged");
        assert!(diff.contains("+    - x=1"), "{diff}");
        let Step::ReadBack { checks } = &p.steps[1] else {
            panic!("{p:?}")
        };
        assert!(checks[0].contains("persisted"), "{checks:?}");
        let same = plan_patch("n", vec![], "auto", &running, running.clone(), vec![]).unwrap();
        assert!(same.up_to_date && same.steps.is_empty());
        assert!(render_patch_plan(&same).contains("nothing to apply"));
    }

    #[test]
    fn the_json_shape_names_steps_and_hides_payloads() {
        let facts = facts(LEGACY_CONFIG, false, "amd_iommu=off", Some("1"));
        let json = serde_json::to_value(plan(&facts, None, &cwsr(true))).unwrap();
        assert_eq!(json["boot_path"], "legacy-grub");
        assert_eq!(json["change"]["argument"], "amdgpu.cwsr_enable=0");
        assert_eq!(json["change"]["action"], "set");
        assert_eq!(json["change"]["parameter"]["expect"], "equals");
        assert_eq!(json["steps"][0]["step"], "apply_configuration");
        assert!(json["steps"][0].get("config").is_none());
        assert_eq!(json["steps"][3]["step"], "read_back");
    }
}
