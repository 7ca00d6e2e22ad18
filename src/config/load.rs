//! Reading a config file: TOML parsing, schema errors and validation
//! results, each located at `FILE:LINE:COL`.
//!
//! Loading runs in three passes so that one `check` shows every problem:
//! the TOML syntax (which stops everything when broken), the schema (each
//! section and each `[[…]]` element deserialized on its own, so one typo
//! does not hide the next), then the semantic checks of `validate.rs`,
//! whose findings name a path into the file that is resolved here to the
//! span of the offending key or value. Unknown keys are errors, but they do
//! not stop the semantic checks: when they are the only schema errors, the
//! file is validated once more without them, so that a misspelt key does not
//! hide a dangling reference three sections further down.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::schema::{
    ChannelConfig, ComponentConfig, Config, CorrelationConfig, CrisisConfig, EstimateConfig,
    GroupConfig, MeetingPlaceConfig, MqttConfig, PersonConfig, PolicyConfig, ProbeCheckConfig,
    ProbeConfig, RoleConfig, ServerConfig, ServiceConfig, SiteConfig, StepConfig, StoreConfig,
    SubscriptionConfig, TokenConfig,
};
use super::validate::{self, Finding, Seg};

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

/// One problem found in a config file, at a line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub level: Level,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Level::Error => write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            ),
            Level::Warning => write!(
                f,
                "{}:{}:{}: warning: {}",
                self.file, self.line, self.col, self.message
            ),
        }
    }
}

/// A config that parsed and validated, with its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    /// The file it came from; relative paths inside it are resolved from here.
    pub path: PathBuf,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every error found, in file order.
    #[error("{} error(s) in the configuration", .0.len())]
    Invalid(Vec<Diagnostic>),
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut loaded = load_text(&path.display().to_string(), &text, Some(path))?;
    loaded.path = path.to_owned();
    Ok(loaded)
}

/// Parses and validates config text; `name` is the file name used in
/// diagnostics. Files the config names (`[server] tls_cert`, `tls_key`)
/// are read only by [`load`], which knows where the config lives.
pub fn load_str(name: &str, text: &str) -> Result<Loaded, LoadError> {
    load_text(name, text, None)
}

/// [`load_str`], and with `file` (the config's own path) the checks of the
/// files it names, relative to its folder.
fn load_text(name: &str, text: &str, file: Option<&Path>) -> Result<Loaded, LoadError> {
    let lines = Lines::new(name, text);
    // The common case, a file that fits the schema, costs one parse (in
    // pieces, to bound the parser's memory); only a file with problems is
    // parsed again whole, and into a tree with spans, to find and locate
    // every one of them.
    let parsed = super::pieces::parse(text).map_or_else(|| toml::from_str(text), Ok);
    let (config, mut errors) = match parsed {
        Ok(config) => (config, Vec::new()),
        Err(e) => match parse_errors(text, &e) {
            Parsed::Stop(found) => return Err(LoadError::Invalid(lines.errors(found))),
            Parsed::WithoutUnknownKeys(config, unknown) => (*config, unknown),
        },
    };

    let mut findings = validate::validate(&config);
    if let Some(file) = file {
        findings.extend(validate::files(&config, file));
    }
    if findings.is_empty() && errors.is_empty() {
        return Ok(Loaded {
            config,
            warnings: Vec::new(),
            path: PathBuf::from(name),
        });
    }
    let (root, _) = DeTable::parse_recoverable(text);
    let (invalid, warnings): (Vec<Finding>, Vec<Finding>) =
        findings.into_iter().partition(|f| f.level == Level::Error);
    let locate = |findings: Vec<Finding>| {
        findings
            .into_iter()
            .map(|f| (resolve(root.get_ref(), &f.path), f.message))
            .collect::<Vec<_>>()
    };
    errors.extend(locate(invalid));
    if !errors.is_empty() {
        return Err(LoadError::Invalid(lines.errors(errors)));
    }
    Ok(Loaded {
        config,
        warnings: lines.diagnostics(locate(warnings), Level::Warning),
        path: PathBuf::from(name),
    })
}

/// What became of a text that did not deserialize.
enum Parsed {
    /// Errors that leave nothing to validate: every syntax error, or every
    /// schema error when some are more than an unknown key.
    Stop(Vec<(Range<usize>, String)>),
    /// Only unknown keys were wrong: the config without them, to be
    /// validated, and an error for each of them.
    WithoutUnknownKeys(Box<Config>, Vec<(Range<usize>, String)>),
}

/// Every syntax error, or when the syntax is fine every schema error, of a
/// text that did not deserialize (`first` is what serde said).
fn parse_errors(text: &str, first: &toml::de::Error) -> Parsed {
    let (root, syntax) = DeTable::parse_recoverable(text);
    let mut found: Vec<_> = if syntax.is_empty() {
        let schema = schema_errors(root.get_ref());
        if let Some(config) = without_unknown_keys(&root, &schema) {
            let errors = schema.into_iter().map(|e| (e.span, e.message)).collect();
            return Parsed::WithoutUnknownKeys(Box::new(config), errors);
        }
        schema.into_iter().map(|e| (e.span, e.message)).collect()
    } else {
        syntax
            .iter()
            .map(|e| (e.span().unwrap_or(0..0), first_line(e.message())))
            .collect()
    };
    if found.is_empty() {
        found.push((first.span().unwrap_or(0..0), first_line(first.message())));
    }
    Parsed::Stop(found)
}

/// The config the document makes with its unknown keys taken out, when
/// they are all that is wrong with it.
fn without_unknown_keys(root: &Spanned<DeTable<'_>>, schema: &[SchemaError]) -> Option<Config> {
    if schema.is_empty() {
        return None;
    }
    let mut table = DeValue::Table(root.get_ref().clone());
    for error in schema {
        if !remove(&mut table, error.unknown.as_deref()?) {
            return None;
        }
    }
    let value = Spanned::new(root.span(), table);
    Config::deserialize(ValueDeserializer::from(value)).ok()
}

/// Takes the key at `path` out of `value`; false when there is none.
fn remove(value: &mut DeValue<'_>, path: &[Step]) -> bool {
    let Some((last, inner)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for step in inner {
        let next = match (step, current) {
            (Step::Key(key), DeValue::Table(table)) => table.get_mut(key.as_str()),
            (Step::Index(i), DeValue::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => current = v.get_mut(),
            None => return false,
        }
    }
    match (last, current) {
        (Step::Key(key), DeValue::Table(table)) => table.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Maps byte offsets to 1-based lines and columns without rescanning the
/// text for every diagnostic (a big catalogue can have thousands).
struct Lines<'a> {
    name: &'a str,
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(name: &'a str, text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { name, text, starts }
    }

    /// Line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }

    fn errors(&self, found: Vec<(Range<usize>, String)>) -> Vec<Diagnostic> {
        self.diagnostics(found, Level::Error)
    }

    /// Diagnostics in file order.
    fn diagnostics(&self, found: Vec<(Range<usize>, String)>, level: Level) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = found
            .into_iter()
            .map(|(span, message)| {
                let (line, col) = self.line_col(span.start);
                Diagnostic {
                    file: self.name.to_owned(),
                    line,
                    col,
                    level,
                    message,
                }
            })
            .collect();
        out.sort_by_key(|d| (d.line, d.col));
        out.dedup();
        out
    }
}

/// The toml crate's messages can carry a second explanatory line; one
/// diagnostic is one line.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_owned()
}

/// The span a validation finding points at: the value at `path`, the key
/// itself for `Seg::Name`, or the nearest enclosing entry that exists
/// (a missing key is reported at its table).
fn resolve(root: &DeTable<'_>, path: &[Seg]) -> Range<usize> {
    let mut span = 0..0;
    let mut current: Option<&Spanned<DeValue<'_>>> = None;
    for seg in path {
        let table = match current {
            None => Some(root),
            Some(v) => v.get_ref().as_table(),
        };
        match seg {
            Seg::Key(key) => match table.and_then(|t| t.get(key.as_str())) {
                Some(v) => {
                    span = v.span();
                    current = Some(v);
                }
                None => break,
            },
            Seg::Name(key) => {
                if let Some((k, _)) = table.and_then(|t| t.get_key_value(key.as_str())) {
                    span = k.span();
                }
                break;
            }
            Seg::Index(i) => match current.and_then(|v| v.get_ref().as_array()?.get(*i)) {
                Some(v) => {
                    span = v.span();
                    current = Some(v);
                }
                None => break,
            },
        }
    }
    span
}

/// A top-level section (or a nested array of tables) and the type each of
/// its tables must deserialize as.
struct Part {
    key: &'static str,
    /// An array of tables (`[[key]]`) rather than one table.
    many: bool,
    check: Check,
    /// Arrays of tables inside, checked element by element on their own.
    nested: &'static [Part],
}

type Check = for<'i> fn(Spanned<DeValue<'i>>) -> Result<(), toml::de::Error>;

fn check<T: DeserializeOwned>(value: Spanned<DeValue<'_>>) -> Result<(), toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value)).map(drop)
}

const fn one(key: &'static str, check: Check) -> Part {
    Part {
        key,
        many: false,
        check,
        nested: &[],
    }
}

const fn many(key: &'static str, check: Check) -> Part {
    Part {
        key,
        many: true,
        check,
        nested: &[],
    }
}

/// Every key `Config` accepts at the top level.
const SECTIONS: &[Part] = &[
    one("site", check::<SiteConfig>),
    one("server", check::<ServerConfig>),
    many("token", check::<TokenConfig>),
    one("store", check::<StoreConfig>),
    Part {
        nested: &[many("subscription", check::<SubscriptionConfig>)],
        ..one("mqtt", check::<MqttConfig>)
    },
    Part {
        nested: &[many("check", check::<ProbeCheckConfig>)],
        ..many("probe", check::<ProbeConfig>)
    },
    many("component", check::<ComponentConfig>),
    many("service", check::<ServiceConfig>),
    many("person", check::<PersonConfig>),
    many("role", check::<RoleConfig>),
    many("group", check::<GroupConfig>),
    many("channel", check::<ChannelConfig>),
    Part {
        nested: &[many("step", check::<StepConfig>)],
        ..many("policy", check::<PolicyConfig>)
    },
    one("estimate", check::<EstimateConfig>),
    one("correlation", check::<CorrelationConfig>),
    many("meeting_place", check::<MeetingPlaceConfig>),
    one("crisis", check::<CrisisConfig>),
];

/// A mismatch between the document and the schema.
struct SchemaError {
    span: Range<usize>,
    message: String,
    /// Where the key is, when the error is an unknown key: taking it out
    /// leaves a document that may still be valid.
    unknown: Option<Vec<Step>>,
}

impl SchemaError {
    fn other((span, message): (Range<usize>, String)) -> Self {
        SchemaError {
            span,
            message,
            unknown: None,
        }
    }
}

/// One step of a path into the document.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every mismatch between the document and the schema.
fn schema_errors(root: &DeTable<'_>) -> Vec<SchemaError> {
    let mut out = Vec::new();
    if root.get("site").is_none() {
        out.push(SchemaError::other((
            0..0,
            "missing [site] section".to_owned(),
        )));
    }
    check_parts(root, SECTIONS, &[], &[], &mut out);
    out
}

/// Checks the keys of `table` (at `at` in the document) that are `parts`;
/// with no prefix (the top level), keys that are none of them are unknown.
fn check_parts(
    table: &DeTable<'_>,
    parts: &[Part],
    prefix: &[&str],
    at: &[Step],
    out: &mut Vec<SchemaError>,
) {
    for (key, value) in table.iter() {
        let Some(part) = parts.iter().find(|p| p.key == key.get_ref().as_ref()) else {
            if prefix.is_empty() {
                out.push(SchemaError {
                    span: key.span(),
                    message: format!("unknown key {:?}", key.get_ref()),
                    unknown: Some(vec![Step::Key(key.get_ref().to_string())]),
                });
            }
            continue;
        };
        let mut keys = prefix.to_vec();
        keys.push(part.key);
        let mut at = at.to_vec();
        at.push(Step::Key(part.key.to_owned()));
        if !part.many {
            check_piece(value, part, &keys, &at, false, out);
            continue;
        }
        match value.get_ref().as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let mut at = at.clone();
                    at.push(Step::Index(i));
                    check_piece(item, part, &keys, &at, true, out);
                }
            }
            None => out.push(SchemaError::other((
                value.span(),
                format!(
                    "{} must be an array of tables ([[{}]])",
                    keys.join("."),
                    keys.join(".")
                ),
            ))),
        }
    }
}

/// Deserializes one table as its part's type, leaving out its nested
/// arrays of tables, which are checked one element at a time. Serde stops
/// at the first error in a table, so the key at fault is taken out and the
/// rest tried again, until the table passes or the fault is not one key's.
/// An unknown key inside an inline table goes alone, so that the next one
/// beside it is found too; for any other fault the whole key goes.
fn check_piece(
    value: &Spanned<DeValue<'_>>,
    part: &Part,
    keys: &[&str],
    at: &[Step],
    element: bool,
    out: &mut Vec<SchemaError>,
) {
    let Some(table) = value.get_ref().as_table() else {
        if let Err(e) = (part.check)(value.clone()) {
            out.push(SchemaError::other(describe(&e, value, keys, element)));
        }
        return;
    };
    check_parts(table, part.nested, keys, at, out);
    let mut rest = DeValue::Table(
        table
            .iter()
            .filter(|(k, _)| !part.nested.iter().any(|p| p.key == k.get_ref().as_ref()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let mut removed: Vec<String> = Vec::new();
    // Each round takes one key out, so this ends; the bound is a guard.
    for _ in 0..=count_keys(&rest, 0) {
        let piece = Spanned::new(value.span(), rest.clone());
        let Err(e) = (part.check)(piece.clone()) else {
            return;
        };
        let message = e.message();
        if removed
            .iter()
            .any(|k| between_backticks(message, "missing field `") == Some(k.as_str()))
        {
            // Missing only because it was taken out above.
            return;
        }
        let (span, text) = describe(&e, &piece, keys, element);
        let Some(hit) = find(&piece, &e.span().unwrap_or_else(|| value.span()), 0) else {
            out.push(SchemaError::other((span, text)));
            return;
        };
        let path: Vec<Step> = hit.path.iter().cloned().map(Step::Key).collect();
        if hit.what == What::Key
            && between_backticks(message, "unknown field `").is_some()
            && remove(&mut rest, &path)
        {
            out.push(SchemaError {
                span,
                message: text,
                unknown: Some(at.iter().cloned().chain(path).collect()),
            });
            continue;
        }
        out.push(SchemaError::other((span, text)));
        let Some(key) = hit.path.into_iter().next() else {
            return;
        };
        if !remove(&mut rest, &[Step::Key(key.clone())]) {
            return;
        }
        removed.push(key);
    }
}

/// The keys in a value, nested ones included, as deep as [`find`] looks.
fn count_keys(value: &DeValue<'_>, depth: usize) -> usize {
    if depth > MAX_DEPTH {
        return 0;
    }
    match value {
        DeValue::Table(table) => table
            .iter()
            .map(|(_, v)| 1 + count_keys(v.get_ref(), depth + 1))
            .sum(),
        DeValue::Array(items) => items
            .iter()
            .map(|v| count_keys(v.get_ref(), depth + 1))
            .sum(),
        _ => 0,
    }
}

/// What a serde error inside `piece` (the table for `keys`) is about, said
/// in the words of the file: keys rather than fields, and which key a bad
/// value belongs to.
fn describe(
    e: &toml::de::Error,
    piece: &Spanned<DeValue<'_>>,
    keys: &[&str],
    element: bool,
) -> (Range<usize>, String) {
    let span = e.span().unwrap_or_else(|| piece.span());
    let message = first_line(e.message());
    let hit = find(piece, &span, 0);
    let header = |inner: &[String]| {
        let all: Vec<&str> = keys
            .iter()
            .copied()
            .chain(inner.iter().map(String::as_str))
            .collect();
        if element && inner.is_empty() {
            format!("[[{}]]", all.join("."))
        } else {
            format!("[{}]", all.join("."))
        }
    };
    if let Some(name) = between_backticks(&message, "unknown field `") {
        // The span is the key: the table is its parent.
        let table = hit
            .as_ref()
            .map(|h| h.path[..h.path.len().saturating_sub(1)].to_vec())
            .unwrap_or_default();
        return (span, format!("unknown key {name:?} in {}", header(&table)));
    }
    if let Some(name) = between_backticks(&message, "missing field `") {
        // The span is the table itself: its header, or an inline table.
        let table = hit.as_ref().map(|h| h.path.clone()).unwrap_or_default();
        return (span, format!("missing key {name:?} in {}", header(&table)));
    }
    let mut message = message.replace('`', "\"");
    for (rust, words) in [
        ("expected u16", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected f64", "expected a number"),
    ] {
        message = message.replace(rust, words);
    }
    let Some(hit) = hit
        .as_ref()
        .filter(|h| h.what == What::Value && !h.path.is_empty())
    else {
        return (span, message);
    };
    let at = format!("{} in {}", hit.path.join("."), header(&[]));
    // humantime_serde only says "expected a duration"; humantime says why.
    if message.ends_with("expected a duration")
        && let Some(text) = hit.text.as_deref()
        && let Err(why) = humantime::parse_duration(text)
    {
        return (span, format!("{at}: invalid duration {text:?}: {why}"));
    }
    (span, format!("{at}: {message}"))
}

fn between_backticks<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Key,
    Value,
}

/// Where a span is inside a table: the keys leading to it, whether it is
/// the last key or its value, and the value's text when it is a string.
struct Hit {
    path: Vec<String>,
    what: What,
    text: Option<String>,
}

/// TOML nests only as deep as people write it; the bound keeps a hostile
/// file from exhausting the stack here.
const MAX_DEPTH: usize = 64;

fn find(value: &Spanned<DeValue<'_>>, span: &Range<usize>, depth: usize) -> Option<Hit> {
    if depth > MAX_DEPTH {
        return None;
    }
    match value.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                let at = |what, text| {
                    Some(Hit {
                        path: vec![k.get_ref().to_string()],
                        what,
                        text,
                    })
                };
                if k.span() == *span {
                    return at(What::Key, None);
                }
                if v.span() == *span {
                    return at(What::Value, v.get_ref().as_str().map(str::to_owned));
                }
                if let Some(mut hit) = find(v, span, depth + 1) {
                    hit.path.insert(0, k.get_ref().to_string());
                    return Some(hit);
                }
            }
            None
        }
        DeValue::Array(items) => items.iter().find_map(|item| {
            if item.span() == *span {
                Some(Hit {
                    path: Vec::new(),
                    what: What::Value,
                    text: item.get_ref().as_str().map(str::to_owned),
                })
            } else {
                find(item, span, depth + 1)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_str("t.toml", text) {
            Ok(_) => Vec::new(),
            Err(LoadError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let lines = Lines::new("f", "ab\næøå x\n");
        assert_eq!(lines.line_col(0), (1, 1));
        assert_eq!(lines.line_col(3), (2, 1));
        assert_eq!(lines.line_col("ab\næøå ".len()), (2, 5));
    }

    #[test]
    fn syntax_errors_stop_loading() {
        let found = errors("[site]\nname = \"x\nfoo = 1\n");
        assert!(!found.is_empty());
        assert!(found[0].starts_with("t.toml:2:"), "{found:?}");
    }

    #[test]
    fn every_schema_error_is_reported_with_its_key() {
        let found = errors(
            "[site]\nname = \"x\"\n\n[[component]]\nid = \"a\"\nkind = \"room\"\ndepnds_on = []\n\n\
             [[component]]\nid = \"b\"\nkind = \"rom\"\n\n[[role]]\nid = \"r\"\n\
             rotation = { every = \"1 wek\", start = \"2026-01-01T00:00:00Z\", people = [\"p\"] }\n\n\
             [[componnet]]\n",
        );
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(
            found[0],
            "t.toml:7:1: unknown key \"depnds_on\" in [[component]]"
        );
        assert!(found[1].starts_with("t.toml:11:8: kind in [[component]]: unknown variant"));
        assert!(
            found[2].starts_with(
                "t.toml:15:22: rotation.every in [[role]]: invalid duration \"1 wek\""
            ),
            "{found:?}"
        );
        assert_eq!(found[3], "t.toml:17:3: unknown key \"componnet\"");
    }

    #[test]
    fn missing_keys_are_reported_at_their_table() {
        let found = errors("[site]\nname = \"x\"\n\n[[component]]\nid = \"a\"\n");
        assert_eq!(found, ["t.toml:4:1: missing key \"kind\" in [[component]]"]);
        let found = errors("[server]\n");
        assert_eq!(found, ["t.toml:1:1: missing [site] section"]);
    }

    #[test]
    fn nested_arrays_of_tables_are_checked_element_by_element() {
        let found = errors(
            "[site]\nname = \"x\"\n\n[[policy]]\nid = \"p\"\n[[policy.step]]\nonn = \"open\"\n\
             [[policy.step]]\non = \"open\"\nvai = []\n",
        );
        assert_eq!(
            found,
            [
                "t.toml:6:1: missing key \"on\" in [[policy.step]]",
                "t.toml:7:1: unknown key \"onn\" in [[policy.step]]",
                "t.toml:10:1: unknown key \"vai\" in [[policy.step]]",
            ]
        );
    }

    #[test]
    fn unknown_keys_alone_leave_the_rest_to_validation() {
        let found = errors(
            "[site]\nname = \"x\"\n\n[[component]]\nid = \"a\"\nkind = \"room\"\n\
             depends_on = [\"zz\"]\ncolour = \"red\"\n\n\
             [[role]]\nid = \"r\"\n\
             rotation = { every = \"1w\", start = \"2026-01-01T00:00:00Z\", people = [], by = 1, to = 2 }\n",
        );
        assert_eq!(
            found,
            [
                "t.toml:7:15: component \"a\" depends on unknown component \"zz\"",
                "t.toml:8:1: unknown key \"colour\" in [[component]]",
                "t.toml:12:69: role \"r\": rotation has no people",
                "t.toml:12:73: unknown key \"by\" in [role.rotation]",
                "t.toml:12:81: unknown key \"to\" in [role.rotation]",
            ]
        );
    }

    #[test]
    fn unknown_keys_beside_a_wrong_value_stop_before_validation() {
        // With `kind` wrong there is no component to validate; what the
        // reference checks would say about it could be wrong too.
        let found = errors(
            "[site]\nname = \"x\"\n\n[[component]]\nid = \"a\"\nkind = \"rom\"\n\
             depends_on = [\"zz\"]\ncolour = \"red\"\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("t.toml:6:8: kind in [[component]]: unknown variant"));
        assert_eq!(
            found[1],
            "t.toml:8:1: unknown key \"colour\" in [[component]]"
        );
    }

    #[test]
    fn validation_findings_resolve_to_their_values() {
        let text = "[site]\nname = \"x\"\n\n[[component]]\nid = \"a\"\nkind = \"room\"\n\
                    depends_on = [\"b\", \"zz\"]\n\n[[component]]\nid = \"b\"\nkind = \"room\"\n";
        let (root, _) = DeTable::parse_recoverable(text);
        let lines = Lines::new("t", text);
        let span = resolve(
            root.get_ref(),
            &[
                Seg::Key("component".into()),
                Seg::Index(0),
                Seg::Key("depends_on".into()),
                Seg::Index(1),
            ],
        );
        assert_eq!(lines.line_col(span.start), (7, 20));
        let span = resolve(
            root.get_ref(),
            &[
                Seg::Key("component".into()),
                Seg::Index(1),
                Seg::Name("kind".into()),
            ],
        );
        assert_eq!(lines.line_col(span.start), (11, 1));
        // A key that is absent falls back to its table.
        let span = resolve(
            root.get_ref(),
            &[
                Seg::Key("component".into()),
                Seg::Index(1),
                Seg::Key("backup".into()),
            ],
        );
        assert_eq!(lines.line_col(span.start), (9, 1));
    }
}
