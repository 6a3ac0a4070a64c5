//! Layering: defaults < TOML file < `OUTBOUND_*` environment < flags, each
//! value remembered with where it came from. Every key a layer names is
//! checked against the catalogue (a misspelt key or section is an error
//! naming it, with the nearest known key), and every value is read by its
//! key's type, so `OUTBOUND_INSTANCE_ID=1` is the string "1" and
//! `OUTBOUND_KAFKA__PARTITIONS=x` is an error naming the variable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use super::keys::{catalogue, Catalogue, Key, Kind, ENV_PREFIX};

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
    /// A secret read from the file its `*_file` key names.
    SecretFile(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(n) => write!(f, "flag --{n}"),
            Source::SecretFile(p) => write!(f, "secret file {}", p.display()),
        }
    }
}

/// The merged layers: a partial config tree and each set key's source.
#[derive(Debug, Default)]
pub struct Layers {
    pub tree: Map<String, Value>,
    pub sources: BTreeMap<String, Source>,
}

impl Layers {
    fn set(&mut self, path: &str, value: Value, source: Source) {
        let mut node = &mut self.tree;
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().unwrap_or(path);
        for part in parts {
            let entry = node
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            node = entry.as_object_mut().expect("just made an object");
        }
        node.insert(last.to_owned(), value);
        self.sources.insert(path.to_owned(), source);
    }

    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut node = &self.tree;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let v = node.get(part)?;
            if parts.peek().is_none() {
                return Some(v);
            }
            node = v.as_object()?;
        }
        None
    }

    /// The TOML file's keys.
    pub fn file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        let tree = serde_json::to_value(table).context("config file as a value tree")?;
        let Value::Object(tree) = tree else {
            bail!("config file {} is not a TOML table", path.display());
        };
        self.file_table(catalogue(), path, "", tree)
    }

    fn file_table(
        &mut self,
        cat: &Catalogue,
        file: &Path,
        prefix: &str,
        table: Map<String, Value>,
    ) -> anyhow::Result<()> {
        for (name, value) in table {
            let path = match prefix {
                "" => name,
                p => format!("{p}.{name}"),
            };
            if let Some(key) = cat.key(&path) {
                let value = from_file(key, value).with_context(|| {
                    format!("config key `{path}` in the file {}", file.display())
                })?;
                self.set(&path, value, Source::File(file.to_owned()));
            } else if cat.is_section(&path) {
                let Value::Object(inner) = value else {
                    bail!(
                        "config file {}: `{path}` is a section: write it as [{path}]",
                        file.display()
                    );
                };
                self.file_table(cat, file, &path, inner)?;
            } else if value.is_object() {
                bail!(
                    "config file {}: unknown section [{path}]{}",
                    file.display(),
                    hint(cat, &path)
                );
            } else {
                bail!(
                    "config file {}: unknown key `{path}`{}",
                    file.display(),
                    hint(cat, &path)
                );
            }
        }
        Ok(())
    }

    /// The `OUTBOUND_*` variables among `vars`. A variable with `__` names a
    /// key of a section and must be one; a variable without `__` is taken
    /// when it names a top-level key, refused when it is one misspelt, and
    /// otherwise left alone (scripts have their own `OUTBOUND_*` variables,
    /// e.g. OUTBOUND_STACK_DIR).
    pub fn env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<()> {
        let cat = catalogue();
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, raw) in vars {
            let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
            let path = rest.replace("__", ".");
            if let Some(key) = cat.key(&path) {
                let value = from_text(key, &[raw])
                    .with_context(|| format!("environment variable {var} (config key `{path}`)"))?;
                self.set(&path, value, Source::Env(var));
                continue;
            }
            if rest.contains("__") {
                let section = path.rsplit_once('.').map(|(s, _)| s).unwrap_or("");
                if cat.is_section(section) {
                    bail!(
                        "environment variable {var}: section [{section}] has no key `{path}`{}",
                        hint(cat, &path)
                    );
                }
                bail!(
                    "environment variable {var}: no config section `{section}`{}",
                    hint(cat, &path)
                );
            }
            // `OUTBOUND_KAFKA_PARTITIONS`: a key with one underscore too few.
            if let Some(key) = cat.keys.iter().find(|k| k.path.replace('.', "_") == rest) {
                bail!(
                    "environment variable {var}: did you mean {} (config key `{}`; sections are separated by two underscores)?",
                    key.env(),
                    key.path
                );
            }
            if let Some(key) = cat
                .keys
                .iter()
                .filter(|k| !k.path.contains('.'))
                .find(|k| strsim::levenshtein(&k.path, &rest) <= 2)
            {
                bail!(
                    "environment variable {var}: did you mean {} (config key `{}`)?",
                    key.env(),
                    key.path
                );
            }
        }
        Ok(())
    }

    /// One flag's values (several for a repeated list or map flag).
    pub fn flag(&mut self, key: &Key, values: &[String]) -> anyhow::Result<()> {
        let value = from_text(key, values)
            .with_context(|| format!("flag --{} (config key `{}`)", key.flag(), key.path))?;
        self.set(&key.path, value, Source::Flag(key.flag()));
        Ok(())
    }

    /// Replaces each secret whose `*_file` key is set by the file's content
    /// (a trailing newline dropped): Kubernetes Secrets and Docker secrets
    /// arrive as mounted files.
    pub fn secret_files(&mut self) -> anyhow::Result<()> {
        let cat = catalogue();
        for key in cat.keys.iter().filter(|k| k.kind == Kind::Secret) {
            let file_key = format!("{}_file", key.path);
            let Some(Value::String(file)) = self.get(&file_key).cloned() else {
                continue;
            };
            if file.is_empty() {
                continue;
            }
            if let (Some(Value::String(s)), Some(source)) =
                (self.get(&key.path), self.sources.get(&key.path))
            {
                if !s.is_empty() {
                    bail!(
                        "config keys `{}` ({source}) and `{file_key}` are both set: set one",
                        key.path
                    );
                }
            }
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!("config key `{file_key}`: reading the secret file {file}")
            })?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            self.set(
                &key.path,
                Value::String(secret.to_owned()),
                Source::SecretFile(PathBuf::from(file)),
            );
        }
        Ok(())
    }
}

fn hint(cat: &Catalogue, path: &str) -> String {
    match cat.nearest(path) {
        Some(near) => {
            format!(" (did you mean `{near}`?; every key is listed by `outbound run --help`)")
        }
        None => " (every key is listed by `outbound run --help`)".into(),
    }
}

/// A TOML value for `key`: strings keys also take numbers and booleans
/// (`instance_id = 1`), anything else must have the key's type.
fn from_file(key: &Key, value: Value) -> anyhow::Result<Value> {
    let value = match (key.kind, value) {
        (Kind::Str | Kind::Secret, Value::Number(n)) => Value::String(n.to_string()),
        (Kind::Str | Kind::Secret, Value::Bool(b)) => Value::String(b.to_string()),
        (Kind::Str | Kind::Secret, v @ Value::String(_)) => v,
        (Kind::Int, v @ Value::Number(_)) => v,
        (Kind::Bool, v @ Value::Bool(_)) => v,
        (Kind::List, Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(Value::String(s)),
                    other => bail!("expected a list of strings, found {other}"),
                })
                .collect::<anyhow::Result<_>>()?,
        ),
        (Kind::Map, Value::Object(m)) => Value::Object(
            m.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, Value::String(s))),
                    Value::Number(n) => Ok((k, Value::String(n.to_string()))),
                    Value::Bool(b) => Ok((k, Value::String(b.to_string()))),
                    other => bail!("`{k}`: expected a string, found {other}"),
                })
                .collect::<anyhow::Result<_>>()?,
        ),
        (kind, v) => bail!("expected {}, found {v}", kind_name(kind)),
    };
    check_choice(key, value)
}

/// A value for `key` from the text of an environment variable or flag.
pub fn from_text(key: &Key, values: &[String]) -> anyhow::Result<Value> {
    let one = || -> anyhow::Result<&str> {
        match values {
            [v] => Ok(v.as_str()),
            _ => bail!("expected one value, got {}", values.len()),
        }
    };
    let value = match key.kind {
        Kind::Str | Kind::Secret => Value::String(one()?.to_owned()),
        Kind::Int => {
            let text = one()?.trim();
            let n: i64 = text
                .replace('_', "")
                .parse()
                .map_err(|_| anyhow::anyhow!("expected an integer, found {text:?}"))?;
            Value::from(n)
        }
        Kind::Bool => Value::Bool(match one()?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            other => bail!("expected true or false, found {other:?}"),
        }),
        Kind::List => {
            let mut items = Vec::new();
            for text in values {
                let text = text.trim();
                if text.starts_with('[') {
                    let parsed: toml::Table = toml::from_str(&format!("v = {text}"))
                        .map_err(|e| anyhow::anyhow!("not a TOML array of strings: {e}"))?;
                    let array = serde_json::to_value(parsed.get("v"))?;
                    items.extend(
                        from_file(key, array)?
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    );
                } else {
                    items.extend(
                        text.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| Value::String(s.to_owned())),
                    );
                }
            }
            Value::Array(items)
        }
        Kind::Map => {
            let mut map = Map::new();
            for text in values {
                let text = text.trim();
                if text.starts_with('{') {
                    let parsed: toml::Table = toml::from_str(&format!("v = {text}"))
                        .map_err(|e| anyhow::anyhow!("not a TOML inline table: {e}"))?;
                    let table = serde_json::to_value(parsed.get("v"))?;
                    if let Value::Object(m) = from_file(key, table)? {
                        map.extend(m);
                    }
                } else {
                    for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let (k, v) = pair
                            .split_once('=')
                            .ok_or_else(|| anyhow::anyhow!("expected key=value, found {pair:?}"))?;
                        map.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
                    }
                }
            }
            Value::Object(map)
        }
    };
    check_choice(key, value)
}

fn check_choice(key: &Key, value: Value) -> anyhow::Result<Value> {
    if let Value::String(s) = &value {
        if !key.choices.is_empty() && !key.choices.contains(s) {
            bail!("{s:?} is not one of {}", key.choices.join(", "));
        }
    }
    Ok(value)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str | Kind::Secret => "a string",
        Kind::Int => "an integer",
        Kind::Bool => "true or false",
        Kind::List => "a list of strings",
        Kind::Map => "a table of strings",
    }
}
