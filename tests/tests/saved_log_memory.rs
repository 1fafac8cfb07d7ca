//! `nodectl events --file` in bounded memory: the peak resident memory of printing a generated log stays flat from a small log to one eight times larger, and under 64 MiB, as JSON and as a table.
//!
//! The logs are 8 and 64 MiB rather than the 1 GB of the acceptance figure: the debug build
//! prints about 2 MB of such a log a second as JSON and 1.5 MB as a table, so 1 GB would take
//! over ten minutes; flat memory across an eightfold size is what shows that nothing grows with
//! the log (before, 8 MiB of it already took about 200 MiB). `bench/events-file-memory.sh` measures 100 MB and 1 GB with the
//! release build (BENCHMARKS.md).

#![allow(unsafe_code)]

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use nodectl_e2e::harness::binary;

/// The acceptance bound on nodectl's peak resident memory, whatever the size of the log.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// How much more the larger log may cost: the run-to-run noise of the allocator, not growth.
const GROWTH_SLACK_KIB: u64 = 8 * 1024;

/// Lines of one block of the generated log: an incident's worth of GPU messages among ordinary
/// kernel lines and `[drm]` lines no rule classifies.
const BLOCK: [&str; 20] = [
    "usb 1-1: new high-speed USB device number 4 using xhci_hcd",
    "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE",
    "EXT4-fs (nvme0n1p3): mounted filesystem with ordered data mode",
    "amdgpu 0000:c1:00.0: amdgpu: failed to remove hardware queue from MES, doorbell=0x1002",
    "[drm] Initialized simpledrm 1.0.0 for simple-framebuffer.0 on minor 0",
    "amdgpu 0000:c1:00.0: amdgpu: MES ring buffer is full.",
    "cni0: port 2(veth1234abcd) entered forwarding state",
    "amdgpu 0000:c1:00.0: amdgpu: MES ring buffer is full.",
    "audit: type=1400 audit(1722848604.120:42): apparmor=\"STATUS\" operation=\"profile_load\"",
    "amdgpu 0000:c1:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32769)",
    "IPv6: ADDRCONF(NETDEV_CHANGE): veth7: link becomes ready",
    "amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!",
    "nvme nvme0: 16/0/0 default/read/poll queues",
    "amdgpu 0000:c1:00.0: amdgpu: MODE2 reset",
    "[drm] Display Core v3.2.310 initialized on DCN 3.5",
    "amdgpu 0000:c1:00.0: amdgpu: GPU reset succeeded, trying to resume",
    "eth0: renamed from veth9",
    "amdgpu 0000:c1:00.0: amdgpu: GPU reset(1) succeeded!",
    "systemd-journald[412]: Received client request to flush runtime journal.",
    "kfd kfd: amdgpu: added device 1002:1586 with 32 queues",
];

/// Lines of [`BLOCK`] a rule classifies.
const CLASSIFIED_PER_BLOCK: u64 = 9;

/// What a generated log holds.
struct Generated {
    lines: u64,
    blocks: u64,
}

/// Writes a `dmesg` log of at least `bytes` bytes to `path` as it goes (never whole in memory):
/// blocks of [`BLOCK`] 10 ms a line, 30 s apart, so each block is one incident.
fn generate(path: &Path, bytes: u64) -> anyhow::Result<Generated> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut written, mut lines, mut blocks) = (0u64, 0u64, 0u64);
    while written < bytes {
        let start = blocks * 30_000_000;
        for (n, message) in BLOCK.iter().enumerate() {
            let usec = start + u64::try_from(n)? * 10_000;
            let line = format!(
                "[{:6}.{:06}] {message}\n",
                usec / 1_000_000,
                usec % 1_000_000
            );
            out.write_all(line.as_bytes())?;
            written += u64::try_from(line.len())?;
        }
        lines += u64::try_from(BLOCK.len())?;
        blocks += 1;
    }
    out.flush()?;
    Ok(Generated { lines, blocks })
}

/// Runs nodectl with `args`, its standard output into `out`, and returns its peak resident
/// memory in KiB as the kernel counted it for this one child (wait4's rusage: other children of
/// the test process do not count). Linux starts a child's count at its parent's own peak (the
/// memory it was spawned from), so the test keeps its own peak below what it measures.
fn peak_rss_kib(args: &[&str], out: &Path) -> anyhow::Result<u64> {
    let child = Command::new(binary("nodectl")?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out)?)
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is this process's child, not waited for yet (`child` is only dropped,
    // which neither waits nor kills); the pointers are to live locals of the right types.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    anyhow::ensure!(reaped == pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "nodectl {args:?} ended with status {status:#x}"
    );
    // Linux counts ru_maxrss in KiB.
    Ok(u64::try_from(usage.ru_maxrss)?)
}

/// This process's peak resident memory in KiB (VmHWM).
fn own_peak_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")
}

/// The JSON document's shape, read without holding it: every element is skipped.
#[derive(serde::Deserialize)]
struct Shape {
    events: Vec<serde::de::IgnoredAny>,
    incidents: Vec<serde::de::IgnoredAny>,
    input: Input,
}

#[derive(serde::Deserialize)]
struct Input {
    lines_read: u64,
}

#[test]
fn printing_a_saved_log_takes_the_same_memory_for_a_log_eight_times_larger() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut peaks = Vec::new();
    for mib in [8, 64] {
        let log = dir.path().join(format!("{mib}.log"));
        let generated = generate(&log, mib << 20)?;
        let log = log.to_str().context("path")?;
        let json_out = dir.path().join("out.json");
        let json = peak_rss_kib(&["events", "--file", log, "-o", "json"], &json_out)?;
        let shape: Shape =
            serde_json::from_reader(std::io::BufReader::new(std::fs::File::open(&json_out)?))?;
        assert_eq!(shape.input.lines_read, generated.lines);
        assert_eq!(
            u64::try_from(shape.events.len())?,
            generated.blocks * CLASSIFIED_PER_BLOCK
        );
        assert_eq!(u64::try_from(shape.incidents.len())?, generated.blocks);
        let table_out = dir.path().join("out.txt");
        let table = peak_rss_kib(&["events", "--file", log], &table_out)?;
        let count_line = format!(
            "{} events in {} lines read",
            generated.blocks * CLASSIFIED_PER_BLOCK,
            generated.lines
        );
        // Line by line: the table is larger than the memory measured.
        let mut counted = false;
        for line in std::io::BufReader::new(std::fs::File::open(&table_out)?).lines() {
            counted |= line?.starts_with(&count_line);
        }
        assert!(counted, "no `{count_line}`");
        eprintln!("{mib} MiB log: peak RSS {json} KiB (JSON), {table} KiB (table)");
        peaks.push((json, table));
        std::fs::remove_file(&json_out)?;
        std::fs::remove_file(&table_out)?;
    }
    let [(small_json, small_table), (large_json, large_table)] = peaks[..] else {
        anyhow::bail!("two sizes");
    };
    let own = own_peak_kib()?;
    eprintln!("the test's own peak: {own} KiB");
    assert!(
        own < small_json.min(small_table),
        "the test's own peak ({own} KiB) would hide nodectl's"
    );
    for (what, small, large) in [
        ("JSON", small_json, large_json),
        ("table", small_table, large_table),
    ] {
        assert!(large < MAX_RSS_KIB, "{what}: {large} KiB for 64 MiB of log");
        assert!(
            large <= small + GROWTH_SLACK_KIB,
            "{what}: {small} KiB for 8 MiB of log, {large} KiB for 64 MiB"
        );
    }
    Ok(())
}
