//! Output formats (`-o table|json|yaml`) and printing of structured values.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human tables.
    #[default]
    Table,
    /// Pretty JSON, the stable documented shape.
    Json,
    /// The same shape as JSON, in YAML.
    Yaml,
}

/// Renders `value` as JSON or YAML; `None` for `Format::Table` (the caller draws its table).
pub fn structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<Option<String>> {
    Ok(match format {
        Format::Table => None,
        Format::Json => Some(format!("{}\n", serde_json::to_string_pretty(value)?)),
        Format::Yaml => Some(serde_saphyr::to_string(value)?),
    })
}
