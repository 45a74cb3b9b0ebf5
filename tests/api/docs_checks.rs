//! The operator documents against the code: `docs/configuration.md` must
//! name every configuration key the code accepts and no other, with the
//! right environment variable and the code's default; `docs/alerts/` must
//! pass `promtool check rules` and its own `promtool test rules`. A key or
//! a series renamed in the code then fails here instead of leaving the
//! document quietly wrong.

use holdfast::config::Config;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

mod diagrams;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// What one walk of `Config`'s serde description learnt.
#[derive(Default)]
struct Walk {
    /// Every field name met, as a dotted path (`breaker.redis.open_wait`).
    keys: BTreeSet<String>,
    /// Paths with nothing left to learn (a plain value, or a section whose
    /// keys are all done): skipped on later walks.
    done: BTreeSet<String>,
    /// Paths of lists (`idp`): their keys cannot be set one by one.
    lists: BTreeSet<String>,
    /// The path newly found done, which ended this walk, if any.
    newly_done: Option<String>,
}

/// The error that ends a walk at a plain value.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("walk stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop
    }
}

/// A deserializer that answers structs with their own field names, options
/// with `Some`, lists with one element, and stops at anything else (a
/// duration, a URL, an enum) or at a section with nothing left to walk,
/// recording the path where it stopped.
struct Tracer<'a> {
    path: String,
    walk: &'a RefCell<Walk>,
}

impl Tracer<'_> {
    fn child(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }
}

impl<'de, 'a> Deserializer<'de> for Tracer<'a> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.walk.borrow_mut().newly_done.get_or_insert(self.path);
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        let mut walk = self.walk.borrow_mut();
        let paths: Vec<(&'static str, String)> =
            fields.iter().map(|f| (*f, self.child(f))).collect();
        walk.keys.extend(paths.iter().map(|(_, p)| p.clone()));
        let fields: Vec<_> = paths
            .into_iter()
            .filter(|(_, p)| !walk.done.contains(p))
            .collect();
        if fields.is_empty() {
            // The struct would only complain of missing fields: skip it.
            if !self.path.is_empty() {
                walk.newly_done.get_or_insert(self.path);
            }
            return Err(Stop);
        }
        drop(walk);
        visitor.visit_map(Fields {
            fields,
            current: None,
            walk: self.walk,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.walk.borrow_mut().lists.insert(self.path.clone());
        visitor.visit_seq(OneElement(Some(self)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A struct's fields, each value walked at its own path.
struct Fields<'a> {
    fields: Vec<(&'static str, String)>,
    current: Option<String>,
    walk: &'a RefCell<Walk>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        if self.fields.is_empty() {
            return Ok(None);
        }
        let (name, path) = self.fields.remove(0);
        self.current = Some(path);
        seed.deserialize(de::value::BorrowedStrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Stop> {
        let path = self.current.take().expect("a key before its value");
        seed.deserialize(Tracer {
            path,
            walk: self.walk,
        })
    }
}

/// A list of one element, walked at the list's own path.
struct OneElement<'a>(Option<Tracer<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(tracer) => seed.deserialize(tracer).map(Some),
            None => Ok(None),
        }
    }
}

/// The keys a configuration file may set, read from serde's description of
/// `Config` (no list kept by hand): each key's dotted path, mapped to the
/// list it sits in, if any. Each walk stops at the first plain value (or
/// finished section) it meets; that path is skipped on the next walk, until
/// one walk finds nothing new.
fn config_keys() -> BTreeMap<String, Option<String>> {
    let walk = RefCell::new(Walk::default());
    for _ in 0..1000 {
        let _ = Config::deserialize(Tracer {
            path: String::new(),
            walk: &walk,
        });
        let mut w = walk.borrow_mut();
        match w.newly_done.take() {
            Some(path) => {
                assert!(w.done.insert(path.clone()), "walked {path} twice");
            }
            None => break,
        }
    }
    let w = walk.into_inner();
    let sections: BTreeSet<&str> = w
        .keys
        .iter()
        .filter_map(|k| k.rsplit_once('.').map(|(section, _)| section))
        .collect();
    w.keys
        .iter()
        .filter(|k| !sections.contains(k.as_str()))
        .map(|k| {
            let list = w
                .lists
                .iter()
                .find(|l| k.starts_with(&format!("{l}.")))
                .cloned();
            (k.clone(), list)
        })
        .collect()
}

/// The variable that sets `key` (DESIGN.md §6).
fn variable(key: &str) -> String {
    format!("HOLDFAST_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// One row of a key table in `docs/configuration.md`.
struct DocRow {
    variable: String,
    /// The default, when the document gives one as a TOML value.
    default: Option<String>,
}

/// The rows of every table whose header starts `| key |`, by key.
fn documented_keys() -> BTreeMap<String, DocRow> {
    let text = std::fs::read_to_string(repo("docs/configuration.md")).expect("configuration.md");
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| key |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let code = |cell: &str| {
            cell.strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .map(str::to_string)
        };
        let key = code(cells[1]).unwrap_or_else(|| panic!("key not in backticks: {line}"));
        let row = DocRow {
            variable: code(cells[2]).unwrap_or_else(|| panic!("variable not in backticks: {line}")),
            default: code(cells[3]),
        };
        assert!(rows.insert(key.clone(), row).is_none(), "{key} twice");
    }
    rows
}

#[test]
fn configuration_doc_names_every_key_with_its_variable() {
    let code = config_keys();
    assert!(
        code.contains_key("breaker.redis.open_wait") && code.contains_key("idp.jwks_url"),
        "the walk reaches nested sections and lists: {code:?}"
    );
    let doc = documented_keys();
    let missing: Vec<&String> = code.keys().filter(|k| !doc.contains_key(*k)).collect();
    let unknown: Vec<&String> = doc.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of date: keys of the code it lacks: {missing:?}; \
         keys it names that the code does not have: {unknown:?}"
    );
    for (key, list) in &code {
        let expected = variable(list.as_deref().unwrap_or(key));
        assert_eq!(doc[key].variable, expected, "environment variable of {key}");
    }
}

/// A TOML file setting `keys` (dotted path → TOML value), `[[idp]]` keys in
/// one block that also holds `idp_required`.
fn toml_of(keys: &BTreeMap<String, String>, idp_required: &str) -> String {
    let mut top = String::new();
    let mut sections: BTreeMap<&str, String> = BTreeMap::new();
    for (key, value) in keys {
        match key.rsplit_once('.') {
            None => top.push_str(&format!("{key} = {value}\n")),
            Some((section, name)) => sections
                .entry(section)
                .or_default()
                .push_str(&format!("{name} = {value}\n")),
        }
    }
    let idp = sections.remove("idp").unwrap_or_default();
    for (section, body) in sections {
        top.push_str(&format!("[{section}]\n{body}"));
    }
    top.push_str(&format!("[[idp]]\n{idp_required}{idp}"));
    top
}

fn load(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{text}\n{e}"));
    format!("{config:?}")
}

#[test]
fn configuration_doc_defaults_are_the_codes() {
    let code = config_keys();
    let defaults: BTreeMap<String, String> = documented_keys()
        .into_iter()
        .filter(|(key, _)| code.contains_key(key))
        .filter_map(|(key, row)| row.default.map(|d| (key, d)))
        .collect();
    assert!(defaults.len() > 40, "{defaults:?}");
    let required = "name = \"up\"\nissuer = \"https://idp.example/\"\n\
                    jwks_url = \"https://idp.example/jwks\"\naudience = \"x\"\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let documented = load(dir.path(), "documented.toml", &toml_of(&defaults, required));
    let bare = load(
        dir.path(),
        "bare.toml",
        &toml_of(&BTreeMap::new(), required),
    );
    assert_eq!(
        documented, bare,
        "a default in docs/configuration.md differs from the code's"
    );
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The series the code emits: the name given to each `metrics::counter!`,
/// `gauge!` and `histogram!` under `src/`.
fn emitted_series() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in rust_files(&repo("src")) {
        let text = std::fs::read_to_string(&file).expect("source");
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(&format!("metrics::{macro_name}")) {
                let rest = &text[at..];
                let name = rest
                    .split('"')
                    .nth(1)
                    .unwrap_or_else(|| panic!("{}: a metric without a name", file.display()));
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every `holdfast_*` token in `text`.
fn series_named_in(text: &str) -> BTreeSet<String> {
    text.match_indices("holdfast_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn metrics_doc_names_every_emitted_series_and_alerts_use_only_those() {
    let emitted = emitted_series();
    assert!(
        emitted.contains("holdfast_breaker_state") && emitted.contains("holdfast_mode"),
        "{emitted:?}"
    );
    let doc = std::fs::read_to_string(repo("docs/metrics.md")).expect("metrics.md");
    let table = doc
        .split("## What is emitted")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a `## What is emitted` section");
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    assert_eq!(
        emitted, documented,
        "docs/metrics.md's table must list exactly the series the code emits"
    );
    let rules = std::fs::read_to_string(repo("docs/alerts/holdfast.rules.yml")).expect("rules");
    for name in series_named_in(&rules) {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| emitted.contains(*base))
            .unwrap_or(&name);
        assert!(
            emitted.contains(base),
            "holdfast.rules.yml uses {name}, which the code does not emit"
        );
    }
}

/// Runs `promtool ARGS` in `docs/alerts`, failing with what it said.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo("docs/alerts"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed to check docs/alerts ({e}): install Debian's `prometheus` \
                 package (scripts/test does so when run as root) or put promtool on PATH"
            )
        });
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "holdfast.rules.yml"]);
    promtool(&["test", "rules", "holdfast.rules.test.yml"]);
}
