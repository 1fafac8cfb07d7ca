//! The KFD SMI event channel: each GPU's `gpu_id` from KFD topology, `/dev/kfd` opened (retried while KFD is locked by a reset or suspend), one event fd per GPU with its mask, read as records.
//!
//! Only the opening needs a GPU node: what follows the ioctl (reading records off the event fd)
//! is [`reader`], tested over a pipe; the kernel calls Rust cannot check are in [`sys`]. Without `/dev/kfd` (no ROCm-capable GPU, or a pod without
//! the device) the channel is [`Unavailable`], with the reason, and nothing else changes.

pub mod reader;
pub mod sys;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::HostRoot;
use crate::collect::{Reader, kfd};
use crate::kmsg::pipeline::{KernelLog, SmiInput, SmiSink, SmiStatus};
pub use reader::{EventFdReader, Read};

/// Every event (ids 1–13), and with bit 63 every process's per-process events (5–11), which the
/// kernel grants only to a reader with CAP_SYS_ADMIN; without it the bit is ignored, not refused.
pub const EVENT_MASK_ALL: u64 = 0x8000_0000_0000_1FFF;

/// How often, and how far apart at most, `/dev/kfd` is tried again while it answers `EAGAIN`
/// (KFD is locked during a GPU reset or a suspend, which is when its events matter most; a reset
/// takes seconds).
pub const OPEN_ATTEMPTS: u32 = 8;
pub const OPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The channel cannot be read here, and why: one line for the snapshot's problems and readiness.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KFD event channel unavailable: {0}")]
pub struct Unavailable(pub String);

/// One GPU's event fd. `kfd` stays open for the fd's life: KFD ties the event fd to the process
/// that opened `/dev/kfd`.
#[derive(Debug)]
pub struct GpuChannel {
    pub gpu_id: u32,
    /// PCI address of the GPU (from KFD topology's `domain` and `location_id`).
    pub device: Option<String>,
    pub reader: EventFdReader,
}

/// The open channel: KFD's ioctl version and each GPU's event reader.
#[derive(Debug)]
pub struct Channel {
    _kfd: OwnedFd,
    pub version: (u32, u32),
    pub gpus: Vec<GpuChannel>,
}

/// The GPU nodes of KFD topology (CPU nodes have `gpu_id` 0): each `gpu_id` and PCI address.
pub fn gpus(root: &HostRoot) -> Vec<(u32, Option<String>)> {
    let mut reader = Reader::new(root);
    kfd::collect(&mut reader)
        .into_iter()
        .filter(|node| node.gpu_id != 0)
        .map(|node| {
            let pci = node.properties.get("location_id").map(|&location| {
                let domain = node.properties.get("domain").copied().unwrap_or(0);
                kfd::bdf_of_location_id(domain, location)
            });
            (node.gpu_id, pci)
        })
        .collect()
}

/// How long after the channel could not be opened, or stopped, it is tried again: a GPU that
/// was reset or re-bound comes back, a node without one costs a topology read a minute.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(60);

/// Reads every GPU's channel into the kernel event pipeline until `cancel`, opening it again
/// when it stops; the pipeline's KFD status says whether it is read, and why not.
pub async fn run(root: HostRoot, log: KernelLog, cancel: CancellationToken) {
    let Some(sink) = log.smi_sink() else {
        log.set_smi_status(SmiStatus::Unavailable(
            "the kernel log reader is not running, and the KFD channel's events join its pipeline"
                .to_owned(),
        ));
        return;
    };
    let mut last_reason = String::new();
    loop {
        let reason = match open(&root, EVENT_MASK_ALL).await {
            Err(Unavailable(reason)) => reason,
            Ok(channel) => {
                tracing::info!(
                    "reading the KFD event channel of {} GPU(s) (KFD ioctl {}.{})",
                    channel.gpus.len(),
                    channel.version.0,
                    channel.version.1
                );
                log.set_smi_status(SmiStatus::Reading);
                read_channel(&root, channel, &sink, &cancel).await
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        if reason != last_reason {
            tracing::warn!("KFD event channel unavailable: {reason}");
            last_reason.clone_from(&reason);
        }
        log.set_smi_status(SmiStatus::Unavailable(reason));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(REOPEN_INTERVAL) => {}
        }
    }
}

/// The container and pod of `pid`, read off the thread pool of host reads (bounded in size and
/// time like every host read).
async fn place(root: &HostRoot, pid: u32) -> BTreeMap<String, String> {
    let root = root.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = Reader::new(&root);
        crate::collect::processes::placement_fields(&mut reader, pid)
    })
    .await
    .unwrap_or_else(|e| {
        tracing::warn!("placing pid {pid} of a KFD record failed: {e}");
        BTreeMap::new()
    })
}

/// Reads every GPU's event fd until one stops (its reason) or `cancel`.
async fn read_channel(
    root: &HostRoot,
    channel: Channel,
    sink: &SmiSink,
    cancel: &CancellationToken,
) -> String {
    let Channel {
        _kfd: kfd, gpus, ..
    } = channel;
    let mut readers = tokio::task::JoinSet::new();
    for gpu in gpus {
        let sink = sink.clone();
        readers.spawn(read_gpu(root.clone(), gpu, sink));
    }
    let reason = tokio::select! {
        () = cancel.cancelled() => String::new(),
        ended = readers.join_next() => match ended {
            Some(Ok(reason)) => reason,
            Some(Err(e)) => format!("a KFD channel reader failed: {e}"),
            None => "no GPU channel to read".to_owned(),
        },
    };
    readers.shutdown().await;
    // Closed after the event fds: KFD ties them to this open.
    drop(kfd);
    reason
}

/// Pids whose container and pod are remembered: a VM fault storm names one process over and
/// over, and its placement does not change.
const MAX_PLACEMENTS_KEPT: usize = 256;

/// One GPU's records into the pipeline until its fd fails or closes: why it stopped.
async fn read_gpu(root: HostRoot, mut gpu: GpuChannel, sink: SmiSink) -> String {
    let mut placements: std::collections::HashMap<u32, BTreeMap<String, String>> =
        std::collections::HashMap::new();
    loop {
        let (records, closed) = match gpu.reader.next().await {
            Ok(Read::Records(records)) => (records, false),
            Ok(Read::Closed(records)) => (records, true),
            Err(e) => return format!("reading the events of gpu_id {}: {e}", gpu.gpu_id),
        };
        let now = nodectl_model::clock::monotonic_usec_now();
        for record in records {
            let placement = match record.pid {
                Some(pid) => {
                    if placements.len() >= MAX_PLACEMENTS_KEPT {
                        placements.clear();
                    }
                    match placements.get(&pid) {
                        Some(known) => known.clone(),
                        None => {
                            let found = place(&root, pid).await;
                            placements.insert(pid, found.clone());
                            found
                        }
                    }
                }
                None => BTreeMap::new(),
            };
            sink.send(SmiInput {
                record,
                monotonic_usec: now,
                device: gpu.device.clone(),
                placement,
            });
        }
        if closed {
            return format!("the event fd of gpu_id {} closed", gpu.gpu_id);
        }
    }
}

/// Opens the channel for every GPU of KFD topology, with `mask`.
pub async fn open(root: &HostRoot, mask: u64) -> Result<Channel, Unavailable> {
    let gpus = gpus(root);
    if gpus.is_empty() {
        return Err(Unavailable(
            "KFD topology lists no GPU (/sys/class/kfd/kfd/topology/nodes/*/gpu_id)".to_owned(),
        ));
    }
    let path = root.path("dev/kfd");
    let kfd = open_kfd(&path).await.map_err(|e| {
        Unavailable(format!(
            "{}: {e}{}",
            root.host_display(&path),
            if e.kind() == std::io::ErrorKind::NotFound {
                " (no ROCm-capable GPU, or the pod lacks the device: the DaemonSet mounts /dev/kfd)"
            } else {
                ""
            }
        ))
    })?;
    let mut version = (0, 0);
    let mut channels = Vec::with_capacity(gpus.len());
    for (gpu_id, device) in gpus {
        let (v, fd) = sys::version_and_event_fd(kfd.as_fd(), gpu_id)
            .map_err(|e| Unavailable(format!("AMDKFD_IOC_SMI_EVENTS for gpu_id {gpu_id}: {e}")))?;
        version = v;
        reader::write_mask(fd.as_fd(), mask)
            .map_err(|e| Unavailable(format!("the event mask of gpu_id {gpu_id}: {e}")))?;
        let reader = EventFdReader::new(fd)
            .map_err(|e| Unavailable(format!("the event fd of gpu_id {gpu_id}: {e}")))?;
        channels.push(GpuChannel {
            gpu_id,
            device,
            reader,
        });
    }
    Ok(Channel {
        _kfd: kfd,
        version,
        gpus: channels,
    })
}

/// `/dev/kfd` read-write and close-on-exec; `EAGAIN` (KFD locked) is tried again with a
/// doubling pause up to [`OPEN_BACKOFF_MAX`], [`OPEN_ATTEMPTS`] times in all.
async fn open_kfd(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            // Not through a link: the device node itself, or nothing.
            .custom_flags((nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NOFOLLOW).bits())
            .open(path);
        match opened {
            Ok(file) => {
                if !file.metadata()?.file_type().is_char_device() {
                    return Err(std::io::Error::other("not a character device"));
                }
                return Ok(OwnedFd::from(file));
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && attempt < OPEN_ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(OPEN_BACKOFF_MAX);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> HostRoot {
        HostRoot::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/nodes")
                .join(name),
        )
    }

    #[test]
    fn the_gpus_come_from_kfd_topology() {
        let found = gpus(&fixture("strix-halo-healthy"));
        assert!(!found.is_empty());
        assert!(
            found.iter().all(|(id, pci)| *id != 0 && pci.is_some()),
            "{found:?}"
        );
        assert!(gpus(&fixture("no-gpu")).is_empty());
    }

    #[tokio::test]
    async fn without_dev_kfd_the_channel_is_unavailable_and_says_why() {
        let e = open(&fixture("strix-halo-healthy"), EVENT_MASK_ALL)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/dev/kfd"), "{e}");
        assert!(e.to_string().contains("the pod lacks the device"), "{e}");
        let e = open(&fixture("no-gpu"), EVENT_MASK_ALL).await.unwrap_err();
        assert!(e.to_string().contains("no GPU"), "{e}");
    }

    #[tokio::test]
    async fn a_file_where_the_device_should_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kfd");
        std::fs::write(&path, b"").unwrap();
        let e = open_kfd(&path).await.unwrap_err();
        assert!(e.to_string().contains("not a character device"), "{e}");
        nix::unistd::mkfifo(
            &dir.path().join("fifo"),
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        assert!(open_kfd(&dir.path().join("fifo")).await.is_err());
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        assert!(open_kfd(&dir.path().join("link")).await.is_err());
    }
}
