#!/usr/bin/env python3
"""Render the nats-server config that the official NATS Helm chart (1.3.x) makes from
deploy/k8s/nats/values-prod.yaml, so that scripts/check-deploy.sh can run `nats-server -t` on it.

What it models, after the chart's files/config/{config,tls,cluster,jetstream}.yaml and its
helpers nats.loadMergePatch and nats.formatConfig (nats-io/k8s, tag nats-1.3.16):
  - the chart's defaults for the parts below, overridden by the values file (Helm coalescing);
  - config.yaml: server_name (<< $SERVER_NAME >>), lame duck, pid_file, the client port and its
    tls block, the cluster block (name = release, port, no_advertise, one route per replica to
    <release>-<i>.<release>-headless, tls), http_port, the jetstream block (store_dir,
    max_file_store from maxSize or the PVC size, max_memory_store); each section merged with its
    own `merge`, then the whole document with `config.merge` (our accounts/users/permissions and
    lame-duck settings) — dicts merged key by key, anything else replaced;
  - tls blocks: cert_file/key_file under the Secret's mount dir, ca_file from `tlsCA`;
  - the output format: key-sorted pretty JSON, "<< x >>" unquoted, `...$include` keys turned into
    `include x;` directives;
  - the container environment the config is read with: the chart's POD_NAME and SERVER_NAME plus
    `container.env` (values from a secretKeyRef become a placeholder), for --env-file.
What it does not model: leafnodes, websocket, mqtt, gateway, resolver, profiling, HTTPS
monitoring, route URL credentials or FQDNs, JSON `patch` lists, and mergo's quirk of not
overwriting with empty values. A values file that turns one of these on is refused (exit 2), so
the check cannot pass by ignoring it. The Kubernetes side (mounts, Secrets, PVCs, probes) is not
rendered here; scripts/check-network.py checks the TLS wiring.

With --certs-root DIR every cert_file/key_file/ca_file path P becomes DIR/P, and a throwaway CA
(ca_file) and a server certificate signed by it (cert_file, key_file) are made there with the
`openssl` CLI, so that `nats-server -t` can load them.

Usage: render-nats-prod-conf.py [--values FILE] [--release NAME] [--certs-root DIR]
                                [--env-file FILE] [-o OUT]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES_PROD = ROOT / "deploy/k8s/nats/values-prod.yaml"

# The chart's defaults (values.yaml of nats-1.3.16) for the parts modelled here.
CHART_DEFAULTS = yaml.safe_load("""
tlsCA: {enabled: false, configMapName: null, secretName: null, dir: /etc/nats-ca-cert, key: ca.crt}
config:
  nats:
    port: 4222
    tls: {enabled: false, secretName: null, dir: /etc/nats-certs/nats, cert: tls.crt, key: tls.key,
          merge: {}, patch: []}
  cluster:
    enabled: false
    port: 6222
    replicas: 3
    routeURLs: {user: null, password: null, useFQDN: false, k8sClusterDomain: cluster.local}
    tls: {enabled: false, secretName: null, dir: /etc/nats-certs/cluster, cert: tls.crt,
          key: tls.key, merge: {}, patch: []}
    merge: {}
    patch: []
  jetstream:
    enabled: false
    fileStore: {enabled: true, dir: /data, pvc: {enabled: true, size: 10Gi}, maxSize: null}
    memoryStore: {enabled: false, maxSize: 1Gi}
    merge: {}
    patch: []
  leafnodes: {enabled: false}
  websocket: {enabled: false}
  mqtt: {enabled: false}
  gateway: {enabled: false}
  monitor: {enabled: true, port: 8222, tls: {enabled: false}}
  profiling: {enabled: false}
  resolver: {enabled: false}
  serverNamePrefix: ""
  merge: {}
  patch: []
container:
  env: {}
""")

NOT_MODELLED = ["leafnodes", "websocket", "mqtt", "gateway", "profiling", "resolver"]


class NotModelled(Exception):
    pass


def coalesce(defaults, values):
    """Helm's values coalescing: maps merged recursively, a null removes a default."""
    if not isinstance(defaults, dict) or not isinstance(values, dict):
        return copy.deepcopy(values)
    out = copy.deepcopy(defaults)
    for k, v in values.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = coalesce(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_overwrite(doc: dict, src: dict | None) -> dict:
    """Sprig's mergeOverwrite as the chart uses it: src wins, dicts merged key by key."""
    for k, v in (src or {}).items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            merge_overwrite(doc[k], v)
        else:
            doc[k] = copy.deepcopy(v)
    return doc


def no_patch(where: str, section: dict) -> None:
    if section.get("patch"):
        raise NotModelled(f"{where}.patch (JSON patch) is not modelled")


def tls_block(where: str, tls: dict, values: dict) -> dict:
    """files/config/tls.yaml, then the block's own merge."""
    no_patch(where, tls)
    block = {}
    if tls.get("secretName"):
        d = str(tls["dir"]).rstrip("/")
        block["cert_file"] = f"{d}/{tls.get('cert') or 'tls.crt'}"
        block["key_file"] = f"{d}/{tls.get('key') or 'tls.key'}"
    ca = values.get("tlsCA") or {}
    if ca.get("enabled") and (ca.get("configMapName") or ca.get("secretName")):
        d = str(ca["dir"]).rstrip("/")
        block["ca_file"] = f"{d}/{ca.get('key') or 'ca.crt'}"
    return merge_overwrite(block, tls.get("merge"))


def render_config(values: dict, release: str) -> dict:
    cfg = values["config"]
    for section in NOT_MODELLED:
        if (cfg.get(section) or {}).get("enabled"):
            raise NotModelled(f"config.{section}.enabled is not modelled")
    if cfg["monitor"].get("enabled") and cfg["monitor"].get("tls", {}).get("enabled"):
        raise NotModelled("config.monitor.tls.enabled (HTTPS monitoring) is not modelled")
    no_patch("config", cfg)

    doc: dict = {
        "server_name": "<< $SERVER_NAME >>",
        "lame_duck_grace_period": "10s",
        "lame_duck_duration": "30s",
        "pid_file": "/var/run/nats/nats.pid",
        "port": cfg["nats"]["port"],
    }
    if cfg["nats"]["tls"].get("enabled"):
        doc["tls"] = tls_block("config.nats.tls", cfg["nats"]["tls"], values)

    cl = cfg["cluster"]
    if cl.get("enabled"):
        no_patch("config.cluster", cl)
        urls = cl.get("routeURLs") or {}
        if urls.get("user") or urls.get("password") or urls.get("useFQDN"):
            raise NotModelled("config.cluster.routeURLs (credentials, FQDN) is not modelled")
        proto = "tls" if cl["tls"].get("enabled") else "nats"
        headless = f"{release}-headless"
        block = {
            "name": release,
            "port": cl["port"],
            "no_advertise": True,
            "routes": [
                f"{proto}://{release}-{i}.{headless}:{int(cl['port'])}"
                for i in range(int(cl["replicas"]))
            ],
        }
        if cl["tls"].get("enabled"):
            block["tls"] = tls_block("config.cluster.tls", cl["tls"], values)
        doc["cluster"] = merge_overwrite(block, cl.get("merge"))

    mon = cfg["monitor"]
    if mon.get("enabled"):
        doc["http_port"] = mon["port"]

    js = cfg["jetstream"]
    if js.get("enabled"):
        no_patch("config.jetstream", js)
        block = {}
        mem, fs = js.get("memoryStore") or {}, js.get("fileStore") or {}
        if mem.get("enabled"):
            if mem.get("maxSize"):
                block["max_memory_store"] = f"<< {mem['maxSize']} >>"
        else:
            block["max_memory_store"] = 0
        if fs.get("enabled"):
            block["store_dir"] = fs["dir"]
            if fs.get("maxSize"):
                block["max_file_store"] = f"<< {fs['maxSize']} >>"
            elif (fs.get("pvc") or {}).get("enabled"):
                block["max_file_store"] = f"<< {fs['pvc']['size']} >>"
        else:
            block["max_file_store"] = 0
        doc["jetstream"] = merge_overwrite(block, js.get("merge"))

    return merge_overwrite(doc, cfg.get("merge"))


def format_config(doc: dict) -> str:
    """nats.formatConfig: pretty raw JSON (keys sorted, <>& unescaped), includes, << x >>."""
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)
    text = re.sub(r'".*\$include": "(.*)",?', r"include \1;", text)
    return re.sub(r'"<<\s+(.*?)\s+>>"', r"\1", text) + "\n"


def tls_paths(node, found: list) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("cert_file", "key_file", "ca_file") and isinstance(v, str):
                found.append((node, k))
            else:
                tls_paths(v, found)
    elif isinstance(node, list):
        for v in node:
            tls_paths(v, found)


def openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


def throwaway_certs(doc: dict, root: Path, release: str) -> None:
    """Points every cert_file/key_file/ca_file at root/<path> and makes the files there: a
    throwaway CA and one server certificate (client and server usage) signed by it."""
    refs: list = []
    tls_paths(doc, refs)
    if not refs:
        return
    work = Path(tempfile.mkdtemp(prefix="nats-prod-certs-"))
    try:
        ca_key, ca_crt = work / "ca.key", work / "ca.crt"
        key, csr, crt, ext = work / "tls.key", work / "tls.csr", work / "tls.crt", work / "ext"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "1",
                "-subj", "/CN=check-deploy throwaway CA")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={release}")
        ext.write_text(f"subjectAltName=DNS:{release},DNS:*.{release}-headless\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))
        source = {"cert_file": crt, "key_file": key, "ca_file": ca_crt}
        for node, k in refs:
            target = root / str(node[k]).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source[k], target)
            node[k] = str(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def container_env(values: dict, release: str) -> list[str]:
    """NAME=value lines of the nats container's environment (secrets as a placeholder)."""
    env = {"POD_NAME": f"{release}-0"}
    env["SERVER_NAME"] = values["config"].get("serverNamePrefix", "") + env["POD_NAME"]
    for name, v in (values.get("container", {}).get("env") or {}).items():
        if isinstance(v, dict):
            env[name] = "check-placeholder"  # valueFrom (secretKeyRef, fieldRef, ...)
        else:
            env[name] = str(v)
    return [f"{k}={v}" for k, v in env.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--values", type=Path, default=VALUES_PROD)
    ap.add_argument("--release", default="nats", help="Helm release name (default: nats)")
    ap.add_argument("--certs-root", type=Path, help="make throwaway certs under this directory")
    ap.add_argument("--env-file", type=Path, help="write the container's NAME=value lines here")
    ap.add_argument("-o", "--output", type=Path, help="write the config here (default: stdout)")
    args = ap.parse_args()

    values = coalesce(CHART_DEFAULTS, yaml.safe_load(args.values.read_text()) or {})
    try:
        doc = render_config(values, args.release)
    except NotModelled as e:
        print(f"{args.values}: {e} by {Path(__file__).name}; extend it", file=sys.stderr)
        return 2
    if args.certs_root:
        throwaway_certs(doc, args.certs_root, args.release)
    text = format_config(doc)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    if args.env_file:
        args.env_file.write_text("\n".join(container_env(values, args.release)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
