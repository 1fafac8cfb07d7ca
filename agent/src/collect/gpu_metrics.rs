//! `device/gpu_metrics`: the SMU metrics blob, decoded by its header (v2.1–v2.4, v3.0) with a C layout check.
//!
//! Each layout below is the field list of a `struct gpu_metrics_vX_Y` from the kernel's
//! `include/kgd_pp_interface.h`, written from that header as known to us; offsets follow C's
//! natural alignment (what `#[repr(C)]` would give: u64 on 8, u32 on 4, padding before a wider
//! field and at the end). The computed size must equal the blob's `structure_size`, otherwise
//! nothing is decoded: a different kernel's struct is never misread.
//!
//! What was checked: the member lists and order of v2.1, v2.2, v2.3, v2.4 and v3.0 were
//! compared line by line with the kernel's `kgd_pp_interface.h`; the sizes (v2.1 120, v2.2
//! 128, v2.3 152, v2.4 168, v3.0 264 bytes) are computed from them by the C rules above and
//! have NOT been compared with a `structure_size` read from real hardware. v2.0 is left
//! unsupported on purpose: the header itself calls it "not naturally aligned" (its u64 sits
//! right after the 4-byte header), so its real offsets depend on the firmware's packing. A
//! mismatch on a real node shows up as an unsupported blob with a problem entry, not as
//! wrong numbers.

use std::path::Path;

use super::Reader;
use nodectl_model::snapshot::{GpuMetrics, MetricField};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    U16,
    U32,
    U64,
}

impl Ty {
    pub const fn size(self) -> usize {
        match self {
            Ty::U16 => 2,
            Ty::U32 => 4,
            Ty::U64 => 8,
        }
    }

    /// The all-ones value firmware writes for "not supported".
    pub const fn absent(self) -> u64 {
        match self {
            Ty::U16 => 0xFFFF,
            Ty::U32 => 0xFFFF_FFFF,
            Ty::U64 => u64::MAX,
        }
    }
}

/// One member of a metrics struct; `count` > 1 for arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub name: &'static str,
    pub ty: Ty,
    pub count: usize,
}

const fn m(name: &'static str, ty: Ty, count: usize) -> Member {
    Member { name, ty, count }
}

use Ty::{U16, U32, U64};

/// Bytes of `struct metrics_table_header { u16 structure_size; u8 format_revision; u8 content_revision; }`.
pub const HEADER_BYTES: usize = 4;

/// `struct gpu_metrics_v2_1` (Renoir/Van Gogh/Rembrandt-era APUs; Strix on older kernels).
const V2_1: &[Member] = &[
    m("temperature_gfx", U16, 1),
    m("temperature_soc", U16, 1),
    m("temperature_core", U16, 8),
    m("temperature_l3", U16, 2),
    m("average_gfx_activity", U16, 1),
    m("average_mm_activity", U16, 1),
    m("system_clock_counter", U64, 1),
    m("average_socket_power", U16, 1),
    m("average_cpu_power", U16, 1),
    m("average_soc_power", U16, 1),
    m("average_gfx_power", U16, 1),
    m("average_core_power", U16, 8),
    m("average_gfxclk_frequency", U16, 1),
    m("average_socclk_frequency", U16, 1),
    m("average_uclk_frequency", U16, 1),
    m("average_fclk_frequency", U16, 1),
    m("average_vclk_frequency", U16, 1),
    m("average_dclk_frequency", U16, 1),
    m("current_gfxclk", U16, 1),
    m("current_socclk", U16, 1),
    m("current_uclk", U16, 1),
    m("current_fclk", U16, 1),
    m("current_vclk", U16, 1),
    m("current_dclk", U16, 1),
    m("current_coreclk", U16, 8),
    m("current_l3clk", U16, 2),
    m("throttle_status", U32, 1),
    m("fan_pwm", U16, 1),
    m("padding", U16, 3),
];

/// v2.2 = v2.1 + `indep_throttle_status`.
const V2_2_TAIL: &[Member] = &[m("indep_throttle_status", U64, 1)];
/// v2.3 = v2.2 + average temperatures.
const V2_3_TAIL: &[Member] = &[
    m("average_temperature_gfx", U16, 1),
    m("average_temperature_soc", U16, 1),
    m("average_temperature_core", U16, 8),
    m("average_temperature_l3", U16, 2),
];
/// v2.4 = v2.3 + voltages and currents.
const V2_4_TAIL: &[Member] = &[
    m("average_cpu_voltage", U16, 1),
    m("average_soc_voltage", U16, 1),
    m("average_gfx_voltage", U16, 1),
    m("average_cpu_current", U16, 1),
    m("average_soc_current", U16, 1),
    m("average_gfx_current", U16, 1),
];

/// `struct gpu_metrics_v3_0` (smu_v14_0_0: Strix, Strix Halo, Krackan).
pub const V3_0: &[Member] = &[
    m("temperature_gfx", U16, 1),
    m("temperature_soc", U16, 1),
    m("temperature_core", U16, 16),
    m("temperature_skin", U16, 1),
    m("average_gfx_activity", U16, 1),
    m("average_vcn_activity", U16, 1),
    m("average_ipu_activity", U16, 8),
    m("average_core_c0_activity", U16, 16),
    m("average_dram_reads", U16, 1),
    m("average_dram_writes", U16, 1),
    m("average_ipu_reads", U16, 1),
    m("average_ipu_writes", U16, 1),
    m("system_clock_counter", U64, 1),
    m("average_socket_power", U32, 1),
    m("average_ipu_power", U16, 1),
    m("average_apu_power", U32, 1),
    m("average_gfx_power", U32, 1),
    m("average_dgpu_power", U32, 1),
    m("average_all_core_power", U32, 1),
    m("average_core_power", U16, 16),
    m("average_sys_power", U16, 1),
    m("stapm_power_limit", U16, 1),
    m("current_stapm_power_limit", U16, 1),
    m("average_gfxclk_frequency", U16, 1),
    m("average_socclk_frequency", U16, 1),
    m("average_vpeclk_frequency", U16, 1),
    m("average_ipuclk_frequency", U16, 1),
    m("average_fclk_frequency", U16, 1),
    m("average_vclk_frequency", U16, 1),
    m("average_uclk_frequency", U16, 1),
    m("average_mpipu_frequency", U16, 1),
    m("current_coreclk", U16, 16),
    m("current_core_maxfreq", U16, 1),
    m("current_gfx_maxfreq", U16, 1),
    m("throttle_residency_prochot", U32, 1),
    m("throttle_residency_spl", U32, 1),
    m("throttle_residency_fppt", U32, 1),
    m("throttle_residency_sppt", U32, 1),
    m("throttle_residency_thm_core", U32, 1),
    m("throttle_residency_thm_gfx", U32, 1),
    m("throttle_residency_thm_soc", U32, 1),
    m("time_filter_alphavalue", U32, 1),
];

/// The member lists of a decodable (format, content) revision, in struct order.
pub fn layout(format: u8, content: u8) -> Option<Vec<&'static [Member]>> {
    Some(match (format, content) {
        (2, 1) => vec![V2_1],
        (2, 2) => vec![V2_1, V2_2_TAIL],
        (2, 3) => vec![V2_1, V2_2_TAIL, V2_3_TAIL],
        (2, 4) => vec![V2_1, V2_2_TAIL, V2_3_TAIL, V2_4_TAIL],
        (3, 0) => vec![V3_0],
        _ => return None,
    })
}

/// Every member with its byte offset, and the struct's total size (C rules, header included).
pub fn place(parts: &[&'static [Member]]) -> (Vec<(Member, usize)>, usize) {
    let mut offset = HEADER_BYTES;
    let mut max_align = 2;
    let mut placed = Vec::new();
    for member in parts.iter().flat_map(|p| p.iter()) {
        let align = member.ty.size();
        max_align = max_align.max(align);
        offset = offset.next_multiple_of(align);
        placed.push((*member, offset));
        offset += align * member.count;
    }
    (placed, offset.next_multiple_of(max_align))
}

fn read_le(bytes: &[u8], offset: usize, ty: Ty) -> Option<u64> {
    let slice = bytes.get(offset..offset + ty.size())?;
    let mut buf = [0u8; 8];
    buf.get_mut(..slice.len())?.copy_from_slice(slice);
    Some(u64::from_le_bytes(buf))
}

/// Decodes a blob. The metrics come back even when not decodable (header only, `supported:
/// false`); the second value then says why, for a `problems` entry, unless the revision is
/// simply one this agent does not know.
pub fn decode(bytes: &[u8]) -> Result<(GpuMetrics, Option<String>), String> {
    let [size_lo, size_hi, format, content, ..] = *bytes else {
        return Err(format!(
            "{} bytes: shorter than the {HEADER_BYTES}-byte header",
            bytes.len()
        ));
    };
    let structure_size = u16::from_le_bytes([size_lo, size_hi]);
    let mut metrics = GpuMetrics {
        structure_size: u32::from(structure_size),
        format_revision: u32::from(format),
        content_revision: u32::from(content),
        supported: false,
        fields: Vec::new(),
    };
    let Some(parts) = layout(format, content) else {
        return Ok((metrics, None));
    };
    let (placed, size) = place(&parts);
    if usize::from(structure_size) != size {
        return Ok((
            metrics,
            Some(format!(
                "v{format}.{content} structure_size is {structure_size} bytes, the known layout has {size}: not decoded"
            )),
        ));
    }
    if bytes.len() < size {
        return Ok((
            metrics,
            Some(format!(
                "v{format}.{content} needs {size} bytes, the file has {}: not decoded",
                bytes.len()
            )),
        ));
    }
    for (member, offset) in placed {
        if member.name.starts_with("padding") {
            continue;
        }
        let values: Vec<Option<u64>> = (0..member.count)
            .map(|i| {
                read_le(bytes, offset + i * member.ty.size(), member.ty)
                    .filter(|v| *v != member.ty.absent())
            })
            .collect();
        if values.iter().any(Option::is_some) {
            metrics.fields.push(MetricField {
                name: member.name.to_owned(),
                values,
            });
        }
    }
    metrics.supported = true;
    Ok((metrics, None))
}

/// Builds a blob of a known revision from named values; every other member reads absent
/// (all ones), padding reads zero. For fixtures and tests.
pub fn encode(format: u8, content: u8, values: &[(&str, &[u64])]) -> Result<Vec<u8>, String> {
    let parts = layout(format, content).ok_or(format!("v{format}.{content} is not known"))?;
    let (placed, size) = place(&parts);
    let mut bytes = vec![0u8; size];
    let structure_size = u16::try_from(size).map_err(|_| "layout too large".to_owned())?;
    bytes[..2].copy_from_slice(&structure_size.to_le_bytes());
    bytes[2] = format;
    bytes[3] = content;
    for (name, _) in values {
        if !placed.iter().any(|(m, _)| m.name == *name) {
            return Err(format!("no member {name} in v{format}.{content}"));
        }
    }
    for (member, offset) in placed {
        let given = values
            .iter()
            .find(|(n, _)| *n == member.name)
            .map(|(_, v)| *v);
        if let Some(v) = given
            && v.len() > member.count
        {
            return Err(format!(
                "{}: {} values for {} elements",
                member.name,
                v.len(),
                member.count
            ));
        }
        for i in 0..member.count {
            let value = match given {
                Some(v) => v.get(i).copied().unwrap_or(member.ty.absent()),
                None if member.name.starts_with("padding") => 0,
                None => member.ty.absent(),
            };
            if value > member.ty.absent() {
                return Err(format!("{}: {value} does not fit", member.name));
            }
            let at = offset + i * member.ty.size();
            let le = value.to_le_bytes();
            bytes[at..at + member.ty.size()].copy_from_slice(&le[..member.ty.size()]);
        }
    }
    Ok(bytes)
}

/// Reads and decodes `device/gpu_metrics`; `None` when the card has none.
pub fn collect(reader: &mut Reader<'_>, device: &Path) -> Option<GpuMetrics> {
    let path = device.join("gpu_metrics");
    let bytes = reader.bytes(&path)?;
    match decode(&bytes) {
        Ok((metrics, problem)) => {
            if let Some(reason) = problem {
                reader.problem(&path, reason);
            }
            Some(metrics)
        }
        Err(reason) => {
            reader.problem(&path, reason);
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes_follow_c_alignment() {
        let size = |f, c| place(&layout(f, c).unwrap()).1;
        assert_eq!(size(3, 0), 264);
        assert_eq!(size(2, 1), 120);
        assert_eq!(size(2, 2), 128);
        assert_eq!(size(2, 3), 152);
        assert_eq!(size(2, 4), 168);
        // The u64 after the v3.0 utilisation block sits on 8 (2 bytes of padding before it).
        let (placed, _) = place(&layout(3, 0).unwrap());
        let counter = placed
            .iter()
            .find(|(m, _)| m.name == "system_clock_counter")
            .unwrap();
        assert_eq!(counter.1, 104);
        let apu = placed
            .iter()
            .find(|(m, _)| m.name == "average_apu_power")
            .unwrap();
        assert_eq!(apu.1, 120);
    }

    #[test]
    fn v3_round_trip_with_absent_values() {
        let blob = encode(
            3,
            0,
            &[
                ("temperature_gfx", &[4200]),
                ("average_gfxclk_frequency", &[2900]),
                ("temperature_core", &[5000, 5100]),
                ("system_clock_counter", &[123_456_789]),
            ],
        )
        .unwrap();
        let (metrics, problem) = decode(&blob).unwrap();
        assert_eq!(problem, None);
        assert!(metrics.supported);
        assert_eq!(metrics.structure_size, 264);
        assert_eq!(metrics.value("temperature_gfx"), Some(4200));
        assert_eq!(metrics.value("average_gfxclk_frequency"), Some(2900));
        assert_eq!(metrics.value("system_clock_counter"), Some(123_456_789));
        assert_eq!(metrics.value("average_socket_power"), None);
        let cores = metrics
            .fields
            .iter()
            .find(|f| f.name == "temperature_core")
            .unwrap();
        assert_eq!(cores.values.len(), 16);
        assert_eq!(cores.values[1], Some(5100));
        assert_eq!(cores.values[2], None);
        assert_eq!(metrics.fields.len(), 4);
    }

    #[test]
    fn v2_revisions_decode() {
        for content in 1..=4 {
            let blob = encode(2, content, &[("current_gfxclk", &[600])]).unwrap();
            let (metrics, problem) = decode(&blob).unwrap();
            assert_eq!(problem, None);
            assert_eq!(metrics.value("current_gfxclk"), Some(600));
        }
    }

    #[test]
    fn unknown_revision_is_reported_with_its_header() {
        let (metrics, problem) = decode(&[0x40, 0x00, 1, 3, 0, 0]).unwrap();
        assert!(!metrics.supported);
        assert_eq!(
            (
                metrics.structure_size,
                metrics.format_revision,
                metrics.content_revision
            ),
            (64, 1, 3)
        );
        assert!(metrics.fields.is_empty());
        assert_eq!(problem, None);
    }

    #[test]
    fn size_mismatch_and_short_file_are_not_decoded() {
        let mut blob = encode(3, 0, &[("temperature_gfx", &[1])]).unwrap();
        blob[0] = 0x10; // structure_size 0x0110 = 272
        let (metrics, problem) = decode(&blob).unwrap();
        assert!(!metrics.supported);
        assert!(problem.unwrap().contains("272"));
        let blob = encode(3, 0, &[]).unwrap();
        let (metrics, problem) = decode(&blob[..100]).unwrap();
        assert!(!metrics.supported);
        assert!(problem.unwrap().contains("100"));
        assert!(decode(&[1, 2]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoder_survives_mutations(
            edits in proptest::collection::vec((0usize..264, proptest::num::u8::ANY), 1..8),
            cut in 0usize..300,
            content in 0u8..5,
        ) {
            let (format, content) = if content == 0 { (3, 0) } else { (2, content) };
            let mut blob = encode(format, content, &[("average_gfxclk_frequency", &[1000])]).unwrap_or_default();
            for (pos, byte) in edits {
                if let Some(b) = blob.get_mut(pos) {
                    *b = byte;
                }
            }
            blob.truncate(cut);
            let _ = decode(&blob);
        }
    }
}
