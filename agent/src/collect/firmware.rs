//! Firmware versions: sysfs `device/fw_version/*_fw_version` and debugfs `dri/N/amdgpu_firmware_info`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Reader, clip};
use nodectl_model::snapshot::DebugfsFirmware;

/// Parses one `fw_version/*` file: `0x%08x` and a newline.
pub fn parse_fw_version(text: &str) -> Result<String, String> {
    let value = text.trim();
    match value.strip_prefix("0x") {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(value.to_owned())
        }
        _ => Err(format!(
            "expected a 0x hex firmware version, found {:?}",
            clip(value)
        )),
    }
}

/// `device/fw_version/*_fw_version` by file name.
pub fn collect_sysfs(reader: &mut Reader<'_>, device: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, path) in reader.dir(&device.join("fw_version")).unwrap_or_default() {
        if !name.ends_with("_fw_version") {
            continue;
        }
        if let Some(version) = reader.parsed(&path, parse_fw_version) {
            out.insert(name, version);
        }
    }
    out
}

/// Parses `amdgpu_firmware_info`. Line forms (amdgpu_kms.c):
/// `<NAME> feature version: <u32>, firmware version: 0x%08x`,
/// `TA <X> feature version: 0x%08x, firmware version: 0x%08x`,
/// SMC with and without `program: %d, ` and with an optional `(%d.%d.%d)` tail,
/// `VBIOS version: <string>`. Other lines (headers, discovery) are skipped; a file where no
/// line is recognised is an error.
pub fn parse_firmware_info(text: &str) -> Result<Vec<DebugfsFirmware>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(version) = line.strip_prefix("VBIOS version:") {
            out.push(DebugfsFirmware {
                name: "VBIOS".to_owned(),
                feature_version: String::new(),
                firmware_version: version.trim().to_owned(),
                program: None,
            });
            continue;
        }
        if let Some(entry) = parse_feature_line(line) {
            out.push(entry);
        }
    }
    if out.is_empty() && !text.trim().is_empty() {
        return Err("no firmware line recognised".to_owned());
    }
    Ok(out)
}

fn parse_feature_line(line: &str) -> Option<DebugfsFirmware> {
    let (name, rest) = line.split_once(" feature version: ")?;
    let (feature_version, rest) = rest.split_once(", ")?;
    let (program, rest) = match rest.strip_prefix("program: ") {
        Some(after) => {
            let (number, rest) = after.split_once(", ")?;
            (Some(number.trim().parse::<u32>().ok()?), rest)
        }
        None => (None, rest),
    };
    let version = rest.strip_prefix("firmware version: ")?;
    let version = version.split_whitespace().next()?;
    parse_fw_version(version).ok()?;
    if name.trim().is_empty() || feature_version.trim().is_empty() {
        return None;
    }
    Some(DebugfsFirmware {
        name: name.trim().to_owned(),
        feature_version: feature_version.trim().to_owned(),
        firmware_version: version.to_owned(),
        program,
    })
}

/// debugfs `dri/<minor>/amdgpu_firmware_info`; empty when debugfs is not mounted.
pub fn collect_debugfs(reader: &mut Reader<'_>, card_minor: u32) -> Vec<DebugfsFirmware> {
    let path = reader
        .root
        .debugfs()
        .join(format!("dri/{card_minor}/amdgpu_firmware_info"));
    reader
        .parsed(&path, parse_firmware_info)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const STRIX_HALO: &str = "\
VCE feature version: 0, firmware version: 0x00000000
ME feature version: 35, firmware version: 0x000007d0
TA RAS feature version: 0x00000000, firmware version: 0x1b000259
SMC feature version: 0, program: 0, firmware version: 0x0a5a2a00 (90.42.0)
SMC feature version: 0, firmware version: 0x00412b00 (65.43.0)
SMC feature version: 0, firmware version: 0x00412b00
MES_KIQ feature version: 6, firmware version: 0x0000006f
MES feature version: 1, firmware version: 0x00000080
VBIOS version: 113-STRXLGEN-001
Discovery binary version: 4.0
";

    #[test]
    fn every_line_form() {
        let entries = parse_firmware_info(STRIX_HALO).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "VCE", "ME", "TA RAS", "SMC", "SMC", "SMC", "MES_KIQ", "MES", "VBIOS"
            ]
        );
        assert_eq!(entries[2].feature_version, "0x00000000");
        assert_eq!(entries[2].firmware_version, "0x1b000259");
        assert_eq!(entries[3].program, Some(0));
        assert_eq!(entries[3].firmware_version, "0x0a5a2a00");
        assert_eq!(entries[4].program, None);
        assert_eq!(entries[4].firmware_version, "0x00412b00");
        assert_eq!(entries[5].firmware_version, "0x00412b00");
        assert_eq!(entries[7].firmware_version, "0x00000080");
        assert_eq!(entries[7].feature_version, "1");
        assert_eq!(entries[8].firmware_version, "113-STRXLGEN-001");
    }

    #[test]
    fn garbage_is_an_error_and_empty_is_nothing() {
        assert!(parse_firmware_info("hello\n").is_err());
        assert_eq!(parse_firmware_info(""), Ok(vec![]));
    }

    #[test]
    fn sysfs_version_form() {
        assert_eq!(parse_fw_version("0x00000080\n").unwrap(), "0x00000080");
        assert!(parse_fw_version("80\n").is_err());
        assert!(parse_fw_version("0x\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn firmware_parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_firmware_info(&text);
            let _ = parse_fw_version(&text);
        }

        #[test]
        fn firmware_info_survives_mutations(pos in 0usize..400, byte in proptest::num::u8::ANY) {
            let mut bytes = STRIX_HALO.as_bytes().to_vec();
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = parse_firmware_info(&String::from_utf8_lossy(&bytes));
        }
    }
}
