#!/usr/bin/env python3
"""Evaluates the rendered NetworkPolicies as Kubernetes would, and checks the bus TLS wiring.

Usage: check-network.py [--verbose] OVERLAY_DIR...

For every overlay (rendered with `kubectl kustomize`):
  * the pods it runs: every rendered workload's pod template; the NATS servers and nats-box of
    the official Helm chart (modelled from deploy/k8s/nats/values-prod.yaml, release `nats`,
    chart 1.x labels and ports) when the overlay ships no NATS of its own; the operator pod of
    deploy/k8s/tools. Callers outside the overlay are made up: a stranger pod in the namespace,
    Prometheus in `monitoring`, a pod in an operator namespace (lightcl.dev/operator), one in an
    RPC-client namespace (lightcl.dev/rpc-client), one in an unrelated namespace, one there that
    wears the lightcl pod labels (impostor), the internet;
  * the namespace has a default-deny ingress policy; every policy selects at least one pod;
    every port a policy names is a containerPort (number or name, and protocol) of a pod it
    selects; every declared containerPort is opened by some rule (else nothing reaches it);
  * the table CASES of (from, to, port) is evaluated with Kubernetes' semantics (a pod is
    isolated once any policy of that direction selects it, and then allowed if any rule of
    those policies allows; podSelector / namespaceSelector / ipBlock peers, named ports
    resolved on the destination pod, endPort, policyTypes; ingress of the destination and
    egress of the source) and each must give the expected allowed/denied;
  * bus TLS: every file under /var/run/secrets a container is given (env, ConfigMap, flag) is
    mounted from a Secret (with `items`: one of them); NATS client certificate and key come
    together, with a CA and only tls:// URLs; the overlay's NATS (its nats.conf, or the chart
    values) serves TLS exactly when the clients use it, verifies client certificates when they
    present one (and then has a CA for it), encrypts the cluster routes and gives nats-box a
    client certificate; the optional cert-manager Certificates (deploy/k8s/nats/cert-manager.yaml)
    issue those Secrets from one issuer, with the DNS names and key usages each needs.

Not modelled: pod IPs (an ipBlock peer only matches the internet caller), traffic from a pod's
own node (kubelet probes) and localhost, which NetworkPolicy never filters.

Exits 1 on any problem, printing one line per problem.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES_PROD = ROOT / "deploy/k8s/nats/values-prod.yaml"
CERT_MANAGER = ROOT / "deploy/k8s/nats/cert-manager.yaml"
TOOLS = ROOT / "deploy/k8s/tools"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
SECRETS_DIR = "/var/run/secrets/"

problems: list[str] = []


def problem(where: str, msg: str) -> None:
    problems.append(f"{where}: {msg}")


def render(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        problem(str(path), f"kubectl kustomize failed: {out.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --------------------------------------------------------------------------------------------
# The model: pods (with labels and declared ports) in namespaces (with labels), and callers.
# --------------------------------------------------------------------------------------------

@dataclass
class Pod:
    role: str                  # short name used by CASES
    namespace: str
    labels: dict
    ports: list = field(default_factory=list)  # (name or None, number, protocol)
    origin: str = "rendered"   # rendered | chart | tools | caller

    def declares(self, port, protocol: str, end=None) -> bool:
        for name, number, proto in self.ports:
            if proto != protocol:
                continue
            if isinstance(port, str) and name == port:
                return True
            if isinstance(port, int) and port <= number <= (end or port):
                return True
        return False

    def __str__(self) -> str:
        return f"{self.role} ({self.namespace})"


@dataclass
class External:
    role: str
    ip: str

    def __str__(self) -> str:
        return f"{self.role} ({self.ip})"


def pod_spec(doc: dict) -> dict:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return spec
    if doc.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def pod_labels(doc: dict) -> dict:
    if doc.get("kind") == "Pod":
        return dict((doc.get("metadata") or {}).get("labels") or {})
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})


def declared_ports(spec: dict) -> list:
    return [(p.get("name"), p.get("containerPort"), p.get("protocol", "TCP"))
            for c in spec.get("containers") or [] for p in c.get("ports") or []]


def role_of(labels: dict, fallback: str) -> str:
    name = labels.get("app.kubernetes.io/name", fallback)
    component = labels.get("app.kubernetes.io/component")
    if component == "execution-client":
        return "el"
    if name == "nats" and component in ("nats", "nats-box"):
        return component
    return {"lightcl-poller": "poller", "lightcl-validator": "validator"}.get(name, name)


def chart_pods(namespace: str) -> list[Pod]:
    """The pods the official nats chart (1.x) makes from values-prod.yaml with release `nats`:
    the StatefulSet's servers (labels of nats.selectorLabels, ports named as in
    files/stateful-set/nats-container.yaml and prom-exporter-container.yaml) and nats-box."""
    values = yaml.safe_load(VALUES_PROD.read_text()) or {}
    cfg = values.get("config") or {}
    name = values.get("nameOverride") or "nats"
    extra = ((values.get("global") or {}).get("labels") or {})
    tmpl = (((values.get("podTemplate") or {}).get("merge") or {}).get("metadata") or {}).get("labels") or {}
    ports = [("nats", (cfg.get("nats") or {}).get("port", 4222), "TCP")]
    for proto, default in (("leafnodes", 7422), ("websocket", 8080), ("mqtt", 1883), ("cluster", 6222),
                           ("gateway", 7222), ("monitor", 8222), ("profiling", 65432)):
        section = cfg.get(proto) or {}
        enabled = section.get("enabled", proto == "monitor")  # the chart enables monitor by default
        if enabled:
            ports.append((proto, section.get("port", default), "TCP"))
    exporter = values.get("promExporter") or {}
    if exporter.get("enabled"):
        ports.append(("prom-metrics", exporter.get("port", 7777), "TCP"))
    labels = {**extra, **tmpl, "app.kubernetes.io/name": name, "app.kubernetes.io/instance": "nats",
              "app.kubernetes.io/component": "nats"}
    pods = [Pod("nats", namespace, labels, ports, "chart")]
    box = values.get("natsBox") or {}
    if box.get("enabled", True):
        btmpl = (((box.get("podTemplate") or {}).get("merge") or {}).get("metadata") or {}).get("labels") or {}
        pods.append(Pod("nats-box", namespace, {**extra, **btmpl, "app.kubernetes.io/name": name,
                                                "app.kubernetes.io/instance": "nats",
                                                "app.kubernetes.io/component": "nats-box"}, [], "chart"))
    return pods


# Callers from outside the overlay, and their namespaces' labels.
CALLER_NAMESPACES = {
    "monitoring": {},
    "lightcl-ops": {"lightcl.dev/operator": "true"},
    "op-stack": {"lightcl.dev/rpc-client": "true"},
    "default": {},
}


def callers(namespace: str) -> list:
    return [
        Pod("stranger", namespace, {"app.kubernetes.io/name": "stranger"}, [], "caller"),
        Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, [], "caller"),
        Pod("ops", "lightcl-ops", {"app.kubernetes.io/name": "toolbox"}, [], "caller"),
        Pod("rpc-client", "op-stack", {"app.kubernetes.io/name": "op-batcher"}, [], "caller"),
        Pod("outsider", "default", {"app.kubernetes.io/name": "outsider"}, [], "caller"),
        # Pod labels grant access only inside the lightcl namespace: elsewhere anyone can set them.
        Pod("impostor", "default", {"app.kubernetes.io/name": "lightcl-poller", "lightcl.dev/nats-client": "true",
                                    "lightcl.dev/operator": "true", "lightcl.dev/rpc-client": "true"}, [], "caller"),
        External("internet", "203.0.113.7"),
    ]


# --------------------------------------------------------------------------------------------
# NetworkPolicy semantics (networking.k8s.io/v1).
# --------------------------------------------------------------------------------------------

def selects(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector; {} selects everything. An absent selector is handled by the caller."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != str(v):
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), [str(v) for v in e.get("values") or []]
        if op == "In" and (key not in labels or labels[key] not in values):
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op}")
    return True


def policy_types(pol: dict) -> list[str]:
    spec = pol.get("spec") or {}
    if spec.get("policyTypes"):
        return spec["policyTypes"]
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


class Cluster:
    def __init__(self, namespaces: dict[str, dict], pods: list[Pod], policies: list[dict]):
        self.namespaces = namespaces
        self.pods = pods
        self.policies = policies

    def peer_matches(self, peer: dict, policy_ns: str, other) -> bool:
        """Does `other` (the source of an ingress rule, the destination of an egress rule) match
        one entry of `from`/`to`?"""
        if "ipBlock" in peer:
            if not isinstance(other, External):
                return False  # pod IPs are not modelled
            ip = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            net = ipaddress.ip_network(block["cidr"], strict=False)
            return ip.version == net.version and ip in net and not any(
                ip in ipaddress.ip_network(x, strict=False) for x in block.get("except") or []
                if ipaddress.ip_network(x, strict=False).version == ip.version)
        if isinstance(other, External):
            return False
        ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
        if ns_sel is None:
            ns_ok = other.namespace == policy_ns
        else:
            ns_ok = selects(ns_sel, self.namespaces.get(other.namespace, {}))
        return ns_ok and (pod_sel is None or selects(pod_sel, other.labels))

    @staticmethod
    def port_matches(entries: list | None, dst: Pod, port: int, protocol: str) -> bool:
        if not entries:
            return True
        for e in entries:
            if e.get("protocol", "TCP") != protocol:
                continue
            p = e.get("port")
            if p is None:
                return True
            if isinstance(p, str):
                # A named port is resolved on the destination pod.
                if any(name == p and number == port and proto == protocol for name, number, proto in dst.ports):
                    return True
            elif p <= port <= e.get("endPort", p):
                return True
        return False

    def selecting(self, pod: Pod, direction: str) -> list[dict]:
        return [p for p in self.policies
                if p["metadata"].get("namespace") == pod.namespace and direction in policy_types(p)
                and selects((p.get("spec") or {}).get("podSelector"), pod.labels)]

    def verdict(self, src, dst: Pod, port: int, protocol: str) -> tuple[bool, str]:
        """(allowed, why) for a new connection src -> dst:port/protocol."""
        ingress = self.selecting(dst, "Ingress")
        if ingress:
            ok = [p["metadata"]["name"] for p in ingress for rule in p["spec"].get("ingress") or []
                  if self.port_matches(rule.get("ports"), dst, port, protocol)
                  and (not rule.get("from") or any(self.peer_matches(peer, dst.namespace, src)
                                                   for peer in rule["from"]))]
            if not ok:
                names = ", ".join(p["metadata"]["name"] for p in ingress)
                return False, f"ingress of {dst.role} isolated by [{names}], no rule admits it"
            why = "ingress allowed by " + "/".join(dict.fromkeys(ok))
        else:
            why = f"{dst.role} is not isolated for ingress"
        if isinstance(src, Pod):
            egress = self.selecting(src, "Egress")
            if egress and not any(
                    self.port_matches(rule.get("ports"), dst, port, protocol)
                    and (not rule.get("to") or any(self.peer_matches(peer, src.namespace, dst) for peer in rule["to"]))
                    for p in egress for rule in p["spec"].get("egress") or []):
                names = ", ".join(p["metadata"]["name"] for p in egress)
                return False, f"egress of {src.role} isolated by [{names}], no rule admits it"
        return True, why


# --------------------------------------------------------------------------------------------
# The table: (from, to, port, protocol, expected allowed, optional). An optional case is skipped
# when one of its pods does not exist in the overlay or the destination does not declare the
# port (the cluster port in single-node dev); every other case must have its pods.
# --------------------------------------------------------------------------------------------

ALLOW, DENY = True, False
OPT = True
ENGINE_API = 8551
EVERYONE = ("poller", "validator", "el", "nats", "nats-box", "lightctl", "stranger", "prometheus", "ops",
            "rpc-client", "outsider", "impostor", "internet")

CASES = [
    # The bus: only the lightcl services and operator pods of the namespace reach NATS clients.
    ("poller", "nats", 4222, "TCP", ALLOW, False),
    ("validator", "nats", 4222, "TCP", ALLOW, False),
    ("el", "nats", 4222, "TCP", ALLOW, False),  # the engine-driver sidecar
    ("lightctl", "nats", 4222, "TCP", ALLOW, False),
    ("nats-box", "nats", 4222, "TCP", ALLOW, OPT),
    ("stranger", "nats", 4222, "TCP", DENY, False),
    ("outsider", "nats", 4222, "TCP", DENY, False),
    ("impostor", "nats", 4222, "TCP", DENY, False),
    ("ops", "nats", 4222, "TCP", DENY, False),
    ("rpc-client", "nats", 4222, "TCP", DENY, False),
    ("prometheus", "nats", 4222, "TCP", DENY, False),
    ("internet", "nats", 4222, "TCP", DENY, False),
    # Cluster routes only between the NATS servers.
    ("nats", "nats", 6222, "TCP", ALLOW, OPT),
    ("poller", "nats", 6222, "TCP", DENY, False),
    ("stranger", "nats", 6222, "TCP", DENY, False),
    ("nats-box", "nats", 6222, "TCP", DENY, OPT),
    # NATS monitoring and its exporter only from monitoring.
    ("prometheus", "nats", 8222, "TCP", ALLOW, False),
    ("poller", "nats", 8222, "TCP", DENY, False),
    ("stranger", "nats", 8222, "TCP", DENY, False),
    ("ops", "nats", 8222, "TCP", DENY, False),
    ("prometheus", "nats", 7777, "TCP", ALLOW, OPT),
    ("stranger", "nats", 7777, "TCP", DENY, False),
    # The authenticated Engine API: no other pod, nothing outside (the driver uses localhost).
    *[(src, "el", ENGINE_API, "TCP", DENY, src == "nats-box") for src in EVERYONE],
    # P2P from anywhere.
    ("internet", "el", 30303, "TCP", ALLOW, False),
    ("internet", "el", 30303, "UDP", ALLOW, False),
    ("outsider", "el", 30303, "TCP", ALLOW, False),
    ("stranger", "el", 30303, "UDP", ALLOW, False),
    # EL JSON-RPC and the driver's optimism_syncStatus: RPC clients and operators.
    ("rpc-client", "el", 8545, "TCP", ALLOW, False),
    ("rpc-client", "el", 9545, "TCP", ALLOW, False),
    ("ops", "el", 8545, "TCP", ALLOW, False),
    ("lightctl", "el", 9545, "TCP", ALLOW, False),
    ("stranger", "el", 8545, "TCP", DENY, False),
    ("outsider", "el", 9545, "TCP", DENY, False),
    ("impostor", "el", 8545, "TCP", DENY, False),
    ("internet", "el", 8545, "TCP", DENY, False),
    ("poller", "el", 8545, "TCP", DENY, False),
    ("prometheus", "el", 8545, "TCP", DENY, False),
    # Control gRPC: operators only (an operator namespace, or the lightctl pod).
    ("ops", "poller", 7101, "TCP", ALLOW, False),
    ("ops", "validator", 7201, "TCP", ALLOW, False),
    ("ops", "el", 7301, "TCP", ALLOW, False),
    ("lightctl", "poller", 7101, "TCP", ALLOW, False),
    ("lightctl", "validator", 7201, "TCP", ALLOW, False),
    ("lightctl", "el", 7301, "TCP", ALLOW, False),
    ("prometheus", "validator", 7201, "TCP", DENY, False),
    ("stranger", "validator", 7201, "TCP", DENY, False),
    ("stranger", "poller", 7101, "TCP", DENY, False),
    ("stranger", "el", 7301, "TCP", DENY, False),
    ("outsider", "validator", 7201, "TCP", DENY, False),
    ("impostor", "validator", 7201, "TCP", DENY, False),
    ("impostor", "el", 7301, "TCP", DENY, False),
    ("rpc-client", "el", 7301, "TCP", DENY, False),
    ("internet", "validator", 7201, "TCP", DENY, False),
    ("nats-box", "validator", 7201, "TCP", DENY, OPT),
    ("poller", "validator", 7201, "TCP", DENY, False),  # the services never call each other
    ("validator", "el", 7301, "TCP", DENY, False),
    ("el", "poller", 7101, "TCP", DENY, False),
    # Admin (/live, /ready, /metrics) and op-reth metrics: monitoring and operators.
    ("prometheus", "poller", 7102, "TCP", ALLOW, False),
    ("prometheus", "validator", 7202, "TCP", ALLOW, False),
    ("prometheus", "el", 7302, "TCP", ALLOW, False),
    ("prometheus", "el", 9001, "TCP", ALLOW, False),
    ("ops", "validator", 7202, "TCP", ALLOW, False),
    ("stranger", "validator", 7202, "TCP", DENY, False),
    ("outsider", "poller", 7102, "TCP", DENY, False),
    ("impostor", "validator", 7202, "TCP", DENY, False),
    ("internet", "el", 7302, "TCP", DENY, False),
    ("nats", "validator", 7202, "TCP", DENY, False),
    ("rpc-client", "el", 9001, "TCP", DENY, False),
]


def check_policies(name: str, docs: list[dict], namespace: str, verbose: bool) -> None:
    ns_doc = next((d for d in docs if d.get("kind") == "Namespace"), None)
    ns_labels = dict(((ns_doc or {}).get("metadata") or {}).get("labels") or {})
    ns_labels["kubernetes.io/metadata.name"] = namespace
    namespaces = {namespace: ns_labels}
    for n, labels in CALLER_NAMESPACES.items():
        namespaces[n] = {**labels, "kubernetes.io/metadata.name": n}

    pods: list[Pod] = []
    for d in docs:
        if d.get("kind") in WORKLOADS:
            labels = pod_labels(d)
            pods.append(Pod(role_of(labels, d["metadata"]["name"]), namespace, labels,
                            declared_ports(pod_spec(d))))
    if not any(p.role == "nats" for p in pods):
        pods += chart_pods(namespace)
    for d in render(TOOLS):
        if d.get("kind") in WORKLOADS:
            labels = pod_labels(d)
            pods.append(Pod(role_of(labels, d["metadata"]["name"]), namespace, labels,
                            declared_ports(pod_spec(d)), "tools"))
    everyone = pods + callers(namespace)
    by_role: dict[str, object] = {}
    for p in everyone:
        by_role.setdefault(p.role, p)

    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    for p in policies:
        p["metadata"].setdefault("namespace", namespace)
    cluster = Cluster(namespaces, everyone, policies)
    deployed = [p for p in pods if p.origin in ("rendered", "chart")]

    # Default deny: an ingress policy selecting every pod, with no rule.
    if not any(policy_types(p) == ["Ingress"] and not (p["spec"].get("podSelector") or {})
               and not p["spec"].get("ingress") for p in policies):
        problem(f"{name}", f"no default-deny ingress NetworkPolicy (podSelector {{}}, policyTypes [Ingress], "
                           f"no rules) in namespace {namespace}")

    for pol in policies:
        where = f"{name} NetworkPolicy/{pol['metadata']['name']}"
        spec = pol.get("spec") or {}
        try:
            selected = [p for p in deployed if selects(spec.get("podSelector"), p.labels)]
        except ValueError as e:
            problem(where, str(e))
            continue
        if not selected:
            problem(where, f"podSelector {spec.get('podSelector')} selects no pod of the overlay "
                           f"(nor of the NATS chart)")
            continue
        for i, rule in enumerate(spec.get("ingress") or []):
            for e in rule.get("ports") or []:
                port, proto = e.get("port"), e.get("protocol", "TCP")
                if port is not None and not any(p.declares(port, proto, e.get("endPort")) for p in selected):
                    problem(where, f"ingress rule {i} names port {port}/{proto}, which no selected pod "
                                   f"({', '.join(sorted({p.role for p in selected}))}) declares as a containerPort")
        for i, rule in enumerate(spec.get("egress") or []):
            targets = [p for p in deployed if any(cluster.peer_matches(peer, namespace, p)
                                                  for peer in rule.get("to") or [])]
            for e in rule.get("ports") or []:
                port, proto = e.get("port"), e.get("protocol", "TCP")
                if targets and port is not None and not any(p.declares(port, proto, e.get("endPort")) for p in targets):
                    problem(where, f"egress rule {i} names port {port}/{proto}, which no pod it allows declares")

    # Every declared port is opened to someone (else it is dead behind the default deny).
    for pod in deployed:
        for pname, number, proto in pod.ports:
            pols = cluster.selecting(pod, "Ingress")
            if pols and not any(cluster.port_matches(rule.get("ports"), pod, number, proto)
                                for pol in pols for rule in pol["spec"].get("ingress") or []):
                problem(f"{name} pod {pod.role}", f"containerPort {pname or ''} {number}/{proto} is opened by no "
                                                  f"NetworkPolicy rule, so nothing can reach it")

    passed = skipped = 0
    for src_role, dst_role, port, proto, expected, optional in CASES:
        case = f"{src_role} -> {dst_role}:{port}/{proto}"
        src, dst = by_role.get(src_role), by_role.get(dst_role)
        if src is None or dst is None:
            if not optional:
                problem(name, f"case {case}: no pod with role {src_role if src is None else dst_role}")
            skipped += 1
            continue
        if expected and not dst.declares(port, proto):
            if optional:
                skipped += 1
                continue
            problem(name, f"case {case}: expected allowed, but {dst} declares no containerPort {port}/{proto}")
        allowed, why = cluster.verdict(src, dst, port, proto)
        if allowed != expected:
            problem(name, f"case {case} ({src} -> {dst}): expected {'ALLOWED' if expected else 'DENIED'}, "
                          f"got {'ALLOWED' if allowed else 'DENIED'}: {why}")
        else:
            passed += 1
        if verbose:
            print(f"  {'allow' if allowed else 'deny '} {case:<32} {why}")
    print(f"ok  {name}: {len(policies)} NetworkPolicies, {len(deployed)} pods, {passed} cases as expected, "
          f"{skipped} not applicable")


# --------------------------------------------------------------------------------------------
# Bus TLS wiring.
# --------------------------------------------------------------------------------------------

def container_env(c: dict, configmaps: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for ef in c.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        for k, v in (configmaps.get(ref) or {}).items():
            env[(ef.get("prefix") or "") + k] = str(v)
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
    return env


def check_secret_paths(where: str, c: dict, spec: dict, env: dict, secrets: dict) -> None:
    """Every /var/run/secrets path given to the container is a file of a mounted Secret."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    paths = [(f"env {k}", v) for k, v in env.items() if v.startswith(SECRETS_DIR)]
    for tok in (c.get("command") or []) + [str(a) for a in c.get("args") or []]:
        m = re.match(r"(--[^=]+)=(/var/run/secrets/\S+)$", tok)
        if m:
            paths.append((m.group(1), m.group(2)))
    for what, path in paths:
        mount = next((m for m in c.get("volumeMounts") or []
                      if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        if mount is None:
            problem(where, f"{what}={path} is under no volumeMount")
            continue
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            problem(where, f"{what}={path}: volume {mount['name']} is not a Secret")
            continue
        rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
        items = secret.get("items")
        if items is not None:
            if rel not in {i.get("path") for i in items}:
                problem(where, f"{what}={path}: Secret {secret.get('secretName')} is mounted with items "
                               f"{[i.get('path') for i in items]}, not {rel}")
        elif secret.get("secretName") in secrets and rel not in secrets[secret["secretName"]]:
            problem(where, f"{what}={path}: Secret {secret['secretName']} has no key {rel}")


def nats_server_tls(docs: list[dict], configmaps: dict) -> dict:
    """What the overlay's NATS requires: its own nats.conf, or the chart values."""
    own = next((d for d in docs if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == "nats"), None)
    if own is not None:
        conf = ""
        for v in pod_spec(own).get("volumes") or []:
            ref = (v.get("configMap") or {}).get("name")
            if ref in configmaps:
                conf += "\n".join(str(x) for x in configmaps[ref].values())
        body = re.sub(r"#.*", "", conf)
        tls = re.search(r"(?m)^\s*tls\s*[:={]", body) is not None
        return {"source": "the overlay's nats.conf", "tls": tls,
                "verify": tls and re.search(r"\bverify(_and_map)?\s*[:=]\s*true", body) is not None,
                "chart": None}
    values = yaml.safe_load(VALUES_PROD.read_text()) or {}
    tls = ((values.get("config") or {}).get("nats") or {}).get("tls") or {}
    merge = tls.get("merge") or {}
    on = bool(tls.get("enabled") and tls.get("secretName"))
    return {"source": "deploy/k8s/nats/values-prod.yaml", "tls": on,
            "verify": on and bool(merge.get("verify") or merge.get("verify_and_map")), "chart": values}


def check_tls(name: str, docs: list[dict]) -> None:
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    secrets: dict[str, set] = {}
    for s in (d for d in docs if d.get("kind") == "Secret"):
        secrets[s["metadata"]["name"]] = set(s.get("data") or {}) | set(s.get("stringData") or {})
    clients = []  # (where, uses TLS, presents a certificate, client Secret names)
    for w in (d for d in docs if d.get("kind") in WORKLOADS):
        spec = pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            where = f"{name} {w['kind']}/{w['metadata']['name']} container {c.get('name')}"
            env = container_env(c, configmaps)
            check_secret_paths(where, c, spec, env, secrets)
            binary = os.path.basename((c.get("command") or [""])[0])
            if not binary.startswith(("lightcl-", "lightctl")):
                continue
            ca, cert, key = (env.get(f"LIGHTCL_NATS_TLS_{k}") for k in ("CA", "CERT", "KEY"))
            urls = [u.strip() for u in env.get("LIGHTCL_NATS_URL", "nats://127.0.0.1:4222").split(",") if u.strip()]
            if bool(cert) != bool(key):
                problem(where, "LIGHTCL_NATS_TLS_CERT and LIGHTCL_NATS_TLS_KEY must be set together")
            if cert and not ca:
                problem(where, "a NATS client certificate without LIGHTCL_NATS_TLS_CA: the server would be "
                               "checked against the system roots, which do not know the bus CA")
            plain = [u for u in urls if not u.startswith("tls://")]
            if ca and plain:
                problem(where, f"LIGHTCL_NATS_TLS_CA is set but LIGHTCL_NATS_URL has non-tls:// URLs {plain}")
            if not ca and len(plain) < len(urls):
                problem(where, "LIGHTCL_NATS_URL uses tls:// without LIGHTCL_NATS_TLS_CA")
            client_secrets = set()
            for path in (cert, key, ca):
                for m in c.get("volumeMounts") or []:
                    if path and path.startswith(m["mountPath"].rstrip("/") + "/"):
                        sec = (volumes.get(m["name"]) or {}).get("secret") or {}
                        if sec.get("secretName"):
                            client_secrets.add(sec["secretName"])
            clients.append((where, bool(ca), bool(cert and key), client_secrets))
    if not clients:
        return

    server = nats_server_tls(docs, configmaps)
    src = server["source"]
    for where, tls, mtls, _ in clients:
        if tls and not server["tls"]:
            problem(where, f"connects with TLS, but {src} serves no TLS on the client port")
        if server["tls"] and not tls:
            problem(where, f"connects without TLS, but {src} requires it (set LIGHTCL_NATS_TLS_CA and tls:// URLs)")
        if server["verify"] and not mtls:
            problem(where, f"{src} requires a client certificate (verify), but the container has no "
                           "LIGHTCL_NATS_TLS_CERT/LIGHTCL_NATS_TLS_KEY")
        if mtls and server["tls"] and not server["verify"]:
            problem(where, f"presents a client certificate, but {src} does not verify it (verify: true)")
    values = server["chart"]
    if values is None or not server["tls"]:
        return

    cfg = values.get("config") or {}
    nats_tls = (cfg.get("nats") or {}).get("tls") or {}
    cluster = cfg.get("cluster") or {}
    tls_ca = values.get("tlsCA") or {}
    has_ca = bool(tls_ca.get("enabled") and (tls_ca.get("secretName") or tls_ca.get("configMapName"))) \
        or "ca_file" in (nats_tls.get("merge") or {})
    if server["verify"] and not has_ca:
        problem(src, "config.nats.tls verifies client certificates but no CA is configured (tlsCA)")
    if cluster.get("enabled") and not ((cluster.get("tls") or {}).get("enabled")
                                       and (cluster.get("tls") or {}).get("secretName")):
        problem(src, "the client port uses TLS but the cluster routes do not (config.cluster.tls)")
    box = values.get("natsBox") or {}
    box_secret = ((((box.get("contexts") or {}).get("default") or {}).get("tls") or {}).get("secretName"))
    if box.get("enabled", True) and server["verify"] and not box_secret:
        problem(src, "nats-box has no client certificate (natsBox.contexts.default.tls.secretName), "
                     "the server would refuse it")

    # The optional cert-manager example must issue exactly these Secrets.
    if not CERT_MANAGER.exists():
        return
    cm_where = "deploy/k8s/nats/cert-manager.yaml"
    objs = [d for d in yaml.safe_load_all(CERT_MANAGER.read_text()) if d]
    certs = {(d.get("spec") or {}).get("secretName"): d for d in objs if d.get("kind") == "Certificate"}
    issuers = {d["metadata"]["name"] for d in objs if d.get("kind") == "Issuer"}
    service = (values.get("service") or {}).get("name") or "nats"
    headless = (values.get("headlessService") or {}).get("name") or f"{service}-headless"

    def issued(secret: str, what: str, usages: set[str], dns: list[str]) -> dict | None:
        cert = certs.get(secret)
        if cert is None:
            problem(cm_where, f"no Certificate issues Secret {secret} ({what})")
            return None
        spec = cert.get("spec") or {}
        missing = usages - set(spec.get("usages") or [])
        if missing:
            problem(cm_where, f"Certificate {cert['metadata']['name']} ({what}) lacks usages {sorted(missing)}")
        for n in dns:
            if n not in (spec.get("dnsNames") or []):
                problem(cm_where, f"Certificate {cert['metadata']['name']} ({what}) lacks dnsName {n}")
        ref = spec.get("issuerRef") or {}
        if ref.get("kind", "Issuer") == "Issuer" and ref.get("name") not in issuers:
            problem(cm_where, f"Certificate {cert['metadata']['name']} uses Issuer {ref.get('name')}, "
                              "which the file does not define")
        return cert

    used = []
    used.append(issued(nats_tls["secretName"], "NATS client port", {"server auth"}, [service]))
    route_secret = (cluster.get("tls") or {}).get("secretName")
    if cluster.get("enabled") and route_secret:
        used.append(issued(route_secret, "NATS cluster routes", {"server auth", "client auth"}, [f"*.{headless}"]))
    if tls_ca.get("secretName"):
        used.append(issued(tls_ca["secretName"], "tlsCA", set(), []))
    for sec in sorted({s for _, _, mtls, secs in clients if mtls for s in secs} | ({box_secret} - {None})):
        used.append(issued(sec, "NATS client certificate", {"client auth"}, []))
    refs = {(c["spec"].get("issuerRef") or {}).get("name") for c in used if c}
    if len(refs) > 1:
        problem(cm_where, f"the bus Certificates come from different issuers {sorted(refs)}: ca.crt would not "
                          "verify the other side")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overlays", nargs="+", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case and its reason")
    a = ap.parse_args()
    for o in a.overlays:
        o = o.resolve()
        name = str(o.relative_to(ROOT) if o.is_relative_to(ROOT) else o)
        docs = render(o)
        if not docs:
            continue
        ns = next((d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"), None) \
            or next((d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace")), "default")
        check_policies(name, docs, ns, a.verbose)
        check_tls(name, docs)
    for p in problems:
        print("ERROR " + p)
    print(f"check-network: {len(a.overlays)} overlays, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
