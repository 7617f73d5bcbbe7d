#!/usr/bin/env python3
"""Tests of the stopcal client (the `stopcal` CLI over libstopcal, and client/python/stopcal/)
against the real stopcald on an ephemeral loopback port, and against a tiny loopback stub server
for 503/Retry-After and timeouts. Standard library only; every subprocess and wait is bounded.

usage: test_client.py GROUP --stopcal BIN --stopcald BIN --libtest BIN --model FILE --model-v3 FILE
                      --python-dir DIR
GROUP: cli | resilience | python"""
import argparse
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
from serverlib import Server, TMP, check, curl, run_tests, write_fits  # noqa: E402

A = None
TOL = 1e-6


def dead_url():
    """A loopback URL where nothing listens (a port bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d" % port


def cli(*args, env=None, timeout=60):
    full = dict(os.environ)
    for k in ("STOPCAL_URL", "STOPCAL_API_KEY", "STOPCAL_API_KEY_FILE"):
        full.pop(k, None)
    full.update(env or {})
    t0 = time.monotonic()
    p = subprocess.run([A.stopcal] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full,
                       timeout=timeout)
    p.elapsed = time.monotonic() - t0
    p.out, p.err = p.stdout.decode(), p.stderr.decode()
    check("Sanitizer" not in p.err, "sanitizer report from stopcal:\n" + p.err)
    return p


def server_side(srv, paths, extra=(), model=None):
    """{name: result} from a direct multipart POST /v1/predict (server-side preprocessing)."""
    args = []
    for p in paths:
        args += ["-F", "file=@%s;type=application/fits" % p]
    r = curl(srv.url("/v1/predict" + ("?model=" + model if model else "")), *args, *extra)
    check(r.status == 200, r)
    return {x["name"]: x for x in r.json()["results"]}, r.json()


RESULT_KEYS = {"name", "continue_score", "stop_probability", "decision", "threshold", "logit", "rms",
               "nonfinite_pixels", "precision"}


# ---- the CLI against the real server ---------------------------------------------------------------

def cli_tests():
    srv = Server(A.stopcald, ["a=" + A.model, "v3=" + A.model_v3])
    keyfile = os.path.join(TMP, "client-token")
    with open(keyfile, "w") as f:
        f.write("s3cret-token\n")
    wrongfile = os.path.join(TMP, "client-wrong-token")
    with open(wrongfile, "w") as f:
        f.write("not-the-token\n")
    authed = Server(A.stopcald, ["a=" + A.model], "--api-key-file", keyfile)
    images = [write_fits("cl%d.fits" % i, 300 + i) for i in range(3)]
    want, want_doc = server_side(srv, images)

    def test_predict_table_json_csv():
        p = cli("--url", srv.base, "predict", "--json", *images)
        check(p.returncode == 0, p.err)
        doc = json.loads(p.out)
        check(doc["model"] == want_doc["model"] and doc["request_id"] and doc["server"] == srv.base, doc)
        check([r["name"] for r in doc["results"]] == ["cl0.fits", "cl1.fits", "cl2.fits"], doc)
        for r in doc["results"]:
            check(set(r) == RESULT_KEYS, r)
            check(r["precision"] == "fp32", "the server's precision passes through: %r" % r)
            w = want[r["name"]]
            check(abs(r["continue_score"] - w["continue_score"]) <= TOL and r["decision"] == w["decision"], (r, w))
            check(abs(r["rms"] - w["rms"]) <= 1e-9 and r["threshold"] == 0.5, (r, w))
        p = cli("--url", srv.base, "predict", "--csv", "--threshold", "0.97", *images)
        check(p.returncode == 0, p.err)
        lines = p.out.strip().splitlines()
        check(lines[0].startswith("name,continue_score,stop_probability,decision,threshold") and len(lines) == 4, lines)
        row = lines[1].split(",")
        check(row[0] == "cl0.fits" and abs(float(row[1]) - want["cl0.fits"]["continue_score"]) <= 1e-8, row)
        check(row[4] == "0.97" and row[3] == ("stop" if float(row[1]) < 0.97 else "continue"), row)
        check(row[-1] == want_doc["model"]["sha256"], row)
        p = cli("predict", *images, env={"STOPCAL_URL": srv.base})  # table, URL from the environment
        check(p.returncode == 0, p.err)
        check(want_doc["model"]["sha256"] in p.out and "CONTINUE_SCORE" in p.out, p.out)
        for name, w in want.items():
            line = [ln for ln in p.out.splitlines() if ln.startswith(name)]
            check(line and "%.6f" % w["continue_score"] in line[0] and w["decision"] in line[0], (line, w))

    def test_should_stop_exit_codes():
        score = want["cl0.fits"]["continue_score"]
        p = cli("--url", srv.base, "should-stop", "--threshold", "1", images[0])  # score < 1: stop
        check(p.returncode == 0 and " stop " in p.out, (p.returncode, p.out, p.err))
        p = cli("--url", srv.base, "should-stop", "--threshold", "0", images[0])  # score >= 0: continue
        check(p.returncode == 1 and "continue" in p.out, (p.returncode, p.out, p.err))
        p = cli("--url", srv.base, "should-stop", images[0])  # the model's 0.5
        check(p.returncode == (0 if score < 0.5 else 1), (p.returncode, score))
        p = cli("--url", srv.base, "should-stop", os.path.join(TMP, "missing.fits"))
        check(p.returncode == 2 and "missing.fits" in p.err, (p.returncode, p.err))
        p = cli("--url", srv.base, "should-stop", images[0], images[1])
        check(p.returncode == 2, p.returncode)
        p = cli("--url", dead_url(), "--retries", "0", "should-stop", images[0])
        check(p.returncode == 2 and "unreachable" in p.err, (p.returncode, p.err))

    def test_health_and_models():
        p = cli("--url", srv.base, "health")
        check(p.returncode == 0 and p.out.strip() == srv.base + " ready", (p.returncode, p.out, p.err))
        dead = dead_url()
        p = cli("--url", dead, "health")
        check(p.returncode == 1 and "unreachable" in p.out and "no server is ready" in p.err, (p.out, p.err))
        p = cli("--url", dead + "," + srv.base, "health")
        check(p.returncode == 0 and "unreachable" in p.out and srv.base + " ready" in p.out, p.out)
        p = cli("--url", srv.base, "models")
        check(p.returncode == 0 and want_doc["model"]["sha256"] in p.out and "cortexchange-v2" in p.out, p.out)
        p = cli("--url", srv.base, "models", "--json")
        check(p.returncode == 0 and json.loads(p.out)["models"][0]["name"] == "a", p.out)

    def test_server_down_is_a_clear_error():
        dead = dead_url()
        p = cli("--url", dead, "--retries", "1", "predict", images[0])
        check(p.returncode == 1, p.returncode)
        err = p.err.strip()
        check(len(err.splitlines()) == 1 and err.startswith("stopcal: server unreachable") and dead in err
              and "after 2 attempts" in err, err)
        p = cli("--url", srv.base, "predict", os.path.join(TMP, "nope.fits"))
        check(p.returncode == 1 and "nope.fits" in p.err, p.err)
        p = cli("--url", srv.base, "bogus")
        check(p.returncode == 1 and "unknown command" in p.err, p.err)

    def test_failover_to_second_server():
        p = cli("--url", dead_url(), "--url", srv.base, "--retries", "0", "predict", "--json", images[0])
        check(p.returncode == 0, p.err)
        doc = json.loads(p.out)
        check(doc["server"] == srv.base and abs(doc["results"][0]["continue_score"]
                                               - want["cl0.fits"]["continue_score"]) <= TOL, doc)

    def test_wrong_token_reports_401():
        p = cli("--url", authed.base, "--retries", "0", "predict", images[0])
        check(p.returncode == 1 and "401" in p.err and "authentication" in p.err, p.err)
        p = cli("--url", authed.base, "--api-key-file", wrongfile, "predict", images[0])
        check(p.returncode == 1 and "401" in p.err and "STOPCAL_API_KEY" in p.err, p.err)
        p = cli("--url", authed.base, "--api-key-file", wrongfile, "should-stop", images[0])
        check(p.returncode == 2 and "401" in p.err, (p.returncode, p.err))
        p = cli("--url", authed.base, "--api-key-file", keyfile, "predict", "--json", images[0])
        check(p.returncode == 0 and json.loads(p.out)["results"][0]["name"] == "cl0.fits", p.err)
        p = cli("--url", authed.base, "predict", "--json", images[0], env={"STOPCAL_API_KEY": "s3cret-token"})
        check(p.returncode == 0, p.err)
        p = cli("--url", authed.base, "health")  # health stays open
        check(p.returncode == 0, p.out)
        p = cli("--url", authed.base, "--api-key-file", os.path.join(TMP, "no-such-key"), "predict", images[0])
        check(p.returncode == 1 and "no-such-key" in p.err, p.err)

    def test_local_preprocessing_matches_server_side():
        more = [write_fits("lp%d.fits" % i, 400 + i, 80, 60) for i in range(2)]
        paths = images + more
        exp, _ = server_side(srv, paths, extra=("-H", "X-Request-Id: x"))
        for thr in (None, "0.93"):
            args = ["--url", srv.base, "--local-preprocess", "predict", "--json"]
            if thr:
                args += ["--threshold", thr]
            p = cli(*(args + paths))
            check(p.returncode == 0, p.err)
            doc = json.loads(p.out)
            check(doc["model"]["sha256"] == want_doc["model"]["sha256"] and doc["model"]["name"] == "a", doc)
            check(len(doc["results"]) == len(paths), doc)
            for r in doc["results"]:
                w = exp[r["name"]]
                check(set(r) == RESULT_KEYS, r)
                check(abs(r["continue_score"] - w["continue_score"]) <= TOL, (r, w))
                check(abs(r["logit"] - w["logit"]) <= 1e-5 and r["nonfinite_pixels"] == w["nonfinite_pixels"], (r, w))
                check(abs(r["rms"] - w["rms"]) <= 1e-9 * max(1, abs(w["rms"])), (r, w))
                check(r["threshold"] == (float(thr) if thr else 0.5), r)
                check(r["decision"] == ("stop" if r["continue_score"] < r["threshold"] else "continue"), r)
        # cortexchange-v3, a different mean/std per channel: three planes travel
        exp3, doc3 = server_side(srv, paths, model="v3")
        p = cli("--url", srv.base, "--model", "v3", "--local-preprocess", "predict", "--json", *paths)
        check(p.returncode == 0, p.err)
        doc = json.loads(p.out)
        check(doc["model"] == doc3["model"] and doc["model"]["name"] == "v3", (doc["model"], doc3["model"]))
        for r in doc["results"]:
            w = exp3[r["name"]]
            check(abs(r["continue_score"] - w["continue_score"]) <= TOL, (r, w))
        p = cli("--url", srv.base, "--local-preprocess", "should-stop", "--threshold", "1", images[1])
        check(p.returncode == 0, (p.returncode, p.err))
        bad = os.path.join(TMP, "notfits.fits")
        with open(bad, "wb") as f:
            f.write(b"hello" * 100)
        p = cli("--url", srv.base, "--local-preprocess", "predict", bad)
        check(p.returncode == 1 and "notfits.fits" in p.err and "image refused" in p.err, p.err)

    def test_library_one_client_shared_by_threads():
        for local in ([], ["--local-preprocess"]):
            p = subprocess.run([A.libtest, srv.base, images[0], "4", "4"] + local, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=120)
            check(p.returncode == 0 and b"Sanitizer" not in p.stderr, p.stderr.decode())
            lines = [ln.split() for ln in p.stdout.decode().splitlines()]
            check(len(lines) == 16, lines)
            check({ln[1] for ln in lines} == {"cl0.fits", "buffer.fits"}, lines)
            check(all(ln[2] == want_doc["model"]["sha256"] for ln in lines), lines)
            check(len({ln[3] for ln in lines}) == 16, "request ids are not distinct: %r" % lines)
            for ln in lines:
                check(abs(float(ln[0]) - want["cl0.fits"]["continue_score"]) <= TOL, (ln, local))

    tests = [test_predict_table_json_csv, test_should_stop_exit_codes, test_health_and_models,
             test_server_down_is_a_clear_error, test_failover_to_second_server, test_wrong_token_reports_401,
             test_local_preprocessing_matches_server_side, test_library_one_client_shared_by_threads]
    try:
        rc = run_tests(tests, 240)
    finally:
        for s in (srv, authed):
            check(s.stop() == 0, "stopcald exit status")
    return rc


# ---- a loopback stub: 503 + Retry-After, slow answers -------------------------------------------------

CANNED = {"model": {"name": "stub", "sha256": "0" * 64}, "stopcal_version": "0.1.0", "request_id": "stub-1",
          "results": [{"name": "cl0.fits", "continue_score": 0.25, "stop_probability": 0.75, "decision": "stop",
                       "threshold": 0.5, "logit": -1.0986122886681098, "rms": 0.001, "nonfinite_pixels": 0}],
          "timing_ms": {"queue": 0, "preprocess": 0, "inference": 0, "total": 0}}


class Stub:
    """Answers `busy` requests with 503 + Retry-After (retry_after seconds), then the canned answer;
    with delay > 0 sleeps that long before answering."""

    def __init__(self, busy=0, retry_after=1, delay=0.0, status=None):
        self.busy, self.retry_after, self.delay, self.status = busy, retry_after, delay, status
        self.requests = []
        self.ports = set()  # client ports seen: one per TCP connection
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                stub.requests.append((time.monotonic(), self.command, self.path))
                stub.ports.add(self.client_address[1])
                if stub.delay:
                    time.sleep(stub.delay)
                if len(stub.requests) <= stub.busy or stub.status:
                    body = json.dumps({"error": "queue full, retry later"}).encode()
                    self.send_response(stub.status or 503)
                    self.send_header("Retry-After", str(stub.retry_after))
                else:
                    body = json.dumps(CANNED).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            do_GET = do_POST = answer

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def resilience_tests():
    img = write_fits("cl0.fits", 300)

    def test_503_then_success_honours_retry_after():
        stub = Stub(busy=1, retry_after=1)
        try:
            p = cli("--url", stub.base, "--retries", "2", "predict", "--json", img)
            check(p.returncode == 0, p.err)
            check(json.loads(p.out)["results"][0]["continue_score"] == 0.25, p.out)
            check(len(stub.requests) == 2, stub.requests)
            gap = stub.requests[1][0] - stub.requests[0][0]
            check(0.9 <= gap < 5, "retry came %.2f s after the 503 (Retry-After: 1)" % gap)
        finally:
            stub.close()
        stub = Stub(busy=1, retry_after=1)
        try:  # should-stop answers from the retried request: canned score 0.25 < 0.5 → stop
            p = cli("--url", stub.base, "should-stop", img)
            check(p.returncode == 0 and len(stub.requests) == 2, (p.returncode, p.err, stub.requests))
        finally:
            stub.close()

    def test_503_on_every_attempt_is_an_error():
        stub = Stub(busy=100, retry_after=0)
        try:
            p = cli("--url", stub.base, "--retries", "2", "predict", img)
            check(p.returncode == 1 and "503" in p.err and "busy" in p.err and "after 3 attempts" in p.err, p.err)
            check(len(stub.requests) == 3, stub.requests)
        finally:
            stub.close()

    def test_429_fails_over_to_the_next_server():
        busy = Stub(status=429, retry_after=0)
        ok = Stub()
        try:
            p = cli("--url", busy.base + "," + ok.base, "--retries", "0", "predict", "--json", img)
            check(p.returncode == 0 and json.loads(p.out)["server"] == ok.base, (p.out, p.err))
            check(len(busy.requests) == 1 and len(ok.requests) == 1, (busy.requests, ok.requests))
        finally:
            busy.close()
            ok.close()

    def test_timeout():
        stub = Stub(delay=3)
        try:
            p = cli("--url", stub.base, "--timeout", "0.5", "--retries", "0", "predict", img)
            check(p.returncode == 1 and "timed out" in p.err.lower(), p.err)
            check(p.elapsed < 2.5, "took %.2f s with --timeout 0.5" % p.elapsed)
            p = cli("--url", stub.base, "--timeout", "0.5", "--retries", "0", "should-stop", img)
            check(p.returncode == 2, p.returncode)
        finally:
            stub.close()

    def test_connection_is_reused():
        stub = Stub()
        try:
            p = subprocess.run([A.libtest, stub.base, img, "1", "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=60)
            check(p.returncode == 0 and len(p.stdout.splitlines()) == 6, p.stderr.decode())
            check(len(stub.requests) == 6 and len(stub.ports) == 1, "6 requests over %d connections" % len(stub.ports))
        finally:
            stub.close()

    def test_real_server_queue_full_503_then_retried():
        slow = Server(A.stopcald, ["a=" + A.model], "--max-queue", "1", "--max-batch", "1", "--max-images", "1",
                      "--debug-infer-delay-ms", "800")
        try:
            env = dict(os.environ)
            for k in ("STOPCAL_URL", "STOPCAL_API_KEY", "STOPCAL_API_KEY_FILE"):
                env.pop(k, None)
            procs = [subprocess.Popen([A.stopcal, "--url", slow.base, "--retries", "8", "predict", "--json", img],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(4)]
            outs = [p.communicate(timeout=90) for p in procs]
            for p, (out, err) in zip(procs, outs):
                check(p.returncode == 0 and b"Sanitizer" not in err, err.decode())
                check(json.loads(out)["results"][0]["name"] == "cl0.fits", out)
            metrics = curl(slow.url("/metrics")).body.decode()
            busy = sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                       if ln.startswith("stopcal_http_requests_total{") and 'code="503"' in ln)
            check(busy >= 1, "no request met a full queue; the test did not exercise 503")
        finally:
            check(slow.stop() == 0, "stopcald exit status")

    def test_python_module_retries_503():
        stub = Stub(busy=1, retry_after=0)
        try:
            out = subprocess.run([sys.executable, "-c", "import stopcal; print(stopcal.predict(%r))" % img],
                                 env=dict(os.environ, PYTHONPATH=A.python_dir, STOPCAL_URL=stub.base),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            check(out.returncode == 0 and float(out.stdout) == 0.25, out.stderr.decode())
            check(len(stub.requests) == 2, stub.requests)
        finally:
            stub.close()

    return run_tests([test_503_then_success_honours_retry_after, test_503_on_every_attempt_is_an_error,
                      test_429_fails_over_to_the_next_server, test_timeout, test_connection_is_reused,
                      test_real_server_queue_full_503_then_retried, test_python_module_retries_503], 120)


# ---- the Python module against the real server --------------------------------------------------------

def python_tests():
    sys.path.insert(0, A.python_dir)
    import stopcal  # noqa: E402

    srv = Server(A.stopcald, ["a=" + A.model])
    keyfile = os.path.join(TMP, "py-token")
    with open(keyfile, "w") as f:
        f.write("py-token\n")
    authed = Server(A.stopcald, ["a=" + A.model], "--api-key-file", keyfile)
    images = [write_fits("py%d.fits" % i, 500 + i) for i in range(10)]
    want, _ = server_side(srv, images[:8])
    want.update(server_side(srv, images[8:])[0])
    saved = {k: os.environ.pop(k, None) for k in ("STOPCAL_URL", "STOPCAL_API_KEY", "STOPCAL_API_KEY_FILE")}

    def test_predict_returns_the_continue_score():
        os.environ["STOPCAL_URL"] = srv.base
        s = stopcal.predict(images[0])
        check(isinstance(s, float) and abs(s - want["py0.fits"]["continue_score"]) <= TOL, s)

    def test_predict_many_in_order_across_requests():
        os.environ["STOPCAL_URL"] = srv.base
        scores = stopcal.predict_many(images)  # 10 files: two requests of at most 8
        check(len(scores) == 10, scores)
        for p, s in zip(images, scores):
            check(abs(s - want[os.path.basename(p)]["continue_score"]) <= TOL, (p, s))
        doc = stopcal.predict_full(images[:2], threshold=0.99)
        check(doc["model"]["name"] == "a" and all(r["threshold"] == 0.99 for r in doc["results"]), doc)

    def test_failover_health_models_and_errors():
        os.environ["STOPCAL_URL"] = dead_url() + "," + srv.base
        check(abs(stopcal.predict(images[1]) - want["py1.fits"]["continue_score"]) <= TOL, "failover")
        check(stopcal.health() is True and stopcal.models()["default"] == "a", "health/models")
        os.environ["STOPCAL_URL"] = dead_url()
        try:
            stopcal.predict(images[0], retries=1)
            check(False, "no error with the server down")
        except stopcal.StopcalError as e:
            check(e.status == 0 and "after 2 attempts" in str(e), str(e))
        check(stopcal.health(retries=0) is False, "health of a dead server")

    def test_bearer_token():
        os.environ["STOPCAL_URL"] = authed.base
        try:
            stopcal.predict(images[0])
            check(False, "no error without the token")
        except stopcal.StopcalError as e:
            check(e.status == 401 and "authentication" in str(e), str(e))
        os.environ["STOPCAL_API_KEY"] = "py-token"
        try:
            check(abs(stopcal.predict(images[0]) - want["py0.fits"]["continue_score"]) <= TOL, "with token")
        finally:
            del os.environ["STOPCAL_API_KEY"]
        os.environ["STOPCAL_API_KEY_FILE"] = keyfile
        try:
            check(stopcal.predict_many(images[:1])[0] == stopcal.predict(images[0], api_key="py-token"), "key file")
        finally:
            del os.environ["STOPCAL_API_KEY_FILE"]

    try:
        rc = run_tests([test_predict_returns_the_continue_score, test_predict_many_in_order_across_requests,
                        test_failover_health_models_and_errors, test_bearer_token], 180)
    finally:
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v
        for s in (srv, authed):
            check(s.stop() == 0, "stopcald exit status")
    return rc


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=["cli", "resilience", "python"])
    ap.add_argument("--stopcal", required=True)
    ap.add_argument("--stopcald", required=True)
    ap.add_argument("--libtest", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-v3", required=True)
    ap.add_argument("--python-dir", required=True)
    A = ap.parse_args()
    return {"cli": cli_tests, "resilience": resilience_tests, "python": python_tests}[A.group]()


if __name__ == "__main__":
    sys.exit(main())
