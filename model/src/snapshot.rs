//! The node snapshot as agent and client hold it; its serde form is nodectl's documented JSON shape.
//!
//! Keys are snake_case. A value the node does not expose (missing file) is left out of the JSON
//! rather than printed as `null`; an unreadable or malformed file is a `problems` entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::kernel_args::KernelArgument;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub agent_version: String,
    /// RFC 3339 UTC.
    pub taken_at: String,
    pub host: Host,
    /// Cards bound to amdgpu, in card-number order. Empty: no amdgpu device found.
    pub cards: Vec<Card>,
    /// `/sys/module/{amdgpu,ttm}/parameters/*` by module, then by file name.
    pub module_parameters: ModuleParameters,
    pub kfd_nodes: Vec<KfdNode>,
    pub findings: Vec<Finding>,
    pub problems: Vec<Problem>,
    /// The LLM inference processes, read once (no CPU or memory trend).
    #[serde(default)]
    pub inference_processes: Vec<crate::inference::InferenceProcess>,
    /// Inference processes found beyond the agent's bound, not listed.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub inference_processes_not_listed: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModuleParameters {
    /// Empty when amdgpu is not loaded.
    pub amdgpu: BTreeMap<String, ParameterValue>,
    pub ttm: BTreeMap<String, ParameterValue>,
}

/// A module parameter typed by the form the kernel prints it in.
///
/// JSON: integers are numbers, `Y`/`N` are booleans, hex and text are strings (`"0xfff7bfff"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterValue {
    /// Signed decimal (`int`, or `uint` below 2^63).
    Integer(i64),
    /// Unsigned decimal above `i64::MAX` (`ulong`).
    Unsigned(u64),
    /// `Y` / `N`.
    Flag(bool),
    /// `0x`-prefixed hexadecimal, as printed (`0xfff7bfff`).
    Hex(String),
    /// Anything else: `lockup_timeout`'s comma list, `(null)`, ...
    Text(String),
}

impl ParameterValue {
    /// Types one parameter file's content (trailing newline ignored). Total: anything that is
    /// not exactly a canonical flag, hex or decimal form is text, so the printed form can always
    /// be rebuilt from the value.
    pub fn parse(content: &str) -> ParameterValue {
        let text = content.strip_suffix('\n').unwrap_or(content);
        match text {
            "Y" => return ParameterValue::Flag(true),
            "N" => return ParameterValue::Flag(false),
            _ => {}
        }
        if let Some(digits) = text.strip_prefix("0x")
            && !digits.is_empty()
            && digits.len() <= 16
            && digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return ParameterValue::Hex(text.to_owned());
        }
        if let Ok(v) = text.parse::<i64>()
            && v.to_string() == text
        {
            return ParameterValue::Integer(v);
        }
        if let Ok(v) = text.parse::<u64>()
            && v.to_string() == text
        {
            return ParameterValue::Unsigned(v);
        }
        ParameterValue::Text(text.to_owned())
    }

    /// The value as the kernel printed it (without the newline).
    pub fn raw(&self) -> String {
        match self {
            ParameterValue::Integer(v) => v.to_string(),
            ParameterValue::Unsigned(v) => v.to_string(),
            ParameterValue::Flag(true) => "Y".to_owned(),
            ParameterValue::Flag(false) => "N".to_owned(),
            ParameterValue::Hex(s) | ParameterValue::Text(s) => s.clone(),
        }
    }

    /// The value of a hex parameter (`None` for other forms).
    pub fn hex_value(&self) -> Option<u64> {
        match self {
            ParameterValue::Hex(s) => u64::from_str_radix(s.get(2..)?, 16).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParameterValue::Integer(v) => Some(*v),
            _ => None,
        }
    }
}

impl Serialize for ParameterValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ParameterValue::Integer(v) => serializer.serialize_i64(*v),
            ParameterValue::Unsigned(v) => serializer.serialize_u64(*v),
            ParameterValue::Flag(v) => serializer.serialize_bool(*v),
            ParameterValue::Hex(s) | ParameterValue::Text(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for ParameterValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Flag(bool),
            Integer(i64),
            Unsigned(u64),
            Text(String),
        }
        Ok(match Form::deserialize(deserializer)? {
            Form::Flag(v) => ParameterValue::Flag(v),
            Form::Integer(v) => ParameterValue::Integer(v),
            Form::Unsigned(v) => ParameterValue::Unsigned(v),
            // A string is hex exactly when the kernel's form would have been read as hex.
            Form::Text(s) => match ParameterValue::parse(&s) {
                hex @ ParameterValue::Hex(_) => hex,
                _ => ParameterValue::Text(s),
            },
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `/proc/sys/kernel/osrelease`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// `/proc/cmdline` as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// `/proc/cmdline` split into arguments, in order (double quotes respected).
    pub kernel_arguments: Vec<KernelArgument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_release: Option<OsRelease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_usec: Option<u64>,
}

impl Host {
    /// The value of the last `key=value` argument named `key` (the kernel lets the last one win).
    pub fn kernel_argument(&self, key: &str) -> Option<&KernelArgument> {
        self.kernel_arguments.iter().rev().find(|a| a.key == key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    /// `VERSION_ID` when `ID=talos`: `v1.12.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talos_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Card {
    /// sysfs name: `card1`.
    pub name: String,
    /// PCI address: `0000:c1:00.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bdf: Option<String>,
    /// `1002:1586`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    /// `gfx1151`, from the KFD node of this card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gfx_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_minor: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vbios_version: Option<String>,
    /// `device/fw_version/*_fw_version` by file name, as printed: `"mes_fw_version": "0x00000080"`.
    pub firmware: BTreeMap<String, String>,
    /// debugfs `amdgpu_firmware_info` lines, when debugfs is mounted.
    pub debugfs_firmware: Vec<DebugfsFirmware>,
    /// `pp_dpm_{sclk,mclk,fclk,socclk}` by domain (`sclk`), levels in file order.
    pub dpm_clocks: BTreeMap<String, Vec<DpmLevel>>,
    /// `power_dpm_force_performance_level`: `auto`, `manual`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_busy_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_busy_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwmon: Option<Hwmon>,
    pub memory: Memory,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_metrics: Option<GpuMetrics>,
    /// Clock/busy readings; one unless sampling was asked for.
    pub samples: Vec<ClockSample>,
}

impl Card {
    /// The sclk levels, when `pp_dpm_sclk` was read.
    pub fn sclk(&self) -> Option<&[DpmLevel]> {
        self.dpm_clocks.get("sclk").map(Vec::as_slice)
    }

    /// MES firmware as printed (`0x00000080`): sysfs first, then debugfs.
    pub fn mes_firmware(&self) -> Option<&str> {
        self.firmware
            .get("mes_fw_version")
            .map(String::as_str)
            .or_else(|| {
                self.debugfs_firmware
                    .iter()
                    .find(|f| f.name == "MES")
                    .map(|f| f.firmware_version.as_str())
            })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugfsFirmware {
    /// `MES`, `SMC`, `TA RAS`, `VBIOS`, ...
    pub name: String,
    /// As printed (decimal, or `0x` hex on TA lines). Empty on the VBIOS line.
    pub feature_version: String,
    /// `0x00000080`; the version string on the VBIOS line.
    pub firmware_version: String,
    /// SMC program number (newer kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpmLevel {
    /// `0`, `1`, ... or `S` for the deep-sleep line.
    pub index: String,
    pub mhz: u32,
    pub current: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hwmon {
    /// `hwmon3`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_edge_millicelsius: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_microwatts: Option<u64>,
    /// `power1_input` or `power1_average`: the file that gave `power_microwatts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sclk_hz: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vddgfx_millivolts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vddnb_millivolts: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vis_vram_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vis_vram_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtt_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtt_used_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMetrics {
    pub structure_size: u32,
    pub format_revision: u32,
    pub content_revision: u32,
    /// False when this revision is not one the agent decodes; `fields` is then empty.
    pub supported: bool,
    /// Decoded fields in layout order; fields whose every element is absent are left out.
    pub fields: Vec<MetricField>,
}

impl GpuMetrics {
    /// The first value of a field, when present.
    pub fn value(&self, name: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.values.first().copied().flatten())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricField {
    /// Kernel name: `average_gfxclk_frequency`.
    pub name: String,
    /// One element for a scalar, every element for an array; `null` where the firmware wrote
    /// 0xFFFF / 0xFFFFFFFF (not supported).
    pub values: Vec<Option<u64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSample {
    /// Milliseconds since the first reading.
    pub offset_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_busy_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sclk_mhz: Option<u32>,
    /// The current sclk level is the lowest one.
    pub sclk_at_lowest_level: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance_level: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KfdNode {
    /// Directory number under `topology/nodes`.
    pub node_id: u32,
    pub gpu_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `gfx1151`; absent for CPU nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gfx_target: Option<String>,
    /// Every `key value` line of `properties`, unknown keys kept.
    pub properties: BTreeMap<String, u64>,
    /// `cwsr_size` is among the properties (the kernel exports the gfx1151 CWSR sizing).
    pub has_cwsr_size: bool,
}

/// How bad a finding is. `Unknown`: the check could not be evaluated because its inputs could
/// not be read; it ranks below critical and above warning, since what it hides may be critical.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Unknown,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Unknown => "unknown",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable id: `mes_firmware_known_bad`.
    pub id: String,
    pub severity: Severity,
    pub title: String,
    /// `what: value (where)` for each value that made the rule fire.
    pub evidence: Vec<String>,
    /// Public issue links.
    pub references: Vec<String>,
    pub remedy: String,
    /// The card it concerns, when it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    /// For a check that could not run (`severity: unknown`): its severity when it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_if_found: Option<Severity>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Host path, without the host-root prefix.
    pub path: String,
    pub reason: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parameter_forms_are_typed() {
        assert_eq!(ParameterValue::parse("-1\n"), ParameterValue::Integer(-1));
        assert_eq!(ParameterValue::parse("0\n"), ParameterValue::Integer(0));
        assert_eq!(ParameterValue::parse("Y\n"), ParameterValue::Flag(true));
        assert_eq!(ParameterValue::parse("N"), ParameterValue::Flag(false));
        assert_eq!(
            ParameterValue::parse("0xfff7bfff\n"),
            ParameterValue::Hex("0xfff7bfff".into())
        );
        assert_eq!(
            ParameterValue::parse("18446744073709551615\n"),
            ParameterValue::Unsigned(u64::MAX)
        );
        assert_eq!(
            ParameterValue::parse("(null)\n"),
            ParameterValue::Text("(null)".into())
        );
        assert_eq!(
            ParameterValue::parse("10000,10000\n"),
            ParameterValue::Text("10000,10000".into())
        );
        // Non-canonical numbers stay text so the printed form survives.
        assert_eq!(
            ParameterValue::parse("+5"),
            ParameterValue::Text("+5".into())
        );
        assert_eq!(
            ParameterValue::parse("0x"),
            ParameterValue::Text("0x".into())
        );
        assert_eq!(
            ParameterValue::parse(""),
            ParameterValue::Text(String::new())
        );
        assert_eq!(
            ParameterValue::parse("0xfff7bfff").hex_value(),
            Some(0xfff7_bfff)
        );
    }

    #[test]
    fn parameter_json_is_number_bool_or_string() {
        let mut map = BTreeMap::new();
        map.insert("cwsr_enable", ParameterValue::Integer(0));
        map.insert("gttsize", ParameterValue::Integer(-1));
        map.insert("flag", ParameterValue::Flag(true));
        map.insert("ppfeaturemask", ParameterValue::Hex("0xfff7bfff".into()));
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(
            json,
            r#"{"cwsr_enable":0,"flag":true,"gttsize":-1,"ppfeaturemask":"0xfff7bfff"}"#
        );
        let back: BTreeMap<&str, ParameterValue> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
    }

    proptest::proptest! {
        #[test]
        fn parameter_parse_is_total_and_keeps_the_printed_form(text in "\\PC*") {
            let value = ParameterValue::parse(&text);
            let expected = text.strip_suffix('\n').unwrap_or(&text);
            proptest::prop_assert_eq!(value.raw(), expected);
        }

        #[test]
        fn parameter_parse_takes_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let value = ParameterValue::parse(&String::from_utf8_lossy(&bytes));
            let _ = value.hex_value();
        }
    }
}
