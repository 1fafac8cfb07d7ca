//! Takes one snapshot: runs every collector over a host root, samples clocks, then the checks.

use std::time::{Duration, Instant};

use crate::collect::{self, Reader, cards, clocks, firmware, gpu_metrics, hwmon, kfd, memory};
use crate::{HostRoot, checks, model};

/// How many clock/busy readings to take per card, and how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleOptions {
    pub count: u32,
    pub interval: Duration,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            count: 1,
            interval: Duration::from_millis(500),
        }
    }
}

/// Reads everything; never fails: what could not be read is in `problems`.
/// Blocking (file I/O and sampling pauses): call it from `spawn_blocking` in async code.
pub fn take(root: &HostRoot, options: &SampleOptions) -> model::Snapshot {
    let mut reader = Reader::new(root);
    let host = collect::host::collect(&mut reader);
    let module_parameters = model::ModuleParameters {
        amdgpu: collect::params::collect(&mut reader, "amdgpu"),
        ttm: collect::params::collect(&mut reader, "ttm"),
    };
    let kfd_nodes = kfd::collect(&mut reader);
    let card_dirs = cards::find_amdgpu(&mut reader);

    let mut cards = Vec::with_capacity(card_dirs.len());
    for dir in &card_dirs {
        let identity = cards::identity(&mut reader, dir);
        let gfx_target =
            kfd::node_for_card(identity.bdf.as_deref(), identity.render_minor, &kfd_nodes)
                .and_then(|n| n.gfx_target.clone());
        let reading = clocks::read(&mut reader, &dir.device);
        let mut dpm_clocks = clocks::collect_dpm(&mut reader, &dir.device);
        if let Some(sclk) = &reading.sclk {
            dpm_clocks.insert("sclk".to_owned(), sclk.clone());
        }
        cards.push(model::Card {
            name: dir.name.clone(),
            bdf: identity.bdf,
            pci_id: identity.pci_id,
            gfx_target,
            render_minor: identity.render_minor,
            vbios_version: identity.vbios_version,
            firmware: firmware::collect_sysfs(&mut reader, &dir.device),
            debugfs_firmware: firmware::collect_debugfs(&mut reader, dir.number),
            dpm_clocks,
            performance_level: reading.performance_level.clone(),
            gpu_busy_percent: reading.gpu_busy_percent,
            mem_busy_percent: reading.mem_busy_percent,
            hwmon: hwmon::collect(&mut reader, &dir.device),
            memory: memory::collect(&mut reader, &dir.device),
            gpu_metrics: gpu_metrics::collect(&mut reader, &dir.device),
            samples: vec![reading.sample(0)],
        });
    }
    sample(&mut reader, &card_dirs, &mut cards, options);

    let mut snapshot = model::Snapshot {
        agent_version: crate::AGENT_VERSION.to_owned(),
        taken_at: jiff::Timestamp::now().to_string(),
        host,
        cards,
        module_parameters,
        kfd_nodes,
        findings: Vec::new(),
        problems: Vec::new(),
    };
    let (findings, check_problems) = checks::evaluate(&snapshot);
    snapshot.findings = findings;
    snapshot.problems = reader.problems;
    snapshot.problems.extend(check_problems);
    snapshot
}

/// Takes the readings after the first one, `options.interval` apart. A file that fails on a
/// later reading is reported once, not once per reading.
fn sample(
    reader: &mut Reader<'_>,
    dirs: &[cards::CardDir],
    cards: &mut [model::Card],
    options: &SampleOptions,
) {
    if dirs.is_empty() || options.count <= 1 {
        return;
    }
    let start = Instant::now();
    for step in 1..options.count {
        let due = options.interval.saturating_mul(step);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let offset_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        for (dir, card) in dirs.iter().zip(cards.iter_mut()) {
            let before = reader.problems.len();
            let reading = clocks::read(reader, &dir.device);
            let known: Vec<model::Problem> = reader.problems[..before].to_vec();
            let mut fresh = reader.problems.split_off(before);
            fresh.retain(|p| !known.contains(p));
            reader.problems.extend(fresh);
            card.samples.push(reading.sample(offset_ms));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn a_bad_file_is_a_problem_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = "sys/class/drm/card2/device";
        write(
            dir.path(),
            &format!("{d}/uevent"),
            b"DRIVER=amdgpu\nPCI_SLOT_NAME=0000:03:00.0\n",
        );
        write(dir.path(), &format!("{d}/gpu_busy_percent"), b"lots\n");
        write(
            dir.path(),
            &format!("{d}/pp_dpm_sclk"),
            b"0: 500Mhz *\n1: 2000Mhz\n",
        );
        write(
            dir.path(),
            &format!("{d}/gpu_metrics"),
            &[0x10, 0x00, 9, 9, 1, 2, 3],
        );
        write(
            dir.path(),
            &format!("{d}/fw_version/mes_fw_version"),
            b"banana\n",
        );
        write(
            dir.path(),
            "sys/class/drm/card0/device/uevent",
            b"DRIVER=i915\n",
        );
        write(dir.path(), "proc/meminfo", b"MemTotal: lots\n");
        let root = HostRoot::new(dir.path());
        let snapshot = take(&root, &SampleOptions::default());

        assert_eq!(snapshot.cards.len(), 1);
        let card = &snapshot.cards[0];
        assert_eq!(card.name, "card2");
        assert_eq!(card.bdf.as_deref(), Some("0000:03:00.0"));
        assert_eq!(card.gpu_busy_percent, None);
        assert_eq!(card.sclk().map(<[_]>::len), Some(2));
        let metrics = card.gpu_metrics.as_ref().unwrap();
        assert!(!metrics.supported);
        assert_eq!((metrics.format_revision, metrics.content_revision), (9, 9));
        assert!(card.firmware.is_empty());
        let paths: Vec<&str> = snapshot.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/proc/meminfo",
                "/sys/class/drm/card2/device/gpu_busy_percent",
                "/sys/class/drm/card2/device/fw_version/mes_fw_version",
            ]
        );
        assert!(snapshot.problems[1].reason.contains("lots"));
        // Missing files are absent, not problems.
        assert_eq!(snapshot.host.kernel_release, None);
        assert!(snapshot.module_parameters.amdgpu.is_empty());
    }

    #[test]
    fn sampling_takes_count_readings() {
        let dir = tempfile::tempdir().unwrap();
        let d = "sys/class/drm/card1/device";
        write(dir.path(), &format!("{d}/uevent"), b"DRIVER=amdgpu\n");
        write(dir.path(), &format!("{d}/gpu_busy_percent"), b"99\n");
        write(
            dir.path(),
            &format!("{d}/pp_dpm_sclk"),
            b"0: 600Mhz *\n1: 2900Mhz\n",
        );
        write(
            dir.path(),
            &format!("{d}/power_dpm_force_performance_level"),
            b"auto\n",
        );
        let root = HostRoot::new(dir.path());
        let options = SampleOptions {
            count: 3,
            interval: Duration::from_millis(10),
        };
        let snapshot = take(&root, &options);
        let samples = &snapshot.cards[0].samples;
        assert_eq!(samples.len(), 3);
        assert!(
            samples
                .iter()
                .all(|s| s.sclk_at_lowest_level && s.gpu_busy_percent == Some(99))
        );
        assert!(samples.windows(2).all(|w| w[0].offset_ms <= w[1].offset_ms));
        let ids: Vec<&str> = snapshot.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["gpu_clock_stuck_low"]);
    }
}
