//! A configuration value that must never be printed: passwords, API keys.
//!
//! Held in a [`secrecy::SecretString`] (wiped on drop, `[REDACTED]` in
//! `Debug`), serialized as a mask so a printed configuration (`outbound
//! config check`) shows whether it is set, never what it is. The value
//! comes from the environment, the TOML file or the key's `*_file`
//! companion (a mounted Kubernetes Secret), see [`super::Config::load`].

use std::fmt;

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// What a set secret prints as.
pub const MASK: &str = "<redacted>";

#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(Option<SecretString>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        match value.is_empty() {
            true => Self(None),
            false => Self(Some(SecretString::from(value))),
        }
    }

    pub fn is_set(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|s| !s.expose_secret().is_empty())
    }

    /// The value, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        self.0.as_ref().map(|s| s.expose_secret()).unwrap_or("")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.is_set() {
            true => f.write_str(MASK),
            false => f.write_str("\"\""),
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_set() { MASK } else { "" })
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // `writeOnly` is JSON Schema's word for "never echo this back": the
        // key catalogue (keys.rs) reads it to mask the key everywhere.
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2-sekret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-sekret");
        assert!(!Secret::default().is_set());
        assert_eq!(serde_json::to_string(&Secret::default()).unwrap(), "\"\"");
        let parsed: Secret = serde_json::from_str("\"1234\"").unwrap();
        assert_eq!(parsed.expose(), "1234");
    }
}
