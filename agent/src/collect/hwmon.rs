//! The amdgpu hwmon directory (`device/hwmon/hwmonN` whose `name` is `amdgpu`): temperature, power, sclk, voltages.

use std::path::Path;

use super::{Reader, parse_number};
use crate::model::Hwmon;

/// `None` when the card has no amdgpu hwmon directory.
pub fn collect(reader: &mut Reader<'_>, device: &Path) -> Option<Hwmon> {
    let entries = reader.dir(&device.join("hwmon"))?;
    for (name, dir) in entries {
        if reader.line(&dir.join("name")).as_deref() != Some("amdgpu") {
            continue;
        }
        let (power_microwatts, power_source) =
            match reader.parsed(&dir.join("power1_input"), parse_number::<u64>) {
                Some(v) => (Some(v), Some("power1_input".to_owned())),
                None => match reader.parsed(&dir.join("power1_average"), parse_number::<u64>) {
                    Some(v) => (Some(v), Some("power1_average".to_owned())),
                    None => (None, None),
                },
            };
        return Some(Hwmon {
            name,
            temp_edge_millicelsius: reader.parsed(&dir.join("temp1_input"), parse_number::<i64>),
            power_microwatts,
            power_source,
            sclk_hz: reader.parsed(&dir.join("freq1_input"), parse_number::<u64>),
            vddgfx_millivolts: reader.parsed(&dir.join("in0_input"), parse_number::<u64>),
            vddnb_millivolts: reader.parsed(&dir.join("in1_input"), parse_number::<u64>),
        });
    }
    None
}
