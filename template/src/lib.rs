//! Go `text/template`, as Prometheus uses it for alert labels and annotations.
//!
//! No maintained Rust crate renders Go templates the way Go does (missing map keys,
//! `printf` verbs, number formatting), and rule authors copy annotations between
//! Prometheus and Foresight, so this module implements the language itself: actions and
//! pipelines, variables (`$labels`, `$value`, `$externalLabels`, `$externalURL`, `$`,
//! and `:=`/`=`), `if`/`else if`/`else`, `with`, `range`, `define`/`template`, comments, trim markers, Go's
//! built-in functions and Prometheus' template functions. An unknown function or keyword
//! is an error when the rule loads; an error while rendering becomes the text
//! `<error expanding template: …>`, as in Prometheus.
//!
//! The same engine renders notification messages with Alertmanager's data (`.Status`,
//! `.Alerts`, `.Alerts.Firing`, `.CommonLabels`, …) given as JSON in [`Context::data`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;

/// One sample of a `query` result.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    /// The series' labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Runs a PromQL expression for the `query` function, at the evaluation time.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<QuerySample>, String>;

/// What a template may refer to.
pub struct Context<'a> {
    /// The alert's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Labels of the whole installation.
    pub external_labels: &'a BTreeMap<String, String>,
    /// The expression's value.
    pub value: f64,
    /// The `query` function; `None` where no store is at hand (it then fails).
    pub query: Option<QueryFn<'a>>,
    /// Data for `.` instead of the alert's: a JSON object whose fields the template
    /// reads (`.CommonLabels.alertname`), as Alertmanager's notification templates do.
    pub data: Option<&'a serde_json::Value>,
}

impl<'a> Context<'a> {
    /// A context whose `.` is `data`, for notification templates.
    pub fn with_data(data: &'a serde_json::Value, empty: &'a BTreeMap<String, String>) -> Self {
        Context {
            labels: empty,
            external_labels: empty,
            value: 0.0,
            query: None,
            data: Some(data),
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
    /// `{{define "name"}}` bodies, for `{{template "name" .}}`.
    defines: BTreeMap<String, Vec<Node>>,
    /// The text as written, for APIs that show rules as configured.
    source: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    /// `if`/`with`: branches tried in order, then the else part.
    If {
        with: bool,
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    /// `{{define "name"}}…{{end}}`, taken out of the tree when parsing.
    Define {
        name: String,
        body: Vec<Node>,
    },
    /// `{{template "name" pipeline}}`.
    Call {
        name: String,
        pipe: Option<Pipeline>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`) with the result.
    vars: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `.` followed by field names.
    Dot(Vec<String>),
    /// A variable followed by field names.
    Var(String, Vec<String>),
    Lit(Val),
    Func(String),
    Sub(Box<Pipeline>, Vec<String>),
}

/// A template value. Numbers keep Go's distinction between integer constants and
/// float64, which `printf` verbs and comparisons observe.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Map(BTreeMap<String, String>),
    Sample(QuerySample),
    List(Vec<QuerySample>),
    /// A JSON object or array from [`Context::data`].
    Json(serde_json::Value),
    /// The data passed to the template: `.Labels`, `.ExternalLabels`, `.Value`.
    Root,
}

/// Parses a Prometheus duration such as `5m`, `1h30m` or `20s`.
///
/// # Errors
/// A message naming the bad duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    // Prometheus accepts a zero duration (`0`, `0s`, `0m`); promql-parser does not.
    if s.trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .bytes()
        .all(|b| b == b'0')
        && s.trim().starts_with('0')
    {
        return Ok(std::time::Duration::ZERO);
    }
    promql_parser::util::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// Howard Hinnant's days-to-civil: `(year, month, day)` of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A JSON value as a template value: containers stay JSON, scalars become Go's.
fn from_json(v: &serde_json::Value) -> Val {
    use serde_json::Value as J;
    match v {
        J::Null => Val::Nil,
        J::Bool(b) => Val::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Val::Int(i),
            None => Val::Float(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Val::Str(s.clone()),
        other => Val::Json(other.clone()),
    }
}

const BUILTINS: &[&str] = &[
    "and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne", "lt", "le", "gt",
    "ge", "html", "js", "urlquery",
];

const PROMETHEUS_FUNCS: &[&str] = &[
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toUpper",
    "toLower",
    "title",
    "reReplaceAll",
    "match",
    "safeHtml",
    "stripPort",
    "stripDomain",
    "parseDuration",
    "externalURL",
    "pathPrefix",
];

/// Template text that does not parse: the malformed action, unknown function or
/// unsupported keyword, for the operator who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl Template {
    /// Parses template text.
    ///
    /// # Errors
    /// [`ParseError`] naming the malformed action, unknown function or unsupported
    /// keyword.
    pub fn parse(text: &str) -> Result<Template, ParseError> {
        Template::parse_text(text).map_err(ParseError)
    }

    fn parse_text(text: &str) -> Result<Template, String> {
        let items = split(text)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&items, &mut pos)?;
        if let Some(k) = end {
            return Err(format!("unexpected {{{{{k}}}}}"));
        }
        let mut defines = BTreeMap::new();
        let nodes = nodes
            .into_iter()
            .filter_map(|n| match n {
                Node::Define { name, body } => {
                    defines.insert(name, body);
                    None
                }
                other => Some(other),
            })
            .collect();
        Ok(Template {
            nodes,
            defines,
            source: text.to_string(),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Adds the `define`d templates of `library` that this one does not define itself,
    /// as Go's template sets share definitions.
    pub fn with_library(mut self, library: &Template) -> Template {
        for (name, body) in &library.defines {
            self.defines
                .entry(name.clone())
                .or_insert_with(|| body.clone());
        }
        self
    }

    /// Names of the templates this one defines.
    pub fn defined(&self) -> impl Iterator<Item = &str> {
        self.defines.keys().map(String::as_str)
    }

    /// Renders with `ctx`; an error while rendering is reported in the text, as
    /// Prometheus does, so that an alert still goes out.
    pub fn render(&self, ctx: &Context<'_>) -> String {
        let root = ctx.data.map_or(Val::Root, from_json);
        let mut exec = Exec {
            ctx,
            defines: &self.defines,
            vars: vec![
                ("$".into(), root.clone()),
                ("$labels".into(), Val::Map(ctx.labels.clone())),
                (
                    "$externalLabels".into(),
                    Val::Map(ctx.external_labels.clone()),
                ),
                ("$externalURL".into(), Val::Str(String::new())),
                ("$value".into(), Val::Float(ctx.value)),
            ],
            out: String::new(),
            steps: 0,
        };
        match exec.nodes(&self.nodes, &root) {
            Ok(()) => exec.out,
            Err(e) => format!("<error expanding template: {e}>"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lexing and parsing

#[derive(Debug)]
enum Item {
    Text(String),
    Action(String),
}

/// Splits text into literal text and action bodies, applying `{{-` and `-}}` and
/// dropping comments.
fn split(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut lit = &rest[..open];
        if trim_next {
            lit = lit.trim_start();
        }
        let mut body = &rest[open + 2..];
        if body.starts_with("- ") || body.starts_with("-\t") || body.starts_with("-\n") {
            lit = lit.trim_end();
            body = &body[1..];
        }
        if !lit.is_empty() {
            items.push(Item::Text(lit.to_string()));
        }
        let close = find_close(body).ok_or_else(|| format!("unclosed action in {text:?}"))?;
        let mut inner = &body[..close];
        rest = &body[close + 2..];
        trim_next = false;
        if inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-") {
            inner = &inner[..inner.len() - 1];
            trim_next = true;
        }
        let inner = inner.trim();
        if inner.starts_with("/*") {
            if !inner.ends_with("*/") {
                return Err("unclosed comment".into());
            }
            continue;
        }
        items.push(Item::Action(inner.to_string()));
    }
    let lit = if trim_next { rest.trim_start() } else { rest };
    if !lit.is_empty() {
        items.push(Item::Text(lit.to_string()));
    }
    Ok(items)
}

/// The position of the `}}` closing an action, skipping quoted strings.
fn find_close(body: &str) -> Option<usize> {
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Var(String),
    /// A field name; `true` when it follows the previous token without a space.
    Field(String, bool),
    Dot,
    Str(String),
    Num(Val),
    LParen,
    RParen(bool),
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let attached = i > 0 && !c[i - 1].is_whitespace();
        match ch {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen(true));
                i += 1;
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if c.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match c.get(i) {
                        None => return Err("unterminated quoted string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match c.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some('r') => s.push('\r'),
                                Some('\\') => s.push('\\'),
                                Some('"') => s.push('"'),
                                Some(o) => return Err(format!("unknown escape \\{o}")),
                                None => return Err("unterminated quoted string".into()),
                            }
                        }
                        Some(o) => s.push(*o),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Str(s));
            }
            '`' => {
                let start = i + 1;
                i = start;
                while i < c.len() && c[i] != '`' {
                    i += 1;
                }
                if i == c.len() {
                    return Err("unterminated raw string".into());
                }
                out.push(Tok::Str(c[start..i].iter().collect()));
                i += 1;
            }
            '$' => {
                let start = i;
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                out.push(Tok::Var(c[start..i].iter().collect()));
            }
            '.' if c.get(i + 1).is_some_and(|n| n.is_alphabetic() || *n == '_') => {
                let start = i + 1;
                i = start;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                let attached = attached
                    && matches!(
                        out.last(),
                        Some(Tok::Var(_) | Tok::Field(..) | Tok::RParen(_))
                    );
                out.push(Tok::Field(c[start..i].iter().collect(), attached));
            }
            '.' if !c.get(i + 1).is_some_and(|n| n.is_ascii_digit()) => {
                out.push(Tok::Dot);
                i += 1;
            }
            _ if ch.is_ascii_digit() || ch == '-' || ch == '+' || ch == '.' => {
                let start = i;
                i += 1;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.' || c[i] == '_') {
                    // Exponent signs: 1e-3.
                    i += 1;
                    if matches!(c[i - 1], 'e' | 'E')
                        && matches!(c.get(i), Some('-' | '+'))
                        && !c[start..i].iter().any(|x| *x == 'x' || *x == 'X')
                    {
                        i += 1;
                    }
                }
                let text: String = c[start..i].iter().collect();
                out.push(Tok::Num(parse_number(&text)?));
            }
            _ if ident_char(ch) => {
                let start = i;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected {other:?} in action")),
        }
    }
    Ok(out)
}

fn parse_number(text: &str) -> Result<Val, String> {
    let clean = text.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let int = if let Some(h) = digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if digits.contains(['.', 'e', 'E']) {
        None
    } else {
        digits.parse::<i64>().ok()
    };
    if let Some(n) = int {
        return Ok(Val::Int(if neg { -n } else { n }));
    }
    clean
        .parse::<f64>()
        .map(Val::Float)
        .map_err(|_| format!("bad number syntax: {text:?}"))
}

/// Parses items into nodes until `end`, `else…` or the end of input; returns the
/// terminating keyword action, if any.
fn parse_list(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        *pos += 1;
        match item {
            Item::Text(t) => nodes.push(Node::Text(t.clone())),
            Item::Action(a) => {
                let (kw, rest) = split_keyword(a);
                match kw {
                    "end" | "else" => return Ok((nodes, Some(a.clone()))),
                    "if" | "with" => nodes.push(parse_if(items, pos, kw == "with", rest)?),
                    "range" => {
                        let pipe = parse_pipeline(rest, true)?;
                        let (body, end) = parse_list(items, pos)?;
                        let otherwise = match end.as_deref().map(split_keyword) {
                            Some(("end", "")) => Vec::new(),
                            Some(("else", "")) => expect_end(items, pos)?,
                            _ => return Err("range without matching {{end}}".into()),
                        };
                        nodes.push(Node::Range {
                            pipe,
                            body,
                            otherwise,
                        });
                    }
                    "define" => {
                        let (name, tail) = leading_string(rest)?;
                        if !tail.trim().is_empty() {
                            return Err(format!("unexpected {tail:?} in {{{{define}}}}"));
                        }
                        let body = expect_end(items, pos)?;
                        nodes.push(Node::Define { name, body });
                    }
                    "template" => {
                        let (name, tail) = leading_string(rest)?;
                        let pipe = if tail.trim().is_empty() {
                            None
                        } else {
                            Some(parse_pipeline(tail, false)?)
                        };
                        nodes.push(Node::Call { name, pipe });
                    }
                    "block" | "break" | "continue" => {
                        return Err(format!("{{{{{kw}}}}} is not supported in rule templates"));
                    }
                    _ => nodes.push(Node::Action(parse_pipeline(a, true)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

/// The quoted name that starts `rest` (`"name"` or a raw string), and what follows.
fn leading_string(rest: &str) -> Result<(String, &str), String> {
    let r = rest.trim_start();
    let quote = r
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '`')
        .ok_or_else(|| format!("expected a quoted template name, got {rest:?}"))?;
    let end = r[1..]
        .find(quote)
        .ok_or_else(|| format!("unterminated template name in {rest:?}"))?;
    Ok((r[1..1 + end].to_string(), &r[end + 2..]))
}

fn expect_end(items: &[Item], pos: &mut usize) -> Result<Vec<Node>, String> {
    let (nodes, end) = parse_list(items, pos)?;
    match end.as_deref().map(split_keyword) {
        Some(("end", "")) => Ok(nodes),
        Some((k, _)) => Err(format!("unexpected {{{{{k}}}}} after {{{{else}}}}")),
        None => Err("missing {{end}}".into()),
    }
}

fn parse_if(items: &[Item], pos: &mut usize, with: bool, cond: &str) -> Result<Node, String> {
    let kw = if with { "with" } else { "if" };
    let mut branches = vec![(parse_pipeline(cond, true)?, Vec::new())];
    loop {
        let (body, end) = parse_list(items, pos)?;
        branches.last_mut().expect("one branch").1 = body;
        let end = end.ok_or_else(|| format!("{kw} without matching {{{{end}}}}"))?;
        match split_keyword(&end) {
            ("end", "") => {
                return Ok(Node::If {
                    with,
                    branches,
                    otherwise: Vec::new(),
                });
            }
            ("else", "") => {
                return Ok(Node::If {
                    with,
                    branches,
                    otherwise: expect_end(items, pos)?,
                });
            }
            ("else", rest) => {
                let (k2, cond2) = split_keyword(rest);
                if k2 != kw {
                    return Err(format!("{{{{else {k2}}}}} inside {{{{{kw}}}}}"));
                }
                branches.push((parse_pipeline(cond2, true)?, Vec::new()));
            }
            (k, _) => return Err(format!("unexpected {{{{{k}}}}}")),
        }
    }
}

fn split_keyword(a: &str) -> (&str, &str) {
    let a = a.trim();
    let end = a
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(a.len());
    match &a[..end] {
        k @ ("if" | "else" | "end" | "with" | "range" | "define" | "template" | "block"
        | "break" | "continue") => (k, a[end..].trim()),
        _ => ("", a),
    }
}

fn parse_pipeline(src: &str, allow_decl: bool) -> Result<Pipeline, String> {
    let toks = lex(src)?;
    let mut p = 0;
    let pipe = pipeline_tokens(&toks, &mut p, allow_decl)?;
    if p != toks.len() {
        return Err(format!("unexpected {:?} in {src:?}", toks[p]));
    }
    Ok(pipe)
}

fn pipeline_tokens(toks: &[Tok], p: &mut usize, allow_decl: bool) -> Result<Pipeline, String> {
    let mut pipe = Pipeline::default();
    // Declarations: `$x :=`, `$i, $e :=`, `$x =`.
    if allow_decl {
        let mut q = *p;
        let mut vars = Vec::new();
        while let Some(Tok::Var(v)) = toks.get(q) {
            vars.push(v.clone());
            q += 1;
            if toks.get(q) == Some(&Tok::Comma) {
                q += 1;
            } else {
                break;
            }
        }
        if !vars.is_empty() && matches!(toks.get(q), Some(Tok::Declare | Tok::Assign)) {
            pipe.assign = toks[q] == Tok::Assign;
            pipe.vars = vars;
            *p = q + 1;
        }
    }
    let mut cmd = Vec::new();
    while let Some(t) = toks.get(*p) {
        match t {
            Tok::RParen(_) => break,
            Tok::Pipe => {
                if cmd.is_empty() {
                    return Err("missing command before |".into());
                }
                pipe.cmds.push(std::mem::take(&mut cmd));
                *p += 1;
            }
            _ => cmd.push(operand(toks, p)?),
        }
    }
    if cmd.is_empty() {
        return Err("missing value for command".into());
    }
    pipe.cmds.push(cmd);
    Ok(pipe)
}

fn fields(toks: &[Tok], p: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(Tok::Field(f, true)) = toks.get(*p) {
        out.push(f.clone());
        *p += 1;
    }
    out
}

fn operand(toks: &[Tok], p: &mut usize) -> Result<Operand, String> {
    let t = toks[*p].clone();
    *p += 1;
    Ok(match t {
        Tok::Dot => Operand::Dot(Vec::new()),
        Tok::Field(f, _) => {
            let mut chain = vec![f];
            chain.extend(fields(toks, p));
            Operand::Dot(chain)
        }
        Tok::Var(v) => Operand::Var(v, fields(toks, p)),
        Tok::Str(s) => Operand::Lit(Val::Str(s)),
        Tok::Num(n) => Operand::Lit(n),
        Tok::Ident(i) => match i.as_str() {
            "true" => Operand::Lit(Val::Bool(true)),
            "false" => Operand::Lit(Val::Bool(false)),
            "nil" => Operand::Lit(Val::Nil),
            f if BUILTINS.contains(&f) || PROMETHEUS_FUNCS.contains(&f) => {
                Operand::Func(f.to_string())
            }
            f => return Err(format!("function {f:?} not defined")),
        },
        Tok::LParen => {
            let inner = pipeline_tokens(toks, p, false)?;
            if !matches!(toks.get(*p), Some(Tok::RParen(_))) {
                return Err("unclosed left paren".into());
            }
            *p += 1;
            Operand::Sub(Box::new(inner), fields(toks, p))
        }
        other => return Err(format!("unexpected {other:?} in operand")),
    })
}

// ---------------------------------------------------------------------------------------
// Execution

/// Bounds `range` over huge query results and runaway templates.
const MAX_STEPS: usize = 100_000;

struct Exec<'c, 'a> {
    ctx: &'c Context<'a>,
    defines: &'c BTreeMap<String, Vec<Node>>,
    vars: Vec<(String, Val)>,
    out: String,
    steps: usize,
}

impl Exec<'_, '_> {
    fn nodes(&mut self, nodes: &[Node], dot: &Val) -> Result<(), String> {
        for n in nodes {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err("template too expensive to render".into());
            }
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Define { .. } => {}
                Node::Call { name, pipe } => {
                    let body = self
                        .defines
                        .get(name)
                        .ok_or_else(|| format!("no such template {name:?}"))?;
                    let d = match pipe {
                        Some(p) => self.pipeline(p, dot)?,
                        None => Val::Nil,
                    };
                    let saved = std::mem::replace(&mut self.vars, vec![("$".into(), d.clone())]);
                    let r = self.nodes(body, &d);
                    self.vars = saved;
                    r?;
                }
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        let s = print_value(&v, true);
                        self.out.push_str(&s);
                    }
                }
                Node::If {
                    with,
                    branches,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let mut done = false;
                    for (cond, body) in branches {
                        let v = self.pipeline(cond, dot)?;
                        if truthy(&v) {
                            let inner = if *with { v } else { dot.clone() };
                            self.nodes(body, &inner)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.nodes(otherwise, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let mut quiet = pipe.clone();
                    let names = std::mem::take(&mut quiet.vars);
                    let v = self.pipeline(&quiet, dot)?;
                    let elems: Vec<(Val, Val)> = match v {
                        Val::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, s)| (Val::Int(i as i64), Val::Sample(s)))
                            .collect(),
                        Val::Map(m) => m
                            .into_iter()
                            .map(|(k, v)| (Val::Str(k), Val::Str(v)))
                            .collect(),
                        Val::Int(n) => (0..n.max(0)).map(|i| (Val::Int(i), Val::Int(i))).collect(),
                        Val::Json(serde_json::Value::Array(a)) => a
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (Val::Int(i as i64), from_json(x)))
                            .collect(),
                        Val::Json(serde_json::Value::Object(m)) => m
                            .iter()
                            .map(|(k, x)| (Val::Str(k.clone()), from_json(x)))
                            .collect(),
                        Val::Nil => Vec::new(),
                        other => {
                            return Err(format!("range can't iterate over {}", type_name(&other)));
                        }
                    };
                    if elems.is_empty() {
                        self.nodes(otherwise, dot)?;
                    }
                    for (k, e) in elems {
                        match names.as_slice() {
                            [] => {}
                            [one] => self.vars.push((one.clone(), e.clone())),
                            [a, b, ..] => {
                                self.vars.push((a.clone(), k));
                                self.vars.push((b.clone(), e.clone()));
                            }
                        }
                        self.nodes(body, &e)?;
                        self.vars.truncate(mark);
                    }
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Val) -> Result<Val, String> {
        let mut piped: Option<Val> = None;
        for cmd in &p.cmds {
            piped = Some(self.command(cmd, dot, piped)?);
        }
        let v = piped.unwrap_or(Val::Nil);
        for name in &p.vars {
            if p.assign {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(&mut self, cmd: &[Operand], dot: &Val, piped: Option<Val>) -> Result<Val, String> {
        if let Operand::Func(name) = &cmd[0] {
            // `and` and `or` stop at the first deciding argument, as Go does.
            if name == "and" || name == "or" {
                let mut last = Val::Nil;
                let n = cmd.len() - 1 + usize::from(piped.is_some());
                if n == 0 {
                    return Err(format!("wrong number of args for {name}: want at least 1"));
                }
                for a in &cmd[1..] {
                    last = self.operand(a, dot)?;
                    if truthy(&last) == (name == "or") {
                        return Ok(last);
                    }
                }
                return Ok(piped.unwrap_or(last));
            }
            let mut args = Vec::with_capacity(cmd.len());
            for a in &cmd[1..] {
                args.push(self.operand(a, dot)?);
            }
            args.extend(piped);
            return self.call(name, args);
        }
        if cmd.len() > 1 || piped.is_some() {
            return Err(format!("can't give argument to non-function {:?}", cmd[0]));
        }
        self.operand(&cmd[0], dot)
    }

    fn operand(&mut self, o: &Operand, dot: &Val) -> Result<Val, String> {
        match o {
            Operand::Dot(chain) => self.fields(dot.clone(), chain),
            Operand::Var(name, chain) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                self.fields(v, chain)
            }
            Operand::Lit(v) => Ok(v.clone()),
            Operand::Func(name) => self.call(name, Vec::new()),
            Operand::Sub(p, chain) => {
                let v = self.pipeline(p, dot)?;
                self.fields(v, chain)
            }
        }
    }

    fn fields(&self, mut v: Val, chain: &[String]) -> Result<Val, String> {
        for f in chain {
            v = match (v, f.as_str()) {
                (Val::Json(serde_json::Value::Object(m)), k) => {
                    m.get(k).map_or(Val::Nil, from_json)
                }
                // Alertmanager's `.Alerts.Firing` and `.Alerts.Resolved`.
                (Val::Json(serde_json::Value::Array(a)), k @ ("Firing" | "Resolved")) => {
                    let want = k.to_lowercase();
                    Val::Json(serde_json::Value::Array(
                        a.into_iter()
                            .filter(|x| x["Status"] == want.as_str())
                            .collect(),
                    ))
                }
                (Val::Root, "Labels") => Val::Map(self.ctx.labels.clone()),
                (Val::Root, "ExternalLabels") => Val::Map(self.ctx.external_labels.clone()),
                (Val::Root, "Value") => Val::Float(self.ctx.value),
                (Val::Root, "ExternalURL") => Val::Str(String::new()),
                (Val::Map(m), k) => Val::Str(m.get(k).cloned().unwrap_or_default()),
                (Val::Sample(s), "Labels") => Val::Map(s.labels),
                (Val::Sample(s), "Value") => Val::Float(s.value),
                (other, _) => {
                    return Err(format!(
                        "can't evaluate field {f} in type {}",
                        type_name(&other)
                    ));
                }
            };
        }
        Ok(v)
    }

    fn call(&mut self, name: &str, args: Vec<Val>) -> Result<Val, String> {
        let want = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "wrong number of args for {name}: want {n} got {}",
                    args.len()
                ))
            }
        };
        Ok(match name {
            "not" => {
                want(1)?;
                Val::Bool(!truthy(&args[0]))
            }
            "len" => {
                want(1)?;
                Val::Int(match &args[0] {
                    Val::Str(s) => s.len(),
                    Val::Map(m) => m.len(),
                    Val::List(l) => l.len(),
                    Val::Json(serde_json::Value::Array(a)) => a.len(),
                    Val::Json(serde_json::Value::Object(m)) => m.len(),
                    other => return Err(format!("len of type {}", type_name(other))),
                } as i64)
            }
            "index" => {
                if args.is_empty() {
                    return Err("wrong number of args for index".into());
                }
                let mut v = args[0].clone();
                for k in &args[1..] {
                    v = match (v, k) {
                        (Val::Map(m), Val::Str(k)) => {
                            Val::Str(m.get(k).cloned().unwrap_or_default())
                        }
                        (Val::Json(serde_json::Value::Object(m)), Val::Str(k)) => {
                            m.get(k).map_or(Val::Nil, from_json)
                        }
                        (Val::Json(serde_json::Value::Array(a)), Val::Int(i)) => {
                            usize::try_from(*i)
                                .ok()
                                .and_then(|i| a.get(i))
                                .map(from_json)
                                .ok_or_else(|| format!("index out of range: {i}"))?
                        }
                        (Val::List(l), Val::Int(i)) => Val::Sample(
                            usize::try_from(*i)
                                .ok()
                                .and_then(|i| l.get(i).cloned())
                                .ok_or_else(|| format!("index out of range: {i}"))?,
                        ),
                        (v, k) => {
                            return Err(format!(
                                "can't index item of type {} with {}",
                                type_name(&v),
                                type_name(k)
                            ));
                        }
                    };
                }
                v
            }
            "print" | "println" => {
                let mut s = String::new();
                for (i, a) in args.iter().enumerate() {
                    let is_str = matches!(a, Val::Str(_));
                    let prev_str = i > 0 && matches!(args[i - 1], Val::Str(_));
                    if i > 0 && (name == "println" || (!is_str && !prev_str)) {
                        s.push(' ');
                    }
                    s.push_str(&print_value(a, false));
                }
                if name == "println" {
                    s.push('\n');
                }
                Val::Str(s)
            }
            "printf" => {
                let Some(Val::Str(f)) = args.first() else {
                    return Err("printf needs a format string".into());
                };
                Val::Str(sprintf(f, &args[1..]))
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if args.len() < 2 || (name != "eq" && args.len() != 2) {
                    return Err(format!("wrong number of args for {name}"));
                }
                let b = match name {
                    "eq" => {
                        let mut any = false;
                        for x in &args[1..] {
                            any |= compare(&args[0], x)? == std::cmp::Ordering::Equal;
                        }
                        any
                    }
                    "ne" => compare(&args[0], &args[1])? != std::cmp::Ordering::Equal,
                    _ => {
                        let o = compare(&args[0], &args[1])?;
                        match name {
                            "lt" => o.is_lt(),
                            "le" => o.is_le(),
                            "gt" => o.is_gt(),
                            _ => o.is_ge(),
                        }
                    }
                };
                Val::Bool(b)
            }
            "html" | "safeHtml" => {
                want(1)?;
                let s = print_value(&args[0], false);
                if name == "safeHtml" {
                    Val::Str(s)
                } else {
                    Val::Str(html_escape(&s))
                }
            }
            "js" => {
                want(1)?;
                Val::Str(
                    print_value(&args[0], false)
                        .replace('\\', "\\\\")
                        .replace('\'', "\\'")
                        .replace('"', "\\\"")
                        .replace('<', "\\u003C")
                        .replace('>', "\\u003E"),
                )
            }
            "urlquery" => {
                want(1)?;
                Val::Str(query_escape(&print_value(&args[0], false)))
            }
            "query" => {
                want(1)?;
                let q = as_str(&args[0], name)?;
                let f = self
                    .ctx
                    .query
                    .ok_or("query is not available in this template")?;
                Val::List(f(&q)?)
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Val::List(l) => Val::Sample(
                        l.first()
                            .cloned()
                            .ok_or("first() called on vector with no elements")?,
                    ),
                    other => return Err(format!("first of type {}", type_name(other))),
                }
            }
            "label" => {
                want(2)?;
                let l = as_str(&args[0], name)?;
                match &args[1] {
                    Val::Sample(s) => Val::Str(s.labels.get(&l).cloned().unwrap_or_default()),
                    other => return Err(format!("label of type {}", type_name(other))),
                }
            }
            "value" | "strvalue" => {
                want(1)?;
                match (&args[0], name) {
                    (Val::Sample(s), "value") => Val::Float(s.value),
                    (Val::Sample(s), _) => {
                        Val::Str(s.labels.get("__value__").cloned().unwrap_or_default())
                    }
                    (other, _) => return Err(format!("{name} of type {}", type_name(other))),
                }
            }
            "sortByLabel" => {
                want(2)?;
                let l = as_str(&args[0], name)?;
                match &args[1] {
                    Val::List(list) => {
                        let mut list = list.clone();
                        list.sort_by(|a, b| a.labels.get(&l).cmp(&b.labels.get(&l)));
                        Val::List(list)
                    }
                    other => return Err(format!("sortByLabel of type {}", type_name(other))),
                }
            }
            "humanize" | "humanize1024" | "humanizeDuration" | "humanizePercentage"
            | "humanizeTimestamp" => {
                want(1)?;
                let n = to_float(&args[0])?;
                Val::Str(match name {
                    "humanize" => {
                        humanize(n, 1000.0, &["", "k", "M", "G", "T", "P", "E", "Z", "Y"])
                    }
                    "humanize1024" => humanize(
                        n,
                        1024.0,
                        &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
                    ),
                    "humanizeDuration" => humanize_duration(n),
                    "humanizePercentage" => format!("{}%", sig4(n * 100.0)),
                    _ => humanize_timestamp(n),
                })
            }
            "toUpper" | "toLower" | "title" | "stripPort" | "stripDomain" => {
                want(1)?;
                let s = as_str(&args[0], name)?;
                Val::Str(match name {
                    "toUpper" => s.to_uppercase(),
                    "toLower" => s.to_lowercase(),
                    "title" => title(&s),
                    "stripPort" => strip_port(&s),
                    _ => strip_domain(&s),
                })
            }
            "reReplaceAll" => {
                want(3)?;
                let re = Regex::new(&as_str(&args[0], name)?).map_err(|e| e.to_string())?;
                let repl = as_str(&args[1], name)?;
                Val::Str(
                    re.replace_all(&as_str(&args[2], name)?, repl.as_str())
                        .into_owned(),
                )
            }
            "match" => {
                want(2)?;
                let re = Regex::new(&as_str(&args[0], name)?).map_err(|e| e.to_string())?;
                Val::Bool(re.is_match(&as_str(&args[1], name)?))
            }
            "parseDuration" => {
                want(1)?;
                let d = parse_duration(&as_str(&args[0], name)?)?;
                Val::Float(d.as_secs_f64())
            }
            "externalURL" | "pathPrefix" => {
                want(0)?;
                Val::Str(String::new())
            }
            other => return Err(format!("function {other:?} not defined")),
        })
    }
}

fn as_str(v: &Val, func: &str) -> Result<String, String> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        other => Err(format!(
            "{func}: expected string; found {}",
            type_name(other)
        )),
    }
}

/// Prometheus' `convertToFloat`: numbers, and strings that parse as one.
fn to_float(v: &Val) -> Result<f64, String> {
    match v {
        Val::Float(f) => Ok(*f),
        Val::Int(i) => Ok(*i as f64),
        Val::Str(s) => s
            .parse::<f64>()
            .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        other => Err(format!("can't convert {} to float", type_name(other))),
    }
}

fn truthy(v: &Val) -> bool {
    match v {
        Val::Nil => false,
        Val::Bool(b) => *b,
        Val::Int(i) => *i != 0,
        Val::Float(f) => *f != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Map(m) => !m.is_empty(),
        Val::List(l) => !l.is_empty(),
        Val::Json(serde_json::Value::Array(a)) => !a.is_empty(),
        Val::Json(serde_json::Value::Object(m)) => !m.is_empty(),
        Val::Json(_) | Val::Sample(_) | Val::Root => true,
    }
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Nil => "nil",
        Val::Bool(_) => "bool",
        Val::Int(_) => "int",
        Val::Float(_) => "float64",
        Val::Str(_) => "string",
        Val::Map(_) => "map[string]string",
        Val::Sample(_) => "*template.sample",
        Val::List(_) => "template.queryResult",
        Val::Json(serde_json::Value::Array(_)) => "[]interface {}",
        Val::Json(_) => "map[string]interface {}",
        Val::Root => "struct",
    }
}

fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    let num = |v: &Val| match v {
        Val::Int(i) => Some(*i as f64),
        Val::Float(f) => Some(*f),
        _ => None,
    };
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
        (Val::Nil, Val::Nil) => Ok(Ordering::Equal),
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => Ok(x.partial_cmp(&y).unwrap_or(Ordering::Less)),
            _ => Err(format!(
                "incompatible types for comparison: {} and {}",
                type_name(a),
                type_name(b)
            )),
        },
    }
}

/// Go's `%v` rendering; `action` is true for a value printed by an action, where nil
/// shows as `<no value>`.
fn print_value(v: &Val, action: bool) -> String {
    match v {
        Val::Nil if action => "<no value>".into(),
        Val::Nil => "<nil>".into(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => go_float(*f),
        Val::Str(s) => s.clone(),
        Val::Map(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", inner.join(" "))
        }
        Val::Sample(s) => format!(
            "{{{} {}}}",
            print_value(&Val::Map(s.labels.clone()), false),
            go_float(s.value)
        ),
        Val::List(l) => {
            let inner: Vec<String> = l
                .iter()
                .map(|s| print_value(&Val::Sample(s.clone()), false))
                .collect();
            format!("[{}]", inner.join(" "))
        }
        Val::Json(serde_json::Value::Array(a)) => {
            let inner: Vec<String> = a
                .iter()
                .map(|x| print_value(&from_json(x), false))
                .collect();
            format!("[{}]", inner.join(" "))
        }
        Val::Json(serde_json::Value::Object(m)) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k}:{}", print_value(&from_json(x), false)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        Val::Json(other) => other.to_string(),
        Val::Root => "{}".into(),
    }
}

/// Go's shortest `%v` of a float64: exponent form when the exponent is below -4 or at
/// least 6 (`1e+06`), as `strconv.FormatFloat(v, 'g', -1, 64)` does.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sci = format!("{v:e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if v != 0.0 && !(-4..6).contains(&exp) {
        go_exp(&sci)
    } else {
        format!("{v}")
    }
}

/// Rewrites Rust's `1.5e-7` as Go's `1.5e-07`.
fn go_exp(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s.to_string(),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %f %F %e %E %g %G %q %x %X
/// %t %%`, with flags `- + 0 space`, width and precision. Mismatches print as Go does,
/// e.g. `%!d(float64=1.5)`.
fn sprintf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0) * 10 + d as usize);
            chars.next();
        }
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                chars.next();
            }
            prec = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={})", type_name(arg), print_value(arg, false));
        let sign = |s: String, negative: bool| {
            if negative {
                s
            } else if plus {
                format!("+{s}")
            } else if space {
                format!(" {s}")
            } else {
                s
            }
        };
        let (body, numeric) = match (verb, arg) {
            ('v', Val::Float(f)) => (sign(go_float(*f), *f < 0.0), true),
            ('v', Val::Int(i)) => (sign(i.to_string(), *i < 0), true),
            ('v', v) => (print_value(v, false), false),
            ('s', Val::Str(s)) => (
                prec.map_or(s.clone(), |p| s.chars().take(p).collect()),
                false,
            ),
            ('s', Val::Map(_) | Val::Sample(_) | Val::List(_)) => (print_value(arg, false), false),
            ('q', Val::Str(s)) => (format!("{s:?}"), false),
            ('t', Val::Bool(b)) => (b.to_string(), false),
            ('d', Val::Int(i)) => (sign(i.to_string(), *i < 0), true),
            ('x', Val::Int(i)) => (format!("{i:x}"), true),
            ('X', Val::Int(i)) => (format!("{i:X}"), true),
            ('x', Val::Str(s)) => (s.bytes().map(|b| format!("{b:02x}")).collect(), false),
            ('X', Val::Str(s)) => (s.bytes().map(|b| format!("{b:02X}")).collect(), false),
            ('f' | 'F' | 'e' | 'E' | 'g' | 'G', Val::Float(f)) => {
                (sign(format_float(*f, verb, prec), *f < 0.0), true)
            }
            _ => (bad(), false),
        };
        let body = match width {
            Some(w) if body.chars().count() < w => {
                let pad = w - body.chars().count();
                if minus {
                    format!("{body}{}", " ".repeat(pad))
                } else if zero && numeric {
                    let (s, digits) = match body.strip_prefix(['-', '+']) {
                        Some(d) => (&body[..1], d),
                        None => ("", body.as_str()),
                    };
                    format!("{s}{}{digits}", "0".repeat(pad))
                } else {
                    format!("{}{body}", " ".repeat(pad))
                }
            }
            _ => body,
        };
        out.push_str(&body);
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", type_name(a), print_value(a, false)))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

fn format_float(f: f64, verb: char, prec: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    match verb {
        'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), f),
        'e' | 'E' => {
            let s = go_exp(&format!("{:.*e}", prec.unwrap_or(6), f));
            if verb == 'E' { s.to_uppercase() } else { s }
        }
        _ => {
            let s = match prec {
                None => go_float(f),
                Some(p) => {
                    let p = p.max(1);
                    let s = format!("{:.*e}", p - 1, f);
                    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                    let exp: i32 = e.parse().unwrap_or(0);
                    let m = trim_zeros(m);
                    let nd = m.chars().filter(char::is_ascii_digit).count() as i32;
                    let mut eprec = p as i32;
                    if eprec > nd && nd > exp {
                        eprec = nd;
                    }
                    if f != 0.0 && (exp < -4 || exp >= eprec) {
                        go_exp(&format!("{m}e{e}"))
                    } else {
                        let decimals = (p as i32 - 1 - exp).max(0) as usize;
                        trim_zeros(&format!("{f:.decimals$}"))
                    }
                }
            };
            if verb == 'G' { s.to_uppercase() } else { s }
        }
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Go's deprecated `strings.Title`, which Prometheus' `title` still uses: upper-cases
/// the first letter of each word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once("]:") {
            return host.to_string();
        }
        return s.to_string();
    }
    match s.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => host.to_string(),
        _ => s.to_string(),
    }
}

fn strip_domain(s: &str) -> String {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !h.contains(']') => (h, Some(p)),
        _ => (s, None),
    };
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return s.to_string();
    }
    let short = host.split('.').next().unwrap_or(host);
    match port {
        Some(p) => format!("{short}:{p}"),
        None => short.to_string(),
    }
}

/// Prometheus' `humanizeTimestamp`: Unix seconds as Go prints a UTC `time.Time`.
fn humanize_timestamp(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_float(v);
    }
    let secs = v.floor() as i64;
    let nanos = ((v - v.floor()) * 1e9).round() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Prometheus' `humanizeDuration`: seconds as `1d 2h 3m 4s`, or with a unit prefix
/// below one second.
fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_float(v);
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

/// Go's `%.4g`.
fn sig4(v: f64) -> String {
    format_float(v, 'g', Some(4))
}

fn humanize(v: f64, base: f64, prefixes: &[&str]) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return go_float(v);
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

    fn render_with(text: &str, value: f64, query: Option<QueryFn<'_>>) -> String {
        let labels = BTreeMap::from([
            ("topic".to_string(), "payments".to_string()),
            (
                "instance".to_string(),
                "kafka-1.example.com:9092".to_string(),
            ),
        ]);
        let ext = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let ctx = Context {
            labels: &labels,
            external_labels: &ext,
            value,
            query,
            data: None,
        };
        Template::parse(text).unwrap().render(&ctx)
    }

    #[test]
    fn alertmanager_data_renders_like_a_notification_template() {
        let data = serde_json::json!({
            "Status": "firing",
            "CommonLabels": {"alertname": "KafkaBrokerDown", "cluster": "prod"},
            "Alerts": [
                {"Status": "firing", "Labels": {"broker": "1"}, "Annotations": {"summary": "b1 down"}},
                {"Status": "resolved", "Labels": {"broker": "2"}, "Annotations": {"summary": "b2 back"}},
            ],
        });
        let empty = BTreeMap::new();
        let ctx = Context::with_data(&data, &empty);
        let t = |s: &str| Template::parse(s).unwrap().render(&ctx);
        assert_eq!(
            t(
                "[{{ .Status | toUpper }}:{{ .Alerts.Firing | len }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.cluster }})"
            ),
            "[FIRING:1] KafkaBrokerDown (prod)"
        );
        assert_eq!(
            t("{{ range .Alerts }}{{ .Labels.broker }}={{ .Annotations.summary }};{{ end }}"),
            "1=b1 down;2=b2 back;"
        );
        assert_eq!(
            t(
                "{{ range .Alerts.Resolved }}{{ .Labels.broker }}{{ end }}|{{ .Missing }}|{{ index .CommonLabels \"cluster\" }}"
            ),
            "2|<no value>|prod"
        );
    }

    fn render(text: &str, value: f64) -> String {
        render_with(text, value, None)
    }

    #[test]
    fn renders_labels_value_and_humanize() {
        assert_eq!(
            render(
                "{{ $labels.topic }} lag {{ $value | humanize }} ({{ $value }})",
                1234567.0
            ),
            "payments lag 1.235M (1.234567e+06)"
        );
        assert_eq!(render("{{ humanize1024 $value }}", 1234567.0), "1.177Mi");
        assert_eq!(
            render("{{ .Labels.topic }} in {{ $externalLabels.env }}", 0.0),
            "payments in prod"
        );
        assert_eq!(render("[{{ $labels.missing }}]", 0.0), "[]");
        assert_eq!(render("{{ 0.5 | humanizePercentage }}", 0.0), "50%");
        assert_eq!(
            render("{{ humanizeTimestamp 1234.567 }}", 0.0),
            "1970-01-01 00:20:34.567 +0000 UTC"
        );
    }

    #[test]
    fn printf_follows_go_verbs() {
        assert_eq!(render(r#"{{ printf "%.2f" $value }}"#, 1.23456), "1.23");
        assert_eq!(render(r#"{{ $value | printf "%.1f%%" }}"#, 97.25), "97.2%");
        assert_eq!(render(r#"{{ printf "%s=%v" "a" 1 }}"#, 0.0), "a=1");
        assert_eq!(
            render(r#"{{ printf "%5d|%-4s|%05.1f" 42 "x" 2.5 }}"#, 0.0),
            "   42|x   |002.5"
        );
        assert_eq!(render(r#"{{ printf "%d" $value }}"#, 2.0), "%!d(float64=2)");
        assert_eq!(render(r#"{{ printf "%s %s" "a" }}"#, 0.0), "a %!s(MISSING)");
        assert_eq!(render(r#"{{ printf "%e" 123456.0 }}"#, 0.0), "1.234560e+05");
        assert_eq!(render(r#"{{ printf "%q" "x" }}"#, 0.0), "\"x\"");
    }

    #[test]
    fn string_functions() {
        assert_eq!(
            render(r#"{{ "kafka broker down" | title }}"#, 0.0),
            "Kafka Broker Down"
        );
        assert_eq!(render("{{ $labels.topic | toUpper }}", 0.0), "PAYMENTS");
        assert_eq!(
            render(
                r#"{{ reReplaceAll "(.*)-(\\d+)" "$2/$1" "broker-7" }}"#,
                0.0
            ),
            "7/broker"
        );
        assert_eq!(
            render("{{ $labels.instance | stripPort }}", 0.0),
            "kafka-1.example.com"
        );
        assert_eq!(
            render("{{ $labels.instance | stripDomain }}", 0.0),
            "kafka-1:9092"
        );
        assert_eq!(
            render(r#"{{ if match "^pay" $labels.topic }}yes{{ end }}"#, 0.0),
            "yes"
        );
        assert_eq!(render(r#"{{ parseDuration "1h30m" }}"#, 0.0), "5400");
    }

    #[test]
    fn control_flow_variables_and_trim() {
        let t =
            "{{ if gt $value 100.0 }}high{{ else if gt $value 10 }}medium{{ else }}low{{ end }}";
        assert_eq!(render(t, 500.0), "high");
        assert_eq!(render(t, 50.0), "medium");
        assert_eq!(render(t, 5.0), "low");
        assert_eq!(
            render("{{ with $labels.topic }}topic {{ . }}{{ end }}", 0.0),
            "topic payments"
        );
        assert_eq!(
            render("{{ with $labels.nope }}x{{ else }}none{{ end }}", 0.0),
            "none"
        );
        assert_eq!(render("{{ $x := 3 }}{{ $x = 4 }}{{ $x }}", 0.0), "4");
        assert_eq!(render("a  {{- /* note */ -}}  b\n{{- 1 }}", 0.0), "ab1");
        assert_eq!(
            render(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                0.0
            ),
            "instance=kafka-1.example.com:9092;topic=payments;"
        );
        assert_eq!(
            render(
                r#"{{ if and (eq $labels.topic "payments" "x") (not false) }}ok{{ end }}"#,
                0.0
            ),
            "ok"
        );
        assert_eq!(
            render(r#"{{ index $labels "topic" }} {{ len $labels }}"#, 0.0),
            "payments 2"
        );
    }

    #[test]
    fn query_first_value_and_label() {
        let q = |expr: &str| -> Result<Vec<QuerySample>, String> {
            assert_eq!(expr, "kafka_brokers");
            Ok(vec![
                QuerySample {
                    labels: BTreeMap::from([("cluster".into(), "b".into())]),
                    value: 5.0,
                },
                QuerySample {
                    labels: BTreeMap::from([("cluster".into(), "a".into())]),
                    value: 3.0,
                },
            ])
        };
        assert_eq!(
            render_with(
                r#"{{ query "kafka_brokers" | first | value }}"#,
                0.0,
                Some(&q)
            ),
            "5"
        );
        assert_eq!(
            render_with(
                r#"{{ range query "kafka_brokers" | sortByLabel "cluster" }}{{ .Labels.cluster }}:{{ .Value }} {{ end }}"#,
                0.0,
                Some(&q)
            ),
            "a:3 b:5 "
        );
        assert_eq!(
            render_with(
                r#"{{ with query "kafka_brokers" }}{{ . | first | label "cluster" }}{{ end }}"#,
                0.0,
                Some(&q)
            ),
            "b"
        );
        assert!(render(r#"{{ query "x" }}"#, 0.0).starts_with("<error expanding template"));
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
    fn errors_at_load_and_at_render() {
        assert!(
            Template::parse("{{ nosuch $x }}")
                .unwrap_err()
                .to_string()
                .contains("nosuch")
        );
        assert!(
            Template::parse("{{ if 1 }}x")
                .unwrap_err()
                .to_string()
                .contains("end")
        );
        assert!(Template::parse("{{ end }}").is_err());
        assert!(render("{{ template \"x\" }}", 0.0).contains("no such template"));
        assert!(Template::parse("{{ block \"x\" . }}{{ end }}").is_err());
        assert!(Template::parse("{{ $labels.x").is_err());
        assert!(render("{{ $nope }}", 0.0).contains("undefined variable"));
        assert!(render("{{ first 3 }}", 0.0).contains("error expanding"));
    }
}
