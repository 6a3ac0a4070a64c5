//! Test helpers: build Debezium JSON change events the way the MySQL/MariaDB
//! connector and Kafka Connect's JsonConverter write them (compact, schema
//! first), with or without the schema wrapper.
#![allow(dead_code)]

/// One column of the table schema: name, Connect type, logical name, parameters (JSON).
#[derive(Clone, Debug)]
pub struct ColumnDef {
    pub name: &'static str,
    pub connect: &'static str,
    pub logical: Option<&'static str>,
    pub params: Option<&'static str>,
}

pub const fn col(name: &'static str, connect: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        connect,
        logical: None,
        params: None,
    }
}

pub const fn logical(
    name: &'static str,
    connect: &'static str,
    logical: &'static str,
) -> ColumnDef {
    ColumnDef {
        name,
        connect,
        logical: Some(logical),
        params: None,
    }
}

/// A row image: column name → JSON literal.
pub type Image = Vec<(&'static str, String)>;

pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

pub fn opt_str(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), json_str)
}

#[derive(Clone, Debug)]
pub struct Event {
    pub connector: &'static str,
    pub prefix: &'static str,
    pub db: String,
    pub table: String,
    pub op: &'static str,
    pub columns: Vec<ColumnDef>,
    pub before: Option<Image>,
    pub after: Option<Image>,
    pub ts_ms: i64,
    pub file: &'static str,
    pub pos: u64,
    pub snapshot: &'static str,
}

impl Event {
    pub fn topic(&self) -> String {
        format!("{}.{}.{}", self.prefix, self.db, self.table)
    }

    fn image_schema(&self, field: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut s = format!(
                    "{{\"type\":\"{}\",\"optional\":{}",
                    c.connect,
                    c.name != "id"
                );
                if let Some(l) = c.logical {
                    s.push_str(&format!(",\"name\":\"{l}\",\"version\":1"));
                }
                if let Some(p) = c.params {
                    s.push_str(&format!(",\"parameters\":{p}"));
                }
                s.push_str(&format!(",\"field\":\"{}\"}}", c.name));
                s
            })
            .collect();
        format!(
            "{{\"type\":\"struct\",\"fields\":[{}],\"optional\":true,\"name\":\"{}.{}.{}.Value\",\"field\":\"{field}\"}}",
            cols.join(","),
            self.prefix,
            self.db,
            self.table
        )
    }

    pub fn schema_json(&self) -> String {
        let source = format!(
            "{{\"type\":\"struct\",\"fields\":[{{\"type\":\"string\",\"optional\":false,\"field\":\"version\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"connector\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"name\"}},{{\"type\":\"int64\",\"optional\":false,\"field\":\"ts_ms\"}},{{\"type\":\"string\",\"optional\":true,\"name\":\"io.debezium.data.Enum\",\"version\":1,\"parameters\":{{\"allowed\":\"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental\"}},\"default\":\"false\",\"field\":\"snapshot\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"db\"}},{{\"type\":\"string\",\"optional\":true,\"field\":\"sequence\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_us\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ns\"}},{{\"type\":\"string\",\"optional\":true,\"field\":\"table\"}},{{\"type\":\"int64\",\"optional\":false,\"field\":\"server_id\"}},{{\"type\":\"string\",\"optional\":true,\"field\":\"gtid\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"file\"}},{{\"type\":\"int64\",\"optional\":false,\"field\":\"pos\"}},{{\"type\":\"int32\",\"optional\":false,\"field\":\"row\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"thread\"}},{{\"type\":\"string\",\"optional\":true,\"field\":\"query\"}}],\"optional\":false,\"name\":\"io.debezium.connector.{}.Source\",\"version\":1,\"field\":\"source\"}}",
            self.connector
        );
        let transaction = "{\"type\":\"struct\",\"fields\":[{\"type\":\"string\",\"optional\":false,\"field\":\"id\"},{\"type\":\"int64\",\"optional\":false,\"field\":\"total_order\"},{\"type\":\"int64\",\"optional\":false,\"field\":\"data_collection_order\"}],\"optional\":true,\"name\":\"event.block\",\"version\":1,\"field\":\"transaction\"}";
        format!(
            "{{\"type\":\"struct\",\"fields\":[{},{},{source},{transaction},{{\"type\":\"string\",\"optional\":false,\"field\":\"op\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ms\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_us\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ns\"}}],\"optional\":false,\"name\":\"{}.{}.{}.Envelope\",\"version\":2}}",
            self.image_schema("before"),
            self.image_schema("after"),
            self.prefix,
            self.db,
            self.table
        )
    }

    fn image_json(image: &Option<Image>) -> String {
        match image {
            None => "null".to_owned(),
            Some(cols) => {
                let parts: Vec<String> = cols
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", json_str(k)))
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
        }
    }

    pub fn payload_json(&self) -> String {
        format!(
            "{{\"before\":{},\"after\":{},\"source\":{{\"version\":\"3.4.0.Final\",\"connector\":\"{}\",\"name\":\"{}\",\"ts_ms\":{},\"snapshot\":\"{}\",\"db\":\"{}\",\"sequence\":null,\"ts_us\":{},\"ts_ns\":{},\"table\":\"{}\",\"server_id\":1,\"gtid\":null,\"file\":\"{}\",\"pos\":{},\"row\":0,\"thread\":7,\"query\":null}},\"transaction\":null,\"op\":\"{}\",\"ts_ms\":{},\"ts_us\":{},\"ts_ns\":{}}}",
            Self::image_json(&self.before),
            Self::image_json(&self.after),
            self.connector,
            self.prefix,
            self.ts_ms,
            self.snapshot,
            self.db,
            self.ts_ms * 1000,
            self.ts_ms * 1_000_000,
            self.table,
            self.file,
            self.pos,
            self.op,
            self.ts_ms + 3,
            (self.ts_ms + 3) * 1000,
            (self.ts_ms + 3) * 1_000_000
        )
    }

    pub fn to_json(&self, with_schema: bool) -> String {
        if with_schema {
            format!(
                "{{\"schema\":{},\"payload\":{}}}",
                self.schema_json(),
                self.payload_json()
            )
        } else {
            self.payload_json()
        }
    }
}

/// Removes insignificant whitespace from JSON text.
pub fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in json.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}
