//! Prometheus rule files: parsing, validation and the compiled form the evaluator runs.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use promql_parser::parser::Expr;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::Error;
use crate::promql;
use crate::template::Template;

/// A rule file as written: `groups:` of rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFileSpec {
    /// Rule groups, evaluated independently.
    pub groups: Vec<GroupSpec>,
}

/// One `groups:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Unique within the file.
    pub name: String,
    /// Evaluation interval, a Prometheus duration; the global interval when absent.
    #[serde(default)]
    pub interval: Option<String>,
    /// Maximum number of alerts or series a rule may produce; 0 means no limit.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Labels added to every rule's output.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Prometheus' `query_offset`.
    #[serde(default)]
    pub query_offset: Option<String>,
    /// The rules.
    pub rules: Vec<RuleSpec>,
}

/// One alerting or recording rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Alert name (alerting rule).
    #[serde(default)]
    pub alert: Option<String>,
    /// Metric name written (recording rule).
    #[serde(default)]
    pub record: Option<String>,
    /// The PromQL expression, with where it stands in the file.
    pub expr: Spanned<String>,
    /// How long the expression must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// How long an alert keeps firing after its expression stops returning it.
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    /// Labels added to the output (templated for alerts).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (templated).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `alertname` or recorded metric name.
    pub name: String,
    /// Whether this is an alerting rule.
    pub alerting: bool,
    /// The parsed expression.
    pub expr: Expr,
    /// The expression as written.
    pub expr_text: String,
    /// `for`, zero when absent.
    pub for_: Duration,
    /// `keep_firing_for`, zero when absent.
    pub keep_firing_for: Duration,
    /// Label templates.
    pub labels: Vec<(String, Template)>,
    /// Annotation templates.
    pub annotations: Vec<(String, Template)>,
}

/// A group ready to evaluate.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// File the group came from.
    pub file: String,
    /// Own evaluation interval, if set.
    pub interval: Option<Duration>,
    /// Maximum output per rule; 0 means none.
    pub limit: u64,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

impl Group {
    /// How far back any rule of this group reads, in ms.
    pub fn max_lookback_ms(&self) -> i64 {
        self.rules
            .iter()
            .map(|r| promql::max_lookback_ms(&r.expr))
            .max()
            .unwrap_or(0)
    }
}

pub use foresight_template::parse_duration;

/// Loads and validates one rule file from disk.
///
/// # Errors
/// [`Error::Io`] if unreadable; [`Error::Load`] with every problem found, each naming
/// the file and where possible the line.
pub fn load_file(path: &Path) -> Result<Vec<Group>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&path.display().to_string(), &text)
}

/// Loads and validates rule-file text; `file` names it in errors.
///
/// # Errors
/// [`Error::Load`] listing every problem found.
pub fn load_str(file: &str, text: &str) -> Result<Vec<Group>, Error> {
    let spec: RuleFileSpec = serde_saphyr::from_str(text).map_err(|e| Error::Load {
        file: file.to_string(),
        problems: vec![e.to_string()],
    })?;
    let mut problems = Vec::new();
    let mut groups = Vec::new();
    let mut names = HashSet::new();
    for g in spec.groups {
        if g.name.is_empty() {
            problems.push("a group has an empty name".to_string());
        }
        if !names.insert(g.name.clone()) {
            problems.push(format!("group {:?}: repeated in the same file", g.name));
        }
        let interval = match g.interval.as_deref().map(parse_duration).transpose() {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("group {:?}: {e}", g.name));
                None
            }
        };
        if let Some(Err(e)) = g.query_offset.as_deref().map(parse_duration) {
            problems.push(format!("group {:?}: {e}", g.name));
        }
        let mut rules = Vec::new();
        for r in g.rules {
            match compile_rule(r, &g.labels) {
                Ok(rule) => rules.push(rule),
                Err(p) => {
                    problems.extend(p.into_iter().map(|p| format!("group {:?}: {p}", g.name)))
                }
            }
        }
        groups.push(Group {
            name: g.name,
            file: file.to_string(),
            interval,
            limit: g.limit.unwrap_or(0),
            rules,
        });
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(Error::Load {
            file: file.to_string(),
            problems,
        })
    }
}

fn compile_rule(r: RuleSpec, group_labels: &BTreeMap<String, String>) -> Result<Rule, Vec<String>> {
    let line = r.expr.referenced.line();
    let column = r.expr.referenced.column();
    let mut problems = Vec::new();
    let (name, alerting) = match (&r.alert, &r.record) {
        (Some(a), None) => (a.clone(), true),
        (None, Some(rec)) => (rec.clone(), false),
        (Some(_), Some(_)) => {
            problems.push(format!("line {line}: a rule has both `alert` and `record`"));
            (String::new(), true)
        }
        (None, None) => {
            problems.push(format!("line {line}: a rule needs `alert` or `record`"));
            (String::new(), true)
        }
    };
    let at = format!("line {line}, column {column}: rule {name:?}");
    if !alerting {
        if r.for_.is_some() || r.keep_firing_for.is_some() || !r.annotations.is_empty() {
            problems.push(format!(
                "{at}: `for`, `keep_firing_for` and `annotations` apply only to alerting rules"
            ));
        }
        if !is_metric_name(&name) {
            problems.push(format!("{at}: {name:?} is not a valid metric name"));
        }
    }
    let expr = match promql::parse_supported(&r.expr.value) {
        Ok(e) => Some(e),
        Err(e) => {
            problems.push(format!("{at}: expression: {e}"));
            None
        }
    };
    let mut dur = |s: &Option<String>| match s.as_deref().map(parse_duration).transpose() {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            Duration::ZERO
        }
    };
    let for_ = dur(&r.for_);
    let keep_firing_for = dur(&r.keep_firing_for);
    let templates = |map: BTreeMap<String, String>, what: &str, problems: &mut Vec<String>| {
        let mut out = Vec::new();
        for (k, v) in map {
            match Template::parse(&v) {
                Ok(t) => out.push((k, t)),
                Err(e) => problems.push(format!("{at}: {what} {k:?}: {e}")),
            }
        }
        out
    };
    let mut labels_map = group_labels.clone();
    labels_map.extend(r.labels);
    let labels = templates(labels_map, "label", &mut problems);
    let annotations = templates(r.annotations, "annotation", &mut problems);
    match expr {
        Some(expr) if problems.is_empty() => Ok(Rule {
            name,
            alerting,
            expr,
            expr_text: r.expr.value,
            for_,
            keep_firing_for,
            labels,
            annotations,
        }),
        _ => Err(problems),
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_valid_file() {
        let groups = load_str(
            "t.yml",
            "groups:\n- name: g\n  interval: 30s\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 5m\n    labels: {severity: critical}\n",
        )
        .unwrap();
        assert_eq!(groups[0].interval, Some(Duration::from_secs(30)));
        assert_eq!(groups[0].rules[0].for_, Duration::from_secs(300));
    }

    #[test]
    fn reports_every_problem_with_file_and_line() {
        let err = load_str(
            "bad.yml",
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up ==\n  - alert: B\n    expr: histogram_fraction(0, 1, x)\n    for: 5 minutes\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad.yml"), "{err}");
        assert!(err.contains("line 5, column 11: rule \"A\""), "{err}");
        assert!(err.contains("histogram_fraction"), "{err}");
        assert!(err.contains("bad duration \"5 minutes\""), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = load_str(
            "u.yml",
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    severity: high\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("severity"), "{err}");
    }
}
