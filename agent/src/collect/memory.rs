//! VRAM and GTT sizes: `device/mem_info_{vram,vis_vram,gtt}_{total,used}` (bytes, decimal).

use std::path::Path;

use super::{Reader, parse_number};
use nodectl_model::snapshot::Memory;

pub fn collect(reader: &mut Reader<'_>, device: &Path) -> Memory {
    let mut read = |file: &str| reader.parsed(&device.join(file), parse_number::<u64>);
    Memory {
        vram_total_bytes: read("mem_info_vram_total"),
        vram_used_bytes: read("mem_info_vram_used"),
        vis_vram_total_bytes: read("mem_info_vis_vram_total"),
        vis_vram_used_bytes: read("mem_info_vis_vram_used"),
        gtt_total_bytes: read("mem_info_gtt_total"),
        gtt_used_bytes: read("mem_info_gtt_used"),
    }
}
