//! `outbound` against a secured Kafka: the local stack's optional
//! `kafka-secure` component (SASL_SSL only: TLS with a certificate signed by
//! the stack's own CA, SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 users
//! created at format time). Brought up here when it is not running
//! (`stack/stack.sh up kafka-secure` is idempotent).
//!
//! Every client is configured the way `outbound` configures its own
//! ([`KafkaConfig::client_config`]), so these tests exercise the same code.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::history::generate;
use common::*;
use outbound::config::{KafkaConfig, SaslMechanism, Secret, SecurityProtocol};
use rdkafka::consumer::{BaseConsumer, Consumer};

const BOOTSTRAP: &str = "127.0.0.1:9192";

struct SecureKafka {
    dir: PathBuf,
    vars: BTreeMap<String, String>,
}

impl SecureKafka {
    /// The running component (started when needed) and its credentials.
    fn up() -> Self {
        let (dir, vars) = stack_component("kafka-secure");
        Self { dir, vars }
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("{name} in credentials.env"))
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// The app user's client settings with `mechanism` and `password`.
    fn kafka(&self, mechanism: SaslMechanism, password: &str) -> KafkaConfig {
        let mut k = KafkaConfig {
            bootstrap_servers: BOOTSTRAP.into(),
            security_protocol: SecurityProtocol::SaslSsl,
            ..KafkaConfig::default()
        };
        k.sasl.mechanism = mechanism;
        k.sasl.username = self.var("APP_USER").into();
        k.sasl.password = Secret::new(password);
        k.tls.ca_file = self.ca();
        k
    }
}

fn metadata(k: &KafkaConfig) -> Result<usize, String> {
    k.validate().map_err(|e| format!("{e:#}"))?;
    let consumer: BaseConsumer = k.client_config().create().map_err(|e| e.to_string())?;
    consumer
        .fetch_metadata(None, Duration::from_secs(20))
        .map(|m| m.brokers().len())
        .map_err(|e| e.to_string())
}

#[test]
fn every_mechanism_authenticates_over_tls_and_bad_credentials_are_refused() {
    let secure = SecureKafka::up();
    let password = secure.var("APP_PASSWORD").to_owned();
    for mechanism in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        let k = secure.kafka(mechanism, &password);
        let brokers = wait_for(
            &format!("metadata over SASL_SSL with {mechanism:?}"),
            Duration::from_secs(60),
            || metadata(&k),
        );
        assert_eq!(brokers, 1);
    }
    // A wrong password, and a client that does not trust the stack's CA.
    let wrong = secure.kafka(SaslMechanism::ScramSha512, "not-the-password");
    let e = metadata(&wrong).expect_err("a wrong SCRAM password must be refused");
    assert!(!e.contains("not-the-password"), "{e}");
    let mut untrusted = secure.kafka(SaslMechanism::ScramSha512, &password);
    untrusted.tls.ca_file = String::new();
    metadata(&untrusted).expect_err("the broker's certificate is not in the system roots");
}

#[test]
fn outbound_run_over_sasl_ssl_keeps_its_secrets_out_of_every_output() {
    let secure = SecureKafka::up();
    let password = secure.var("APP_PASSWORD").to_owned();
    let base = secure
        .kafka(SaslMechanism::ScramSha256, &password)
        .client_config();
    let prefix = unique("secure");
    create_source_topics_with(&base, &prefix, 2);
    let history = generate(11, &prefix, 40, 1500);
    produce(&producer_with(&base), &prefix, &history.records);
    let (want_details, want_rollups) = expected(&history, &prefix);
    assert!(want_details.len() > 20 && want_rollups.len() > 10);

    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("kafka-password");
    std::fs::write(&password_file, format!("{password}\n")).expect("password file");
    // A sink secret too (the in-process sink is off): set, so it must not
    // appear either.
    let sink_secret = format!("sink-{}", unique("pw"));
    let state = dir.path().join("state");
    let env: Vec<(&str, String)> = vec![
        ("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", BOOTSTRAP.into()),
        ("OUTBOUND_KAFKA__SECURITY_PROTOCOL", "sasl_ssl".into()),
        ("OUTBOUND_KAFKA__SASL__MECHANISM", "SCRAM-SHA-256".into()),
        (
            "OUTBOUND_KAFKA__SASL__USERNAME",
            secure.var("APP_USER").into(),
        ),
        (
            "OUTBOUND_KAFKA__SASL__PASSWORD_FILE",
            password_file.display().to_string(),
        ),
        ("OUTBOUND_KAFKA__TLS__CA_FILE", secure.ca()),
        ("OUTBOUND_SINK__USERNAME", "elastic".into()),
        ("OUTBOUND_SINK__PASSWORD", sink_secret.clone()),
        // Everything the process logs, librdkafka's debug lines included.
        ("RUST_LOG", "debug".into()),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let spec = RunSpec {
        app_id: &prefix,
        instance: "1",
        prefix: &prefix,
        state_dir: &state,
        log_dir: dir.path(),
        partitions: 2,
    };
    let mut run = Outbound::start_with_env(&spec, 0, &env_refs);
    wait_for(
        "the outputs over SASL_SSL to equal the pipeline core",
        Duration::from_secs(240),
        || {
            if !run.is_running() {
                return Err(format!("outbound exited:\n{}", run.log_tail(30)));
            }
            let details = fold_topic_with(&base, &format!("{prefix}-details"))?;
            diff(&want_details, &details)?;
            let rollups = fold_topic_with(&base, &format!("{prefix}-rollups"))?;
            diff(&want_rollups, &rollups)
        },
    );
    run.stop_cleanly();
    let log = run.log_text();
    assert!(log.contains("DEBUG"), "the run logged at debug level");

    // `config check` and `--help` with the same environment.
    let outbound = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_outbound"))
            .args(args)
            .envs(env_refs.iter().copied())
            .output()
            .expect("outbound runs");
        assert!(out.status.success(), "outbound {args:?}: {out:?}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let check = outbound(&["config", "check"]);
    assert!(check.contains("password = \"<redacted>\""), "{check}");
    let help = outbound(&["run", "--help"]);
    for (what, text) in [
        ("run log", &log),
        ("config check", &check),
        ("--help", &help),
    ] {
        for secret in [password.as_str(), sink_secret.as_str()] {
            assert!(
                !text.contains(secret),
                "a secret appears in the {what}:\n{text}"
            );
        }
    }
}
