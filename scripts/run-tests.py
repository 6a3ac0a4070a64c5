#!/usr/bin/env python3
"""Runs every test binary of the workspace against the local stack, several
at a time.

Most integration tests wait on the stack (a rebalance, a commit, a search
node refresh) far more than they compute, so run one after another they
leave the machine idle: the suite took ~20 min serially on two cores. Here
the test binaries `cargo test --no-run` built run as separate processes,
`OUTBOUND_TEST_JOBS` (3 by default) at once, longest first (durations from
the previous run, kept in the target dir). The binaries that disrupt the
stack they run on (stop the broker, the search node, Connect) would fail
whatever runs beside them: they run one after another on a private stack in
a network namespace of its own (scripts/isolated.sh), brought up here and
torn down at the end, at the same time as the rest. Where no namespace can
be made (not root, no `ip`/`nft`, or OUTBOUND_TEST_ISOLATE=0) they run on the
shared stack instead, alone, after the rest.

A test file marks itself as disruptive with a line `// test-runner:
exclusive`, optionally naming the stack components it needs, `// test-runner:
exclusive (stack: kafka opensearch)` (all but Prometheus by default):
binaries needing the same components share one private stack, and each such
stack runs its binaries one after another, beside the other stacks. Inside a
binary, tests that run instances under load still serialize on
`common::one_at_a_time()`, which also holds a lock file per stack, so two
such tests on one stack never overlap even from different binaries.

Usage: scripts/run-tests.py [cargo test flags, e.g. --locked]
OUTBOUND_TEST_ONLY=chaos,engine_fencing runs only the binaries named.
Each binary's output goes to <target>/test-logs/<name>.log; a failing
binary's log tail is printed, and the exit status is non-zero if any failed
or timed out (OUTBOUND_TEST_TIMEOUT_SECS per binary, 1500 by default).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = "// test-runner: exclusive"
FULL_STACK = ("mariadb", "kafka", "connect", "opensearch")


def target_dir() -> Path:
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    return Path(json.loads(meta.stdout)["target_directory"])


def build(cargo_flags):
    """Builds every test binary; returns them as dicts (name, exe, cwd, src)."""
    cmd = ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"]
    proc = subprocess.run(cmd + cargo_flags, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"run-tests: `{' '.join(cmd + cargo_flags)}` failed ({proc.returncode})")
    binaries = []
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        t = msg["target"]
        package = msg["package_id"].split("#")[0].rstrip("/").split("/")[-1]
        kind = t["kind"][0]
        name = t["name"] if kind == "test" else f"{package}:{kind}:{t['name']}"
        binaries.append({
            "name": name,
            "exe": msg["executable"],
            # cargo test runs each binary in its package's directory.
            "cwd": str(Path(msg["manifest_path"]).parent),
            "src": t["src_path"],
        })
    return binaries


def exclusive(binary):
    """The stack components a disruptive binary needs (None: not disruptive)."""
    try:
        text = Path(binary["src"]).read_text()
    except OSError:
        return None
    line = next((l for l in text.splitlines() if l.startswith(MARKER)), None)
    if line is None:
        return None
    m = re.search(r"\(stack:([^)]*)\)", line)
    return tuple(m.group(1).split()) if m else FULL_STACK


class PrivateStack:
    """The local stack (stack/stack.sh up COMPONENTS) inside a network
    namespace of its own, its state under the target dir. Namespaces are
    machine-wide: one per run and stack, so runs in different clones (or in
    scripts/fresh-check.sh's namespace) do not tear down each other's."""

    def __init__(self, target: Path, logs: Path, index: int, components):
        self.namespace = f"tests{os.getpid()}s{index}"
        self.components = list(components)
        self.dir = target / "tmp" / f"stack-{self.namespace}"
        self.log = logs / f"exclusive-stack-{index}.log"

    def prefix(self):
        return [str(REPO / "scripts/isolated.sh"), self.namespace, "env",
                f"OUTBOUND_STACK_DIR={self.dir}"]

    def up(self) -> bool:
        up = [str(REPO / "stack/stack.sh"), "up"] + self.components
        with open(self.log, "a") as log:
            return subprocess.run(self.prefix() + up,
                                  cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode == 0

    def down(self):
        with open(self.log, "a") as log:
            subprocess.run(self.prefix() + [str(REPO / "stack/stack.sh"), "down"],
                           cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            subprocess.run([str(REPO / "scripts/isolated.sh"), "--delete", self.namespace],
                           cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        shutil.rmtree(self.dir, ignore_errors=True)


def can_isolate() -> bool:
    if os.environ.get("OUTBOUND_TEST_ISOLATE", "1") == "0" or os.geteuid() != 0:
        return False
    return all(shutil.which(t) for t in ("ip", "nft"))


class Runner:
    def __init__(self, logs: Path, timeout: float, durations: dict):
        self.logs = logs
        self.timeout = timeout
        self.durations = durations
        self.failed = []
        # Tests that ran, by outcome, over every binary (from libtest's
        # per-test lines): a run that executed none is a failure.
        self.counts = {"ok": 0, "FAILED": 0, "ignored": 0}
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def say(self, text: str):
        with self.lock:
            elapsed = int(time.monotonic() - self.t0)
            print(f"[{elapsed // 60}m{elapsed % 60:02d}s] {text}", flush=True)

    def run(self, b, prefix=()):
        log_path = self.logs / f"{b['name'].replace(':', '-')}.log"
        where = " (private stack)" if prefix else ""
        self.say(f"start  {b['name']}{where}")
        started = time.monotonic()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                list(prefix) + [b["exe"]], cwd=b["cwd"], stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                status = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                status = None
        took = time.monotonic() - started
        self.durations[b["name"]] = took
        text = log_path.read_text(errors="replace")
        summary = next(
            (l for l in reversed(text.splitlines()) if l.startswith("test result:")), ""
        )
        results = [l for l in text.splitlines()
                   if l.startswith("test ") and l.rsplit(" ... ", 1)[-1] in self.counts]
        with self.lock:
            for l in results:
                self.counts[l.rsplit(" ... ", 1)[-1]] += 1
        if status == 0:
            self.say(f"ok     {b['name']}{where} ({took:.0f} s) {summary}")
            with self.lock:
                for l in results:
                    print(f"         {b['name']}: {l}", flush=True)
            return
        why = "timed out" if status is None else f"exit status {status}"
        with self.lock:
            self.failed.append(b["name"])
            tail = "\n".join(text.splitlines()[-150:])
            print(f"\n---- FAILED {b['name']} ({why}, {took:.0f} s); log {log_path}\n{tail}\n----\n",
                  flush=True)

    def run_alone(self, binaries, stack: PrivateStack):
        """Brings up the private stack, runs `binaries` on it one at a time,
        tears it down; False if the stack would not come up (nothing run)."""
        self.say(f"private stack ({' '.join(stack.components)}) for "
                 f"{', '.join(b['name'] for b in binaries)}: starting (log {stack.log})")
        try:
            if not stack.up():
                self.say(f"private stack did not come up (log {stack.log}); "
                         "those binaries run on the shared stack, after the rest")
                return False
            self.say(f"private stack for {', '.join(b['name'] for b in binaries)}: up")
            for b in sorted(binaries, key=lambda b: -self.durations.get(b["name"], 0.0)):
                self.run(b, stack.prefix())
            return True
        finally:
            stack.down()

    def run_parallel(self, binaries, jobs: int):
        queue = sorted(binaries, key=lambda b: -self.durations.get(b["name"], 0.0))
        take = threading.Lock()

        def worker():
            while True:
                with take:
                    if not queue:
                        return
                    b = queue.pop(0)
                self.run(b)

        threads = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main():
    cargo_flags = sys.argv[1:]
    jobs = int(os.environ.get("OUTBOUND_TEST_JOBS", "3"))
    timeout = float(os.environ.get("OUTBOUND_TEST_TIMEOUT_SECS", "1500"))
    target = target_dir()
    logs = target / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    durations_path = target / "test-durations.json"
    try:
        durations = json.loads(durations_path.read_text())
    except (OSError, ValueError):
        durations = {}

    binaries = build(cargo_flags)
    only = [n for n in os.environ.get("OUTBOUND_TEST_ONLY", "").split(",") if n]
    if only:
        binaries = [b for b in binaries if b["name"] in only]
    groups = {}
    for b in binaries:
        needs = exclusive(b)
        if needs is not None:
            groups.setdefault(needs, []).append(b)
    shared = [b for b in binaries if exclusive(b) is None]
    runner = Runner(logs, timeout, durations)
    runner.say(f"{len(shared)} test binaries, {jobs} at a time; alone, on {len(groups)} stacks: "
               + "; ".join(", ".join(b["name"] for b in g) for g in groups.values()))
    done = {}
    sides = []
    if groups and can_isolate():
        for i, (needs, group) in enumerate(groups.items()):
            stack = PrivateStack(target, logs, i, needs)
            side = threading.Thread(
                target=lambda g=group, st=stack, n=needs: done.update({n: runner.run_alone(g, st)}))
            side.start()
            sides.append(side)
    runner.run_parallel(shared, jobs)
    for side in sides:
        side.join()
    left = [b for needs, group in groups.items() if not done.get(needs) for b in group]
    runner.run_parallel(left, 1)
    durations_path.write_text(json.dumps(durations, indent=1, sort_keys=True))

    c = runner.counts
    tally = f"{c['ok']} tests passed, {c['FAILED']} failed, {c['ignored']} ignored"
    if runner.failed:
        print(f"run-tests: {len(runner.failed)} test binaries failed: {', '.join(runner.failed)}; {tally}")
        sys.exit(1)
    if c["ok"] == 0:
        print(f"run-tests: no test ran ({len(binaries)} binaries; OUTBOUND_TEST_ONLY={only or 'unset'})")
        sys.exit(1)
    runner.say(f"all {len(binaries)} test binaries passed: {tally}")


if __name__ == "__main__":
    main()
