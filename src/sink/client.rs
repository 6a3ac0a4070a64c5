//! The HTTP client of the search nodes, from `[sink]`'s connection keys:
//! one or several node URLs (round-robin), basic auth or an API key, TLS
//! with the system roots or a custom CA (`sink.tls.ca_file`), optionally a
//! client certificate. The one place the Elasticsearch client is built, for
//! the sink and for operator commands (`outbound reset --indices`).

use std::time::Duration;

use anyhow::Context;
use elasticsearch::auth::{ClientCertificate, Credentials};
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{
    MultiNodeConnectionPool, SingleNodeConnectionPool, Transport, TransportBuilder,
};
use elasticsearch::Elasticsearch;

use super::config::SinkConfig;

/// The transport to every node of `sink.url`, with `timeout` per request.
pub fn transport(config: &SinkConfig, timeout: Duration) -> anyhow::Result<Transport> {
    let mut urls = config.urls()?;
    let mut builder = match urls.len() {
        1 => TransportBuilder::new(SingleNodeConnectionPool::new(urls.remove(0))),
        _ => TransportBuilder::new(MultiNodeConnectionPool::round_robin(urls, None)),
    }
    .timeout(timeout);
    if let Some(credentials) = credentials(config)? {
        builder = builder.auth(credentials);
    }
    let tls = &config.tls;
    if !tls.verify {
        tracing::warn!("sink.tls.verify = false: the search nodes' certificates are not checked");
        builder = builder.cert_validation(CertificateValidation::None);
    } else if !tls.ca_file.is_empty() {
        let pem = std::fs::read(&tls.ca_file)
            .with_context(|| format!("config key `sink.tls.ca_file`: reading {}", tls.ca_file))?;
        let ca = Certificate::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "config key `sink.tls.ca_file`: {} holds no PEM certificate: {e}",
                tls.ca_file
            )
        })?;
        builder = builder.cert_validation(CertificateValidation::Full(ca));
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client for {}: {e}", config.url))
}

/// The client of the search nodes, with the sink's request timeout.
pub fn client(config: &SinkConfig) -> anyhow::Result<Elasticsearch> {
    let timeout = Duration::from_millis(config.request_timeout_ms);
    Ok(Elasticsearch::new(transport(config, timeout)?))
}

fn credentials(config: &SinkConfig) -> anyhow::Result<Option<Credentials>> {
    let tls = &config.tls;
    if !tls.certificate_file.is_empty() {
        anyhow::ensure!(
            config.username.is_empty() && !config.api_key.is_set(),
            "config key `sink.tls.certificate_file`: a client certificate authenticates on its \
             own; unset `sink.username`/`sink.api_key`"
        );
        let mut pem = std::fs::read(&tls.certificate_file).with_context(|| {
            format!(
                "config key `sink.tls.certificate_file`: reading {}",
                tls.certificate_file
            )
        })?;
        let key = std::fs::read(&tls.key_file)
            .with_context(|| format!("config key `sink.tls.key_file`: reading {}", tls.key_file))?;
        pem.push(b'\n');
        pem.extend_from_slice(&key);
        return Ok(Some(Credentials::Certificate(ClientCertificate::Pem(pem))));
    }
    if config.api_key.is_set() {
        let key = config.api_key.expose();
        return Ok(Some(match key.split_once(':') {
            Some((id, secret)) => Credentials::ApiKey(id.to_owned(), secret.to_owned()),
            None => Credentials::EncodedApiKey(key.to_owned()),
        }));
    }
    if !config.username.is_empty() {
        return Ok(Some(Credentials::Basic(
            config.username.clone(),
            config.password.expose().to_owned(),
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn several_nodes_and_each_kind_of_credentials() {
        let mut c = SinkConfig {
            url: "https://es-0:9200, https://es-1:9200".into(),
            ..SinkConfig::default()
        };
        assert_eq!(c.urls().unwrap().len(), 2);
        transport(&c, Duration::from_secs(1)).unwrap();
        assert!(credentials(&c).unwrap().is_none());
        c.api_key = Secret::new("id1:key1");
        assert!(matches!(
            credentials(&c).unwrap(),
            Some(Credentials::ApiKey(id, _)) if id == "id1"
        ));
        c.api_key = Secret::new("aWQxOmtleTE=");
        assert!(matches!(
            credentials(&c).unwrap(),
            Some(Credentials::EncodedApiKey(_))
        ));
        c.api_key = Secret::default();
        c.username = "elastic".into();
        c.password = Secret::new("pw");
        assert!(matches!(
            credentials(&c).unwrap(),
            Some(Credentials::Basic(u, _)) if u == "elastic"
        ));
    }

    #[test]
    fn a_ca_file_that_is_no_certificate_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let mut c = SinkConfig::default();
        c.tls.ca_file = ca.display().to_string();
        let e = transport(&c, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sink.tls.ca_file"), "{e}");
    }
}
