//! Label matchers as Alertmanager writes them: `name="value"`, `name!=value`,
//! `name=~"re"`, `name!~"re"`, alone or as a `{…}` list. A missing label matches as the
//! empty string; regular expressions are anchored at both ends.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// The comparison of a matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value or pattern as written.
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// `name="value"`.
    pub fn equal(name: &str, value: &str) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
        }
    }

    /// `name=~"pattern"` (or `!~` when `negate`).
    ///
    /// # Errors
    /// The regex error, naming the pattern.
    pub fn regex(name: &str, pattern: &str, negate: bool) -> Result<Self, String> {
        let re = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| format!("matcher {name}: bad regular expression {pattern:?}: {e}"))?;
        Ok(Matcher {
            name: name.into(),
            op: if negate {
                MatchOp::NotRegex
            } else {
                MatchOp::Regex
            },
            value: pattern.into(),
            re: Some(re),
        })
    }

    /// A matcher from its parts, as the API receives them.
    ///
    /// # Errors
    /// A bad regular expression.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        match op {
            MatchOp::Equal => Ok(Matcher::equal(name, value)),
            MatchOp::NotEqual => Ok(Matcher {
                op,
                ..Matcher::equal(name, value)
            }),
            MatchOp::Regex => Matcher::regex(name, value, false),
            MatchOp::NotRegex => Matcher::regex(name, value, true),
        }
    }

    /// Whether `labels` satisfy this matcher.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl MatchOp {
    /// As written: `=`, `!=`, `=~`, `!~`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// Whether every matcher matches.
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Parses one matcher or a `{…}` list of them.
///
/// # Errors
/// A message quoting the input and saying what is wrong.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, String> {
    let s = input.trim();
    let inner = match s.strip_prefix('{') {
        Some(rest) => rest
            .strip_suffix('}')
            .ok_or_else(|| format!("matcher {input:?}: missing closing brace"))?,
        None => s,
    };
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() {
            return Err(format!("matcher {input:?}: expected a label name"));
        }
        rest = rest[name_len..].trim_start();
        let (op, len) = if rest.starts_with("=~") {
            (MatchOp::Regex, 2)
        } else if rest.starts_with("!~") {
            (MatchOp::NotRegex, 2)
        } else if rest.starts_with("!=") {
            (MatchOp::NotEqual, 2)
        } else if rest.starts_with('=') {
            (MatchOp::Equal, 1)
        } else {
            return Err(format!(
                "matcher {input:?}: expected =, !=, =~ or !~ after {name}"
            ));
        };
        rest = rest[len..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, e)) => v.push(e),
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("matcher {input:?}: unterminated quoted value"))?;
            value = v;
            rest = q[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push(Matcher::new(name, op, &value).map_err(|e| format!("matcher {input:?}: {e}"))?);
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("matcher {input:?}: unexpected {rest:?}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn parses_every_form_alertmanager_accepts() {
        let m =
            parse_matchers(r#"{severity=~"critical|warning", cluster!="dev", team=ops}"#).unwrap();
        assert_eq!(m.len(), 3);
        let l = labels(&[
            ("severity", "critical"),
            ("cluster", "prod"),
            ("team", "ops"),
        ]);
        assert!(all_match(&m, &l));
        assert!(!all_match(
            &m,
            &labels(&[("severity", "info"), ("team", "ops")])
        ));
        let quoted = parse_matchers(r#"summary="a, \"b\"""#).unwrap();
        assert_eq!(quoted[0].value, "a, \"b\"");
        // Anchored, and a missing label is the empty string.
        let re = parse_matchers("alertname=~Kafka").unwrap();
        assert!(!re[0].matches(&labels(&[("alertname", "KafkaDown")])));
        assert!(parse_matchers("x!~.+").unwrap()[0].matches(&labels(&[])));
    }

    #[test]
    fn bad_matchers_say_why() {
        for bad in ["=x", "a", "a=~\"(\"", "a=\"open", "{a=b"] {
            assert!(parse_matchers(bad).is_err(), "{bad}");
        }
    }
}
