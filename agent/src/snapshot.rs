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
