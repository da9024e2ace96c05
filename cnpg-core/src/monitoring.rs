//! Metrics from SQL queries, in the YAML format CloudNativePG's instances read (the one
//! postgres_exporter started): each named query says what its columns are — a label, a
//! counter, a gauge, a text mapped to a number, a duration, a histogram — and where it
//! runs (the primary only, a range of server versions, some databases, when a predicate
//! holds). This module turns a query's rows into Prometheus families and renders them;
//! running the queries is the host's job (the instance manager, with a timeout on each).
//!
//! Metric names are upstream's, so dashboards and alerts written for CloudNativePG work
//! unchanged: `cnpg_<query>_<column>` (`name` overrides either part), counters without a
//! `_total` suffix — which is why the families are rendered here in Prometheus' text
//! format rather than through an OpenMetrics encoder, which would add one.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The default queries (`spec.monitoring.disableDefaultQueries` turns them off): the
/// families CloudNativePG's instances export, under its names and labels.
pub const DEFAULT_QUERIES: &str = include_str!("monitoring/default-queries.yaml");

/// The queries of one or more files, by name; a later file's query replaces an earlier
/// one of the same name.
pub type Queries = BTreeMap<String, UserQuery>;

/// One query and how its columns become metrics.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct UserQuery {
    /// The SQL (one statement).
    pub query: String,
    /// A query answering one boolean: the metrics are collected only when it is true.
    #[serde(default)]
    pub predicate_query: Option<String>,
    /// The columns, in the query's order, each a one-entry map of its name to its use.
    #[serde(default)]
    pub metrics: Vec<BTreeMap<String, Column>>,
    /// Run only on the primary.
    #[serde(default)]
    pub primary: bool,
    /// The older name of `primary`.
    #[serde(default)]
    pub master: bool,
    /// Accepted for compatibility; `spec.monitoring.metricsQueriesTTL` sets the cache.
    #[serde(default)]
    pub cache_seconds: u64,
    /// The server versions it runs on, e.g. `>=17.0.0` or `>=12.0.0 <15.0.0`.
    #[serde(default)]
    pub runonserver: Option<String>,
    /// The databases it runs in (glob patterns such as `*` match every database that
    /// takes connections); none: the default database.
    #[serde(default)]
    pub target_databases: Vec<String>,
    /// Replaces the query's key in the metric names.
    #[serde(default)]
    pub name: Option<String>,
}

/// How a column is used.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Column {
    /// Its use.
    pub usage: Usage,
    /// The metric's help text.
    #[serde(default)]
    pub description: String,
    /// `MAPPEDMETRIC`: each text value's number.
    #[serde(default)]
    pub metric_mapping: BTreeMap<String, f64>,
    /// Replaces the column's name in the metric name.
    #[serde(default)]
    pub name: Option<String>,
}

/// What a column is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Usage {
    /// Ignored.
    #[default]
    Discard,
    /// A label of every metric of the row.
    Label,
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A text turned into a number by `metric_mapping` (a gauge).
    #[serde(rename = "MAPPEDMETRIC")]
    MappedMetric,
    /// A duration (`1h2m3s`, `250ms` or `HH:MM:SS`), as a gauge in milliseconds.
    Duration,
    /// A histogram: this column holds the buckets' upper bounds (an array), and
    /// `<column>_bucket` (the cumulative counts), `<column>_sum`, `<column>_count`
    /// the rest.
    Histogram,
}

/// The queries of one file (`queries` of a ConfigMap or Secret), checked: every metric
/// and label name valid, each column listed once.
pub fn parse(text: &str) -> Result<Queries, String> {
    let queries: Queries = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    for (key, q) in &queries {
        if q.query.trim().is_empty() {
            return Err(format!(
                "{key}.query is empty; write the SQL that gives its columns"
            ));
        }
        let prefix = q.name.as_deref().unwrap_or(key);
        if !valid_name(prefix) {
            return Err(format!(
                "{key}: {prefix:?} cannot be part of a metric name; use letters, digits and _"
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in q.metrics.iter().enumerate() {
            if m.len() != 1 {
                return Err(format!(
                    "{key}.metrics[{i}] names {} columns; give each column an entry of its own",
                    m.len()
                ));
            }
            for (col, c) in m {
                let shown = c.name.as_deref().unwrap_or(col);
                if !valid_name(col) || !valid_name(shown) {
                    return Err(format!(
                        "{key}.metrics[{i}]: {shown:?} cannot be a metric or label name; use letters, digits and _"
                    ));
                }
                if !seen.insert(col.as_str()) {
                    return Err(format!(
                        "{key}.metrics[{i}]: column {col:?} is listed twice"
                    ));
                }
                if c.usage == Usage::MappedMetric && c.metric_mapping.is_empty() {
                    return Err(format!(
                        "{key}.metrics[{i}] ({col}): MAPPEDMETRIC needs metric_mapping"
                    ));
                }
            }
        }
        if let Some(r) = &q.runonserver {
            version_matches(r, PgVersion::default())
                .map_err(|e| format!("{key}.runonserver: {e}"))?;
        }
    }
    Ok(queries)
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A PostgreSQL server version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgVersion {
    /// Major (15).
    pub major: u32,
    /// Minor (18 of 15.18).
    pub minor: u32,
    /// Patch (0 since PostgreSQL 10; 9.6.24's 24).
    pub patch: u32,
}

impl PgVersion {
    /// From `server_version_num` (150018 is 15.18, 90624 is 9.6.24).
    pub fn from_num(n: u32) -> PgVersion {
        if n >= 100_000 {
            PgVersion {
                major: n / 10_000,
                minor: n % 10_000,
                patch: 0,
            }
        } else {
            PgVersion {
                major: n / 10_000,
                minor: n / 100 % 100,
                patch: n % 100,
            }
        }
    }
}

/// Whether `version` is in `range`: comparisons (`>=`, `>`, `<=`, `<`, `=`, `!=`, `~`
/// for the same minor, `^` for the same major) joined by spaces or commas (all must
/// hold), alternatives by `||`. Missing parts are 0.
pub fn version_matches(range: &str, version: PgVersion) -> Result<bool, String> {
    let mut any = false;
    for alternative in range.split("||") {
        let mut tokens: Vec<String> = Vec::new();
        for t in alternative
            .split([',', ' ', '\t'])
            .filter(|t| !t.is_empty())
        {
            // An operator alone (`>= 17`) joins the version after it.
            match tokens.last_mut() {
                Some(last) if last.chars().all(|c| "<>=!~^".contains(c)) => last.push_str(t),
                _ => tokens.push(t.to_owned()),
            }
        }
        if tokens.is_empty() {
            return Err(format!("{range:?} has an empty alternative"));
        }
        let mut all = true;
        for t in &tokens {
            all &= comparison(t, version).map_err(|e| format!("{range:?}: {e}"))?;
        }
        any |= all;
    }
    Ok(any)
}

fn comparison(t: &str, v: PgVersion) -> Result<bool, String> {
    let split = t.find(|c: char| c.is_ascii_digit()).unwrap_or(t.len());
    let (op, num) = t.split_at(split);
    let parts: Vec<&str> = num.trim_start_matches('v').split('.').collect();
    if num.is_empty() || parts.len() > 3 {
        return Err(format!(
            "{t:?} is not a version comparison such as >=15.0.0"
        ));
    }
    let mut n = [0u32; 3];
    for (i, p) in parts.iter().enumerate() {
        n[i] = p
            .parse()
            .map_err(|_| format!("{t:?}: {p:?} is not a version number"))?;
    }
    let w = PgVersion {
        major: n[0],
        minor: n[1],
        patch: n[2],
    };
    Ok(match op {
        "" | "=" | "==" => v == w,
        "!=" => v != w,
        ">" => v > w,
        ">=" | "=>" => v >= w,
        "<" => v < w,
        "<=" | "=<" => v <= w,
        "~" => v >= w && v.major == w.major && v.minor == w.minor,
        "^" => v >= w && v.major == w.major,
        _ => return Err(format!("{t:?}: {op:?} is not a comparison")),
    })
}

impl UserQuery {
    /// Whether it runs on this instance (`primary`, `runonserver`).
    pub fn runs_on(&self, is_primary: bool, version: PgVersion) -> Result<bool, String> {
        if (self.primary || self.master) && !is_primary {
            return Ok(false);
        }
        match &self.runonserver {
            Some(r) => version_matches(r, version),
            None => Ok(true),
        }
    }

    /// Whether its databases need the list of databases (a pattern among them).
    pub fn needs_database_list(&self) -> bool {
        self.target_databases.iter().any(|t| is_pattern(t))
    }

    /// The databases it runs in: its targets, patterns matched against `accessible`.
    pub fn databases(&self, default: &str, accessible: &[String]) -> Vec<String> {
        if self.target_databases.is_empty() {
            return vec![default.to_owned()];
        }
        let mut out: Vec<String> = Vec::new();
        for t in &self.target_databases {
            if is_pattern(t) {
                out.extend(accessible.iter().filter(|d| glob(t, d)).cloned());
            } else {
                out.push(t.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The families one run's rows make (`key`: the query's name in its file). Rows
    /// whose columns are not the ones listed are an error, as is a value that a metric
    /// cannot read; NULL numbers are NaN, NULL labels empty.
    pub fn families(&self, key: &str, rows: &Rows) -> Result<Vec<Family>, String> {
        let prefix = format!("cnpg_{}", self.name.as_deref().unwrap_or(key));
        let columns: BTreeMap<&str, &Column> = self
            .metrics
            .iter()
            .flat_map(|m| m.iter().map(|(k, c)| (k.as_str(), c)))
            .collect();
        let histogram_parts = |col: &str| {
            ["_bucket", "_sum", "_count"].iter().any(|s| {
                col.strip_suffix(s).is_some_and(|base| {
                    columns
                        .get(base)
                        .is_some_and(|c| c.usage == Usage::Histogram)
                })
            })
        };
        for c in &rows.columns {
            if !columns.contains_key(c.as_str()) && !histogram_parts(c) {
                return Err(format!(
                    "{key}: the query returns column {c:?}, which its metrics do not list"
                ));
            }
        }
        let at = |name: &str| rows.columns.iter().position(|c| c == name);
        let label_columns: Vec<(usize, &str)> = self
            .metrics
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(_, c)| c.usage == Usage::Label)
            .filter_map(|(k, c)| Some((at(k)?, c.name.as_deref().unwrap_or(k))))
            .collect();
        let mut out: Vec<Family> = Vec::new();
        for (col, c) in self.metrics.iter().flat_map(|m| m.iter()) {
            let metric = format!("{prefix}_{}", c.name.as_deref().unwrap_or(col));
            let (name, kind) = match c.usage {
                Usage::Discard | Usage::Label => continue,
                Usage::Counter => (metric, "counter"),
                Usage::Gauge | Usage::MappedMetric => (metric, "gauge"),
                Usage::Duration => (format!("{metric}_milliseconds"), "gauge"),
                Usage::Histogram => (metric, "histogram"),
            };
            let mut family = Family {
                name,
                help: c.description.clone(),
                kind,
                samples: vec![],
            };
            let Some(i) = at(col) else {
                return Err(format!("{key}: the query has no column {col:?}"));
            };
            for row in &rows.rows {
                let labels: Vec<(String, String)> = label_columns
                    .iter()
                    .map(|(j, l)| ((*l).to_owned(), row[*j].clone().unwrap_or_default()))
                    .collect();
                let value = row[i].as_deref();
                let bad = |what: &str| format!("{key}: column {col}: {:?} is not {what}", value);
                match c.usage {
                    Usage::Counter | Usage::Gauge => {
                        let v = match value {
                            None => f64::NAN,
                            Some(t) => number(t).ok_or_else(|| bad("a number"))?,
                        };
                        family.samples.push(Sample::new("", labels, v));
                    }
                    Usage::MappedMetric => {
                        // A text without a mapping gives no sample, as upstream.
                        if let Some(v) = value.and_then(|t| c.metric_mapping.get(t)) {
                            family.samples.push(Sample::new("", labels, *v));
                        }
                    }
                    Usage::Duration => {
                        if let Some(ms) = value.filter(|t| *t != "-1").and_then(milliseconds) {
                            family.samples.push(Sample::new("", labels, ms));
                        }
                    }
                    Usage::Histogram => {
                        let part = |suffix: &str| {
                            at(&format!("{col}{suffix}")).and_then(|j| row[j].as_deref())
                        };
                        let bounds = value
                            .and_then(array)
                            .ok_or_else(|| bad("an array of bounds"))?;
                        let counts = part("_bucket").and_then(array).ok_or_else(|| {
                            format!("{key}: {col}_bucket is missing or not an array")
                        })?;
                        let sum = part("_sum").and_then(number).unwrap_or(f64::NAN);
                        let count = part("_count").and_then(number).unwrap_or(0.0);
                        for (bound, n) in bounds.iter().zip(&counts) {
                            let mut l = labels.clone();
                            l.push(("le".into(), format_value(*bound)));
                            family.samples.push(Sample::new("_bucket", l, n.max(0.0)));
                        }
                        let mut l = labels.clone();
                        l.push(("le".into(), "+Inf".into()));
                        family.samples.push(Sample::new("_bucket", l, count));
                        family
                            .samples
                            .push(Sample::new("_sum", labels.clone(), sum));
                        family.samples.push(Sample::new("_count", labels, count));
                    }
                    Usage::Discard | Usage::Label => {}
                }
            }
            out.push(family);
        }
        Ok(out)
    }
}

/// A query's result, every value as PostgreSQL's text (what the simple query protocol
/// gives); `None` is NULL.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    /// The column names.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Option<String>>>,
}

/// One metric family.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Its name.
    pub name: String,
    /// Its help text.
    pub help: String,
    /// `gauge`, `counter` or `histogram`.
    pub kind: &'static str,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// One sample of a family.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Appended to the family's name (`_bucket`, `_sum`, `_count` of a histogram).
    pub suffix: &'static str,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// A sample.
    pub fn new(suffix: &'static str, labels: Vec<(String, String)>, value: f64) -> Sample {
        Sample {
            suffix,
            labels,
            value,
        }
    }
}

/// Prometheus' text format (0.0.4) of `families`; families of the same name (one query
/// run in several databases) are written as one.
pub fn render(families: &[Family]) -> String {
    let mut merged: BTreeMap<&str, (&Family, Vec<&Sample>)> = BTreeMap::new();
    for f in families {
        merged
            .entry(&f.name)
            .or_insert((f, vec![]))
            .1
            .extend(&f.samples);
    }
    let mut out = String::new();
    for (name, (f, samples)) in merged {
        let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for s in samples {
            out.push_str(name);
            out.push_str(s.suffix);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{k}=\"{v}\"");
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(s.value));
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// A number as PostgreSQL writes one (booleans are 1 and 0).
fn number(t: &str) -> Option<f64> {
    match t {
        "t" | "true" => Some(1.0),
        "f" | "false" => Some(0.0),
        _ => t.trim().parse().ok(),
    }
}

/// A one-dimensional array of numbers as PostgreSQL writes one (`{1,2.5,3}`).
fn array(t: &str) -> Option<Vec<f64>> {
    let inner = t.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.is_empty() {
        return Some(vec![]);
    }
    inner.split(',').map(number).collect()
}

/// Milliseconds of a duration: Go's form (`1h2m3.5s`, `250ms`, `10us`) or PostgreSQL's
/// interval text (`01:02:03.5`, with days before it: `1 day 01:02:03`).
pub fn milliseconds(t: &str) -> Option<f64> {
    let t = t.trim();
    if t.contains(':') {
        let (days, clock) = match t.split_once(" day") {
            Some((d, rest)) => (
                d.trim().parse::<f64>().ok()?,
                rest.trim_start_matches('s').trim(),
            ),
            None => (0.0, t),
        };
        let (sign, clock) = match clock.strip_prefix('-') {
            Some(c) => (-1.0, c),
            None => (1.0, clock),
        };
        let parts: Vec<f64> = clock
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [h, m, s] = parts[..] else { return None };
        return Some((days * 86_400.0 + sign * (h * 3600.0 + m * 60.0 + s)) * 1000.0);
    }
    let (sign, mut rest) = match t.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, t.strip_prefix('+').unwrap_or(t)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let per_ms = match &rest[..u_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        rest = &rest[u_end..];
        total += n * per_ms;
    }
    Some(sign * total)
}

fn is_pattern(t: &str) -> bool {
    t.contains(['*', '?', '['])
}

/// Shell-style matching of a whole name: `*` any run, `?` one character, `[abc]`/`[a-z]`
/// (`[!...]` or `[^...]` negated) one of a set.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Positions to come back to when a `*` must take one more character.
    let (mut pi, mut ni, mut star) = (0, 0, None::<(usize, usize)>);
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => class(&p[pi..], n[ni])
                .map(|(ok, len)| (ok, pi + len))
                .and_then(|(ok, next)| ok.then_some(next)),
            Some(c) if *c == n[ni] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `c` is in the class at the start of `p` (`[...]`), and the class's length.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let end = p.iter().skip(2).position(|x| *x == ']')? + 2;
    let body = &p[1..end];
    let (negated, body) = match body.first() {
        Some('!' | '^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            hit |= body[i] <= c && c <= body[i + 2];
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    Some((hit != negated, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(columns: &[&str], rows: &[&[Option<&str>]]) -> Rows {
        Rows {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| v.map(str::to_owned)).collect())
                .collect(),
        }
    }

    const QUERIES: &str = r#"
backends:
  query: SELECT datname, state, total, since, mode FROM x
  metrics:
    - datname: {usage: LABEL, description: Database}
    - state: {usage: LABEL, description: State}
    - total: {usage: GAUGE, description: "Backends"}
    - since: {usage: DURATION, description: "Oldest"}
    - mode:
        usage: MAPPEDMETRIC
        description: Mode
        metric_mapping: {fast: 1, slow: 2}
  target_databases: ["*"]
commits:
  name: xacts
  primary: true
  runonserver: ">=14.0.0 <17"
  query: SELECT n FROM y
  metrics:
    - n: {usage: COUNTER, description: "Commits", name: committed}
latency:
  query: SELECT ms, ms_bucket, ms_sum, ms_count FROM z
  metrics:
    - ms: {usage: HISTOGRAM, description: "Latency"}
"#;

    #[test]
    fn each_usage_makes_upstreams_metric() {
        let q = parse(QUERIES).expect("parses");
        let fams = q["backends"]
            .families(
                "backends",
                &rows(
                    &["datname", "state", "total", "since", "mode"],
                    &[
                        &[
                            Some("app"),
                            Some("idle"),
                            Some("3"),
                            Some("1m30s"),
                            Some("slow"),
                        ],
                        &[Some("app"), None, None, Some("00:00:02.5"), Some("other")],
                    ],
                ),
            )
            .expect("families");
        let text = render(&fams);
        assert!(text.contains("# TYPE cnpg_backends_total gauge"), "{text}");
        assert!(
            text.contains("cnpg_backends_total{datname=\"app\",state=\"idle\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("cnpg_backends_total{datname=\"app\",state=\"\"} NaN"),
            "{text}"
        );
        assert!(
            text.contains("cnpg_backends_since_milliseconds{datname=\"app\",state=\"idle\"} 90000"),
            "{text}"
        );
        assert!(
            text.contains("cnpg_backends_since_milliseconds{datname=\"app\",state=\"\"} 2500"),
            "{text}"
        );
        assert!(
            text.contains("cnpg_backends_mode{datname=\"app\",state=\"idle\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("state=\"\"} 0"),
            "an unmapped text gives no sample: {text}"
        );

        let c = &q["commits"];
        let fams = c
            .families("commits", &rows(&["n"], &[&[Some("42")]]))
            .expect("families");
        let text = render(&fams);
        assert!(
            text.contains("# TYPE cnpg_xacts_committed counter\ncnpg_xacts_committed 42\n"),
            "{text}"
        );
        let v = |n| PgVersion::from_num(n);
        assert_eq!(c.runs_on(true, v(150018)), Ok(true));
        assert_eq!(c.runs_on(false, v(150018)), Ok(false), "primary only");
        assert_eq!(c.runs_on(true, v(170002)), Ok(false), "below 17");
        assert_eq!(c.runs_on(true, v(130010)), Ok(false));

        let h = &q["latency"];
        let fams = h
            .families(
                "latency",
                &rows(
                    &["ms", "ms_bucket", "ms_sum", "ms_count"],
                    &[&[Some("{1,5,10}"), Some("{2,7,9}"), Some("40.5"), Some("10")]],
                ),
            )
            .expect("families");
        let text = render(&fams);
        for line in [
            "# TYPE cnpg_latency_ms histogram",
            "cnpg_latency_ms_bucket{le=\"1\"} 2",
            "cnpg_latency_ms_bucket{le=\"10\"} 9",
            "cnpg_latency_ms_bucket{le=\"+Inf\"} 10",
            "cnpg_latency_ms_sum 40.5",
            "cnpg_latency_ms_count 10",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_bad_file_or_result_says_where() {
        for (text, want) in [
            ("q:\n  query: ''\n", "q.query is empty"),
            (
                "q:\n  query: SELECT 1\n  metrics:\n    - a: {usage: GAUGE}\n      b: {usage: GAUGE}\n",
                "q.metrics[0] names 2 columns",
            ),
            (
                "q:\n  query: SELECT 1\n  metrics:\n    - a-b: {usage: GAUGE}\n",
                "\"a-b\" cannot be",
            ),
            (
                "q:\n  query: SELECT 1\n  metrics:\n    - a: {usage: MAPPEDMETRIC}\n",
                "MAPPEDMETRIC needs metric_mapping",
            ),
            (
                "q:\n  query: SELECT 1\n  runonserver: '>=x'\n",
                "q.runonserver",
            ),
            (
                "q:\n  query: SELECT 1\n  metrics:\n    - a: {usage: SOMETIMES}\n",
                "SOMETIMES",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(want), "{want} in {e}");
        }
        let q =
            parse("q:\n  query: SELECT a\n  metrics:\n    - a: {usage: GAUGE}\n").expect("parses");
        let e = q["q"]
            .families("q", &rows(&["a", "b"], &[]))
            .expect_err("extra column");
        assert!(
            e.contains("column \"b\", which its metrics do not list"),
            "{e}"
        );
        let e = q["q"]
            .families("q", &rows(&["a"], &[&[Some("x")]]))
            .expect_err("not a number");
        assert!(e.contains("column a: Some(\"x\") is not a number"), "{e}");
    }

    #[test]
    fn the_default_queries_parse() {
        let q = parse(DEFAULT_QUERIES).expect("the defaults parse");
        assert!(q.len() >= 14, "{}", q.len());
        assert_eq!(
            q["pg_stat_bgwriter_17"].name.as_deref(),
            Some("pg_stat_bgwriter")
        );
    }

    #[test]
    fn versions_and_databases() {
        let v = PgVersion::from_num(150018);
        assert_eq!(
            v,
            PgVersion {
                major: 15,
                minor: 18,
                patch: 0
            }
        );
        assert_eq!(
            PgVersion::from_num(90624),
            PgVersion {
                major: 9,
                minor: 6,
                patch: 24
            }
        );
        for (range, want) in [
            (">=15.0.0", true),
            ("<15", false),
            (">= 14, < 16", true),
            ("<14 || >=15.10", true),
            ("~15.18", true),
            ("~15.17", false),
            ("^15.2", true),
            ("!=15.18", false),
            ("15.18.0", true),
        ] {
            assert_eq!(version_matches(range, v), Ok(want), "{range}");
        }
        let q = UserQuery {
            target_databases: vec![
                "app*".into(),
                "postgres".into(),
                "d?".into(),
                "[xy]z".into(),
            ],
            ..Default::default()
        };
        let all: Vec<String> = ["app", "app2", "postgres", "d1", "d10", "yz", "other"]
            .map(String::from)
            .to_vec();
        assert!(q.needs_database_list());
        assert_eq!(
            q.databases("postgres", &all),
            ["app", "app2", "d1", "postgres", "yz"]
        );
        assert_eq!(
            UserQuery::default().databases("postgres", &all),
            ["postgres"]
        );
    }
}
