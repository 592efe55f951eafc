//! Reading an OpenMetrics text exposition back: [`scrape`] fetches one over HTTP, [`parse`]
//! checks it and returns its families and samples.
//!
//! [`parse`] is strict where the OpenMetrics text format is (version 1.0.0): the text ends with
//! `# EOF`; there are no blank lines; every sample belongs to a family whose `# TYPE` line came
//! before it, families do not interleave, a family has at most one `# HELP` and one `# TYPE`;
//! a sample's name is its family's name plus the suffix its type allows (`_total` or
//! `_created` for a counter, none for a gauge, ...); label names are unique within a sample and
//! no sample (name and labels) appears twice; counter values are numbers ≥ 0.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (a counter's ends with `_total`).
    pub name: String,
    /// Label names and values, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// One metric family: its metadata and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name (`# TYPE <name> <type>`).
    pub name: String,
    /// `counter`, `gauge`, ...
    pub kind: String,
    /// The `# HELP` text, if any.
    pub help: Option<String>,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exposition {
    /// Families, in the order written.
    pub families: Vec<Family>,
}

/// Why a text is not a valid exposition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number (0: the text as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Exposition {
    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The type of family `name`.
    pub fn family_type(&self, name: &str) -> Option<&str> {
        self.family(name).map(|f| f.kind.as_str())
    }

    /// Every sample, in the order written.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| f.samples.iter())
    }

    /// The names of every sample (what PromQL queries see).
    pub fn sample_names(&self) -> BTreeSet<&str> {
        self.samples().map(|s| s.name.as_str()).collect()
    }

    /// The value of the sample `name` whose labels are exactly `labels` (in any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
    }

    /// The sum of every sample called `name`, whatever its labels (0 if none).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Whether some sample `name` has the label `label="value"`.
    pub fn has_label(&self, name: &str, label: &str, value: &str) -> bool {
        self.samples()
            .any(|s| s.name == name && s.labels.iter().any(|(k, v)| k == label && v == value))
    }
}

/// Suffixes a sample name may add to its family's name, by family type.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" | "stateset" => &[""],
        "info" => &["_info"],
        "histogram" | "gaugehistogram" => {
            &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
        }
        "summary" => &["", "_count", "_sum", "_created"],
        _ => &[],
    }
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    is_name(s) && !s.contains(':')
}

/// Parses and checks an OpenMetrics text exposition (see the module documentation).
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let err = |line: usize, message: String| ParseError { line, message };
    let body = text
        .strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .ok_or_else(|| err(0, "the exposition does not end with `# EOF`".into()))?;
    let mut out = Exposition::default();
    let mut seen_families = BTreeSet::new();
    let mut seen_samples = BTreeSet::new();
    for (i, line) in body.lines().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            return Err(err(n, "blank line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let rest = parts.next();
            if !is_name(name) {
                return Err(err(n, format!("bad metric family name {name:?}")));
            }
            let current = out.families.last().map(|f| f.name.as_str());
            if current != Some(name) {
                if !seen_families.insert(name.to_owned()) {
                    return Err(err(n, format!("family {name} appears twice (interleaved)")));
                }
                out.families.push(Family {
                    name: name.to_owned(),
                    kind: String::new(),
                    help: None,
                    samples: Vec::new(),
                });
            }
            let Some(f) = out.families.last_mut() else {
                return Err(err(n, "no family".into()));
            };
            if !f.samples.is_empty() {
                return Err(err(n, format!("metadata of {name} after its samples")));
            }
            match keyword {
                "TYPE" => {
                    let kind = rest.unwrap_or("");
                    if !f.kind.is_empty() {
                        return Err(err(n, format!("second # TYPE for {name}")));
                    }
                    if suffixes(kind).is_empty() {
                        return Err(err(n, format!("unknown type {kind:?}")));
                    }
                    f.kind = kind.to_owned();
                }
                "HELP" => {
                    if f.help.is_some() {
                        return Err(err(n, format!("second # HELP for {name}")));
                    }
                    f.help = Some(rest.unwrap_or("").to_owned());
                }
                "UNIT" => {
                    let unit = rest.unwrap_or("");
                    if !name.ends_with(&format!("_{unit}")) {
                        return Err(err(n, format!("{name} does not end with its unit {unit}")));
                    }
                }
                other => return Err(err(n, format!("unknown metadata line # {other}"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(err(n, format!("comment line {line:?}")));
        }
        let sample = parse_sample(line).map_err(|m| err(n, m))?;
        let Some(f) = out.families.last_mut() else {
            return Err(err(n, format!("sample {} before any # TYPE", sample.name)));
        };
        if f.kind.is_empty() {
            return Err(err(n, format!("sample {} has no # TYPE", sample.name)));
        }
        let suffix = sample.name.strip_prefix(f.name.as_str());
        if !suffix.is_some_and(|s| suffixes(&f.kind).contains(&s)) {
            return Err(err(
                n,
                format!(
                    "sample {} does not belong to the {} family {} (allowed suffixes {:?})",
                    sample.name,
                    f.kind,
                    f.name,
                    suffixes(&f.kind)
                ),
            ));
        }
        if f.kind == "counter" && (sample.value.is_nan() || sample.value < 0.0) {
            return Err(err(
                n,
                format!("counter {} has value {}", sample.name, sample.value),
            ));
        }
        let mut key_labels = sample.labels.clone();
        key_labels.sort();
        if !seen_samples.insert((sample.name.clone(), key_labels)) {
            return Err(err(n, format!("sample {line:?} appears twice")));
        }
        f.samples.push(sample);
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err(format!("bad sample name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut s = after;
        loop {
            if let Some(r) = s.strip_prefix('}') {
                s = r;
                break;
            }
            let eq = s
                .find("=\"")
                .ok_or_else(|| format!("bad label set in {line:?}"))?;
            let key = &s[..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("label {key} twice in {line:?}"));
            }
            let mut value = String::new();
            let mut chars = s[eq + 2..].char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some((j, '"')) => break eq + 2 + j + 1,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err(format!("bad escape in {line:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            s = &s[end..];
            if let Some(r) = s.strip_prefix(',') {
                s = r;
                if s.starts_with('}') {
                    return Err(format!("trailing comma in {line:?}"));
                }
            } else if !s.starts_with('}') {
                return Err(format!("bad label set in {line:?}"));
            }
        }
        rest = s;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    let mut fields = rest.split(' ');
    let v = fields.next().unwrap_or("");
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ if v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) && !v.is_empty() => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}"))?,
        _ => return Err(format!("bad value {v:?}")),
    };
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(ts), None) if ts.parse::<f64>().is_ok() => {}
        _ => return Err(format!("unexpected text after the value in {line:?}")),
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// One HTTP answer of a metrics endpoint.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body.
    pub body: String,
}

/// `GET /metrics` from `addr` (`ip:port`) over HTTP/1.0, within `timeout` per socket
/// operation. Anything but status 200 is an error.
pub fn scrape(addr: &str, timeout: Duration) -> std::io::Result<Scrape> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad(format!("{addr} resolves to nothing")))?;
    let mut c = TcpStream::connect_timeout(&sa, timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).map_err(|e| bad(e.to_string()))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad(format!("no header end in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        return Err(bad(format!("answered {status:?}")));
    }
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Ok(Scrape {
        content_type,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_a_valid_exposition() {
        let t = "# HELP a_orders Orders.\n# TYPE a_orders counter\na_orders_total 3\n\
                 # TYPE a_depth gauge\na_depth{ring=\"x\",q=\"a\\\"b\"} 1.5\n# EOF\n";
        let e = parse(t).unwrap();
        assert_eq!(e.value("a_orders_total", &[]), Some(3.0));
        assert_eq!(
            e.value("a_depth", &[("q", "a\"b"), ("ring", "x")]),
            Some(1.5)
        );
        assert_eq!(
            e.family("a_orders").unwrap().help.as_deref(),
            Some("Orders.")
        );
    }

    #[test]
    fn refuses_what_openmetrics_refuses() {
        for (bad, why) in [
            ("# TYPE a counter\na_total 1\n", "EOF"),
            ("a_total 1\n# EOF\n", "before any # TYPE"),
            ("# HELP a x\na 1\n# EOF\n", "no # TYPE"),
            ("# TYPE a counter\na 1\n# EOF\n", "does not belong"),
            ("# TYPE a gauge\na_total 1\n# EOF\n", "does not belong"),
            (
                "# TYPE a counter\na_total -1\n# EOF\n",
                "counter a_total has value",
            ),
            (
                "# TYPE a counter\na_total NaN\n# EOF\n",
                "counter a_total has value",
            ),
            ("# TYPE a gauge\na 1\n\n# EOF\n", "blank line"),
            ("# TYPE a gauge\na 1\na 2\n# EOF\n", "twice"),
            (
                "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n",
                "interleaved",
            ),
            ("# TYPE a gauge\n# TYPE a gauge\n# EOF\n", "second # TYPE"),
            ("# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n# EOF\n", "twice"),
            ("# TYPE a gauge\na{x=\"1\"} one\n# EOF\n", "bad value"),
            ("# TYPE a gauge\na 1\n# EOF\nb 1\n", "EOF"),
            ("# TYPE a histogramm\n# EOF\n", "unknown type"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
