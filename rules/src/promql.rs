//! A PromQL evaluator over [`SeriesStore`], with Prometheus 3 semantics.
//!
//! Expressions are parsed by `promql-parser`; [`check_supported`] rejects at load time
//! anything this engine does not evaluate yet, naming it, so that a rule never gets a
//! silently wrong answer.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

use promql_parser::label::Matchers;
use promql_parser::parser::{
    self, AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset,
    VectorMatchCardinality, VectorSelector,
};

use crate::store::{Labels, METRIC_NAME, SeriesStore, is_stale_marker};

/// How far back an instant selector looks for a sample (Prometheus' default).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// An evaluation error at query time.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum EvalError {
    /// The expression uses something this engine does not evaluate.
    #[error("unsupported PromQL: {0}")]
    Unsupported(String),
    /// Prometheus would refuse this query at run time too.
    #[error("{0}")]
    Invalid(String),
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series labels (with `__name__` unless an operation dropped it).
    pub labels: Labels,
    /// Sample value.
    pub value: f64,
}

/// One series of a range vector.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Series labels.
    pub labels: Labels,
    /// Points in time order, `(timestamp_ms, value)`.
    pub points: Vec<(i64, f64)>,
}

/// The result of evaluating an expression at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string literal.
    String(String),
    /// An instant vector.
    Vector(Vec<Sample>),
    /// A range vector.
    Matrix(Vec<RangeSeries>),
}

/// Functions this engine evaluates.
const SUPPORTED_FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "delta",
    "deriv",
    "exp",
    "floor",
    "idelta",
    "increase",
    "irate",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "present_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sqrt",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
];

/// Aggregations this engine evaluates.
const SUPPORTED_AGGREGATIONS: &[&str] = &[
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
];

/// Parses `expr` and checks that this engine can evaluate all of it.
///
/// # Errors
/// The parser's message for a syntax error, or the unsupported feature by name.
pub fn parse_supported(expr: &str) -> Result<Expr, String> {
    let parsed = parser::parse(expr)?;
    check_supported(&parsed).map_err(|e| e.to_string())?;
    Ok(parsed)
}

/// Walks `expr` and names the first feature this engine does not evaluate.
///
/// # Errors
/// [`EvalError::Unsupported`] naming the function, aggregation or construct.
pub fn check_supported(expr: &Expr) -> Result<(), EvalError> {
    match expr {
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !SUPPORTED_AGGREGATIONS.contains(&op.as_str()) {
                return Err(EvalError::Unsupported(format!("aggregation {op}")));
            }
            if let Some(p) = &a.param {
                check_supported(p)?;
            }
            check_supported(&a.expr)
        }
        Expr::Unary(u) => check_supported(&u.expr),
        Expr::Binary(b) => {
            if b.op.to_string() == "atan2" {
                return Err(EvalError::Unsupported("operator atan2".into()));
            }
            if let Some(m) = &b.modifier
                && (m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
            {
                return Err(EvalError::Unsupported("fill modifiers".into()));
            }
            check_supported(&b.lhs)?;
            check_supported(&b.rhs)
        }
        Expr::Paren(p) => check_supported(&p.expr),
        Expr::Subquery(_) => Err(EvalError::Unsupported("subqueries".into())),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::VectorSelector(_) => Ok(()),
        Expr::MatrixSelector(_) => Ok(()),
        Expr::Call(c) => {
            if !SUPPORTED_FUNCTIONS.contains(&c.func.name) {
                return Err(EvalError::Unsupported(format!("function {}", c.func.name)));
            }
            c.args.args.iter().try_for_each(|a| check_supported(a))
        }
        Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions".into())),
    }
}

/// The longest time, in ms, that evaluating `expr` reads back from the evaluation
/// instant: ranges, offsets and the lookback delta. Sizes the series store.
pub fn max_lookback_ms(expr: &Expr) -> i64 {
    fn offset_ms(o: &Option<Offset>) -> i64 {
        match o {
            Some(Offset::Pos(d)) => d.as_millis() as i64,
            _ => 0,
        }
    }
    match expr {
        Expr::Aggregate(a) => max_lookback_ms(&a.expr),
        Expr::Unary(u) => max_lookback_ms(&u.expr),
        Expr::Binary(b) => max_lookback_ms(&b.lhs).max(max_lookback_ms(&b.rhs)),
        Expr::Paren(p) => max_lookback_ms(&p.expr),
        Expr::Subquery(s) => {
            max_lookback_ms(&s.expr) + s.range.as_millis() as i64 + offset_ms(&s.offset)
        }
        Expr::VectorSelector(vs) => LOOKBACK_MS + offset_ms(&vs.offset),
        Expr::MatrixSelector(ms) => ms.range.as_millis() as i64 + offset_ms(&ms.vs.offset),
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .map(|a| max_lookback_ms(a))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Evaluates expressions at instants against one store.
pub struct Evaluator<'a> {
    store: &'a SeriesStore,
}

impl<'a> Evaluator<'a> {
    /// An evaluator reading `store`.
    pub fn new(store: &'a SeriesStore) -> Self {
        Evaluator { store }
    }

    /// Evaluates `expr` at `ts_ms`.
    ///
    /// # Errors
    /// [`EvalError`] for what Prometheus also rejects at run time (for example
    /// many-to-many matching) or what this engine does not support.
    pub fn eval(&self, expr: &Expr, ts_ms: i64) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts_ms),
            Expr::Unary(u) => match self.eval(&u.expr, ts_ms)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(vs) => Ok(Value::Vector(
                    vs.into_iter()
                        .map(|s| Sample {
                            labels: s.labels.without_name(),
                            value: -s.value,
                        })
                        .collect(),
                )),
                _ => Err(EvalError::Invalid(
                    "unary minus on a non-numeric value".into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant_selector(vs, ts_ms))),
            Expr::MatrixSelector(ms) => {
                Ok(Value::Matrix(self.range_selector(&ms.vs, ms.range, ts_ms)))
            }
            Expr::Binary(b) => self.binary(b, ts_ms),
            Expr::Aggregate(a) => self.aggregate(a, ts_ms),
            Expr::Call(c) => self.call(c, ts_ms),
            Expr::Subquery(_) => Err(EvalError::Unsupported("subqueries".into())),
            Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions".into())),
        }
    }

    fn selector_time(offset: &Option<Offset>, at: &Option<AtModifier>, ts_ms: i64) -> i64 {
        let base = match at {
            Some(AtModifier::At(t)) => t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_else(|e| -(e.duration().as_millis() as i64)),
            // In a rule evaluation start() and end() are the evaluation instant.
            Some(AtModifier::Start) | Some(AtModifier::End) | None => ts_ms,
        };
        match offset {
            Some(Offset::Pos(d)) => base - d.as_millis() as i64,
            Some(Offset::Neg(d)) => base + d.as_millis() as i64,
            None => base,
        }
    }

    fn matching<'s>(
        &'s self,
        name: &'s Option<String>,
        matchers: &'s Matchers,
    ) -> impl Iterator<Item = &'s crate::store::StoredSeries> + 's {
        self.store
            .series_named(name.as_deref())
            .filter(move |s| series_matches(&s.labels, matchers))
    }

    fn instant_selector(&self, vs: &VectorSelector, ts_ms: i64) -> Vec<Sample> {
        let t = Self::selector_time(&vs.offset, &vs.at, ts_ms);
        let mut out = Vec::new();
        for series in self.matching(&vs.name, &vs.matchers) {
            // Newest sample in (t - lookback, t].
            let idx = series.samples.partition_point(|(st, _)| *st <= t);
            if idx == 0 {
                continue;
            }
            let (st, v) = series.samples[idx - 1];
            if st <= t - LOOKBACK_MS || is_stale_marker(v) {
                continue;
            }
            out.push(Sample {
                labels: series.labels.clone(),
                value: v,
            });
        }
        out
    }

    fn range_selector(&self, vs: &VectorSelector, range: Duration, ts_ms: i64) -> Vec<RangeSeries> {
        let end = Self::selector_time(&vs.offset, &vs.at, ts_ms);
        let start = end - range.as_millis() as i64;
        let mut out = Vec::new();
        for series in self.matching(&vs.name, &vs.matchers) {
            let from = series.samples.partition_point(|(st, _)| *st <= start);
            let to = series.samples.partition_point(|(st, _)| *st <= end);
            let points: Vec<(i64, f64)> = series
                .samples
                .range(from..to)
                .filter(|(_, v)| !is_stale_marker(*v))
                .copied()
                .collect();
            if !points.is_empty() {
                out.push(RangeSeries {
                    labels: series.labels.clone(),
                    points,
                });
            }
        }
        out
    }

    fn vector(&self, expr: &Expr, ts_ms: i64) -> Result<Vec<Sample>, EvalError> {
        match self.eval(expr, ts_ms)? {
            Value::Vector(v) => Ok(v),
            other => Err(EvalError::Invalid(format!(
                "expected an instant vector, got {}",
                kind(&other)
            ))),
        }
    }

    fn scalar(&self, expr: &Expr, ts_ms: i64) -> Result<f64, EvalError> {
        match self.eval(expr, ts_ms)? {
            Value::Scalar(v) => Ok(v),
            other => Err(EvalError::Invalid(format!(
                "expected a scalar, got {}",
                kind(&other)
            ))),
        }
    }

    fn binary(&self, b: &BinaryExpr, ts_ms: i64) -> Result<Value, EvalError> {
        let op = b.op.to_string();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, ts_ms)?;
        let rhs = self.eval(&b.rhs, ts_ms)?;
        let comparison = b.op.is_comparison_operator();
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let v = apply(&op, l, r)?;
                Ok(Value::Scalar(if comparison { bool_value(v) } else { v }))
            }
            (Value::Vector(vs), Value::Scalar(s)) | (Value::Scalar(s), Value::Vector(vs))
                if b.op.is_set_operator() =>
            {
                let _ = (vs, s);
                Err(EvalError::Invalid(format!(
                    "set operator {op} needs vectors on both sides"
                )))
            }
            (Value::Vector(vs), Value::Scalar(s)) => Ok(Value::Vector(vector_scalar(
                vs,
                s,
                &op,
                comparison,
                return_bool,
                false,
            )?)),
            (Value::Scalar(s), Value::Vector(vs)) => Ok(Value::Vector(vector_scalar(
                vs,
                s,
                &op,
                comparison,
                return_bool,
                true,
            )?)),
            (Value::Vector(l), Value::Vector(r)) => Ok(Value::Vector(vector_vector(
                l,
                r,
                b,
                &op,
                comparison,
                return_bool,
            )?)),
            (l, r) => Err(EvalError::Invalid(format!(
                "operator {op} between {} and {}",
                kind(&l),
                kind(&r)
            ))),
        }
    }

    fn aggregate(&self, a: &AggregateExpr, ts_ms: i64) -> Result<Value, EvalError> {
        let op = a.op.to_string();
        let input = self.vector(&a.expr, ts_ms)?;
        let param = match &a.param {
            Some(p) => Some(self.scalar(p, ts_ms)?),
            None => None,
        };
        let group_labels = |l: &Labels| -> Labels {
            match &a.modifier {
                Some(LabelModifier::Include(names)) => {
                    l.filter(|n| names.labels.iter().any(|x| x == n))
                }
                Some(LabelModifier::Exclude(names)) => {
                    l.filter(|n| n != METRIC_NAME && !names.labels.iter().any(|x| x == n))
                }
                None => Labels::default(),
            }
        };
        let mut groups: Vec<(Labels, Vec<Sample>)> = Vec::new();
        let mut index: HashMap<Labels, usize> = HashMap::new();
        for s in input {
            let key = group_labels(&s.labels);
            let i = *index.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(s);
        }
        let mut out = Vec::new();
        for (key, members) in groups {
            let values: Vec<f64> = members.iter().map(|s| s.value).collect();
            let n = values.len() as f64;
            let value = match op.as_str() {
                "sum" => kahan_sum(&values),
                "min" => values.iter().copied().fold(f64::NAN, nan_min),
                "max" => values.iter().copied().fold(f64::NAN, nan_max),
                "avg" => mean(&values),
                "count" => n,
                "group" => 1.0,
                "stddev" | "stdvar" => {
                    let var = variance(&values);
                    if op == "stddev" { var.sqrt() } else { var }
                }
                "topk" | "bottomk" => {
                    let k = param.unwrap_or(0.0);
                    if k < 1.0 {
                        continue;
                    }
                    let mut members = members;
                    // NaN sorts last in both directions.
                    members.sort_by(|x, y| {
                        let ord = x
                            .value
                            .partial_cmp(&y.value)
                            .unwrap_or(std::cmp::Ordering::Equal);
                        let ord = if op == "topk" { ord.reverse() } else { ord };
                        x.value.is_nan().cmp(&y.value.is_nan()).then(ord)
                    });
                    out.extend(members.into_iter().take(k as usize));
                    continue;
                }
                other => return Err(EvalError::Unsupported(format!("aggregation {other}"))),
            };
            out.push(Sample { labels: key, value });
        }
        Ok(Value::Vector(out))
    }

    fn call(&self, c: &Call, ts_ms: i64) -> Result<Value, EvalError> {
        let name = c.func.name;
        let args = &c.args.args;
        let arg = |i: usize| -> Result<&Expr, EvalError> {
            args.get(i)
                .map(|b| b.as_ref())
                .ok_or_else(|| EvalError::Invalid(format!("{name}: missing argument {}", i + 1)))
        };
        match name {
            "time" => return Ok(Value::Scalar(ts_ms as f64 / 1000.0)),
            "vector" => {
                let v = self.scalar(arg(0)?, ts_ms)?;
                return Ok(Value::Vector(vec![Sample {
                    labels: Labels::default(),
                    value: v,
                }]));
            }
            "scalar" => {
                let v = self.vector(arg(0)?, ts_ms)?;
                return Ok(Value::Scalar(if v.len() == 1 {
                    v[0].value
                } else {
                    f64::NAN
                }));
            }
            "absent" => {
                let v = self.vector(arg(0)?, ts_ms)?;
                if !v.is_empty() {
                    return Ok(Value::Vector(vec![]));
                }
                let labels = match arg(0)? {
                    Expr::VectorSelector(vs) => {
                        // A label matched more than once says nothing certain about the
                        // missing series, so it is left out.
                        let ms = &vs.matchers.matchers;
                        let once = |name: &str| ms.iter().filter(|m| m.name == name).count() == 1;
                        Labels::new(
                            ms.iter()
                                .filter(|m| {
                                    m.name != METRIC_NAME
                                        && matches!(m.op, promql_parser::label::MatchOp::Equal)
                                        && once(&m.name)
                                })
                                .map(|m| (m.name.clone(), m.value.clone())),
                        )
                    }
                    _ => Labels::default(),
                };
                return Ok(Value::Vector(vec![Sample { labels, value: 1.0 }]));
            }
            "timestamp" => {
                let Expr::VectorSelector(vs) = strip_parens(arg(0)?) else {
                    let v = self.vector(arg(0)?, ts_ms)?;
                    return Ok(Value::Vector(
                        v.into_iter()
                            .map(|s| Sample {
                                labels: s.labels.without_name(),
                                value: ts_ms as f64 / 1000.0,
                            })
                            .collect(),
                    ));
                };
                let t = Self::selector_time(&vs.offset, &vs.at, ts_ms);
                let mut out = Vec::new();
                for series in self.matching(&vs.name, &vs.matchers) {
                    let idx = series.samples.partition_point(|(st, _)| *st <= t);
                    if idx == 0 {
                        continue;
                    }
                    let (st, v) = series.samples[idx - 1];
                    if st <= t - LOOKBACK_MS || is_stale_marker(v) {
                        continue;
                    }
                    out.push(Sample {
                        labels: series.labels.without_name(),
                        value: st as f64 / 1000.0,
                    });
                }
                return Ok(Value::Vector(out));
            }
            _ => {}
        }
        if let Some(f) = simple_math(name) {
            let v = self.vector(arg(0)?, ts_ms)?;
            return Ok(Value::Vector(map_values(v, f)));
        }
        match name {
            "round" => {
                let v = self.vector(arg(0)?, ts_ms)?;
                let to = match args.get(1) {
                    Some(e) => self.scalar(e, ts_ms)?,
                    None => 1.0,
                };
                let inv = 1.0 / to;
                return Ok(Value::Vector(map_values(v, |x| {
                    (x * inv + 0.5).floor() / inv
                })));
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let v = self.vector(arg(0)?, ts_ms)?;
                let a = self.scalar(arg(1)?, ts_ms)?;
                return Ok(Value::Vector(match name {
                    "clamp" => {
                        let b = self.scalar(arg(2)?, ts_ms)?;
                        if a > b {
                            vec![]
                        } else {
                            map_values(v, |x| nan_max(a, nan_min(b, x)))
                        }
                    }
                    "clamp_min" => map_values(v, |x| nan_max(a, x)),
                    _ => map_values(v, |x| nan_min(a, x)),
                }));
            }
            _ => {}
        }
        // Range-vector functions.
        let Expr::MatrixSelector(ms) = strip_parens(arg(0)?) else {
            return Err(EvalError::Invalid(format!(
                "{name}: expected a range vector"
            )));
        };
        let range_ms = ms.range.as_millis() as i64;
        let end = Self::selector_time(&ms.vs.offset, &ms.vs.at, ts_ms);
        let series = self.range_selector(&ms.vs, ms.range, ts_ms);
        let mut out = Vec::new();
        for rs in series {
            let p = &rs.points;
            let value = match name {
                "changes" => Some(p.windows(2).filter(|w| !same(w[0].1, w[1].1)).count() as f64),
                "resets" => Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
                "count_over_time" => Some(p.len() as f64),
                "present_over_time" => Some(1.0),
                "last_over_time" => p.last().map(|x| x.1),
                "sum_over_time" => Some(kahan_sum(&p.iter().map(|x| x.1).collect::<Vec<_>>())),
                "avg_over_time" => Some(mean(&p.iter().map(|x| x.1).collect::<Vec<_>>())),
                "min_over_time" => Some(p.iter().map(|x| x.1).fold(f64::NAN, nan_min)),
                "max_over_time" => Some(p.iter().map(|x| x.1).fold(f64::NAN, nan_max)),
                "rate" => extrapolated(p, end - range_ms, end, true, true),
                "increase" => extrapolated(p, end - range_ms, end, true, false),
                "delta" => extrapolated(p, end - range_ms, end, false, false),
                "irate" | "idelta" => instant_delta(p, name == "irate"),
                "deriv" => deriv(p),
                other => return Err(EvalError::Unsupported(format!("function {other}"))),
            };
            let Some(value) = value else { continue };
            let labels = if name == "last_over_time" {
                rs.labels
            } else {
                rs.labels.without_name()
            };
            out.push(Sample { labels, value });
        }
        Ok(Value::Vector(out))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Scalar(_) => "scalar",
        Value::String(_) => "string",
        Value::Vector(_) => "instant vector",
        Value::Matrix(_) => "range vector",
    }
}

fn strip_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip_parens(&p.expr),
        other => other,
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn nan_min(acc: f64, x: f64) -> f64 {
    if acc.is_nan() || x < acc { x } else { acc }
}

fn nan_max(acc: f64, x: f64) -> f64 {
    if acc.is_nan() || x > acc { x } else { acc }
}

fn bool_value(b: f64) -> f64 {
    if b != 0.0 && !b.is_nan() { 1.0 } else { 0.0 }
}

fn simple_math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        },
        _ => return None,
    })
}

fn map_values(v: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    v.into_iter()
        .map(|s| Sample {
            labels: s.labels.without_name(),
            value: f(s.value),
        })
        .collect()
}

fn series_matches(labels: &Labels, matchers: &Matchers) -> bool {
    let all = |ms: &[promql_parser::label::Matcher]| {
        ms.iter()
            .all(|m| m.is_match(labels.get(&m.name).unwrap_or_default()))
    };
    if matchers.or_matchers.is_empty() {
        all(&matchers.matchers)
    } else {
        matchers.or_matchers.iter().any(|ms| all(ms))
    }
}

/// Applies an arithmetic or comparison operator; comparisons return 1 or 0.
fn apply(op: &str, l: f64, r: f64) -> Result<f64, EvalError> {
    Ok(match op {
        "+" => l + r,
        "-" => l - r,
        "*" => l * r,
        "/" => l / r,
        "%" => l % r,
        "^" => l.powf(r),
        "==" => f64::from(u8::from(l == r)),
        "!=" => f64::from(u8::from(l != r)),
        ">" => f64::from(u8::from(l > r)),
        "<" => f64::from(u8::from(l < r)),
        ">=" => f64::from(u8::from(l >= r)),
        "<=" => f64::from(u8::from(l <= r)),
        other => return Err(EvalError::Unsupported(format!("operator {other}"))),
    })
}

fn vector_scalar(
    vs: Vec<Sample>,
    s: f64,
    op: &str,
    comparison: bool,
    return_bool: bool,
    scalar_left: bool,
) -> Result<Vec<Sample>, EvalError> {
    let mut out = Vec::with_capacity(vs.len());
    for sample in vs {
        let (l, r) = if scalar_left {
            (s, sample.value)
        } else {
            (sample.value, s)
        };
        let v = apply(op, l, r)?;
        if comparison && !return_bool {
            if v == 1.0 {
                out.push(sample);
            }
            continue;
        }
        out.push(Sample {
            labels: sample.labels.without_name(),
            value: v,
        });
    }
    Ok(out)
}

fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.filter(|n| on.labels.iter().any(|x| x == n)),
        Some(LabelModifier::Exclude(ign)) => {
            labels.filter(|n| n != METRIC_NAME && !ign.labels.iter().any(|x| x == n))
        }
        None => labels.without_name(),
    }
}

fn vector_vector(
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    b: &BinaryExpr,
    op: &str,
    comparison: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, EvalError> {
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    let card = b
        .modifier
        .as_ref()
        .map(|m| m.card.clone())
        .unwrap_or(VectorMatchCardinality::OneToOne);
    if b.op.is_set_operator() {
        let rsigs: HashSet<Labels> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
        return Ok(match op {
            "and" => lhs
                .into_iter()
                .filter(|s| rsigs.contains(&signature(&s.labels, matching)))
                .collect(),
            "unless" => lhs
                .into_iter()
                .filter(|s| !rsigs.contains(&signature(&s.labels, matching)))
                .collect(),
            _ => {
                let lsigs: HashSet<Labels> =
                    lhs.iter().map(|s| signature(&s.labels, matching)).collect();
                let mut out = lhs;
                out.extend(
                    rhs.into_iter()
                        .filter(|s| !lsigs.contains(&signature(&s.labels, matching))),
                );
                out
            }
        });
    }
    // The "one" side is indexed by signature; for group_right it is the left.
    let (one, many, swapped) = match card {
        VectorMatchCardinality::OneToMany(_) => (lhs, rhs, true),
        _ => (rhs, lhs, false),
    };
    let mut one_by_sig: HashMap<Labels, Sample> = HashMap::new();
    for s in one {
        let sig = signature(&s.labels, matching);
        if one_by_sig.insert(sig.clone(), s).is_some() {
            return Err(EvalError::Invalid(format!(
                "found duplicate series for the match group {sig} on the {} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side",
                if swapped { "left" } else { "right" }
            )));
        }
    }
    let drop_name = !comparison || return_bool;
    let mut seen: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for s in many {
        let sig = signature(&s.labels, matching);
        let Some(other) = one_by_sig.get(&sig) else {
            continue;
        };
        let (l, r) = if swapped { (other, &s) } else { (&s, other) };
        let v = apply(op, l.value, r.value)?;
        if comparison && !return_bool && v != 1.0 {
            continue;
        }
        let value = if comparison && !return_bool {
            l.value
        } else {
            v
        };
        let mut labels = if drop_name {
            s.labels.without_name()
        } else {
            s.labels.clone()
        };
        if matches!(card, VectorMatchCardinality::OneToOne) {
            match matching {
                Some(LabelModifier::Include(on)) => {
                    labels = labels.filter(|n| on.labels.iter().any(|x| x == n));
                }
                Some(LabelModifier::Exclude(ign)) => {
                    labels = labels.filter(|n| !ign.labels.iter().any(|x| x == n));
                }
                None => {}
            }
        }
        if let Some(include) = card.labels() {
            for name in &include.labels {
                labels = labels.with(name, other.labels.get(name).unwrap_or_default());
            }
        }
        if matches!(card, VectorMatchCardinality::OneToOne) && !seen.insert(labels.clone()) {
            return Err(EvalError::Invalid(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    .into(),
            ));
        }
        out.push(Sample { labels, value });
    }
    Ok(out)
}

fn extrapolated(
    p: &[(i64, f64)],
    start: i64,
    end: i64,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (first, last) = (p[0], p[p.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        for w in p.windows(2) {
            if w[1].1 < w[0].1 {
                result += w[0].1;
            }
        }
    }
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg_between = sampled / (p.len() - 1) as f64;
    let mut to_start = (first.0 - start) as f64 / 1000.0;
    let mut to_end = (end - last.0) as f64 / 1000.0;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    // A counter cannot have been below zero: extrapolate at most to where it was zero.
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if per_second {
        factor /= (end - start) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Neumaier's compensated increment, as Prometheus' `kahanSumInc`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Compensated sum, so that `1e100 + 10 - 1e100` is 10.
fn kahan_sum(values: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(*v, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// Mean as Prometheus computes it: a compensated sum, switching to an incremental mean
/// when the sum would overflow.
fn mean(values: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    let mut incremental = false;
    let mut avg = 0.0;
    for (i, v) in values.iter().enumerate() {
        let count = (i + 1) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(*v, sum, c);
            if !ns.is_infinite() || i == 0 {
                (sum, c) = (ns, nc);
                continue;
            }
            incremental = true;
            avg = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (avg, c) = kahan_inc(v / count, q * avg, q * c);
    }
    if incremental {
        avg + c
    } else {
        (sum + c) / values.len() as f64
    }
}

/// Population variance by Welford's method, as Prometheus.
fn variance(values: &[f64]) -> f64 {
    let (mut mean, mut m2) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        let delta = v - mean;
        mean += delta / (i + 1) as f64;
        m2 += delta * (v - mean);
    }
    m2 / values.len() as f64
}

fn instant_delta(p: &[(i64, f64)], rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (prev, last) = (p[p.len() - 2], p[p.len() - 1]);
    let mut d = last.1 - prev.1;
    if rate {
        if last.1 < prev.1 {
            d = last.1;
        }
        let secs = (last.0 - prev.0) as f64 / 1000.0;
        if secs == 0.0 {
            return None;
        }
        d /= secs;
    }
    Some(d)
}

fn deriv(p: &[(i64, f64)]) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    // Least-squares slope, with times relative to the first point for precision.
    let t0 = p[0].0;
    let n = p.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
    for (t, v) in p {
        let x = (t - t0) as f64 / 1000.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sxx += x * x;
    }
    let cov = sxy - sx * sy / n;
    let var = sxx - sx * sx / n;
    Some(cov / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    type SeriesSpec<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

    fn store_with(series: &[SeriesSpec<'_>]) -> SeriesStore {
        let mut store = SeriesStore::new(i64::MAX / 4);
        for (labels, samples) in series {
            let labels = Labels::new(labels.iter().map(|(a, b)| (a.to_string(), b.to_string())));
            for (t, v) in *samples {
                store.append(&labels, *t, *v);
            }
        }
        store
    }

    fn eval(store: &SeriesStore, q: &str, t: i64) -> Vec<(String, f64)> {
        let expr = parse_supported(q).expect("query parses");
        match Evaluator::new(store).eval(&expr, t).expect("evaluates") {
            Value::Vector(v) => {
                let mut out: Vec<_> = v
                    .into_iter()
                    .map(|s| (s.labels.to_string(), s.value))
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            Value::Scalar(s) => vec![("scalar".into(), s)],
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn instant_selector_honours_lookback_and_staleness() {
        let store = store_with(&[
            (
                &[("__name__", "up"), ("job", "a")],
                &[(0, 1.0), (60_000, 0.0)],
            ),
            (
                &[("__name__", "up"), ("job", "b")],
                &[
                    (0, 1.0),
                    (30_000, f64::from_bits(crate::store::STALE_NAN_BITS)),
                ],
            ),
        ]);
        assert_eq!(
            eval(&store, "up", 60_000),
            vec![(r#"up{job="a"}"#.into(), 0.0)]
        );
        assert_eq!(eval(&store, "up", 20_000).len(), 2);
        assert!(eval(&store, "up", 60_000 + LOOKBACK_MS).is_empty());
    }

    #[test]
    fn comparison_filters_and_bool_returns_zero_one() {
        let store = store_with(&[
            (&[("__name__", "x"), ("p", "0")], &[(0, 3.0)]),
            (&[("__name__", "x"), ("p", "1")], &[(0, 0.0)]),
        ]);
        assert_eq!(eval(&store, "x > 0", 0), vec![(r#"x{p="0"}"#.into(), 3.0)]);
        assert_eq!(
            eval(&store, "x > bool 0", 0),
            vec![(r#"{p="0"}"#.into(), 1.0), (r#"{p="1"}"#.into(), 0.0)]
        );
    }

    #[test]
    fn changes_and_and_on_find_a_stuck_offset() {
        let lso: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000, 5.0)).collect();
        let moving: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000, i as f64)).collect();
        let lag: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000, 2.0)).collect();
        let store = store_with(&[
            (&[("__name__", "lso"), ("p", "0")], &lso),
            (&[("__name__", "lso"), ("p", "1")], &moving),
            (&[("__name__", "lag"), ("p", "0")], &lag),
            (&[("__name__", "lag"), ("p", "1")], &lag),
        ]);
        let got = eval(&store, "lag > 0 and on(p) changes(lso[1m]) == 0", 90_000);
        assert_eq!(got, vec![(r#"lag{p="0"}"#.into(), 2.0)]);
    }

    #[test]
    fn aggregations_group_by_labels() {
        let store = store_with(&[
            (&[("__name__", "x"), ("t", "a"), ("p", "0")], &[(0, 1.0)]),
            (&[("__name__", "x"), ("t", "a"), ("p", "1")], &[(0, 2.0)]),
            (&[("__name__", "x"), ("t", "b"), ("p", "0")], &[(0, 5.0)]),
        ]);
        assert_eq!(
            eval(&store, "sum by (t) (x)", 0),
            vec![(r#"{t="a"}"#.into(), 3.0), (r#"{t="b"}"#.into(), 5.0)]
        );
        assert_eq!(
            eval(&store, "count without (p) (x)", 0),
            vec![(r#"{t="a"}"#.into(), 2.0), (r#"{t="b"}"#.into(), 1.0)]
        );
        assert_eq!(eval(&store, "max(x)", 0), vec![("{}".into(), 5.0)]);
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter rising by 1 per 10 s, fully covering the window: rate is 0.1/s.
        let c: Vec<(i64, f64)> = (0..=30).map(|i| (i * 10_000, i as f64)).collect();
        let store = store_with(&[(&[("__name__", "c_total")], &c)]);
        let got = eval(&store, "rate(c_total[1m])", 300_000);
        assert!((got[0].1 - 0.1).abs() < 1e-9, "{got:?}");
        let got = eval(&store, "increase(c_total[1m])", 300_000);
        assert!((got[0].1 - 6.0).abs() < 1e-9, "{got:?}");
    }

    #[test]
    fn unsupported_functions_are_named_at_load_time() {
        let err = parse_supported("histogram_quantile(0.9, rate(x[5m]))").unwrap_err();
        assert!(err.contains("histogram_quantile"), "{err}");
    }
}
