//! Silences: matchers with a start and an end, who made them and why. A silenced alert
//! is not notified; when the silence ends and the alert still fires, the next flush
//! notifies it as new.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::group::Silencer;
use crate::matchers::{MatchOp, Matcher};

/// One matcher as the Alertmanager API v2 writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMatcher {
    /// Label name.
    pub name: String,
    /// Value or pattern.
    pub value: String,
    /// Whether `value` is a regular expression.
    pub is_regex: bool,
    /// Whether the match is negated (default false).
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl ApiMatcher {
    /// The matcher it stands for.
    ///
    /// # Errors
    /// A bad regular expression.
    pub fn to_matcher(&self) -> Result<Matcher, String> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        Matcher::new(&self.name, op, &self.value)
    }

    /// The API form of `m`.
    pub fn from_matcher(m: &Matcher) -> Self {
        ApiMatcher {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
            is_equal: matches!(m.op, MatchOp::Equal | MatchOp::Regex),
        }
    }
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// Id (a UUID-shaped string, as Alertmanager's).
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Unix ms.
    pub starts_at_ms: i64,
    /// Unix ms.
    pub ends_at_ms: i64,
    /// Who.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// Last change, Unix ms.
    pub updated_at_ms: i64,
}

impl Silence {
    /// `pending`, `active` or `expired` at `now_ms`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.starts_at_ms {
            "pending"
        } else if now_ms < self.ends_at_ms {
            "active"
        } else {
            "expired"
        }
    }

    /// Whether it mutes `labels` at `now_ms`.
    pub fn mutes(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
        self.state(now_ms) == "active" && self.matchers.iter().all(|m| m.matches(labels))
    }
}

impl Silencer for [Silence] {
    fn silenced(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
        self.iter().any(|s| s.mutes(labels, now_ms))
    }
}

impl Silencer for Vec<Silence> {
    fn silenced(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
        self.as_slice().silenced(labels, now_ms)
    }
}
