//! The index administration the sink does on the search node, one small
//! method per REST call: aliases, owner records (`_meta`), index creation,
//! settings, refresh, deletion. Every failure names the call and the body
//! the node answered.

use std::time::Duration;

use anyhow::Context;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};

use super::ownership::IndexOwner;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The search node, for administration calls.
#[derive(Clone)]
pub struct Cluster {
    client: Elasticsearch,
}

/// How creating an index ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    /// Another sink instance created it first.
    AlreadyExists,
}

impl Cluster {
    pub fn new(client: Elasticsearch) -> Self {
        Self { client }
    }

    /// One REST call; (status, body as JSON or as a string).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let what = format!("{} {path}", method_name(method));
        let response = self
            .client
            .send(
                method,
                path,
                HeaderMap::new(),
                None::<&()>,
                body.map(JsonBody::new),
                Some(TIMEOUT),
            )
            .await
            .with_context(|| what.clone())?;
        let status = response.status_code().as_u16();
        let text = response.text().await.with_context(|| what.clone())?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// A call that must answer 2xx.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, answer) = self.call(method, path, body).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{} {path}: HTTP {status}: {}",
            method_name(method),
            short(&answer)
        );
        Ok(answer)
    }

    /// The indices an alias points to (none when it does not exist).
    pub async fn alias_indices(&self, alias: &str) -> anyhow::Result<Vec<String>> {
        let (status, body) = self
            .call(Method::Get, &format!("/_alias/{alias}"), None)
            .await?;
        if status == 404 {
            return Ok(Vec::new());
        }
        anyhow::ensure!(
            status == 200,
            "GET /_alias/{alias}: HTTP {status}: {}",
            short(&body)
        );
        let mut out: Vec<String> = body
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// The owner record of every index matching `pattern` (closed ones too).
    pub async fn owners(&self, pattern: &str) -> anyhow::Result<Vec<(String, Option<IndexOwner>)>> {
        let path = format!("/{pattern}/_mapping?expand_wildcards=all&allow_no_indices=true");
        let (status, body) = self.call(Method::Get, &path, None).await?;
        if status == 404 {
            return Ok(Vec::new());
        }
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}: {}", short(&body));
        let mut out = Vec::new();
        for (index, v) in body.as_object().into_iter().flatten() {
            out.push((index.clone(), owner_in(index, v)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The owner record of one index.
    pub async fn owner(&self, index: &str) -> anyhow::Result<Option<IndexOwner>> {
        let body = self
            .ok(Method::Get, &format!("/{index}/_mapping"), None)
            .await?;
        match body.get(index) {
            Some(v) => owner_in(index, v),
            None => Ok(None),
        }
    }

    /// Records the owner in the index's `_meta` (which the sink alone writes).
    pub async fn put_owner(&self, index: &str, owner: &IndexOwner) -> anyhow::Result<()> {
        self.ok(
            Method::Put,
            &format!("/{index}/_mapping"),
            Some(json!({"_meta": {"outbound": owner}})),
        )
        .await
        .map(drop)
    }

    /// Creates an index (its template supplies settings and mappings) with
    /// its owner record and aliases: (alias, is the write index).
    pub async fn create_index(
        &self,
        index: &str,
        aliases: &[(&str, bool)],
        owner: &IndexOwner,
    ) -> anyhow::Result<Created> {
        let aliases: serde_json::Map<String, Value> = aliases
            .iter()
            .map(|(a, write)| {
                let v = if *write {
                    json!({"is_write_index": true})
                } else {
                    json!({})
                };
                ((*a).to_owned(), v)
            })
            .collect();
        let body = json!({"aliases": aliases, "mappings": {"_meta": {"outbound": owner}}});
        let (status, answer) = self
            .call(Method::Put, &format!("/{index}"), Some(body))
            .await?;
        if (200..300).contains(&status) {
            tracing::info!(%index, "created index");
            return Ok(Created::Created);
        }
        if answer["error"]["type"] == "resource_already_exists_exception" {
            return Ok(Created::AlreadyExists);
        }
        anyhow::bail!(
            "creating index {index}: HTTP {status}: {} (an index named like one of its aliases \
             may exist: delete it or set sink.index_prefix)",
            short(&answer)
        )
    }

    /// Applies alias actions atomically (one `_aliases` call).
    pub async fn update_aliases(&self, actions: Vec<Value>) -> anyhow::Result<()> {
        if actions.is_empty() {
            return Ok(());
        }
        self.ok(
            Method::Post,
            "/_aliases",
            Some(json!({ "actions": actions })),
        )
        .await
        .map(drop)
    }

    /// An index's `index.gc_deletes` in seconds (the default when unset).
    pub async fn gc_deletes_secs(&self, index: &str) -> anyhow::Result<u64> {
        let body = self
            .ok(
                Method::Get,
                &format!(
                    "/{index}/_settings/index.gc_deletes?include_defaults=true&flat_settings=true"
                ),
                None,
            )
            .await?;
        let v = &body[index];
        let text = v["settings"]["index.gc_deletes"]
            .as_str()
            .or_else(|| v["defaults"]["index.gc_deletes"].as_str())
            .unwrap_or("60s");
        parse_duration_secs(text)
            .with_context(|| format!("{index}: index.gc_deletes = {text:?} is not a duration"))
    }

    pub async fn put_settings(&self, index: &str, settings: Value) -> anyhow::Result<()> {
        self.ok(Method::Put, &format!("/{index}/_settings"), Some(settings))
            .await
            .map(drop)
    }

    pub async fn put_template(&self, name: &str, body: &Value) -> anyhow::Result<()> {
        self.ok(
            Method::Put,
            &format!("/_index_template/{name}"),
            Some(body.clone()),
        )
        .await
        .map(drop)
        .with_context(|| format!("putting index template {name}"))
    }

    pub async fn refresh(&self, index: &str) -> anyhow::Result<()> {
        self.ok(Method::Post, &format!("/{index}/_refresh"), None)
            .await
            .map(drop)
    }

    /// Documents in an index or alias (after its last refresh).
    pub async fn count(&self, index: &str) -> anyhow::Result<u64> {
        let body = self
            .ok(Method::Get, &format!("/{index}/_count"), None)
            .await?;
        body["count"]
            .as_u64()
            .with_context(|| format!("GET /{index}/_count: no count in {}", short(&body)))
    }

    /// Deletes an index; an absent one is fine.
    pub async fn delete_index(&self, index: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .call(Method::Delete, &format!("/{index}"), None)
            .await?;
        anyhow::ensure!(
            (200..300).contains(&status) || status == 404,
            "DELETE /{index}: HTTP {status}: {}",
            short(&body)
        );
        Ok(())
    }
}

fn owner_in(index: &str, mapping: &Value) -> anyhow::Result<Option<IndexOwner>> {
    match mapping["mappings"]["_meta"].get("outbound") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .with_context(|| format!("index {index}: unreadable owner record _meta.outbound: {v}")),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

/// A node's answer, cut for an error message.
fn short(body: &Value) -> String {
    let mut s = match body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// `60s`, `1h`, `500ms`, `2d` → seconds (rounded down).
pub fn parse_duration_secs(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "nanos" | "micros" => 0,
        "ms" => n / 1000,
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_elasticsearch_writes_them() {
        assert_eq!(parse_duration_secs("60s"), Some(60));
        assert_eq!(parse_duration_secs("1h"), Some(3600));
        assert_eq!(parse_duration_secs("1500ms"), Some(1));
        assert_eq!(parse_duration_secs("2d"), Some(172_800));
        assert_eq!(parse_duration_secs("10m"), Some(600));
        assert_eq!(parse_duration_secs("soon"), None);
        assert_eq!(parse_duration_secs("12"), None);
    }

    #[test]
    fn owner_records_are_read_from_the_mapping_meta() {
        let mapping = json!({"mappings": {"_meta": {"outbound": {"app_id": "a", "topic": "a-details", "epoch": 2}}}});
        let o = owner_in("i", &mapping).unwrap().unwrap();
        assert_eq!((o.app_id.as_str(), o.epoch), ("a", 2));
        assert_eq!(owner_in("i", &json!({"mappings": {}})).unwrap(), None);
        assert!(owner_in("i", &json!({"mappings": {"_meta": {"outbound": 7}}})).is_err());
    }
}
