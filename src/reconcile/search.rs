//! Reading the live indices, a bounded page at a time: `_mget` for the
//! documents the batch expects, and a point-in-time scan with `search_after`
//! for what the indices hold beyond them. Works against OpenSearch 2.x and
//! Elasticsearch 8.x (their point-in-time APIs differ in path only).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};

use crate::sink::SinkConfig;

const KEEP_ALIVE: &str = "5m";

/// A client of the search node, blocking.
pub struct Search {
    client: Elasticsearch,
    runtime: tokio::runtime::Runtime,
    url: String,
}

/// Which point-in-time API the node speaks.
#[derive(Clone, Copy)]
enum PitApi {
    OpenSearch,
    Elasticsearch,
}

impl Search {
    pub fn new(config: &SinkConfig) -> anyhow::Result<Self> {
        let service = crate::sink::service::BulkService::new(config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        Ok(Self {
            client: service.client().clone(),
            runtime,
            url: config.url.clone(),
        })
    }

    /// Sends one request; returns the status and the JSON body.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.runtime.block_on(async {
            let response = self
                .client
                .send(
                    method,
                    path,
                    HeaderMap::new(),
                    Option::<&()>::None,
                    body.map(JsonBody::new),
                    Some(Duration::from_secs(120)),
                )
                .await
                .with_context(|| format!("{method:?} {}{path}", self.url))?;
            let status = response.status_code().as_u16();
            let text = response
                .text()
                .await
                .with_context(|| format!("reading the answer to {method:?} {}{path}", self.url))?;
            let value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            Ok((status, value))
        })
    }

    fn ok(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!(
                "{method:?} {}{path}: HTTP {status}: {}",
                self.url,
                short(&value)
            );
        }
        Ok(value)
    }

    /// Makes every acknowledged write visible to searches; false when the
    /// alias does not exist (nothing was indexed yet).
    pub fn refresh(&self, alias: &str) -> anyhow::Result<bool> {
        let (status, value) = self.call(Method::Post, &format!("/{alias}/_refresh"), None)?;
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => bail!(
                "refreshing {alias} on {}: HTTP {status}: {}",
                self.url,
                short(&value)
            ),
        }
    }

    /// How many documents of `alias` match `query`.
    pub fn count(&self, alias: &str, query: &Value) -> anyhow::Result<u64> {
        let (status, value) = self.call(
            Method::Post,
            &format!("/{alias}/_count"),
            Some(json!({ "query": query })),
        )?;
        match status {
            200..=299 => value["count"]
                .as_u64()
                .with_context(|| format!("counting {alias}: no count in {}", short(&value))),
            404 => Ok(0),
            _ => bail!(
                "counting {alias} on {}: HTTP {status}: {}",
                self.url,
                short(&value)
            ),
        }
    }

    /// The `_source` of each of `ids` that `alias` holds.
    pub fn mget(&self, alias: &str, ids: &[String]) -> anyhow::Result<HashMap<String, Value>> {
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let (status, value) = self.call(
            Method::Post,
            &format!("/{alias}/_mget"),
            Some(json!({ "ids": ids })),
        )?;
        match status {
            200..=299 => {}
            404 => return Ok(out),
            _ => bail!(
                "reading {} documents of {alias} on {}: HTTP {status}: {}",
                ids.len(),
                self.url,
                short(&value)
            ),
        }
        let docs = value["docs"]
            .as_array()
            .with_context(|| format!("_mget of {alias}: no docs in {}", short(&value)))?;
        for d in docs {
            if let Some(e) = d.get("error") {
                bail!("_mget of {alias}: document {}: {}", d["_id"], short(e));
            }
            if d["found"].as_bool() == Some(true) {
                if let Some(id) = d["_id"].as_str() {
                    out.insert(id.to_owned(), d["_source"].clone());
                }
            }
        }
        Ok(out)
    }

    /// Every document of `alias` matching `query`, in `sort` order (which
    /// must be unique per document), a page at a time, from one point in
    /// time: `page(ids with their requested _source fields)`.
    pub fn scan(
        &self,
        alias: &str,
        query: &Value,
        sort: &Value,
        source: &Value,
        page_size: usize,
        mut page: impl FnMut(Vec<(String, Value)>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let Some((api, pit)) = self.open_pit(alias)? else {
            return Ok(());
        };
        let mut after: Option<Value> = None;
        let result = (|| -> anyhow::Result<()> {
            loop {
                let mut body = json!({
                    "size": page_size,
                    "query": query,
                    "sort": sort,
                    "_source": source,
                    "track_total_hits": false,
                    "pit": { "id": pit, "keep_alive": KEEP_ALIVE },
                });
                if let Some(a) = &after {
                    body["search_after"] = a.clone();
                }
                let value = self.ok(Method::Post, "/_search", Some(body))?;
                let hits = value["hits"]["hits"]
                    .as_array()
                    .with_context(|| format!("scanning {alias}: no hits in {}", short(&value)))?;
                if hits.is_empty() {
                    return Ok(());
                }
                after = hits.last().map(|h| h["sort"].clone());
                let n = hits.len();
                let docs = hits
                    .iter()
                    .filter_map(|h| Some((h["_id"].as_str()?.to_owned(), h["_source"].clone())))
                    .collect();
                page(docs)?;
                if n < page_size {
                    return Ok(());
                }
            }
        })();
        self.close_pit(api, &pit);
        result
    }

    fn open_pit(&self, alias: &str) -> anyhow::Result<Option<(PitApi, String)>> {
        let (status, value) = self.call(
            Method::Post,
            &format!("/{alias}/_search/point_in_time?keep_alive={KEEP_ALIVE}"),
            None,
        )?;
        if (200..300).contains(&status) {
            if let Some(id) = value["pit_id"].as_str() {
                return Ok(Some((PitApi::OpenSearch, id.to_owned())));
            }
        }
        if status == 404 && value.to_string().contains("index_not_found") {
            return Ok(None);
        }
        let (status, value) = self.call(
            Method::Post,
            &format!("/{alias}/_pit?keep_alive={KEEP_ALIVE}"),
            None,
        )?;
        match (status, value["id"].as_str()) {
            (200..=299, Some(id)) => Ok(Some((PitApi::Elasticsearch, id.to_owned()))),
            (404, _) => Ok(None),
            _ => bail!(
                "opening a point in time on {alias} at {}: HTTP {status}: {}",
                self.url,
                short(&value)
            ),
        }
    }

    fn close_pit(&self, api: PitApi, pit: &str) {
        let result = match api {
            PitApi::OpenSearch => self.call(
                Method::Delete,
                "/_search/point_in_time",
                Some(json!({ "pit_id": [pit] })),
            ),
            PitApi::Elasticsearch => self.call(Method::Delete, "/_pit", Some(json!({ "id": pit }))),
        };
        if let Err(e) = result {
            tracing::warn!("closing a point in time: {e:#} (it expires after {KEEP_ALIVE})");
        }
    }
}

/// A response body, cut for an error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
