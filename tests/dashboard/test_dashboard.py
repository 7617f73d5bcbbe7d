"""The Grafana dashboard (deploy/grafana/stopcal-dashboard.json) against a live stopcald: every
metric a panel or a variable queries exists in a real /metrics scrape (after predict and explain
requests, so that every family has samples), every query is valid PromQL (promtool parses each
as a recording rule, Grafana's variables substituted), and the panels are well formed.

  test_dashboard.py --stopcald BIN --model FILE"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
import serverlib as sl  # noqa: E402

DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "stopcal-dashboard.json")
METRIC = re.compile(r"\b(stopcal_[a-z0-9_]+)\b")


def queries(dash):
    """(where, expr) for every panel target and every query variable."""
    out = []
    for p in dash["panels"]:
        sl.check(p.get("targets"), "panel %r has no queries" % p.get("title"))
        for t in p["targets"]:
            sl.check(t.get("expr"), "panel %r has an empty query" % p.get("title"))
            out.append(("panel %r" % p["title"], t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            out.append(("variable %r" % v["name"], v["query"]))
    return out


def promql(expr):
    """Grafana's variables as Prometheus would see them once Grafana has substituted them."""
    return expr.replace("$__rate_interval", "5m").replace("$model", ".*").replace("$instance", ".*")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stopcald", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    with open(DASHBOARD) as f:
        dash = json.load(f)
    sl.check(dash.get("title") and dash.get("uid") and dash.get("panels"), "not a dashboard")
    ids = [pn["id"] for pn in dash["panels"]]
    sl.check(len(ids) == len(set(ids)), "duplicate panel ids")
    qs = queries(dash)
    wanted = sorted({m for _, e in qs for m in METRIC.findall(e)})
    for topic in ("stopcal_http_requests_total", "stopcal_request_duration_seconds_bucket", "stopcal_batch_size",
                  "stopcal_queue_depth", "stopcal_continue_score"):
        sl.check(any(w.startswith(topic) for w in wanted), "the dashboard has no panel on %s" % topic)

    srv = sl.Server(args.stopcald, [args.model])
    try:
        img = sl.write_fits("dash.fits", 5)
        for path in ("/v1/predict", "/v1/explain"):
            r = sl.curl(srv.url(path), "-H", "Content-Type: application/fits", "--data-binary", "@" + img)
            sl.check(r.status == 200, "%s: %r" % (path, r))
        sl.curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "junk")
        scrape = sl.curl(srv.url("/metrics")).body.decode()
    finally:
        rc = srv.stop()
    sl.check(rc == 0, "stopcald exited %d" % rc)
    names = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}
    missing = [w for w in wanted if w not in names]
    sl.check(not missing, "the dashboard queries metrics the server does not export: %s" % missing)
    print("%d queries over %d metrics, all in the live scrape: %s" % (len(qs), len(wanted), ", ".join(wanted)))

    promtool = shutil.which("promtool")
    if not promtool:
        print("SKIP the PromQL syntax check: promtool not installed (Debian package prometheus)")
        return 0
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:q%d" % i, "expr": promql(e)}
                                                          for i, (_, e) in enumerate(qs)
                                                          if not e.startswith("label_values(")]}]}
    path = os.path.join(sl.TMP, "dashboard-rules.json")  # YAML is a superset of JSON
    with open(path, "w") as f:
        json.dump(rules, f)
    r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    sl.check(r.returncode == 0, "promtool refuses a dashboard query:\n%s%s" % (r.stdout, r.stderr))
    print("PASS every query parses (promtool check rules: %d rules)" % len(rules["groups"][0]["rules"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print("FAIL %s" % e)
        sys.exit(1)
