//! The catalogue of configuration keys, derived from the config structs
//! themselves: their JSON Schema (schemars reads the field types and `///`
//! doc comments) gives every key's path, type and documentation, and
//! `Config::default()` gives its default. The file, the environment, the
//! flags of every subcommand, `--help`, `outbound config check` and
//! `outbound.example.toml` are all generated from this one list, so adding a
//! field to a config struct is the whole of adding a key.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::Config;

/// How a key's value is written in the environment and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any string, taken verbatim (never parsed as a number).
    Str,
    /// A string that is never printed.
    Secret,
    Int,
    Bool,
    /// A list of strings: a TOML array, or comma-separated in the
    /// environment; a repeatable flag.
    List,
    /// String to string: a TOML table, or `k=v,k2=v2` in the environment;
    /// a repeatable `--flag k=v`.
    Map,
}

/// One configuration key.
#[derive(Debug, Clone)]
pub struct Key {
    /// Dotted path, e.g. `kafka.bootstrap_servers`.
    pub path: String,
    pub kind: Kind,
    /// The field's doc comment.
    pub doc: String,
    /// The value `Config::default()` has (secrets masked).
    pub default: Value,
    /// The allowed values, for keys that are enums.
    pub choices: Vec<String>,
    /// Extra flag names kept for compatibility (`x-flag-alias`).
    pub aliases: Vec<String>,
}

/// A `[section]` of the file: a nested config struct.
#[derive(Debug, Clone)]
pub struct Section {
    /// Dotted path, e.g. `sink.tls`.
    pub path: String,
    pub doc: String,
}

pub struct Catalogue {
    pub keys: Vec<Key>,
    pub sections: Vec<Section>,
}

/// The environment prefix of every key.
pub const ENV_PREFIX: &str = "OUTBOUND_";

impl Key {
    /// `--kafka-bootstrap-servers`, without the dashes.
    pub fn flag(&self) -> String {
        self.path.replace(['.', '_'], "-")
    }

    /// `OUTBOUND_KAFKA__BOOTSTRAP_SERVERS`.
    pub fn env(&self) -> String {
        env_name(&self.path)
    }

    /// The section it belongs to (`""` for top-level keys).
    pub fn section(&self) -> &str {
        self.path.rsplit_once('.').map(|(s, _)| s).unwrap_or("")
    }

    /// The last path segment.
    pub fn name(&self) -> &str {
        self.path
            .rsplit_once('.')
            .map(|(_, n)| n)
            .unwrap_or(&self.path)
    }

    /// The first sentence of the doc comment, for short help.
    pub fn summary(&self) -> &str {
        let doc = self.doc.as_str();
        match doc.find(". ") {
            Some(i) => &doc[..=i],
            None => doc,
        }
    }

    /// The default as the environment or a flag would write it.
    pub fn default_text(&self) -> String {
        value_text(&self.default)
    }
}

/// `OUTBOUND_` + the path in capitals, `.` written `__`.
pub fn env_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "__").to_ascii_uppercase()
    )
}

/// A value as one line of text (lists comma-separated, maps `k=v`).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(","),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Catalogue {
    pub fn key(&self, path: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.path == path)
    }

    pub fn is_section(&self, path: &str) -> bool {
        self.sections.iter().any(|s| s.path == path)
    }

    /// The known key or section nearest to a misspelt `path`, for "did you
    /// mean" hints.
    pub fn nearest(&self, path: &str) -> Option<&str> {
        self.keys
            .iter()
            .map(|k| k.path.as_str())
            .chain(self.sections.iter().map(|s| s.path.as_str()))
            .map(|p| (strsim::levenshtein(p, path), p))
            .filter(|(d, p)| *d <= 3.max(p.len() / 4))
            .min()
            .map(|(_, p)| p)
    }
}

/// The catalogue, built once.
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let schema = schemars::schema_for!(Config);
        let defaults = serde_json::to_value(Config::default()).expect("defaults serialize");
        let root = schema.as_value();
        let defs = root
            .get("$defs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut out = Catalogue {
            keys: Vec::new(),
            sections: Vec::new(),
        };
        walk(root, &defs, "", &defaults, &mut out);
        out
    })
}

/// Follows `$ref` (directly or as the one entry of `allOf`) into `$defs`.
fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    let reference = schema.get("$ref").or_else(|| {
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0].get("$ref"))
    });
    match reference
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
    {
        Some(target) => resolve(target, defs),
        None => schema,
    }
}

fn doc_of(schema: &Value) -> String {
    let part = |k: &str| schema.get(k).and_then(Value::as_str).unwrap_or("");
    let (title, description) = (part("title"), part("description"));
    let joined = match (title.is_empty(), description.is_empty()) {
        (false, false) => format!("{title} {description}"),
        _ => format!("{title}{description}"),
    };
    // One paragraph: help text and TOML comments wrap on their own.
    joined.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn walk(
    schema: &Value,
    defs: &Map<String, Value>,
    prefix: &str,
    defaults: &Value,
    out: &mut Catalogue,
) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        let path = match prefix {
            "" => name.clone(),
            p => format!("{p}.{name}"),
        };
        let target = resolve(property, defs);
        let doc = match doc_of(property) {
            d if d.is_empty() => doc_of(target),
            d => d,
        };
        let default = defaults.get(name).cloned().unwrap_or(Value::Null);
        if target.get("properties").is_some() {
            out.sections.push(Section {
                path: path.clone(),
                doc,
            });
            walk(target, defs, &path, &default, out);
            continue;
        }
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut choices = strings(target.get("enum"));
        // Enums with documented variants are `oneOf` lists of `const`s or
        // `enum`s.
        for variant in target
            .get("oneOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            choices.extend(
                variant
                    .get("const")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            );
            choices.extend(strings(variant.get("enum")));
        }
        let aliases = match property.get("x-flag-alias") {
            Some(Value::String(s)) => vec![s.clone()],
            other => strings(other),
        };
        let ty = target
            .get("type")
            .and_then(|t| match t {
                Value::Array(a) => a.iter().find(|x| x.as_str() != Some("null")),
                t => Some(t),
            })
            .and_then(Value::as_str)
            .unwrap_or(if choices.is_empty() { "" } else { "string" });
        let kind = match ty {
            _ if target.get("writeOnly") == Some(&Value::Bool(true)) => Kind::Secret,
            "string" => Kind::Str,
            "integer" => Kind::Int,
            "boolean" => Kind::Bool,
            "array" => Kind::List,
            "object" => Kind::Map,
            other => panic!("config key `{path}`: unsupported schema type {other:?}"),
        };
        out.keys.push(Key {
            path,
            kind,
            doc,
            default,
            choices,
            aliases,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_key_with_a_doc_and_unique_names() {
        let c = catalogue();
        assert!(c.keys.len() > 40, "{} keys", c.keys.len());
        let mut flags = std::collections::BTreeSet::new();
        for k in &c.keys {
            assert!(
                !k.doc.is_empty(),
                "config key `{}` has no doc comment",
                k.path
            );
            assert!(flags.insert(k.flag()), "flag --{} twice", k.flag());
            for a in &k.aliases {
                assert!(flags.insert(a.clone()), "flag --{a} twice");
            }
        }
        let partitions = c.key("kafka.partitions").unwrap();
        assert_eq!(partitions.kind, Kind::Int);
        assert_eq!(partitions.default, Value::from(4));
        assert_eq!(partitions.env(), "OUTBOUND_KAFKA__PARTITIONS");
        assert_eq!(partitions.flag(), "kafka-partitions");
        assert_eq!(c.key("instance_id").unwrap().kind, Kind::Str);
        assert_eq!(c.key("sink.password").unwrap().kind, Kind::Secret);
        assert_eq!(c.key("kafka.properties").unwrap().kind, Kind::Map);
        assert_eq!(c.key("source.extra_item_topics").unwrap().kind, Kind::List);
        assert!(c.is_section("sink.tls"));
        assert!(c.key("sink.tls.ca_file").is_some());
        assert!(c
            .key("kafka.security_protocol")
            .unwrap()
            .choices
            .contains(&"sasl_ssl".to_owned()));
    }

    #[test]
    fn every_secret_has_a_file_companion() {
        let c = catalogue();
        for k in c.keys.iter().filter(|k| k.kind == Kind::Secret) {
            let file = format!("{}_file", k.path);
            assert!(
                c.key(&file).is_some_and(|f| f.kind == Kind::Str),
                "secret `{}` has no `{file}` key",
                k.path
            );
        }
    }

    #[test]
    fn misspellings_find_the_key() {
        let c = catalogue();
        assert_eq!(
            c.nearest("kafka.bootstrap_server"),
            Some("kafka.bootstrap_servers")
        );
        assert_eq!(c.nearest("kakfa"), Some("kafka"));
        assert_eq!(c.nearest("completely.unrelated.thing"), None);
    }
}
