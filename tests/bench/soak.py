#!/usr/bin/env python3
"""Soak stopcald with mixed valid and hostile traffic from concurrent clients, over loopback only.

Starts its own stopcald on 127.0.0.1 and an ephemeral port, runs --clients threads for --seconds (or
until --max-requests), samples the server's RSS every --rss-every seconds, and prints the answers by
status code, the outcomes that break the service's contract (a valid request not answered 200, a
request given no answer at all, a hostile one answered 5xx other than 503), and the RSS series. It
asserts nothing about speed; it exits 1 when a contract was broken, so a run can be trusted.

usage: soak.py --stopcald BIN --model FILE [--seconds 240] [--clients 8] [--json OUT]"""
import argparse
import collections
import gzip
import http.client
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import Server, fits_bytes  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = collections.Counter()   # (kind, status) -> count
        self.broken = collections.Counter()    # kind -> count of contract breaks
        self.examples = {}
        self.requests = 0

    def add(self, kind, status, ok, detail=""):
        with self.lock:
            self.requests += 1
            self.by_kind[(kind, status)] += 1
            if not ok:
                self.broken[kind] += 1
                self.examples.setdefault(kind, "%s %s" % (status, detail[:200]))


def one_http(port, method, path, body=None, headers=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, data
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e).encode()
    finally:
        c.close()


def raw(port, data, timeout=10, close_after=None):
    """Raw bytes; returns the status of the first answer, 0 when none came (or -1: we hung up first)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if close_after is not None:
            time.sleep(close_after)
            return -1
        buf = b""
        while b"\r\n" not in buf:
            c = s.recv(4096)
            if not c:
                break
            buf += c
        return int(buf.split()[1]) if buf.startswith(b"HTTP/1.") else 0
    except (OSError, ValueError, IndexError):
        return 0
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stopcald", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    ap.add_argument("--rss-every", type=float, default=30)
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("server_args", nargs="*", help="extra stopcald flags (after --)")
    a = ap.parse_args()
    a.seconds = min(a.seconds, 1800)  # bounded whatever is asked

    srv = Server(a.stopcald, ["soak=" + a.model], "--max-body-bytes", "8M", "--memory-budget", "256M",
                 "--header-timeout-ms", "2000", "--request-timeout-ms", "10000", *a.server_args)
    port = srv.port
    size = json.loads(one_http(port, "GET", "/v1/models")[1])["models"][0]["input_size"]
    images = [fits_bytes(96, 96, s) for s in range(8)]
    gz = gzip.compress(images[0])
    px = struct.pack("<%df" % (3 * size * size), *[random.Random(1).gauss(0, 1) for _ in range(3 * size * size)])
    v2_head = json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, size, size],
                                      "parameters": {"binary_data_size": len(px)}}]}).encode()
    bnd = "soakbnd"

    def mp(names):
        out = b""
        for i, n in enumerate(names):
            out += (b"--" + bnd.encode() + b"\r\nContent-Disposition: form-data; name=\"f%d\"; filename=\"" % i + n +
                    b"\"\r\n\r\n" + images[i % len(images)] + b"\r\n")
        return out + b"--" + bnd.encode() + b"--\r\n"

    fits_h = {"Content-Type": "application/fits"}
    # (kind, valid?, weight, action) — action returns (status, detail)
    def v1_fits():
        return one_http(port, "POST", "/v1/predict?name=x.fits", random.choice(images), fits_h)

    def v1_gzip():
        return one_http(port, "POST", "/v1/predict", gz, {"Content-Type": "application/gzip"})

    def v1_multi():
        st, d = one_http(port, "POST", "/v1/predict", mp([b"a.fits", b"caf\xe9.fits", b"c.fits"]),
                         {"Content-Type": "multipart/form-data; boundary=" + bnd})
        if st == 200 and len(json.loads(d)["results"]) != 3:
            return -3, d  # N images in, N results out
        return st, d

    def v2_binary():
        return one_http(port, "POST", "/v2/models/soak/infer", v2_head + px,
                        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length":
                         str(len(v2_head))})

    def gets():
        return one_http(port, "GET", random.choice(["/v2/health/live", "/v2/health/ready", "/v1/models", "/metrics",
                                                    "/v2/models/soak", "/v2"]))

    def bad_type():
        return one_http(port, "POST", "/v1/predict", images[0], {"Content-Type": "text/plain"})

    def bad_fits():
        return one_http(port, "POST", "/v1/predict", os.urandom(5000), fits_h)

    def bad_path():
        return raw(port, b"GET /%ff?model=%fe HTTP/1.1\r\nHost: x\r\n\r\n"), b""

    def bad_framing():
        return raw(port, random.choice([
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET /v2/health/live%00x HTTP/1.1\r\nHost: x\r\n\r\n"])), b""

    def too_big():
        return raw(port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                         b"Content-Length: 999999999\r\n\r\n"), b""

    def bad_json():
        return one_http(port, "POST", "/v2/models/soak/infer", b'{"inputs": [', {"Content-Type": "application/json"})

    def hang_up():  # a client that vanishes mid-upload
        return raw(port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                         b"Content-Length: 100000\r\n\r\n" + images[0][:4000], close_after=0.05), b""

    mix = [("v1_fits", True, 30, v1_fits), ("v1_gzip", True, 5, v1_gzip), ("v1_multipart_3", True, 5, v1_multi),
           ("v2_binary", True, 10, v2_binary), ("get", True, 20, gets), ("bad_type", False, 5, bad_type),
           ("bad_fits", False, 5, bad_fits), ("bad_path", False, 4, bad_path), ("bad_framing", False, 4, bad_framing),
           ("too_big", False, 3, too_big), ("bad_json", False, 4, bad_json), ("hang_up", False, 2, hang_up)]
    weights = [m[2] for m in mix]
    tally = Tally()
    stop = threading.Event()
    t_end = time.monotonic() + a.seconds

    def client(seed):
        rng = random.Random(seed)
        while not stop.is_set() and time.monotonic() < t_end and tally.requests < a.max_requests:
            kind, valid, _, act = rng.choices(mix, weights)[0]
            status, detail = act()
            if status == -1:      # we hung up on purpose: no answer expected
                ok = True
            elif valid:
                ok = status == 200 or (kind == "get" and status == 503)  # busy health checks are honest
            else:
                ok = 400 <= status < 500 or status in (501, 503)
            tally.add(kind, status, ok, detail.decode("utf-8", "replace") if isinstance(detail, bytes) else "")

    rss = [(0.0, rss_kib(srv.proc.pid))]
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    next_rss = t0 + a.rss_every
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if time.monotonic() >= next_rss:
            rss.append((time.monotonic() - t0, rss_kib(srv.proc.pid)))
            print("  t=%5.0f s  requests %8d  RSS %7.1f MB" % (rss[-1][0], tally.requests, rss[-1][1] / 1024),
                  flush=True)
            next_rss += a.rss_every
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    rss.append((elapsed, rss_kib(srv.proc.pid)))
    time.sleep(0.5)
    metrics = one_http(port, "GET", "/metrics")[1].decode()
    held = srv.metric(metrics, "stopcal_memory_in_flight_bytes")
    rc = srv.stop()

    by_code = collections.Counter()
    for (kind, status), n in tally.by_kind.items():
        by_code[status] += n
    valid_n = sum(n for (k, s), n in tally.by_kind.items() if any(m[0] == k and m[1] for m in mix))
    print("\nstopcald soak: %d clients, %.0f s, %d requests (%d valid), %.0f requests/s" %
          (a.clients, elapsed, tally.requests, valid_n, tally.requests / elapsed))
    print("machine: %d CPUs, load average at the end %.2f (shared with other work when > its CPUs)" %
          (os.cpu_count(), os.getloadavg()[0]))
    print("answers by status: " + ", ".join("%s: %d" % (k if k > 0 else "none" if k == 0 else "hung-up-by-client"
                                                         if k == -1 else "short-results", v)
                                            for k, v in sorted(by_code.items())))
    print("by kind:")
    for kind, valid, _, _ in mix:
        codes = {s: n for (k, s), n in tally.by_kind.items() if k == kind}
        print("  %-15s %-7s %s" % (kind, "valid" if valid else "hostile", dict(sorted(codes.items()))))
    print("RSS (MB): " + ", ".join("%.0fs %.1f" % (t, k / 1024) for t, k in rss))
    warm = rss[1][1] if len(rss) > 2 else rss[0][1]
    print("RSS change after the first sample: %+.1f MB; memory still reserved at the end: %d bytes; exit status %d" %
          ((rss[-1][1] - warm) / 1024, held, rc))
    broken = sum(tally.broken.values())
    print("contract breaks: %d %s" % (broken, dict(tally.broken) if broken else ""))
    for k, ex in tally.examples.items():
        print("  e.g. %s: %s" % (k, ex))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"clients": a.clients, "seconds": elapsed, "requests": tally.requests, "valid": valid_n,
                       "by_status": {str(k): v for k, v in by_code.items()},
                       "by_kind": {"%s/%s" % k: v for k, v in tally.by_kind.items()}, "rss_kib": rss,
                       "broken": dict(tally.broken), "held_at_end": held, "exit_status": rc}, f, indent=1)
    return 1 if broken or held or rc else 0


if __name__ == "__main__":
    sys.exit(main())
