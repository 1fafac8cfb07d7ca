//! Takes one snapshot: runs every collector over a host root, samples clocks, then the checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::collect::held::HeldFiles;
use crate::collect::{self, Reader, cards, clocks, firmware, gpu_metrics, hwmon, kfd, memory};
use nodectl_model::inference::InferenceProcesses;
use nodectl_model::snapshot as model;

use crate::limits::MAX_SAMPLING_SNAPSHOTS;
use crate::{HostRoot, checks};

/// How many clock/busy readings to take per card, how far apart, and what ends them early.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub count: u32,
    pub interval: Duration,
    /// Sampling stops (with the readings taken so far) when this is cancelled: the client went
    /// away, or the agent is stopping.
    pub stop: Option<CancellationToken>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            count: 1,
            interval: Duration::from_millis(500),
            stop: None,
        }
    }
}

impl SampleOptions {
    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Sleeps `wait`, waking early when stopped; returns whether to go on.
    fn pause(&self, wait: Duration) -> bool {
        /// How soon a stop is noticed during a pause.
        const STOP_CHECK: Duration = Duration::from_millis(50);
        let until = Instant::now() + wait;
        loop {
            if self.stopped() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(STOP_CHECK));
        }
    }
}

/// Clears the snapshotter's in-flight snapshot when dropped.
struct EndsInFlight(Arc<Snapshotter>);

impl Drop for EndsInFlight {
    fn drop(&mut self) {
        *lock_in_flight(&self.0.in_flight) = None;
    }
}

fn lock_in_flight(
    in_flight: &Mutex<Option<InFlight>>,
) -> std::sync::MutexGuard<'_, Option<InFlight>> {
    // It holds only a receiver; a panic elsewhere leaves it usable.
    in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One snapshot of a root with a fresh snapshotter (tests).
#[cfg(test)]
fn take(root: &HostRoot, options: &SampleOptions) -> model::Snapshot {
    Snapshotter::new(root.clone()).take(options)
}

/// Takes snapshots of one host root, reading the facts that cannot change within a boot only
/// once (module parameters, firmware versions, card identity, KFD topology, kernel release and
/// command line, os-release, which hwmon directory is the card's), and keeping the files it
/// reads every time open.
///
/// Those facts are reused while the boot id, the KFD topology generation, the amdgpu module's
/// init state and the inode of its `/sys/module/amdgpu` directory stay the same; a reboot, a GPU
/// hot-(un)plug or a module (re)load (say, after new firmware files were installed) reads them
/// anew. amdgpu takes its parameters at load, so a later write to a writable parameter
/// file changes nothing the driver does; it shows after the next load.
#[derive(Debug)]
pub struct Snapshotter {
    root: HostRoot,
    boot: Mutex<Option<Arc<BootFacts>>>,
    held: Arc<HeldFiles>,
    read_before: collect::DeviceFilesReadBefore,
    /// The single-reading snapshot being taken now, which concurrent requests for one join.
    in_flight: Mutex<Option<InFlight>>,
    /// Sampling snapshots (several readings apart) running now.
    sampling: Arc<tokio::sync::Semaphore>,
}

/// Resolves to the snapshot once it is taken; `None` until then.
type InFlight = tokio::sync::watch::Receiver<Option<Arc<model::Snapshot>>>;

/// Why a snapshot was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "{MAX_SAMPLING_SNAPSHOTS} sampling snapshots are running already; ask again when one ends, or ask for a single reading"
    )]
    Busy,
    #[error("the snapshot task ended without a result: {0}")]
    Task(String),
}

/// What identifies one boot with one set of GPUs and one load of amdgpu.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootKey {
    boot_id: String,
    kfd_generation: Option<String>,
    amdgpu_initstate: Option<String>,
    /// sysfs gives a re-created directory a new inode, and a reload re-creates this one even
    /// when the generation and the init state read as before.
    amdgpu_module_inode: Option<u64>,
}

#[derive(Debug)]
struct BootFacts {
    key: Option<BootKey>,
    host: collect::host::BootHost,
    module_parameters: model::ModuleParameters,
    kfd_nodes: Vec<model::KfdNode>,
    cards: Vec<CardFacts>,
    /// Problems met while reading them, repeated in every snapshot that uses them.
    problems: Vec<model::Problem>,
}

#[derive(Debug)]
struct CardFacts {
    dir: cards::CardDir,
    identity: cards::Identity,
    gfx_target: Option<String>,
    firmware: BTreeMap<String, String>,
    debugfs_firmware: Vec<model::DebugfsFirmware>,
    /// The amdgpu hwmon directory: name and path.
    hwmon: Option<(String, std::path::PathBuf)>,
}

impl BootFacts {
    fn read(root: &HostRoot, key: Option<BootKey>) -> Self {
        let mut reader = Reader::new(root);
        let host = collect::host::collect_boot(&mut reader);
        let module_parameters = model::ModuleParameters {
            amdgpu: collect::params::collect(&mut reader, "amdgpu"),
            ttm: collect::params::collect(&mut reader, "ttm"),
        };
        let kfd_nodes = kfd::collect(&mut reader);
        let cards = cards::find_amdgpu(&mut reader)
            .into_iter()
            .map(|dir| {
                let identity = cards::identity(&mut reader, &dir);
                let gfx_target =
                    kfd::node_for_card(identity.bdf.as_deref(), identity.render_minor, &kfd_nodes)
                        .and_then(|n| n.gfx_target.clone());
                CardFacts {
                    firmware: firmware::collect_sysfs(&mut reader, &dir.device),
                    debugfs_firmware: firmware::collect_debugfs(&mut reader, dir.number),
                    hwmon: hwmon::find(&mut reader, &dir.device),
                    dir,
                    identity,
                    gfx_target,
                }
            })
            .collect();
        BootFacts {
            key,
            host,
            module_parameters,
            kfd_nodes,
            cards,
            problems: reader.problems,
        }
    }
}

impl Snapshotter {
    pub fn new(root: HostRoot) -> Self {
        Self {
            root,
            boot: Mutex::new(None),
            held: Arc::default(),
            read_before: collect::DeviceFilesReadBefore::default(),
            in_flight: Mutex::new(None),
            sampling: Arc::new(tokio::sync::Semaphore::new(MAX_SAMPLING_SNAPSHOTS)),
        }
    }

    /// A snapshot for `options`, taken on a blocking thread. A single reading is shared: a
    /// request that arrives while one is being taken gets that one, so a burst of requests (or
    /// of scrapes) reads the host once and waits without holding a thread. Sampling snapshots run
    /// on their own, at most [`MAX_SAMPLING_SNAPSHOTS`] at once.
    pub async fn snapshot(
        self: &Arc<Self>,
        options: SampleOptions,
    ) -> Result<Arc<model::Snapshot>, SnapshotError> {
        if options.count > 1 {
            let _permit = Arc::clone(&self.sampling)
                .try_acquire_owned()
                .map_err(|_| SnapshotError::Busy)?;
            let snapshotter = Arc::clone(self);
            return tokio::task::spawn_blocking(move || Arc::new(snapshotter.take(&options)))
                .await
                .map_err(|e| SnapshotError::Task(e.to_string()));
        }
        let mut taken = {
            let mut in_flight = lock_in_flight(&self.in_flight);
            match in_flight.as_ref() {
                Some(taken) => taken.clone(),
                None => {
                    let (done, taken) = tokio::sync::watch::channel(None);
                    *in_flight = Some(taken.clone());
                    let snapshotter = Arc::clone(self);
                    // Runs to its end even when the asking client leaves: others may be waiting,
                    // and every read in it is bounded by its deadline.
                    tokio::task::spawn_blocking(move || {
                        // Cleared even when taking panics, so the next request starts afresh.
                        let finished = EndsInFlight(snapshotter);
                        let snapshot = Arc::new(finished.0.take(&SampleOptions::default()));
                        // Cleared before the waiters wake: a request they make next takes a
                        // fresh reading.
                        drop(finished);
                        done.send_replace(Some(snapshot));
                    });
                    taken
                }
            }
        };
        let snapshot = taken
            .wait_for(Option::is_some)
            .await
            .map_err(|_| SnapshotError::Task("the snapshot thread stopped".to_owned()))?;
        snapshot
            .clone()
            .ok_or_else(|| SnapshotError::Task("no snapshot".to_owned()))
    }

    /// The host root it reads.
    pub fn root(&self) -> &HostRoot {
        &self.root
    }

    /// The inference processes, with CPU time and GPU memory watched over `window` (zero: one
    /// reading). A window holds a thread, so these share the bound of sampling snapshots.
    pub async fn inference_processes(
        self: &Arc<Self>,
        window: std::time::Duration,
    ) -> Result<InferenceProcesses, SnapshotError> {
        let _permit = if window.is_zero() {
            None
        } else {
            Some(
                Arc::clone(&self.sampling)
                    .try_acquire_owned()
                    .map_err(|_| SnapshotError::Busy)?,
            )
        };
        let snapshotter = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut reader = Reader::new(&snapshotter.root);
            let dirs = cards::find_amdgpu(&mut reader);
            collect::processes::collect(&mut reader, &dirs, window)
        })
        .await
        .map_err(|e| SnapshotError::Task(e.to_string()))
    }

    /// The boot facts for `key`: the cached ones when the key matches, else read anew. Without a
    /// boot id nothing is cached: a boot could not be told from the next.
    fn boot_facts(&self, key: Option<BootKey>) -> Arc<BootFacts> {
        // A poisoned lock only means a reader panicked mid-update; the cache is then re-read.
        let mut cached = self.boot.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = None;
            guard
        });
        if let Some(facts) = cached.as_ref()
            && key.is_some()
            && facts.key == key
        {
            return Arc::clone(facts);
        }
        let facts = Arc::new(BootFacts::read(&self.root, key));
        if facts.key.is_some() {
            // A new boot or a new set of cards: the held files of the old one would only fail
            // (or, in a tree, be dropped) one by one; start afresh. Without a key there is no
            // boot to tell apart, and the held files keep their own staleness checks.
            self.held.clear();
            self.read_before.clear();
            *cached = Some(Arc::clone(&facts));
        }
        facts
    }

    /// Reads everything; never fails: what could not be read is in `problems`.
    /// Blocking (file I/O and sampling pauses): call it from `spawn_blocking` in async code.
    pub fn take(&self, options: &SampleOptions) -> model::Snapshot {
        let root = &self.root;
        self.held.refresh();
        let mut reader = Reader::holding(root, &self.held, &self.read_before);
        let boot_id = collect::host::boot_id(&mut reader);
        let key = boot_id.clone().map(|boot_id| BootKey {
            boot_id,
            kfd_generation: reader.line(&root.path("/sys/class/kfd/kfd/topology/generation_id")),
            amdgpu_initstate: reader.line(&root.path("/sys/module/amdgpu/initstate")),
            amdgpu_module_inode: root
                .metadata(&root.path("/sys/module/amdgpu"))
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
        });
        let facts = self.boot_facts(key);
        reader.problems.extend(facts.problems.iter().cloned());
        let host = collect::host::collect(&mut reader, boot_id, &facts.host);

        let mut cards = Vec::with_capacity(facts.cards.len());
        for card in &facts.cards {
            let device = &card.dir.device;
            reader.watch_device(device);
            let reading = clocks::read(&mut reader, device);
            let mut dpm_clocks = clocks::collect_dpm(&mut reader, device);
            if let Some(sclk) = &reading.sclk {
                dpm_clocks.insert("sclk".to_owned(), sclk.clone());
            }
            cards.push(model::Card {
                name: card.dir.name.clone(),
                bdf: card.identity.bdf.clone(),
                pci_id: card.identity.pci_id.clone(),
                gfx_target: card.gfx_target.clone(),
                render_minor: card.identity.render_minor,
                vbios_version: card.identity.vbios_version.clone(),
                firmware: card.firmware.clone(),
                debugfs_firmware: card.debugfs_firmware.clone(),
                dpm_clocks,
                performance_level: reading.performance_level.clone(),
                gpu_busy_percent: reading.gpu_busy_percent,
                mem_busy_percent: reading.mem_busy_percent,
                hwmon: card
                    .hwmon
                    .as_ref()
                    .map(|(name, dir)| hwmon::read(&mut reader, name, dir)),
                memory: memory::collect(&mut reader, device),
                gpu_metrics: gpu_metrics::collect(&mut reader, device),
                samples: vec![reading.sample(0)],
            });
        }
        let card_dirs: Vec<&cards::CardDir> = facts.cards.iter().map(|c| &c.dir).collect();
        sample(&mut reader, &card_dirs, &mut cards, options);

        // A reader of its own: the held one would keep every process's files open.
        let inference =
            collect::processes::collect(&mut Reader::new(root), &[], std::time::Duration::ZERO);
        reader.problems.extend(inference.problems);
        let mut snapshot = model::Snapshot {
            agent_version: crate::AGENT_VERSION.to_owned(),
            taken_at: root.now().to_string(),
            host,
            cards,
            module_parameters: facts.module_parameters.clone(),
            kfd_nodes: facts.kfd_nodes.clone(),
            findings: Vec::new(),
            problems: Vec::new(),
            inference_processes: inference.processes,
            inference_processes_not_listed: inference.processes_not_listed,
        };
        // The checks see what could not be read: an unreadable input is unknown, not absent.
        snapshot.problems = reader.problems;
        let (findings, check_problems) = checks::evaluate(&snapshot);
        snapshot.findings = findings;
        snapshot.problems.extend(check_problems);
        // By path, so the order does not depend on which facts came from the boot cache.
        snapshot.problems.sort_by(|a, b| a.path.cmp(&b.path));
        snapshot
    }
}

fn sample(
    reader: &mut Reader<'_>,
    dirs: &[&cards::CardDir],
    cards: &mut [model::Card],
    options: &SampleOptions,
) {
    if dirs.is_empty() || options.count <= 1 {
        return;
    }
    let start = Instant::now();
    for step in 1..options.count {
        let due = options.interval.saturating_mul(step);
        let wait = due.saturating_sub(start.elapsed());
        if !options.pause(wait) {
            return;
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

    fn card_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = "sys/class/drm/card1/device";
        write(dir.path(), &format!("{d}/uevent"), b"DRIVER=amdgpu\n");
        write(dir.path(), &format!("{d}/pp_dpm_sclk"), b"0: 600Mhz *\n");
        dir
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_reading_asked_for_while_one_is_taken_joins_it() {
        let dir = card_tree();
        let snapshotter = Arc::new(Snapshotter::new(HostRoot::new(dir.path())));
        // One being taken now (this test plays the thread taking it).
        let (done, taken) = tokio::sync::watch::channel(None);
        *lock_in_flight(&snapshotter.in_flight) = Some(taken);
        let joined = tokio::spawn({
            let snapshotter = Arc::clone(&snapshotter);
            async move { snapshotter.snapshot(SampleOptions::default()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!joined.is_finished(), "it took its own reading");
        let shared = Arc::new(snapshotter.take(&SampleOptions::default()));
        *lock_in_flight(&snapshotter.in_flight) = None;
        done.send_replace(Some(Arc::clone(&shared)));
        assert!(Arc::ptr_eq(&joined.await.unwrap().unwrap(), &shared));

        // With none in flight, a request takes its own, and leaves none in flight.
        let own = snapshotter
            .snapshot(SampleOptions::default())
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&own, &shared));
        assert!(lock_in_flight(&snapshotter.in_flight).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sampling_snapshots_past_the_bound_are_refused() {
        let dir = card_tree();
        let snapshotter = Arc::new(Snapshotter::new(HostRoot::new(dir.path())));
        let stop = CancellationToken::new();
        let long = SampleOptions {
            count: 100,
            interval: Duration::from_secs(1),
            stop: Some(stop.clone()),
        };
        let mut running = tokio::task::JoinSet::new();
        for _ in 0..MAX_SAMPLING_SNAPSHOTS {
            let snapshotter = Arc::clone(&snapshotter);
            let long = long.clone();
            running.spawn(async move { snapshotter.snapshot(long).await });
        }
        // Until all of them hold their permit.
        while snapshotter.sampling.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = snapshotter.snapshot(long.clone()).await.unwrap_err();
        assert!(matches!(refused, SnapshotError::Busy), "{refused}");
        // A single reading is not held up by them.
        let single = snapshotter
            .snapshot(SampleOptions::default())
            .await
            .unwrap();
        assert_eq!(single.cards.len(), 1);
        stop.cancel();
        while let Some(done) = running.join_next().await {
            assert_eq!(done.unwrap().unwrap().cards.len(), 1);
        }
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
                "/proc/meminfo",
                "/sys/class/drm/card2/device/fw_version/mes_fw_version",
                "/sys/class/drm/card2/device/gpu_busy_percent",
            ]
        );
        // Each meminfo field on its own: the malformed one, and the one not there.
        let meminfo: Vec<&str> = snapshot.problems[..2]
            .iter()
            .map(|p| p.reason.as_str())
            .collect();
        assert!(
            meminfo
                .iter()
                .any(|r| r.contains("MemTotal") && r.contains("malformed"))
        );
        assert!(meminfo.contains(&"no MemAvailable line"));
        assert!(snapshot.problems[3].reason.contains("lots"));
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
            stop: None,
        };
        let snapshot = take(&root, &options);
        let samples = &snapshot.cards[0].samples;
        assert_eq!(samples.len(), 3);
        // A stopped request ends its sampling with the readings it has.
        let stop = CancellationToken::new();
        stop.cancel();
        let stopped = take(
            &root,
            &SampleOptions {
                count: 500,
                interval: Duration::from_secs(60),
                stop: Some(stop),
            },
        );
        assert_eq!(stopped.cards[0].samples.len(), 1);
        assert!(
            samples
                .iter()
                .all(|s| s.sclk_at_lowest_level && s.gpu_busy_percent == Some(99))
        );
        assert!(samples.windows(2).all(|w| w[0].offset_ms <= w[1].offset_ms));
        let ids: Vec<&str> = snapshot.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["gpu_clock_stuck_low"]);
    }

    fn mes_version(snapshot: &model::Snapshot) -> Option<&str> {
        snapshot.cards[0]
            .firmware
            .get("mes_fw_version")
            .map(String::as_str)
    }

    #[test]
    fn boot_facts_are_read_once_per_boot_and_clocks_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let d = "sys/class/drm/card1/device";
        write(dir.path(), &format!("{d}/uevent"), b"DRIVER=amdgpu\n");
        write(
            dir.path(),
            &format!("{d}/fw_version/mes_fw_version"),
            b"0x00000080\n",
        );
        write(dir.path(), &format!("{d}/gpu_busy_percent"), b"5\n");
        write(dir.path(), "proc/sys/kernel/random/boot_id", b"boot-a\n");
        let snapshotter = Snapshotter::new(HostRoot::new(dir.path()));
        let options = SampleOptions::default();
        assert_eq!(mes_version(&snapshotter.take(&options)), Some("0x00000080"));

        // Same boot: firmware is not read again, busy % is.
        write(
            dir.path(),
            &format!("{d}/fw_version/mes_fw_version"),
            b"0x00000083\n",
        );
        write(dir.path(), &format!("{d}/gpu_busy_percent"), b"90\n");
        let same_boot = snapshotter.take(&options);
        assert_eq!(mes_version(&same_boot), Some("0x00000080"));
        assert_eq!(same_boot.cards[0].gpu_busy_percent, Some(90));

        // A module reload (init state appears) or a new boot reads everything anew.
        write(dir.path(), "sys/module/amdgpu/initstate", b"live\n");
        assert_eq!(mes_version(&snapshotter.take(&options)), Some("0x00000083"));
        write(
            dir.path(),
            &format!("{d}/fw_version/mes_fw_version"),
            b"0x00000086\n",
        );
        write(dir.path(), "proc/sys/kernel/random/boot_id", b"boot-b\n");
        assert_eq!(mes_version(&snapshotter.take(&options)), Some("0x00000086"));

        // A reload whose init state and KFD generation read as before: the module directory is
        // a new one (made before the old goes, so it cannot get the old inode back).
        write(
            dir.path(),
            &format!("{d}/fw_version/mes_fw_version"),
            b"0x00000087\n",
        );
        let module = dir.path().join("sys/module/amdgpu");
        let unloaded = dir.path().join("sys/module/amdgpu.unloaded");
        std::fs::rename(&module, &unloaded).unwrap();
        write(dir.path(), "sys/module/amdgpu/initstate", b"live\n");
        std::fs::remove_dir_all(&unloaded).unwrap();
        assert_eq!(mes_version(&snapshotter.take(&options)), Some("0x00000087"));
    }

    #[test]
    fn without_a_boot_id_nothing_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let d = "sys/class/drm/card0/device";
        write(dir.path(), &format!("{d}/uevent"), b"DRIVER=amdgpu\n");
        write(
            dir.path(),
            &format!("{d}/fw_version/mes_fw_version"),
            b"0x00000080\n",
        );
        let snapshotter = Snapshotter::new(HostRoot::new(dir.path()));
        let options = SampleOptions::default();
        assert_eq!(mes_version(&snapshotter.take(&options)), Some("0x00000080"));
        write(
            dir.path(),
            &format!("{d}/fw_version/mes_fw_version"),
            b"0x00000083\n",
        );
        assert_eq!(mes_version(&snapshotter.take(&options)), Some("0x00000083"));
    }
}
