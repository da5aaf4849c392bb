//! Rule unit tests in promtool's `test rules` format: input series in the expanding
//! notation, alert expectations at instants, PromQL expression expectations.
//!
//! The runner evaluates the rule groups every `evaluation_interval` from time 0 to the
//! latest instant any test asks about, as promtool does, and compares firing alerts and
//! expression results with the expectations.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use foresight_proto::v1::AlertState;
use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use serde::Deserialize;

use crate::RuleEngine;
use crate::promql::{Evaluator, Value};
use crate::rulefile::{Group, load_file, parse_duration};
use crate::store::{Labels, METRIC_NAME, STALE_NAN_BITS, SeriesStore};

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Rule files, relative to the test file.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Default `1m`.
    #[serde(default)]
    pub evaluation_interval: Option<String>,
    /// Group names in the order to evaluate them; file order when absent.
    #[serde(default)]
    pub group_eval_order: Vec<String>,
    /// The test groups.
    #[serde(default)]
    pub tests: Vec<TestGroup>,
    /// Accepted for compatibility; the engine has no fuzzy comparison setting.
    #[serde(default)]
    pub fuzzy_compare: Option<bool>,
}

/// One entry of `tests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    /// Scrape interval of the input series; default 1m.
    #[serde(default)]
    pub interval: Option<String>,
    /// Series and their values.
    #[serde(default)]
    pub input_series: Vec<InputSeries>,
    /// Alert expectations.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
    /// Expression expectations.
    #[serde(default)]
    pub promql_expr_test: Vec<ExprTest>,
    /// Labels for `$externalLabels`.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Accepted for compatibility.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Name shown in failures.
    #[serde(default)]
    pub name: Option<String>,
}

/// One input series.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// `metric{label="value"}`.
    pub series: String,
    /// Values in the expanding notation, for example `0+10x5 _ stale 3`.
    pub values: String,
}

/// Expected alerts at one instant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    /// When, as a duration from 0.
    #[serde(default = "zero")]
    pub eval_time: String,
    /// The alert.
    pub alertname: String,
    /// The firing alerts expected.
    #[serde(default)]
    pub exp_alerts: Vec<ExpAlert>,
}

/// One expected alert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAlert {
    /// Labels other than `alertname`.
    #[serde(default)]
    pub exp_labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub exp_annotations: BTreeMap<String, String>,
}

/// One expression expectation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExprTest {
    /// The PromQL expression.
    pub expr: String,
    /// When.
    #[serde(default = "zero")]
    pub eval_time: String,
    /// The samples expected, in any order.
    #[serde(default)]
    pub exp_samples: Vec<ExpSample>,
}

/// One expected sample.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpSample {
    /// `metric{label="value"}` or `{label="value"}`.
    #[serde(default)]
    pub labels: String,
    /// The value.
    pub value: f64,
}

fn zero() -> String {
    "0".into()
}

/// The outcome of one test file.
#[derive(Debug, Default)]
pub struct Report {
    /// Failure descriptions, empty when everything passed.
    pub failures: Vec<String>,
    /// Errors that stopped a test group (bad file, bad series, rule load error).
    pub errors: Vec<String>,
}

impl Report {
    /// Whether everything passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.errors.is_empty()
    }
}

/// Parses `metric{a="b"}` into a label set with `__name__`.
///
/// # Errors
/// A message when the text is not a series selector with only `=` matchers.
pub fn parse_series(text: &str) -> Result<Labels, String> {
    // The empty label set (what `count(up)` yields), which promtool's metric parser
    // takes and PromQL's selector grammar refuses.
    if text.trim() == "{}" {
        return Ok(Labels::default());
    }
    let expr = promql_parser::parser::parse(text).map_err(|e| format!("series {text:?}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("series {text:?}: not a series selector"));
    };
    let mut pairs = Vec::new();
    if let Some(n) = vs.name {
        pairs.push((METRIC_NAME.to_string(), n));
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(format!(
                "series {text:?}: only = matchers describe a series"
            ));
        }
        pairs.push((m.name, m.value));
    }
    Ok(Labels::new(pairs))
}

/// One point of an expanded series: a value, a gap, or a stale marker.
pub type Point = Option<f64>;

/// Expands promtool's value notation: `a+bxN` (N+1 values from a, step b), `a-bxN`,
/// `axN`, `_` (gap), `_xN` (N gaps), `stale`, and plain numbers.
///
/// # Errors
/// A message naming the token that does not parse.
pub fn expand_values(text: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok == "stale" {
            out.push(Some(f64::from_bits(STALE_NAN_BITS)));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if tok.starts_with("{{") {
            return Err(format!(
                "native histogram values are not supported: {tok:?}"
            ));
        }
        if let Some(v) = parse_number(tok) {
            out.push(Some(v));
            continue;
        }
        let (head, times) = tok
            .rsplit_once('x')
            .ok_or_else(|| format!("bad value {tok:?}"))?;
        let times: usize = times
            .parse()
            .map_err(|_| format!("bad repeat count in {tok:?}"))?;
        // Split `a+b` / `a-b`, skipping a leading sign and exponent signs.
        let bytes = head.as_bytes();
        let split = (1..bytes.len()).find(|&i| {
            (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
        });
        let (start, step) = match split {
            Some(i) => {
                let start =
                    parse_number(&head[..i]).ok_or_else(|| format!("bad start in {tok:?}"))?;
                let step =
                    parse_number(&head[i + 1..]).ok_or_else(|| format!("bad step in {tok:?}"))?;
                (start, if bytes[i] == b'-' { -step } else { step })
            }
            None => (
                parse_number(head).ok_or_else(|| format!("bad value {tok:?}"))?,
                0.0,
            ),
        };
        for k in 0..=times {
            out.push(Some(start + step * k as f64));
        }
    }
    Ok(out)
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    // `0x5` is zero repeated, not hex: promtool's notation takes precedence.
    if s.contains(['x', 'X']) {
        return None;
    }
    s.parse::<f64>().ok()
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

fn dur(s: &Option<String>, default: Duration) -> Result<Duration, String> {
    match s {
        Some(s) => parse_duration(s),
        None => Ok(default),
    }
}

/// Runs one test file.
///
/// # Errors
/// Never: problems are reported in the [`Report`].
pub fn run_file(path: &Path) -> Report {
    let mut report = Report::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(format!("{}: {e}", path.display()));
            return report;
        }
    };
    let file: TestFile = match serde_saphyr::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            report.errors.push(format!("{}: {e}", path.display()));
            return report;
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut groups: Vec<Group> = Vec::new();
    for rf in &file.rule_files {
        let p: PathBuf = base.join(rf);
        match load_file(&p) {
            Ok(g) => groups.extend(g),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    if !report.errors.is_empty() {
        return report;
    }
    if !file.group_eval_order.is_empty() {
        let mut ordered = Vec::new();
        for name in &file.group_eval_order {
            match groups.iter().position(|g| &g.name == name) {
                Some(i) => ordered.push(groups.remove(i)),
                None => report
                    .errors
                    .push(format!("group_eval_order: no group named {name:?}")),
            }
        }
        ordered.append(&mut groups);
        groups = ordered;
    }
    let eval_interval = match dur(&file.evaluation_interval, Duration::from_secs(60)) {
        Ok(d) => d,
        Err(e) => {
            report.errors.push(format!("evaluation_interval: {e}"));
            return report;
        }
    };
    for (i, tg) in file.tests.iter().enumerate() {
        let name = tg.name.clone().unwrap_or_else(|| format!("tests[{i}]"));
        if let Err(e) = run_group(tg, &groups, eval_interval, &name, &mut report) {
            report.errors.push(format!("{name}: {e}"));
        }
    }
    report
}

type GotAlert = (BTreeMap<String, String>, BTreeMap<String, String>);

fn run_group(
    tg: &TestGroup,
    groups: &[Group],
    eval_interval: Duration,
    name: &str,
    report: &mut Report,
) -> Result<(), String> {
    let interval = ms(dur(&tg.interval, Duration::from_secs(60))?);
    let mut store = SeriesStore::new(i64::MAX / 4);
    for s in &tg.input_series {
        let labels = parse_series(&s.series)?;
        for (k, p) in expand_values(&s.values)
            .map_err(|e| format!("series {:?}: {e}", s.series))?
            .into_iter()
            .enumerate()
        {
            if let Some(v) = p {
                store.append(&labels, k as i64 * interval, v);
            }
        }
    }
    let mut alert_times = Vec::new();
    for t in &tg.alert_rule_test {
        alert_times.push(ms(parse_duration(&t.eval_time)?));
    }
    let mut max_t = alert_times.iter().copied().max().unwrap_or(0);
    for t in &tg.promql_expr_test {
        max_t = max_t.max(ms(parse_duration(&t.eval_time)?));
    }
    let mut engine =
        RuleEngine::new(groups.to_vec(), tg.external_labels.clone()).with_group_intervals(false);
    let step = ms(eval_interval).max(1);
    // alertname -> eval time -> firing alerts as of that time.
    let mut got: HashMap<(String, i64), Vec<GotAlert>> = HashMap::new();
    let mut ts = 0;
    while ts <= max_t {
        let evaluation = engine.evaluate(&mut store, ts, "test");
        for e in evaluation.errors {
            report
                .errors
                .push(format!("{name}: at {}: {e}", fmt_ms(ts)));
        }
        for (t, test) in alert_times.iter().zip(&tg.alert_rule_test) {
            if *t >= ts && *t < ts + step {
                let firing = evaluation
                    .alerts
                    .iter()
                    .filter(|a| {
                        a.state() == AlertState::Firing
                            && a.labels.get("alertname") == Some(&test.alertname)
                    })
                    .map(|a| (a.labels.clone(), a.annotations.clone()))
                    .collect();
                got.insert((test.alertname.clone(), *t), firing);
            }
        }
        ts += step;
    }
    for (t, test) in alert_times.iter().zip(&tg.alert_rule_test) {
        let mut exp: Vec<GotAlert> = test
            .exp_alerts
            .iter()
            .map(|e| {
                let mut l = e.exp_labels.clone();
                l.insert("alertname".into(), test.alertname.clone());
                (l, e.exp_annotations.clone())
            })
            .collect();
        let mut g = got
            .remove(&(test.alertname.clone(), *t))
            .unwrap_or_default();
        exp.sort();
        g.sort();
        if exp != g {
            let mut msg = format!(
                "{name}: alertname: {}, time: {},\n",
                test.alertname, test.eval_time
            );
            let _ = writeln!(
                msg,
                "{}",
                side_by_side(&render_alerts(&exp), &render_alerts(&g))
            );
            report.failures.push(msg);
        }
    }
    for test in &tg.promql_expr_test {
        let t = ms(parse_duration(&test.eval_time)?);
        let expr = crate::promql::parse_supported(&test.expr)
            .map_err(|e| format!("expr {:?}: {e}", test.expr))?;
        let got = match Evaluator::new(&store).eval(&expr, t) {
            Ok(Value::Vector(v)) => v.into_iter().map(|s| (s.labels, s.value)).collect(),
            Ok(Value::Scalar(v)) => vec![(Labels::default(), v)],
            Ok(other) => return Err(format!("expr {:?}: returns {other:?}", test.expr)),
            Err(e) => {
                report.failures.push(format!(
                    "{name}: expr: {:?}, time: {}: error: {e}\n",
                    test.expr, test.eval_time
                ));
                continue;
            }
        };
        let mut exp = Vec::new();
        for s in &test.exp_samples {
            let labels = if s.labels.trim().is_empty() {
                Labels::default()
            } else {
                parse_series(&s.labels)?
            };
            exp.push((labels, s.value));
        }
        if !samples_equal(&exp, &got) {
            let render = |v: &[(Labels, f64)]| {
                let mut lines: Vec<String> = v.iter().map(|(l, x)| format!("{l} {x}")).collect();
                lines.sort();
                lines
            };
            report.failures.push(format!(
                "{name}: expr: {:?}, time: {},\n{}\n",
                test.expr,
                test.eval_time,
                side_by_side(&render(&exp), &render(&got))
            ));
        }
    }
    Ok(())
}

fn samples_equal(exp: &[(Labels, f64)], got: &[(Labels, f64)]) -> bool {
    if exp.len() != got.len() {
        return false;
    }
    let mut exp: Vec<_> = exp.to_vec();
    let mut got: Vec<_> = got.to_vec();
    exp.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    exp.iter().zip(&got).all(|((la, va), (lb, vb))| {
        la == lb
            && (va == vb
                || (va.is_nan() && vb.is_nan())
                || (va - vb).abs() <= 1e-9 * va.abs().max(vb.abs()))
    })
}

fn render_alerts(alerts: &[GotAlert]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (l, a)) in alerts.iter().enumerate() {
        out.push(format!("{i}:"));
        out.push(format!("  labels: {}", render_map(l)));
        out.push(format!("  annotations: {}", render_map(a)));
    }
    out
}

fn render_map(m: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Two columns, expected on the left and got on the right.
fn side_by_side(exp: &[String], got: &[String]) -> String {
    let width = exp
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = format!("    {:<width$} | got:\n", "exp:");
    let rows = exp.len().max(got.len()).max(1);
    for i in 0..rows {
        let e = exp
            .get(i)
            .map(String::as_str)
            .unwrap_or(if i == 0 && exp.is_empty() {
                "(none)"
            } else {
                ""
            });
        let g = got
            .get(i)
            .map(String::as_str)
            .unwrap_or(if i == 0 && got.is_empty() {
                "(none)"
            } else {
                ""
            });
        let _ = writeln!(out, "    {e:<width$} | {g}");
    }
    out
}

fn fmt_ms(t: i64) -> String {
    format!("{}s", t as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_the_notation() {
        let v = expand_values("1+2x2 _ stale 5x1 _x2 -1-1x1 1e3 0x1").unwrap();
        assert_eq!(v.len(), 14);
        assert_eq!(&v[..3], &[Some(1.0), Some(3.0), Some(5.0)]);
        assert_eq!(v[3], None);
        assert!(crate::store::is_stale_marker(v[4].unwrap()));
        assert_eq!(&v[5..9], &[Some(5.0), Some(5.0), None, None]);
        assert_eq!(
            &v[9..],
            &[Some(-1.0), Some(-2.0), Some(1000.0), Some(0.0), Some(0.0)]
        );
        assert!(expand_values("1+x").is_err());
    }

    #[test]
    fn the_kafka_pack_passes_its_tests() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packs/kafka.test.yml");
        let report = run_file(&path);
        assert!(report.passed(), "{report:#?}");
    }

    #[test]
    fn every_pack_alert_has_a_firing_test() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packs/kafka.test.yml");
        let file: TestFile =
            serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let fired: std::collections::HashSet<&str> = file
            .tests
            .iter()
            .flat_map(|t| &t.alert_rule_test)
            .filter(|t| !t.exp_alerts.is_empty())
            .map(|t| t.alertname.as_str())
            .collect();
        let untested: Vec<String> = crate::packs::kafka()
            .unwrap()
            .into_iter()
            .flat_map(|g| g.rules)
            .filter(|r| r.alerting && !fired.contains(r.name.as_str()))
            .map(|r| r.name)
            .collect();
        assert!(
            untested.is_empty(),
            "pack alerts without a firing test: {untested:?}"
        );
    }

    #[test]
    fn a_wrong_expectation_fails_with_expected_and_got() {
        let dir = std::env::temp_dir().join(format!("foresight-unittest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("r.yml"),
            "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 2m\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("t.yml"),
            "rule_files: [r.yml]\ntests:\n- input_series:\n  - series: up{job=\"a\"}\n    values: 0x10\n  alert_rule_test:\n  - eval_time: 1m\n    alertname: Down\n    exp_alerts: [{exp_labels: {job: a}}]\n  - eval_time: 3m\n    alertname: Down\n    exp_alerts: [{exp_labels: {job: a}}]\n  promql_expr_test:\n  - expr: up\n    eval_time: 1m\n    exp_samples: [{labels: 'up{job=\"a\"}', value: 1}]\n",
        )
        .unwrap();
        let report = run_file(&dir.join("t.yml"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        // Pending at 1m is not firing; the sample is 0, not 1. The 3m expectation holds.
        assert_eq!(report.failures.len(), 2, "{:#?}", report.failures);
        assert!(report.failures[0].contains("time: 1m") && report.failures[0].contains("got:"));
        assert!(
            report.failures[1].contains(r#"up{job="a"} 1"#)
                && report.failures[1].contains(r#"up{job="a"} 0"#)
        );
    }

    #[test]
    fn parses_series_labels() {
        assert_eq!(parse_series(" {} ").unwrap(), Labels::default());
        let l = parse_series(r#"up{job="kafka", instance="b1"}"#).unwrap();
        assert_eq!(l.to_string(), r#"up{instance="b1", job="kafka"}"#);
        assert!(parse_series(r#"up{job=~"k.*"}"#).is_err());
    }
}
