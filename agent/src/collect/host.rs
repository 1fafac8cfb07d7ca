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

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes, each on its own: a missing or
/// malformed line loses only its field, and says why. (The procfs crate's `Meminfo` needs every
/// field of a current kernel and fails as a whole, with an internal-error text, without one.)
pub fn parse_meminfo(text: &str) -> [Result<u64, String>; 2] {
    MEMINFO_FIELDS.map(|name| meminfo_field(text, name))
}

/// The fields of `/proc/meminfo` a snapshot keeps, in the order of [`parse_meminfo`].
const MEMINFO_FIELDS: [&str; 2] = ["MemTotal", "MemAvailable"];

fn meminfo_field(text: &str, name: &str) -> Result<u64, String> {
    let Some((number, line)) = text.lines().enumerate().find(|(_, line)| {
        line.split_once(':')
            .is_some_and(|(field, _)| field.trim() == name)
    }) else {
        return Err(format!("no {name} line"));
    };
    let malformed = || format!("line {} ({name}): malformed: {:?}", number + 1, clip(line));
    let mut words = line
        .split_once(':')
        .map_or("", |(_, v)| v)
        .split_whitespace();
    let value: u64 = words
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(malformed)?;
    let scale: u64 = match words.next() {
        None | Some("B") => 1,
        Some("kB" | "KB" | "KiB") => 1 << 10,
        Some("mB" | "MB" | "MiB") => 1 << 20,
        Some("GB" | "GiB") => 1 << 30,
        Some(_) => return Err(malformed()),
    };
    value.checked_mul(scale).ok_or_else(malformed)
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
    if crate::redact::redact_arguments(&mut kernel_arguments) {
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
    let meminfo_path = root.path("/proc/meminfo");
    let (mem_total_bytes, mem_available_bytes) = match reader.text(&meminfo_path) {
        Some(text) => {
            let [total, available] = parse_meminfo(&text).map(|field| {
                field
                    .map_err(|reason| reader.problem(&meminfo_path, reason))
                    .ok()
            });
            (total, available)
        }
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
            [Ok(131_072_000 * 1024), Ok(120_000_000 * 1024)]
        );
        // A field missing loses that field only, and says which.
        assert_eq!(
            parse_meminfo("MemTotal: 4 kB\n"),
            [Ok(4096), Err("no MemAvailable line".to_owned())]
        );
        assert!(parse_meminfo("é 5\n")[0].is_err());
        let [overflow, _] = parse_meminfo("MemTotal: 18446744073709551615 kB\n");
        assert!(overflow.unwrap_err().contains("malformed"));
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
