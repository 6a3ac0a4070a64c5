//! `[kafka]`: the brokers, how to reach them securely (TLS, SASL), and the
//! topics and transactions `outbound` creates. [`KafkaConfig::client_config`]
//! is the one place a librdkafka client configuration is made, so every
//! client (stream consumer, transactional producer, restore reader, admin,
//! sink, operator commands) connects the same way.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Brokers to bootstrap from, `host:port` comma-separated.
    #[schemars(extend("x-flag-alias" = "bootstrap-servers"))]
    pub bootstrap_servers: String,
    /// How clients talk to the brokers: plaintext, ssl (TLS), sasl_plaintext
    /// or sasl_ssl (SASL authentication over TLS).
    pub security_protocol: SecurityProtocol,
    /// SASL authentication (security_protocol sasl_plaintext or sasl_ssl).
    pub sasl: SaslConfig,
    /// TLS (security_protocol ssl or sasl_ssl).
    pub tls: KafkaTlsConfig,
    /// Partitions of the internal topics (`-rekey`, `-rollup-deltas`,
    /// `-detail-changes`), their changelogs and the output topics. Fixed
    /// for the life of an app id: state is partitioned by it.
    #[schemars(extend("x-flag-alias" = "partitions"))]
    pub partitions: i32,
    /// Replication factor of the topics outbound creates (3 on a production
    /// cluster, 1 on a single broker).
    pub replication_factor: i32,
    /// How often the open transaction is committed (outputs, changelogs and
    /// consumed offsets together), in milliseconds.
    pub commit_interval_ms: u64,
    /// Broker-side transaction timeout in milliseconds: bounds how long a
    /// crashed instance's open transaction blocks readers of the partitions
    /// it wrote.
    pub transaction_timeout_ms: u64,
    /// How often records the stages have committed are deleted from the
    /// repartition topics (which have no time retention), in milliseconds;
    /// 0 turns it off.
    pub purge_interval_ms: u64,
    /// How long the output topics keep tombstones (`delete.retention.ms`)
    /// when outbound creates them: a sink further behind than this misses
    /// deletes for good (the `OutboundSinkLagNearDeleteRetention` alert
    /// warns before). Existing topics keep theirs; the sink warns when it is
    /// lower.
    pub delete_retention_ms: u64,
    /// Extra librdkafka properties for every client, applied last (e.g.
    /// `{ "socket.keepalive.enable" = "true" }`).
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// Kerberos (needs a keytab and krb5 configuration via `kafka.properties`).
    #[serde(rename = "GSSAPI")]
    Gssapi,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::Gssapi => "GSSAPI",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SaslConfig {
    /// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or GSSAPI.
    pub mechanism: SaslMechanism,
    /// SASL user name.
    pub username: String,
    /// SASL password.
    pub password: Secret,
    /// File holding the SASL password (e.g. a mounted Kubernetes Secret);
    /// instead of `kafka.sasl.password`.
    pub password_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTlsConfig {
    /// PEM file of the CA(s) that signed the brokers' certificates; empty =
    /// the system's trust store.
    pub ca_file: String,
    /// PEM client certificate, for brokers that require mutual TLS.
    pub certificate_file: String,
    /// PEM private key of the client certificate.
    pub key_file: String,
    /// Password of an encrypted private key.
    pub key_password: Secret,
    /// File holding the private key's password; instead of
    /// `kafka.tls.key_password`.
    pub key_password_file: String,
    /// Check that the broker's certificate names the host connected to
    /// (turn off only for brokers whose certificates lack their names).
    pub verify_hostname: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl: SaslConfig::default(),
            tls: KafkaTlsConfig::default(),
            partitions: 4,
            replication_factor: 1,
            commit_interval_ms: 100,
            transaction_timeout_ms: 10_000,
            purge_interval_ms: 30_000,
            delete_retention_ms: 7 * 86_400_000,
            properties: BTreeMap::new(),
        }
    }
}

impl Default for SaslConfig {
    fn default() -> Self {
        Self {
            mechanism: SaslMechanism::ScramSha512,
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
        }
    }
}

impl Default for KafkaTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: String::new(),
            certificate_file: String::new(),
            key_file: String::new(),
            key_password: Secret::default(),
            key_password_file: String::new(),
            verify_hostname: true,
        }
    }
}

impl KafkaConfig {
    /// A librdkafka configuration with the brokers, the security settings
    /// and `kafka.properties`; callers add what their client needs (and
    /// apply `kafka.properties` again after, so they stay the last word).
    pub fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.bootstrap_servers);
        cc.set("security.protocol", self.security_protocol.as_str());
        if self.security_protocol.uses_sasl() {
            cc.set("sasl.mechanism", self.sasl.mechanism.as_str());
            if self.sasl.mechanism != SaslMechanism::Gssapi {
                cc.set("sasl.username", &self.sasl.username);
                cc.set("sasl.password", self.sasl.password.expose());
            }
        }
        if self.security_protocol.uses_tls() {
            let tls = &self.tls;
            let set = |cc: &mut ClientConfig, k: &str, v: &str| {
                if !v.is_empty() {
                    cc.set(k, v);
                }
            };
            set(&mut cc, "ssl.ca.location", &tls.ca_file);
            set(&mut cc, "ssl.certificate.location", &tls.certificate_file);
            set(&mut cc, "ssl.key.location", &tls.key_file);
            set(&mut cc, "ssl.key.password", tls.key_password.expose());
            cc.set(
                "ssl.endpoint.identification.algorithm",
                if tls.verify_hostname { "https" } else { "none" },
            );
        }
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
        cc
    }

    /// Checks the security settings; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let p = self.security_protocol;
        if p.uses_sasl() && self.sasl.mechanism != SaslMechanism::Gssapi {
            anyhow::ensure!(
                !self.sasl.username.is_empty() && self.sasl.password.is_set(),
                "config key `kafka.security_protocol` = {}: set `kafka.sasl.username` and \
                 `kafka.sasl.password` (or `kafka.sasl.password_file`)",
                p.as_str()
            );
        }
        if !p.uses_sasl() {
            anyhow::ensure!(
                self.sasl.username.is_empty() && !self.sasl.password.is_set(),
                "config key `kafka.sasl.username`/`kafka.sasl.password` is set but \
                 `kafka.security_protocol` = {} does not use SASL (sasl_ssl or sasl_plaintext)",
                p.as_str()
            );
        }
        let tls = &self.tls;
        for (key, file) in [
            ("kafka.tls.ca_file", &tls.ca_file),
            ("kafka.tls.certificate_file", &tls.certificate_file),
            ("kafka.tls.key_file", &tls.key_file),
        ] {
            if file.is_empty() {
                continue;
            }
            anyhow::ensure!(
                p.uses_tls(),
                "config key `{key}` is set but `kafka.security_protocol` = {} does not use TLS \
                 (ssl or sasl_ssl)",
                p.as_str()
            );
            anyhow::ensure!(
                std::path::Path::new(file).is_file(),
                "config key `{key}` = {file:?}: no such file"
            );
        }
        anyhow::ensure!(
            tls.certificate_file.is_empty() == tls.key_file.is_empty(),
            "config keys `kafka.tls.certificate_file` and `kafka.tls.key_file` go together"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_carries_security() {
        let mut k = KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            ..KafkaConfig::default()
        };
        k.sasl.mechanism = SaslMechanism::ScramSha256;
        k.sasl.username = "app".into();
        k.sasl.password = Secret::new("pw");
        k.properties.insert("client.id".into(), "x".into());
        let cc = k.client_config();
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(cc.get("sasl.password"), Some("pw"));
        assert_eq!(
            cc.get("ssl.endpoint.identification.algorithm"),
            Some("https")
        );
        assert_eq!(cc.get("client.id"), Some("x"));
        k.validate().unwrap();
        // A plaintext client gets no SASL or TLS settings.
        let plain = KafkaConfig::default().client_config();
        assert_eq!(plain.get("sasl.mechanism"), None);
        assert_eq!(plain.get("ssl.ca.location"), None);
    }

    #[test]
    fn inconsistent_security_names_the_key() {
        let k = KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            ..KafkaConfig::default()
        };
        let e = k.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.sasl.username"), "{e}");
        let mut k = KafkaConfig::default();
        k.tls.ca_file = "/etc/ca.pem".into();
        let e = k.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.tls.ca_file"), "{e}");
    }
}
