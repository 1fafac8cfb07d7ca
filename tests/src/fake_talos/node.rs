//! The simulated Talos node: machine configs, boot path, kernel command line, and how apply, reboot and upgrade change them.

use std::time::Duration;

use serde_json::Value;

use super::factory::Schematic;

/// What the fake node looks like when it starts.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Talos version tag, e.g. `v1.12.1`.
    pub talos_version: String,
    /// systemd-boot/UKI (`SecurityState.bootedWithUKI`) rather than GRUB.
    pub booted_with_uki: bool,
    /// The running (and persisted) multi-document machine config.
    pub config_yaml: String,
    /// The command line before any extra kernel argument (what the installer builds).
    pub base_cmdline: String,
    /// The schematic the node was installed from (registered with the fake factory).
    pub schematic: Schematic,
    /// How long the node stays down for a reboot or an upgrade.
    pub reboot_duration: Duration,
    /// Node hostname (for `metadata.hostname` and the configs).
    pub hostname: String,
}

const UKI_BASE_CMDLINE: &str = "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1";
const GRUB_BASE_CMDLINE: &str = "BOOT_IMAGE=/A/vmlinuz talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512";

fn strix_halo_schematic(extra_kernel_args: &[&str]) -> Schematic {
    let mut schematic = Schematic::default();
    schematic.customization.extra_kernel_args =
        extra_kernel_args.iter().map(|a| (*a).to_owned()).collect();
    schematic
        .customization
        .system_extensions
        .official_extensions = vec![
        "siderolabs/amd-ucode".to_owned(),
        "siderolabs/amdgpu".to_owned(),
    ];
    schematic
}

/// A Talos 1.12 config as `talosctl gen config` writes it for a worker: v1alpha1 plus `HostnameConfig`.
pub fn config_v1_12(grub_use_uki_cmdline: bool, extra_kernel_args: &[&str]) -> String {
    let mut install = String::from(
        "    install:\n        disk: /dev/nvme0n1\n        image: factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.12.1\n        wipe: false\n",
    );
    if grub_use_uki_cmdline {
        install.push_str("        grubUseUKICmdline: true\n");
    }
    push_extra_kernel_args(&mut install, extra_kernel_args);
    format!(
        "version: v1alpha1\n\
debug: false\n\
persist: true\n\
machine:\n    \
type: worker\n    \
token: 7k3xqf.0b1c2d3e4f5a6b7c\n    \
ca:\n        \
crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJQekNCOHFBREFnRUNBaEVBCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K\n        \
key: \"\"\n    \
certSANs: []\n    \
kubelet:\n        \
image: ghcr.io/siderolabs/kubelet:v1.34.1\n        \
defaultRuntimeSeccompProfileEnabled: true\n        \
disableManifestsDirectory: true\n    \
network: {{}}\n\
{install}    \
features:\n        \
rbac: true\n        \
stableHostname: true\n        \
apidCheckExtKeyUsage: true\n        \
diskQuotaSupport: true\n        \
kubePrism:\n            \
enabled: true\n            \
port: 7445\n        \
hostDNS:\n            \
enabled: true\n            \
forwardKubeDNSToHost: true\n\
cluster:\n    \
id: 3mB5q0yVbT1vX2cW8nH4kL6pR9sD0fG1hJ2kL3mN4o=\n    \
secret: 9q8w7e6r5t4y3u2i1o0pAsDfGhJkLzXcVbNm1234567=\n    \
controlPlane:\n        \
endpoint: https://192.0.2.10:6443\n    \
clusterName: strix\n    \
network:\n        \
dnsDomain: cluster.local\n        \
podSubnets:\n            \
- 10.244.0.0/16\n        \
serviceSubnets:\n            \
- 10.96.0.0/12\n    \
token: 4f7d2a.9b8c7d6e5f4a3b2c\n    \
ca:\n        \
crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJpekNDQVRDZ0F3SUJBZ0lRCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K\n        \
key: \"\"\n    \
discovery:\n        \
enabled: true\n\
---\n\
apiVersion: v1alpha1\n\
kind: HostnameConfig\n\
auto: stable\n"
    )
}

/// A Talos 1.11 config carried over from older installs: v1alpha1 (no `grubUseUKICmdline`) plus a `KmsgLogConfig`.
pub fn config_v1_11(extra_kernel_args: &[&str]) -> String {
    let mut install = String::from(
        "    install:\n        disk: /dev/nvme0n1\n        image: ghcr.io/siderolabs/installer:v1.11.5\n        wipe: false\n",
    );
    push_extra_kernel_args(&mut install, extra_kernel_args);
    format!(
        "version: v1alpha1\n\
debug: false\n\
persist: true\n\
machine:\n    \
type: worker\n    \
token: 7k3xqf.0b1c2d3e4f5a6b7c\n    \
ca:\n        \
crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJQekNCOHFBREFnRUNBaEVBCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K\n        \
key: \"\"\n    \
certSANs: []\n    \
kubelet:\n        \
image: ghcr.io/siderolabs/kubelet:v1.34.1\n        \
defaultRuntimeSeccompProfileEnabled: true\n        \
disableManifestsDirectory: true\n    \
network:\n        \
hostname: strix-legacy\n\
{install}    \
features:\n        \
rbac: true\n        \
stableHostname: true\n        \
apidCheckExtKeyUsage: true\n        \
diskQuotaSupport: true\n        \
kubePrism:\n            \
enabled: true\n            \
port: 7445\n\
cluster:\n    \
id: 3mB5q0yVbT1vX2cW8nH4kL6pR9sD0fG1hJ2kL3mN4o=\n    \
secret: 9q8w7e6r5t4y3u2i1o0pAsDfGhJkLzXcVbNm1234567=\n    \
controlPlane:\n        \
endpoint: https://192.0.2.10:6443\n    \
clusterName: strix\n    \
network:\n        \
dnsDomain: cluster.local\n        \
podSubnets:\n            \
- 10.244.0.0/16\n        \
serviceSubnets:\n            \
- 10.96.0.0/12\n    \
token: 4f7d2a.9b8c7d6e5f4a3b2c\n    \
ca:\n        \
crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJpekNDQVRDZ0F3SUJBZ0lRCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K\n        \
key: \"\"\n\
---\n\
apiVersion: v1alpha1\n\
kind: KmsgLogConfig\n\
name: remote-log\n\
url: tcp://192.0.2.20:5044/\n"
    )
}

fn push_extra_kernel_args(install: &mut String, extra_kernel_args: &[&str]) {
    if !extra_kernel_args.is_empty() {
        install.push_str("        extraKernelArgs:\n");
        for arg in extra_kernel_args {
            install.push_str("            - ");
            install.push_str(arg);
            install.push('\n');
        }
    }
}

impl Scenario {
    /// A fresh 1.12 UEFI install: systemd-boot/UKI, kernel arguments from the schematic.
    pub fn uki() -> Scenario {
        Scenario {
            talos_version: "v1.12.1".to_owned(),
            booted_with_uki: true,
            config_yaml: config_v1_12(true, &[]),
            base_cmdline: UKI_BASE_CMDLINE.to_owned(),
            schematic: strix_halo_schematic(&["amd_iommu=off", "ttm.pages_limit=25165824"]),
            reboot_duration: Duration::from_millis(1500),
            hostname: "strix-uki".to_owned(),
        }
    }

    /// A node carried over from 1.11 on legacy GRUB: kernel arguments from `machine.install.extraKernelArgs`.
    pub fn legacy_grub() -> Scenario {
        Scenario {
            talos_version: "v1.11.5".to_owned(),
            booted_with_uki: false,
            config_yaml: config_v1_11(&["amd_iommu=off"]),
            base_cmdline: GRUB_BASE_CMDLINE.to_owned(),
            schematic: strix_halo_schematic(&[]),
            reboot_duration: Duration::from_millis(1500),
            hostname: "strix-legacy".to_owned(),
        }
    }

    /// A 1.12 BIOS install on GRUB with `grubUseUKICmdline: true`: kernel arguments from the schematic.
    pub fn grub_uki_cmdline() -> Scenario {
        Scenario {
            talos_version: "v1.12.1".to_owned(),
            booted_with_uki: false,
            config_yaml: config_v1_12(true, &[]),
            base_cmdline: GRUB_BASE_CMDLINE.to_owned(),
            schematic: strix_halo_schematic(&["amd_iommu=off"]),
            reboot_duration: Duration::from_millis(1500),
            hostname: "strix-grub".to_owned(),
        }
    }
}

/// Why apid refused a config (its status message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// A parsed multi-document machine config.
#[derive(Debug, Clone)]
pub struct Config {
    pub text: String,
    documents: Vec<Value>,
}

impl Config {
    /// Parses a multi-document config as apid does: YAML errors, documents without a kind, and
    /// a config without the v1alpha1 document are refused.
    pub fn parse(text: &str) -> Result<Config, Refusal> {
        // Only the v1alpha1 text is Talos's own; YAML and kind errors carry this fake's wording
        // (the code, InvalidArgument, is what clients rely on).
        let documents: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| Refusal(format!("failed to decode config: {e}")))?;
        let documents: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
        for document in &documents {
            let Some(map) = document.as_object() else {
                return Err(Refusal(
                    "failed to decode config: document is not a map".to_owned(),
                ));
            };
            if map.contains_key("kind") {
                if !map.contains_key("apiVersion") {
                    return Err(Refusal("missing apiVersion".to_owned()));
                }
            } else if map.get("version").and_then(Value::as_str) != Some("v1alpha1") {
                return Err(Refusal("missing kind".to_owned()));
            }
        }
        let config = Config {
            text: text.to_owned(),
            documents,
        };
        if config.v1alpha1().is_none() {
            return Err(Refusal(
                "the applied machine configuration doesn't contain v1alpha1 config, did you mean to patch the machine config instead?"
                    .to_owned(),
            ));
        }
        Ok(config)
    }

    /// The legacy v1alpha1 document (no `kind`, `version: v1alpha1`).
    pub fn v1alpha1(&self) -> Option<&Value> {
        self.documents.iter().find(|d| {
            d.get("kind").is_none() && d.get("version").and_then(Value::as_str) == Some("v1alpha1")
        })
    }

    fn install(&self) -> Option<&Value> {
        self.v1alpha1()?.get("machine")?.get("install")
    }

    /// `machine.install.extraKernelArgs`.
    pub fn extra_kernel_args(&self) -> Vec<String> {
        self.install()
            .and_then(|i| i.get("extraKernelArgs"))
            .and_then(Value::as_array)
            .map(|args| {
                args.iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `machine.install.grubUseUKICmdline` (absent = false, as for configs from before 1.12).
    pub fn grub_use_uki_cmdline(&self) -> bool {
        self.install()
            .and_then(|i| i.get("grubUseUKICmdline"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// apid's validation: errors refuse the config, warnings go back with the answer.
    pub fn validate(&self, booted_with_uki: bool) -> Result<Vec<String>, Refusal> {
        let extra = self.extra_kernel_args();
        if !extra.is_empty() && self.grub_use_uki_cmdline() {
            return Err(Refusal(
                "1 error occurred:\n\t* install.extraKernelArgs and install.grubUseUKICmdline can't be used together\n\n"
                    .to_owned(),
            ));
        }
        let mut warnings = Vec::new();
        if !extra.is_empty() && booted_with_uki {
            warnings.push(
                "extra kernel arguments are not supported when booting using SDBoot".to_owned(),
            );
        }
        Ok(warnings)
    }
}

/// Sections of the v1alpha1 document that Talos 1.12 applies without a reboot.
const IMMEDIATE_MACHINE_KEYS: &[&str] = &[
    "ca",
    "acceptedCAs",
    "time",
    "certSANs",
    "install",
    "network",
    "sysfs",
    "sysctls",
    "logging",
    "controlplane",
    "kubelet",
    "kernel",
    "registries",
    "pods",
    "seccompProfiles",
    "nodeAnnotations",
    "nodeLabels",
    "nodeTaints",
];
const IMMEDIATE_FEATURE_KEYS: &[&str] = &["kubernetesTalosAPIAccess", "hostDNS", "imageCache"];

fn changed_keys(old: Option<&Value>, new: Option<&Value>) -> Vec<String> {
    let empty = serde_json::Map::new();
    let old = old.and_then(Value::as_object).unwrap_or(&empty);
    let new = new.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether going from `old` to `new` can be applied without a reboot; `Err` is apid's refusal text.
pub fn can_apply_immediate(old: &Config, new: &Config) -> Result<(), Refusal> {
    let (old_doc, new_doc) = (old.v1alpha1(), new.v1alpha1());
    let mut blocked = Vec::new();
    for key in changed_keys(old_doc, new_doc) {
        match key.as_str() {
            "debug" | "cluster" => {}
            "machine" => {
                let old_machine = old_doc.and_then(|d| d.get("machine"));
                let new_machine = new_doc.and_then(|d| d.get("machine"));
                for machine_key in changed_keys(old_machine, new_machine) {
                    if machine_key == "features" {
                        let old_f = old_machine.and_then(|m| m.get("features"));
                        let new_f = new_machine.and_then(|m| m.get("features"));
                        for feature in changed_keys(old_f, new_f) {
                            if !IMMEDIATE_FEATURE_KEYS.contains(&feature.as_str()) {
                                blocked.push(format!(".machine.features.{feature}"));
                            }
                        }
                    } else if !IMMEDIATE_MACHINE_KEYS.contains(&machine_key.as_str()) {
                        blocked.push(format!(".machine.{machine_key}"));
                    }
                }
            }
            other => blocked.push(format!(".{other}")),
        }
    }
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(Refusal(format!(
            "this config change can't be applied in immediate mode\ndiff:\n{}",
            config_diff(&old.text, &new.text)
        )))
    }
}

/// A unified diff of two configs (empty when equal).
pub fn config_diff(old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .header("a/config", "b/config")
        .to_string()
}

/// The command line the installer builds: base arguments, then extra ones; `-arg` removes every
/// `arg` and `arg=…`, `-arg=value` removes that exact argument.
pub fn compose_cmdline(base: &str, extra: &[String]) -> String {
    let mut args: Vec<String> = base.split_whitespace().map(str::to_owned).collect();
    for arg in extra {
        if let Some(removed) = arg.strip_prefix('-') {
            if removed.contains('=') {
                args.retain(|a| a != removed);
            } else {
                let prefix = format!("{removed}=");
                args.retain(|a| a != removed && !a.starts_with(&prefix));
            }
        } else {
            args.push(arg.clone());
        }
    }
    args.join(" ")
}

/// `/sys/module/amdgpu/parameters/cwsr_enable` for a command line: `0` when the last
/// `amdgpu.cwsr_enable=` on it is `0`, else the driver default `1`.
pub fn cwsr_enable(cmdline: &str) -> &'static str {
    match cmdline
        .split_whitespace()
        .filter_map(|a| a.strip_prefix("amdgpu.cwsr_enable="))
        .next_back()
    {
        Some("0") => "0",
        _ => "1",
    }
}

/// Module parameters of the fake node's amdgpu besides `cwsr_enable`, with the driver's
/// defaults (`amdgpu_drv.c`): integers the kernel prints as given on the command line.
const AMDGPU_PARAMETER_DEFAULTS: &[(&str, &str)] = &[
    ("gpu_recovery", "-1"),
    ("gttsize", "-1"),
    ("runpm", "-1"),
    ("mes", "0"),
];

/// `/sys/module/amdgpu/parameters/NAME` for a command line: the last `amdgpu.NAME=` value on
/// it, else the default; `None` for a parameter this amdgpu does not have.
pub fn amdgpu_parameter(cmdline: &str, name: &str) -> Option<String> {
    if name == "cwsr_enable" {
        return Some(cwsr_enable(cmdline).to_owned());
    }
    let default = AMDGPU_PARAMETER_DEFAULTS
        .iter()
        .find(|(known, _)| *known == name)?
        .1;
    let prefix = format!("amdgpu.{name}=");
    Some(
        cmdline
            .split_whitespace()
            .filter_map(|a| a.strip_prefix(prefix.as_str()))
            .next_back()
            .unwrap_or(default)
            .to_owned(),
    )
}

/// An installed system extension as `ExtensionStatuses` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub version: String,
    pub description: String,
}

fn extensions_of(schematic: &Schematic) -> Vec<Extension> {
    schematic
        .customization
        .system_extensions
        .official_extensions
        .iter()
        .map(|full| {
            let name = full.rsplit('/').next().unwrap_or(full).to_owned();
            let (version, description) = match name.as_str() {
                "amdgpu" => (
                    "20251021-v1.12.1",
                    "AMD GPU driver kernel module and firmware",
                ),
                "amd-ucode" => ("20251021", "AMD microcode binaries"),
                _ => ("1.0.0", "system extension"),
            };
            Extension {
                name,
                version: version.to_owned(),
                description: description.to_owned(),
            }
        })
        .collect()
}

/// Everything the node is right now.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub hostname: String,
    pub talos_version: String,
    pub booted_with_uki: bool,
    /// The active config (COSI `v1alpha1`); differs from `persistent` during TRY or after STAGED.
    pub running: Config,
    /// The config on disk (COSI `persistent`), what the next boot uses.
    pub persistent: Config,
    pub base_cmdline: String,
    /// `/proc/cmdline`.
    pub cmdline: String,
    pub schematic_id: String,
    pub extensions: Vec<Extension>,
    /// Answers calls (false while rebooting).
    pub up: bool,
    /// Boots completed since the fake started.
    pub boots: u32,
    /// Bumped by every apply; a TRY revert only fires if nothing was applied after it.
    pub apply_generation: u64,
    /// A TRY config is active and will be reverted.
    pub try_pending: bool,
}

impl NodeState {
    /// The node as booted from the scenario (its command line built from its schematic or config).
    pub fn boot(scenario: &Scenario, schematic_id: String) -> Result<NodeState, Refusal> {
        let config = Config::parse(&scenario.config_yaml)?;
        let cmdline = installed_cmdline(
            scenario.booted_with_uki,
            &config,
            &scenario.base_cmdline,
            &scenario.schematic,
        );
        Ok(NodeState {
            hostname: scenario.hostname.clone(),
            talos_version: scenario.talos_version.clone(),
            booted_with_uki: scenario.booted_with_uki,
            running: config.clone(),
            persistent: config,
            base_cmdline: scenario.base_cmdline.clone(),
            cmdline,
            schematic_id,
            extensions: extensions_of(&scenario.schematic),
            up: true,
            boots: 1,
            apply_generation: 0,
            try_pending: false,
        })
    }

    /// A reboot: the persisted config becomes active; the boot entry (so the command line) stays.
    pub fn finish_reboot(&mut self) {
        self.running = self.persistent.clone();
        self.try_pending = false;
        self.boots += 1;
        self.up = true;
    }

    /// An upgrade's reboot into a new installer: new schematic, version and command line.
    pub fn finish_upgrade(&mut self, schematic_id: String, schematic: &Schematic, version: String) {
        self.running = self.persistent.clone();
        self.cmdline = installed_cmdline(
            self.booted_with_uki,
            &self.persistent,
            &self.base_cmdline,
            schematic,
        );
        self.schematic_id = schematic_id;
        self.extensions = extensions_of(schematic);
        self.talos_version = version;
        self.try_pending = false;
        self.boots += 1;
        self.up = true;
    }

    /// `/sys/module/amdgpu/parameters/cwsr_enable`.
    pub fn cwsr_enable(&self) -> &'static str {
        cwsr_enable(&self.cmdline)
    }
}

/// The command line an install or upgrade writes: from the UKI (schematic) on systemd-boot or
/// with `grubUseUKICmdline`, else built on the host from `machine.install.extraKernelArgs`.
pub fn installed_cmdline(
    booted_with_uki: bool,
    config: &Config,
    base: &str,
    schematic: &Schematic,
) -> String {
    if booted_with_uki || config.grub_use_uki_cmdline() {
        compose_cmdline(base, &schematic.customization.extra_kernel_args)
    } else {
        compose_cmdline(base, &config.extra_kernel_args())
    }
}

/// Parses an installer image `<host[:port]>/metal-installer/<schematic id>:<version>` (or the
/// legacy `installer/`) into (registry host, schematic id, version).
pub fn parse_installer_image(image: &str) -> Option<(String, String, String)> {
    let (repository, version) = image.rsplit_once(':')?;
    if version.contains('/') || version.is_empty() {
        return None;
    }
    let mut parts = repository.splitn(3, '/');
    let host = parts.next()?;
    let name = parts.next()?;
    let id = parts.next()?;
    if !matches!(name, "metal-installer" | "installer") || id.is_empty() || id.contains('/') {
        return None;
    }
    Some((host.to_owned(), id.to_owned(), version.to_owned()))
}

/// A duration as Go's `time.Duration.String()` writes it (`1m0s`, `30s`, `1.5s`, `500ms`).
pub fn go_duration(duration: Duration) -> String {
    let total_ms = duration.as_millis();
    if total_ms == 0 {
        return "0s".to_owned();
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let hours = total_ms / 3_600_000;
    let minutes = (total_ms / 60_000) % 60;
    let seconds_ms = total_ms % 60_000;
    let seconds = if seconds_ms.is_multiple_of(1000) {
        format!("{}s", seconds_ms / 1000)
    } else {
        let text = format!("{}.{:03}", seconds_ms / 1000, seconds_ms % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}")
    } else {
        seconds
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn config_and_image_parsers_never_panic(text in any::<String>()) {
            let _ = Config::parse(&text);
            let _ = parse_installer_image(&text);
            let _ = compose_cmdline(&text, std::slice::from_ref(&text));
            let _ = cwsr_enable(&text);
        }

        #[test]
        fn mutated_configs_never_panic(cut in 0usize..4000, insert in "[-:{}\\[\\] \n]{0,4}") {
            let base = config_v1_12(true, &[]);
            let mut cut = cut.min(base.len());
            while !base.is_char_boundary(cut) { cut -= 1; }
            let mutated = format!("{}{insert}{}", &base[..cut], &base[cut..]);
            if let Ok(config) = Config::parse(&mutated) {
                let _ = config.validate(true);
                let _ = config.extra_kernel_args();
            }
        }
    }

    #[test]
    fn scenarios_parse_and_boot_with_their_own_command_lines() {
        let uki = Scenario::uki();
        let node = NodeState::boot(&uki, "id".to_owned()).unwrap();
        assert!(
            node.cmdline
                .ends_with(" amd_iommu=off ttm.pages_limit=25165824")
        );
        assert_eq!(node.cwsr_enable(), "1");
        assert!(node.running.grub_use_uki_cmdline());

        let legacy = Scenario::legacy_grub();
        let node = NodeState::boot(&legacy, "id".to_owned()).unwrap();
        assert!(node.cmdline.ends_with(" amd_iommu=off"));
        assert!(!node.running.grub_use_uki_cmdline());
        assert_eq!(node.running.extra_kernel_args(), vec!["amd_iommu=off"]);
    }

    #[test]
    fn configs_without_v1alpha1_or_broken_yaml_are_refused_with_talos_texts() {
        let only_hostname = "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n";
        assert_eq!(
            Config::parse(only_hostname).unwrap_err().0,
            "the applied machine configuration doesn't contain v1alpha1 config, did you mean to patch the machine config instead?"
        );
        assert!(Config::parse("machine: [\n").is_err());
        assert_eq!(
            Config::parse("machine: {}\n").unwrap_err().0,
            "missing kind"
        );
    }

    #[test]
    fn extra_kernel_args_with_grub_uki_cmdline_is_an_error_and_on_uki_a_warning() {
        let both = Config::parse(&config_v1_12(true, &["amdgpu.cwsr_enable=0"])).unwrap();
        assert!(both.validate(false).unwrap_err().0.contains(
            "install.extraKernelArgs and install.grubUseUKICmdline can't be used together"
        ));
        let legacy_on_uki = Config::parse(&config_v1_12(false, &["amdgpu.cwsr_enable=0"])).unwrap();
        assert_eq!(
            legacy_on_uki.validate(true).unwrap(),
            vec!["extra kernel arguments are not supported when booting using SDBoot"]
        );
        assert!(legacy_on_uki.validate(false).unwrap().is_empty());
    }

    #[test]
    fn install_edits_are_immediate_but_machine_type_is_not() {
        let old = Config::parse(&config_v1_11(&[])).unwrap();
        let args = Config::parse(&config_v1_11(&["amdgpu.cwsr_enable=0"])).unwrap();
        assert!(can_apply_immediate(&old, &args).is_ok());
        let retyped =
            Config::parse(&old.text.replace("type: worker", "type: controlplane")).unwrap();
        let refusal = can_apply_immediate(&old, &retyped).unwrap_err().0;
        assert!(
            refusal.starts_with("this config change can't be applied in immediate mode\ndiff:\n")
        );
        assert!(refusal.contains("+    type: controlplane"));
    }

    #[test]
    fn command_line_composition_appends_and_removes() {
        let base = "console=tty0 console=ttyS0 quiet";
        assert_eq!(
            compose_cmdline(base, &["-console".into(), "a=1".into()]),
            "quiet a=1"
        );
        assert_eq!(
            compose_cmdline(base, &["-console=tty0".into()]),
            "console=ttyS0 quiet"
        );
        assert_eq!(cwsr_enable("x amdgpu.cwsr_enable=0"), "0");
        assert_eq!(
            cwsr_enable("amdgpu.cwsr_enable=0 amdgpu.cwsr_enable=1"),
            "1"
        );
        assert_eq!(cwsr_enable("quiet"), "1");
    }

    #[test]
    fn installer_images_parse() {
        assert_eq!(
            parse_installer_image("127.0.0.1:4000/metal-installer/abc:v1.12.1"),
            Some(("127.0.0.1:4000".into(), "abc".into(), "v1.12.1".into()))
        );
        assert_eq!(
            parse_installer_image("factory.talos.dev/installer/abc:v1.11.5"),
            Some(("factory.talos.dev".into(), "abc".into(), "v1.11.5".into()))
        );
        assert_eq!(
            parse_installer_image("127.0.0.1:4000/metal-installer/abc"),
            None
        );
        assert_eq!(
            parse_installer_image("ghcr.io/siderolabs/installer:v1.12.1"),
            None
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(3720)), "1h2m0s");
    }
}
