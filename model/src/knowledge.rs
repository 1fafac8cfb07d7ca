//! The knowledge catalog: kernel rules, incident kinds, node checks, known issues and strategies as rows of one shape, read from `knowledge/*.toml` and a user's files, and checked against each other.
//!
//! Every row, whatever its kind, has `id`, `severity`, `title`, `explanation`, `references` and
//! `actions` (strategy ids, best first); the keys of its kind (a rule's `pattern`, a known
//! issue's `when`, a strategy's `action` text) sit beside them and are read by the part of
//! nodectl that uses the kind. A strategy is the only row whose text says what to do: a finding's
//! remedy, an incident's action and a diagnosis's proposals are all drawn from strategies.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::snapshot::Severity;

/// The files built into nodectl, in the order their rows are read.
const EMBEDDED: [(&str, &str); 5] = [
    (
        "knowledge/kernel-rules.toml",
        include_str!("../../knowledge/kernel-rules.toml"),
    ),
    (
        "knowledge/kfd-smi-events.toml",
        include_str!("../../knowledge/kfd-smi-events.toml"),
    ),
    (
        "knowledge/node-checks.toml",
        include_str!("../../knowledge/node-checks.toml"),
    ),
    (
        "knowledge/known-issues.toml",
        include_str!("../../knowledge/known-issues.toml"),
    ),
    (
        "knowledge/strategies.toml",
        include_str!("../../knowledge/strategies.toml"),
    ),
];

/// A user's knowledge file larger than this is refused: the shipped catalog is ~100 KiB, and a
/// file read at start-up by a privileged agent must not be able to exhaust its memory.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// What a row is; its TOML table name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `[[rule]]`: a kernel message pattern and how its events take part in incidents.
    Rule,
    /// `[[incident_kind]]`: a name for an incident by the rule ids it holds.
    IncidentKind,
    /// `[[check]]`: a node check over a snapshot (its logic is code, by id).
    Check,
    /// `[[known_issue]]`: a llama.cpp problem `nodectl diagnose` recognises.
    KnownIssue,
    /// `[[strategy]]`: what to do, and how to tell it is done already.
    Strategy,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Rule,
        Kind::IncidentKind,
        Kind::Check,
        Kind::KnownIssue,
        Kind::Strategy,
    ];

    /// The TOML table name, and the name `nodectl knowledge list --kind` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rule => "rule",
            Kind::IncidentKind => "incident_kind",
            Kind::Check => "check",
            Kind::KnownIssue => "known_issue",
            Kind::Strategy => "strategy",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a row was read: a file and the line of its table header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// One thing wrong with the knowledge, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct KnowledgeError {
    pub at: Location,
    pub message: String,
}

impl KnowledgeError {
    pub fn new(at: &Location, message: impl Into<String>) -> Self {
        Self {
            at: at.clone(),
            message: message.into(),
        }
    }
}

/// Everything wrong with a set of knowledge files, one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", list(.0))]
pub struct KnowledgeErrors(pub Vec<KnowledgeError>);

fn list(errors: &[KnowledgeError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One row of the catalog.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub kind: Kind,
    pub id: String,
    /// Required for rules, incident kinds and checks; known issues and strategies may leave it out.
    pub severity: Option<Severity>,
    pub title: String,
    pub explanation: String,
    pub references: Vec<String>,
    /// Strategy ids, best first.
    pub actions: Vec<String>,
    /// The keys of the row's kind.
    pub body: toml::Table,
    pub at: Location,
    /// A further wording of the rule before it (same id, no header of its own).
    pub wording: bool,
}

impl Entry {
    /// The row's own keys as the type of its kind; an error names the row.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, KnowledgeError> {
        T::deserialize(toml::Value::Table(self.body.clone())).map_err(|e| {
            KnowledgeError::new(
                &self.at,
                format!("{} `{}`: {}", self.kind, self.id, e.message()),
            )
        })
    }

    /// A string key of the row's own keys.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(toml::Value::as_str)
    }
}

/// The catalog's settings besides its rows; a later file's value wins.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Events on one device further apart than this start a new incident.
    pub incident_gap_seconds: Option<u64>,
    /// What to do about an incident no `[[incident_kind]]` names (strategy ids).
    pub unnamed_incident_actions: Option<Vec<String>>,
}

impl Settings {
    fn over(self, earlier: Settings) -> Settings {
        Settings {
            incident_gap_seconds: self.incident_gap_seconds.or(earlier.incident_gap_seconds),
            unnamed_incident_actions: self
                .unnamed_incident_actions
                .or(earlier.unnamed_incident_actions),
        }
    }

    fn is_empty(&self) -> bool {
        self.incident_gap_seconds.is_none() && self.unnamed_incident_actions.is_none()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRows {
    incident_gap_seconds: Option<u64>,
    unnamed_incident_actions: Option<Vec<String>>,
    #[serde(default)]
    rule: Vec<Spanned<Row>>,
    #[serde(default)]
    incident_kind: Vec<Spanned<Row>>,
    #[serde(default)]
    check: Vec<Spanned<Row>>,
    #[serde(default)]
    known_issue: Vec<Spanned<Row>>,
    #[serde(default)]
    strategy: Vec<Spanned<Row>>,
}

#[derive(Debug, Deserialize)]
struct Row {
    id: String,
    severity: Option<Severity>,
    title: Option<String>,
    explanation: Option<String>,
    references: Option<Vec<String>>,
    actions: Option<Vec<String>>,
    #[serde(flatten)]
    body: toml::Table,
}

/// The knowledge in effect: the embedded catalog, overlaid with a user's files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Knowledge {
    entries: Vec<Entry>,
    pub settings: Settings,
    /// The files read, embedded first.
    pub files: Vec<String>,
}

static CURRENT: OnceLock<Knowledge> = OnceLock::new();

impl Knowledge {
    /// The catalog built into nodectl, parsed and checked. Not kept: a process builds what it
    /// needs from it once (the agent its classifier and checks) and should not hold the rows
    /// for its whole life.
    pub fn embedded() -> Result<Knowledge, KnowledgeErrors> {
        Knowledge::from_layers(&[embedded_layer()?]).checked()
    }

    /// The knowledge this process runs with: what [`Knowledge::install`] set at start-up, else
    /// the embedded catalog.
    pub fn current() -> Result<Cow<'static, Knowledge>, KnowledgeErrors> {
        match CURRENT.get() {
            Some(k) => Ok(Cow::Borrowed(k)),
            None => Knowledge::embedded().map(Cow::Owned),
        }
    }

    /// Makes `knowledge` the one [`Knowledge::current`] returns; the first call wins, as a
    /// process reads its knowledge once, at start-up.
    pub fn install(knowledge: Knowledge) -> bool {
        CURRENT.set(knowledge).is_ok()
    }

    /// The embedded catalog overlaid with the TOML files at `paths` (a folder: its `*.toml`
    /// files in name order). A user row replaces the embedded rows of its kind and id; a new
    /// rule goes before the embedded ones (the first matching rule wins, and a user's rule is
    /// the more specific), any other new row after. Structure and cross-references are checked.
    pub fn load(paths: &[PathBuf]) -> Result<Knowledge, KnowledgeErrors> {
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            for file in knowledge_files(path).map_err(|e| KnowledgeErrors(vec![e]))? {
                match read_bounded(&file) {
                    Ok(text) => texts.push((file.display().to_string(), text)),
                    Err(e) => errors.push(e),
                }
            }
        }
        if !errors.is_empty() {
            return Err(KnowledgeErrors(errors));
        }
        Knowledge::overlay(&texts)
    }

    /// The embedded catalog overlaid with files already read: (name for errors, text).
    pub fn overlay(files: &[(String, String)]) -> Result<Knowledge, KnowledgeErrors> {
        let mut errors = Vec::new();
        let mut user = Vec::new();
        // A file that is not TOML gives no rows, and every reference to its rows would be
        // reported as dangling too: then only what is wrong in the files is said.
        let mut unreadable = false;
        for (name, text) in files {
            match parse_file(name, text) {
                Ok((layer, wrong)) => {
                    errors.extend(wrong);
                    user.push(layer);
                }
                Err(e) => {
                    errors.push(e);
                    unreadable = true;
                }
            }
        }
        let mut layers = vec![embedded_layer()?];
        if !user.is_empty() {
            let (layer, wrong) = merge_files(user);
            errors.extend(wrong);
            layers.push(layer);
        }
        let knowledge = Knowledge::from_layers(&layers);
        if !unreadable {
            errors.extend(knowledge.cross_reference_errors());
        }
        if errors.is_empty() {
            Ok(knowledge)
        } else {
            errors.sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
            Err(KnowledgeErrors(errors))
        }
    }

    /// Every row, in reading order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The rows of one kind, in reading order (a rule's wordings included).
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.kind == kind)
    }

    /// The (first) row of a kind and id.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.kind == kind && e.id == id)
    }

    /// The `action` text of a strategy.
    pub fn action_of(&self, strategy: &str) -> Option<&str> {
        self.get(Kind::Strategy, strategy)
            .and_then(|s| s.text("action"))
    }

    /// What to do, as one sentence: the actions' texts in order, each the fallback of the one
    /// before.
    pub fn action_text(&self, actions: &[String]) -> String {
        actions
            .iter()
            .filter_map(|id| self.action_of(id))
            .collect::<Vec<_>>()
            .join("; failing that, ")
    }

    /// One layer (the embedded files, or a user's) merged over the layers before it.
    fn from_layers(layers: &[Layer]) -> Knowledge {
        let mut entries: Vec<Entry> = Vec::new();
        let mut settings = Settings::default();
        let mut files = Vec::new();
        for layer in layers {
            let replaced: BTreeSet<(Kind, &str)> = layer
                .entries
                .iter()
                .map(|e| (e.kind, e.id.as_str()))
                .filter(|key| entries.iter().any(|e| (e.kind, e.id.as_str()) == *key))
                .collect();
            let mut merged = Vec::with_capacity(entries.len() + layer.entries.len());
            let new_rules = layer
                .entries
                .iter()
                .filter(|e| e.kind == Kind::Rule && !replaced.contains(&(e.kind, e.id.as_str())));
            merged.extend(new_rules.cloned());
            let mut placed = BTreeSet::new();
            for old in entries {
                let key = (old.kind, old.id.as_str());
                if replaced.contains(&key) {
                    if placed.insert((old.kind, old.id.clone())) {
                        merged.extend(
                            layer
                                .entries
                                .iter()
                                .filter(|e| (e.kind, e.id.as_str()) == key)
                                .cloned(),
                        );
                    }
                } else {
                    merged.push(old);
                }
            }
            merged.extend(
                layer
                    .entries
                    .iter()
                    .filter(|e| {
                        e.kind != Kind::Rule && !replaced.contains(&(e.kind, e.id.as_str()))
                    })
                    .cloned(),
            );
            entries = merged;
            settings = layer.settings.clone().over(settings);
            files.extend(layer.files.iter().cloned());
        }
        Knowledge {
            entries,
            settings,
            files,
        }
    }

    fn checked(self) -> Result<Knowledge, KnowledgeErrors> {
        let errors = self.cross_reference_errors();
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(KnowledgeErrors(errors))
        }
    }

    /// Every reference that points nowhere, every strategy nobody proposes, every row that must
    /// name an action and does not, every rule without an example line.
    pub fn cross_reference_errors(&self) -> Vec<KnowledgeError> {
        let mut errors = Vec::new();
        let ids =
            |kind: Kind| -> BTreeSet<&str> { self.of_kind(kind).map(|e| e.id.as_str()).collect() };
        let rules = ids(Kind::Rule);
        let kinds = ids(Kind::IncidentKind);
        let checks = ids(Kind::Check);
        let strategies = ids(Kind::Strategy);
        let mut proposed = BTreeSet::new();
        for action in self.settings.unnamed_incident_actions.iter().flatten() {
            proposed.insert(action.as_str());
            if !strategies.contains(action.as_str()) {
                let at = Location {
                    file: self.files.join(", "),
                    line: 0,
                };
                errors.push(KnowledgeError::new(
                    &at,
                    format!("unnamed_incident_actions: `{action}` is no strategy"),
                ));
            }
        }
        for entry in &self.entries {
            let name = format!("{} `{}`", entry.kind, entry.id);
            for action in &entry.actions {
                proposed.insert(action.as_str());
                if !strategies.contains(action.as_str()) {
                    errors.push(KnowledgeError::new(
                        &entry.at,
                        format!("{name}: action `{action}` is no strategy"),
                    ));
                }
            }
            let must_act = match entry.kind {
                Kind::IncidentKind | Kind::KnownIssue => true,
                Kind::Rule | Kind::Check => {
                    !entry.wording
                        && matches!(entry.severity, Some(Severity::Critical | Severity::Warning))
                }
                Kind::Strategy => false,
            };
            if must_act && entry.actions.is_empty() {
                errors.push(KnowledgeError::new(
                    &entry.at,
                    format!("{name}: names no action (`actions = [\"strategy_id\", ...]`)"),
                ));
            }
            let refer = |errors: &mut Vec<KnowledgeError>,
                         key: &str,
                         known: &BTreeSet<&str>,
                         what: &str| {
                for id in strings_under(&entry.body, key) {
                    if !known.contains(id.as_str()) {
                        errors.push(KnowledgeError::new(
                            &entry.at,
                            format!("{name}: `{key}` names `{id}`, which is no {what}"),
                        ));
                    }
                }
            };
            match entry.kind {
                Kind::Rule => {
                    if entry.text("example").is_none_or(str::is_empty) {
                        errors.push(KnowledgeError::new(
                            &entry.at,
                            format!(
                                "{name}: no `example` line (a whole message the rule classifies)"
                            ),
                        ));
                    }
                }
                Kind::IncidentKind => {
                    refer(&mut errors, "require", &rules, "rule");
                    refer(&mut errors, "min_counts", &rules, "rule");
                }
                Kind::KnownIssue => {
                    refer(&mut errors, "when.incidents_any", &kinds, "incident kind");
                    refer(&mut errors, "when.events_any", &rules, "rule");
                    refer(&mut errors, "when.findings_any", &checks, "check");
                }
                Kind::Strategy => {
                    if !entry.actions.is_empty() {
                        errors.push(KnowledgeError::new(
                            &entry.at,
                            format!("{name}: a strategy is an action itself; it names none"),
                        ));
                    }
                    if entry.text("action").is_none_or(str::is_empty) {
                        errors.push(KnowledgeError::new(
                            &entry.at,
                            format!("{name}: no `action` text (what to do)"),
                        ));
                    }
                }
                Kind::Check => {}
            }
        }
        for strategy in self.of_kind(Kind::Strategy) {
            // `proposed_by`: a part of nodectl proposes it from code (a terse log asks for
            // more verbosity), not a row.
            if !proposed.contains(strategy.id.as_str()) && strategy.text("proposed_by").is_none() {
                errors.push(KnowledgeError::new(
                    &strategy.at,
                    format!(
                        "strategy `{}`: no row names it in its actions (nor does `proposed_by` say who proposes it)",
                        strategy.id
                    ),
                ));
            }
        }
        errors
    }
}

/// The string ids under a key (`require`, `min_counts`, `when.events_any`): array items, nested
/// arrays' items, or a table's keys.
fn strings_under(body: &toml::Table, path: &str) -> Vec<String> {
    let mut value = None;
    let mut table = Some(body);
    for part in path.split('.') {
        value = table.and_then(|t| t.get(part));
        table = value.and_then(toml::Value::as_table);
    }
    let mut out = Vec::new();
    fn walk(value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            toml::Value::Table(t) => out.extend(t.keys().cloned()),
            _ => {}
        }
    }
    if let Some(value) = value {
        walk(value, &mut out);
    }
    out
}

/// The rows of one set of files (the embedded ones, or a user's), checked for duplicates.
struct Layer {
    entries: Vec<Entry>,
    settings: Settings,
    files: Vec<String>,
}

/// The shipped files as one layer; any error in them is a build defect the tests catch.
fn embedded_layer() -> Result<Layer, KnowledgeErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in EMBEDDED {
        match parse_file(name, text) {
            Ok((layer, wrong)) => {
                errors.extend(wrong);
                files.push(layer);
            }
            Err(e) => errors.push(e),
        }
    }
    let (layer, wrong) = merge_files(files);
    errors.extend(wrong);
    if errors.is_empty() {
        Ok(layer)
    } else {
        Err(KnowledgeErrors(errors))
    }
}

/// The files of one layer as one; an id defined twice is an error, and only its first row is kept.
fn merge_files(files: Vec<Layer>) -> (Layer, Vec<KnowledgeError>) {
    let mut merged = Layer {
        entries: Vec::new(),
        settings: Settings::default(),
        files: Vec::new(),
    };
    let mut first: BTreeMap<(Kind, String), Location> = BTreeMap::new();
    let mut errors = Vec::new();
    for file in files {
        for entry in file.entries {
            if !entry.wording {
                let key = (entry.kind, entry.id.clone());
                if let Some(at) = first.get(&key) {
                    errors.push(KnowledgeError::new(
                        &entry.at,
                        format!(
                            "duplicate id: {} `{}` is defined already at {at} (a further wording of a rule repeats only its id and its own keys)",
                            entry.kind, entry.id
                        ),
                    ));
                    continue;
                }
                first.insert(key, entry.at.clone());
            }
            merged.entries.push(entry);
        }
        merged.settings = file.settings.over(merged.settings);
        merged.files.extend(file.files);
    }
    (merged, errors)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .get(..offset)
        .map_or(0, |b| memchr::memchr_iter(b'\n', b).count())
        + 1
}

/// The rows of one file, and what is wrong with them (a wrong row is left out); `Err` when the
/// file is no knowledge TOML at all. `file` names it in errors.
fn parse_file(file: &str, text: &str) -> Result<(Layer, Vec<KnowledgeError>), KnowledgeError> {
    let whole = Location {
        file: file.to_owned(),
        line: 0,
    };
    let rows: FileRows = toml::from_str(text).map_err(|e| {
        let at = Location {
            file: file.to_owned(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
        };
        KnowledgeError::new(&at, e.message().trim_end())
    })?;
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let tables = [
        (Kind::Rule, rows.rule),
        (Kind::IncidentKind, rows.incident_kind),
        (Kind::Check, rows.check),
        (Kind::KnownIssue, rows.known_issue),
        (Kind::Strategy, rows.strategy),
    ];
    for (kind, rows) in tables {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for row in rows {
            let at = Location {
                file: file.to_owned(),
                line: line_of(text, row.span().start),
            };
            let row = row.into_inner();
            let name = format!("{kind} `{}`", row.id);
            if row.id.is_empty()
                || !row
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                errors.push(KnowledgeError::new(
                    &at,
                    format!("{kind} id `{}` must be lower_snake_case", row.id),
                ));
                continue;
            }
            let has_header = row.title.is_some()
                || row.severity.is_some()
                || row.explanation.is_some()
                || row.references.is_some()
                || row.actions.is_some();
            // A rule's further wording: the same id again, right for an older or another
            // kernel's text of one event, with no header of its own.
            let wording = kind == Kind::Rule && !has_header && seen.contains(&row.id);
            if !wording {
                if row.title.as_deref().is_none_or(str::is_empty) {
                    errors.push(KnowledgeError::new(&at, format!("{name}: no `title`")));
                }
                let needs_severity = matches!(kind, Kind::Rule | Kind::IncidentKind | Kind::Check);
                match row.severity {
                    None if needs_severity => errors.push(KnowledgeError::new(
                        &at,
                        format!("{name}: no `severity` (critical, warning or info)"),
                    )),
                    Some(Severity::Unknown) => errors.push(KnowledgeError::new(
                        &at,
                        format!("{name}: severity `unknown` is for checks that could not run, not for knowledge"),
                    )),
                    _ => {}
                }
            }
            seen.insert(row.id.clone());
            let inherited = if wording {
                entries
                    .iter()
                    .rev()
                    .find(|e: &&Entry| e.kind == kind && e.id == row.id)
                    .cloned()
            } else {
                None
            };
            let entry = match inherited {
                Some(first) => Entry {
                    body: row.body,
                    at,
                    wording: true,
                    ..first
                },
                None => Entry {
                    kind,
                    id: row.id,
                    severity: row.severity,
                    title: row.title.unwrap_or_default(),
                    explanation: row.explanation.unwrap_or_default(),
                    references: row.references.unwrap_or_default(),
                    actions: row.actions.unwrap_or_default(),
                    body: row.body,
                    at,
                    wording: false,
                },
            };
            entries.push(entry);
        }
    }
    let settings = Settings {
        incident_gap_seconds: rows.incident_gap_seconds,
        unnamed_incident_actions: rows.unnamed_incident_actions,
    };
    if entries.is_empty() && settings.is_empty() {
        errors.push(KnowledgeError::new(
            &whole,
            "holds no knowledge rows ([[rule]], [[incident_kind]], [[check]], [[known_issue]], [[strategy]])",
        ));
    }
    // Rows in file order, whatever their table: a file reads top to bottom.
    entries.sort_by_key(|e| e.at.line);
    let (layer, duplicates) = merge_files(vec![Layer {
        entries,
        settings,
        files: vec![file.to_owned()],
    }]);
    errors.extend(duplicates);
    Ok((layer, errors))
}

/// The TOML files a path names: the file itself, or a folder's `*.toml` files in name order.
fn knowledge_files(path: &Path) -> Result<Vec<PathBuf>, KnowledgeError> {
    let at = Location {
        file: path.display().to_string(),
        line: 0,
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| KnowledgeError::new(&at, format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let dir = std::fs::read_dir(path)
        .map_err(|e| KnowledgeError::new(&at, format!("cannot list: {e}")))?;
    for item in dir {
        let item = item.map_err(|e| KnowledgeError::new(&at, format!("cannot list: {e}")))?;
        let p = item.path();
        if p.extension().is_some_and(|x| x == "toml") {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(KnowledgeError::new(&at, "holds no *.toml file"));
    }
    Ok(files)
}

/// A regular file's text, at most [`MAX_FILE_BYTES`]: a FIFO or a device where a file should
/// be is refused rather than read.
fn read_bounded(path: &Path) -> Result<String, KnowledgeError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let at = Location {
        file: path.display().to_string(),
        line: 0,
    };
    // Non-blocking, so a FIFO planted where a file should be cannot hold the open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| KnowledgeError::new(&at, format!("cannot read: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| KnowledgeError::new(&at, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(KnowledgeError::new(&at, "not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| KnowledgeError::new(&at, format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(KnowledgeError::new(
            &at,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user_file(text: &str) -> Result<Knowledge, KnowledgeErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.toml"), text).unwrap();
        Knowledge::load(&[dir.path().to_owned()])
    }

    #[test]
    fn shipped_catalog_holds_together() {
        let k = Knowledge::embedded().unwrap();
        for kind in Kind::ALL {
            assert!(k.of_kind(kind).count() > 0, "{kind}");
        }
        // A rule's further wording shares the first row's header.
        let wordings: Vec<_> = k
            .of_kind(Kind::Rule)
            .filter(|e| e.id == "firmware_load_failed")
            .collect();
        assert_eq!(wordings.len(), 2);
        assert!(wordings[1].wording);
        assert_eq!(wordings[0].actions, wordings[1].actions);
        assert_eq!(k.settings.incident_gap_seconds, Some(10));
        assert!(k.settings.unnamed_incident_actions.is_some());
    }

    #[test]
    fn action_text_is_the_strategies_words() {
        let k = Knowledge::embedded().unwrap();
        let check = k.get(Kind::Check, "gtt_size_conflict").unwrap();
        assert_eq!(
            k.action_text(&check.actions),
            k.action_of("gtt_pages_limit").unwrap()
        );
        let two = k.action_text(&["reboot_node".into(), "report_bundle".into()]);
        assert!(two.contains("; failing that, collect a bundle"), "{two}");
    }

    #[test]
    fn a_dangling_action_names_file_and_line() {
        let e =
            user_file("\n[[known_issue]]\nid = \"mine\"\ntitle = \"t\"\nactions = [\"nowhere\"]\n")
                .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("mine.toml:2: known_issue `mine`: action `nowhere` is no strategy"),
            "{text}"
        );
    }

    #[test]
    fn a_duplicate_id_names_both_places() {
        let text = "[[strategy]]\nid = \"s\"\ntitle = \"t\"\naction = \"a\"\n\n[[strategy]]\nid = \"s\"\ntitle = \"u\"\naction = \"b\"\n";
        let e = user_file(text).unwrap_err().to_string();
        assert!(
            e.contains("mine.toml:6: duplicate id: strategy `s` is defined already at "),
            "{e}"
        );
        assert!(e.contains("mine.toml:1"), "{e}");
    }

    #[test]
    fn a_rule_without_example_is_refused() {
        let text = "# mine\n[[rule]]\nid = \"my_rule\"\nseverity = \"info\"\ntitle = \"t\"\nclass = \"info\"\npattern = '^x'\n";
        let e = user_file(text).unwrap_err().to_string();
        assert!(
            e.contains("mine.toml:2: rule `my_rule`: no `example` line"),
            "{e}"
        );
    }

    #[test]
    fn a_user_row_replaces_the_shipped_one_and_new_rules_go_first() {
        let text = r#"
[[strategy]]
id = "reboot_node"
title = "Reboot"
action = "reboot it now"

[[rule]]
id = "my_rule"
severity = "info"
title = "mine"
class = "info"
pattern = '^mine'
example = 'amdgpu: mine'
"#;
        let k = user_file(text).unwrap();
        assert_eq!(k.action_of("reboot_node"), Some("reboot it now"));
        assert_eq!(
            k.of_kind(Kind::Strategy)
                .filter(|s| s.id == "reboot_node")
                .count(),
            1
        );
        assert_eq!(k.of_kind(Kind::Rule).next().unwrap().id, "my_rule");
        assert!(k.files.iter().any(|f| f.ends_with("mine.toml")));
    }

    #[test]
    fn toml_errors_and_unknown_tables_name_the_line() {
        let e = user_file("[[rule]]\nid = \"x\"\ntitle = \n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mine.toml:3: "), "{e}");
        let e = user_file("\n\n[[rules]]\nid = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mine.toml:3: ") && e.contains("rules"), "{e}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.toml");
        nix::unistd::mkfifo(
            &fifo,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let e = Knowledge::load(&[dir.path().to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
