"""The Python half of scripts/check-deploy.sh (run in its venv).

  check_deploy.py observability   dashboards and alert rules against docs/metrics.md
  check_deploy.py hcl FILE...      every Terraform file parses (python-hcl2)
  check_deploy.py crds FILE...     the custom resources kubernetes-validate has no schema for

Alert rules: the Prometheus rule-file structure is checked here (promtool is not on PyPI) and
every expression is parsed by promql-parser (PyPI; Python bindings of the Rust promql-parser
crate that GreptimeDB uses). Each prints what is wrong and exits non-zero.
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "metrics.md"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ROW = re.compile(r"^\| `((?:wattprint|hw)_[a-z0-9_]+)` \| (counter|gauge|histogram) \|")
# Series Prometheus makes itself, not Wattprint.
BUILTIN = {"up"}
# Grafana macros, replaced by something PromQL parses.
MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def catalogue():
    """Metric name -> type, from the tables of docs/metrics.md."""
    found = {}
    for line in CATALOGUE.read_text().splitlines():
        m = ROW.match(line)
        if m:
            if m.group(1) in found:
                raise SystemExit(f"{CATALOGUE}: {m.group(1)} listed twice")
            found[m.group(1)] = m.group(2)
    return found


def series_names(metrics):
    """Every series name a query may use: histograms have _bucket, _sum and _count."""
    names = set(BUILTIN)
    for name, kind in metrics.items():
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def selectors(expr):
    """The metric names an expression selects, after parsing it (raises on bad syntax)."""
    import promql_parser

    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    ast = promql_parser.parse(expr)
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if not name:
                for m in node.matchers.matchers:
                    if m.name == "__name__":
                        name = m.value
            names.append(name)

    promql_parser.walk(ast, visit)
    return names


def check_expr(where, expr, known, errors, used):
    try:
        names = selectors(expr)
    except Exception as e:  # the parser raises its own error types
        errors.append(f"{where}: PromQL does not parse: {e}")
        return
    if not names:
        errors.append(f"{where}: selects no metric")
    for n in names:
        if n not in known:
            errors.append(f"{where}: metric {n!r} is not in docs/metrics.md")
        used.add(n)


def check_dashboards(known, errors, used):
    files = sorted(DASHBOARDS.glob("*.json"))
    if not files:
        errors.append(f"{DASHBOARDS}: no dashboards")
    uids = set()
    for f in files:
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            errors.append(f"{f.name}: not JSON: {e}")
            continue
        for key in ("uid", "title", "panels", "schemaVersion"):
            if key not in d:
                errors.append(f"{f.name}: no {key!r}")
        if d.get("uid") in uids:
            errors.append(f"{f.name}: uid {d.get('uid')!r} used twice")
        uids.add(d.get("uid"))
        ids = [p.get("id") for p in d.get("panels", [])]
        if len(ids) != len(set(ids)):
            errors.append(f"{f.name}: panel ids repeat")
        for p in d.get("panels", []):
            targets = p.get("targets") or []
            if not targets:
                errors.append(f"{f.name}: panel {p.get('title')!r} has no query")
            for t in targets:
                where = f"{f.name}: panel {p.get('title')!r} {t.get('refId')}"
                if not t.get("expr"):
                    errors.append(f"{where}: no expr")
                    continue
                check_expr(where, t["expr"], known, errors, used)
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            q = v.get("definition") or ""
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
            if not m:
                errors.append(f"{f.name}: variable {v.get('name')}: unexpected query {q!r}")
            elif m.group(1) not in known:
                errors.append(f"{f.name}: variable {v.get('name')}: {m.group(1)!r} not in docs/metrics.md")
        print(f"  {f.relative_to(ROOT)}: {len(d.get('panels', []))} panels")


RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def check_alerts(known, errors, used):
    try:
        doc = yaml.safe_load(ALERTS.read_text())
    except yaml.YAMLError as e:
        errors.append(f"{ALERTS.name}: not YAML: {e}")
        return
    if not isinstance(doc, dict) or set(doc) != {"groups"}:
        errors.append(f"{ALERTS.name}: the top level must be exactly 'groups'")
        return
    groups, names, count = set(), set(), 0
    for g in doc["groups"]:
        gname = g.get("name")
        if not gname or gname in groups:
            errors.append(f"{ALERTS.name}: group name missing or repeated: {gname!r}")
        groups.add(gname)
        extra = set(g) - {"name", "interval", "limit", "rules"}
        if extra:
            errors.append(f"{ALERTS.name}: group {gname}: unknown keys {sorted(extra)}")
        for r in g.get("rules") or []:
            count += 1
            where = f"{ALERTS.name}: {r.get('alert', '?')}"
            if set(r) - RULE_KEYS:
                errors.append(f"{where}: unknown keys {sorted(set(r) - RULE_KEYS)}")
            if not r.get("alert") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", r["alert"]):
                errors.append(f"{where}: 'alert' missing or not a valid name")
            if r.get("alert") in names:
                errors.append(f"{where}: alert name repeated")
            names.add(r.get("alert"))
            if not isinstance(r.get("expr"), str):
                errors.append(f"{where}: no expr")
            else:
                check_expr(where, r["expr"], known, errors, used)
            for key in ("for", "keep_firing_for"):
                if key in r and not DURATION.match(str(r[key])):
                    errors.append(f"{where}: {key} {r[key]!r} is not a duration")
            labels = r.get("labels") or {}
            if labels.get("severity") not in SEVERITIES:
                errors.append(f"{where}: labels.severity must be one of {sorted(SEVERITIES)}")
            for k, v in {**labels, **(r.get("annotations") or {})}.items():
                if not isinstance(v, str):
                    errors.append(f"{where}: {k} must be a string")
            if not (r.get("annotations") or {}).get("summary"):
                errors.append(f"{where}: no annotations.summary")
    print(f"  {ALERTS.relative_to(ROOT)}: {count} alerts in {len(groups)} groups")


def observability():
    metrics = catalogue()
    print(f"  docs/metrics.md: {len(metrics)} metrics")
    known = series_names(metrics)
    errors, used = [], set()
    check_dashboards(known, errors, used)
    check_alerts(known, errors, used)
    return errors


def hcl(files):
    import hcl2

    errors = []
    for f in files:
        try:
            with open(f) as fh:
                hcl2.load(fh)
        except Exception as e:  # lark's parse errors
            errors.append(f"{f}: does not parse: {e}")
    print(f"  {len(files)} Terraform files parsed")
    return errors


def crds(files):
    """ServiceMonitors: the fields Prometheus Operator needs (no schema ships for CRDs)."""
    errors, n = [], 0
    for f in files:
        for d in yaml.safe_load_all(Path(f).read_text()):
            if not d or d.get("kind") != "ServiceMonitor":
                continue
            n += 1
            spec = d.get("spec") or {}
            if d.get("apiVersion") != "monitoring.coreos.com/v1":
                errors.append(f"{f}: ServiceMonitor apiVersion {d.get('apiVersion')}")
            if not (spec.get("selector") or {}).get("matchLabels"):
                errors.append(f"{f}: ServiceMonitor without selector.matchLabels")
            for e in spec.get("endpoints") or [{}]:
                if not e.get("port") or not str(e.get("path", "/metrics")).startswith("/"):
                    errors.append(f"{f}: ServiceMonitor endpoint needs a named port and a path")
    print(f"  {n} ServiceMonitor(s) checked")
    return errors


def main(argv):
    cmd, args = argv[1], argv[2:]
    errors = {"observability": lambda: observability(), "hcl": lambda: hcl(args), "crds": lambda: crds(args)}[cmd]()
    for e in errors:
        print(f"  ERROR {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
