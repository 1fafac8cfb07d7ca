//! The amdgpu hwmon directory (`device/hwmon/hwmonN` whose `name` is `amdgpu`): temperature, power, sclk, voltages.

use std::path::{Path, PathBuf};

use super::{Reader, parse_number};
use nodectl_model::snapshot::Hwmon;

/// The card's amdgpu hwmon directory (name, path); `None` when it has none. hwmon numbers are
/// handed out at probe, so the directory holds for as long as the driver stays bound.
pub fn find(reader: &mut Reader<'_>, device: &Path) -> Option<(String, PathBuf)> {
    let entries = reader.dir(&device.join("hwmon"))?;
    entries
        .into_iter()
        .find(|(_, dir)| reader.line(&dir.join("name")).as_deref() == Some("amdgpu"))
}

/// The readings of the hwmon directory `dir` named `name` (from [`find`]).
pub fn read(reader: &mut Reader<'_>, name: &str, dir: &Path) -> Hwmon {
    let (power_microwatts, power_source) =
        match reader.parsed(&dir.join("power1_input"), parse_number::<u64>) {
            Some(v) => (Some(v), Some("power1_input".to_owned())),
            None => match reader.parsed(&dir.join("power1_average"), parse_number::<u64>) {
                Some(v) => (Some(v), Some("power1_average".to_owned())),
                None => (None, None),
            },
        };
    Hwmon {
        name: name.to_owned(),
        temp_edge_millicelsius: reader.parsed(&dir.join("temp1_input"), parse_number::<i64>),
        power_microwatts,
        power_source,
        sclk_hz: reader.parsed(&dir.join("freq1_input"), parse_number::<u64>),
        vddgfx_millivolts: reader.parsed(&dir.join("in0_input"), parse_number::<u64>),
        vddnb_millivolts: reader.parsed(&dir.join("in1_input"), parse_number::<u64>),
    }
}
