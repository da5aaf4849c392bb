//! The subset of Prometheus' Go-template annotation language the engine supports so far:
//! `{{ $labels.name }}`, `{{ $value }}`, `{{ $externalLabels.name }}` and the
//! `humanize` family applied as a function or through a pipe. Anything else is an error
//! when the rule loads, never a silently wrong message.

use std::collections::BTreeMap;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action { source: Source, funcs: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Label(String),
    ExternalLabel(String),
    Value,
}

const FUNCS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "toUpper",
    "toLower",
];

/// What a template may refer to.
pub struct Context<'a> {
    /// The alert's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Labels of the whole installation.
    pub external_labels: &'a BTreeMap<String, String>,
    /// The expression's value.
    pub value: f64,
}

impl Template {
    /// Parses template text.
    ///
    /// # Errors
    /// A message naming the unsupported or malformed action.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed action in {text:?}"))?;
            let action = after[..close]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            parts.push(parse_action(action)?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders with `ctx`.
    pub fn render(&self, ctx: &Context<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action { source, funcs } => {
                    let mut v = match source {
                        Source::Label(l) => {
                            Val::Str(ctx.labels.get(l).cloned().unwrap_or_default())
                        }
                        Source::ExternalLabel(l) => {
                            Val::Str(ctx.external_labels.get(l).cloned().unwrap_or_default())
                        }
                        Source::Value => Val::Num(ctx.value),
                    };
                    for f in funcs {
                        v = apply(f, v);
                    }
                    out.push_str(&v.to_string());
                }
            }
        }
        out
    }
}

enum Val {
    Str(String),
    Num(f64),
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Str(s) => f.write_str(s),
            Val::Num(n) => write!(f, "{}", format_go_float(*n)),
        }
    }
}

/// Formats like Go's `strconv.FormatFloat(v, 'g', -1, 64)` for common values.
fn format_go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v != 0.0 && (v.abs() >= 1e21 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

fn parse_action(action: &str) -> Result<Part, String> {
    let stages: Vec<&str> = action.split('|').map(str::trim).collect();
    let mut funcs = Vec::new();
    // First stage: `$x` or `func $x`.
    let mut words = stages[0].split_whitespace().collect::<Vec<_>>();
    let operand = words
        .pop()
        .ok_or_else(|| "empty action {{ }}".to_string())?;
    for f in words.iter().rev() {
        funcs.push(f.to_string());
    }
    for s in &stages[1..] {
        funcs.push(s.to_string());
    }
    for f in &funcs {
        if !FUNCS.contains(&f.as_str()) {
            return Err(format!("template function {f:?} is not supported yet"));
        }
    }
    let source = if operand == "$value" || operand == ".Value" {
        Source::Value
    } else if let Some(l) = operand
        .strip_prefix("$labels.")
        .or_else(|| operand.strip_prefix(".Labels."))
    {
        Source::Label(l.to_string())
    } else if let Some(l) = operand.strip_prefix("$externalLabels.") {
        Source::ExternalLabel(l.to_string())
    } else {
        return Err(format!(
            "template action {{{{ {action} }}}} is not supported yet"
        ));
    };
    Ok(Part::Action { source, funcs })
}

fn apply(f: &str, v: Val) -> Val {
    let num = match &v {
        Val::Num(n) => Some(*n),
        Val::Str(s) => s.parse::<f64>().ok(),
    };
    match (f, num) {
        ("toUpper", _) => Val::Str(v.to_string().to_uppercase()),
        ("toLower", _) => Val::Str(v.to_string().to_lowercase()),
        ("humanize", Some(n)) => Val::Str(humanize(
            n,
            1000.0,
            &["", "k", "M", "G", "T", "P", "E", "Z", "Y"],
        )),
        ("humanize1024", Some(n)) => Val::Str(humanize(
            n,
            1024.0,
            &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
        )),
        ("humanizePercentage", Some(n)) => Val::Str(format!("{}%", sig4(n * 100.0))),
        ("humanizeDuration", Some(n)) => Val::Str(humanize_duration(n)),
        _ => v,
    }
}

/// Prometheus' `humanizeDuration`: seconds as `1d 2h 3m 4s`, or with a unit prefix
/// below one second.
fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return format_go_float(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let d = v as i64;
        let (days, hours, minutes, seconds) = (d / 86_400, (d / 3600) % 24, (d / 60) % 60, d % 60);
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", sig4(v))
        };
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", sig4(v))
}

fn sig4(v: f64) -> String {
    // Go's %.4g.
    if v == 0.0 {
        return "0".into();
    }
    let digits = 4 - 1 - v.abs().log10().floor() as i32;
    let s = format!("{:.*}", digits.max(0) as usize, v);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn humanize(v: f64, base: f64, prefixes: &[&str]) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return format_go_float(v);
    }
    if v.abs() >= 1.0 || base == 1024.0 {
        let mut v = v;
        let mut i = 0;
        while v.abs() >= base && i + 1 < prefixes.len() {
            v /= base;
            i += 1;
        }
        return format!("{}{}", sig4(v), prefixes[i]);
    }
    let small = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
    let mut v = v;
    let mut i = 0;
    while v.abs() < 1.0 && i + 1 < small.len() {
        v *= 1000.0;
        i += 1;
    }
    format!("{}{}", sig4(v), small[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_value_and_humanize() {
        let labels = BTreeMap::from([("topic".to_string(), "payments".to_string())]);
        let ext = BTreeMap::new();
        let ctx = Context {
            labels: &labels,
            external_labels: &ext,
            value: 1234567.0,
        };
        let t = Template::parse("{{ $labels.topic }} lag {{ $value | humanize }} ({{ $value }})")
            .unwrap();
        assert_eq!(t.render(&ctx), "payments lag 1.235M (1234567)");
        let t = Template::parse("{{ humanize1024 $value }}").unwrap();
        assert_eq!(t.render(&ctx), "1.177Mi");
    }

    #[test]
    fn humanizes_durations_like_prometheus() {
        assert_eq!(humanize_duration(0.0), "0s");
        assert_eq!(humanize_duration(1.5), "1.5s");
        assert_eq!(humanize_duration(754.0), "12m 34s");
        assert_eq!(humanize_duration(90061.0), "1d 1h 1m 1s");
        assert_eq!(humanize_duration(0.25), "250ms");
    }

    #[test]
    fn unsupported_actions_fail_to_parse() {
        assert!(
            Template::parse("{{ range $x }}")
                .unwrap_err()
                .contains("range")
        );
        assert!(
            Template::parse("{{ $value | printf \"%d\" }}")
                .unwrap_err()
                .contains("printf")
        );
        assert!(Template::parse("{{ $labels.x").is_err());
    }
}
