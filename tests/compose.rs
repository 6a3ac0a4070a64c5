//! The production-like stack in `docker-compose.yml` is valid and complete.
//!
//! There is no Docker engine where the tests run, so this checks the file the
//! way Docker Compose itself reads it: `docker-compose config` (Debian's
//! `docker-compose` package, installed by the test command) validates it,
//! and its fully resolved output is parsed to assert every service the
//! design requires is there and wired as intended.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_norway::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose_file() -> PathBuf {
    repo().join("docker-compose.yml")
}

/// Runs `docker-compose -f docker-compose.yml ARGS...` with a clean,
/// deterministic environment for the variables the file interpolates.
fn compose(args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = std::env::var("DOCKER_COMPOSE").unwrap_or_else(|_| "docker-compose".to_string());
    let mut cmd = Command::new(&bin);
    cmd.arg("-f")
        .arg(compose_file())
        .args(args)
        .current_dir(repo());
    for var in [
        "OUTBOUND_REPLICAS",
        "ELASTIC_VERSION",
        "MYSQL_ROOT_PASSWORD",
        "RUST_LOG",
        "OUTBOUND_BUSINESS_TIME_ZONE",
        "OUTBOUND_APP_ID",
        "OUTBOUND_PARTITIONS",
        "COMPOSE_FILE",
        "COMPOSE_PROJECT_NAME",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{bin}` is not installed: these tests need Debian's docker-compose package \
             (`apt-get install docker-compose`; the README's test command installs it), \
             or DOCKER_COMPOSE pointing at a compose binary"
        ),
        Err(e) => panic!("could not run `{bin}`: {e}"),
    }
}

fn config(env: &[(&str, &str)]) -> Value {
    let out = compose(&["config"], env);
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_norway::from_slice(&out.stdout).expect("docker-compose config printed invalid YAML")
}

fn service<'a>(cfg: &'a Value, name: &str) -> &'a Value {
    cfg["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no `{name}` service"))
}

fn image(svc: &Value) -> &str {
    svc["image"].as_str().unwrap_or("")
}

/// One `environment` entry as text (docker-compose config prints numbers
/// unquoted).
fn env_var(svc: &Value, key: &str) -> Option<String> {
    match svc["environment"].get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Every volume entry as text ("source:target[:mode]" or a long-form map
/// rendered as "source:target").
fn volumes(svc: &Value) -> Vec<String> {
    svc["volumes"]
        .as_sequence()
        .map(|seq| {
            seq.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => format!(
                        "{}:{}",
                        other["source"].as_str().unwrap_or(""),
                        other["target"].as_str().unwrap_or("")
                    ),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn mounts(svc: &Value, host: &Path, target: &str) -> bool {
    let host = host.to_string_lossy();
    volumes(svc)
        .iter()
        .any(|v| v.starts_with(&format!("{host}:{target}")))
}

fn command_args(svc: &Value) -> Vec<String> {
    match &svc["command"] {
        Value::Sequence(seq) => seq
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Value::String(s) => s.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    }
}

fn depends_on(svc: &Value, other: &str) -> Option<String> {
    let dep = svc["depends_on"].get(other)?;
    Some(
        dep["condition"]
            .as_str()
            .unwrap_or("service_started")
            .to_string(),
    )
}

#[test]
fn compose_file_is_valid() {
    let out = compose(&["config", "-q"], &[]);
    assert!(
        out.status.success(),
        "docker-compose -f docker-compose.yml config -q failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_has_every_required_service() {
    let cfg = config(&[]);
    let services: Vec<&str> = cfg["services"]
        .as_mapping()
        .expect("services")
        .keys()
        .filter_map(Value::as_str)
        .collect();
    for required in [
        "kafka",
        "connect",
        "connect-register",
        "mysql",
        "elasticsearch",
        "kibana",
        "prometheus",
        "grafana",
        "outbound",
    ] {
        assert!(
            services.contains(&required),
            "missing service `{required}` in {services:?}"
        );
    }

    assert!(
        image(service(&cfg, "kafka")).starts_with("apache/kafka:4."),
        "Kafka 4.x image"
    );
    assert!(
        image(service(&cfg, "connect")).contains("debezium/connect:"),
        "Debezium Connect image"
    );
    assert!(
        image(service(&cfg, "mysql")).starts_with("mysql:8"),
        "MySQL 8 image"
    );
    assert!(
        image(service(&cfg, "elasticsearch")).contains("elasticsearch/elasticsearch:8."),
        "Elasticsearch 8 image"
    );
    let es_version = image(service(&cfg, "elasticsearch"))
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        image(service(&cfg, "kibana")).ends_with(&format!("kibana:{es_version}")),
        "Kibana on the same version as Elasticsearch"
    );
    assert!(image(service(&cfg, "prometheus")).starts_with("prom/prometheus:"));
    assert!(image(service(&cfg, "grafana")).starts_with("grafana/grafana:"));
}

#[test]
fn kafka_is_kraft_with_single_node_transactions() {
    let cfg = config(&[]);
    let kafka = service(&cfg, "kafka");
    let roles = env_var(kafka, "KAFKA_PROCESS_ROLES").unwrap_or_default();
    assert!(
        roles.contains("broker") && roles.contains("controller"),
        "KRaft combined node: {roles}"
    );
    assert!(env_var(kafka, "KAFKA_CONTROLLER_QUORUM_VOTERS").is_some());
    assert_eq!(
        env_var(kafka, "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR").as_deref(),
        Some("1")
    );
    assert_eq!(
        env_var(kafka, "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR").as_deref(),
        Some("1")
    );
}

#[test]
fn mysql_has_binlog_settings_and_loads_sql() {
    let cfg = config(&[]);
    let mysql = service(&cfg, "mysql");
    let args = command_args(mysql).join(" ");
    for want in [
        "--server-id=",
        "--log-bin",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
    ] {
        assert!(args.contains(want), "mysql command lacks {want}: {args}");
    }
    assert!(
        mounts(mysql, &repo().join("sql"), "/sql"),
        "sql/ mounted: {:?}",
        volumes(mysql)
    );
    let init = repo().join("deploy/mysql/initdb.sh");
    assert!(init.is_file(), "{} exists", init.display());
    assert!(
        mounts(mysql, &init, "/docker-entrypoint-initdb.d/"),
        "the init script is in /docker-entrypoint-initdb.d: {:?}",
        volumes(mysql)
    );
    let script = std::fs::read_to_string(&init).unwrap();
    assert!(
        script.contains("/sql/[0-9]*.sql"),
        "initdb.sh loads sql/'s numbered files"
    );
}

#[test]
fn connector_registration_posts_the_debezium_config() {
    let cfg = config(&[]);
    let reg = service(&cfg, "connect-register");
    assert_eq!(
        depends_on(reg, "connect").as_deref(),
        Some("service_healthy")
    );
    assert!(mounts(
        reg,
        &repo().join("deploy/connect"),
        "/deploy/connect"
    ));
    assert!(repo().join("deploy/connect/register.sh").is_file());

    let connector: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/connect/outbound-mysql.json")).unwrap(),
    )
    .expect("deploy/connect/outbound-mysql.json is JSON");
    assert_eq!(
        connector["connector.class"],
        "io.debezium.connector.mysql.MySqlConnector"
    );
    assert_eq!(connector["database.hostname"], "mysql");
    let tables = connector["table.include.list"].as_str().unwrap();
    for t in [
        "orders.order_demo",
        "wms.wms_demo",
        "logistics.logistics_demo",
    ] {
        assert!(tables.contains(t), "connector captures {t}");
    }
    assert!(connector["topic.prefix"]
        .as_str()
        .is_some_and(|p| !p.is_empty()));
    assert_eq!(
        connector["schema.history.internal.kafka.bootstrap.servers"],
        "kafka:29092"
    );
}

#[test]
fn outbound_is_built_here_and_replicated() {
    let cfg = config(&[]);
    let outbound = service(&cfg, "outbound");
    assert_eq!(outbound["build"]["dockerfile"].as_str(), Some("Dockerfile"));
    assert!(repo().join("Dockerfile").is_file());
    assert_eq!(command_args(outbound), ["outbound", "run"]);
    assert_eq!(
        outbound["deploy"]["replicas"].as_u64(),
        Some(2),
        "default of 2 replicas"
    );
    // src/config.rs's environment layout (OUTBOUND_<SECTION>__<KEY>).
    assert_eq!(
        env_var(outbound, "OUTBOUND_KAFKA__BOOTSTRAP_SERVERS").as_deref(),
        Some("kafka:29092")
    );
    assert_eq!(
        env_var(outbound, "OUTBOUND_SINK__URL").as_deref(),
        Some("http://elasticsearch:9200")
    );
    assert_eq!(
        env_var(outbound, "OUTBOUND_METRICS__LISTEN").as_deref(),
        Some("0.0.0.0:9464")
    );
    assert_eq!(
        depends_on(outbound, "connect-register").as_deref(),
        Some("service_completed_successfully")
    );

    let scaled = config(&[("OUTBOUND_REPLICAS", "5")]);
    assert_eq!(
        service(&scaled, "outbound")["deploy"]["replicas"].as_u64(),
        Some(5)
    );

    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("libclang-dev") && dockerfile.contains("cmake"));
    assert!(dockerfile.contains("-slim"), "slim runtime stage");
    assert!(repo().join("deploy/docker-entrypoint.sh").is_file());
}

#[test]
fn observability_services_mount_their_configs() {
    let cfg = config(&[]);
    let prom = service(&cfg, "prometheus");
    assert!(mounts(
        prom,
        &repo().join("deploy/prometheus"),
        "/etc/prometheus"
    ));
    let prom_yml =
        std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    let prom_cfg: Value =
        serde_norway::from_str(&prom_yml).expect("deploy/prometheus/prometheus.yml is YAML");
    let jobs: Vec<&str> = prom_cfg["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|j| j["job_name"].as_str())
        .collect();
    assert!(
        jobs.contains(&"outbound"),
        "compose Prometheus scrapes outbound: {jobs:?}"
    );

    let grafana = service(&cfg, "grafana");
    assert!(mounts(
        grafana,
        &repo().join("grafana/provisioning"),
        "/etc/grafana/provisioning"
    ));
    assert!(mounts(
        grafana,
        &repo().join("grafana/dashboards"),
        "/var/lib/grafana/dashboards"
    ));
}

/// Both Prometheus configs pass promtool (from the `prometheus` package the
/// local stack installs).
#[test]
fn prometheus_configs_pass_promtool() {
    for cfg in [
        "deploy/prometheus/prometheus.yml",
        "stack/config/prometheus/prometheus.yml",
    ] {
        let out = match Command::new("promtool")
            .args(["check", "config", cfg])
            .current_dir(repo())
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("promtool is not installed (Debian package `prometheus`, installed by the stack scripts)")
            }
            Err(e) => panic!("promtool: {e}"),
        };
        assert!(
            out.status.success(),
            "promtool check config {cfg} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
