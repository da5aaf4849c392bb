//! Runs Prometheus' own PromQL test scripts (`promql/promqltest/testdata/*.test` of the
//! release [`PROMETHEUS_VERSION`], `<version>` below) against Foresight's engine and
//! prints, per file, how many cases passed, failed and were unsupported.
//!
//! The scripts are read from the first of these that exists, and the run prints which:
//!
//! 1. `$FORESIGHT_PROMQL_TESTDATA`, a directory of `.test` files, when set (an override
//!    for trying another copy, or the cached one below on a machine that has both; it
//!    must exist when set);
//! 2. `../shared/conformance/prometheus-<version>/promql/`, beside the checkout, where
//!    the project's CI keeps its conformance data;
//! 3. `~/.cache/foresight/prometheus-<version>-promqltest/`, the same files from
//!    Prometheus' Go module, which `scripts/test-deps.sh` downloads from the Go module
//!    proxy and links there (a symbolic link into the Go module cache).
//!
//! None of them existing fails the test (it is not skipped), saying to run
//! `scripts/test-deps.sh`.
//!
//! Unsupported: the engine rejects the expression at load time naming the feature, or
//! the case needs native histograms. A wrong answer is a failure. Every failure must be
//! listed, with its reason, in `tests/conformance-known-failures.txt`; a failure not
//! listed fails this test, and so does a listed one that now passes (take it off the
//! list), so the list is always the truth. The file's `minimum-passed: N` line is a
//! floor: fewer passing cases (a case that became unsupported, a file that stopped
//! loading) fail too.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use foresight_rules::promql::{Evaluator, Value, parse_supported};
use foresight_rules::rulefile::parse_duration;
use foresight_rules::store::{Labels, SeriesStore};
use foresight_rules::unittest::{expand_values, parse_series};

const EPSILON: f64 = 1e-6;

/// The Prometheus release whose PromQL test scripts run here. `scripts/test-deps.sh` fetches
/// the same release (its `prom_version`, as Go module version `v0.305.0`): change both
/// together, and the known-failures list with them.
const PROMETHEUS_VERSION: &str = "v3.5.0";

/// Names a directory of `.test` files to run instead of the places [`conformance_dir`]
/// looks in.
const TESTDATA_ENV: &str = "FORESIGHT_PROMQL_TESTDATA";

/// The directory of `.test` files to run and a description of where it came from.
///
/// # Panics
///
/// When [`TESTDATA_ENV`] names a directory that does not exist, or when it is unset and
/// neither the shared conformance data nor `scripts/test-deps.sh`'s cached copy exists.
fn conformance_dir() -> (PathBuf, String) {
    if let Some(dir) = std::env::var_os(TESTDATA_ENV) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "{TESTDATA_ENV}={} is not a directory",
            dir.display()
        );
        return (dir, TESTDATA_ENV.to_string());
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../shared/conformance/prometheus-{PROMETHEUS_VERSION}/promql"
    ));
    if shared.is_dir() {
        return (
            shared,
            "the shared conformance data beside the checkout".into(),
        );
    }
    let cached = std::env::var_os("HOME").map(|home| {
        PathBuf::from(home).join(format!(
            ".cache/foresight/prometheus-{PROMETHEUS_VERSION}-promqltest"
        ))
    });
    if let Some(cached) = cached.as_ref().filter(|c| c.is_dir()) {
        return (
            cached.clone(),
            "Prometheus' Go module, cached by scripts/test-deps.sh".into(),
        );
    }
    panic!(
        "Prometheus {PROMETHEUS_VERSION}'s PromQL test scripts are in neither {} nor {}: \
         run scripts/test-deps.sh (it downloads them from the Go module proxy), or set \
         {TESTDATA_ENV} to a directory of them",
        shared.display(),
        cached.map_or_else(
            || "~/.cache/foresight (HOME is not set)".to_string(),
            |c| c.display().to_string()
        ),
    );
}

#[derive(Default, Debug)]
struct Counts {
    passed: usize,
    failed: usize,
    unsupported: usize,
}

enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

struct Case {
    line: usize,
    kind: Kind,
    expr: String,
    expect_fail: bool,
    ordered: bool,
    results: Vec<String>,
}

enum Kind {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

fn dur_ms(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0) as i64);
    }
    parse_duration(s).map(|d| d.as_millis() as i64)
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / (a.abs() + b.abs()).min(f64::MAX) < EPSILON
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Splits `metric{a="b c"} 1 2` into the series part and the values part.
fn split_result(line: &str) -> (String, String) {
    let line = line.trim();
    let first_space = line.find(char::is_whitespace).unwrap_or(line.len());
    if let Some(open) = line.find('{').filter(|o| *o < first_space) {
        let mut in_quote = false;
        let mut escaped = false;
        for (i, c) in line[open..].char_indices() {
            match c {
                '\\' if in_quote && !escaped => {
                    escaped = true;
                    continue;
                }
                '"' if !escaped => in_quote = !in_quote,
                '}' if !in_quote => {
                    let end = open + i + 1;
                    return (line[..end].to_string(), line[end..].trim().to_string());
                }
                _ => {}
            }
            escaped = false;
        }
    }
    match line.split_once(char::is_whitespace) {
        Some((a, b)) => (a.to_string(), b.trim().to_string()),
        None => (line.to_string(), String::new()),
    }
}

/// Whether `expr` names the metric `name` as a whole identifier.
fn mentions(expr: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    expr.match_indices(name).any(|(i, _)| {
        let before = expr[..i].chars().next_back();
        let after = expr[i + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Replaces each `{{...}}` histogram token (with any `xN` repeat) by gaps.
fn floats_only(values: &str) -> String {
    let mut out = String::new();
    let mut rest = values;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        let after = &rest[open + close + 2..];
        let repeat: String = after
            .strip_prefix('x')
            .map(|r| r.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default();
        if repeat.is_empty() {
            out.push_str(" _ ");
            rest = after;
        } else {
            let n: usize = repeat.parse().unwrap_or(0);
            out.push_str(&" _".repeat(n + 1));
            out.push(' ');
            rest = &after[1 + repeat.len()..];
        }
    }
    out.push_str(rest);
    out
}

fn parse_labels(s: &str) -> Result<Labels, String> {
    if s == "{}" {
        return Ok(Labels::default());
    }
    parse_series(s)
}

fn render(v: &[(Labels, Vec<Option<f64>>)]) -> String {
    v.iter()
        .map(|(l, vals)| {
            let vals: Vec<String> = vals
                .iter()
                .map(|x| x.map(|f| f.to_string()).unwrap_or_else(|| "_".into()))
                .collect();
            format!("{l} {}", vals.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn run_case(store: &SeriesStore, case: &Case, histogram_names: &HashSet<String>) -> Outcome {
    if case.results.iter().any(|r| r.contains("{{")) {
        return Outcome::Unsupported("native histogram result".into());
    }
    if histogram_names.iter().any(|n| mentions(&case.expr, n)) {
        return Outcome::Unsupported("reads a native histogram series".into());
    }
    let expr = match parse_supported(&case.expr) {
        Ok(e) => e,
        Err(e) if e.starts_with("unsupported PromQL") => return Outcome::Unsupported(e),
        Err(e) => {
            return if case.expect_fail {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("parse error: {e}"))
            };
        }
    };
    let times: Vec<i64> = match case.kind {
        Kind::Instant(t) => vec![t],
        Kind::Range { start, end, step } => {
            let mut v = Vec::new();
            let mut t = start;
            while t <= end {
                v.push(t);
                t += step.max(1);
            }
            v
        }
    };
    let ev = Evaluator::new(store);
    let n = times.len();
    // Label set -> value per step, in first-seen order.
    let mut got: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
    let mut scalar_or_string: Option<String> = None;
    for (i, t) in times.iter().enumerate() {
        match ev.eval(&expr, *t) {
            Err(e) => {
                return if case.expect_fail {
                    Outcome::Pass
                } else {
                    Outcome::Fail(format!("error: {e}"))
                };
            }
            Ok(Value::Vector(v)) => {
                let mut seen = HashSet::new();
                for s in v {
                    if !seen.insert(s.labels.clone()) {
                        return if case.expect_fail {
                            Outcome::Pass
                        } else {
                            Outcome::Fail(format!("duplicate series {} in result", s.labels))
                        };
                    }
                    match got.iter_mut().find(|(l, _)| *l == s.labels) {
                        Some((_, vals)) => vals[i] = Some(s.value),
                        None => {
                            let mut vals = vec![None; n];
                            vals[i] = Some(s.value);
                            got.push((s.labels, vals));
                        }
                    }
                }
            }
            Ok(Value::Scalar(x)) => {
                if n == 1 {
                    scalar_or_string = Some(x.to_string());
                    got.push((Labels::default(), vec![Some(x)]));
                } else {
                    match got.first_mut() {
                        Some((_, vals)) => vals[i] = Some(x),
                        None => {
                            let mut vals = vec![None; n];
                            vals[i] = Some(x);
                            got.push((Labels::default(), vals));
                        }
                    }
                }
            }
            Ok(Value::String(s)) => scalar_or_string = Some(s),
            Ok(Value::Matrix(m)) => {
                for rs in m {
                    got.push((rs.labels, rs.points.iter().map(|p| Some(p.1)).collect()));
                }
            }
        }
    }
    if case.expect_fail {
        return Outcome::Fail("expected an error, got a result".into());
    }
    // Expected.
    let mut exp: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
    for r in &case.results {
        let r = r.trim();
        if let (Some(x), true) = (parse_value(r), n == 1) {
            // A bare scalar.
            if scalar_or_string.is_none() && got.len() != 1 {
                return Outcome::Fail(format!("expected scalar {r}, got {}", render(&got)));
            }
            exp.push((Labels::default(), vec![Some(x)]));
            continue;
        }
        if r.starts_with('"') {
            let want = r.trim_matches('"');
            return match &scalar_or_string {
                Some(s) if s == want => Outcome::Pass,
                other => Outcome::Fail(format!("expected string {want:?}, got {other:?}")),
            };
        }
        let (series, values) = split_result(r);
        let labels = match parse_labels(&series) {
            Ok(l) => l,
            Err(e) => return Outcome::Fail(format!("bad expected line {r:?}: {e}")),
        };
        let vals = if n == 1 {
            match parse_value(values.trim()) {
                Some(v) => vec![Some(v)],
                None => match expand_values(&values) {
                    Ok(v) => v,
                    Err(e) => return Outcome::Unsupported(format!("expected value notation: {e}")),
                },
            }
        } else {
            match expand_values(&values) {
                Ok(v) => v,
                Err(e) => return Outcome::Unsupported(format!("expected value notation: {e}")),
            }
        };
        exp.push((labels, vals));
    }
    // Range results: drop series with no value at any step (Prometheus leaves them out).
    got.retain(|(_, v)| v.iter().any(Option::is_some));
    if exp.len() != got.len() {
        return Outcome::Fail(format!(
            "expected {} series, got {}: exp [{}] got [{}]",
            exp.len(),
            got.len(),
            render(&exp),
            render(&got)
        ));
    }
    let same = |a: &(Labels, Vec<Option<f64>>), b: &(Labels, Vec<Option<f64>>)| {
        a.0 == b.0
            && a.1.len() == b.1.len()
            && a.1.iter().zip(&b.1).all(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => almost_equal(*x, *y),
                (None, None) => true,
                _ => false,
            })
    };
    if case.ordered {
        if exp.iter().zip(&got).all(|(a, b)| same(a, b)) {
            return Outcome::Pass;
        }
    } else if exp.iter().all(|e| got.iter().any(|g| same(e, g))) {
        return Outcome::Pass;
    }
    Outcome::Fail(format!("exp [{}] got [{}]", render(&exp), render(&got)))
}

fn run_file(
    path: &Path,
    counts: &mut Counts,
    failures: &mut Vec<(String, String)>,
    unsupported: &mut BTreeMap<String, usize>,
) {
    let text = std::fs::read_to_string(path).expect("conformance file readable");
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut store = SeriesStore::new(i64::MAX / 4);
    let mut histogram_names: HashSet<String> = HashSet::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let head = line.trim();
        i += 1;
        if head.is_empty() || head.starts_with('#') {
            continue;
        }
        let indented_block = |i: &mut usize| {
            let mut block = Vec::new();
            while *i < lines.len() {
                let l = lines[*i];
                if l.trim().is_empty() || !(l.starts_with(' ') || l.starts_with('\t')) {
                    break;
                }
                if !l.trim().starts_with('#') {
                    block.push(l.trim().to_string());
                }
                *i += 1;
            }
            block
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        match words[0] {
            "clear" => {
                store = SeriesStore::new(i64::MAX / 4);
                histogram_names.clear();
            }
            "load" | "load_with_nhcb" => {
                let step = dur_ms(words.get(1).copied().unwrap_or("1m")).expect("load step");
                for l in indented_block(&mut i) {
                    let (series, values) = split_result(&l);
                    let Ok(labels) = parse_series(&series) else {
                        continue;
                    };
                    // Histogram samples are out of scope: load the float samples of a
                    // mixed series and leave gaps where the histograms were; the cases that
                    // read a series with histogram samples are unsupported.
                    if (words[0] == "load_with_nhcb" || values.contains("{{"))
                        && let Some(n) = labels.get("__name__")
                    {
                        histogram_names.insert(n.to_string());
                        // load_with_nhcb also makes a native histogram of a classic one.
                        for suffix in ["_bucket", "_count", "_sum"] {
                            if let Some(base) = n.strip_suffix(suffix) {
                                histogram_names.insert(base.to_string());
                            }
                        }
                    }
                    let Ok(points) = expand_values(&floats_only(&values)) else {
                        continue;
                    };
                    for (k, p) in points.into_iter().enumerate() {
                        if let Some(v) = p {
                            store.append(&labels, k as i64 * step, v);
                        }
                    }
                }
            }
            w if w.starts_with("eval") => {
                let start_line = i;
                let mut expect_fail = w == "eval_fail";
                let mut ordered = w == "eval_ordered";
                let (kind, expr) = if words.get(1) == Some(&"instant") {
                    // eval instant at <t> <expr>
                    let t = dur_ms(words[3]).expect("instant time");
                    let expr = head
                        .splitn(5, char::is_whitespace)
                        .nth(4)
                        .unwrap_or("")
                        .to_string();
                    (Kind::Instant(t), expr)
                } else {
                    // eval range from <a> to <b> step <s> <expr>
                    let start = dur_ms(words[3]).expect("range start");
                    let end = dur_ms(words[5]).expect("range end");
                    let step = dur_ms(words[7]).expect("range step");
                    let expr = head
                        .splitn(9, char::is_whitespace)
                        .nth(8)
                        .unwrap_or("")
                        .to_string();
                    (Kind::Range { start, end, step }, expr)
                };
                let mut results = Vec::new();
                for l in indented_block(&mut i) {
                    if l.starts_with("expect fail") || l.starts_with("expected_fail") {
                        expect_fail = true;
                    } else if l.starts_with("expect ordered") {
                        ordered = true;
                    } else if l.starts_with("expect") {
                        // warn / info annotations are not modelled; results still count.
                    } else {
                        results.push(l);
                    }
                }
                let case = Case {
                    line: start_line,
                    kind,
                    expr,
                    expect_fail,
                    ordered,
                    results,
                };
                match run_case(&store, &case, &histogram_names) {
                    Outcome::Pass => counts.passed += 1,
                    Outcome::Unsupported(why) => {
                        counts.unsupported += 1;
                        *unsupported.entry(why).or_insert(0) += 1;
                    }
                    Outcome::Fail(why) => {
                        counts.failed += 1;
                        failures.push((
                            format!("{name}:{}", case.line),
                            format!("{} => {why}", case.expr),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// The known failures (`file:line` → reason) and the floor of passing cases.
fn known_failures() -> (BTreeMap<String, String>, usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-known-failures.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut floor = 0;
    let mut known = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        if let Some(n) = l.strip_prefix("minimum-passed:") {
            floor = n.trim().parse().expect("minimum-passed: a number");
            continue;
        }
        let (k, why) = l.split_once(' ').unwrap_or((l, ""));
        known.insert(k.to_string(), why.trim().to_string());
    }
    (known, floor)
}

fn main() {
    let (dir, source) = conformance_dir();
    let resolved = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    println!(
        "Prometheus {PROMETHEUS_VERSION} PromQL test scripts from {source}: {}",
        resolved.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("conformance data missing at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files in {}", dir.display());
    let mut total = Counts::default();
    let mut failures = Vec::new();
    let mut unsupported = BTreeMap::new();
    println!(
        "{:<28} {:>7} {:>7} {:>12}",
        "file", "passed", "failed", "unsupported"
    );
    for f in &files {
        let mut c = Counts::default();
        run_file(f, &mut c, &mut failures, &mut unsupported);
        println!(
            "{:<28} {:>7} {:>7} {:>12}",
            f.file_name().unwrap().to_string_lossy(),
            c.passed,
            c.failed,
            c.unsupported
        );
        total.passed += c.passed;
        total.failed += c.failed;
        total.unsupported += c.unsupported;
    }
    println!(
        "{:<28} {:>7} {:>7} {:>12}",
        "total", total.passed, total.failed, total.unsupported
    );
    let mut reasons: Vec<_> = unsupported.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    println!("unsupported, by reason:");
    for (why, n) in reasons {
        println!("  {n:>4}  {why}");
    }
    let (known, floor) = known_failures();
    let failing: BTreeSet<&String> = failures.iter().map(|(k, _)| k).collect();
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|(k, _)| !known.contains_key(k))
        .collect();
    let fixed: Vec<_> = known.keys().filter(|k| !failing.contains(k)).collect();
    if std::env::var("CONFORMANCE_WRITE_KNOWN").is_ok() {
        for (k, why) in &failures {
            let why: String = why.chars().take(160).collect::<String>().replace('\n', " ");
            eprintln!("{k} {why}");
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} failures not in tests/conformance-known-failures.txt:\n{}",
        unexpected.len(),
        unexpected
            .iter()
            .map(|(k, w)| format!("  {k}: {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        fixed.is_empty(),
        "now passing: take them off tests/conformance-known-failures.txt: {fixed:?}"
    );
    assert!(
        total.passed >= floor,
        "{} cases pass, fewer than the minimum-passed: {floor} of tests/conformance-known-failures.txt",
        total.passed
    );
    if total.passed > floor {
        println!(
            "{} cases pass: raise minimum-passed in tests/conformance-known-failures.txt",
            total.passed
        );
    }
}
