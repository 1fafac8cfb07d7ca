//! The agent's half of checking a knowledge catalog: rules that compile and classify their own examples, checks that have logic.

use nodectl_model::knowledge::{Kind, Knowledge, KnowledgeError};

use crate::kmsg::{Classifier, RulesError};

/// What in `knowledge` the agent cannot use, one line each naming file and line; empty when
/// all of it works.
pub fn problems(knowledge: &Knowledge) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    match Classifier::from_knowledge(knowledge) {
        Ok(classifier) => problems.extend(
            classifier
                .example_errors(knowledge)
                .iter()
                .map(RulesError::to_string),
        ),
        Err(e) => problems.push(e.to_string()),
    }
    if let Err(e) = crate::checks::known_issues_of(knowledge) {
        problems.push(e);
    }
    for check in knowledge.of_kind(Kind::Check) {
        if !crate::checks::check_ids().any(|id| id == check.id) {
            problems.push(
                KnowledgeError::new(
                    &check.at,
                    format!(
                        "check `{}`: the agent has no logic of this id (a file can tune a shipped check, not add one: {})",
                        check.id,
                        crate::checks::check_ids().collect::<Vec<_>>().join(", ")
                    ),
                )
                .to_string(),
            );
        }
    }
    problems
}

/// The embedded catalog overlaid with `paths` (`--knowledge`), refused whole when any part of
/// it fails: a privileged agent does not run on half of an operator's rules.
pub fn load(paths: &[std::path::PathBuf]) -> Result<Knowledge, String> {
    let knowledge = Knowledge::load(paths).map_err(|e| e.to_string())?;
    let problems = problems(&knowledge);
    if problems.is_empty() {
        Ok(knowledge)
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_works_in_the_agent_and_every_check_has_a_row() {
        let knowledge = Knowledge::embedded().unwrap();
        assert_eq!(problems(&knowledge), Vec::<String>::new());
        for id in crate::checks::check_ids() {
            assert!(
                knowledge.get(Kind::Check, id).is_some(),
                "check logic `{id}` has no [[check]] row"
            );
        }
    }

    #[test]
    fn a_check_without_logic_is_named() {
        let text = "\n[[check]]\nid = \"my_check\"\nseverity = \"info\"\ntitle = \"t\"\n";
        let knowledge = Knowledge::overlay(&[("mine.toml".into(), text.into())]).unwrap();
        let problems = problems(&knowledge);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("mine.toml:2: check `my_check`: the agent has no logic")),
            "{problems:?}"
        );
    }
}
