#!/usr/bin/env python3
"""stopcald's Open Inference Protocol v2 over gRPC, tried with tritonclient's gRPC client over
loopback: every RPC, BYTES (FITS) and FP32 inputs against stopcal-infer, errors and their status
codes, the bearer token, request ids, metrics, 16 concurrent clients, drain on SIGTERM; and the
schema in server/grpc/proto against the one the tritonclient wheel carries.

usage: test_grpc.py GROUP --stopcald BIN --infer BIN --model-a FILE --model-b FILE --venv DIR
GROUP: rpcs | errors | concurrency | drain | proto | perf (perf_analyzer, unmodified, for a few seconds)"""
import argparse
import base64
import glob
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serverlib import Server, check, curl, run_tests, stopcal_infer, write_fits, TMP  # noqa: E402

A = None
S = 56
TOL = 1e-5


def reexec_in_venv(venv):
    """Import tritonclient here, or run this script again with the venv's python (.venv-deploy, made
    by tests/install_deps.sh); where it is not installed, say so and exit 77 (ctest's skip)."""
    try:
        import tritonclient.grpc  # noqa: F401 - only whether it imports
        return
    except ImportError as e:
        why = str(e)
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and not os.environ.get("STOPCAL_TRITON_REEXEC"):
        os.environ["STOPCAL_TRITON_REEXEC"] = "1"
        os.execv(py, [py] + sys.argv)
    print("SKIP: tritonclient is not installed (%s); bash tests/install_deps.sh puts it in %s" % (why, venv))
    sys.exit(77)


def gauss_pixels(seed, n):
    rng = random.Random(seed)
    return [rng.gauss(0, 1) for _ in range(n)]


def write_pixels(name, values):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(struct.pack("<%df" % len(values), *values))
    return path


def grpc_server(models, *extra, by_env=False):
    """stopcald with the gRPC service on an ephemeral port (--grpc-port 0, or its twin STOPCAL_GRPC_PORT)."""
    srv = Server(A.stopcald, models, *(() if by_env else ("--grpc-port", "0")), *extra,
                 env={"STOPCAL_GRPC_PORT": "0"} if by_env else None)
    for line in srv.log_text().splitlines():
        if '"msg":"listening"' in line:
            srv.grpc_port = json.loads(line)["grpc_port"]
    check(srv.grpc_port > 0, "no gRPC port in the listening line")
    return srv


def client_for(srv):
    import tritonclient.grpc as grpcclient
    return grpcclient.InferenceServerClient("127.0.0.1:%d" % srv.grpc_port)


def fits_input(paths, name="image"):
    import numpy as np
    import tritonclient.grpc as grpcclient
    data = np.array([[open(p, "rb").read()] for p in paths], dtype=np.object_)
    t = grpcclient.InferInput(name, list(data.shape), "BYTES")
    t.set_data_from_numpy(data)
    return t


def pixels_input(values, n, dtype="FP32", shape=None):
    import numpy as np
    import tritonclient.grpc as grpcclient
    arr = np.array(values, dtype=np.float32).reshape(shape or [n, 3, S, S])
    t = grpcclient.InferInput("pixels", list(arr.shape), dtype)
    t.set_data_from_numpy(arr)
    return t


def expect_status(fn, code, fragment):
    from tritonclient.utils import InferenceServerException
    try:
        fn()
    except InferenceServerException as e:
        check(e.status() == "StatusCode." + code, "expected %s, got %s: %s" % (code, e.status(), e.message()))
        check(fragment.lower() in (e.message() or "").lower(), "%r does not mention %r" % (e.message(), fragment))
        return e
    raise AssertionError("no error (expected %s %s)" % (code, fragment))


def scores(result):
    return [float(x) for x in result.as_numpy("continue_score").reshape(-1)]


# ---- rpcs ------------------------------------------------------------------------------------------

def rpc_tests():
    srv = grpc_server(["a=" + A.model_a, "b=" + A.model_b], "--alias", "short=a")
    c = client_for(srv)
    images = [write_fits("g%d.fits" % i, 500 + i) for i in range(3)]
    want = stopcal_infer(A.infer, A.model_a, images)
    pix = [gauss_pixels(60 + i, 3 * S * S) for i in range(2)]
    want_pix = stopcal_infer(A.infer, A.model_a, ["--pixels"] + [write_pixels("g%d.f32" % i, p)
                                                                  for i, p in enumerate(pix)])

    def test_health_and_metadata_rpcs():
        check(c.is_server_live() and c.is_server_ready(), "not live/ready")
        check(c.is_model_ready("a") and c.is_model_ready("b_pixels", "1"), "models not ready")
        md = c.get_server_metadata(as_json=True)
        check(md["name"] == "stopcald" and "statistics" in md["extensions"], md)
        md = c.get_model_metadata("a", as_json=True)
        check(md["name"] == "a" and md["versions"] == ["1"] and md["platform"] == "stopcal", md)
        check([(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in md["inputs"]] ==
              [("image", "BYTES", [-1, 1])], md)
        check([o["name"] for o in md["outputs"]] == ["continue_score", "logit"], md)
        md = c.get_model_metadata("a_pixels", as_json=True)
        check([(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in md["inputs"]] ==
              [("pixels", "FP32", [-1, 3, S, S])], md)

    def test_config_statistics_and_index_rpcs():
        cfg = c.get_model_config("a", as_json=True)["config"]
        check(cfg["name"] == "a" and cfg["platform"] == "stopcal" and cfg["max_batch_size"] == 16, cfg)
        check(cfg["input"][0]["data_type"] == "TYPE_STRING" and [int(d) for d in cfg["input"][0]["dims"]] == [1], cfg)
        check(cfg["dynamic_batching"]["preferred_batch_size"] == [8], cfg)
        idx = c.get_model_repository_index(as_json=True)["models"]
        check(sorted((m["name"], m["version"], m["state"]) for m in idx) ==
              [(n, "1", "READY") for n in ["a", "a_pixels", "b", "b_pixels", "short", "short_pixels"]], idx)
        before = c.get_inference_statistics("a", as_json=True)["model_stats"][0]
        c.infer("a", [fits_input(images[:2])])
        after = c.get_inference_statistics("a", "1", as_json=True)["model_stats"][0]
        got = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
        check(got == 2, "2 images inferred, statistics say %d" % got)
        check(int(after["inference_stats"]["success"]["count"]) == int(before["inference_stats"]
                                                                        .get("success", {}).get("count", 0)) + 1, after)
        every = {m["name"] for m in c.get_inference_statistics(as_json=True)["model_stats"]}
        check(every == {"a", "a_pixels", "b", "b_pixels"}, every)

    def test_infer_fits_bytes_matches_stopcal_infer():
        import tritonclient.grpc as grpcclient
        outs = [grpcclient.InferRequestedOutput("continue_score"), grpcclient.InferRequestedOutput("logit")]
        r = c.infer("a", [fits_input(images)], outputs=outs, request_id="req-7", headers={"x-request-id": "trace-9"})
        doc = r.get_response(as_json=True)
        check(doc["model_name"] == "a" and doc["model_version"] == "1" and doc["id"] == "req-7", doc)
        check(doc["parameters"]["request_id"]["string_param"] == "trace-9", doc)
        got = scores(r)
        logits = [float(x) for x in r.as_numpy("logit").reshape(-1)]
        check(r.as_numpy("continue_score").shape == (3, 1), r.as_numpy("continue_score").shape)
        for i, p in enumerate(images):
            w = want[os.path.basename(p)]
            check(abs(got[i] - w["continue_score"]) <= TOL and abs(logits[i] - w["logit"]) <= 1e-4,
                  "%s: %r %r vs stopcal-infer %r" % (p, got[i], logits[i], w))
        check('"request_id":"trace-9"' in srv.log_text() and '"protocol":"grpc"' in srv.log_text(), "no log line")
        # only what was asked for, and a threshold of our own
        r = c.infer("a", [fits_input(images[:1])], outputs=[grpcclient.InferRequestedOutput("logit")])
        check(r.as_numpy("continue_score") is None and r.as_numpy("logit") is not None, r.get_response())
        # tritonclient 2.40 sends no double parameters: the threshold goes through the generated stub
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
        ch = grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port)
        req = service_pb2.ModelInferRequest(model_name="a")
        req.parameters["threshold"].double_param = 0.25
        t = req.inputs.add(name="image", datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(open(images[0], "rb").read())  # typed contents, not raw
        resp = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
        ch.close()
        check(resp.parameters["threshold"].double_param == 0.25 and len(resp.raw_output_contents) == 2, resp)
        # the precision the scores were computed in, as the native result objects and REST say it
        check(resp.parameters["precision"].string_param == "fp32", resp.parameters)
        got = struct.unpack("<f", resp.raw_output_contents[0])[0]
        check(abs(got - want[os.path.basename(images[0])]["continue_score"]) <= TOL, got)

    def test_infer_fp32_pixels_on_both_views():
        for view in ["a_pixels", "a"]:
            r = c.infer(view, [pixels_input(pix[0] + pix[1], 2)])
            for i, s in enumerate(scores(r)):
                w = want_pix["g%d.f32" % i]["continue_score"]
                check(abs(s - w) <= TOL, "%s pixels[%d]: %r vs stopcal-infer %r" % (view, i, s, w))
        one = pix[0][:S * S]
        r = c.infer("a_pixels", [pixels_input(one, 1, shape=[1, 1, S, S])])
        ref = stopcal_infer(A.infer, A.model_a, ["--pixels", write_pixels("g1ch.f32", one * 3)])["g1ch.f32"]
        check(abs(scores(r)[0] - ref["continue_score"]) <= TOL, (scores(r), ref))

    def test_aliases_answer_with_the_canonical_view_as_rest_does():
        check(c.get_model_metadata("short_pixels", as_json=True)["name"] == "a_pixels", "metadata")
        check(c.get_model_config("short_pixels", "1", as_json=True)["config"]["name"] == "a_pixels", "config")
        check(c.get_inference_statistics("short", as_json=True)["model_stats"][0]["name"] == "a", "stats")
        r = c.infer("short", [fits_input(images[:1])])
        check(r.get_response(as_json=True)["model_name"] == "a", r.get_response(as_json=True))
        check(abs(scores(r)[0] - want[os.path.basename(images[0])]["continue_score"]) <= TOL, scores(r))
        r = c.infer("short_pixels", [pixels_input(pix[0], 1)])
        check(r.get_response(as_json=True)["model_name"] == "a_pixels", r.get_response(as_json=True))
        # the same over REST
        doc = curl(srv.url("/v2/models/short_pixels")).json()
        check(doc["name"] == "a_pixels" and [i["name"] for i in doc["inputs"]] == ["pixels"], doc)

    def test_metrics_count_grpc_calls():
        text = curl(srv.url("/metrics")).body.decode()
        ok = [ln for ln in text.splitlines() if ln.startswith('stopcal_grpc_requests_total{method="ModelInfer",code="OK"}')]
        check(ok and float(ok[0].rsplit(" ", 1)[1]) >= 5, "ModelInfer OK count missing:\n" + text[-1500:])
        check('stopcal_grpc_requests_total{method="ModelMetadata",code="OK"}' in text, "ModelMetadata not counted")
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            check(p.returncode == 0, p.stdout.decode())
        else:
            print("  promtool not installed: the exposition format is not checked here")

    rc = run_tests([test_health_and_metadata_rpcs, test_config_statistics_and_index_rpcs,
                    test_infer_fits_bytes_matches_stopcal_infer, test_infer_fp32_pixels_on_both_views,
                    test_aliases_answer_with_the_canonical_view_as_rest_does, test_metrics_count_grpc_calls], 240)
    c.close()
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- errors ----------------------------------------------------------------------------------------

def error_tests():
    import numpy as np
    import tritonclient.grpc as grpcclient
    key = os.path.join(TMP, "grpc.key")
    with open(key, "w") as f:
        f.write("s3cret-token\n")
    srv = grpc_server(["a=" + A.model_a], "--api-key-file", key, "--max-images", "4", "--max-body-bytes", "1M")
    c = client_for(srv)
    auth = {"authorization": "Bearer s3cret-token"}
    img = write_fits("ge.fits", 700)

    def infer(model, inputs, **kw):
        return lambda: c.infer(model, inputs, headers=auth, **kw)

    def test_bearer_token_in_metadata():
        check(c.is_server_live() and c.is_server_ready(), "health must stay open")
        expect_status(lambda: c.get_model_metadata("a"), "UNAUTHENTICATED", "bearer token")
        expect_status(lambda: c.infer("a", [fits_input([img])], headers={"authorization": "Bearer wrong"}),
                      "UNAUTHENTICATED", "bearer token")
        expect_status(lambda: c.get_inference_statistics(headers={"authorization": "s3cret-token"}),
                      "UNAUTHENTICATED", "bearer")
        check(c.get_model_metadata("a", headers=auth).name == "a", "the right token must pass")
        r = c.infer("a", [fits_input([img])], headers=auth)
        check(r.as_numpy("continue_score").shape == (1, 1), r.get_response())

    def test_errors_name_the_field_with_the_right_status():
        expect_status(infer("nope", [fits_input([img])]), "NOT_FOUND", "model_name: model 'nope'")
        expect_status(infer("a", [fits_input([img])], model_version="2"), "NOT_FOUND", "model_version")
        expect_status(lambda: c.get_model_metadata("a", "7", headers=auth), "NOT_FOUND", "version")
        expect_status(lambda: c.get_model_config("nope", headers=auth), "NOT_FOUND", "nope")
        expect_status(infer("a", [fits_input([img]), pixels_input([0.0] * (3 * S * S), 1)]), "INVALID_ARGUMENT",
                      "inputs: 2 given")
        expect_status(infer("a_pixels", [fits_input([img])]), "INVALID_ARGUMENT", "inputs[0].name")
        expect_status(infer("a", [fits_input([img], name="photo")]), "INVALID_ARGUMENT", "inputs[0].name")
        expect_status(infer("a", [pixels_input([0.5] * (3 * 8 * 8), 1, shape=[1, 3, 8, 8])]), "INVALID_ARGUMENT",
                      "inputs[0].shape")
        t = grpcclient.InferInput("image", [1], "FP32")
        t.set_data_from_numpy(np.zeros([1], np.float32))
        expect_status(infer("a", [t]), "INVALID_ARGUMENT", "inputs[0].datatype")
        bad = [0.0] * (3 * S * S)
        bad[5] = float("nan")
        expect_status(infer("a_pixels", [pixels_input(bad, 1)]), "INVALID_ARGUMENT", "non-finite")
        expect_status(infer("a", [fits_input([img])], outputs=[grpcclient.InferRequestedOutput("mask")]),
                      "INVALID_ARGUMENT", "outputs[0].name")
        expect_status(infer("a", [fits_input([img])], parameters={"threshold": 3}), "INVALID_ARGUMENT",
                      "parameters.threshold")
        t = grpcclient.InferInput("image", [1], "BYTES")
        t.set_data_from_numpy(np.array([b"this is not FITS"], dtype=np.object_))
        expect_status(infer("a", [t]), "INVALID_ARGUMENT", "image[0]")
        expect_status(infer("a", [fits_input([img] * 5)]), "RESOURCE_EXHAUSTED", "--max-images")
        big = os.path.join(TMP, "big.fits")
        with open(big, "wb") as f:
            f.write(open(write_fits("big0.fits", 701, 600, 600), "rb").read())
        expect_status(infer("a", [fits_input([big])]), "RESOURCE_EXHAUSTED", "")
        # the server took all of that and still answers
        check(c.infer("a", [fits_input([img])], headers=auth).as_numpy("logit") is not None, "server gone")

    def test_unknown_method_is_unimplemented():
        import grpc
        ch = grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port)
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelStreamInferX")
        try:
            call(b"", timeout=10, metadata=[("authorization", "Bearer s3cret-token")])
            raise AssertionError("no error")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNIMPLEMENTED, e)
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        try:
            call(b"\xff\xff\xff", timeout=10, metadata=[("authorization", "Bearer s3cret-token")])
            raise AssertionError("no error")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "ModelInferRequest" in e.details(), e)
        ch.close()

    rc = run_tests([test_bearer_token_in_metadata, test_errors_name_the_field_with_the_right_status,
                    test_unknown_method_is_unimplemented], 240)
    c.close()
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- concurrency -----------------------------------------------------------------------------------

def concurrency_tests():
    srv = grpc_server(["a=" + A.model_a], "--max-batch", "8", "--debug-infer-delay-ms", "50", by_env=True)
    images = [write_fits("gc%02d.fits" % i, 1200 + i) for i in range(16)]
    want = stopcal_infer(A.infer, A.model_a, images)

    def test_16_concurrent_grpc_clients_each_get_their_own_score():
        check(len({round(w["continue_score"], 6) for w in want.values()}) == 16, "images must score differently")
        results, errors, barrier = {}, {}, threading.Barrier(16)

        def client(i):
            c = client_for(srv)
            try:
                barrier.wait(10)
                results[i] = c.infer("a", [fits_input([images[i]])], headers={"x-request-id": "grpc-%d" % i})
            except Exception as e:  # noqa: BLE001 - reported below
                errors[i] = e
            finally:
                c.close()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        check(not errors, errors)
        worst = 0.0
        for i in range(16):
            r = results[i]
            check(r.get_response(as_json=True)["parameters"]["request_id"]["string_param"] == "grpc-%d" % i, i)
            got, w = scores(r)[0], want["gc%02d.fits" % i]["continue_score"]
            worst = max(worst, abs(got - w))
            check(abs(got - w) <= TOL, "client %d got %.9f, stopcal-infer says %.9f" % (i, got, w))
        metrics = curl(srv.url("/metrics")).body.decode()
        batches = srv.metric(metrics, "stopcal_batch_size_count")
        imgs = srv.metric(metrics, "stopcal_batch_size_sum")
        print("  16 gRPC clients: max |d continue_score| vs stopcal-infer %.3g; %d images in %d forward passes"
              % (worst, imgs, batches))
        check(batches < imgs, "no batching happened: %d passes for %d images" % (batches, imgs))

    rc = run_tests([test_16_concurrent_grpc_clients_each_get_their_own_score], 200)
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


# ---- drain -----------------------------------------------------------------------------------------

def drain_tests():
    img = write_fits("gd.fits", 800)

    def test_grpc_drains_on_sigterm():
        srv = grpc_server(["a=" + A.model_a], "--max-batch", "2", "--debug-infer-delay-ms", "400",
                          "--drain-grace-ms", "1500")
        results = {}

        def client(i):
            c = client_for(srv)
            try:
                results[i] = scores(c.infer("a", [fits_input([img])], client_timeout=60))[0]
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = e
            finally:
                c.close()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # in flight: 6 images at 2 per 400 ms pass
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        c = client_for(srv)
        check(not c.is_server_ready() and c.is_server_live(), "draining: live but not ready")
        check(not c.is_model_ready("a"), "draining: model not ready")
        c.close()
        for t in threads:
            t.join(60)
        bad = {i: r for i, r in results.items() if not isinstance(r, float)}
        check(len(results) == 6 and not bad, "in-flight calls must finish: %r" % results)
        want = stopcal_infer(A.infer, A.model_a, [img])["gd.fits"]["continue_score"]
        check(all(abs(r - want) <= TOL for r in results.values()), (results, want))
        rc = srv.stop()
        check(rc == 0, "exit status %d after SIGTERM" % rc)
        log = srv.log_text()
        check("draining" in log and '"msg":"stopped"' in log, log[-1500:])

    def test_grpc_after_quiesce_is_refused():
        srv = grpc_server(["a=" + A.model_a], "--drain-grace-ms", "200", "--debug-infer-delay-ms", "1500")
        c = client_for(srv)
        done = {}
        t = threading.Thread(target=lambda: done.update(r=c.infer("a", [fits_input([img])], client_timeout=60)))
        t.start()
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.6)  # past the grace period: no new calls
        import tritonclient.grpc as grpcclient
        late = grpcclient.InferenceServerClient("127.0.0.1:%d" % srv.grpc_port)
        from tritonclient.utils import InferenceServerException
        try:
            late.is_server_live()
            refused = False
        except InferenceServerException:
            refused = True
        check(refused, "a new call after the grace period must be refused")
        t.join(60)
        check("r" in done and scores(done["r"]), "the call in flight must finish: %r" % done)
        late.close()
        c.close()
        check(srv.stop() == 0, "exit status after SIGTERM")

    return run_tests([test_grpc_drains_on_sigterm, test_grpc_after_quiesce_is_refused], 200)


# ---- proto -----------------------------------------------------------------------------------------

def proto_tests():
    here = os.path.dirname(os.path.abspath(__file__))
    proto_dir = os.path.join(here, "..", "..", "server", "grpc", "proto")

    def test_schema_is_the_wheels():
        from google.protobuf import descriptor_pb2 as dp
        import tritonclient.grpc.model_config_pb2 as mc
        import tritonclient.grpc.service_pb2 as sv
        protoc = shutil.which("protoc-c")
        check(protoc, "protoc-c missing")
        out = os.path.join(TMP, "set.pb")
        subprocess.run([protoc, "-I" + proto_dir, "-o" + out, "--include_imports", "grpc_service.proto"], check=True)
        fs = dp.FileDescriptorSet()
        fs.ParseFromString(open(out, "rb").read())

        def strip(fd):
            def walk(msgs):
                for m in msgs:
                    for f in m.field:
                        f.ClearField("json_name")
                    walk(m.nested_type)
            walk(fd.message_type)
            fd.ClearField("source_code_info")
            return fd
        for mod in (sv, mc):
            want = dp.FileDescriptorProto()
            want.ParseFromString(mod.DESCRIPTOR.serialized_pb)
            (got,) = [f for f in fs.file if f.name == want.name]
            check(strip(got) == strip(want), "%s differs from the wheel's descriptor" % want.name)
        check(os.path.exists(os.path.join(proto_dir, "LICENSE")), "the schema's licence is missing")

    return run_tests([test_schema_is_the_wheels], 60)


# ---- perf_analyzer ---------------------------------------------------------------------------------

def perf_analyzer():
    """(binary, environment) or exit 77 saying why not."""
    pa = os.path.join(A.venv, "bin", "perf_analyzer")
    if not os.access(pa, os.X_OK):
        print("SKIP: perf_analyzer is not installed (it comes with the tritonclient wheel in %s)" % A.venv)
        sys.exit(77)
    env = dict(os.environ)
    libs = glob.glob(os.path.join(A.venv, "lib", "python3*", "site-packages", "nvidia", "cuda_runtime", "lib"))
    if libs:
        env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")])
    p = subprocess.run([pa, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=30)
    out = p.stdout.decode("utf-8", "replace")
    if "error while loading shared libraries" in out:
        print("SKIP: perf_analyzer cannot start: %s (needs Debian libb64-0d and PyPI nvidia-cuda-runtime-cu12)"
              % out.strip().splitlines()[-1])
        sys.exit(77)
    return pa, env


def perf_data_files():
    """perf_analyzer --input-data files: one real FITS file (BYTES elements carry their 4-byte length
    prefix, as on the wire) and one image of preprocessed pixels."""
    fits = open(write_fits("perf.fits", 901), "rb").read()
    fits_json = os.path.join(TMP, "perf_fits.json")
    with open(fits_json, "w") as f:
        json.dump({"data": [{"image": {"b64": base64.b64encode(struct.pack("<I", len(fits)) + fits).decode()}}]}, f)
    px_json = os.path.join(TMP, "perf_pixels.json")
    with open(px_json, "w") as f:
        json.dump({"data": [{"pixels": {"content": gauss_pixels(902, 3 * S * S), "shape": [3, S, S]}}]}, f)
    return fits_json, px_json


def run_perf(pa, env, url, protocol, model, data, concurrency=2):
    cmd = [pa, "-u", url, "-i", protocol, "-m", model, "--input-data", data, "--concurrency-range", str(concurrency),
           "--measurement-interval", "1000", "--max-trials", "10", "--stability-percentage", "999"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120)
    out = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 0, "perf_analyzer %s %s failed (%d):\n%s" % (protocol, model, p.returncode, out[-3000:]))
    m = re.search(r"Throughput: ([0-9.]+) infer/sec", out)
    check(m and float(m.group(1)) > 0, "no throughput in:\n" + out[-2000:])
    check("Server:" in out and "Inference count" in out, "no server-side statistics in:\n" + out[-2000:])
    return float(m.group(1)), out


def perf_tests():
    pa, env = perf_analyzer()
    fits_json, px_json = perf_data_files()
    srv = grpc_server(["a=" + A.model_a])
    c = client_for(srv)

    def test_perf_analyzer_runs_unmodified_over_grpc():
        for model, data in [("a", fits_json), ("a_pixels", px_json)]:
            before = int(c.get_inference_statistics(model, as_json=True)["model_stats"][0].get("inference_count", 0))
            rate, _ = run_perf(pa, env, "127.0.0.1:%d" % srv.grpc_port, "grpc", model, data)
            after = int(c.get_inference_statistics(model, as_json=True)["model_stats"][0].get("inference_count", 0))
            print("  perf_analyzer grpc %s: %.0f infer/s, %d images served" % (model, rate, after - before))
            check(after - before >= 10, "the server counted %d inferences" % (after - before))

    rc = run_tests([test_perf_analyzer_runs_unmodified_over_grpc], 280)
    c.close()
    if srv.stop() != 0:
        print("FAIL server exit status")
        rc = 1
    return rc


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=["rpcs", "errors", "concurrency", "drain", "proto", "perf"])
    ap.add_argument("--stopcald", required=True)
    ap.add_argument("--infer", required=True)
    ap.add_argument("--model-a", required=True)
    ap.add_argument("--model-b", required=True)
    ap.add_argument("--venv", required=True)
    A = ap.parse_args()
    reexec_in_venv(A.venv)
    sys.exit({"rpcs": rpc_tests, "errors": error_tests, "concurrency": concurrency_tests, "drain": drain_tests,
              "proto": proto_tests, "perf": perf_tests}[A.group]())


if __name__ == "__main__":
    main()
