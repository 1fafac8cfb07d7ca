//! Redaction of a bug-report bundle: every file by its type, identifiers hashed the same way everywhere, and a count of what was removed by kind.
//!
//! The values the agent serves are redacted where they are read ([`super`]); a bundle also holds
//! the raw host files, logs and the JSON of what was served, so each is passed through here:
//! `/proc/cmdline` by its arguments, a process's `cmdline` by its argument list, its `environ`
//! by variable names, everything else as text. Beyond credentials, a bundle identifies the
//! machine: UUIDs (boot id, pod UIDs, machine id), MAC addresses and serial numbers are replaced
//! by a keyed hash, the same value giving the same replacement in every file and in every path
//! (so a pod's UID in its log directory's name and in its process's cgroup still match), and the
//! key is random per bundle, so a bundle's replacements cannot be tried against known values.
//! UUIDs and MACs keep their shape, so the bundle still reads as a host. IP addresses go too
//! when asked (`--redact-ips`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use sha2::Digest as _;

use super::{
    Kind, PLACEHOLDER_START, redact_args, redact_arguments, redact_env_value, redact_text,
};
use nodectl_model::kernel_args::{render_cmdline, split_cmdline};

/// UUIDs with dashes or, as systemd writes pod UIDs into cgroup names, underscores
/// (`kubepods-pod0d3c5e1e_5d3f_…`): no word boundary is asked for, since such a name runs a
/// UUID into the letters before it; the fixed 8-4-4-4-12 shape is what tells one, and a run of
/// hex digits going on past it is not one ([`BundleRedactor::identifiers`]).
static UUID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"[0-9a-fA-F]{8}([-_])[0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}",
    )
    .ok()
});

static MAC: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\b(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}\b").ok());

static IPV4: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b").ok()
});

/// IPv6 addresses written in full (eight groups) or with `::` after a group (`fe80::1`,
/// `2001:db8::5`); not clock times (`12:34:56`), which have neither.
static IPV6: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b|\b(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,5}\b)?",
    )
    .ok()
});

/// sysfs and DMI files whose whole content is a serial number or a unique id.
const SERIAL_FILES: [&str; 6] = [
    "serial_number",
    "serial",
    "unique_id",
    "product_serial",
    "board_serial",
    "chassis_serial",
];

/// What [`BundleRedactor`] replaces besides credentials, as named in the summary.
const UUID_KIND: &str = "uuid";
const MAC_KIND: &str = "mac-address";
const SERIAL_KIND: &str = "serial-number";
const IP_KIND: &str = "ip-address";

/// Redacts the files of one bundle and counts what it removed.
#[derive(Debug)]
pub struct BundleRedactor {
    enabled: bool,
    redact_ips: bool,
    key: [u8; 32],
    counts: BTreeMap<String, u64>,
}

impl BundleRedactor {
    /// `enabled` false keeps everything (a bundle the user keeps to themselves).
    pub fn new(enabled: bool, redact_ips: bool) -> Self {
        Self {
            enabled,
            redact_ips,
            key: random_key(),
            counts: BTreeMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How many values were replaced, by kind (`api-key`, `uuid`, …).
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Counts values another redaction of the bundle replaced (a machine configuration's).
    pub fn count_replaced(&mut self, kind: &str, n: u64) {
        self.count(kind, n);
    }

    fn count(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.counts.entry(kind.to_owned()).or_default() += n;
        }
    }

    /// Counts the placeholders `after` has beyond those `before` had, by kind.
    fn count_placeholders(&mut self, before: &str, after: &str) {
        let mut counted: BTreeMap<&str, i64> = BTreeMap::new();
        for (text, sign) in [(after, 1), (before, -1)] {
            for (at, _) in text.match_indices(PLACEHOLDER_START) {
                let rest = &text[at + PLACEHOLDER_START.len()..];
                if let Some(end) = rest.find('>') {
                    *counted.entry(&rest[..end]).or_default() += sign;
                }
            }
        }
        for (kind, n) in counted {
            self.count(kind, u64::try_from(n).unwrap_or(0));
        }
    }

    fn digest(&self, value: &str) -> [u8; 32] {
        let mut hash = sha2::Sha256::new();
        hash.update(self.key);
        hash.update(value.as_bytes());
        hash.finalize().into()
    }

    /// A UUID-shaped stand-in for `uuid`, with its separators and case.
    fn uuid_for(&self, uuid: &str) -> String {
        let digest = hex::encode(self.digest(&uuid.to_ascii_lowercase().replace('_', "-")));
        let mut hex = digest.chars();
        uuid.chars()
            .map(|c| {
                if c.is_ascii_hexdigit() {
                    let h = hex.next().unwrap_or('0');
                    if c.is_ascii_uppercase() {
                        h.to_ascii_uppercase()
                    } else {
                        h
                    }
                } else {
                    c
                }
            })
            .collect()
    }

    /// A locally administered MAC address standing for `mac`.
    fn mac_for(&self, mac: &str) -> String {
        let digest = self.digest(&mac.to_ascii_lowercase());
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&digest[..6]);
        bytes[0] = (bytes[0] & 0xfe) | 0x02;
        bytes.map(|b| format!("{b:02x}")).join(":")
    }

    /// Identifiers in `text` replaced, counted.
    fn identifiers<'t>(&mut self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        let patterns: [(&LazyLock<Option<Regex>>, &str); 4] = [
            (&UUID, UUID_KIND),
            (&MAC, MAC_KIND),
            (&IPV4, IP_KIND),
            (&IPV6, IP_KIND),
        ];
        for (pattern, kind) in patterns {
            if kind == IP_KIND && !self.redact_ips {
                continue;
            }
            let Some(regex) = pattern.as_ref() else {
                continue;
            };
            if !regex.is_match(&out) {
                continue;
            }
            let mut n = 0;
            let text: &str = &out;
            let replaced = regex
                .replace_all(text, |m: &regex::Captures<'_>| {
                    let Some(whole) = m.get(0) else {
                        return String::new();
                    };
                    let found = whole.as_str();
                    let runs_on = text[whole.end()..]
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_hexdigit());
                    if kind == UUID_KIND && runs_on {
                        return found.to_owned();
                    }
                    n += 1;
                    match kind {
                        UUID_KIND => self.uuid_for(found),
                        MAC_KIND => self.mac_for(found),
                        _ => placeholder(IP_KIND),
                    }
                })
                .into_owned();
            self.count(kind, n);
            out = Cow::Owned(replaced);
        }
        out
    }

    /// Free text (a log, a sysfs file, a JSON string): credentials and identifiers replaced.
    pub fn text<'t>(&mut self, text: &'t str) -> Cow<'t, str> {
        if !self.enabled {
            return Cow::Borrowed(text);
        }
        let redacted = redact_text(text);
        self.count_placeholders(text, &redacted);
        match self.identifiers(&redacted) {
            Cow::Borrowed(_) => redacted,
            Cow::Owned(more) => Cow::Owned(more),
        }
    }

    /// A path inside the bundle with the identifiers in its names replaced as in the files.
    pub fn path(&mut self, path: &Path) -> PathBuf {
        if !self.enabled {
            return path.to_owned();
        }
        match path.to_str() {
            Some(text) => PathBuf::from(self.identifiers(text).into_owned()),
            None => path.to_owned(),
        }
    }

    /// Every string of a JSON document redacted as text.
    pub fn json(&mut self, value: &mut serde_json::Value) {
        if !self.enabled {
            return;
        }
        match value {
            serde_json::Value::String(text) => {
                if let Cow::Owned(redacted) = self.text(text) {
                    *text = redacted;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.json(v)),
            _ => {}
        }
    }

    /// Every string of a JSON document with credentials replaced, identifiers left as they
    /// are: for documents made from a bundle's files, whose identifiers were replaced already.
    pub fn json_credentials(&mut self, value: &mut serde_json::Value) {
        if !self.enabled {
            return;
        }
        match value {
            serde_json::Value::String(text) => {
                let redacted = redact_text(text);
                self.count_placeholders(text, &redacted);
                if let Cow::Owned(redacted) = redacted {
                    *text = redacted;
                }
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| self.json_credentials(v))
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|v| self.json_credentials(v))
            }
            _ => {}
        }
    }

    /// A host file by what it is (`host_path` relative to the root: `proc/123/environ`).
    /// Bytes that are not text (`gpu_metrics`) are kept as they are.
    pub fn host_file(&mut self, host_path: &Path, bytes: Vec<u8>) -> Vec<u8> {
        if !self.enabled {
            return bytes;
        }
        let name = host_path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let in_proc_pid = host_path.starts_with("proc")
            && host_path
                .iter()
                .nth(1)
                .and_then(|p| p.to_str())
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
            || host_path.iter().any(|p| p == "task");
        if in_proc_pid && (name == "cmdline" || name == "environ") {
            return self.nul_separated(name == "environ", &bytes);
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            // Binary (a metrics table): nothing a credential is written in.
            Err(e) => return e.into_bytes(),
        };
        if host_path == Path::new("proc/cmdline") {
            return self.kernel_cmdline(&text).into_bytes();
        }
        if SERIAL_FILES.contains(&name) && !text.trim().is_empty() {
            self.count(SERIAL_KIND, 1);
            let digest = hex::encode(&self.digest(text.trim())[..6]);
            return format!("<{SERIAL_KIND}:{digest}>\n").into_bytes();
        }
        self.text(&text).into_owned().into_bytes()
    }

    /// `/proc/cmdline`: deny-listed and secret arguments, then text.
    fn kernel_cmdline(&mut self, text: &str) -> String {
        let trimmed = text.trim_end_matches(['\n', '\0']);
        let mut args = split_cmdline(trimmed);
        let rendered = if redact_arguments(&mut args) {
            render_cmdline(&args).unwrap_or_else(|| {
                args.iter()
                    .map(nodectl_model::KernelArgument::render)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        } else {
            trimmed.to_owned()
        };
        self.count_placeholders(trimmed, &rendered);
        let mut out = self.identifiers(&rendered).into_owned();
        out.push('\n');
        out
    }

    /// A process's `cmdline` (arguments) or `environ` (`NAME=value`), NUL-separated.
    fn nul_separated(&mut self, environ: bool, bytes: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        let ends_with_nul = text.ends_with('\0');
        let mut parts: Vec<String> = text
            .trim_end_matches('\0')
            .split('\0')
            .map(str::to_owned)
            .collect();
        let before = parts.join("\0");
        if environ {
            for part in &mut parts {
                if let Some((name, value)) = part.split_once('=') {
                    let value = if bundle_secret_variable(name) && !value.is_empty() {
                        placeholder(super::secret_name(name).map_or("secret", Kind::as_str))
                    } else {
                        redact_env_value(name, value)
                    };
                    *part = format!("{name}={value}");
                }
            }
        } else {
            redact_args(&mut parts);
        }
        let after = parts.join("\0");
        self.count_placeholders(&before, &after);
        let mut out = self.identifiers(&after).into_owned().into_bytes();
        if ends_with_nul {
            out.push(0);
        }
        out
    }
}

/// Variable names a bundle never shows the value of: any holding KEY, TOKEN, SECRET, PASSWORD or
/// AUTH in capitals, as a whole word or not (`OPENAI_APIKEY`, `AWS_SESSION_TOKEN`), beyond those
/// [`super::secret_name`] recognises by their words.
fn bundle_secret_variable(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    super::secret_name(name).is_some()
        || [
            "KEY",
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "AUTH",
            "CREDENTIAL",
        ]
        .iter()
        .any(|word| upper.contains(word))
}

/// `<redacted:KIND>`.
fn placeholder(kind: &str) -> String {
    format!("{PLACEHOLDER_START}{kind}>")
}

/// A random key from this process's `/dev/urandom`; without one the bundle still hashes, keyed
/// by the time and this process, which is no secret but differs per bundle.
fn random_key() -> [u8; 32] {
    use std::io::Read as _;
    let mut key = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
    if read.is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        key = sha2::Sha256::digest(seed.as_bytes()).into();
    }
    key
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_same_identifier_is_the_same_stand_in_in_files_and_paths() {
        let mut r = BundleRedactor::new(true, false);
        let uid = "0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11";
        let in_text = r.text(&format!("pod {uid} up")).into_owned();
        let in_path = r.path(Path::new(&format!("var/log/pods/llm_llama-0_{uid}/server")));
        let stand_in = in_text.split(' ').nth(1).unwrap().to_owned();
        assert_ne!(stand_in, uid);
        assert_eq!(stand_in.len(), uid.len());
        assert!(in_path.to_str().unwrap().contains(&stand_in));
        assert_eq!(r.counts()["uuid"], 2);
        // Another bundle, another key: the stand-in cannot be looked up.
        let mut other = BundleRedactor::new(true, false);
        assert!(!other.text(uid).contains(&stand_in));
    }

    #[test]
    fn files_are_redacted_by_type_and_counted() {
        let mut r = BundleRedactor::new(true, true);
        let environ = r.host_file(
            Path::new("proc/42/environ"),
            b"PATH=/usr/bin\0OTHER_SERVICE_TOKEN=abc\0HSA_ENABLE_SDMA=0\0".to_vec(),
        );
        assert_eq!(
            environ,
            b"PATH=/usr/bin\0OTHER_SERVICE_TOKEN=<redacted:token>\0HSA_ENABLE_SDMA=0\0"
        );
        let cmdline = r.host_file(
            Path::new("proc/42/cmdline"),
            b"llama-server\0--api-key\0k3y\0".to_vec(),
        );
        assert_eq!(cmdline, b"llama-server\0--api-key\0<redacted:api-key>\0");
        let kernel = r.host_file(
            Path::new("proc/cmdline"),
            b"console=tty0 ip=10.0.0.5:::::eth0:off\n".to_vec(),
        );
        assert_eq!(kernel, b"console=tty0 ip=<redacted:host-identity>\n");
        let serial = r.host_file(Path::new("sys/class/x/serial_number"), b"SN123\n".to_vec());
        assert!(
            String::from_utf8(serial)
                .unwrap()
                .starts_with("<serial-number:")
        );
        let log = r.host_file(
            Path::new("dev/kmsg"),
            b"6,1,2,-;eth0 up mac 3c:ec:ef:00:11:22 from 10.1.2.3 at 12:34:56\n".to_vec(),
        );
        let log = String::from_utf8(log).unwrap();
        assert!(
            !log.contains("3c:ec:ef:00:11:22") && !log.contains("10.1.2.3"),
            "{log}"
        );
        assert!(
            log.contains("12:34:56"),
            "clock times are no addresses: {log}"
        );
        let binary = r.host_file(Path::new("sys/x/gpu_metrics"), vec![0xff, 0xfe, 0]);
        assert_eq!(binary, vec![0xff, 0xfe, 0]);
        for kind in [
            "token",
            "api-key",
            "host-identity",
            "serial-number",
            "mac-address",
            "ip-address",
        ] {
            assert!(
                r.counts().get(kind).is_some_and(|n| *n >= 1),
                "{kind}: {:?}",
                r.counts()
            );
        }
    }

    #[test]
    fn off_keeps_everything() {
        let mut r = BundleRedactor::new(false, true);
        let text = "--api-key sk-0123456789abcdefghijklmnopqrstuvwxyz012345 0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11";
        assert_eq!(r.text(text), text);
        assert!(r.counts().is_empty());
    }
}
