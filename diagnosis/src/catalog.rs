//! The known llama.cpp-on-gfx1151 problems and the strategies against them, the `[[known_issue]]` and `[[strategy]]` rows of the knowledge catalog, matched against what a diagnosis found.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::llama_log::{Backend, ErrorKind, Phase, RunOutcome};
use nodectl_model::inference::Activity;

use nodectl_model::knowledge::{Kind, Knowledge, KnowledgeError};

/// What a diagnosis found, as the catalogs' conditions ask for it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub phase: Option<Phase>,
    pub outcome: Option<RunOutcome>,
    pub backend: Option<Backend>,
    pub incident_kinds: BTreeSet<String>,
    pub event_ids: BTreeSet<String>,
    /// Node checks that fired (warning or worse).
    pub findings: BTreeSet<String>,
    pub errors: BTreeSet<ErrorKind>,
    /// What the log showed around its errors: `crash_after_checkpoint_restore`.
    pub log_signs: BTreeSet<String>,
    pub activity: Option<Activity>,
    /// `mmap`, `none`, `dio`, … from the log or the arguments.
    pub load_mode: Option<String>,
    pub flash_attention: Option<String>,
    /// `module.name` → value as printed (`amdgpu.cwsr_enable` → `1`).
    pub params: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub args: Vec<String>,
}

/// A known issue as a diagnosis shows it (the JSON names predate the knowledge catalog's).
#[derive(Debug, Clone, Serialize)]
pub struct KnownIssue {
    pub id: String,
    pub title: String,
    /// The row's `explanation`.
    pub summary: String,
    /// The row's `references`.
    pub links: Vec<String>,
    /// The row's `actions`.
    pub strategies: Vec<String>,
    #[serde(skip_serializing)]
    when: Conditions,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownIssueKeys {
    #[serde(default)]
    when: Conditions,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conditions {
    #[serde(default)]
    phase: Vec<Phase>,
    #[serde(default)]
    outcome: Vec<RunOutcome>,
    #[serde(default)]
    backend: Vec<Backend>,
    #[serde(default)]
    incidents_any: Vec<String>,
    #[serde(default)]
    events_any: Vec<String>,
    #[serde(default)]
    no_incidents: bool,
    #[serde(default)]
    findings_any: Vec<String>,
    #[serde(default)]
    errors_any: Vec<ErrorKind>,
    #[serde(default)]
    log_signs_any: Vec<String>,
    #[serde(default)]
    activity_any: Vec<Activity>,
    #[serde(default)]
    load_mode_any: Vec<String>,
    #[serde(default)]
    param_not: BTreeMap<String, toml::Value>,
}

/// A strategy as a diagnosis proposes it.
#[derive(Debug, Clone, Serialize)]
pub struct Strategy {
    pub id: String,
    pub title: String,
    pub action: String,
    /// The row's `explanation`.
    pub why: String,
    #[serde(skip_serializing)]
    in_effect: InEffect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyKeys {
    action: String,
    #[serde(default)]
    in_effect: InEffect,
    #[serde(default)]
    #[allow(dead_code)]
    proposed_by: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InEffect {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    args_any: Vec<String>,
    #[serde(default)]
    arg_values: BTreeMap<String, String>,
    #[serde(default)]
    load_mode_any: Vec<String>,
    #[serde(default)]
    log_flash_attention_any: Vec<String>,
    #[serde(default)]
    param: BTreeMap<String, toml::Value>,
    #[serde(default)]
    backend: Vec<Backend>,
}

/// Both catalogs, checked against each other.
#[derive(Debug, Clone)]
pub struct Catalog {
    issues: Vec<KnownIssue>,
    strategies: Vec<Strategy>,
}

/// A known issue that matched, with the conditions that made it.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedIssue {
    #[serde(flatten)]
    pub issue: KnownIssue,
    /// The conditions it asked, in words.
    pub because: Vec<String>,
}

/// A strategy proposed, and which matched issues it answers.
#[derive(Debug, Clone, Serialize)]
pub struct Proposed {
    #[serde(flatten)]
    pub strategy: Strategy,
    pub for_issues: Vec<String>,
    /// An experiment on this node that had it in effect and still stalled or crashed: why it
    /// is ranked last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tried_before: Option<String>,
}

/// A strategy of a matched issue that was left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct LeftOut {
    pub id: String,
    pub in_effect: String,
}

fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A known issue or strategy row the diagnosis cannot use; it names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Row(#[from] KnowledgeError),
    #[error("{0}")]
    Knowledge(String),
}

impl Catalog {
    /// The known issues and strategies of the knowledge in effect ([`Knowledge::current`]).
    pub fn embedded() -> Result<Catalog, CatalogError> {
        let knowledge = Knowledge::current().map_err(|e| CatalogError::Knowledge(e.to_string()))?;
        Catalog::from_knowledge(&knowledge)
    }

    /// The known issues and strategies of a knowledge catalog (whose cross-references were
    /// checked when it was loaded).
    pub fn from_knowledge(knowledge: &Knowledge) -> Result<Catalog, CatalogError> {
        let mut issues = Vec::new();
        for entry in knowledge.of_kind(Kind::KnownIssue) {
            let keys: KnownIssueKeys = entry.body()?;
            issues.push(KnownIssue {
                id: entry.id.clone(),
                title: entry.title.clone(),
                summary: entry.explanation.clone(),
                links: entry.references.clone(),
                strategies: entry.actions.clone(),
                when: keys.when,
            });
        }
        let mut strategies = Vec::new();
        for entry in knowledge.of_kind(Kind::Strategy) {
            let keys: StrategyKeys = entry.body()?;
            strategies.push(Strategy {
                id: entry.id.clone(),
                title: entry.title.clone(),
                action: keys.action,
                why: entry.explanation.clone(),
                in_effect: keys.in_effect,
            });
        }
        Ok(Catalog { issues, strategies })
    }

    pub fn strategy(&self, id: &str) -> Option<&Strategy> {
        self.strategies.iter().find(|s| s.id == id)
    }

    /// The issues whose every condition holds, most specific first.
    pub fn match_issues(&self, facts: &Facts) -> Vec<MatchedIssue> {
        let mut matched: Vec<(usize, usize, MatchedIssue)> = self
            .issues
            .iter()
            .enumerate()
            .filter_map(|(order, issue)| {
                let because = issue.when.check(facts)?;
                Some((
                    because.len(),
                    order,
                    MatchedIssue {
                        issue: issue.clone(),
                        because,
                    },
                ))
            })
            .collect();
        matched.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        matched.into_iter().map(|(_, _, m)| m).collect()
    }

    /// The strategies of `issues` in rank order, without those already in effect (returned apart).
    pub fn propose(&self, issues: &[MatchedIssue], facts: &Facts) -> (Vec<Proposed>, Vec<LeftOut>) {
        let mut proposed: Vec<Proposed> = Vec::new();
        let mut left_out: Vec<LeftOut> = Vec::new();
        for matched in issues {
            for id in &matched.issue.strategies {
                if let Some(p) = proposed.iter_mut().find(|p| &p.strategy.id == id) {
                    p.for_issues.push(matched.issue.id.clone());
                    continue;
                }
                if left_out.iter().any(|l| &l.id == id) {
                    continue;
                }
                let Some(strategy) = self.strategy(id) else {
                    continue;
                };
                match strategy.in_effect.sign(facts) {
                    Some(sign) => left_out.push(LeftOut {
                        id: id.clone(),
                        in_effect: sign,
                    }),
                    None => proposed.push(Proposed {
                        strategy: strategy.clone(),
                        for_issues: vec![matched.issue.id.clone()],
                        tried_before: None,
                    }),
                }
            }
        }
        (proposed, left_out)
    }

    /// Whether a strategy is in effect already, and by which sign.
    pub fn in_effect(&self, id: &str, facts: &Facts) -> Option<String> {
        self.strategy(id)?.in_effect.sign(facts)
    }
}

impl Conditions {
    /// The conditions met, in words, when all of them are; `None` when one fails.
    fn check(&self, f: &Facts) -> Option<Vec<String>> {
        let mut because = Vec::new();
        if !self.phase.is_empty() {
            let phase = f.phase.filter(|p| self.phase.contains(p))?;
            because.push(format!("phase {}", phase.as_str()));
        }
        if !self.outcome.is_empty() {
            let outcome = f.outcome.filter(|o| self.outcome.contains(o))?;
            because.push(format!("outcome {}", outcome.as_str()));
        }
        if !self.backend.is_empty() {
            match f.backend {
                Some(b) if self.backend.contains(&b) => {
                    because.push(format!("backend {}", b.as_str()))
                }
                Some(_) => return None,
                // Unknown backend: a terse log does not say; not a reason to drop the issue.
                None => {}
            }
        }
        if !self.incidents_any.is_empty() {
            let kind = self
                .incidents_any
                .iter()
                .find(|k| f.incident_kinds.contains(*k))?;
            because.push(format!("kernel incident {kind}"));
        }
        if !self.events_any.is_empty() {
            let id = self.events_any.iter().find(|k| f.event_ids.contains(*k))?;
            because.push(format!("kernel event {id}"));
        }
        if self.no_incidents {
            if !f.incident_kinds.is_empty() {
                return None;
            }
            because.push("no kernel incident".to_owned());
        }
        if !self.findings_any.is_empty() {
            let id = self.findings_any.iter().find(|k| f.findings.contains(*k))?;
            because.push(format!("node finding {id}"));
        }
        if !self.errors_any.is_empty() {
            let kind = self.errors_any.iter().find(|k| f.errors.contains(*k))?;
            because.push(format!("log error {}", kind.as_str()));
        }
        if !self.log_signs_any.is_empty() {
            let sign = self
                .log_signs_any
                .iter()
                .find(|s| f.log_signs.contains(*s))?;
            because.push(format!("log shows {}", sign.replace('_', " ")));
        }
        if !self.activity_any.is_empty() {
            match f.activity {
                Some(a) if self.activity_any.contains(&a) => {
                    because.push(format!("process {}", a.as_str()));
                }
                Some(_) => return None,
                // No process seen (a saved log): not a reason to drop the issue.
                None => {}
            }
        }
        if !self.load_mode_any.is_empty() {
            match &f.load_mode {
                Some(mode) if self.load_mode_any.contains(mode) => {
                    because.push(format!("load mode {mode}"));
                }
                Some(_) => return None,
                None => {}
            }
        }
        for (param, not) in &self.param_not {
            let not = value_text(not);
            match f.params.get(param) {
                Some(value) if *value == not => return None,
                Some(value) => because.push(format!("{param}={value}")),
                None => because.push(format!("{param} not known to be {not}")),
            }
        }
        Some(because)
    }
}

impl InEffect {
    /// The first sign that the strategy is in effect, in words.
    fn sign(&self, f: &Facts) -> Option<String> {
        for (name, value) in &self.env {
            if f.env.get(name) == Some(value) {
                return Some(format!("{name}={value} is set"));
            }
        }
        for arg in &self.args_any {
            if f.args.iter().any(|a| a == arg) {
                return Some(format!("{arg} is on the command line"));
            }
        }
        for (name, value) in &self.arg_values {
            let given = f.args.windows(2).any(|w| &w[0] == name && &w[1] == value)
                || f.args.iter().any(|a| *a == format!("{name}={value}"));
            if given {
                return Some(format!("{name} {value} is on the command line"));
            }
        }
        if let Some(mode) = &f.load_mode
            && self.load_mode_any.contains(mode)
        {
            return Some(format!("the run loads with load_mode = {mode}"));
        }
        if let Some(fa) = &f.flash_attention
            && self.log_flash_attention_any.contains(fa)
        {
            return Some(format!("flash attention is {fa} in the log"));
        }
        for (param, value) in &self.param {
            let value = value_text(value);
            if f.params.get(param) == Some(&value) {
                return Some(format!("{param}={value} on the node"));
            }
        }
        if let Some(backend) = f.backend
            && self.backend.contains(&backend)
        {
            return Some(format!("the run uses {}", backend.as_str()));
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalog_loads_and_a_misspelt_condition_names_its_row() {
        let catalog = Catalog::embedded().unwrap();
        assert!(catalog.issues.len() >= 8);
        let knowledge = Knowledge::overlay(&[(
            "mine.toml".to_owned(),
            "\n[[known_issue]]\nid='x'\ntitle='t'\nactions=['cwsr_disable']\n[known_issue.when]\nphaze=['upload']\n".to_owned(),
        )])
        .unwrap();
        let e = Catalog::from_knowledge(&knowledge).unwrap_err().to_string();
        assert!(
            e.contains("mine.toml:2: known_issue `x`") && e.contains("phaze"),
            "{e}"
        );
    }

    fn upload_stall() -> Facts {
        Facts {
            phase: Some(Phase::Upload),
            outcome: Some(RunOutcome::Stalled),
            backend: Some(Backend::Rocm),
            incident_kinds: ["mes_hang_reset".to_owned()].into(),
            params: [("amdgpu.cwsr_enable".to_owned(), "1".to_owned())].into(),
            ..Facts::default()
        }
    }

    #[test]
    fn an_upload_stall_puts_sdma_first() {
        let catalog = Catalog::embedded().unwrap();
        let facts = upload_stall();
        let issues = catalog.match_issues(&facts);
        let ids: Vec<&str> = issues.iter().map(|i| i.issue.id.as_str()).collect();
        assert_eq!(ids[0], "sdma_upload_stall", "{ids:?}");
        assert!(ids.contains(&"mes_hang_cwsr"), "{ids:?}");
        let (proposed, _) = catalog.propose(&issues, &facts);
        assert_eq!(proposed[0].strategy.id, "hsa_enable_sdma_0");
    }

    #[test]
    fn what_is_in_effect_is_left_out_with_its_sign() {
        let catalog = Catalog::embedded().unwrap();
        let mut facts = upload_stall();
        facts.env.insert("HSA_ENABLE_SDMA".into(), "0".into());
        facts.args = ["llama-server", "--load-mode", "none"]
            .map(String::from)
            .to_vec();
        facts.load_mode = Some("none".into());
        facts.params.insert("amdgpu.cwsr_enable".into(), "0".into());
        let issues = catalog.match_issues(&facts);
        assert!(!issues.iter().any(|i| i.issue.id == "mes_hang_cwsr"));
        let (proposed, left_out) = catalog.propose(&issues, &facts);
        let ids: Vec<&str> = proposed.iter().map(|p| p.strategy.id.as_str()).collect();
        assert!(
            !ids.contains(&"hsa_enable_sdma_0") && !ids.contains(&"load_mode_none"),
            "{ids:?}"
        );
        assert!(
            left_out
                .iter()
                .any(|l| l.id == "hsa_enable_sdma_0" && l.in_effect.contains("HSA_ENABLE_SDMA=0"))
        );
    }

    #[test]
    fn flash_attention_off_in_any_argument_form() {
        let catalog = Catalog::embedded().unwrap();
        for args in [vec!["-fa", "off"], vec!["--flash-attn=off"]] {
            let facts = Facts {
                args: args.into_iter().map(String::from).collect(),
                ..Facts::default()
            };
            assert!(catalog.in_effect("flash_attention_off", &facts).is_some());
        }
        assert!(
            catalog
                .in_effect("flash_attention_off", &Facts::default())
                .is_none()
        );
    }
}
