#!/usr/bin/env python3
"""Checks of deploy/ that no upstream tool does, run by scripts/check-deploy.sh.

Each subcommand prints nothing but its findings and exits non-zero if there is one:

  metrics   every metric and label used in the alert rules and the dashboard is exported by
            src/telemetry/metrics.rs (or is one of FUTURE_METRICS, announced but not exported yet);
            every alert has a runbook section in deploy/RUNBOOK.md
  dashboard deploy/grafana/ragstream.json is a well-formed Grafana dashboard; writes its PromQL
            expressions as a rule file (argument) so that promtool parses them
  topology  deploy/compose/topology.yaml and deploy/k8s/configmap-topology.yaml match
            topologies/default.yaml apart from the deployment-specific settings; with
            --extract DIR, writes the Kubernetes topologies there (for `ragstream validate`)
  sync-topologies
            rewrites those two files from topologies/default.yaml (after it changed)
  k8s       deploy/k8s: every resource against the Kubernetes JSON schemas (kubernetes-validate,
            strict), ScaledObjects against KEDA's CRD schema, and the references between them
  compose   the output of `docker compose config --format json` (stdin): bind-mounted files
            exist and the services are wired together

Requires PyYAML, jsonschema and kubernetes-validate (installed in the tools venv by the script).
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRICS_RS = ROOT / "src" / "telemetry" / "metrics.rs"

# Metrics announced before ragstream exports them, already used by the dashboard or the alerts
# (they show no data until then). Remove an entry once metrics.rs defines the metric.
FUTURE_METRICS: dict[str, set[str]] = {}
# Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"job", "instance"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)


def finish() -> int:
    for message in problems:
        print(f"  {message}")
    return 1 if problems else 0


# ------------------------------------------------------------------------------------ metrics


# ragstream's own metrics, and those named by OpenTelemetry's GenAI semantic conventions.
METRIC_NAME = r"(?:ragstream|gen_ai_client)_[a-z0-9_]+"


def exported_metrics() -> tuple[dict[str, set[str]], set[str]]:
    """Metric name -> labels, and the names of histograms, read from metrics.rs."""
    source = METRICS_RS.read_text()
    names = list(re.finditer(rf'"({METRIC_NAME})"', source))
    metrics: dict[str, set[str]] = {}
    histograms: set[str] = set()
    for index, match in enumerate(names):
        end = names[index + 1].start() if index + 1 < len(names) else len(source)
        after = source[match.end():end]
        before = source[max(0, match.start() - 120):match.start()]
        labels = re.search(r"&\[([^\]]*)\]", after)
        # Or a constant: `&GEN_AI_CALL_LABELS` for `const GEN_AI_CALL_LABELS: [&str; 4] = [...]`.
        named = re.search(r"&([A-Z][A-Z0-9_]*)\b", after)
        if not labels and named:
            labels = re.search(rf"const {named.group(1)}: \[&str; \d+\] = \[([^\]]*)\]", source)
        metrics[match.group(1)] = set(re.findall(r'"([a-z_]+)"', labels.group(1))) if labels else set()
        if "histogram(" in before or "HistogramOpts::new(" in before:
            histograms.add(match.group(1))
    if not metrics:
        problem(f"no metric definitions found in {METRICS_RS}")
    return metrics, histograms


PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset",
}


def check_expression(where: str, expr: str, known: dict[str, set[str]], histograms: set[str],
                     extra_labels: set[str] = frozenset()) -> None:
    """Metric names in `expr` exist; label names in its matchers and groupings belong to them."""
    # Metric names, not the labels of groupings and matchers (`by (gen_ai_request_model)`).
    names_only = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names_only = re.sub(r"\{[^}]*\}", "", names_only)
    used = set(re.findall(rf"\b({METRIC_NAME})", names_only))
    labels_available = set(TARGET_LABELS) | set(extra_labels)
    for name in used:
        if name in known:
            labels_available |= known[name]
            continue
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base in histograms:
            labels_available |= known[base]
            if name.endswith("_bucket"):
                labels_available.add("le")
            continue
        problem(f"{where}: unknown metric {name} (not in src/telemetry/metrics.rs)")
    # Strip string literals first so label values cannot look like label names.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    label_names = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"", bare))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", bare):
        label_names |= {label.strip() for label in group.split(",") if label.strip()}
    for label in sorted(label_names - labels_available):
        if label in PROMQL_KEYWORDS:
            continue
        problem(f"{where}: label {label!r} is not a label of {', '.join(sorted(used)) or 'any metric used'}")


def alert_rules() -> list[dict]:
    rules_file = DEPLOY / "prometheus" / "alerts.yml"
    document = yaml.safe_load(rules_file.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def cmd_metrics(_args: list[str]) -> int:
    exported, histograms = exported_metrics()
    known = {**exported, **FUTURE_METRICS}
    for name in FUTURE_METRICS:
        if name in exported:
            problem(f"{name} is exported now: drop it from FUTURE_METRICS in deploy/check/checks.py "
                    "and from the notes that announce it")

    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#{1,6} (.+)$", runbook, flags=re.M)}
    for rule in alert_rules():
        name = rule.get("alert") or rule.get("record")
        where = f"alerts.yml {name}"
        check_expression(where, rule["expr"], known, histograms)
        if "alert" in rule:
            url = rule.get("annotations", {}).get("runbook_url", "")
            anchor = url.split("#", 1)[1] if "#" in url else ""
            if not url.startswith("deploy/RUNBOOK.md#") or anchor not in anchors:
                problem(f"{where}: runbook_url {url!r} does not point at a section of deploy/RUNBOOK.md")
            if rule["alert"].lower() != anchor:
                problem(f"{where}: runbook section should be named after the alert ({rule['alert']})")
            for text in rule.get("annotations", {}).values():
                for label in re.findall(r"\$labels\.([A-Za-z_]+)", text):
                    if label not in set().union(*known.values()) | TARGET_LABELS:
                        problem(f"{where}: annotation uses unknown label {label}")

    for panel, target in dashboard_targets(load_dashboard()):
        where = f"dashboard panel {panel.get('id')} ({panel.get('title')}) {target.get('refId')}"
        check_expression(where, target.get("expr", ""), known, histograms)
    for variable in load_dashboard().get("templating", {}).get("list", []):
        query = variable.get("definition") or ""
        if variable.get("type") == "query":
            match = re.fullmatch(r"label_values\((ragstream_[a-z0-9_]+),\s*([a-z_]+)\)", query)
            if not match:
                problem(f"dashboard variable {variable.get('name')}: expected label_values(metric, label)")
            elif match.group(2) not in known.get(match.group(1), set()):
                problem(f"dashboard variable {variable.get('name')}: {match.group(1)} has no label {match.group(2)}")
    return finish()


# ------------------------------------------------------------------------------------ dashboard

PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "gauge", "table", "text", "heatmap", "piechart",
               "barchart", "state-timeline", "status-history", "histogram"}
BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval", "__interval_ms", "__range_s", "__range_ms"}
GRAFANA_SUBSTITUTES = {"__rate_interval": "5m", "__range": "3h", "__interval": "1m", "__range_s": "10800",
                       "__range_ms": "10800000", "__interval_ms": "60000"}


def load_dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "ragstream.json").read_text())


def all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return panels


def dashboard_targets(dashboard: dict):
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def substitute(expr: str, variables: set[str]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_SUBSTITUTES:
            return GRAFANA_SUBSTITUTES[name]
        if name in variables:
            return ".*"
        return match.group(0)

    return re.sub(r"\$\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|\$([A-Za-z0-9_]+)", replace, expr)


def cmd_dashboard(args: list[str]) -> int:
    if len(args) != 1:
        raise SystemExit("usage: checks.py dashboard RULES_OUT")
    try:
        dashboard = load_dashboard()
    except json.JSONDecodeError as error:
        problem(f"ragstream.json is not valid JSON: {error}")
        return finish()

    for field, kind in [("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                        ("templating", dict), ("time", dict), ("editable", bool), ("graphTooltip", int)]:
        if not isinstance(dashboard.get(field), kind):
            problem(f"top level: {field} missing or not a {kind.__name__}")
    if not 36 <= dashboard.get("schemaVersion", 0) <= 41:
        problem(f"schemaVersion {dashboard.get('schemaVersion')} outside 36..41 (Grafana 9.4-11)")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard.get("uid", "")):
        problem("uid must be 1-40 characters of letters, digits, - and _")
    if dashboard.get("id") is not None:
        problem("id must be null in a provisioned/importable dashboard")

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource")
    if not source or source.get("type") != "datasource" or source.get("query") != "prometheus":
        problem("templating: a `datasource` variable of type datasource for prometheus is required")
    for name in ("pipeline", "tenant"):
        if name not in variables:
            problem(f"templating: variable {name} missing")
    for name, variable in variables.items():
        if variable.get("type") == "query" and variable.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"templating: variable {name} must query ${{datasource}}")

    ids: set[int] = set()
    occupied: dict[tuple[int, int], int] = {}
    rules = []
    for panel in all_panels(dashboard):
        pid, title = panel.get("id"), panel.get("title")
        where = f"panel {pid} ({title})"
        if not isinstance(pid, int) or pid in ids:
            problem(f"{where}: id missing or duplicated")
        ids.add(pid)
        if panel.get("type") not in PANEL_TYPES:
            problem(f"{where}: unknown panel type {panel.get('type')!r}")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy"):
            problem(f"{where}: gridPos needs integer h, w, x, y")
            continue
        if grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            problem(f"{where}: gridPos outside the 24-column grid")
        for dy in range(grid["h"]):
            for dx in range(grid["w"]):
                cell = (grid["x"] + dx, grid["y"] + dy)
                if cell in occupied:
                    problem(f"{where}: overlaps panel {occupied[cell]}")
                    break
                occupied[cell] = pid
            else:
                continue
            break
        if panel.get("type") in ("row", "text"):
            continue
        if not panel.get("description"):
            problem(f"{where}: no description")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"{where}: datasource must be ${{datasource}}")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs or len(set(refs)) != len(refs):
            problem(f"{where}: targets missing or refIds not unique")
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problem(f"{where} {target.get('refId')}: datasource must be ${{datasource}}")
            for match in re.finditer(r"\$\{?([A-Za-z0-9_]+)", expr):
                if match.group(1) not in variables and match.group(1) not in BUILTIN_VARIABLES:
                    problem(f"{where}: unknown variable ${match.group(1)}")
            rules.append({"record": f"dashboard:panel_{pid}_{target.get('refId')}",
                          "expr": substitute(expr, set(variables))})
    check_cost_and_usage_row(dashboard)
    # JSON is YAML: promtool reads it as a rule file.
    pathlib.Path(args[0]).write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
    return finish()


# What the cost and usage row must show, by the metric each panel needs.
COST_AND_USAGE = {
    "spend per tenant and model": "ragstream_llm_cost_usd_total",
    "tokens (GenAI)": "gen_ai_client_token_usage",
    "model call duration (GenAI)": "gen_ai_client_operation_duration_seconds",
    "cache hit rate": "ragstream_cache_lookups_total",
    "budget refusals": "ragstream_budget_decisions_total",
}


def check_cost_and_usage_row(dashboard: dict) -> None:
    """The row analysts open first: spend, tokens, cache and refusals, on the GenAI metrics."""
    panels = sorted(dashboard.get("panels", []), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows = [i for i, p in enumerate(panels) if p.get("type") == "row"]
    start = next((i for i in rows if p_title(panels[i]).startswith("Cost and usage")), None)
    if start is None:
        problem("dashboard: no row titled `Cost and usage …`")
        return
    end = next((i for i in rows if i > start), len(panels))
    exprs = " ".join(t.get("expr", "") for p in panels[start + 1:end] for t in p.get("targets", []))
    for what, metric in COST_AND_USAGE.items():
        if not re.search(rf"\b{metric}(_bucket|_sum|_count)?\b", exprs):
            problem(f"dashboard row Cost and usage: no panel shows {what} ({metric})")


def p_title(panel: dict) -> str:
    return panel.get("title") or ""


# ------------------------------------------------------------------------------------ topology

DEFAULT_TOPOLOGY = ROOT / "topologies" / "default.yaml"
COMPOSE_TOPOLOGY = DEPLOY / "compose" / "topology.yaml"
K8S_TOPOLOGY = DEPLOY / "k8s" / "configmap-topology.yaml"

# The only differences allowed from topologies/default.yaml.
COMPOSE_DEFAULTS = {
    "${RAGSTREAM_BROKERS:-127.0.0.1:9092}": "${RAGSTREAM_BROKERS:-kafka:9092}",
    "${RAGSTREAM_TELEMETRY_LISTEN:-127.0.0.1:9898}": "${RAGSTREAM_TELEMETRY_LISTEN:-0.0.0.0:9898}",
    "${RAGSTREAM_MODELS_DIR:-models}": "${RAGSTREAM_MODELS_DIR:-/models}",
    "${RAGSTREAM_LANCEDB:-data/lancedb}": "${RAGSTREAM_LANCEDB:-/data/lancedb}",
    "${RAGSTREAM_REDIS:-redis://127.0.0.1:6379}": "${RAGSTREAM_REDIS:-redis://redis:6379}",
    "${RAGSTREAM_AUDIT_TABLE:-data/audit}": "${RAGSTREAM_AUDIT_TABLE:-/data/audit}",
    "${RAGSTREAM_PSEUDONYM_KEY_FILE:-data/pseudonym.key}": "${RAGSTREAM_PSEUDONYM_KEY_FILE:-/data/pseudonym.key}",
}
K8S_DEFAULTS = {
    "${RAGSTREAM_MODELS_DIR:-models}": "${RAGSTREAM_MODELS_DIR:-/models}",
    "${RAGSTREAM_LANCEDB:-data/lancedb}": "${RAGSTREAM_LANCEDB}",
    "${RAGSTREAM_REDIS:-redis://127.0.0.1:6379}": "${RAGSTREAM_REDIS}",
    "${RAGSTREAM_AUDIT_TABLE:-data/audit}": "${RAGSTREAM_AUDIT_TABLE}",
}


def rewritten_default(replacements: dict[str, str]) -> dict:
    text = DEFAULT_TOPOLOGY.read_text()
    for old, new in replacements.items():
        text = text.replace(old, new)
    return yaml.safe_load(text)


def differences(path: str, expected, actual) -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual), key=str):
            if key not in actual:
                found.append(f"{path}.{key}: missing (topologies/default.yaml has it)")
            elif key not in expected:
                found.append(f"{path}.{key}: not in topologies/default.yaml")
            else:
                found += differences(f"{path}.{key}", expected[key], actual[key])
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(actual)} entries, topologies/default.yaml has {len(expected)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(f"{path}[{i}]", e, a)]
    return [] if expected == actual else [f"{path}: {actual!r}, topologies/default.yaml: {expected!r}"]


def k8s_topologies() -> dict[str, str]:
    return yaml.safe_load(K8S_TOPOLOGY.read_text())["data"]


def cmd_topology(args: list[str]) -> int:
    expected = rewritten_default(COMPOSE_DEFAULTS)
    for line in differences("topology", expected, yaml.safe_load(COMPOSE_TOPOLOGY.read_text())):
        problem(f"deploy/compose/topology.yaml: {line}")

    expected_pipelines = {p["name"]: p for p in rewritten_default(K8S_DEFAULTS)["pipelines"]}
    topologies = k8s_topologies()
    for key, text in topologies.items():
        topology = yaml.safe_load(text)
        where = f"deploy/k8s/configmap-topology.yaml {key}"
        names = [p["name"] for p in topology.get("pipelines", [])]
        if names != [key.removesuffix(".yaml")]:
            problem(f"{where}: must hold exactly the pipeline {key.removesuffix('.yaml')}, has {names}")
            continue
        name = names[0]
        if name not in expected_pipelines:
            problem(f"{where}: topologies/default.yaml has no pipeline {name}")
            continue
        for line in differences(f"pipelines[{name}]", expected_pipelines[name], topology["pipelines"][0]):
            problem(f"{where}: {line}")
        if topology.get("kafka", {}).get("bootstrap.servers") != "${RAGSTREAM_BROKERS}":
            problem(f"{where}: kafka.bootstrap.servers must be ${{RAGSTREAM_BROKERS}}")
    for name in sorted(set(expected_pipelines) - {k.removesuffix(".yaml") for k in topologies}):
        problem(f"deploy/k8s/configmap-topology.yaml: no key for pipeline {name} of topologies/default.yaml")

    if problems:
        problem("after a change to topologies/default.yaml, regenerate both files with: "
                "~/.cache/ragstream/deploy-tools/venv/bin/python deploy/check/checks.py sync-topologies")
    if args[:1] == ["--extract"] and len(args) == 2:
        out = pathlib.Path(args[1])
        out.mkdir(parents=True, exist_ok=True)
        for key, text in topologies.items():
            (out / key).write_text(text)
    return finish()


COMPOSE_HEADER = """\
# The default topology (topologies/default.yaml) for deploy/compose/compose.yaml: the same
# pipelines with the compose broker (kafka:9092), models mounted at /models and the index in the
# /data volume, and the telemetry listener open to Prometheus. scripts/check-deploy.sh fails when
# this file drifts from topologies/default.yaml beyond those four defaults.
"""

K8S_CONFIGMAP_HEADER = """\
# The topologies of the two Deployments, one pipeline each, so documents (CPU-bound embedding)
# and questions (waiting on models) scale independently, each in its own consumer group.
# ${VAR} references are resolved by ragstream from the pod's environment (ragstream-env).
# A change here reaches running pods on their next start: `kubectl -n ragstream rollout restart
# deployment/ragstream-documents deployment/ragstream-questions`.
apiVersion: v1
kind: ConfigMap
metadata:
  name: ragstream-topology
  labels:
    app.kubernetes.io/name: ragstream
    app.kubernetes.io/part-of: ragstream
data:
"""

K8S_TOPOLOGY_HEADER = """\
# The {name} pipeline alone (deployment-{name}.yaml runs it). Generated from
# topologies/default.yaml: scripts/check-deploy.sh fails when the pipeline drifts from it.
version: 1

kafka:
  # From the ragstream-env ConfigMap; no default: a pod without it must not start.
  bootstrap.servers: ${{RAGSTREAM_BROKERS}}

telemetry:
  # The container port the probes, the Service and Prometheus use.
  listen: 0.0.0.0:9898

shutdown:
  # Below terminationGracePeriodSeconds (40 s), so a drain always finishes before SIGKILL.
  drain_timeout_ms: 20000

# For `ragstream topics create`: as many partitions as the ScaledObject's maxReplicaCount.
topic_defaults:
  partitions: 6
  replication_factor: 3

# User pseudonyms: one key for every pod of every Deployment, from the ragstream-provider-keys
# Secret (a pod without it does not start: a key of its own would make pseudonyms differ).
pseudonyms:
  key_env: RAGSTREAM_PSEUDONYM_KEY

pipelines:
"""


def cmd_sync_topologies(_args: list[str]) -> int:
    """Rewrites deploy/compose/topology.yaml and deploy/k8s/configmap-topology.yaml from
    topologies/default.yaml (comments included), for after the default topology changed."""
    text = DEFAULT_TOPOLOGY.read_text()
    compose = text
    for old, new in COMPOSE_DEFAULTS.items():
        compose = compose.replace(old, new)
    # The default topology's own leading comment block is replaced by ours.
    lines = compose.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    COMPOSE_TOPOLOGY.write_text(COMPOSE_HEADER + "".join(lines))

    k8s = text
    for old, new in K8S_DEFAULTS.items():
        k8s = k8s.replace(old, new)
    body = k8s.split("\npipelines:\n", 1)[1]
    starts = [m.start() for m in re.finditer(r"^  - name: ", body, flags=re.M)] + [len(body)]
    out = K8S_CONFIGMAP_HEADER
    for start, end in zip(starts, starts[1:]):
        block = body[start:end].rstrip() + "\n"
        name = re.match(r"  - name: (\S+)", block).group(1)
        topology = K8S_TOPOLOGY_HEADER.format(name=name) + block
        out += f"  {name}.yaml: |\n" + "".join(
            ("    " + line) if line.strip() else line for line in topology.splitlines(keepends=True))
    K8S_TOPOLOGY.write_text(out)
    print(f"wrote {COMPOSE_TOPOLOGY.relative_to(ROOT)} and {K8S_TOPOLOGY.relative_to(ROOT)}; "
          "a new pipeline also needs a Deployment, a PodDisruptionBudget and a ScaledObject")
    return 0


# ------------------------------------------------------------------------------------ k8s

K8S_DIR = DEPLOY / "k8s"
KEDA_CRD = K8S_DIR / "schemas" / "keda.sh_scaledobjects.v2.20.2.yaml"
# Trigger metadata the kafka scaler reads (pkg/scalers/kafka_scaler.go, KEDA v2.20.2).
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv", "topic",
    "topicFromEnv", "partitionLimitation", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
    "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions", "fullMetadata", "version", "tls", "unsafeSsl", "sasl",
    "saslTokenProvider", "awsRegion",
}
KUBERNETES_VERSIONS = ["1.29", "1.37"]


def strict_schema(schema):
    """An openAPIV3Schema as JSON Schema that rejects unknown fields (the API server would prune
    them silently; a typo in a manifest should fail here instead)."""
    if isinstance(schema, dict):
        schema = {k: strict_schema(v) for k, v in schema.items()}
        if (schema.get("type") == "object" and "properties" in schema
                and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        if schema.get("x-kubernetes-int-or-string"):
            schema.pop("type", None)
            schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return schema
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    return schema


def keda_validator(api_version: str):
    import jsonschema

    crd = yaml.safe_load(KEDA_CRD.read_text())
    version = api_version.split("/", 1)[1]
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema = strict_schema(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
            # metadata is an ObjectMeta; checked by name below.
            schema["properties"]["metadata"] = {"type": "object"}
            return jsonschema.Draft7Validator(schema)
    return None


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def cmd_k8s(_args: list[str]) -> int:
    from kubernetes_validate import utils as kv

    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    on_disk = sorted(p.name for p in K8S_DIR.glob("*.yaml")
                     if p.name != "kustomization.yaml" and not p.name.endswith(".template.yaml"))
    for name in sorted(set(on_disk) - set(listed)):
        problem(f"{name}: not listed in kustomization.yaml resources")
    files = [K8S_DIR / name for name in listed] + sorted(K8S_DIR.glob("*.template.yaml"))

    resources = []
    for path in files:
        if not path.exists():
            problem(f"kustomization.yaml lists {path.name}, which does not exist")
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                resources.append((path.name, document))

    def named(kind):
        return {doc["metadata"]["name"]: doc for _, doc in resources if doc.get("kind") == kind}

    for filename, doc in resources:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name", "")
        where = f"{filename} {kind}/{name}"
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
            problem(f"{where}: metadata.name is not a DNS-1123 label")
        if doc.get("apiVersion", "").startswith("keda.sh/"):
            validator = keda_validator(doc["apiVersion"])
            if validator is None:
                problem(f"{where}: {doc['apiVersion']} is not a version of KEDA's CRD")
                continue
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                problem(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                problem(f"{where} (Kubernetes {version}): {path}: {error.message}")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as error:
                problem(f"{where}: no schema ({error})")

    configmaps, secrets = named("ConfigMap"), named("Secret")
    deployments, services = named("Deployment"), named("Service")
    env = configmaps.get("ragstream-env", {}).get("data", {})
    if "RAGSTREAM_BROKERS" not in env:
        problem("configmap-env.yaml: RAGSTREAM_BROKERS missing")
    topologies = {k.removesuffix(".yaml"): yaml.safe_load(v) for k, v in k8s_topologies().items()}

    pod_labels = {}
    for name, deployment in deployments.items():
        where = f"Deployment/{name}"
        spec = deployment["spec"]
        template = spec["template"]
        labels = template["metadata"].get("labels", {})
        pod_labels[name] = labels
        if not matches(spec["selector"]["matchLabels"], labels):
            problem(f"{where}: selector does not match the pod template's labels")
        if "replicas" in spec:
            problem(f"{where}: replicas is set, but KEDA owns the replica count")
        pod = template["spec"]
        context = pod.get("securityContext", {})
        if not context.get("runAsNonRoot"):
            problem(f"{where}: pod securityContext.runAsNonRoot must be true")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            cwhere = f"{where} container {container['name']}"
            security = container.get("securityContext", {})
            if not security.get("readOnlyRootFilesystem") or security.get("allowPrivilegeEscalation") is not False:
                problem(f"{cwhere}: needs readOnlyRootFilesystem and allowPrivilegeEscalation: false")
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            for path in ("/tmp", "/data"):
                if path not in mounts:
                    problem(f"{cwhere}: nothing writable mounted at {path}")
            for mount in mounts.values():
                if mount["name"] not in volumes:
                    problem(f"{cwhere}: mounts unknown volume {mount['name']}")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = container.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") not in ports:
                    problem(f"{cwhere}: {probe} must GET {path} on a named container port")
            for source in container.get("envFrom", []):
                if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                    problem(f"{cwhere}: envFrom ConfigMap {source['configMapRef']['name']} not defined")
                if "secretRef" in source and source["secretRef"]["name"] not in secrets \
                        and not source["secretRef"].get("optional"):
                    problem(f"{cwhere}: envFrom Secret {source['secretRef']['name']} not defined")
            if not container.get("resources", {}).get("requests") or \
                    not container.get("resources", {}).get("limits", {}).get("memory"):
                problem(f"{cwhere}: resources need requests and a memory limit")
            args = container.get("args", [])
            topology_file = args[args.index("--topology") + 1] if "--topology" in args else ""
            mount = next((m for p, m in mounts.items() if topology_file.startswith(p.rstrip("/") + "/")), None)
            volume = volumes.get(mount["name"]) if mount else None
            key = topology_file.rsplit("/", 1)[-1]
            if not volume or "configMap" not in volume:
                problem(f"{cwhere}: --topology {topology_file!r} is not on a ConfigMap volume")
                continue
            configmap = configmaps.get(volume["configMap"]["name"])
            items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])} or None
            data_key = items.get(key) if items else key
            if not configmap or data_key not in configmap.get("data", {}):
                problem(f"{cwhere}: topology {topology_file} not provided by ConfigMap {volume['configMap']['name']}")
                continue
            topology = topologies.get(data_key.removesuffix(".yaml"), {})
            listen = str(topology.get("telemetry", {}).get("listen", ""))
            if not listen.endswith(":" + str(ports.get("metrics"))):
                problem(f"{cwhere}: telemetry.listen {listen!r} is not the metrics port {ports.get('metrics')}")
            deployment["_pipeline"] = topology.get("pipelines", [{}])[0]
            deployment["_topology"] = topology

    for name, service in services.items():
        selector = service["spec"].get("selector", {})
        targets = [d for d, labels in pod_labels.items() if matches(selector, labels)]
        if not targets:
            problem(f"Service/{name}: selector matches no Deployment")
        for port in service["spec"]["ports"]:
            target_port = port.get("targetPort", port["port"])
            for d in targets:
                names = {p.get("name") for c in deployments[d]["spec"]["template"]["spec"]["containers"]
                         for p in c.get("ports", [])}
                if isinstance(target_port, str) and target_port not in names:
                    problem(f"Service/{name}: targetPort {target_port} is not a port of Deployment/{d}")

    covered = set()
    for name, pdb in named("PodDisruptionBudget").items():
        targets = [d for d, labels in pod_labels.items() if matches(pdb["spec"]["selector"]["matchLabels"], labels)]
        if len(targets) != 1:
            problem(f"PodDisruptionBudget/{name}: selects {len(targets)} Deployments, expected 1")
        covered.update(targets)
    for name in sorted(set(deployments) - covered):
        problem(f"Deployment/{name}: no PodDisruptionBudget")

    scaled = set()
    for name, scaled_object in named("ScaledObject").items():
        where = f"ScaledObject/{name}"
        spec = scaled_object["spec"]
        target = spec["scaleTargetRef"]["name"]
        if target not in deployments:
            problem(f"{where}: scaleTargetRef {target} is not a Deployment here")
            continue
        scaled.add(target)
        pipeline = deployments[target].get("_pipeline", {})
        topology = deployments[target].get("_topology", {})
        for trigger in spec.get("triggers", []):
            if trigger.get("type") != "kafka":
                continue
            metadata = trigger.get("metadata", {})
            for key in sorted(set(metadata) - KAFKA_TRIGGER_KEYS):
                problem(f"{where}: kafka trigger has unknown metadata {key}")
            if metadata.get("bootstrapServers") != env.get("RAGSTREAM_BROKERS"):
                problem(f"{where}: bootstrapServers {metadata.get('bootstrapServers')!r} differs from "
                        f"RAGSTREAM_BROKERS {env.get('RAGSTREAM_BROKERS')!r}")
            source = pipeline.get("source", {})
            if metadata.get("consumerGroup") != source.get("group"):
                problem(f"{where}: consumerGroup {metadata.get('consumerGroup')!r} is not the pipeline's "
                        f"group {source.get('group')!r}")
            if metadata.get("topic") != source.get("topic"):
                problem(f"{where}: topic {metadata.get('topic')!r} is not the pipeline's source {source.get('topic')!r}")
            if not str(metadata.get("lagThreshold", "")).isdigit():
                problem(f"{where}: lagThreshold must be a positive integer (as a string)")
        partitions = topology.get("topic_defaults", {}).get("partitions")
        max_replicas = spec.get("maxReplicaCount", 100)  # KEDA's default
        if partitions and max_replicas > partitions:
            problem(f"{where}: maxReplicaCount {max_replicas} exceeds the topic's {partitions} partitions")
    for name in sorted(set(deployments) - scaled):
        problem(f"Deployment/{name}: no ScaledObject")
    return finish()


# ------------------------------------------------------------------------------------ compose


def cmd_compose(_args: list[str]) -> int:
    config = json.load(sys.stdin)
    services = config.get("services", {})
    for required in ("kafka", "topics", "ragstream", "prometheus", "grafana"):
        if required not in services:
            problem(f"service {required} missing")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume.get("type") != "bind":
                continue
            source = pathlib.Path(volume["source"])
            # models/ is git-ignored and filled by deploy/local/models.sh, so it may not exist yet.
            if not source.exists() and source != ROOT / "models":
                problem(f"service {name}: bind-mount source {source} does not exist")
    ragstream = services.get("ragstream", {})
    build = ragstream.get("build", {})
    if pathlib.Path(build.get("context", "")) != ROOT or build.get("dockerfile") != "deploy/docker/Dockerfile":
        problem("service ragstream: must build deploy/docker/Dockerfile with the repository root as context")
    mounts = {v.get("target"): v.get("source") for v in ragstream.get("volumes", [])}
    if mounts.get("/etc/ragstream/topology.yaml") != str(COMPOSE_TOPOLOGY):
        problem("service ragstream: deploy/compose/topology.yaml must be mounted at /etc/ragstream/topology.yaml")
    topology = yaml.safe_load(COMPOSE_TOPOLOGY.read_text())
    topics = set()
    for pipeline in topology["pipelines"]:
        topics.add(pipeline["source"]["topic"])
        topics.update(sink["topic"] for sink in pipeline.get("sinks", []))
        if pipeline.get("dead_letter"):
            topics.add(pipeline["dead_letter"]["topic"])
    script = " ".join(services.get("topics", {}).get("command") or [])
    missing = sorted(t for t in topics if not re.search(rf"(?<![\w.]){re.escape(t)}(?![\w.])", script))
    if missing:
        problem(f"service topics: does not create {', '.join(missing)} (topics of topology.yaml)")
    prometheus_mounts = {v.get("target"): v.get("source") for v in services.get("prometheus", {}).get("volumes", [])}
    for target, source in (("/etc/prometheus/prometheus.yml", DEPLOY / "prometheus" / "prometheus.yml"),
                           ("/etc/prometheus/alerts.yml", DEPLOY / "prometheus" / "alerts.yml")):
        if prometheus_mounts.get(target) != str(source):
            problem(f"service prometheus: {source.relative_to(ROOT)} must be mounted at {target}")
    grafana_sources = {v.get("source") for v in services.get("grafana", {}).get("volumes", [])}
    if str(DEPLOY / "grafana") not in grafana_sources:
        problem("service grafana: deploy/grafana (the dashboard) is not mounted")
    return finish()


COMMANDS = {"metrics": cmd_metrics, "dashboard": cmd_dashboard, "topology": cmd_topology,
            "sync-topologies": cmd_sync_topologies, "k8s": cmd_k8s, "compose": cmd_compose}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: checks.py {{{'|'.join(COMMANDS)}}} [args]")
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
