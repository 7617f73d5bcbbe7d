#!/usr/bin/env python3
"""Integration tests of stopcald: the real server on an ephemeral loopback port, the real curl.

usage: test_server.py GROUP --stopcald BIN --infer BIN --model-a FILE --model-b FILE
GROUP: endpoints | errors | concurrency | lifecycle | promtool"""
import argparse
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serverlib import (Server, check, curl, fits_bytes, pixels, raw_request, run_tests,  # noqa: E402
                       stopcal_infer, write_fits, TMP)

A = None  # parsed arguments
S = 56    # the test models' input size
TOL = 1e-5


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def expect_error(r, status, fragment=""):
    """An error answer: the status, a JSON body {"error": ...} naming the problem, and a request id."""
    check(r.status == status, "expected %d, got %r" % (status, r))
    doc = r.json()
    check(isinstance(doc.get("error"), str) and doc["error"], "no 'error' string in %r" % doc)
    check(fragment.lower() in doc["error"].lower(), "error %r does not mention %r" % (doc["error"], fragment))
    check(doc.get("request_id") == r.headers.get("x-request-id"), "request id missing or not echoed: %r" % r)
    check(r.headers.get("content-type", "").startswith("application/json"), "error is not JSON: %r" % r.headers)


def v2_binary_body(header, binary):
    h = json.dumps(header).encode()
    return h, h + binary


def post_v2(server, model, header, binary=b"", extra=(), timeout=30):
    h, body = v2_binary_body(header, binary)
    path = os.path.join(TMP, "v2body-%d-%d" % (threading.get_ident(), time.monotonic_ns()))
    open(path, "wb").write(body)
    args = ["-H", "Content-Type: application/octet-stream", "--data-binary", "@" + path]
    if binary:
        args += ["-H", "Inference-Header-Content-Length: %d" % len(h)]
    r = curl(server.url("/v2/models/%s/infer" % model), *args, *extra, timeout=timeout)
    os.unlink(path)
    return r


def bytes_tensor(blobs):
    return b"".join(struct.pack("<I", len(b)) + b for b in blobs)


# ---- endpoints -------------------------------------------------------------------------------------

def endpoint_tests():
    srv = Server(A.stopcald, ["a=" + A.model_a, "b=" + A.model_b])
    images = [write_fits("ep%d.fits" % i, 100 + i) for i in range(3)]
    want_a = stopcal_infer(A.infer, A.model_a, images)
    want_b = stopcal_infer(A.infer, A.model_b, images)

    def test_health_live_ready_and_server_metadata():
        r = curl(srv.url("/v2/health/live"))
        check(r.status == 200 and r.json() == {"live": True}, r)
        r = curl(srv.url("/v2/health/ready"))
        check(r.status == 200 and r.json() == {"ready": True}, r)
        doc = curl(srv.url("/v2")).json()
        check(doc["name"] == "stopcald" and doc["version"] and "binary_tensor_data" in doc["extensions"], doc)

    def test_models_lists_every_model_with_its_sha256():
        doc = curl(srv.url("/v1/models")).json()
        check(doc["default"] == "a", doc)
        by_name = {m["name"]: m for m in doc["models"]}
        check(set(by_name) == {"a", "b"}, by_name.keys())
        check(by_name["a"]["sha256"] == sha256(A.model_a) and by_name["b"]["sha256"] == sha256(A.model_b), doc)
        check(by_name["a"]["default"] and not by_name["b"]["default"], doc)
        check(by_name["a"]["input_size"] == S and by_name["a"]["architecture"]["embed_dim"] == 128, doc)
        check(by_name["a"]["precision"] == "fp32" and by_name["b"]["precision"] == "fp32",
              "every model lists its precision, fp32 by default on the CPU: %r" % doc)
        check(doc["stopcal_version"] and doc["request_id"], doc)

    def test_v2_model_metadata_and_ready():
        doc = curl(srv.url("/v2/models/b")).json()
        check(doc["name"] == "b" and doc["platform"] == "stopcal", doc)
        # one view per input form (a generic client sends every listed input)
        check([(i["name"], i["datatype"]) for i in doc["inputs"]] == [("image", "BYTES")], doc)
        check(doc["versions"] == ["1"], doc)
        check({o["name"] for o in doc["outputs"]} == {"continue_score", "logit"}, doc)
        check(doc["parameters"]["sha256"] == sha256(A.model_b), doc)
        doc = curl(srv.url("/v2/models/b_pixels/versions/1")).json()
        check(doc["name"] == "b_pixels" and [(i["name"], i["shape"]) for i in doc["inputs"]] ==
              [("pixels", [-1, 3, S, S])], doc)
        r = curl(srv.url("/v2/models/a/ready"))
        check(r.status == 200 and r.json()["ready"] is True, r)
        r = curl(srv.url("/v2/models/a/versions/1/ready"))
        check(r.status == 200, r)

    def test_openapi_lists_every_route():
        r = curl(srv.url("/v1/openapi.json"))
        doc = r.json()
        check(r.status == 200 and doc["openapi"].startswith("3."), doc.get("openapi"))
        for p in ["/v1/predict", "/v1/models", "/v1/openapi.json", "/metrics", "/v2", "/v2/health/live",
                  "/v2/health/ready", "/v2/models/{model}", "/v2/models/{model}/ready", "/v2/models/{model}/infer",
                  "/v2/models/{model}/config", "/v2/models/{model}/stats", "/v2/models/stats", "/v2/repository/index",
                  "/v2/models/{model}/versions/{version}/config"]:
            check(p in doc["paths"], "openapi lacks %s" % p)

    def test_predict_raw_fits_matches_stopcal_infer():
        r = curl(srv.url("/v1/predict?name=ep0.fits&threshold=0.25"), "-H", "Content-Type: application/fits",
                 "-H", "X-Request-Id: trace-me-42", "--data-binary", "@" + images[0])
        check(r.status == 200, r)
        doc = r.json()
        check(doc["request_id"] == "trace-me-42" and r.headers["x-request-id"] == "trace-me-42", doc)
        check(doc["model"] == {"name": "a", "sha256": sha256(A.model_a)}, doc["model"])
        check(doc["stopcal_version"], doc)
        (res,) = doc["results"]
        want = want_a["ep0.fits"]
        check(set(res) == {"name", "continue_score", "stop_probability", "decision", "threshold", "logit", "rms",
                           "nonfinite_pixels", "precision"}, res)
        check(res["precision"] == "fp32", f"the CPU's default precision is fp32: {res}")
        check(res["name"] == "ep0.fits", res)
        check(abs(res["continue_score"] - want["continue_score"]) <= TOL, (res, want))
        check(abs(res["rms"] - want["rms"]) <= 1e-12 + 1e-9 * abs(want["rms"]), (res, want))
        check(res["threshold"] == 0.25 and res["decision"] == ("stop" if res["continue_score"] < 0.25 else "continue"),
              res)
        check(abs(res["continue_score"] + res["stop_probability"] - 1) < 1e-8, res)
        check(set(doc["timing_ms"]) == {"queue", "preprocess", "inference", "total"}, doc["timing_ms"])

    def test_predict_gzip_fits_body():
        import gzip
        path = os.path.join(TMP, "ep0.fits.gz")
        open(path, "wb").write(gzip.compress(open(images[0], "rb").read()))
        r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/gzip", "--data-binary", "@" + path)
        check(r.status == 200, r)
        check(abs(r.json()["results"][0]["continue_score"] - want_a["ep0.fits"]["continue_score"]) <= TOL, r)

    def test_predict_multipart_with_three_files():
        r = curl(srv.url("/v1/predict?model=b"), "-F", "x=@" + images[0], "-F", "y=@" + images[1],
                 "-F", "z=@" + images[2])
        check(r.status == 200, r)
        doc = r.json()
        check(doc["model"]["name"] == "b" and doc["model"]["sha256"] == sha256(A.model_b), doc["model"])
        names = [x["name"] for x in doc["results"]]
        check(names == ["ep0.fits", "ep1.fits", "ep2.fits"], names)
        for res in doc["results"]:
            want = want_b[res["name"]]
            check(abs(res["continue_score"] - want["continue_score"]) <= TOL, (res, want))
            check(res["rms"] is not None and res["nonfinite_pixels"] == 0, res)

    def test_v2_infer_image_bytes_through_the_binary_extension():
        blobs = [open(p, "rb").read() for p in images[:2]]
        data = bytes_tensor(blobs)
        header = {"id": "req-7", "parameters": {"threshold": 0.4},
                  "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                              "parameters": {"binary_data_size": len(data)}}]}
        r = post_v2(srv, "a", header, data)
        check(r.status == 200, r)
        doc = r.json()
        check(doc["model_name"] == "a" and doc["id"] == "req-7", doc)
        check(doc["parameters"]["model_sha256"] == sha256(A.model_a) and doc["parameters"]["request_id"], doc)
        check(doc["parameters"]["precision"] == "fp32", doc["parameters"])  # as every result object says
        out = {o["name"]: o for o in doc["outputs"]}
        check(out["continue_score"]["shape"] == [2, 1] and out["continue_score"]["datatype"] == "FP32", out)
        for i in range(2):
            want = want_a["ep%d.fits" % i]
            check(abs(out["continue_score"]["data"][i] - want["continue_score"]) <= TOL, (out, want))
            check(abs(out["logit"]["data"][i] - want["logit"]) <= 1e-4, (out, want))

    def test_v2_infer_pixels_json_binary_one_channel_and_bf16():
        n = 3 * S * S
        vals = [pixels(7, n), pixels(8, n)]
        paths = []
        for i, v in enumerate(vals):
            p = os.path.join(TMP, "px%d.f32" % i)
            open(p, "wb").write(struct.pack("<%df" % n, *v))
            paths.append(p)
        want = stopcal_infer(A.infer, A.model_a, ["--pixels"] + paths)
        header = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 3, S, S], "data": vals[0] + vals[1]}]}
        path = os.path.join(TMP, "px.json")
        json.dump(header, open(path, "w"))
        r = curl(srv.url("/v2/models/a/infer"), "-H", "Content-Type: application/json", "--data-binary", "@" + path)
        check(r.status == 200, r)
        scores = r.json()["outputs"][0]["data"]
        for i in range(2):
            check(abs(scores[i] - want["px%d.f32" % i]["continue_score"]) <= TOL, (scores, want))
        # Binary FP32 in, binary outputs back (Inference-Header-Content-Length on the answer).
        binary = struct.pack("<%df" % (2 * n), *(vals[0] + vals[1]))
        header = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 3, S, S],
                              "parameters": {"binary_data_size": len(binary)}}],
                  "parameters": {"binary_data_output": True}}
        r = post_v2(srv, "a", header, binary)
        check(r.status == 200 and "inference-header-content-length" in r.headers, r)
        hl = int(r.headers["inference-header-content-length"])
        doc = json.loads(r.body[:hl])
        out = {o["name"]: o for o in doc["outputs"]}
        check(out["continue_score"]["parameters"]["binary_data_size"] == 8, doc)
        got = struct.unpack("<4f", r.body[hl:])
        for i in range(2):
            check(abs(got[i] - want["px%d.f32" % i]["continue_score"]) <= TOL, (got, want))
        # [N,1,S,S]: one channel, replicated, equals three equal channels.
        one = pixels(9, S * S)
        p3 = os.path.join(TMP, "px3.f32")
        open(p3, "wb").write(struct.pack("<%df" % (3 * S * S), *(one * 3)))
        want3 = stopcal_infer(A.infer, A.model_a, ["--pixels", p3])["px3.f32"]
        binary = struct.pack("<%df" % (S * S), *one)
        header = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 1, S, S],
                              "parameters": {"binary_data_size": len(binary)}}], "outputs": [{"name": "logit"}]}
        r = post_v2(srv, "a", header, binary)
        check(r.status == 200, r)
        outs = r.json()["outputs"]
        check(len(outs) == 1 and outs[0]["name"] == "logit", outs)
        check(abs(outs[0]["data"][0] - want3["logit"]) <= 1e-4, (outs, want3))
        # BF16 binary: the same image rounded to bf16 scores close to the fp32 answer.
        bf = b"".join(struct.pack("<H", struct.unpack("<I", struct.pack("<f", x))[0] >> 16) for x in vals[0])
        header = {"inputs": [{"name": "pixels", "datatype": "BF16", "shape": [1, 3, S, S],
                              "parameters": {"binary_data_size": len(bf)}}]}
        r = post_v2(srv, "a", header, bf)
        check(r.status == 200, r)
        check(abs(r.json()["outputs"][0]["data"][0] - want["px0.f32"]["continue_score"]) < 0.05, r)

    def test_bearer_token_is_required_and_health_stays_open():
        key = os.path.join(TMP, "api.key")
        open(key, "w").write("s3cret-token\n")
        auth = Server(A.stopcald, ["a=" + A.model_a], "--api-key-file", key)
        try:
            expect_error(curl(auth.url("/v1/models")), 401, "bearer")
            check(curl(auth.url("/v1/models")).headers.get("www-authenticate", "").startswith("Bearer"), "no challenge")
            expect_error(curl(auth.url("/v1/models"), "-H", "Authorization: Bearer s3cret-tokeX"), 401)
            expect_error(curl(auth.url("/v1/models"), "-H", "Authorization: Bearer s3cret-token-longer"), 401)
            check(curl(auth.url("/v1/models"), "-H", "Authorization: Bearer s3cret-token").status == 200, "token")
            check(curl(auth.url("/v2/health/live")).status == 200, "live must stay open")
            check(curl(auth.url("/v2/health/ready")).status == 200, "ready must stay open")
        finally:
            check(auth.stop() == 0, "exit status")

    def test_every_request_gets_one_structured_log_line():
        r = curl(srv.url("/v2/health/live"), "-H", "X-Request-Id: log-line-check")
        check(r.status == 200, r)
        time.sleep(0.2)
        lines = [json.loads(l) for l in srv.log_text().splitlines() if "log-line-check" in l]
        check(len(lines) == 1, lines)
        line = lines[0]
        for k in ["ts", "level", "msg", "request_id", "method", "path", "status", "duration_ms"]:
            check(k in line, "log line lacks %s: %r" % (k, line))

    tests = [test_health_live_ready_and_server_metadata, test_models_lists_every_model_with_its_sha256,
             test_v2_model_metadata_and_ready, test_openapi_lists_every_route,
             test_predict_raw_fits_matches_stopcal_infer, test_predict_gzip_fits_body,
             test_predict_multipart_with_three_files, test_v2_infer_image_bytes_through_the_binary_extension,
             test_v2_infer_pixels_json_binary_one_channel_and_bf16, test_bearer_token_is_required_and_health_stays_open,
             test_every_request_gets_one_structured_log_line]
    rc = run_tests(tests, 240)
    stop_rc = srv.stop()
    if stop_rc != 0:
        print("FAIL server exit status %d" % stop_rc)
        rc = 1
    return rc


# ---- errors ----------------------------------------------------------------------------------------

def error_tests():
    srv = Server(A.stopcald, ["a=" + A.model_a], "--max-body-bytes", "1M", "--max-images", "4")
    img = write_fits("err.fits", 5)
    big = os.path.join(TMP, "big.bin")
    open(big, "wb").write(b"\0" * (3 << 20))

    def v2_json(text, extra=()):
        path = os.path.join(TMP, "err.json")
        open(path, "w").write(text)
        return curl(srv.url("/v2/models/a/infer"), "-H", "Content-Type: application/json", "--data-binary",
                    "@" + path, *extra)

    def test_400_bad_input_names_the_problem():
        expect_error(v2_json("{not json"), 400, "invalid JSON")
        expect_error(v2_json('{"inputs": [], "inputs": []}'), 400, "duplicate")
        expect_error(v2_json("[" * 200 + "]" * 200), 400, "nested deeper")
        expect_error(v2_json('{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,3,8,8],"data":[1]}]}'), 400,
                     "shape")
        expect_error(v2_json('{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,1,%d,%d],"data":[1,2]}]}'
                             % (S, S)), 400, "data")
        expect_error(v2_json('{"inputs":[{"name":"volts","datatype":"FP32","shape":[1]}]}'), 400, "volts")
        expect_error(v2_json('{"parameters":{"threshold":2},"inputs":[]}'), 400, "threshold")
        expect_error(v2_json('{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":["x"]}]}'), 400,
                     "binary data extension")
        expect_error(curl(srv.url("/v1/predict?threshold=abc"), "-H", "Content-Type: application/fits",
                          "--data-binary", "@" + img), 400, "threshold")
        expect_error(curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary",
                          "this is not FITS"), 400, "FITS")
        expect_error(curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "-X", "POST"), 400, "empty")
        expect_error(curl(srv.url("/v1/predict"), "-F", "threshold=0.3"), 400, "not a file")
        # Refused rather than cut short: two long names cut alike would make two results look the same.
        expect_error(curl(srv.url("/v1/predict"), "-F", "x=@%s;filename=%s.fits" % (img, "a" * 300)), 400,
                     "filename is 305 bytes long (at most 255)")
        expect_error(curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "-H",
                          "X-Request-Timeout-Ms: soon", "--data-binary", "@" + img), 400, "X-Request-Timeout-Ms")

    def test_404_unknown_route_and_model():
        expect_error(curl(srv.url("/v3/anything")), 404, "no such endpoint")
        expect_error(curl(srv.url("/v2/models/nope")), 404, "nope")
        expect_error(curl(srv.url("/v2/models/nope/infer"), "--data-binary", "{}"), 404, "nope")
        expect_error(curl(srv.url("/v1/predict?model=nope"), "-H", "Content-Type: application/fits", "--data-binary",
                          "@" + img), 404, "nope")

    def test_405_wrong_method_with_allow():
        r = curl(srv.url("/v1/predict"))
        expect_error(r, 405, "GET")
        check(r.headers.get("allow") == "POST", r.headers)
        r = curl(srv.url("/v2/health/live"), "-X", "POST", "--data-binary", "x")
        expect_error(r, 405)
        check("GET" in r.headers.get("allow", ""), r.headers)

    def test_413_from_content_length_chunked_and_image_count():
        r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + big)
        expect_error(r, 413, "limit")
        r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "-H", "Transfer-Encoding: chunked",
                 "--data-binary", "@" + big)
        expect_error(r, 413, "limit")
        args = []
        for i in range(5):
            args += ["-F", "f%d=@%s" % (i, img)]
        expect_error(curl(srv.url("/v1/predict"), *args), 413, "more than 4")

    def test_415_unsupported_media_type():
        expect_error(curl(srv.url("/v1/predict"), "-H", "Content-Type: text/plain", "--data-binary", "@" + img), 415,
                     "application/fits")
        expect_error(curl(srv.url("/v1/predict"), "--data-binary", "@" + img), 415)  # curl's form-urlencoded
        expect_error(curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "-H",
                          "Content-Encoding: br", "--data-binary", "@" + img), 415, "br")
        expect_error(curl(srv.url("/v2/models/a/infer"), "-H", "Content-Type: text/csv", "--data-binary", "1,2"),
                     415)

    def test_oversized_body_is_refused_before_it_is_read():
        # Only the headers are sent; the answer must come anyway, so the body was never waited for.
        head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                b"Content-Length: 10000000000\r\n\r\n")
        t0 = time.monotonic()
        data = raw_request(srv.port, head, timeout=10)
        check(data.startswith(b"HTTP/1.1 413"), data[:200])
        check(b'"error"' in data and time.monotonic() - t0 < 5, data)

    def test_503_when_the_queue_is_full_and_504_past_the_deadline():
        slow = Server(A.stopcald, ["a=" + A.model_a], "--max-queue", "1", "--max-images", "1", "--max-batch", "1",
                      "--debug-infer-delay-ms", "1500")
        try:
            results = {}

            def send(i, extra=()):
                results[i] = curl(slow.url("/v1/predict?name=q%d" % i), "-H", "Content-Type: application/fits",
                                  "--data-binary", "@" + img, *extra)
            t1 = threading.Thread(target=send, args=(1,))
            t1.start()
            time.sleep(0.3)  # 1 is in the engine (sleeping)
            t2 = threading.Thread(target=send, args=(2,))
            t2.start()
            time.sleep(0.3)  # 2 fills the queue
            send(3)
            t1.join(30)
            t2.join(30)
            expect_error(results[3], 503, "queue")
            check(results[3].headers.get("retry-after") == "1", results[3].headers)
            check(results[1].status == 200 and results[2].status == 200, results)
            # A deadline shorter than the engine's delay: dropped before inference.
            r = curl(slow.url("/v1/predict"), "-H", "Content-Type: application/fits", "-H",
                     "X-Request-Timeout-Ms: 200", "--data-binary", "@" + img)
            expect_error(r, 504, "deadline")
        finally:
            check(slow.stop() == 0, "exit status")

    def test_503_when_the_memory_budget_is_spent():
        tight = Server(A.stopcald, ["a=" + A.model_a], "--memory-budget", "1M", "--max-body-bytes", "4M")
        try:
            head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                    b"Content-Length: 2000000\r\n\r\n")
            data = raw_request(tight.port, head, timeout=10)
            check(data.startswith(b"HTTP/1.1 503") and b"memory budget" in data, data[:300])
            check(b"Retry-After: 1" in data, data[:300])
        finally:
            check(tight.stop() == 0, "exit status")

    tests = [test_400_bad_input_names_the_problem, test_404_unknown_route_and_model, test_405_wrong_method_with_allow,
             test_413_from_content_length_chunked_and_image_count, test_415_unsupported_media_type,
             test_oversized_body_is_refused_before_it_is_read, test_503_when_the_queue_is_full_and_504_past_the_deadline,
             test_503_when_the_memory_budget_is_spent]
    rc = run_tests(tests, 240)
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- concurrency -----------------------------------------------------------------------------------

def concurrency_tests():
    # A short engine delay makes the requests pile up so that batching must happen.
    srv = Server(A.stopcald, ["a=" + A.model_a], "--max-batch", "8", "--debug-infer-delay-ms", "50")
    images = [write_fits("c%02d.fits" % i, 1000 + i) for i in range(16)]
    want = stopcal_infer(A.infer, A.model_a, images)

    def test_16_concurrent_clients_each_get_their_own_score():
        check(len({round(w["continue_score"], 6) for w in want.values()}) == 16, "images must score differently")
        results, barrier = {}, threading.Barrier(16)

        def client(i):
            barrier.wait(10)
            results[i] = curl(srv.url("/v1/predict?name=c%02d.fits" % i), "-H", "Content-Type: application/fits",
                              "-H", "X-Request-Id: client-%d" % i, "--data-binary", "@" + images[i], timeout=60)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        worst = 0.0
        for i in range(16):
            r = results.get(i)
            check(r is not None and r.status == 200, "client %d: %r" % (i, r))
            doc = r.json()
            check(doc["request_id"] == "client-%d" % i, doc)
            (res,) = doc["results"]
            w = want["c%02d.fits" % i]
            check(res["name"] == "c%02d.fits" % i, res)
            worst = max(worst, abs(res["continue_score"] - w["continue_score"]))
            check(abs(res["continue_score"] - w["continue_score"]) <= TOL,
                  "client %d got %.9f, stopcal-infer says %.9f" % (i, res["continue_score"], w["continue_score"]))
        metrics = curl(srv.url("/metrics")).body.decode()
        batches = srv.metric(metrics, 'stopcal_batch_size_count')
        imgs = srv.metric(metrics, 'stopcal_batch_size_sum')
        print("  16 clients: max |Δ continue_score| vs stopcal-infer %.3g; %d images in %d forward passes"
              % (worst, imgs, batches))
        check(batches < imgs, "no batching happened: %d passes for %d images" % (batches, imgs))

    rc = run_tests([test_16_concurrent_clients_each_get_their_own_score], 200)
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- lifecycle -------------------------------------------------------------------------------------

def lifecycle_tests():
    img = write_fits("life.fits", 77)

    def test_server_drains_on_sigterm():
        srv = Server(A.stopcald, ["a=" + A.model_a], "--max-batch", "2", "--debug-infer-delay-ms", "400",
                     "--drain-grace-ms", "600")
        results = {}

        def client(i):
            results[i] = curl(srv.url("/v1/predict?name=d%d" % i), "-H", "Content-Type: application/fits",
                              "--data-binary", "@" + img, timeout=60)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        srv.proc.send_signal(15)
        time.sleep(0.1)
        # Not ready at once, still live, still serving during the grace period.
        r = curl(srv.url("/v2/health/ready"), timeout=5)
        check(r.status == 503 and r.json() == {"ready": False}, r)
        check(curl(srv.url("/v2/health/live"), timeout=5).status == 200, "live during grace")
        time.sleep(0.8)
        # Past the grace period: new connections are refused (or answered 503 while closing).
        r = curl(srv.url("/v2/health/live"), timeout=5)
        check(r.status in (0, 503) and (r.status == 503 or r.rc in (7, 52, 56)), "new request after grace: %r" % r)
        for t in threads:
            t.join(60)
        for i in range(6):
            check(results[i].status == 200, "in-flight request %d: %r" % (i, results[i]))
        rc = srv.proc.wait(timeout=60)
        check(rc == 0, "exit status %d" % rc)
        srv.stop()

    def test_taken_port_is_a_clean_error():
        srv = Server(A.stopcald, ["a=" + A.model_a], wait_ready=False)
        p = subprocess.run([A.stopcald, "--host", "127.0.0.1", "--port", str(srv.port), "--model",
                            "a=" + A.model_a], capture_output=True, text=True, timeout=120)
        check(p.returncode == 1, "second server on a taken port: exit %d, %s" % (p.returncode, p.stderr[-500:]))
        check("cannot listen" in p.stderr, p.stderr[-500:])
        check(curl(srv.url("/v2/health/live"), timeout=5).status == 200, "the first server still serves")
        srv.stop()

    def test_stalled_upload_is_dropped_and_leaks_nothing():
        srv = Server(A.stopcald, ["a=" + A.model_a], "--connection-timeout", "1")
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                      b"Content-Length: 100000\r\n\r\n" + b"S" * 5000)
            t0 = time.monotonic()
            closed = False
            try:
                closed = s.recv(1024) == b""
            except (ConnectionResetError, socket.timeout):
                closed = True
            s.close()
            check(closed and time.monotonic() - t0 < 8, "the stalled connection was not dropped")
            time.sleep(0.2)
            m = curl(srv.url("/metrics")).body.decode()
            check(srv.metric(m, "stopcal_in_flight_requests") == 1, "in flight besides /metrics itself")
            check(srv.metric(m, "stopcal_memory_in_flight_bytes") == 0, "memory still held")
            check(srv.metric(m, "stopcal_http_aborted_requests_total") == 1, "abort not counted")
            check('"termination":"timeout"' in srv.log_text(), "no log line for the dropped request")
        finally:
            check(srv.stop() == 0, "exit status (LeakSanitizer runs at exit in the sanitized build)")

    def test_missing_default_model_exits_with_one_line():
        p = subprocess.run([A.stopcald, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                           env=dict(os.environ, STOPCAL_MODEL="/nonexistent/m.safetensors"))
        err = p.stderr.decode().strip()
        check(p.returncode != 0 and len(err.splitlines()) == 1 and "/nonexistent/m.safetensors" in err, err)

    def test_help_and_env_vars():
        p = subprocess.run([A.stopcald, "--help"], stdout=subprocess.PIPE, timeout=30)
        out = p.stdout.decode()
        check(p.returncode == 0 and "--max-batch" in out and "STOPCAL_MAX_BATCH" in out, out[:500])
        # The environment sets a flag; the command line wins over it.
        srv = Server(A.stopcald, ["a=" + A.model_a], "--max-batch", "3",
                     env={"STOPCAL_MAX_BATCH": "5", "STOPCAL_MAX_QUEUE": "20"})
        try:
            line = next(json.loads(l) for l in srv.log_text().splitlines() if '"msg":"listening"' in l)
            check(line["max_batch"] == 3 and line["max_queue"] == 20, line)
        finally:
            check(srv.stop() == 0, "exit status")
        p = subprocess.run([A.stopcald, "--max-batch", "zero"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        check(p.returncode != 0 and "--max-batch" in p.stderr.decode(), p.stderr)

    def test_precision_is_chosen_at_start_and_reported():
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
        has_bf16 = " avx512_bf16" in cpuinfo
        # auto takes bf16 only where it is the faster: AMD's cores (linear_bf16_faster_than_fp32)
        bf16_faster = has_bf16 and "AuthenticAMD" in cpuinfo
        p = subprocess.run([A.stopcald, "--port", "0", "--model", "a=" + A.model_a, "--precision", "fp16"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        check(p.returncode != 0 and "--precision fp16: expected fp32, bf16 or auto" in p.stderr.decode(), p.stderr)
        if not has_bf16:
            # bf16 where the CPU cannot: one clear line, no server; auto falls back to fp32
            p = subprocess.run([A.stopcald, "--port", "0", "--model", "a=" + A.model_a, "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                               env=dict(os.environ, STOPCAL_PRECISION="bf16"))
            err = p.stderr.decode().strip().splitlines()
            check(p.returncode != 0 and err and "--precision bf16" in err[-1] and "AVX512_BF16" in err[-1],
                  "STOPCAL_PRECISION=bf16 on a CPU without AVX512_BF16: %r" % p.stderr)
        srv = Server(A.stopcald, ["a=" + A.model_a], "--device", "cpu", "--precision", "auto")
        try:
            want = "bf16" if bf16_faster else "fp32"
            passed_over = [l for l in srv.log_text().splitlines() if "--precision auto: fp32, since" in l]
            check(bool(passed_over) == (has_bf16 and not bf16_faster),
                  "a log line exactly where auto passed over a slower bf16: %r" % passed_over)
            doc = curl(srv.url("/v1/models")).json()
            check(doc["models"][0]["precision"] == want, "--precision auto on this CPU: %r" % doc["models"][0])
            r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary",
                     "@" + img)
            check(r.status == 200 and r.json()["results"][0]["precision"] == want, r)
        finally:
            check(srv.stop() == 0, "exit status")

    def test_healthcheck_flag_follows_readiness():
        def probe(port):
            return subprocess.run([A.stopcald, "--healthcheck", "--port", str(port)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=30)
        srv = Server(A.stopcald, ["a=" + A.model_a], "--drain-grace-ms", "3000")
        port = srv.port
        p = probe(port)
        check(p.returncode == 0, "ready server: %r" % p.stderr)
        srv.proc.send_signal(15)
        time.sleep(0.3)
        p = probe(port)  # draining: not ready, still answering
        check(p.returncode == 1 and b"HTTP 503" in p.stderr, "draining server: %r" % p.stderr)
        check(srv.proc.wait(timeout=60) == 0, "exit status after drain")
        srv.stop()
        p = probe(port)
        check(p.returncode == 1 and b"stopcald: healthcheck:" in p.stderr, "no server: %r" % p.stderr)

    return run_tests([test_server_drains_on_sigterm, test_taken_port_is_a_clean_error,
                      test_stalled_upload_is_dropped_and_leaks_nothing,
                      test_missing_default_model_exits_with_one_line, test_help_and_env_vars,
                      test_precision_is_chosen_at_start_and_reported,
                      test_healthcheck_flag_follows_readiness], 240)


# ---- promtool --------------------------------------------------------------------------------------

def promtool_tests():
    promtool = shutil.which("promtool")
    if not promtool:
        print("SKIP: promtool not found (Debian package 'prometheus')")
        return 77
    srv = Server(A.stopcald, ["a=" + A.model_a, "b=" + A.model_b])
    img = write_fits("prom.fits", 3)

    def test_metrics_pass_promtool_check():
        curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + img)
        curl(srv.url("/v1/predict?model=b"), "-F", "a=@" + img, "-F", "b=@" + img)
        curl(srv.url("/nope"))
        r = curl(srv.url("/metrics"))
        check(r.status == 200 and r.headers["content-type"].startswith("text/plain"), r)
        p = subprocess.run([promtool, "check", "metrics"], input=r.body, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        check(p.returncode == 0, "promtool: %s %s" % (p.stdout.decode(), p.stderr.decode()))
        text = r.body.decode()
        for family in ["stopcal_http_requests_total", "stopcal_request_duration_seconds_bucket",
                       "stopcal_queue_duration_seconds_bucket", "stopcal_preprocess_duration_seconds_bucket",
                       "stopcal_inference_duration_seconds_bucket", "stopcal_batch_size_bucket",
                       "stopcal_queue_depth", "stopcal_in_flight_requests", "stopcal_continue_score_bucket",
                       "stopcal_model_info", "stopcal_device_memory_bytes"]:
            check(family in text, "missing %s" % family)
        check('stopcal_http_requests_total{endpoint="/v1/predict",code="200"} 2' in text, text[:2000])
        check('stopcal_continue_score_count{model="b"} 2' in text, "score histogram per model")

    rc = run_tests([test_metrics_pass_promtool_check], 120)
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=["endpoints", "errors", "concurrency", "lifecycle", "promtool"])
    ap.add_argument("--stopcald", required=True)
    ap.add_argument("--infer", required=True)
    ap.add_argument("--model-a", required=True)
    ap.add_argument("--model-b", required=True)
    A = ap.parse_args()
    groups = {"endpoints": endpoint_tests, "errors": error_tests, "concurrency": concurrency_tests,
              "lifecycle": lifecycle_tests, "promtool": promtool_tests}
    sys.exit(groups[A.group]())


if __name__ == "__main__":
    main()
