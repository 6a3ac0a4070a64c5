//! The connection to the three source databases (one MySQL/MariaDB server),
//! shared by `outbound reconcile` (reads) and `outbound loadgen` (writes).
//! The password is a secret: it never appears in `Debug` output or logs.

use std::time::Duration;

use anyhow::Context;
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use secrecy::{ExposeSecret, SecretString};

/// Where the source databases are and who to log in as.
#[derive(Clone)]
pub struct SourceDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
}

impl std::fmt::Debug for SourceDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceDb")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl SourceDb {
    /// The local stack's application user (sql/03_grants.sql).
    pub fn local_stack() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "outbound_app".into(),
            password: SecretString::from("outbound"),
        }
    }

    /// `user@host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// A new connection speaking utf8mb4, with the session in UTC (DATETIME
    /// columns hold UTC wall-clock time, as Debezium reads them) and a
    /// permissive sql_mode (the source tables hold zero dates).
    pub fn connect(&self) -> anyhow::Result<Conn> {
        let opts = OptsBuilder::new()
            .ip_or_hostname(Some(self.host.clone()))
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.expose_secret().to_owned()))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
            .init(vec![
                "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
                "SET SESSION time_zone = '+00:00'",
                "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
            ]);
        let mut conn = Conn::new(opts).with_context(|| {
            format!("connecting to the source databases as {}", self.describe())
        })?;
        conn.query_drop("SELECT 1")
            .with_context(|| format!("querying the source databases as {}", self.describe()))?;
        Ok(conn)
    }
}
