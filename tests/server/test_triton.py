#!/usr/bin/env python3
"""Triton's own tools against stopcald's REST port, over loopback: tritonclient's HTTP client reads
the model configuration, the statistics and the repository index; every /versions/{v}/ route refuses
an unknown version; a generic client that sends every input the metadata lists succeeds on both
model views ({m}: FITS BYTES, {m}_pixels: FP32 pixels), by name and by alias; the statistics move
after infers; and perf_analyzer runs unmodified over HTTP (the gRPC side is test_grpc.py's).

usage: test_triton.py GROUP --stopcald BIN --infer BIN --model-a FILE --model-b FILE --venv DIR
GROUP: http | perf"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serverlib import Server, check, curl, run_tests, stopcal_infer, write_fits, TMP  # noqa: E402
import test_grpc  # noqa: E402 - its venv, perf_analyzer and data helpers
from test_grpc import gauss_pixels, perf_analyzer, perf_data_files, reexec_in_venv, write_pixels  # noqa: E402

A = None
S = 56
TOL = 1e-5
VIEWS = {"a": "a", "a_pixels": "a_pixels", "short": "a", "short_pixels": "a_pixels"}  # asked -> canonical


def client_for(srv):
    import tritonclient.http as httpclient
    return httpclient.InferenceServerClient("127.0.0.1:%d" % srv.port)


def expect_http_error(fn, status, fragment):
    from tritonclient.utils import InferenceServerException
    try:
        fn()
    except InferenceServerException as e:
        check(e.status() == str(status), "expected HTTP %d, got %s: %s" % (status, e.status(), e.message()))
        check(fragment.lower() in (e.message() or "").lower(), "%r does not mention %r" % (e.message(), fragment))
        return e
    raise AssertionError("no error (expected %d %s)" % (status, fragment))


def stats_of(c, model, version=""):
    (s,) = c.get_inference_statistics(model, version)["model_stats"]
    return s


# ---- http ------------------------------------------------------------------------------------------

def http_tests():
    import numpy as np
    import tritonclient.http as httpclient
    srv = Server(A.stopcald, ["a=" + A.model_a, "b=" + A.model_b], "--alias", "short=a")
    c = client_for(srv)
    images = [write_fits("t%d.fits" % i, 1500 + i) for i in range(3)]
    want = stopcal_infer(A.infer, A.model_a, images)
    pix = [gauss_pixels(1600 + i, 3 * S * S) for i in range(3)]
    want_pix = stopcal_infer(A.infer, A.model_a, ["--pixels"] + [write_pixels("t%d.f32" % i, p)
                                                                  for i, p in enumerate(pix)])

    def inputs_for(md, n):
        """Every input the metadata lists, filled as its datatype and shape say."""
        out = []
        for i in md["inputs"]:
            shape = [n] + i["shape"][1:]
            if i["datatype"] == "BYTES":
                data = np.array([[open(p, "rb").read()] for p in images[:n]], dtype=np.object_).reshape(shape)
            else:
                data = np.array(sum(pix[:n], []), dtype=np.float32).reshape(shape)
            t = httpclient.InferInput(i["name"], shape, i["datatype"])
            t.set_data_from_numpy(data, binary_data=True)
            out.append(t)
        return out

    def test_model_config_as_perf_analyzer_reads_it():
        cfg = c.get_model_config("a")
        check(cfg["name"] == "a" and cfg["platform"] == "stopcal" and cfg["backend"] == "stopcal", cfg)
        check(cfg["max_batch_size"] == 16, cfg)  # --max-images
        (inp,) = cfg["input"]
        check((inp["name"], inp["data_type"], inp["dims"], inp["reshape"]) == ("image", "TYPE_STRING", [1],
                                                                                 {"shape": []}), inp)
        check([(o["name"], o["data_type"], o["dims"]) for o in cfg["output"]] ==
              [("continue_score", "TYPE_FP32", [1]), ("logit", "TYPE_FP32", [1])], cfg)
        check(cfg["dynamic_batching"]["preferred_batch_size"] == [8] and
              cfg["dynamic_batching"]["max_queue_delay_microseconds"] > 0, cfg)
        check(cfg["instance_group"][0]["kind"] == "KIND_CPU", cfg)
        cfg = c.get_model_config("short_pixels", "1")
        check(cfg["name"] == "a_pixels" and [(i["name"], i["data_type"], i["dims"]) for i in cfg["input"]] ==
              [("pixels", "TYPE_FP32", [3, S, S])], cfg)
        # without batching across requests, no dynamic_batching (as a Triton configuration without one)
        one = Server(A.stopcald, ["a=" + A.model_a], "--max-batch", "1")
        try:
            cfg = curl(one.url("/v2/models/a/config")).json()
            check("dynamic_batching" not in cfg and cfg["name"] == "a", cfg)
        finally:
            check(one.stop() == 0, "stopcald --max-batch 1 exit status")

    def test_repository_index_lists_every_view_and_alias():
        idx = c.get_model_repository_index()
        check(isinstance(idx, list), idx)
        check(sorted((m["name"], m["version"], m["state"]) for m in idx) ==
              [(n, "1", "READY") for n in ["a", "a_pixels", "b", "b_pixels", "short", "short_pixels"]], idx)
        r = curl(srv.url("/v2/repository/index"), "-X", "POST", "-H", "Content-Type: application/json",
                 "--data-binary", '{"ready": true}')
        check(r.status == 200 and len(r.json()) == 6, r)
        r = curl(srv.url("/v2/repository/index"), "-X", "POST", "--data-binary", '{"ready": 3}')
        check(r.status == 400 and "ready" in r.json()["error"], r)
        # a small request: answered on the HTTP thread, its body bounded whichever way it is framed
        big = os.path.join(TMP, "big_index.json")
        with open(big, "w") as f:
            f.write('{"ready": false, "pad": "%s"}' % ("x" * 70000))
        for framing in ((), ("-H", "Transfer-Encoding: chunked")):
            r = curl(srv.url("/v2/repository/index"), "-X", "POST", *framing, "--data-binary", "@" + big)
            check(r.status == 413 and "/v2/repository/index" in r.json()["error"], (framing, r))
        r = curl(srv.url("/v2/repository/index"), "-X", "POST", "-H", "Content-Encoding: gzip", "--data-binary", "x")
        check(r.status == 415, r)
        check(curl(srv.url("/v2/repository/index")).status == 405, "GET on the index is a 405")
        doc = curl(srv.url("/v1/models")).json()
        by_name = {m["name"]: m for m in doc["models"]}
        check(by_name["a"]["v2_models"] == ["a", "a_pixels", "short", "short_pixels"], by_name["a"])
        check(by_name["b"]["v2_models"] == ["b", "b_pixels"], by_name["b"])

    def test_unknown_version_is_404_on_every_model_route():
        for view in ("a", "short_pixels"):
            for suffix in ("", "/ready", "/config", "/stats"):
                r = curl(srv.url("/v2/models/%s/versions/2%s" % (view, suffix)))
                check(r.status == 404 and "version '2'" in r.json()["error"], (view, suffix, r))
                r = curl(srv.url("/v2/models/%s/versions/1%s" % (view, suffix)))
                check(r.status == 200, (view, suffix, r))
            r = curl(srv.url("/v2/models/%s/versions/does-not-exist/infer" % view), "-H",
                     "Content-Type: application/json", "--data-binary", "{}")
            check(r.status == 404 and "version 'does-not-exist'" in r.json()["error"], (view, r))
        expect_http_error(lambda: c.get_model_metadata("a", "7"), 404, "version '7'")
        expect_http_error(lambda: c.get_model_config("a_pixels", "0"), 404, "version '0'")
        expect_http_error(lambda: c.get_inference_statistics("short", "2"), 404, "version '2'")
        expect_http_error(lambda: c.infer("a", inputs_for(c.get_model_metadata("a"), 1), model_version="3"), 404,
                          "version '3'")
        expect_http_error(lambda: c.get_model_config("nope"), 404, "nope")

    def test_metadata_then_infer_with_every_listed_input_on_both_views():
        for view, canonical in VIEWS.items():
            md = c.get_model_metadata(view)
            check(md["name"] == canonical and md["versions"] == ["1"], md)
            check(len(md["inputs"]) == 1, md)
            check(c.is_model_ready(view) and c.is_model_ready(view, "1"), view)
            r = c.infer(view, inputs_for(md, 2), outputs=[httpclient.InferRequestedOutput("continue_score"),
                                                         httpclient.InferRequestedOutput("logit")])
            doc = r.get_response()
            check(doc["model_name"] == canonical and doc["model_version"] == "1", doc)
            got = [float(x) for x in r.as_numpy("continue_score").reshape(-1)]
            for i, g in enumerate(got):
                w = (want["t%d.fits" % i] if md["inputs"][0]["datatype"] == "BYTES" else want_pix["t%d.f32" % i])
                check(abs(g - w["continue_score"]) <= TOL, "%s [%d]: %r vs stopcal-infer %r" % (view, i, g, w))
        # the pixels view takes pixels only; {m} still takes both (existing clients)
        image_only = inputs_for(c.get_model_metadata("a"), 1)
        expect_http_error(lambda: c.infer("short_pixels", image_only), 400, "takes the input 'pixels' only")
        r = c.infer("short", inputs_for(c.get_model_metadata("a_pixels"), 1))
        check(abs(float(r.as_numpy("continue_score")[0][0]) - want_pix["t0.f32"]["continue_score"]) <= TOL,
              r.get_response())

    def test_statistics_move_after_infers():
        before = {v: stats_of(c, v) for v in ("a", "a_pixels", "b")}
        for k in ("inference_count", "execution_count"):
            check(all(isinstance(s[k], int) for s in before.values()), before)  # perf_analyzer reads GetUint64
        md = c.get_model_metadata("a_pixels")
        c.infer("a_pixels", inputs_for(md, 3))
        c.infer("short_pixels", inputs_for(md, 1))  # an alias counts on its model's view
        c.infer("a", inputs_for(c.get_model_metadata("a"), 2))
        expect_http_error(lambda: c.infer("a_pixels", inputs_for(c.get_model_metadata("a"), 1)), 400, "pixels")
        after = {v: stats_of(c, v, "1") for v in ("a", "a_pixels", "b")}
        p0, p1 = before["a_pixels"], after["a_pixels"]
        check(p1["name"] == "a_pixels" and p1["version"] == "1", p1)
        check(p1["inference_count"] - p0["inference_count"] == 4, (p0, p1))
        for k in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            check(p1["inference_stats"][k]["count"] - p0["inference_stats"][k]["count"] == 2, (k, p0, p1))
        check(p1["inference_stats"]["success"]["ns"] > p0["inference_stats"]["success"]["ns"], p1)
        check(p1["inference_stats"]["compute_infer"]["ns"] > p0["inference_stats"]["compute_infer"]["ns"], p1)
        check(p1["inference_stats"]["fail"]["count"] - p0["inference_stats"]["fail"]["count"] == 1, (p0, p1))
        check(after["a"]["inference_count"] - before["a"]["inference_count"] == 2, (before["a"], after["a"]))
        # forward passes of model a, whichever view asked: at least one per request here
        check(after["a"]["execution_count"] - before["a"]["execution_count"] >= 3, (before["a"], after["a"]))
        check(after["a"]["execution_count"] == after["a_pixels"]["execution_count"], after)
        check(after["b"]["inference_count"] == before["b"]["inference_count"], after["b"])
        check(sum(b["compute_infer"]["count"] for b in p1["batch_stats"]) == p1["execution_count"], p1)
        check(stats_of(c, "short")["name"] == "a", "an alias's statistics are its model's")
        every = [m["name"] for m in c.get_inference_statistics()["model_stats"]]
        check(every == ["a", "a_pixels", "b", "b_pixels"], every)

    def test_a_model_named_like_a_pixels_view_keeps_that_name():
        """Beside a model literally named 'a_pixels', model a (alias x) keeps its pixels view as
        'x_pixels': every answer about that view calls it so, never by the other model's name."""
        other = Server(A.stopcald, ["a=" + A.model_a, "a_pixels=" + A.model_b], "--alias", "x=a")
        oc = client_for(other)
        try:
            md = oc.get_model_metadata("x_pixels")
            check(md["name"] == "x_pixels" and [i["name"] for i in md["inputs"]] == ["pixels"], md)
            mine = oc.get_model_metadata("a_pixels")  # the loaded model's own (image) view
            check(mine["name"] == "a_pixels" and [i["name"] for i in mine["inputs"]] == ["image"], mine)
            check(oc.get_model_config("x_pixels")["name"] == "x_pixels", oc.get_model_config("x_pixels"))
            r = oc.infer("x_pixels", inputs_for(md, 1))
            check(r.get_response()["model_name"] == "x_pixels", r.get_response())
            got = float(r.as_numpy("continue_score").reshape(-1)[0])
            check(abs(got - want_pix["t0.f32"]["continue_score"]) <= TOL, (got, want_pix["t0.f32"]))
            names = sorted(m["name"] for m in oc.get_model_repository_index())
            check(names == ["a", "a_pixels", "a_pixels_pixels", "x", "x_pixels"], names)
            stats = sorted(s["name"] for s in oc.get_inference_statistics()["model_stats"])
            check(stats == ["a", "a_pixels", "a_pixels_pixels", "x_pixels"], stats)
            doc = curl(other.url("/v1/models")).json()
            check({m["name"]: m["v2_models"] for m in doc["models"]} ==
                  {"a": ["a", "x", "x_pixels"], "a_pixels": ["a_pixels", "a_pixels_pixels"]}, doc)
        finally:
            oc.close()
            check(other.stop() == 0, "stopcald (a and a_pixels) exit status")

    def test_server_metadata_lists_the_extensions():
        md = c.get_server_metadata()
        check({"binary_tensor_data", "model_configuration", "statistics"} <= set(md["extensions"]), md)

    rc = run_tests([test_model_config_as_perf_analyzer_reads_it, test_repository_index_lists_every_view_and_alias,
                    test_unknown_version_is_404_on_every_model_route,
                    test_metadata_then_infer_with_every_listed_input_on_both_views, test_statistics_move_after_infers,
                    test_a_model_named_like_a_pixels_view_keeps_that_name,
                    test_server_metadata_lists_the_extensions], 240)
    c.close()
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- perf_analyzer over HTTP -----------------------------------------------------------------------

def perf_tests():
    pa, env = perf_analyzer()
    fits_json, px_json = perf_data_files()

    def test_perf_analyzer_runs_unmodified_over_http():
        # with dynamic batching (the default) and without; by name and by alias
        for extra in ((), ("--max-batch", "1")):
            srv = Server(A.stopcald, ["a=" + A.model_a], "--alias", "short=a", *extra)
            c = client_for(srv)
            try:
                for model, data in [("a", fits_json), ("a_pixels", px_json), ("short_pixels", px_json)]:
                    before = stats_of(c, model)["inference_count"]
                    rate, _ = test_grpc.run_perf(pa, env, "127.0.0.1:%d" % srv.port, "http", model, data)
                    after = stats_of(c, model)["inference_count"]
                    print("  perf_analyzer http %s%s: %.0f infer/s, %d images served" %
                          (model, " (--max-batch 1)" if extra else "", rate, after - before), flush=True)
                    check(after - before >= 10, "the server counted %d inferences" % (after - before))
            finally:
                c.close()
                check(srv.stop() == 0, "stopcald exit status")

    return run_tests([test_perf_analyzer_runs_unmodified_over_http], 280)


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=["http", "perf"])
    ap.add_argument("--stopcald", required=True)
    ap.add_argument("--infer", required=True)
    ap.add_argument("--model-a", required=True)
    ap.add_argument("--model-b", required=True)
    ap.add_argument("--venv", required=True)
    A = ap.parse_args()
    test_grpc.A = A  # its perf helpers read A.venv
    reexec_in_venv(A.venv)
    sys.exit({"http": http_tests, "perf": perf_tests}[A.group]())


if __name__ == "__main__":
    main()
