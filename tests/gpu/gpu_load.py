"""stopcald on the GPU under load (a step of tests/gpu/device_check.sh, needs a GPU).

Starts the real stopcald with --device cuda:0 on a loopback port, checks it reports the CUDA
backend, then sends FITS uploads from 32 concurrent curl clients for a fixed time (several files
per request, so dynamic batching fills GPU batches) while polling /metrics. Passes when every
request got 200 with one result per file, each answer equals the one the same image got when sent
alone, the service stayed live and ready throughout, and exited 0 on SIGTERM. Prints requests/s,
images/s and latency percentiles.

    gpu_load.py --stopcald BUILD/server/stopcald --model M.safetensors [--seconds 45] [--device cuda:0]
"""

import argparse
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
import serverlib as sl  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stopcald", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seconds", type=float, default=45)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--clients", type=int, default=32)
    a = p.parse_args()

    files = [sl.write_fits("load%d.fits" % i, 900 + i, 96 + 8 * (i % 5), 96) for i in range(16)]
    srv = sl.Server(a.stopcald, ["m=" + a.model], "--device", a.device, "--max-batch", "32",
                    "--max-queue", "512", "--max-images", "8")
    failures, latencies, images = [], [], [0]
    lock = threading.Lock()
    try:
        models = srv_json(srv, "/v1/models")
        backend = models["models"][0]["backend"]
        if backend != a.device.split(":")[0]:
            raise SystemExit("stopcald --device %s runs on backend %r" % (a.device, backend))
        alone = {}
        for f in files:
            r = sl.curl(srv.url("/v1/predict?model=m"), "-F", "file=@%s" % f)
            if r.status != 200:
                raise SystemExit("single request for %s: %r" % (f, r))
            alone[os.path.basename(f)] = r.json()["results"][0]["continue_score"]
        stop_at = time.monotonic() + a.seconds

        def client(k):
            n = 0
            while time.monotonic() < stop_at:
                chosen = [files[(k * 7 + n * 3 + j) % len(files)] for j in range(1 + (k + n) % 8)]
                args = []
                for f in chosen:
                    args += ["-F", "file=@%s" % f]
                t0 = time.monotonic()
                r = sl.curl(srv.url("/v1/predict?model=m"), *args, timeout=60)
                dt = time.monotonic() - t0
                n += 1
                with lock:
                    latencies.append(dt)
                    if r.status != 200:
                        failures.append("HTTP %s: %r" % (r.status, r.body[:200]))
                        continue
                    res = r.json()["results"]
                    if len(res) != len(chosen):
                        failures.append("%d files, %d results" % (len(chosen), len(res)))
                        continue
                    images[0] += len(res)
                    for f, got in zip(chosen, res):
                        want = alone[os.path.basename(f)]
                        # Batch composition may change bf16 summation order a little, never more.
                        if abs(got["continue_score"] - want) > 2e-3:
                            failures.append("%s: %.6f in a batch, %.6f alone" % (f, got["continue_score"], want))

        health = []

        def watch():
            while time.monotonic() < stop_at:
                for path in ("/v2/health/live", "/v2/health/ready"):
                    r = sl.curl(srv.url(path), timeout=10)
                    if r.status != 200:
                        health.append("%s answered %s" % (path, r.status))
                time.sleep(1)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        threads.append(threading.Thread(target=watch))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        metrics = sl.curl(srv.url("/metrics")).body.decode()
    finally:
        rc = srv.stop()
    latencies.sort()
    n = len(latencies)
    pct = (lambda q: latencies[min(n - 1, int(q * n))] * 1000) if n else (lambda q: float("nan"))
    print("load: %d clients, %.0f s: %d requests (%.1f/s), %d images (%.1f/s), latency p50 %.0f ms, p99 %.0f ms"
          % (a.clients, wall, n, n / wall, images[0], images[0] / wall, pct(0.5), pct(0.99)))
    batches = [line for line in metrics.splitlines() if line.startswith("stopcal_batch_size")]
    if batches:
        print("load: " + "; ".join(batches[:4]))
    for msg in (failures + health)[:10]:
        print("load: FAILED " + msg)
    if rc != 0:
        print("load: FAILED stopcald exited %d after SIGTERM" % rc)
    return 0 if not failures and not health and rc == 0 and n > 0 else 1


def srv_json(srv, path):
    r = sl.curl(srv.url(path))
    if r.status != 200:
        raise SystemExit("%s answered %r" % (path, r))
    return json.loads(r.body)


if __name__ == "__main__":
    sys.exit(main())
