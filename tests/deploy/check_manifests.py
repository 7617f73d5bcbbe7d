#!/usr/bin/env python3
"""Rules the Kubernetes manifests must keep (tests/deploy, check "manifests").

  check_manifests.py --rendered GPU.yaml CPU.yaml KSERVE.yaml   # kustomize output of both overlays
  check_manifests.py --source deploy/k8s KSERVE.yaml            # no renderer: base + overlay files

Checks: probes on the v2 health endpoints with a startup probe long enough for model load; the
drain (preStop + STOPCAL_DRAIN_GRACE_MS + STOPCAL_DRAIN_TIMEOUT_MS) fits in
terminationGracePeriodSeconds; non-root, read-only root filesystem, an emptyDir on /tmp; resource
requests; Service/PDB selectors match the pods; the HPA scales on a metric stopcald exports; the GPU
overlay asks for nvidia.com/gpu and CUDA, the CPU overlay for neither.
"""
import os
import sys

import yaml

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
errors = []


def need(cond, what):
    if not cond:
        errors.append(what)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def check_probes(where, c, start_budget_s=120):
    sp, rp, lp = c.get("startupProbe"), c.get("readinessProbe"), c.get("livenessProbe")
    need(sp and sp.get("httpGet", {}).get("path") == "/v2/health/ready", f"{where}: startupProbe on /v2/health/ready")
    if sp:
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        need(budget >= start_budget_s, f"{where}: startupProbe allows only {budget}s for model load")
    need(rp and rp.get("httpGet", {}).get("path") == "/v2/health/ready", f"{where}: readinessProbe on /v2/health/ready")
    need(lp and lp.get("httpGet", {}).get("path") == "/v2/health/live", f"{where}: livenessProbe on /v2/health/live")


def check_hardening(where, pod, c):
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    need(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), f"{where}: runAsNonRoot")
    need(csc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
    need(csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
    tmp = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/tmp"]
    need(tmp, f"{where}: /tmp mounted (read-only root filesystem)")
    if tmp:
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        need("emptyDir" in vols.get(tmp[0]["name"], {}), f"{where}: /tmp is an emptyDir")
    need(c.get("resources", {}).get("requests"), f"{where}: resource requests")


def check_deployment(where, dep, cm):
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check_probes(where, c)
    check_hardening(where, pod, c)
    pre = c.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    pre_s = float(cmd[-1]) if cmd and cmd[0].endswith("sleep") else float(pre.get("sleep", {}).get("seconds", 0))
    need(pre_s > 0, f"{where}: a preStop pause")
    data = cm.get("data", {}) if cm else {}
    grace = int(data.get("STOPCAL_DRAIN_GRACE_MS", 5000)) / 1000
    drain = int(data.get("STOPCAL_DRAIN_TIMEOUT_MS", 60000)) / 1000
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    need(tgps > pre_s + grace + drain,
         f"{where}: terminationGracePeriodSeconds {tgps} <= preStop {pre_s} + grace {grace} + drain {drain}")
    ports = [p.get("containerPort") for p in c.get("ports", [])]
    need(8080 in ports, f"{where}: containerPort 8080")
    env_from = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
    need(cm is None or cm["metadata"]["name"] in env_from, f"{where}: envFrom the stopcal ConfigMap")
    return pod, c


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_rendered(path, overlay):
    docs = load(path)
    deps, cms = by_kind(docs, "Deployment"), by_kind(docs, "ConfigMap")
    need(len(deps) == 1 and len(cms) == 1, f"{overlay}: one Deployment and one ConfigMap")
    if not deps or not cms:
        return
    dep, cm = deps[0], cms[0]
    pod, c = check_deployment(overlay, dep, cm)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    need(selects(dep["spec"]["selector"]["matchLabels"], labels), f"{overlay}: Deployment selector")
    for kind, sel in (("Service", lambda d: d["spec"]["selector"]),
                      ("PodDisruptionBudget", lambda d: d["spec"]["selector"]["matchLabels"])):
        objs = by_kind(docs, kind)
        need(objs and selects(sel(objs[0]), labels), f"{overlay}: {kind} selects the pods")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    need(hpas, f"{overlay}: a HorizontalPodAutoscaler")
    if hpas:
        h = hpas[0]["spec"]
        need(h["scaleTargetRef"]["name"] == dep["metadata"]["name"], f"{overlay}: HPA targets the Deployment")
        names = [m.get("pods", {}).get("metric", {}).get("name") for m in h.get("metrics", [])]
        with open(os.path.join(SRC, "server", "metrics.c")) as f:  # where the gauges are rendered
            api = f.read()
        for n in names:
            need(n and f'"{n}"' in api, f"{overlay}: HPA metric {n} is not one stopcald exports")
    res = c.get("resources", {})
    gpu_limit = res.get("limits", {}).get("nvidia.com/gpu")
    device = cm.get("data", {}).get("STOPCAL_DEVICE", "auto")
    if overlay == "gpu":
        need(str(gpu_limit) == "1", "gpu: limits nvidia.com/gpu = 1")
        need(pod.get("nodeSelector"), "gpu: a nodeSelector")
        need(device.startswith("cuda"), f"gpu: STOPCAL_DEVICE {device}, not cuda:N")
    else:
        need(gpu_limit is None, "cpu: no nvidia.com/gpu")
        need(device == "cpu", f"cpu: STOPCAL_DEVICE {device}, not cpu")
        need(res.get("limits", {}).get("cpu"), "cpu: a CPU limit (stopcald sizes its threads from it)")


def check_source(k8s):
    base = {}
    for name in os.listdir(os.path.join(k8s, "base")):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for d in load(os.path.join(k8s, "base", name)):
                base.setdefault(d["kind"], d)
    check_deployment("base", base["Deployment"], base["ConfigMap"])
    with open(os.path.join(k8s, "base", "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    for r in kust["resources"]:
        need(os.path.exists(os.path.join(k8s, "base", r)), f"base: resource {r} missing")
    for overlay in ("gpu", "cpu"):
        d = os.path.join(k8s, "overlays", overlay)
        with open(os.path.join(d, "kustomization.yaml")) as f:
            kust = yaml.safe_load(f)
        text = ""
        for p in kust.get("patches", []):
            if "path" in p:
                need(os.path.exists(os.path.join(d, p["path"])), f"{overlay}: patch {p['path']} missing")
                with open(os.path.join(d, p["path"])) as f:
                    text += f.read()
            text += p.get("patch", "")
        want = "nvidia.com/gpu" if overlay == "gpu" else "value: cpu"
        need(want in text, f"{overlay}: overlay patches lack {want}")


def check_kserve(path):
    docs = load(path)
    isvc = by_kind(docs, "InferenceService")
    need(isvc, "kserve: an InferenceService")
    if isvc:
        c = isvc[0]["spec"]["predictor"]["containers"][0]
        check_probes("kserve", c)
        need(any(p.get("containerPort") == 8080 for p in c.get("ports", [])), "kserve: port 8080")


def check_env_names():
    """Every STOPCAL_* variable the deploy files set is one stopcald reads (server/config.c)."""
    import re
    with open(os.path.join(SRC, "server", "config.c")) as f:
        known = set(re.findall(r'"(STOPCAL_[A-Z_]+)"', f.read()))
    files = [os.path.join(SRC, "Dockerfile")]
    for root, _, names in os.walk(os.path.join(SRC, "deploy", "k8s")):
        files += [os.path.join(root, n) for n in names if n.endswith(".yaml")]
    for path in files:
        with open(path) as f:
            text = f.read()
        # Set as a ConfigMap key, an env name or a Dockerfile ENV, not merely mentioned in a comment.
        for name in set(re.findall(r"^[^#\n]*?\b(STOPCAL_[A-Z_]+)\s*[:=]", text, re.M)) | \
                set(re.findall(r"name:\s*(STOPCAL_[A-Z_]+)", text)):
            need(name in known, f"{os.path.relpath(path, SRC)}: {name} is not a stopcald variable")


def main(argv):
    if argv[:1] == ["--rendered"] and len(argv) == 4:
        check_rendered(argv[1], "gpu")
        check_rendered(argv[2], "cpu")
        check_kserve(argv[3])
    elif argv[:1] == ["--source"] and len(argv) == 3:
        check_source(argv[1])
        check_kserve(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    check_env_names()
    for e in errors:
        print("FAIL:", e)
    if not errors:
        print("manifests: all rules hold")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
