//! Module parameters: every file of `/sys/module/<module>/parameters`, typed by its printed form.

use std::collections::BTreeMap;

use super::Reader;
use nodectl_model::snapshot::ParameterValue;

/// Reads `/sys/module/<module>/parameters/*`; empty when the module is not loaded.
pub fn collect(reader: &mut Reader<'_>, module: &str) -> BTreeMap<String, ParameterValue> {
    let dir = reader.root.path(format!("/sys/module/{module}/parameters"));
    let mut out = BTreeMap::new();
    for (name, path) in reader.dir(&dir).unwrap_or_default() {
        if let Some(text) = reader.text(&path) {
            out.insert(name, ParameterValue::parse(&text));
        }
    }
    out
}
