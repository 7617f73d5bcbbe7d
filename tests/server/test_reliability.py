#!/usr/bin/env python3
"""stopcald attacked as a hostile client would and faulted as production would (issue 13): the real
server on an ephemeral loopback port, raw sockets where curl would tidy the bytes up, the real curl
otherwise.

usage: test_reliability.py GROUP --stopcald BIN --infer BIN --model-a FILE --model-b FILE [--client BIN]
                           [--stopcald-emu BIN]
GROUP: answers | framing | starvation | faults"""
import argparse
import gzip
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
from serverlib import (Server, check, curl, fits_bytes, raw_request, run_tests,  # noqa: E402
                       stopcal_infer, write_fits, TMP)

A = None
TOL = 1e-5


def expect_error(r, status, fragment=""):
    check(r.status == status, "expected %d, got %r" % (status, r))
    doc = r.json()
    check(isinstance(doc.get("error"), str) and doc["error"], "no 'error' string in %r" % doc)
    check(fragment.lower() in doc["error"].lower(), "error %r does not mention %r" % (doc["error"], fragment))


def read_answers(sock, count, timeout=10):
    """Read `count` HTTP answers (Content-Length framed) off one socket: [(status, headers, body)]."""
    sock.settimeout(timeout)
    buf, out = b"", []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        while b"\r\n\r\n" in buf and len(out) < count:
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            n = int(headers.get("content-length", "0"))
            if len(rest) < n:
                break
            out.append((int(lines[0].split()[1]), headers, rest[:n]))
            buf = rest[n:]
        if len(out) == count:
            break
        try:
            c = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not c:
            break
        buf += c
    return out


def raw_answer(port, data, timeout=10):
    """One request's bytes on a fresh socket -> (status, headers, json body or None); status 0: no answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        got = read_answers(s, 1, timeout)
    finally:
        s.close()
    if not got:
        return 0, {}, None
    status, headers, body = got[0]
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return status, headers, doc


def closed_within(sock, seconds):
    """True when the server closes (EOF or reset) the socket within `seconds`."""
    sock.settimeout(seconds)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            if sock.recv(4096) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def multipart(parts, boundary="XbOuNdArY"):
    """parts: [(field name bytes, file name bytes, data)] -> (content type, body), names sent raw."""
    out = b""
    for field, fname, data in parts:
        out += (b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"" + field +
                b"\"; filename=\"" + fname + b"\"\r\nContent-Type: application/fits\r\n\r\n" + data + b"\r\n")
    out += b"--" + boundary.encode() + b"--\r\n"
    return "multipart/form-data; boundary=" + boundary, out


def post_raw(port, path, ctype, body, extra=b""):
    head = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype + b"\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    return raw_answer(port, head + body, timeout=30)


def metric(srv, name):
    return srv.metric(curl(srv.url("/metrics")).body.decode(), name)


def wait_metric(srv, name, want, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = metric(srv, name)
        if v == want:
            return v
        time.sleep(0.1)
    return metric(srv, name)


# ---- answers lost or not given ------------------------------------------------------------------------

def answers_tests():
    srv = Server(A.stopcald, ["a=" + A.model_a])
    data = [fits_bytes(64, 64, 300 + i) for i in range(3)]
    paths = []
    for i, d in enumerate(data):
        p = os.path.join(TMP, "ans%d.fits" % i)
        open(p, "wb").write(d)
        paths.append(p)
    want = stopcal_infer(A.infer, A.model_a, paths)

    def test_non_utf8_file_names_give_one_result_per_image():
        latin1 = "café.fits".encode("latin-1")                   # 0xe9: not UTF-8
        cut = ("é" * 127).encode() + b"\xc3"                       # 255 bytes, cut mid-character
        ctype, body = multipart([(b"a", latin1, data[0]), (b"b", cut, data[1]), (b"c", b"ok.fits", data[2])])
        status, _, doc = post_raw(srv.port, b"/v1/predict", ctype.encode(), body)
        check(status == 200 and doc and len(doc["results"]) == 3, "3 files in: %r %r" % (status, doc))
        names = [r["name"] for r in doc["results"]]
        # The cut character is replaced, or dropped where its replacement would not fit the 255 bytes.
        check(names[0] == "caf\ufffd.fits" and names[1] in ("é" * 127, "é" * 127 + "\ufffd") and names[2] == "ok.fits",
              names)
        for r, i in zip(doc["results"], range(3)):
            check(abs(r["continue_score"] - want["ans%d.fits" % i]["continue_score"]) <= TOL, (r, i))
        status, _, doc = post_raw(srv.port, b"/v1/predict?name=caf%e9.fits", b"application/fits", data[0])
        check(status == 200 and len(doc["results"]) == 1 and doc["results"][0]["name"] == "caf\ufffd.fits", doc)

    def test_non_utf8_form_field_name_is_a_clear_400():
        ctype = b"multipart/form-data; boundary=B"
        body = (b"--B\r\nContent-Disposition: form-data; name=\"f\xff\"\r\n\r\nnot a file\r\n--B--\r\n")
        status, _, doc = post_raw(srv.port, b"/v1/predict", ctype, body)
        check(status == 400 and "not a file" in doc["error"] and "f\ufffd" in doc["error"], (status, doc))

    def test_invalid_bytes_in_path_query_and_content_type_are_answered():
        for path in [b"/%ff", b"/v2/models/%ff%fe/ready"]:
            status, h, doc = raw_answer(srv.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            check(status == 404 and doc and "\ufffd" in doc["error"], "GET %r: %r %r" % (path, status, doc))
            check(h.get("x-request-id"), h)
        status, _, doc = post_raw(srv.port, b"/v1/predict?model=%ff", b"application/fits", data[0])
        check(status == 404 and "\ufffd" in doc["error"], (status, doc))
        status, _, doc = post_raw(srv.port, b"/v1/predict?threshold=%ff", b"application/fits", data[0])
        check(status == 400 and "threshold" in doc["error"], (status, doc))
        status, _, doc = post_raw(srv.port, b"/v1/predict", b"application/\xfffits", data[0])
        check(status == 415 and "\ufffd" in doc["error"], (status, doc))
        # The log stays parseable JSON, one object per line, with the path made valid.
        lines = [json.loads(l) for l in srv.log_text().splitlines() if l.startswith("{")]
        check(any(l.get("path") == "/\ufffd" and l.get("status") == 404 for l in lines), "no log line for /%ff")

    def test_one_request_in_one_answer_out():
        # Every kind of request, good and bad, on one keep-alive socket: as many answers as requests.
        ctype, body = multipart([(b"a", b"\xe9.fits", data[0]), (b"b", b"b.fits", data[1])])
        reqs = [b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /v1/predict?model=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
                (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype.encode() +
                 b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body),
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/\xff\r\nContent-Length: 3\r\n\r\nabc",
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"]
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        try:
            for r in reqs:
                s.sendall(r)
                got = read_answers(s, 1, 30)
                check(len(got) == 1, "no answer to %r" % r[:60])
                status, _, b = got[0]
                json.loads(b)
                if r.startswith(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart"):
                    check(status == 200 and len(json.loads(b)["results"]) == 2, b)
        finally:
            s.close()

    def test_cli_reports_every_image_or_fails():
        # The C CLI against the server: two files in, two rows out (one of them a non-UTF-8 name).
        if not A.client:
            raise AssertionError("--client not given")
        odd = os.path.join(TMP, "caf\udce9.fits".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape"))
        odd_b = os.fsencode(odd)
        open(odd_b, "wb").write(data[0])
        p = subprocess.run([A.client, "--url", srv.base, "--json", "predict", odd_b, paths[1]], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        check(p.returncode == 0, "exit %d: %s" % (p.returncode, p.stderr.decode(errors="replace")))
        doc = json.loads(p.stdout)
        rows = doc["results"] if isinstance(doc, dict) else doc
        check(len(rows) == 2, "2 files in, %d rows out: %r" % (len(rows), doc))

    rc = run_tests([test_non_utf8_file_names_give_one_result_per_image, test_non_utf8_form_field_name_is_a_clear_400,
                    test_invalid_bytes_in_path_query_and_content_type_are_answered, test_one_request_in_one_answer_out,
                    test_cli_reports_every_image_or_fails], 240)
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- framing, keep-alive, limits --------------------------------------------------------------------

def framing_tests():
    srv = Server(A.stopcald, ["a=" + A.model_a], "--max-body-bytes", "1M")
    img = fits_bytes(64, 64, 5)
    img_path = write_fits("fr.fits", 5)
    want = stopcal_infer(A.infer, A.model_a, [img_path])["fr.fits"]

    def test_three_pipelined_gets_get_three_answers():
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            got = read_answers(s, 3)
            check([g[0] for g in got] == [200, 200, 404], "pipelined answers: %r" % [g[:2] for g in got])
            check(all("close" not in g[1].get("connection", "").lower() for g in got), [g[1] for g in got])
            # Still open: a fourth request on the same connection (a POST decided at the headers).
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                      b"\r\nabcGET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            got = read_answers(s, 2)
            check([g[0] for g in got] == [415, 200], [g[:2] for g in got])
        finally:
            s.close()

    def test_keep_alive_for_every_route_with_curl():
        # curl reuses one connection for every URL of a command line when the server keeps it open.
        urls = [srv.url(p) for p in ["/v2/health/live", "/v2/health/ready", "/v2", "/v1/models", "/v2/models/a",
                                     "/v2/models/a/ready", "/v1/openapi.json", "/metrics", "/nope"]]
        args = []
        for u in urls:
            args += ["-o", "/dev/null", u]
        p = subprocess.run(["curl", "-sS", "-w", "%{num_connects} %{http_code}\n"] + args,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        rows = p.stdout.decode().split()
        connects = [int(x) for x in rows[0::2]]
        check(sum(connects) == 1, "connections opened per URL: %r (want one in all)" % rows)

    def test_chunked_body_far_past_the_limit_is_413():
        big = os.path.join(TMP, "big.bin")
        with open(big, "wb") as f:
            f.write(b"\0" * (12 << 20))  # 12 MB against --max-body-bytes 1M
        r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "-H", "Transfer-Encoding: chunked",
                 "--data-binary", "@" + big, timeout=60)
        expect_error(r, 413, "max-body-bytes")
        os.unlink(big)

    def test_ambiguous_framing_is_refused():
        body = b"x" * 10
        for head, status, frag in [
                (b"Content-Length: 10\r\nContent-Length: 20\r\n", 400, "content-length"),
                (b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", 400, "transfer-encoding"),
                (b"Transfer-Encoding: gzip, chunked\r\n", 501, "transfer-encoding")]:
            t0 = time.monotonic()
            status_got, _, doc = raw_answer(srv.port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Type: application/fits\r\n" + head + b"\r\n" + body, timeout=10)
            check(status_got == status and doc and frag in doc["error"].lower(), (head, status_got, doc))
            check(time.monotonic() - t0 < 3, "answer to %r took %.1f s" % (head, time.monotonic() - t0))

    def test_20000_query_parameters_are_a_4xx():
        q = "&".join("p%d=1" % i for i in range(20000))
        status, _, doc = raw_answer(srv.port, ("GET /v1/models?%s HTTP/1.1\r\nHost: x\r\n\r\n" % q).encode())
        check(400 <= status < 500 and doc and "query parameters" in doc["error"], (status, doc))
        check(curl(srv.url("/v1/models?a=1&b=2")).status == 200, "a few parameters are fine")

    def test_nul_in_path_is_not_served():
        for path in [b"/v2/health/live%00junk", b"/v2/health/live%00"]:
            status, _, doc = raw_answer(srv.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            check(status in (400, 404) and doc and "error" in doc, (path, status, doc))

    def test_gzip_content_encoding_on_v2_json_is_decoded():
        px = [0.1 * ((i * 7919) % 13 - 6) for i in range(3 * 56 * 56)]
        req = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 56, 56], "data": px}]}
        plain = curl(srv.url("/v2/models/a/infer"), "-H", "Content-Type: application/json", "--data-binary",
                     json.dumps(req), timeout=60)
        check(plain.status == 200, plain)
        gz = os.path.join(TMP, "v2.json.gz")
        open(gz, "wb").write(gzip.compress(json.dumps(req).encode()))
        r = curl(srv.url("/v2/models/a/infer"), "-H", "Content-Type: application/json", "-H",
                 "Content-Encoding: gzip", "--data-binary", "@" + gz, timeout=60)
        check(r.status == 200, r)
        check(r.json()["outputs"] == plain.json()["outputs"], (r.json(), plain.json()))
        # A gzip bomb inside the same limit: 4 MB of zeros (> --max-body-bytes 1M) in a few KB.
        bomb = os.path.join(TMP, "bomb.gz")
        open(bomb, "wb").write(gzip.compress(b"{" + b" " * (4 << 20) + b"}"))
        r = curl(srv.url("/v2/models/a/infer"), "-H", "Content-Type: application/json", "-H",
                 "Content-Encoding: gzip", "--data-binary", "@" + bomb, timeout=60)
        expect_error(r, 413, "ceiling")
        r = curl(srv.url("/v2/models/a/infer"), "-H", "Content-Type: application/json", "-H",
                 "Content-Encoding: gzip", "--data-binary", json.dumps(req), timeout=60)
        expect_error(r, 400, "not gzip")

    def test_v1_still_scores_right_through_the_changes():
        r = curl(srv.url("/v1/predict?name=fr.fits"), "-H", "Content-Type: application/fits", "--data-binary",
                 "@" + img_path)
        check(r.status == 200 and abs(r.json()["results"][0]["continue_score"] - want["continue_score"]) <= TOL, r)
        gz = os.path.join(TMP, "fr.fits.gz")
        open(gz, "wb").write(gzip.compress(img))
        r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/gzip", "--data-binary", "@" + gz)
        check(r.status == 200 and abs(r.json()["results"][0]["continue_score"] - want["continue_score"]) <= TOL, r)

    rc = run_tests([test_three_pipelined_gets_get_three_answers, test_keep_alive_for_every_route_with_curl,
                    test_chunked_body_far_past_the_limit_is_413, test_ambiguous_framing_is_refused,
                    test_20000_query_parameters_are_a_4xx, test_nul_in_path_is_not_served,
                    test_gzip_content_encoding_on_v2_json_is_decoded, test_v1_still_scores_right_through_the_changes],
                   240)
    time.sleep(0.3)
    if metric(srv, "stopcal_memory_in_flight_bytes") != 0:
        print("FAIL memory still held after the framing tests")
        rc = 1
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- starvation ---------------------------------------------------------------------------------

def starvation_tests():
    img_path = write_fits("st.fits", 9)

    def predict(srv, timeout=20):
        return curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + img_path,
                    timeout=timeout)

    def test_trickling_uploads_do_not_hold_the_budget():
        # Eight uploads announcing 200 MB each against a 1 GiB budget, sending a few bytes: a real
        # request still gets in, and each holds only about what it sent.
        srv = Server(A.stopcald, ["a=" + A.model_a], "--memory-budget", "1G", "--max-body-bytes", "256M",
                     "--request-timeout-ms", "3000")
        socks = []
        try:
            for _ in range(8):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                          b"Content-Length: 200000000\r\n\r\n" + b"S" * 1000)
                socks.append(s)
            time.sleep(0.3)
            held = metric(srv, "stopcal_memory_in_flight_bytes")
            check(held <= 8 * 128 * 1024, "8 trickling uploads hold %d bytes" % held)
            check(predict(srv).status == 200, "a real request was starved")
            # The body deadline (the request's, 3 s) cuts them and releases everything.
            check(all(closed_within(s, 6) for s in socks), "trickling uploads not cut at the request deadline")
            check(wait_metric(srv, "stopcal_memory_in_flight_bytes", 0) == 0, "memory still held")
            check(metric(srv, 'stopcal_http_cut_connections_total{phase="body"}') == 8, "cuts not counted")
        finally:
            for s in socks:
                s.close()
            check(srv.stop() == 0, "exit status")

    def test_vanished_upload_releases_its_reservation_at_once():
        srv = Server(A.stopcald, ["a=" + A.model_a])
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                      b"Content-Length: 50000000\r\n\r\n" + b"S" * 300000)
            time.sleep(0.3)
            check(metric(srv, "stopcal_memory_in_flight_bytes") > 0, "nothing reserved while the body arrives")
            s.close()
            check(wait_metric(srv, "stopcal_memory_in_flight_bytes", 0, timeout=2) == 0,
                  "reservation kept after the client vanished")
        finally:
            check(srv.stop() == 0, "exit status")

    def test_slowloris_headers_are_cut_and_excess_connections_refused():
        srv = Server(A.stopcald, ["a=" + A.model_a], "--max-connections", "8", "--header-timeout-ms", "1000")
        socks = []
        stop = threading.Event()
        try:
            for _ in range(8):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(b"GET /v1/models HTTP/1.1\r\n")
                socks.append(s)
            time.sleep(0.2)

            def trickle():  # one header byte every 0.2 s on each: the idle timeout never fires
                while not stop.is_set():
                    for s in socks:
                        try:
                            s.sendall(b"X")
                        except OSError:
                            pass
                    time.sleep(0.2)
            t = threading.Thread(target=trickle)
            t.start()
            # Past the limit: refused at once, not left hanging in the backlog.
            extra = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            t0 = time.monotonic()
            check(closed_within(extra, 2) and time.monotonic() - t0 < 1.5, "connection past the limit not refused")
            extra.close()
            # The header deadline cuts the tricklers, and the service answers again.
            check(all(closed_within(s, 4) for s in socks), "slow headers not cut at --header-timeout-ms")
            stop.set()
            t.join(5)
            check(curl(srv.url("/v2/health/ready"), timeout=5).status == 200, "service starved")
            check(metric(srv, "stopcal_http_refused_connections_total") >= 1, "refusal not counted")
            check(metric(srv, 'stopcal_http_cut_connections_total{phase="headers"}') == 8, "cuts not counted")
        finally:
            stop.set()
            for s in socks:
                s.close()
            check(srv.stop() == 0, "exit status")

    def test_gzip_fits_counts_its_inflated_bytes():
        # A 2048² float32 FITS (16 MB inflated) in a small gzip, under a 12 MB budget: refused 503
        # before it is inflated, where it used to be admitted on its compressed size.
        big = fits_bytes(64, 64, 1)
        hdr = big[:2880].replace(b"NAXIS1  =                   64", b"NAXIS1  =                 2048")
        hdr = hdr.replace(b"NAXIS2  =                   64", b"NAXIS2  =                 2048")
        gz = os.path.join(TMP, "wide.fits.gz")
        open(gz, "wb").write(gzip.compress(hdr + b"\0" * (2048 * 2048 * 4)))
        srv = Server(A.stopcald, ["a=" + A.model_a], "--memory-budget", "12M", "--max-body-bytes", "64M")
        try:
            r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/gzip", "--data-binary", "@" + gz)
            expect_error(r, 503, "budget")
            check(wait_metric(srv, "stopcal_memory_in_flight_bytes", 0) == 0, "memory still held")
            check(predict(srv).status == 200, "a small image still fits the budget")
        finally:
            check(srv.stop() == 0, "exit status")

    return run_tests([test_trickling_uploads_do_not_hold_the_budget, test_vanished_upload_releases_its_reservation_at_once,
                      test_slowloris_headers_are_cut_and_excess_connections_refused,
                      test_gzip_fits_counts_its_inflated_bytes], 240)


# ---- faults ---------------------------------------------------------------------------------------

def faults_tests():
    img_path = write_fits("fault.fits", 11)

    def test_api_key_longer_than_4096_bytes_is_read_whole():
        key = "k" * 6000
        path = os.path.join(TMP, "long.key")
        open(path, "w").write(key + "\n")
        srv = Server(A.stopcald, ["a=" + A.model_a], "--api-key-file", path)
        try:
            r = curl(srv.url("/v1/models"), "-H", "Authorization: Bearer " + key)
            check(r.status == 200, "the whole token: %r" % r)
            r = curl(srv.url("/v1/models"), "-H", "Authorization: Bearer " + key[:4095])
            expect_error(r, 401, "bearer")
        finally:
            check(srv.stop() == 0, "exit status")
        open(path, "w").write("k" * ((1 << 20) + 100))  # past the 1 MiB a key file may hold
        p = subprocess.run([A.stopcald, "--port", "0", "--model", "a=" + A.model_a, "--api-key-file", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        err = p.stderr.decode()
        check(p.returncode == 1 and "api-key-file" in err and ("longer" in err or "larger" in err), err[-500:])

    def test_client_disconnecting_mid_inference():
        srv = Server(A.stopcald, ["a=" + A.model_a], "--debug-infer-delay-ms", "800")
        try:
            body = open(img_path, "rb").read()
            for _ in range(3):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/fits\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
                time.sleep(0.3)  # the image is in the engine now
                s.close()
            time.sleep(3)
            check(wait_metric(srv, "stopcal_in_flight_requests", 1) == 1, "requests left in flight")
            check(metric(srv, "stopcal_memory_in_flight_bytes") == 0, "memory still held")
            r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + img_path)
            check(r.status == 200, "the next request: %r" % r)
        finally:
            check(srv.stop() == 0, "exit status (sanitizers run at exit)")

    def test_sticky_device_error_makes_the_service_not_live():
        # stopcald-emu: the CUDA backend over the host emulation; SIGUSR1 injects its sticky error.
        if not A.stopcald_emu:
            print("SKIP test_sticky_device_error_makes_the_service_not_live: this build has no CUDA backend "
                  "(configure found no nvcc), so there is no stopcald-emu to inject the error into")
            return
        import signal
        srv = Server(A.stopcald_emu, ["a=" + A.model_a], "--device", "cuda")
        try:
            want = stopcal_infer(A.infer, A.model_a, [img_path])["fault.fits"]
            r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + img_path,
                     timeout=60)
            check(r.status == 200 and abs(r.json()["results"][0]["continue_score"] - want["continue_score"]) < 0.02,
                  "before the fault (bf16 on the emulated GPU): %r" % r)
            srv.proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while "sticky device error injected" not in srv.log_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            expect_error(curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary",
                              "@" + img_path, timeout=60), 503, "device")
            r = curl(srv.url("/v2/health/live"))
            check(r.status == 503 and r.json() == {"live": False}, r)
            check(curl(srv.url("/v2/health/ready")).status == 503, "ready after a sticky error")
            # Refused at the headers from now on, and the metrics say why.
            expect_error(curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary",
                              "@" + img_path), 503, "device")
            check(metric(srv, "stopcal_live") == 0, "stopcal_live still 1")
            check("no longer live" in srv.log_text(), "no log line for the device failure")
        finally:
            check(srv.stop() == 0, "exit status after a device failure")

    def test_cuda_computes_in_bf16_and_refuses_fp32():
        # The emulated CUDA backend: its answers say bf16, and fp32 on it is one clear line.
        if not A.stopcald_emu:
            print("SKIP test_cuda_computes_in_bf16_and_refuses_fp32: this build has no CUDA backend")
            return
        srv = Server(A.stopcald_emu, ["a=" + A.model_a], "--device", "cuda")
        try:
            doc = curl(srv.url("/v1/models")).json()
            check(doc["models"][0]["backend"] == "cuda-emu" and doc["models"][0]["precision"] == "bf16", doc)
            r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + img_path,
                     timeout=60)
            check(r.status == 200 and r.json()["results"][0]["precision"] == "bf16", r)
        finally:
            check(srv.stop() == 0, "exit status")
        p = subprocess.run([A.stopcald_emu, "--port", "0", "--model", "a=" + A.model_a, "--device", "cuda",
                            "--precision", "fp32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        err = p.stderr.decode().strip().splitlines()
        check(p.returncode != 0 and err and "--precision fp32" in err[-1] and "bf16 only" in err[-1], p.stderr)

    def test_model_file_replaced_on_disk_at_start():
        # The file the server loaded is replaced (renamed over, as a deploy would) right after start:
        # the server keeps serving the weights it loaded, under the digest of those weights.
        work = os.path.join(TMP, "swap.safetensors")
        shutil.copy(A.model_a, work)
        want_a = stopcal_infer(A.infer, A.model_a, [img_path])["fault.fits"]
        srv = Server(A.stopcald, ["m=" + work], wait_ready=False)
        try:
            tmp = work + ".new"
            shutil.copy(A.model_b, tmp)
            os.replace(tmp, work)
            srv.wait_ready()
            import hashlib
            sha_a = hashlib.sha256(open(A.model_a, "rb").read()).hexdigest()
            doc = curl(srv.url("/v1/models")).json()
            check(doc["models"][0]["sha256"] == sha_a, "digest of what was loaded: %r" % doc["models"][0])
            r = curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + img_path)
            check(r.status == 200 and abs(r.json()["results"][0]["continue_score"] - want_a["continue_score"]) <= TOL,
                  r)
        finally:
            check(srv.stop() == 0, "exit status")
        # Truncated in place (a copy still being written): a clear error at start, no crash.
        with open(work, "r+b") as f:
            f.truncate(1000)
        p = subprocess.run([A.stopcald, "--port", "0", "--model", "m=" + work], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        err = p.stderr.decode()
        check(p.returncode == 1 and "swap.safetensors" in err and len(err.strip().splitlines()) == 1, err[-500:])

    return run_tests([test_api_key_longer_than_4096_bytes_is_read_whole, test_client_disconnecting_mid_inference,
                      test_sticky_device_error_makes_the_service_not_live, test_cuda_computes_in_bf16_and_refuses_fp32,
                      test_model_file_replaced_on_disk_at_start],
                     240)


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=["answers", "framing", "starvation", "faults"])
    ap.add_argument("--stopcald", required=True)
    ap.add_argument("--infer", required=True)
    ap.add_argument("--client")
    ap.add_argument("--stopcald-emu", help="stopcald on the emulated CUDA backend (CUDA builds)")
    ap.add_argument("--model-a", required=True)
    ap.add_argument("--model-b", required=True)
    A = ap.parse_args()
    groups = {"answers": answers_tests, "framing": framing_tests, "starvation": starvation_tests,
              "faults": faults_tests}
    sys.exit(groups[A.group]())


if __name__ == "__main__":
    main()
