//! Finds the DRM cards bound to amdgpu (by driver, never by assuming `card0`) and reads their identity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Reader;

/// A `/sys/class/drm/cardN` bound to amdgpu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardDir {
    /// `card1`.
    pub name: String,
    /// `1`: the DRM primary minor, also the debugfs `dri/N` directory.
    pub number: u32,
    /// `.../cardN/device`.
    pub device: PathBuf,
}

/// Identity read from `device/uevent` and friends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub bdf: Option<String>,
    pub pci_id: Option<String>,
    pub render_minor: Option<u32>,
    pub vbios_version: Option<String>,
}

/// Parses a `uevent` file: `KEY=VALUE` lines.
pub fn parse_uevent(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `card1` → 1; connectors (`card1-DP-1`) and render nodes → `None`.
pub fn card_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("card")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The last path component of a driver link target (`../../bus/pci/drivers/amdgpu` → `amdgpu`).
pub fn driver_from_link_target(target: &str) -> Option<String> {
    let name = target.trim().rsplit('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// The driver a device is bound to: `DRIVER=` in its uevent, else the `driver` link's name.
fn driver_of(reader: &mut Reader<'_>, device: &Path) -> Option<String> {
    if let Some(uevent) = reader.text(&device.join("uevent"))
        && let Some(driver) = parse_uevent(&uevent).remove("DRIVER")
    {
        return Some(driver);
    }
    let link = device.join("driver");
    match reader.root.read_link(&link) {
        Ok(target) => driver_from_link_target(&target.to_string_lossy()),
        // Captured trees (ttar archives unpacked without links) hold the target as text.
        Err(_) if reader.root.metadata(&link).is_ok_and(|m| m.is_file()) => {
            reader.text(&link).and_then(|t| driver_from_link_target(&t))
        }
        Err(_) => None,
    }
}

/// Every `/sys/class/drm/cardN` whose device is bound to amdgpu, in card-number order.
pub fn find_amdgpu(reader: &mut Reader<'_>) -> Vec<CardDir> {
    let drm = reader.root.path("/sys/class/drm");
    let mut cards = Vec::new();
    for (name, path) in reader.dir(&drm).unwrap_or_default() {
        let Some(number) = card_number(&name) else {
            continue;
        };
        let device = path.join("device");
        if driver_of(reader, &device).as_deref() == Some("amdgpu") {
            reader.watch_device(&device);
            cards.push(CardDir {
                name,
                number,
                device,
            });
        }
    }
    cards.sort_by_key(|c| c.number);
    cards
}

/// `0x1002` → `1002`.
fn pci_hex(text: &str) -> Option<String> {
    let digits = text.trim().strip_prefix("0x")?;
    (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_lowercase())
}

pub fn identity(reader: &mut Reader<'_>, card: &CardDir) -> Identity {
    let device = &card.device;
    let uevent = reader
        .text(&device.join("uevent"))
        .map(|t| parse_uevent(&t))
        .unwrap_or_default();
    let pci_id = match uevent.get("PCI_ID") {
        Some(id) => Some(id.to_ascii_lowercase()),
        None => {
            let vendor = reader.text(&device.join("vendor"));
            let dev = reader.text(&device.join("device"));
            match (
                vendor.as_deref().and_then(pci_hex),
                dev.as_deref().and_then(pci_hex),
            ) {
                (Some(v), Some(d)) => Some(format!("{v}:{d}")),
                _ => None,
            }
        }
    };
    let bdf = uevent.get("PCI_SLOT_NAME").cloned().or_else(|| {
        // On a live system `device` links to `.../0000:c1:00.0`.
        reader
            .root
            .read_link(device)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    });
    let render_minor = reader
        .dir(&device.join("drm"))
        .unwrap_or_default()
        .iter()
        .find_map(|(name, _)| name.strip_prefix("renderD")?.parse().ok());
    Identity {
        bdf,
        pci_id,
        render_minor,
        vbios_version: reader.line(&device.join("vbios_version")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn uevent_and_names() {
        let uevent = parse_uevent("DRIVER=amdgpu\nPCI_ID=1002:1586\nPCI_SLOT_NAME=0000:c1:00.0\n");
        assert_eq!(uevent["DRIVER"], "amdgpu");
        assert_eq!(uevent["PCI_SLOT_NAME"], "0000:c1:00.0");
        assert_eq!(card_number("card1"), Some(1));
        assert_eq!(card_number("card1-DP-1"), None);
        assert_eq!(card_number("renderD128"), None);
        assert_eq!(card_number("card"), None);
        assert_eq!(
            driver_from_link_target("../../../../bus/pci/drivers/amdgpu").as_deref(),
            Some("amdgpu")
        );
        assert_eq!(driver_from_link_target("x/"), None);
        assert_eq!(pci_hex("0x687F\n").as_deref(), Some("687f"));
    }

    #[test]
    fn driver_from_uevent_link_or_link_text() {
        let dir = tempfile::tempdir().unwrap();
        let drm = dir.path().join("sys/class/drm");
        for card in ["card0", "card1", "card2", "card3"] {
            std::fs::create_dir_all(drm.join(card).join("device")).unwrap();
        }
        std::fs::create_dir_all(drm.join("card1-DP-1/device")).unwrap();
        std::fs::write(drm.join("card0/device/uevent"), "DRIVER=i915\n").unwrap();
        std::fs::write(drm.join("card1-DP-1/device/uevent"), "DRIVER=amdgpu\n").unwrap();
        // No uevent: a (dangling) driver link, as on a live system without bus/ mounted.
        std::os::unix::fs::symlink(
            "../../../../bus/pci/drivers/amdgpu",
            drm.join("card1/device/driver"),
        )
        .unwrap();
        // A captured tree that kept the link target as text.
        std::fs::write(
            drm.join("card2/device/driver"),
            "../../../../bus/pci/drivers/amdgpu",
        )
        .unwrap();
        std::fs::write(drm.join("card3/device/uevent"), "PCI_ID=1002:1586\n").unwrap();
        let root = crate::HostRoot::new(dir.path());
        let mut reader = Reader::new(&root);
        let names: Vec<String> = find_amdgpu(&mut reader)
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["card1", "card2"]);
        assert!(reader.problems.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn uevent_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_uevent(&text);
            let _ = card_number(&text);
            let _ = driver_from_link_target(&text);
            let _ = pci_hex(&text);
        }
    }
}
