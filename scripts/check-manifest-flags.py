#!/usr/bin/env python3
"""Cross-checks the rendered Kubernetes manifests against the service binaries and each other.

Usage: check-manifest-flags.py [--strict] [--run] [--bin-dir DIR] OVERLAY_DIR...

For every overlay (rendered with `kubectl kustomize`):
  * every `--flag` and `LIGHTCL_*` variable given to a lightcl container (command, args, env,
    envFrom ConfigMaps) is one that `<binary> --help` lists (binaries from --bin-dir, default
    target/debug; a binary that is not built yet is skipped with "binary not built" unless
    --strict; a placeholder binary whose --help lists no flags counts as not built);
  * with --run, each built binary is started with its container's settings (endpoints pointed
    at closed local ports, Secret files replaced by dummies) and must serve /live, /ready and
    /metrics on its admin address, and exit 0 soon after SIGTERM;
  * terminationGracePeriodSeconds is at least LIGHTCL_SHUTDOWN_GRACE + 5 s;
  * liveness probes GET /live and readiness probes GET /ready on the container port that
    LIGHTCL_ADMIN_ADDR binds; LIGHTCL_GRPC_ADDR / LIGHTCL_RPC_ADDR bind declared ports;
  * no Secret value, JWT-like 64-hex string or URL password appears in a ConfigMap, an env
    literal or a command line; secret-like variables and flags only carry file paths; no
    placeholder Secret is left in an overlay;
  * every container runs non-root with no privilege escalation, all capabilities dropped, a
    read-only root filesystem and a RuntimeDefault seccomp profile; in a namespace enforcing
    the `restricted` Pod Security Standard also its volume and host rules;
  * Services, PodDisruptionBudgets and ServiceMonitors select something and name real ports;
    referenced ConfigMaps exist;
  * the image (deploy/docker/Dockerfile PACKAGES) contains every binary the manifests run, and
    each is a workspace binary;
  * every metric in metrics.txt is registered in its service's source (warning unless --strict);
  * every query of the dashboard and the alerts parses as PromQL (PyPI promql-parser), and every
    lightcl_* metric they use is listed in deploy/dashboards/metrics.txt.

Exits 1 on any problem, printing one line per problem.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
SECRETISH = re.compile(r"token|secret|passw|jwt|creds|credential|private|api[_-]?key", re.I)
# A bare 64-hex string looks like a JWT secret file's content; 0x-prefixed ones are usually block
# hashes (a real secret value is caught by the Secret-value comparison whatever its form).
HEX64 = re.compile(r"(?<![0-9a-fA-FxX])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)
FLAG_IN_HELP = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9.\-]*)")
ENV_IN_HELP = re.compile(r"\[env:\s*([A-Z0-9_]+)")

problems: list[str] = []
notes: list[str] = []
DOCKER_ENV: set[str] = set()  # LIGHTCL_* set by the Dockerfile for every service


def problem(where: str, msg: str) -> None:
    problems.append(f"{where}: {msg}")


def env_twin(flag: str) -> str:
    """docs/operations.md#conventions: --nats.token-file -> LIGHTCL_NATS_TOKEN_FILE."""
    return "LIGHTCL_" + re.sub(r"[.\-]", "_", flag.lstrip("-")).upper()


def render(overlay: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
    if out.returncode != 0:
        problem(str(overlay), f"kubectl kustomize failed: {out.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class BinaryHelp:
    """What a binary accepts, parsed from `--help`; None when the binary is not built."""

    cache: dict[str, tuple[set[str], set[str]] | None] = {}

    @classmethod
    def get(cls, bin_dir: Path, name: str, strict: bool) -> tuple[set[str], set[str]] | None:
        if name in cls.cache:
            return cls.cache[name]
        path = bin_dir / name
        result = None
        if not path.is_file():
            msg = f"{name}: binary not built ({path}); its flags and env are not checked"
            if strict:
                problem(name, msg)
            else:
                notes.append("SKIP " + msg)
        else:
            run = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
            if run.returncode != 0:
                problem(name, f"`{path} --help` exited {run.returncode}: {run.stderr.strip()[:200]}")
            else:
                text = run.stdout
                flags = set(FLAG_IN_HELP.findall(text))
                envs = set(ENV_IN_HELP.findall(text))
                if not envs:  # env twins hidden from help: derive them from the flags
                    envs = {env_twin(f) for f in flags}
                if flags <= {"--help", "--version"}:
                    # A placeholder main() that has no CLI yet: nothing to check against.
                    msg = f"{name}: binary not built with its CLI yet ({path} --help lists no flags)"
                    if strict:
                        problem(name, msg)
                    else:
                        notes.append("SKIP " + msg)
                else:
                    result = (flags, envs)
        cls.cache[name] = result
        return result


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    if kind in WORKLOADS:
        return (spec.get("template") or {}).get("spec")
    return None


def pod_labels(doc: dict) -> dict:
    if doc.get("kind") == "Pod":
        return (doc.get("metadata") or {}).get("labels") or {}
    return (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def selects(selector: dict | None, labels: dict) -> bool:
    if not selector:
        return False
    match = selector.get("matchLabels", selector)
    exprs = selector.get("matchExpressions") or []
    if any(labels.get(k) != v for k, v in match.items() if k != "matchExpressions"):
        return False
    for e in exprs:
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def port_of(addr: str) -> int | None:
    m = re.search(r":(\d+)$", addr.strip())
    return int(m.group(1)) if m else None


def resolve_port(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def dockerfile_packages() -> set[str]:
    text = (ROOT / "deploy/docker/Dockerfile").read_text()
    m = re.search(r'^ARG PACKAGES="([^"]*)"', text, re.M)
    if not m:
        problem("deploy/docker/Dockerfile", 'no ARG PACKAGES="..." line')
        return set()
    return set(m.group(1).split())


def workspace_binaries() -> set[str]:
    bins = set()
    for toml in list(ROOT.glob("services/*/Cargo.toml")) + list(ROOT.glob("crates/*/Cargo.toml")):
        text = toml.read_text()
        for m in re.finditer(r'\[\[bin\]\][^\[]*?name\s*=\s*"([^"]+)"', text, re.S):
            bins.add(m.group(1))
        if (toml.parent / "src/main.rs").exists():
            m = re.search(r'^\[package\][^\[]*?name\s*=\s*"([^"]+)"', text, re.S | re.M)
            if m:
                bins.add(m.group(1))
    return bins


def check_dockerfile() -> set[str]:
    packages = dockerfile_packages()
    bins = workspace_binaries()
    for p in sorted(packages - bins):
        problem("deploy/docker/Dockerfile", f"PACKAGES names {p}, which is not a workspace binary")
    text = (ROOT / "deploy/docker/Dockerfile").read_text()
    global DOCKER_ENV
    DOCKER_ENV = set(re.findall(r"^ENV (LIGHTCL_[A-Z0-9_]+)=", text, re.M))
    m = re.search(r'^CMD \["([^"]+)"', text, re.M)
    if m and m.group(1) not in packages:
        problem("deploy/docker/Dockerfile", f"CMD runs {m.group(1)}, which the image does not contain")
    return packages


def check_overlay(overlay: Path, bin_dir: Path, strict: bool, image_bins: set[str], run: bool) -> None:
    docs = render(overlay)
    name = overlay.relative_to(ROOT) if overlay.is_relative_to(ROOT) else overlay
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind", "?"), []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}

    # Secrets: collect values, refuse placeholders.
    secret_values: set[str] = set()
    for s in by_kind.get("Secret", []):
        meta = s.get("metadata") or {}
        if (meta.get("labels") or {}).get("lightcl.dev/placeholder") == "true":
            problem(f"{name} Secret/{meta.get('name')}", "placeholder Secret left in the overlay")
        for v in (s.get("stringData") or {}).values():
            secret_values.add(str(v).strip())
        for v in (s.get("data") or {}).values():
            try:
                secret_values.add(base64.b64decode(v).decode().strip())
            except (ValueError, UnicodeDecodeError):
                pass
    secret_values = {v for v in secret_values if len(v) >= 8}

    def leaks(where: str, text: str) -> None:
        for v in secret_values:
            if v in text:
                problem(where, "contains a Secret value")
        if HEX64.search(text):
            problem(where, "contains a bare 64-hex string (a JWT secret?)")
        if URL_PASSWORD.search(text):
            problem(where, "contains a URL with a password")

    for cm_name, data in configmaps.items():
        for k, v in data.items():
            where = f"{name} ConfigMap/{cm_name} key {k}"
            if SECRETISH.search(k) and not k.endswith("_FILE"):
                problem(where, "secret-like key in a ConfigMap (mount a Secret file instead)")
            leaks(where, str(v))

    check_nats_replicas(name, docs, configmaps)

    workloads = [d for d in docs if d.get("kind") in WORKLOADS]
    restricted = any(d.get("kind") == "Namespace" and ((d.get("metadata") or {}).get("labels") or {})
                     .get("pod-security.kubernetes.io/enforce") == "restricted" for d in docs)
    for w in workloads:
        spec = pod_spec(w) or {}
        wname = f"{name} {w['kind']}/{w['metadata']['name']}"
        check_pod_security(wname, spec, restricted)
        for ref in [v.get("configMap", {}).get("name") for v in spec.get("volumes") or []]:
            if ref and ref not in configmaps:
                problem(wname, f"volume uses ConfigMap {ref}, which the overlay does not define")
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            check_container(f"{wname} container {c.get('name')}", c, spec, configmaps,
                            bin_dir, strict, image_bins, leaks, run)

    # Services select pods and name their ports.
    pods = [(pod_labels(w), pod_spec(w) or {}) for w in workloads]
    for svc in by_kind.get("Service", []):
        where = f"{name} Service/{svc['metadata']['name']}"
        sel = (svc.get("spec") or {}).get("selector")
        matched = [spec for labels, spec in pods if sel and all(labels.get(k) == v for k, v in sel.items())]
        if not matched:
            problem(where, f"selector {sel} matches no pod template")
            continue
        names = {p.get("name") for spec in matched for c in spec.get("containers") or [] for p in c.get("ports") or []}
        numbers = {p.get("containerPort") for spec in matched for c in spec.get("containers") or []
                   for p in c.get("ports") or []}
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            if (isinstance(tp, str) and tp not in names) or (isinstance(tp, int) and tp not in numbers):
                problem(where, f"port {p.get('name')} targets {tp}, which no selected container declares")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(selects(pdb["spec"].get("selector"), labels) for labels, _ in pods):
            problem(f"{name} PodDisruptionBudget/{pdb['metadata']['name']}", "selector matches no pod template")
    for sm in by_kind.get("ServiceMonitor", []):
        where = f"{name} ServiceMonitor/{sm['metadata']['name']}"
        svcs = [s for s in by_kind.get("Service", [])
                if selects(sm["spec"].get("selector"), (s.get("metadata") or {}).get("labels") or {})]
        if not svcs:
            problem(where, "selector matches no Service")
        ports = {p.get("name") for s in svcs for p in s["spec"].get("ports") or []}
        for ep in sm["spec"].get("endpoints") or []:
            if ep.get("port") not in ports:
                problem(where, f"endpoint port {ep.get('port')} is not a port of the selected Services")


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def check_pod_security(where: str, spec: dict, restricted: bool) -> None:
    """Every container: non-root, no privilege escalation, all capabilities dropped, read-only
    root filesystem, a RuntimeDefault/Localhost seccomp profile (pod or container level).
    In a namespace enforcing the `restricted` Pod Security Standard also its volume and host
    rules, so the pods are admitted."""
    pod_sc = spec.get("securityContext") or {}
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        sc = c.get("securityContext") or {}
        cw = f"{where} container {c.get('name')}"
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))):
            problem(cw, "runAsNonRoot is not set")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problem(cw, "runs as uid 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(cw, "allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problem(cw, "capabilities must drop ALL")
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(cw, "readOnlyRootFilesystem must be true")
        if sc.get("privileged"):
            problem(cw, "privileged")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(cw, "seccompProfile must be RuntimeDefault (pod or container)")
        if restricted and any(p.get("hostPort") for p in c.get("ports") or []):
            problem(cw, "hostPort is not allowed by the restricted profile")
    if restricted:
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problem(where, f"{key} is not allowed by the restricted profile")
        for v in spec.get("volumes") or []:
            kinds = set(v) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                problem(where, f"volume {v.get('name')} ({', '.join(sorted(kinds))}) is not allowed "
                               "by the restricted profile")


def check_nats_replicas(name, docs, configmaps) -> None:
    """Stream/KV replicas must not exceed the NATS servers: the overlay's own NATS StatefulSet,
    or the 3-node cluster of deploy/k8s/nats/values-prod.yaml when the overlay ships none."""
    wanted = {int(d["LIGHTCL_NATS_REPLICAS"]) for d in configmaps.values() if "LIGHTCL_NATS_REPLICAS" in d}
    nats = [d for d in docs if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == "nats"]
    if nats:
        servers, source = nats[0]["spec"].get("replicas", 1), "the overlay's NATS StatefulSet"
    else:
        values = yaml.safe_load((ROOT / "deploy/k8s/nats/values-prod.yaml").read_text())
        cluster = (values.get("config") or {}).get("cluster") or {}
        servers = cluster.get("replicas", 1) if cluster.get("enabled") else 1
        source = "deploy/k8s/nats/values-prod.yaml"
        if not ((values.get("config") or {}).get("jetstream") or {}).get("enabled"):
            problem(source, "JetStream is not enabled")
    for r in wanted:
        if r > servers:
            problem(f"{name}", f"LIGHTCL_NATS_REPLICAS={r} but {source} runs {servers} server(s)")


def check_container(where, c, spec, configmaps, bin_dir, strict, image_bins, leaks, run) -> None:
    command = list(c.get("command") or [])
    args = [str(a) for a in c.get("args") or []]
    env_literal: dict[str, str] = {}
    env_from_secret: set[str] = set()
    for e in c.get("env") or []:
        if "value" in e:
            env_literal[e["name"]] = str(e["value"])
        elif ((e.get("valueFrom") or {}).get("secretKeyRef")) is not None:
            env_from_secret.add(e["name"])
        else:
            env_literal.setdefault(e["name"], "")
    cm_env: dict[str, str] = {}
    for ef in c.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        if ref:
            if ref not in configmaps:
                problem(where, f"envFrom ConfigMap {ref} is not defined by the overlay")
            for k, v in (configmaps.get(ref) or {}).items():
                cm_env[(ef.get("prefix") or "") + k] = str(v)
        if ef.get("secretRef"):
            problem(where, "envFrom a Secret puts credentials in the environment; mount it as files")

    # Command lines: no secrets, no expansion of secret env vars, secret-like flags take paths.
    for tok in command + args:
        leaks(f"{where} command line", tok)
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", tok):
            if var in env_from_secret:
                problem(where, f"command line expands secret variable $({var})")
        m = re.match(r"(--[^=]+)=(.*)", tok)
        if m and SECRETISH.search(m.group(1)) and not m.group(2).startswith("/"):
            problem(where, f"{m.group(1)} must be a file path, got a literal value")
    for k, v in env_literal.items():
        leaks(f"{where} env {k}", v)
        if SECRETISH.search(k) and v and not v.startswith("/"):
            problem(where, f"env {k} looks secret but holds a literal (use a file from a Secret)")

    binary = os.path.basename(command[0]) if command else ""
    if not (binary.startswith("lightcl") or binary.startswith("lightctl")):
        return
    if binary not in image_bins:
        problem(where, f"runs {binary}, which deploy/docker/Dockerfile does not build")

    env_all = {**cm_env, **env_literal}
    lightcl_env = {k for k in set(env_all) | env_from_secret | DOCKER_ENV if k.startswith("LIGHTCL_")}
    flags = [re.match(r"(--[^=]+)", t).group(1) for t in command[1:] + args if t.startswith("--")]

    # Probes and addresses.
    admin = port_of(env_all.get("LIGHTCL_ADMIN_ADDR", ""))
    if admin is None:
        problem(where, "LIGHTCL_ADMIN_ADDR (host:port) is not set, probes cannot be checked")
    declared = {p.get("containerPort") for p in c.get("ports") or []}
    for var in ("LIGHTCL_ADMIN_ADDR", "LIGHTCL_GRPC_ADDR", "LIGHTCL_RPC_ADDR"):
        port = port_of(env_all.get(var, ""))
        if var in env_all and port not in declared:
            problem(where, f"{var}={env_all[var]} binds a port the container does not declare")
    for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        p = c.get(probe)
        if not p or "httpGet" not in p:
            problem(where, f"{probe} must be an httpGet on {path}")
            continue
        got_path = p["httpGet"].get("path")
        got_port = resolve_port(c, p["httpGet"].get("port"))
        if got_path != path:
            problem(where, f"{probe} path is {got_path}, expected {path}")
        if admin is not None and got_port != admin:
            problem(where, f"{probe} port {got_port} is not the admin port {admin}")

    # SIGTERM must be able to drain before the kubelet's SIGKILL.
    grace = parse_duration(env_all.get("LIGHTCL_SHUTDOWN_GRACE", "10s"))
    pod_grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace is None:
        problem(where, f"LIGHTCL_SHUTDOWN_GRACE={env_all.get('LIGHTCL_SHUTDOWN_GRACE')} is not a duration")
    elif pod_grace < grace + 5:
        problem(where, f"terminationGracePeriodSeconds {pod_grace} leaves no margin above the "
                       f"{grace:g}s shutdown grace")

    accepted = BinaryHelp.get(bin_dir, binary, strict)
    if accepted is None:
        return
    ok_flags, ok_envs = accepted
    before = len(problems)
    for f in flags:
        if f not in ok_flags:
            problem(where, f"{binary} does not accept {f}")
    for e in sorted(lightcl_env):
        if e not in ok_envs:
            problem(where, f"{binary} does not read {e} (no flag has this env twin)")
    if run and len(problems) == before:
        run_and_probe(where, bin_dir / binary, command[1:] + args, env_all, c, spec, strict)


def check_exported_metrics(where: str, binary: str, url: str, strict: bool) -> None:
    """Every unlabelled metrics.txt name of this service (lightcl-poller -> lightcl_poller_*) is
    declared on /metrics right after start-up.
    A missing one is an error with --strict, a warning otherwise (the dashboards would be
    empty for it)."""
    prefix = binary.replace("-", "_") + "_"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = r.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        problem(where, f"GET {url} failed: {e}")
        return
    declared = set()
    for m in re.finditer(r"^# TYPE (\S+) (\w+)", body, re.M):
        declared.add(m.group(1))
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", body, re.M):
        declared.add(m.group(1))
    for name in sorted(n for n in load_metrics_txt(labelled=False) if n.startswith(prefix)):
        if name not in declared and re.sub(r"_total$", "", name) not in declared:
            msg = f"{binary} does not export {name} (deploy/dashboards/metrics.txt)"
            if strict:
                problem(where, msg)
            else:
                notes.append("WARN " + msg)


SERVICE_DIRS = {"lightcl_poller_": "services/poller", "lightcl_validator_": "services/validator",
                "lightcl_engine_driver_": "services/engine-driver"}


def check_registered_metrics(strict: bool) -> None:
    """Every metrics.txt name (labelled ones too, which /metrics only shows after their first
    sample) is registered in its service's source: `register("name", ...)` on the service's
    `lightcl_<service>_` registry, `register_with_unit(..., Unit::Seconds, ...)` adding the unit.
    Services without any registration yet are skipped. Warning unless --strict."""
    for prefix, rel in SERVICE_DIRS.items():
        names = set()
        for f in (ROOT / rel).rglob("*.rs"):
            text = f.read_text(errors="replace")
            for m in re.finditer(r'\.register\(\s*"([a-z0-9_]+)"', text):
                names.add(prefix + m.group(1))
            for m in re.finditer(r'\.register_with_unit\(\s*"([a-z0-9_]+)"[^;]*?Unit::(\w+)', text, re.S):
                names.add(f"{prefix}{m.group(1)}_{m.group(2).lower()}")
        if not names:
            notes.append(f"SKIP metric registrations: {rel} registers no metrics yet")
            continue
        for name in sorted(n for n in load_metrics_txt() if n.startswith(prefix)):
            if re.sub(r"_total$", "", name) not in names:
                msg = f"{rel} registers no metric {name} (deploy/dashboards/metrics.txt)"
                if strict:
                    problem(rel, msg)
                else:
                    notes.append("WARN " + msg)


def parse_duration(text: str) -> float | None:
    """`20s`, `500ms`, `1m30s` (humantime subset) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", text)
    if not parts or re.sub(r"[\d.\s]*(ms|s|m|h)", "", text).strip():
        return None
    return sum(float(n) * units[u] for n, u in parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def dummy_secret(name: str, tmp: Path) -> str:
    """Stand-in content for a mounted Secret file: a 64-hex JWT secret, a self-signed PEM
    certificate/key pair (made with the `openssl` CLI) for TLS files, else a token."""
    if "jwt" in name:
        return os.urandom(32).hex()
    if name in ("tls.crt", "tls.key", "ca.crt"):
        cert, key = tmp / "probe-cert.pem", tmp / "probe-key.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                            str(cert), "-days", "2", "-subj", "/CN=localhost"],
                           check=True, capture_output=True)
        return (key if name == "tls.key" else cert).read_text()
    return "probe-token-value\n"


def run_and_probe(where, path: Path, argv: list[str], env_all: dict, c: dict, spec: dict,
                  strict: bool) -> None:
    """Start the binary as the container would (endpoints pointed at closed local ports,
    Secret files replaced by dummies) and check: /live and /ready are served on the admin
    address (200 or 503, never 404 or a refused connection), /metrics answers 200, and SIGTERM
    makes it exit 0 within its shutdown grace. Nothing it depends on is up, so this also checks
    that a missing dependency means "not ready", not an exit."""
    with tempfile.TemporaryDirectory(prefix="lightcl-probe-") as tmp:
        secret_mounts = {}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            if "secret" in volumes.get(m["name"], {}):
                secret_mounts[m["mountPath"].rstrip("/")] = Path(tmp, m["name"])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
        for k, v in env_all.items():
            for mount, local in secret_mounts.items():
                if v.startswith(mount + "/"):
                    f = local / v[len(mount) + 1:]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(dummy_secret(f.name, Path(tmp)))
                    v = str(f)
            v = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/]+", lambda m: f"{m.group(1)}127.0.0.1:{free_port()}", v)
            env[k] = v
        for e in c.get("env") or []:  # fieldRef (pod name) or secretKeyRef: dummy values
            if "valueFrom" in e:
                env[e["name"]] = "probe-0"
        admin = f"127.0.0.1:{free_port()}"
        env["LIGHTCL_ADMIN_ADDR"] = admin
        for var in ("LIGHTCL_GRPC_ADDR", "LIGHTCL_RPC_ADDR"):
            if var in env:
                env[var] = f"127.0.0.1:{free_port()}"
        env["LIGHTCL_SHUTDOWN_GRACE"] = "3s"
        log = Path(tmp, "stderr.log")
        with open(log, "wb") as err:
            proc = subprocess.Popen([str(path), *argv], env=env, stdout=err, stderr=err)
        try:
            deadline = time.monotonic() + 20
            live = None
            while time.monotonic() < deadline and proc.poll() is None:
                live = http_status(f"http://{admin}/live")
                if live is not None:
                    break
                time.sleep(0.1)
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                problem(where, f"{path.name} exited {proc.returncode} at start-up with the manifest's "
                               f"settings: {' | '.join(tail)}")
                return
            for p, ok in (("/live", {200, 503}), ("/ready", {200, 503}), ("/metrics", {200})):
                got = http_status(f"http://{admin}{p}")
                if got not in ok:
                    problem(where, f"{path.name} answered {got} on GET {p} (admin {admin}), expected {sorted(ok)}")
            check_exported_metrics(where, path.name, f"http://{admin}/metrics", strict)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=3 + 7)
                if code != 0:
                    problem(where, f"{path.name} exited {code} after SIGTERM, expected 0")
            except subprocess.TimeoutExpired:
                problem(where, f"{path.name} did not exit within 10s of SIGTERM (shutdown grace 3s)")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def load_metrics_txt(labelled: bool = True) -> dict[str, str]:
    """deploy/dashboards/metrics.txt as {name: type}; without the labelled families if not
    `labelled` (prometheus-client writes a family only after its first sample)."""
    listed = {}
    for line in (ROOT / "deploy/dashboards/metrics.txt").read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            if labelled or len(parts) < 3 or parts[2] == "-":
                listed[parts[0]] = parts[1] if len(parts) > 1 else "?"
    return listed


def check_dashboards() -> None:
    d = ROOT / "deploy/dashboards"
    types = load_metrics_txt()
    listed = set(types)
    histograms = {n for n, t in types.items() if t == "histogram"}
    exprs: list[tuple[str, str]] = []
    dash = json.loads((d / "lightcl.json").read_text())
    ids = set()
    for p in dash.get("panels", []):
        if p.get("id") in ids:
            problem("deploy/dashboards/lightcl.json", f"duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        for t in p.get("targets") or []:
            if not t.get("expr"):
                problem("deploy/dashboards/lightcl.json", f"panel {p.get('title')!r} has a target without expr")
            exprs.append((f"dashboard panel {p.get('title')!r}", t.get("expr", "")))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            exprs.append((f"dashboard variable {v.get('name')}", q.get("query", "")))
    rules = yaml.safe_load((d / "alerts.yaml").read_text())
    if rules.get("kind") != "PrometheusRule":
        problem("deploy/dashboards/alerts.yaml", "must be a PrometheusRule")
    for g in (rules.get("spec") or {}).get("groups") or []:
        for r in g.get("rules") or []:
            where = f"alert {r.get('alert')}"
            for key in ("alert", "expr"):
                if not r.get(key):
                    problem(where, f"missing {key}")
            if (r.get("labels") or {}).get("severity") not in ("critical", "warning", "info"):
                problem(where, "labels.severity must be critical, warning or info")
            if not (r.get("annotations") or {}).get("summary"):
                problem(where, "annotations.summary missing")
            if "for" in r and not re.fullmatch(r"\d+[smhd]", str(r["for"])):
                problem(where, f"bad duration for: {r['for']}")
            exprs.append((where, r.get("expr", "")))
    try:
        import promql_parser
    except ImportError:
        promql_parser = None
        notes.append("SKIP PromQL syntax: python package promql-parser is not installed")
    for where, e in exprs:
        if promql_parser is None:
            break
        # Grafana variables -> plain values, so the query is plain PromQL.
        q = e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        q = re.sub(r"\$\{?(\w+)\}?", "x", q)
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q, re.S)  # Grafana helper
        q = m.group(1) if m else q
        try:
            promql_parser.parse(q)
        except ValueError as err:
            problem(where, f"PromQL does not parse ({err}): {e.strip()}")
    used = set()
    for where, e in exprs:
        for m in re.findall(r"\blightcl_[a-z0-9_]+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            name = m if m in listed else base if base in histograms else m
            used.add(name)
            if name not in listed:
                problem(where, f"uses {m}, which deploy/dashboards/metrics.txt does not list")
    for m in sorted(listed - used):
        notes.append(f"note: metrics.txt lists {m}, which no panel or alert uses")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overlays", nargs="+", type=Path)
    ap.add_argument("--bin-dir", type=Path, default=ROOT / "target/debug")
    ap.add_argument("--strict", action="store_true", help="a missing binary is an error")
    ap.add_argument("--run", action="store_true",
                    help="also start each built binary with its container's env and probe it")
    a = ap.parse_args()
    image_bins = check_dockerfile()
    for o in a.overlays:
        check_overlay(o.resolve(), a.bin_dir, a.strict, image_bins, a.run)
    check_dashboards()
    check_registered_metrics(a.strict)
    for n in dict.fromkeys(notes):
        print(n)
    for p in problems:
        print("ERROR " + p)
    print(f"check-manifest-flags: {len(a.overlays)} overlays, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
