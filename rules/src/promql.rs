//! A PromQL evaluator over [`SeriesStore`], with Prometheus 3 semantics.
//!
//! Expressions are parsed by `promql-parser`; [`check_supported`] rejects at load time
//! anything this engine does not evaluate yet, naming it, so that a rule never gets a
//! silently wrong answer.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
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
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Aggregations this engine evaluates.
const SUPPORTED_AGGREGATIONS: &[&str] = &[
    "limit_ratio",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
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
            if let Some(m) = &b.modifier
                && (m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
            {
                return Err(EvalError::Unsupported("fill modifiers".into()));
            }
            check_supported(&b.lhs)?;
            check_supported(&b.rhs)
        }
        Expr::Paren(p) => check_supported(&p.expr),
        Expr::Subquery(sq) => check_supported(&sq.expr),
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

/// How many instants one evaluation of `expr` evaluates, subqueries counted with their
/// steps (saturating): what a query API bounds before running a tenant's expression on
/// the evaluator, since a subquery such as `x[30d:1ms]` is cheap to write and costly to
/// run.
pub fn evaluation_steps(expr: &Expr) -> u64 {
    match expr {
        Expr::Aggregate(a) => {
            evaluation_steps(&a.expr).saturating_add(a.param.as_deref().map_or(0, evaluation_steps))
        }
        Expr::Unary(u) => evaluation_steps(&u.expr),
        Expr::Binary(b) => evaluation_steps(&b.lhs).saturating_add(evaluation_steps(&b.rhs)),
        Expr::Paren(p) => evaluation_steps(&p.expr),
        Expr::Subquery(s) => {
            let step = s
                .step
                .map(|d| d.as_millis() as u64)
                .unwrap_or(DEFAULT_SUBQUERY_STEP_MS as u64)
                .max(1);
            let steps = (s.range.as_millis() as u64 / step).saturating_add(1);
            steps.saturating_mul(evaluation_steps(&s.expr))
        }
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .map(|a| evaluation_steps(a))
            .fold(1u64, u64::saturating_add),
        _ => 1,
    }
}

/// Evaluates expressions at instants against one store.
pub struct Evaluator<'a> {
    store: &'a SeriesStore,
    /// Signatures the selectors now evaluated may keep (see [`Restriction`]).
    restrictions: std::cell::RefCell<Vec<Restriction>>,
    pushdown: bool,
}

/// While the right side of `small and on (L) big` is evaluated, selectors skip series
/// whose `L` labels match no left-hand sample: they could not survive the `and`. Used
/// only where every path from the right side to its selectors keeps the `L` labels
/// (see [`preserves`]), so the result is the same, with a fraction of the decoding.
struct Restriction {
    names: Vec<String>,
    state: foldhash::fast::RandomState,
    sigs: HashMap<u64, Vec<Labels>, foldhash::fast::RandomState>,
}

impl Restriction {
    fn new(names: &[String], from: &[Sample]) -> Self {
        let mut r = Restriction {
            names: names.to_vec(),
            state: foldhash::fast::RandomState::default(),
            sigs: HashMap::default(),
        };
        for s in from {
            let h = KeyLabels::Only(&r.names).hash(&s.labels, &r.state);
            r.sigs.entry(h).or_default().push(s.labels.clone());
        }
        r
    }

    fn allows(&self, l: &Labels) -> bool {
        let key = KeyLabels::Only(&self.names);
        self.sigs
            .get(&key.hash(l, &self.state))
            .is_some_and(|c| c.iter().any(|k| key.same(k, l)))
    }
}

/// Whether `e` reads a range of samples (a range selector or a subquery): the costly
/// kind of expression over a fleet.
fn reads_ranges(e: &Expr) -> bool {
    match e {
        Expr::MatrixSelector(_) | Expr::Subquery(_) => true,
        Expr::Paren(p) => reads_ranges(&p.expr),
        Expr::Unary(u) => reads_ranges(&u.expr),
        Expr::Binary(b) => reads_ranges(&b.lhs) || reads_ranges(&b.rhs),
        Expr::Aggregate(a) => reads_ranges(&a.expr) || a.param.as_deref().is_some_and(reads_ranges),
        Expr::Call(c) => c.args.args.iter().any(|a| reads_ranges(a)),
        _ => false,
    }
}

/// Whether `e` is one instant selector at the evaluation time, possibly compared with or
/// combined with constants: about the cheapest thing to evaluate first.
fn is_lookup(e: &Expr) -> bool {
    match e {
        Expr::VectorSelector(vs) => vs.offset.is_none() && vs.at.is_none(),
        Expr::Paren(p) => is_lookup(&p.expr),
        Expr::Binary(b) => match (&*b.lhs, &*b.rhs) {
            (Expr::NumberLiteral(_), x) | (x, Expr::NumberLiteral(_)) => is_lookup(x),
            _ => false,
        },
        _ => false,
    }
}

/// Left-hand sides up to this size restrict the right-hand side's selectors.
const RESTRICT_MAX: usize = 4096;

/// Whether restricting every selector under `e` to series whose `names` labels match a
/// set of signatures filters `e`'s output by those signatures and changes nothing else:
/// true when each operation on the way keeps the `names` labels of its input samples
/// and groups or matches series only on labels that include them. Scalar arguments must
/// be constants, since a restricted `scalar(…)` would change value.
fn preserves(e: &Expr, names: &[String]) -> bool {
    use promql_parser::parser::value::ValueType;
    let constant = |e: &Expr| -> bool {
        fn c(e: &Expr) -> bool {
            match e {
                Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
                Expr::Paren(p) => c(&p.expr),
                Expr::Unary(u) => c(&u.expr),
                Expr::Binary(b) => c(&b.lhs) && c(&b.rhs),
                _ => false,
            }
        }
        c(e)
    };
    let subset = |m: Option<&LabelModifier>| match m {
        Some(LabelModifier::Include(on)) => names.iter().all(|n| on.labels.contains(n)),
        Some(LabelModifier::Exclude(ign)) => !names.iter().any(|n| ign.labels.contains(n)),
        None => !names.iter().any(|n| n == METRIC_NAME),
    };
    match e {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => true,
        Expr::Paren(p) => preserves(&p.expr, names),
        Expr::Unary(u) => preserves(&u.expr, names),
        Expr::Binary(b) => {
            let (l, r) = (b.lhs.value_type(), b.rhs.value_type());
            match (l, r) {
                (ValueType::Vector, ValueType::Scalar) => {
                    constant(&b.rhs) && preserves(&b.lhs, names)
                }
                (ValueType::Scalar, ValueType::Vector) => {
                    constant(&b.lhs) && preserves(&b.rhs, names)
                }
                (ValueType::Vector, ValueType::Vector) => {
                    let m = b.modifier.as_ref();
                    let group_labels_ok = m
                        .and_then(|m| m.card.labels())
                        .is_none_or(|inc| !names.iter().any(|n| inc.labels.contains(n)));
                    subset(m.and_then(|m| m.matching.as_ref()))
                        && group_labels_ok
                        && preserves(&b.lhs, names)
                        && preserves(&b.rhs, names)
                }
                _ => false,
            }
        }
        Expr::Aggregate(a) => {
            a.param.as_deref().is_none_or(constant)
                && match &a.modifier {
                    Some(LabelModifier::Include(by)) => names.iter().all(|n| by.labels.contains(n)),
                    Some(LabelModifier::Exclude(w)) => !names
                        .iter()
                        .any(|n| w.labels.contains(n) || n == METRIC_NAME),
                    None => false,
                }
                && preserves(&a.expr, names)
        }
        Expr::Call(c) => {
            let keeps_labels = matches!(
                c.func.name,
                "abs"
                    | "ceil"
                    | "floor"
                    | "round"
                    | "exp"
                    | "ln"
                    | "log2"
                    | "log10"
                    | "sqrt"
                    | "sgn"
                    | "clamp"
                    | "clamp_min"
                    | "clamp_max"
                    | "changes"
                    | "resets"
                    | "rate"
                    | "irate"
                    | "increase"
                    | "delta"
                    | "idelta"
                    | "deriv"
                    | "predict_linear"
                    | "avg_over_time"
                    | "min_over_time"
                    | "max_over_time"
                    | "sum_over_time"
                    | "count_over_time"
                    | "last_over_time"
                    | "present_over_time"
                    | "quantile_over_time"
                    | "stddev_over_time"
                    | "stdvar_over_time"
                    | "mad_over_time"
                    | "timestamp"
                    | "sort"
                    | "sort_desc"
            );
            keeps_labels
                && c.args.args.iter().all(|a| match a.value_type() {
                    ValueType::Vector | ValueType::Matrix => preserves(a, names),
                    _ => constant(a),
                })
        }
        _ => false,
    }
}

impl<'a> Evaluator<'a> {
    /// An evaluator reading `store`.
    pub fn new(store: &'a SeriesStore) -> Self {
        Evaluator {
            store,
            restrictions: std::cell::RefCell::new(Vec::new()),
            pushdown: true,
        }
    }

    /// The same evaluator without restricting right-hand sides: for tests that check
    /// the restriction changes no result.
    #[cfg(test)]
    fn without_pushdown(mut self) -> Self {
        self.pushdown = false;
        self
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
            Expr::Subquery(_) => Ok(Value::Matrix(self.range_of(expr, ts_ms)?.0)),
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
    ) -> Box<dyn Iterator<Item = &'s crate::store::StoredSeries> + 's> {
        let keep = move |s: &&crate::store::StoredSeries| {
            series_matches(&s.labels, matchers)
                && self
                    .restrictions
                    .borrow()
                    .iter()
                    .all(|r| r.allows(&s.labels))
        };
        // Under a restriction, probe the store's index of this metric by the restricted
        // labels instead of scanning every series of the metric.
        if let Some(ids) = name.as_deref().and_then(|n| self.restricted_ids(n)) {
            return Box::new(
                ids.into_iter()
                    .filter_map(|id| self.store.series_by_id(id))
                    .filter(keep),
            );
        }
        Box::new(self.store.series_named(name.as_deref()).filter(keep))
    }

    /// Candidate series ids of `name` for the innermost restriction, in store order.
    fn restricted_ids(&self, name: &str) -> Option<Vec<u32>> {
        let restrictions = self.restrictions.borrow();
        let r = restrictions.last()?;
        let key = KeyLabels::Only(&r.names);
        let state = self.store.key_hasher();
        let index = self
            .store
            .indexed(name, &r.names.join("\u{0}"), |l| key.hash(l, state));
        let mut ids: Vec<u32> = r
            .sigs
            .values()
            .flatten()
            .filter_map(|l| index.get(&key.hash(l, state)))
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }

    fn instant_selector(&self, vs: &VectorSelector, ts_ms: i64) -> Vec<Sample> {
        let mut out = Vec::new();
        self.for_each_instant(vs, ts_ms, |labels, value| {
            out.push(Sample {
                labels: labels.clone(),
                value,
            });
        });
        out
    }

    /// Calls `f` with each selected series' labels and its value at the instant, without
    /// copying labels: aggregations and filters over a fleet copy only what they keep.
    fn for_each_instant(&self, vs: &VectorSelector, ts_ms: i64, mut f: impl FnMut(&Labels, f64)) {
        let t = Self::selector_time(&vs.offset, &vs.at, ts_ms);
        for series in self.matching(&vs.name, &vs.matchers) {
            // Newest sample in (t - lookback, t].
            let Some((st, v)) = series.at_or_before(t) else {
                continue;
            };
            if st <= t - LOOKBACK_MS || is_stale_marker(v) {
                continue;
            }
            f(&series.labels, v);
        }
    }

    fn range_selector(&self, vs: &VectorSelector, range: Duration, ts_ms: i64) -> Vec<RangeSeries> {
        let end = Self::selector_time(&vs.offset, &vs.at, ts_ms);
        let start = end - range.as_millis() as i64;
        let mut out = Vec::new();
        for series in self.matching(&vs.name, &vs.matchers) {
            let mut points = Vec::new();
            series.range_into(start, end, &mut points);
            points.retain(|(_, v)| !is_stale_marker(*v));
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

    fn string(&self, expr: &Expr, ts_ms: i64) -> Result<String, EvalError> {
        match self.eval(expr, ts_ms)? {
            Value::String(s) => Ok(s),
            other => Err(EvalError::Invalid(format!(
                "expected a string, got {}",
                kind(&other)
            ))),
        }
    }

    fn binary(&self, b: &BinaryExpr, ts_ms: i64) -> Result<Value, EvalError> {
        let op = b.op.to_string();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        // `window_fn(…) and on (…) cheap`: the cheap side first. When it is empty, so
        // is the result; otherwise it restricts the window side's selectors.
        if self.pushdown && op == "and" && reads_ranges(&b.lhs) && is_lookup(&b.rhs) {
            let rhs = self.eval(&b.rhs, ts_ms)?;
            let on = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(on)) if !on.labels.is_empty() => Some(&on.labels),
                _ => None,
            };
            let lhs = match (&rhs, on) {
                (Value::Vector(r), _) if r.is_empty() => return Ok(Value::Vector(Vec::new())),
                (Value::Vector(r), Some(on))
                    if r.len() <= RESTRICT_MAX && preserves(&b.lhs, on) =>
                {
                    self.restrictions.borrow_mut().push(Restriction::new(on, r));
                    let lhs = self.eval(&b.lhs, ts_ms);
                    self.restrictions.borrow_mut().pop();
                    lhs?
                }
                _ => self.eval(&b.lhs, ts_ms)?,
            };
            return self.combine(b, &op, return_bool, lhs, rhs);
        }
        // `selector > 0`: filter before copying labels; most series do not pass.
        if b.op.is_comparison_operator()
            && !return_bool
            && let (Expr::VectorSelector(vs), Expr::NumberLiteral(n)) =
                (strip_parens(&b.lhs), strip_parens(&b.rhs))
        {
            let mut out = Vec::new();
            let mut failed = None;
            self.for_each_instant(vs, ts_ms, |labels, v| match apply(&op, v, n.val) {
                Ok(1.0) => out.push(Sample {
                    labels: labels.clone(),
                    value: v,
                }),
                Ok(_) => {}
                Err(e) => failed = Some(e),
            });
            return match failed {
                Some(e) => Err(e),
                None => Ok(Value::Vector(out)),
            };
        }
        let lhs = self.eval(&b.lhs, ts_ms)?;
        // `x and …` and `x unless …` are empty when x is: skip the right-hand side,
        // which in alert rules (`cheap_condition and expensive_context`) is the bulk.
        if matches!(op.as_str(), "and" | "unless")
            && matches!(&lhs, Value::Vector(v) if v.is_empty())
        {
            return Ok(lhs);
        }
        let restriction = match (&lhs, b.modifier.as_ref().and_then(|m| m.matching.as_ref())) {
            (Value::Vector(l), Some(LabelModifier::Include(on)))
                if self.pushdown
                    && matches!(op.as_str(), "and" | "unless")
                    && l.len() <= RESTRICT_MAX
                    && !on.labels.is_empty()
                    && preserves(&b.rhs, &on.labels) =>
            {
                Some(Restriction::new(&on.labels, l))
            }
            _ => None,
        };
        let rhs = match restriction {
            Some(r) => {
                self.restrictions.borrow_mut().push(r);
                let rhs = self.eval(&b.rhs, ts_ms);
                self.restrictions.borrow_mut().pop();
                rhs?
            }
            None => self.eval(&b.rhs, ts_ms)?,
        };
        self.combine(b, &op, return_bool, lhs, rhs)
    }

    fn combine(
        &self,
        b: &BinaryExpr,
        op: &str,
        return_bool: bool,
        lhs: Value,
        rhs: Value,
    ) -> Result<Value, EvalError> {
        let comparison = b.op.is_comparison_operator();
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let v = apply(op, l, r)?;
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
                op,
                comparison,
                return_bool,
                false,
            )?)),
            (Value::Scalar(s), Value::Vector(vs)) => Ok(Value::Vector(vector_scalar(
                vs,
                s,
                op,
                comparison,
                return_bool,
                true,
            )?)),
            (Value::Vector(l), Value::Vector(r)) => Ok(Value::Vector(vector_vector(
                l,
                r,
                b,
                op,
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
        let select = match &a.modifier {
            Some(LabelModifier::Include(names)) => KeyLabels::Only(&names.labels),
            Some(LabelModifier::Exclude(names)) => KeyLabels::AllBut(&names.labels),
            None => KeyLabels::Nothing,
        };
        // `sum by (…) (selector)` and kin: fold values straight from the store.
        if let Expr::VectorSelector(vs) = strip_parens(&a.expr)
            && a.param.is_none()
            && let Some(reduce) = simple_reduce(&op)
        {
            let mut groups: Vec<(Labels, Vec<f64>)> = Vec::new();
            let mut index: KeyIndex<'_, usize> = KeyIndex::new(select);
            self.for_each_instant(vs, ts_ms, |labels, v| {
                let i = match index.get(labels) {
                    Some(i) => *i,
                    None => {
                        groups.push((select.key(labels), Vec::new()));
                        index.insert(labels.clone(), groups.len() - 1);
                        groups.len() - 1
                    }
                };
                groups[i].1.push(v);
            });
            return Ok(Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, values)| Sample {
                        labels,
                        value: reduce(&values),
                    })
                    .collect(),
            ));
        }
        let input = self.vector(&a.expr, ts_ms)?;
        let (param, count_values_label) = match (&a.param, op.as_str()) {
            (Some(p), "count_values") => {
                let label = self.string(p, ts_ms)?;
                if !is_label_name(&label) {
                    return Err(EvalError::Invalid(format!("invalid label name {label:?}")));
                }
                (None, Some(label))
            }
            (Some(p), _) => (Some(self.scalar(p, ts_ms)?), None),
            (None, _) => (None, None),
        };
        let mut groups: Vec<(Labels, Vec<Sample>)> = Vec::new();
        let mut index: KeyIndex<'_, usize> = KeyIndex::new(select);
        for s in input {
            let i = match index.get(&s.labels) {
                Some(i) => *i,
                None => {
                    groups.push((select.key(&s.labels), Vec::new()));
                    index.insert(s.labels.clone(), groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[i].1.push(s);
        }
        let mut out = Vec::new();
        for (key, members) in groups {
            let values: Vec<f64> = members.iter().map(|s| s.value).collect();
            if let Some(reduce) = simple_reduce(&op) {
                out.push(Sample {
                    labels: key,
                    value: reduce(&values),
                });
                continue;
            }
            let value = match op.as_str() {
                "limitk" => {
                    // The first k of each group, in the stable order of the store.
                    let k = param.unwrap_or(0.0);
                    if k >= 1.0 {
                        out.extend(members.into_iter().take(k as usize));
                    }
                    continue;
                }
                "limit_ratio" => {
                    // Prometheus' ratio sampler: a series is kept by where the xxhash of
                    // its labels falls in [0, 1), so the choice is stable over time and
                    // `limit_ratio(r, x)` and `limit_ratio(r - 1, x)` split x in two.
                    let r = param.unwrap_or(f64::NAN).clamp(-1.0, 1.0);
                    out.extend(members.into_iter().filter(|s| {
                        let offset = label_hash(&s.labels) as f64 / u64::MAX as f64;
                        (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
                    }));
                    continue;
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
                "quantile" => quantile(param.unwrap_or(f64::NAN), values),
                "count_values" => {
                    let label = count_values_label.clone().unwrap_or_default();
                    let mut counts: Vec<(String, f64)> = Vec::new();
                    for v in &values {
                        let text = format_value(*v);
                        match counts.iter_mut().find(|(t, _)| *t == text) {
                            Some(c) => c.1 += 1.0,
                            None => counts.push((text, 1.0)),
                        }
                    }
                    for (text, n) in counts {
                        out.push(Sample {
                            labels: key.with(&label, &text),
                            value: n,
                        });
                    }
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
                let labels = match strip_parens(arg(0)?) {
                    Expr::VectorSelector(vs) => absent_labels(vs),
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
                    let Some((st, v)) = series.at_or_before(t) else {
                        continue;
                    };
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
        match name {
            "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
            "sort" | "sort_desc" => {
                let mut v = self.vector(arg(0)?, ts_ms)?;
                v.sort_by(|a, b| {
                    let ord = a
                        .value
                        .partial_cmp(&b.value)
                        .unwrap_or(std::cmp::Ordering::Equal);
                    let ord = if name == "sort_desc" {
                        ord.reverse()
                    } else {
                        ord
                    };
                    a.value.is_nan().cmp(&b.value.is_nan()).then(ord)
                });
                return Ok(Value::Vector(v));
            }
            "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year"
            | "days_in_month" | "month" | "year" => {
                let v = match args.first() {
                    Some(e) => self.vector(e, ts_ms)?,
                    None => vec![Sample {
                        labels: Labels::default(),
                        value: ts_ms as f64 / 1000.0,
                    }],
                };
                return Ok(Value::Vector(map_values(v, |x| date_part(name, x))));
            }
            "label_replace" => {
                let v = self.vector(arg(0)?, ts_ms)?;
                let dst = self.string(arg(1)?, ts_ms)?;
                let replacement = self.string(arg(2)?, ts_ms)?;
                let src = self.string(arg(3)?, ts_ms)?;
                let re_text = self.string(arg(4)?, ts_ms)?;
                let re = regex::Regex::new(&format!("^(?s:{re_text})$")).map_err(|e| {
                    EvalError::Invalid(format!(
                        "label_replace: invalid regular expression {re_text:?}: {e}"
                    ))
                })?;
                if !is_label_name(&dst) {
                    return Err(EvalError::Invalid(format!(
                        "label_replace: invalid destination label name {dst:?}"
                    )));
                }
                let out = v
                    .into_iter()
                    .map(|s| {
                        let value = s.labels.get(&src).unwrap_or_default().to_string();
                        match re.captures(&value) {
                            Some(caps) => {
                                let mut new = String::new();
                                caps.expand(&replacement, &mut new);
                                Sample {
                                    labels: s.labels.with(&dst, &new),
                                    value: s.value,
                                }
                            }
                            None => s,
                        }
                    })
                    .collect();
                return unique(out);
            }
            "label_join" => {
                let v = self.vector(arg(0)?, ts_ms)?;
                let dst = self.string(arg(1)?, ts_ms)?;
                let sep = self.string(arg(2)?, ts_ms)?;
                let mut srcs = Vec::new();
                for e in &args[3..] {
                    srcs.push(self.string(e, ts_ms)?);
                }
                if !is_label_name(&dst) {
                    return Err(EvalError::Invalid(format!(
                        "label_join: invalid destination label name {dst:?}"
                    )));
                }
                let out = v
                    .into_iter()
                    .map(|s| {
                        let joined: Vec<&str> = srcs
                            .iter()
                            .map(|n| s.labels.get(n).unwrap_or_default())
                            .collect();
                        Sample {
                            labels: s.labels.with(&dst, &joined.join(&sep)),
                            value: s.value,
                        }
                    })
                    .collect();
                return unique(out);
            }
            "histogram_quantile" => {
                let q = self.scalar(arg(0)?, ts_ms)?;
                let v = self.vector(arg(1)?, ts_ms)?;
                let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
                let mut index: HashMap<Labels, usize> = HashMap::new();
                for s in v {
                    // Series without a parseable `le` are not buckets and are ignored.
                    let Some(le) = s.labels.get("le").and_then(parse_le) else {
                        continue;
                    };
                    let key = s.labels.without_name().filter(|n| n != "le");
                    let i = *index.entry(key.clone()).or_insert_with(|| {
                        groups.push((key, Vec::new()));
                        groups.len() - 1
                    });
                    groups[i].1.push((le, s.value));
                }
                return Ok(Value::Vector(
                    groups
                        .into_iter()
                        .map(|(labels, buckets)| Sample {
                            labels,
                            value: bucket_quantile(q, buckets),
                        })
                        .collect(),
                ));
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
        // Range-vector functions: the range argument is a selector or a subquery.
        let range_arg = args
            .iter()
            .position(|a| matches!(strip_parens(a), Expr::MatrixSelector(_) | Expr::Subquery(_)))
            .ok_or_else(|| EvalError::Invalid(format!("{name}: expected a range vector")))?;
        let scalar_arg = |i: usize| -> Result<f64, EvalError> { self.scalar(arg(i)?, ts_ms) };
        let param = match name {
            "quantile_over_time" | "predict_linear" => {
                Some(scalar_arg(if range_arg == 0 { 1 } else { 0 })?)
            }
            _ => None,
        };
        let keep_name = name == "last_over_time";
        let mut out = Vec::new();
        // A plain selector streams: each series is decoded into one reused buffer and
        // reduced at once, never held as a range vector.
        if let Expr::MatrixSelector(ms) = strip_parens(&args[range_arg])
            && name != "absent_over_time"
        {
            let end = Self::selector_time(&ms.vs.offset, &ms.vs.at, ts_ms);
            let start = end - ms.range.as_millis() as i64;
            let mut p = Vec::new();
            for series in self.matching(&ms.vs.name, &ms.vs.matchers) {
                p.clear();
                series.range_into(start, end, &mut p);
                p.retain(|(_, v)| !is_stale_marker(*v));
                if p.is_empty() {
                    continue;
                }
                if let Some(value) = range_function(name, &p, start, end, param, ts_ms)? {
                    let labels = if keep_name {
                        series.labels.clone()
                    } else {
                        series.labels.without_name()
                    };
                    out.push(Sample { labels, value });
                }
            }
            return Ok(Value::Vector(out));
        }
        let (series, start, end) = self.range_of(strip_parens(&args[range_arg]), ts_ms)?;
        if name == "absent_over_time" {
            if !series.is_empty() {
                return Ok(Value::Vector(vec![]));
            }
            let labels = match strip_parens(&args[range_arg]) {
                Expr::MatrixSelector(ms) => absent_labels(&ms.vs),
                _ => Labels::default(),
            };
            return Ok(Value::Vector(vec![Sample { labels, value: 1.0 }]));
        }
        for rs in series {
            let Some(value) = range_function(name, &rs.points, start, end, param, ts_ms)? else {
                continue;
            };
            let labels = if keep_name {
                rs.labels
            } else {
                rs.labels.without_name()
            };
            out.push(Sample { labels, value });
        }
        Ok(Value::Vector(out))
    }

    /// The series of a range argument and the window `(start, end]` it covers.
    fn range_of(&self, e: &Expr, ts_ms: i64) -> Result<(Vec<RangeSeries>, i64, i64), EvalError> {
        match e {
            Expr::MatrixSelector(ms) => {
                let end = Self::selector_time(&ms.vs.offset, &ms.vs.at, ts_ms);
                Ok((
                    self.range_selector(&ms.vs, ms.range, ts_ms),
                    end - ms.range.as_millis() as i64,
                    end,
                ))
            }
            Expr::Subquery(sq) => {
                let end = Self::selector_time(&sq.offset, &sq.at, ts_ms);
                let range = sq.range.as_millis() as i64;
                let step = sq
                    .step
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(DEFAULT_SUBQUERY_STEP_MS)
                    .max(1);
                let start = end - range;
                // Steps aligned to multiples of `step`, in (start, end].
                let mut t = start.div_euclid(step) * step;
                if t <= start {
                    t += step;
                }
                let mut by_labels: HashMap<Labels, usize> = HashMap::new();
                let mut out: Vec<RangeSeries> = Vec::new();
                while t <= end {
                    let samples = match self.eval(&sq.expr, t)? {
                        Value::Vector(v) => v,
                        Value::Scalar(x) => vec![Sample {
                            labels: Labels::default(),
                            value: x,
                        }],
                        other => {
                            return Err(EvalError::Invalid(format!(
                                "subquery of a {}",
                                kind(&other)
                            )));
                        }
                    };
                    for smp in samples {
                        let i = *by_labels.entry(smp.labels.clone()).or_insert_with(|| {
                            out.push(RangeSeries {
                                labels: smp.labels.clone(),
                                points: Vec::new(),
                            });
                            out.len() - 1
                        });
                        out[i].points.push((t, smp.value));
                    }
                    t += step;
                }
                Ok((out, start, end))
            }
            _ => Err(EvalError::Invalid("expected a range vector".into())),
        }
    }
}

/// Resolution of a subquery without an explicit step: Prometheus uses the global
/// evaluation interval, whose default is one minute.
pub const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// A range-vector function over one series' points in `(start, end]`; `None` when it
/// yields no sample for that series.
fn range_function(
    name: &str,
    p: &[(i64, f64)],
    start: i64,
    end: i64,
    param: Option<f64>,
    ts_ms: i64,
) -> Result<Option<f64>, EvalError> {
    let values = || p.iter().map(|x| x.1).collect::<Vec<_>>();
    Ok(match name {
        "changes" => Some(p.windows(2).filter(|w| !same(w[0].1, w[1].1)).count() as f64),
        "resets" => Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
        "count_over_time" => Some(p.len() as f64),
        "present_over_time" => Some(1.0),
        "last_over_time" => p.last().map(|x| x.1),
        "sum_over_time" => Some(kahan_sum(&values())),
        "avg_over_time" => Some(mean(&values())),
        "min_over_time" => Some(p.iter().map(|x| x.1).fold(f64::NAN, nan_min)),
        "max_over_time" => Some(p.iter().map(|x| x.1).fold(f64::NAN, nan_max)),
        "stddev_over_time" => Some(variance(&values()).sqrt()),
        "stdvar_over_time" => Some(variance(&values())),
        "quantile_over_time" => Some(quantile(param.unwrap_or(f64::NAN), values())),
        "mad_over_time" => {
            let v = values();
            let median = quantile(0.5, v.clone());
            Some(quantile(
                0.5,
                v.iter().map(|x| (x - median).abs()).collect(),
            ))
        }
        "rate" => extrapolated(p, start, end, true, true),
        "increase" => extrapolated(p, start, end, true, false),
        "delta" => extrapolated(p, start, end, false, false),
        "irate" | "idelta" => instant_delta(p, name == "irate"),
        "deriv" => (p.len() >= 2).then(|| linear_regression(p, p[0].0).0),
        "predict_linear" => (p.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(p, ts_ms);
            intercept + slope * param.unwrap_or(0.0)
        }),
        other => return Err(EvalError::Unsupported(format!("function {other}"))),
    })
}

/// The labels `absent()` reports for a selector: its equality matchers, except labels
/// matched more than once.
fn absent_labels(vs: &VectorSelector) -> Labels {
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

/// Prometheus' `quantile`: linear interpolation between the closest ranks.
fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

/// Least-squares fit with times in seconds relative to `intercept_ms`, as Prometheus'
/// `linearRegression`; returns `(slope, intercept)`.
fn linear_regression(p: &[(i64, f64)], intercept_ms: i64) -> (f64, f64) {
    let n = p.len() as f64;
    let init = p[0].1;
    let const_y = p.iter().all(|x| x.1 == init);
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (t, v) in p {
        let x = (t - intercept_ms) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(*v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Prometheus' `histogram_quantile` over classic buckets `(le, cumulative count)`.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Merge buckets with the same bound, then force counts to be monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (le, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => merged.push((le, c)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 < max {
            b.1 = max;
        } else {
            max = b.1;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged.partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Date parts of Unix seconds, in UTC.
fn date_part(name: &str, secs: f64) -> f64 {
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let rem = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match name {
        "minute" => ((rem / 60) % 60) as f64,
        "hour" => (rem / 3600) as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_month" => d as f64,
        "day_of_year" => (days - days_from_civil(y, 1, 1) + 1) as f64,
        "month" => m as f64,
        "year" => y as f64,
        _ => {
            // days_in_month
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as f64
        }
    }
}

// Howard Hinnant's civil-date algorithms.
pub(crate) use foresight_template::civil_from_days;

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats a value as Go's `strconv.FormatFloat(v, 'f', -1, 64)`, as Prometheus writes
/// sample values in its API and `le`/`quantile` label values.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// Fails when two samples share a label set, as Prometheus does after relabelling.
fn unique(v: Vec<Sample>) -> Result<Value, EvalError> {
    let mut seen = HashSet::new();
    for s in &v {
        if !seen.insert(&s.labels) {
            return Err(EvalError::Invalid(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(Value::Vector(v))
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
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
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

/// The series of `store` a series selector (`up{job="kafka"}`) selects, whatever their
/// samples' times: what the query API's `series`, `labels` and label values list.
pub fn selected_series<'a>(
    store: &'a SeriesStore,
    selector: &'a promql_parser::parser::VectorSelector,
) -> impl Iterator<Item = &'a crate::store::StoredSeries> + 'a {
    store
        .series_named(selector.name.as_deref())
        .filter(move |s| series_matches(&s.labels, &selector.matchers))
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

/// The aggregations that need only their group's values.
fn simple_reduce(op: &str) -> Option<fn(&[f64]) -> f64> {
    Some(match op {
        "sum" => kahan_sum,
        "min" => |v| v.iter().copied().fold(f64::NAN, nan_min),
        "max" => |v| v.iter().copied().fold(f64::NAN, nan_max),
        "avg" => mean,
        "count" => |v| v.len() as f64,
        "group" => |_| 1.0,
        "stddev" => |v| variance(v).sqrt(),
        "stdvar" => variance,
        _ => return None,
    })
}

/// Prometheus' `labels.Hash`: xxHash64 over `name 0xff value 0xff` for each label.
fn label_hash(l: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (n, v) in l.iter() {
        h.update(n.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
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
        "atan2" => l.atan2(r),
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

/// Which labels form a grouping key or a matching signature.
#[derive(Clone, Copy)]
enum KeyLabels<'a> {
    /// `by` / `on`: only these.
    Only(&'a [String]),
    /// `without` / `ignoring`: all but these and the metric name.
    AllBut(&'a [String]),
    /// Default vector matching: all but the metric name and its type and unit.
    AllButName,
    /// An aggregation without `by` or `without`: one group.
    Nothing,
}

impl<'a> KeyLabels<'a> {
    fn matching(m: Option<&'a LabelModifier>) -> Self {
        match m {
            Some(LabelModifier::Include(on)) => KeyLabels::Only(&on.labels),
            Some(LabelModifier::Exclude(ign)) => KeyLabels::AllBut(&ign.labels),
            None => KeyLabels::AllButName,
        }
    }

    fn keeps(&self, n: &str) -> bool {
        match self {
            KeyLabels::Only(names) => names.iter().any(|x| x == n),
            KeyLabels::AllBut(names) => n != METRIC_NAME && !names.iter().any(|x| x == n),
            KeyLabels::AllButName => n != METRIC_NAME && n != "__type__" && n != "__unit__",
            KeyLabels::Nothing => false,
        }
    }

    /// The key as a label set (built once per group, not per series).
    fn key(&self, l: &Labels) -> Labels {
        match self {
            KeyLabels::AllButName => l.without_name(),
            KeyLabels::Nothing => Labels::default(),
            _ => l.filter(|n| self.keeps(n)),
        }
    }

    fn hash(&self, l: &Labels, state: &foldhash::fast::RandomState) -> u64 {
        let mut h = state.build_hasher();
        let mut put = |n: &str, v: &str| {
            h.write(n.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xff);
        };
        match self {
            // A few names: look each up rather than walk the set.
            KeyLabels::Only(names) => {
                for n in *names {
                    put(n, l.get(n).unwrap_or_default());
                }
            }
            KeyLabels::Nothing => {}
            _ => {
                for (n, v) in l.iter_without_name().filter(|(n, _)| self.keeps(n)) {
                    put(n, v);
                }
            }
        }
        h.finish()
    }

    fn same(&self, a: &Labels, b: &Labels) -> bool {
        match self {
            KeyLabels::Only(names) => names.iter().all(|n| a.get(n) == b.get(n)),
            KeyLabels::Nothing => true,
            _ => a
                .iter_without_name()
                .filter(|(n, _)| self.keeps(n))
                .eq(b.iter_without_name().filter(|(n, _)| self.keeps(n))),
        }
    }
}

/// Series indexed by their key labels, hashed in place: the key is never built for a
/// lookup, which is most of the cost of `and on (…)` and `sum by (…)` over a fleet.
/// Entries live in one vector, chained on hash collisions, so an insert allocates nothing
/// of its own.
struct KeyIndex<'k, V> {
    select: KeyLabels<'k>,
    state: foldhash::fast::RandomState,
    /// Hash to the newest entry with that hash.
    heads: HashMap<u64, u32, foldhash::fast::RandomState>,
    /// (labels, value, previous entry with the same hash or `u32::MAX`).
    entries: Vec<(Labels, V, u32)>,
}

impl<'k, V> KeyIndex<'k, V> {
    fn new(select: KeyLabels<'k>) -> Self {
        KeyIndex {
            select,
            state: foldhash::fast::RandomState::default(),
            heads: HashMap::default(),
            entries: Vec::new(),
        }
    }

    fn find(&self, h: u64, l: &Labels) -> Option<usize> {
        let mut i = *self.heads.get(&h)?;
        while i != u32::MAX {
            let (k, _, prev) = &self.entries[i as usize];
            if self.select.same(k, l) {
                return Some(i as usize);
            }
            i = *prev;
        }
        None
    }

    fn get(&self, l: &Labels) -> Option<&V> {
        let h = self.select.hash(l, &self.state);
        self.find(h, l).map(|i| &self.entries[i].1)
    }

    fn get_mut(&mut self, l: &Labels) -> Option<&mut V> {
        let h = self.select.hash(l, &self.state);
        self.find(h, l).map(|i| &mut self.entries[i].1)
    }

    fn contains(&self, l: &Labels) -> bool {
        self.get(l).is_some()
    }

    /// Inserts unless the key is present; returns whether it was inserted.
    fn insert(&mut self, l: Labels, v: V) -> bool {
        let h = self.select.hash(&l, &self.state);
        if self.find(h, &l).is_some() {
            return false;
        }
        let idx = self.entries.len() as u32;
        let prev = self.heads.insert(h, idx).unwrap_or(u32::MAX);
        self.entries.push((l, v, prev));
        true
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
    let select = KeyLabels::matching(matching);
    if b.op.is_set_operator() {
        let mut rsigs = KeyIndex::new(select);
        for s in &rhs {
            rsigs.insert(s.labels.clone(), ());
        }
        return Ok(match op {
            "and" => lhs
                .into_iter()
                .filter(|s| rsigs.contains(&s.labels))
                .collect(),
            "unless" => lhs
                .into_iter()
                .filter(|s| !rsigs.contains(&s.labels))
                .collect(),
            _ => {
                let mut lsigs = KeyIndex::new(select);
                for s in &lhs {
                    lsigs.insert(s.labels.clone(), ());
                }
                let mut out = lhs;
                out.extend(rhs.into_iter().filter(|s| !lsigs.contains(&s.labels)));
                out
            }
        });
    }
    // The "one" side is indexed by signature; for group_right it is the left.
    let (one, many, swapped) = match card {
        VectorMatchCardinality::OneToMany(_) => (lhs, rhs, true),
        _ => (rhs, lhs, false),
    };
    // Each "one" sample, and whether a one-to-one match has used it.
    let mut one_by_sig: KeyIndex<'_, (Sample, bool)> = KeyIndex::new(select);
    for s in one {
        let labels = s.labels.clone();
        if !one_by_sig.insert(labels.clone(), (s, false)) {
            return Err(EvalError::Invalid(format!(
                "found duplicate series for the match group {} on the {} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side",
                select.key(&labels),
                if swapped { "left" } else { "right" }
            )));
        }
    }
    let drop_name = !comparison || return_bool;
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut out = Vec::new();
    for s in many {
        let Some((other, used)) = one_by_sig.get_mut(&s.labels) else {
            continue;
        };
        // As Prometheus: a signature matched twice one-to-one is an error.
        if one_to_one {
            if *used {
                return Err(EvalError::Invalid(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                        .into(),
                ));
            }
            *used = true;
        }
        let other = &*other;
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
    fn restricting_the_right_side_of_and_on_changes_no_result() {
        let mut series: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
        for c in ["a", "b"] {
            for p in 0..6 {
                let l = |name: &str| {
                    Labels::new([
                        ("__name__".to_string(), name.to_string()),
                        ("cluster".to_string(), c.to_string()),
                        ("partition".to_string(), p.to_string()),
                        ("broker".to_string(), (p % 3).to_string()),
                    ])
                };
                let pts = |f: &dyn Fn(i64) -> f64| (0..20).map(|i| (i * 30_000, f(i))).collect();
                series.push((
                    l("lag"),
                    pts(&|i| if p % 2 == 0 { 0.0 } else { (i * p) as f64 }),
                ));
                series.push((
                    l("lso"),
                    pts(&|i| if p == 3 { 5.0 } else { (i + p) as f64 }),
                ));
                series.push((l("size"), pts(&|i| (i * 10 + p) as f64)));
            }
        }
        let mut store = SeriesStore::new(i64::MAX / 4);
        for (l, pts) in &series {
            for (t, v) in pts {
                store.append(l, *t, *v);
            }
        }
        let exprs = [
            "lag > 0 and on (cluster, partition) changes(lso[5m]) == 0",
            "lag > 0 and on (cluster, partition) lso == lso offset 5m",
            "lag > 0 unless on (cluster, partition) lso > 10",
            "lag > 0 and on (cluster) sum by (cluster) (size) > 100",
            "lag > 0 and on (cluster, broker) max by (cluster, broker) (size)",
            "lag > 0 and on (cluster) sum by (broker) (size)",
            // Would change if restricted: scalar() of the whole fleet, and a label
            // made by label_replace.
            "lag > 0 and on (cluster, partition) (size > scalar(sum(size)) / 10)",
            "lag > 0 and on (cluster, partition) label_replace(size{partition=\"0\"}, \"partition\", \"1\", \"partition\", \".*\")",
            "lag > 0 and on (cluster, partition) lso * on (cluster, partition) group_left size",
            "(lag > 0 and on (cluster, partition) rate(size[5m]) > 0) and on (cluster) topk by (cluster) (1, size)",
            "lag > 0 and on (cluster) absent(nothing{cluster=\"a\"})",
            // The cheap side first.
            "changes(lso[5m]) == 0 and on (cluster, partition) lag > 0",
            "rate(size[5m]) > 0 and on (cluster) lag{cluster=\"a\"} > 0",
            "rate(size[5m]) > 0 and on (cluster) nothing",
            "(size > scalar(sum(sum_over_time(size[5m]))) / 40) and on (cluster, partition) lag > 0",
        ];
        for e in exprs {
            let parsed = parse_supported(e).unwrap();
            for t in [300_000, 570_000] {
                let fast = Evaluator::new(&store).eval(&parsed, t);
                let plain = Evaluator::new(&store).without_pushdown().eval(&parsed, t);
                assert_eq!(fast, plain, "{e} at {t}");
            }
        }
    }

    #[test]
    fn a_restricted_lookup_sees_series_added_after_its_index_was_built() {
        let mut store = SeriesStore::new(i64::MAX / 4);
        let l = |name: &str, p: &str| {
            Labels::new([
                ("__name__".to_string(), name.to_string()),
                ("partition".to_string(), p.to_string()),
            ])
        };
        store.append(&l("lag", "1"), 0, 5.0);
        store.append(&l("lso", "0"), 0, 1.0);
        let q = parse_supported("lag > 0 and on (partition) lso").unwrap();
        let got = |store: &SeriesStore| match Evaluator::new(store).eval(&q, 0).unwrap() {
            Value::Vector(v) => v.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got(&store), 0);
        store.append(&l("lso", "1"), 0, 1.0);
        assert_eq!(got(&store), 1);
    }

    #[test]
    fn limit_ratio_splits_series_stably_and_completely() {
        let names: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let labels: Vec<[(&str, &str); 2]> = names
            .iter()
            .map(|i| [("__name__", "x"), ("i", i.as_str())])
            .collect();
        let points = [(0_i64, 1.0)];
        let specs: Vec<SeriesSpec<'_>> = labels.iter().map(|l| (&l[..], &points[..])).collect();
        let store = store_with(&specs);
        let half = eval(&store, "limit_ratio(0.5, x)", 0);
        let rest = eval(&store, "limit_ratio(-0.5, x)", 0);
        assert!((60..140).contains(&half.len()), "{}", half.len());
        assert_eq!(half.len() + rest.len(), 200);
        assert!(half.iter().all(|h| !rest.contains(h)));
        assert_eq!(eval(&store, "limit_ratio(1, x)", 0).len(), 200);
        assert!(eval(&store, "limit_ratio(0, x)", 0).is_empty());
        // Known value: Prometheus keeps x{i="…"} when xxhash64 / 2^64 < r.
        let l = Labels::new([("__name__".to_string(), "x".to_string())]);
        assert_eq!(
            label_hash(&l),
            xxhash_rust::xxh64::xxh64(b"__name__\xffx\xff", 0)
        );
    }

    #[test]
    fn unsupported_functions_are_named_at_load_time() {
        let err = parse_supported("histogram_fraction(0, 0.2, rate(x[5m]))").unwrap_err();
        assert!(err.contains("histogram_fraction"), "{err}");
    }
}
