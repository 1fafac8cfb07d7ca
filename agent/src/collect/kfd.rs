//! KFD topology: `/sys/class/kfd/kfd/topology/nodes/N/{gpu_id,name,properties}`.

use std::collections::BTreeMap;

use super::{Reader, clip, parse_number};
use nodectl_model::snapshot::KfdNode;

/// Parses `properties`: one `key value` line each, decimal values; unknown keys are kept.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("line {}: no value: {:?}", number + 1, clip(line)))?;
        let value = value.trim().parse::<u64>().map_err(|_| {
            format!(
                "line {}: {key}: not a decimal integer: {:?}",
                number + 1,
                clip(value.trim())
            )
        })?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// `gfx_target_version` (decimal MMmmss) → `gfx1151` (stepping in hex); 0 (a CPU node) → `None`.
pub fn gfx_target_name(version: u64) -> Option<String> {
    if version == 0 {
        return None;
    }
    let major = version / 10_000;
    let minor = (version / 100) % 100;
    let stepping = version % 100;
    Some(format!("gfx{major}{minor}{stepping:x}"))
}

/// PCI location as KFD encodes it in `location_id`: bus << 8 | device << 3 | function.
pub fn location_id_of_bdf(bdf: &str) -> Option<(u64, u64)> {
    // `0000:c1:00.0`
    let (domain, rest) = bdf.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let domain = u64::from_str_radix(domain, 16).ok()?;
    let bus = u64::from_str_radix(bus, 16).ok()?;
    let device = u64::from_str_radix(device, 16).ok()?;
    let function = u64::from_str_radix(function, 16).ok()?;
    if bus > 0xff || device > 0x1f || function > 7 {
        return None;
    }
    Some((domain, bus << 8 | device << 3 | function))
}

/// The PCI address (`0000:c1:00.0`) of KFD's `domain` and `location_id`: the inverse of
/// [`location_id_of_bdf`].
pub fn bdf_of_location_id(domain: u64, location: u64) -> String {
    format!(
        "{domain:04x}:{:02x}:{:02x}.{:x}",
        (location >> 8) & 0xff,
        (location >> 3) & 0x1f,
        location & 7
    )
}

/// The KFD node of a card: same PCI location (`domain`, `location_id`) as its BDF, else the
/// same DRM render minor.
pub fn node_for_card<'a>(
    bdf: Option<&str>,
    render_minor: Option<u32>,
    nodes: &'a [KfdNode],
) -> Option<&'a KfdNode> {
    let gpus = || nodes.iter().filter(|n| n.gfx_target.is_some());
    if let Some((domain, location)) = bdf.and_then(location_id_of_bdf)
        && let Some(node) = gpus().find(|n| {
            n.properties.get("location_id") == Some(&location)
                && n.properties.get("domain").copied().unwrap_or(0) == domain
        })
    {
        return Some(node);
    }
    let minor = u64::from(render_minor?);
    gpus().find(|n| n.properties.get("drm_render_minor") == Some(&minor))
}

pub fn collect(reader: &mut Reader<'_>) -> Vec<KfdNode> {
    let dir = reader.root.path("/sys/class/kfd/kfd/topology/nodes");
    let mut out = Vec::new();
    for (name, path) in reader.dir(&dir).unwrap_or_default() {
        let Ok(node_id) = name.parse::<u32>() else {
            continue;
        };
        let properties = reader
            .parsed(&path.join("properties"), parse_properties)
            .unwrap_or_default();
        let gpu_id = reader
            .parsed(&path.join("gpu_id"), parse_number::<u32>)
            .unwrap_or(0);
        out.push(KfdNode {
            node_id,
            gpu_id,
            name: reader.line(&path.join("name")),
            gfx_target: properties
                .get("gfx_target_version")
                .and_then(|v| gfx_target_name(*v)),
            has_cwsr_size: properties.contains_key("cwsr_size"),
            properties,
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn gfx_names() {
        assert_eq!(gfx_target_name(110501).as_deref(), Some("gfx1151"));
        assert_eq!(gfx_target_name(110500).as_deref(), Some("gfx1150"));
        assert_eq!(gfx_target_name(90010).as_deref(), Some("gfx90a"));
        assert_eq!(gfx_target_name(110003).as_deref(), Some("gfx1103"));
        assert_eq!(gfx_target_name(0), None);
        assert!(gfx_target_name(u64::MAX).is_some());
    }

    #[test]
    fn properties_keep_unknown_keys() {
        let props =
            parse_properties("simd_count 80\ngfx_target_version 110501\nfuture_key 7\n").unwrap();
        assert_eq!(props["gfx_target_version"], 110501);
        assert_eq!(props["future_key"], 7);
        assert_eq!(
            parse_properties("simd_count 80\nlocation_id -3\n"),
            Err("line 2: location_id: not a decimal integer: \"-3\"".to_owned())
        );
        assert!(parse_properties("lonely\n").is_err());
    }

    #[test]
    fn bdf_to_location_id() {
        assert_eq!(location_id_of_bdf("0000:c1:00.0"), Some((0, 49408)));
        assert_eq!(location_id_of_bdf("0001:09:00.1"), Some((1, 0x0901)));
        assert_eq!(location_id_of_bdf("nonsense"), None);
        for bdf in ["0000:c1:00.0", "0001:09:1f.7"] {
            let (domain, location) = location_id_of_bdf(bdf).unwrap();
            assert_eq!(bdf_of_location_id(domain, location), bdf);
        }
    }

    proptest::proptest! {
        #[test]
        fn properties_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_properties(&String::from_utf8_lossy(&bytes));
            let _ = location_id_of_bdf(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn properties_parser_survives_mutations(pos in 0usize..100, byte in proptest::num::u8::ANY) {
            let mut bytes = b"simd_count 80\ngfx_target_version 110501\nlocation_id 49408\n".to_vec();
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = parse_properties(&String::from_utf8_lossy(&bytes));
        }
    }
}
