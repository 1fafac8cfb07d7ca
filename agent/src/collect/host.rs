//! Host facts: kernel release, command line, os-release (Talos version), boot id, hostname, memory, uptime.

use procfs::FromRead as _;

use super::{Reader, clip};
use nodectl_model::kernel_args::{KernelArgument, render_cmdline, split_cmdline};
use nodectl_model::snapshot::{Host, OsRelease};

/// Parses os-release (`KEY=value`, values optionally quoted, `#` comments).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        if value.is_empty() {
            continue;
        }
        match key.trim() {
            "ID" => release.id = Some(value),
            "NAME" => release.name = Some(value),
            "VERSION_ID" => release.version_id = Some(value),
            "PRETTY_NAME" => release.pretty_name = Some(value),
            _ => {}
        }
    }
    if release.id.as_deref() == Some("talos") {
        release.talos_version = release.version_id.clone();
    }
    release
}

fn unquote(value: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `MemTotal` and `MemAvailable` in bytes, parsed by the procfs crate from the root's file.
pub fn parse_meminfo(text: &str) -> Result<(u64, Option<u64>), String> {
    // procfs assumes well-formed input (it slices the field name and multiplies units
    // unchecked); refuse anything that could trip it before handing the text over.
    for (number, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(field), Some(value)) = (words.next(), words.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("line {}: no value: {:?}", number + 1, clip(line)));
        };
        let scale: u64 = match words.next() {
            None | Some("B") => 1,
            Some(u) if u.starts_with(['k', 'K']) => 1 << 10,
            Some(u) if u.starts_with(['m', 'M']) => 1 << 20,
            _ => 1 << 30,
        };
        let value_ok = value
            .parse::<u64>()
            .is_ok_and(|v| v.checked_mul(scale).is_some());
        if !field.is_ascii() || !field.ends_with(':') || !value_ok {
            return Err(format!("line {}: malformed: {:?}", number + 1, clip(line)));
        }
    }
    let meminfo = procfs::Meminfo::from_read(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok((meminfo.mem_total, meminfo.mem_available))
}

/// `/proc/uptime` → microseconds since boot.
pub fn parse_uptime(text: &str) -> Result<u64, String> {
    let uptime = procfs::Uptime::from_read(text.as_bytes()).map_err(|e| e.to_string())?;
    if !uptime.uptime.is_finite() || uptime.uptime < 0.0 {
        return Err(format!("not an uptime: {:?}", clip(text.trim())));
    }
    // Float-to-int `as` saturates: no overflow on absurd values.
    Ok((uptime.uptime * 1e6).round() as u64)
}

/// The host facts fixed for a boot: kernel release, command line, os-release. (os-release
/// changes with an OS upgrade, which on Talos is always a reboot.)
#[derive(Debug, Clone, Default)]
pub struct BootHost {
    pub kernel_release: Option<String>,
    pub cmdline: Option<String>,
    pub kernel_arguments: Vec<KernelArgument>,
    pub os_release: Option<OsRelease>,
}

pub fn collect_boot(reader: &mut Reader<'_>) -> BootHost {
    let root = reader.root;
    let mut cmdline = reader
        .text(&root.path("/proc/cmdline"))
        .map(|s| s.trim_end_matches(['\n', '\0']).to_owned());
    let mut kernel_arguments = cmdline.as_deref().map(split_cmdline).unwrap_or_default();
    // The kernel hands everything after a bare `--` to init: those are not kernel arguments.
    if let Some(end) = kernel_arguments
        .iter()
        .position(|a| a.key == "--" && a.value.is_none())
    {
        kernel_arguments.truncate(end);
    }
    if super::redact::redact_arguments(&mut kernel_arguments) {
        // The command line as written would carry the credentials: it is written anew.
        cmdline = Some(render_cmdline(&kernel_arguments).unwrap_or_else(|| {
            kernel_arguments
                .iter()
                .map(KernelArgument::render)
                .collect::<Vec<_>>()
                .join(" ")
        }));
    }
    BootHost {
        kernel_release: reader.line(&root.path("/proc/sys/kernel/osrelease")),
        kernel_arguments,
        cmdline: cmdline.filter(|c| !c.is_empty()),
        os_release: reader
            .text(&root.os_release())
            .map(|text| parse_os_release(&text)),
    }
}

/// The id of the running boot (`None` on a tree without one).
pub fn boot_id(reader: &mut Reader<'_>) -> Option<String> {
    reader.line(&reader.root.path("/proc/sys/kernel/random/boot_id"))
}

/// The host: `boot` and `boot_id` as read before, hostname, memory and uptime read now.
pub fn collect(reader: &mut Reader<'_>, boot_id: Option<String>, boot: &BootHost) -> Host {
    let root = reader.root;
    let memory = reader.parsed(&root.path("/proc/meminfo"), parse_meminfo);
    let (mem_total_bytes, mem_available_bytes) = match memory {
        Some((total, available)) => (Some(total), available),
        None if root.is_live_host() => live_memory(),
        None => (None, None),
    };
    Host {
        hostname: reader.line(&root.path("/proc/sys/kernel/hostname")),
        kernel_release: boot.kernel_release.clone(),
        boot_id,
        kernel_arguments: boot.kernel_arguments.clone(),
        cmdline: boot.cmdline.clone(),
        os_release: boot.os_release.clone(),
        mem_total_bytes,
        mem_available_bytes,
        uptime_usec: reader.parsed(&root.path("/proc/uptime"), parse_uptime),
    }
}

/// Memory of the machine this process runs on; only meaningful when the root is `/`.
fn live_memory() -> (Option<u64>, Option<u64>) {
    let Ok(mut system) = sysinfo::System::new() else {
        return (None, None);
    };
    system.refresh_memory();
    let total = system.total_memory();
    (
        (total > 0).then_some(total),
        (total > 0).then_some(system.available_memory()),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn talos_os_release() {
        let release = parse_os_release(
            "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.12.0\nPRETTY_NAME=\"Talos (v1.12.0)\"\n# c\n",
        );
        assert_eq!(release.talos_version.as_deref(), Some("v1.12.0"));
        assert_eq!(release.pretty_name.as_deref(), Some("Talos (v1.12.0)"));
        let debian = parse_os_release("ID=debian\nVERSION_ID=\"13\"\n");
        assert_eq!(debian.version_id.as_deref(), Some("13"));
        assert_eq!(debian.talos_version, None);
    }

    #[test]
    fn meminfo_and_uptime() {
        let text = "MemTotal:       131072000 kB\nMemFree:        1000 kB\nMemAvailable:   120000000 kB\nBuffers: 0 kB\nCached: 0 kB\nSwapCached: 0 kB\nActive: 0 kB\nInactive: 0 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\nDirty: 0 kB\nWriteback: 0 kB\nMapped: 0 kB\nShmem: 0 kB\nSlab: 0 kB\nSReclaimable: 0 kB\nSUnreclaim: 0 kB\nKernelStack: 0 kB\nPageTables: 0 kB\nNFS_Unstable: 0 kB\nBounce: 0 kB\nWritebackTmp: 0 kB\nCommitLimit: 0 kB\nCommitted_AS: 0 kB\nVmallocTotal: 0 kB\nVmallocUsed: 0 kB\nVmallocChunk: 0 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Ok((131_072_000 * 1024, Some(120_000_000 * 1024)))
        );
        assert!(parse_meminfo("é 5\n").is_err());
        assert!(parse_meminfo("MemTotal: 18446744073709551615 kB\n").is_err());
        assert_eq!(parse_uptime("12.50 40.00\n"), Ok(12_500_000));
        assert!(parse_uptime("soon\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn host_parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_os_release(&text);
            let _ = parse_meminfo(&text);
            let _ = parse_uptime(&text);
        }

        #[test]
        fn meminfo_survives_mutations(pos in 0usize..80, byte in proptest::num::u8::ANY) {
            let mut bytes = b"MemTotal: 131072000 kB\nMemFree: 1000 kB\nMemAvailable: 12 kB\n".to_vec();
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = parse_meminfo(&String::from_utf8_lossy(&bytes));
        }
    }
}
