//! The client's config file: the TLS material for agents (`ca`, `cert`, `key`), so a fleet's CA need not be typed on every command.
//!
//! `$NODECTL_CONFIG`, else `$XDG_CONFIG_HOME/nodectl/config.toml`, else
//! `~/.config/nodectl/config.toml`; a missing file is no configuration. Flags and their
//! variables (`--ca`/`NODECTL_CA`, …) come first; the file fills what they leave out.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::nodes::AgentTlsFiles;

/// Largest config file read: a few lines of paths.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[tls]`: `ca`, `cert`, `key` (relative paths taken from the file's directory) and
    /// `server_name`.
    #[serde(default)]
    pub tls: AgentTlsFiles,
}

impl ConfigFile {
    /// Where the config file is looked for.
    pub fn path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("NODECTL_CONFIG") {
            return Some(PathBuf::from(path));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
        Some(base.join("nodectl/config.toml"))
    }

    /// The config file, or none when it does not exist; a file that cannot be read or holds an
    /// unknown key is an input error naming the file and line.
    pub fn load() -> anyhow::Result<Self> {
        let Some(path) = Self::path() else {
            return Ok(Self::default());
        };
        Self::load_from(&path)
    }

    fn load_from(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("config file {shown}")),
        };
        if !file
            .metadata()
            .with_context(|| format!("config file {shown}"))?
            .is_file()
        {
            anyhow::bail!("config file {shown}: not a regular file");
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("config file {shown}"))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            anyhow::bail!("config file {shown}: larger than 64 KiB");
        }
        let mut config: ConfigFile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {shown}: {e}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_the_files_and_unknown_keys_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[tls]\nca = \"ca.pem\"\ncert = \"/etc/c.pem\"\n").unwrap();
        let config = ConfigFile::load_from(&path).unwrap();
        assert_eq!(config.tls.ca.unwrap(), dir.path().join("ca.pem"));
        assert_eq!(config.tls.cert.unwrap(), PathBuf::from("/etc/c.pem"));
        std::fs::write(&path, "[tls]\nca = \"ca.pem\"\ncertificate = \"x\"\n").unwrap();
        let e = format!("{:#}", ConfigFile::load_from(&path).unwrap_err());
        assert!(e.contains("line 3") && e.contains("certificate"), "{e}");
        assert!(ConfigFile::load_from(&dir.path().join("none.toml")).is_ok());
    }
}
