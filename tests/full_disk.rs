//! A full disk under the log: every write to stdout and stderr fails with
//! ENOSPC (`/dev/full`). The process must go on processing and stop cleanly
//! on SIGTERM — losing log lines, not the process. (tracing-subscriber
//! reports a failed write with `eprintln!`, which panics when stderr fails
//! too: one log line on a full disk killed the stream thread.)

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::engine::{Scenario, DEADLINE, PARTITIONS};
use common::*;

fn full_device() -> Stdio {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full opens");
    Stdio::from(file)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn records_in(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("outbound_records_in_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_log_device_that_refuses_writes_loses_lines_not_the_process() {
    let s = Scenario::new("full-log", 61, 200, 2_000);
    let state = s.state("a");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(outbound_bin())
        .args(["run", "--app-id", &s.prefix, "--instance-id", "a"])
        .args(["--topic-prefix", &s.prefix])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--metrics-listen", &addr])
        .arg("--state-dir")
        .arg(&state)
        .env("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
        .env("OUTBOUND_SINK__IN_RUN", "false")
        // Many lines, each one a failed write.
        .env("RUST_LOG", "debug,rdkafka=info")
        .env("NO_COLOR", "1")
        .stdout(full_device())
        .stderr(full_device())
        .spawn()
        .expect("outbound starts");
    produce(&producer(), &s.prefix, &s.history.records);
    wait_for(
        "the instance to process records with a full log device",
        DEADLINE,
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("outbound exited while its log device was full: {status}");
            }
            let ready = http_get(&addr, "/readyz")?;
            let consumed = records_in(&http_get(&addr, "/metrics")?.1);
            if ready.0 == 200 && consumed >= s.history.records.len() as f64 {
                Ok(())
            } else {
                Err(format!("/readyz {}, {consumed} records in", ready.0))
            }
        },
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("outbound did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "a clean exit on SIGTERM with a full log device: {status}"
    );
}
