//! deploy/kubernetes/: every manifest is valid against the Kubernetes API
//! schemas (kubernetes-validate from PyPI, installed by
//! scripts/setup-test-tools.sh), and the manifests agree with outbound
//! itself: the ConfigMap's outbound.toml and the pods' OUTBOUND_* variables
//! load as outbound's configuration, probes and scrape annotations hit the
//! port `metrics.listen` binds, state lives on the StatefulSet's volume, the
//! instance id is the pod ordinal, the grace period outlasts a clean
//! shutdown, and the disruption budgets select the pods.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use outbound::config::Config;
use serde_norway::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn validator() -> PathBuf {
    let cache = std::env::var_os("OUTBOUND_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/outbound")
        });
    cache.join("bin/kubernetes-validate")
}

/// Every document of every manifest, by kind and name.
fn manifests() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).expect("deploy/kubernetes") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") || path.ends_with("kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("manifest");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = v["kind"].as_str().expect("kind").to_owned();
            let name = v["metadata"]["name"].as_str().expect("name").to_owned();
            out.insert((kind, name), v);
        }
    }
    out
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn manifests_are_valid_kubernetes_objects() {
    let validator = validator();
    assert!(
        validator.exists(),
        "{} is missing: run scripts/setup-test-tools.sh",
        validator.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let out = Command::new(&validator)
        .arg("--strict")
        .args(["--kubernetes-version", "1.30"])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    // Every file is in the kustomization.
    let kustomization =
        std::fs::read_to_string(dir().join("kustomization.yaml")).expect("kustomization");
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            kustomization.contains(name),
            "{name} not in kustomization.yaml"
        );
    }
}

#[test]
fn manifests_agree_with_outbound() {
    let m = manifests();
    let get = |kind: &str, name: &str| {
        m.get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let toml = str_of(&get("ConfigMap", "outbound-config")["data"]["outbound.toml"]).to_owned();
    let sts = get("StatefulSet", "outbound");
    let sink = get("Deployment", "outbound-sink");

    for workload in [sts, sink] {
        let pod = &workload["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        let env: Vec<&Value> = container["env"]
            .as_sequence()
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        // The ConfigMap and the pod's environment load as outbound's
        // configuration, with the mounted paths under a temporary root.
        let root = tempfile::tempdir().expect("tempdir");
        let mount = |p: &str| p.replace("/etc/outbound", &root.path().display().to_string());
        for f in [
            "secrets/kafka-sasl-password",
            "secrets/elasticsearch-password",
            "tls/kafka-ca.crt",
            "tls/elasticsearch-ca.crt",
        ] {
            let p = root.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
            std::fs::write(&p, "x\n").expect("file");
        }
        let file = root.path().join("outbound.toml");
        std::fs::write(&file, mount(&toml)).expect("config");
        let mut vars = Vec::new();
        let mut instance_from_ordinal = false;
        for e in &env {
            let name = str_of(&e["name"]);
            if let Some(v) = e["value"].as_str() {
                vars.push((name.to_owned(), mount(v)));
            }
            if name == "OUTBOUND_INSTANCE_ID" {
                instance_from_ordinal = str_of(&e["valueFrom"]["fieldRef"]["fieldPath"])
                    == "metadata.labels['apps.kubernetes.io/pod-index']";
                vars.push((name.to_owned(), "2".to_owned()));
            }
        }
        let config = Config::load_from(Some(&file), vars.clone(), &[])
            .unwrap_or_else(|e| panic!("{}: {e:#}", str_of(&workload["metadata"]["name"])))
            .config;
        assert!(config.sink.password.is_set() && config.kafka.sasl.password.is_set());

        // Probes and scrape annotations on the port metrics.listen binds.
        let port: i64 = config
            .metrics
            .listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("metrics.listen port");
        assert!(config.metrics.listen.starts_with("0.0.0.0:"));
        assert_eq!(container["ports"][0]["containerPort"].as_i64(), Some(port));
        assert_eq!(
            str_of(&pod["metadata"]["annotations"]["prometheus.io/port"]),
            port.to_string()
        );
        assert_eq!(
            str_of(&container["readinessProbe"]["httpGet"]["path"]),
            "/readyz"
        );
        assert_eq!(
            str_of(&container["livenessProbe"]["httpGet"]["path"]),
            "/healthz"
        );
        // A clean shutdown (commit, in-flight bulk requests) fits in the grace period.
        let shutdown_s =
            (config.kafka.transaction_timeout_ms + config.sink.request_timeout_ms) / 1000;
        let grace = pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace > shutdown_s,
            "grace {grace}s <= shutdown {shutdown_s}s"
        );

        if workload == sts {
            assert!(
                instance_from_ordinal,
                "OUTBOUND_INSTANCE_ID is the pod ordinal"
            );
            assert_eq!(config.instance_id, "2");
            assert!(!config.sink.in_run, "the sink runs as its own Deployment");
            let claim = &sts["spec"]["volumeClaimTemplates"][0];
            let claim_name = str_of(&claim["metadata"]["name"]);
            let mounted = container["volumeMounts"]
                .as_sequence()
                .expect("volumeMounts")
                .iter()
                .any(|v| {
                    str_of(&v["name"]) == claim_name
                        && Path::new(str_of(&v["mountPath"])) == config.state.dir
                });
            assert!(
                mounted,
                "state.dir {:?} is on the volume claim",
                config.state.dir
            );
        } else {
            assert_eq!(container["args"][1].as_str(), Some("sink"));
        }

        // A disruption budget selects these pods.
        let labels = &pod["metadata"]["labels"];
        let budgets = m
            .iter()
            .filter(|((k, _), _)| k == "PodDisruptionBudget")
            .filter(|(_, pdb)| {
                pdb["spec"]["selector"]["matchLabels"]
                    .as_mapping()
                    .is_some_and(|sel| {
                        sel.iter()
                            .all(|(k, v)| &labels[k.as_str().unwrap_or("")] == v)
                    })
            })
            .count();
        assert_eq!(budgets, 1, "{}", str_of(&workload["metadata"]["name"]));
    }
    // The headless service governs the StatefulSet.
    let svc = get("Service", "outbound");
    assert_eq!(str_of(&svc["spec"]["clusterIP"]), "None");
    assert_eq!(str_of(&sts["spec"]["serviceName"]), "outbound");
}
