#!/usr/bin/env python3
"""stopcal as a drop-in for facetselfcal's cortExchange model (issue 17), against the real stopcald on
an ephemeral loopback port, compared with stopcal-infer on the same files.

usage: test_dropin.py GROUP --stopcald BIN --infer BIN --stopcal BIN --model FILE --python-dir DIR
GROUP: aliases  model names with '/' and --alias over /v1 and /v2, the 404 naming the known models
       shim     the pipeline's cortExchange call sequence (pipeline_sequence.py) through the stand-in
       package  pip install ./client/python into a fresh venv; its `stopcal` beside the C one
       readme   README's "Using stopcal from facetselfcal" commands on a checkpoint in the training
                code's layout, scored against the PyTorch reference"""
import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
from serverlib import Server, TMP, check, curl, run_tests, stopcal_infer, write_fits  # noqa: E402

A = None
TOL = 1e-6
PIPELINE_NAME = "surf/dino_big_lora_tune_posclsreg_may_O2_aug_099"
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import pipeline_sequence  # noqa: E402


def sigmoid_of_fp32(logit):
    """The score the server computes (server/result_json.c), written again here: fp32 logit, double
    sigmoid without overflow."""
    x = struct.unpack("<f", struct.pack("<f", logit))[0]
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOPCAL_", "PYTHON"))}
    env.update(extra)
    return env


def dead_url():
    """A loopback URL where nothing listens (a port bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d" % port


def run_pipeline(cache, images, env, cwd):
    """pipeline_sequence.py in a fresh interpreter; its JSON line."""
    p = subprocess.run([sys.executable, os.path.join(HERE, "pipeline_sequence.py"), cache] + images, cwd=cwd,
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    check(p.returncode == 0, p.stderr.decode())
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def post_v2_image(srv, path_model, blobs):
    """POST /v2/models/{path_model}/infer with the FITS files as BYTES through the binary extension."""
    data = b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(blobs)],
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    body = os.path.join(TMP, "v2-%d.bin" % len(blobs))
    with open(body, "wb") as f:
        f.write(header + data)
    return curl(srv.url("/v2/models/%s/infer" % path_model), "-H", "Content-Type: application/octet-stream",
                "-H", "Inference-Header-Content-Length: %d" % len(header), "--data-binary", "@" + body)


def start_fails(*args, env=None):
    """stopcald must refuse to start; returns its stderr."""
    full = dict(os.environ)
    full.update(env or {})
    p = subprocess.run([A.stopcald, "--host", "127.0.0.1", "--port", "0"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=full, timeout=120)
    err = p.stderr.decode()
    check(p.returncode != 0, "stopcald started with %s" % (args,))
    check("Sanitizer" not in err, err)
    return err


# ---- aliases and names with '/' ----------------------------------------------------------------------

def alias_tests():
    srv = Server(A.stopcald, ["tiny=" + A.model, "surf/other=" + A.model], "--alias", PIPELINE_NAME + "=tiny",
                 "--alias", "short=tiny")
    images = [write_fits("al%d.fits" % i, 500 + i) for i in range(2)]
    want = stopcal_infer(A.infer, A.model, images)

    def test_v1_models_lists_the_aliases():
        r = curl(srv.url("/v1/models"))
        check(r.status == 200, r)
        by_name = {m["name"]: m for m in r.json()["models"]}
        check(set(by_name) == {"tiny", "surf/other"}, by_name.keys())
        check(by_name["tiny"]["aliases"] == [PIPELINE_NAME, "short"], by_name["tiny"])
        check(by_name["surf/other"]["aliases"] == [] and r.json()["default"] == "tiny", r.json())

    def test_v1_predict_by_alias_encoded_or_not():
        for query in (PIPELINE_NAME, PIPELINE_NAME.replace("/", "%2F"), "surf/other", "surf%2Fother"):
            r = curl(srv.url("/v1/predict?model=" + query), "-F", "f=@%s" % images[0],
                     "-F", "g=@%s" % images[1])
            check(r.status == 200, (query, r))
            doc = r.json()
            check(doc["model"]["name"] == ("tiny" if "dino" in query else "surf/other"), doc["model"])
            for res in doc["results"]:
                check(abs(res["continue_score"] - want[res["name"]]["continue_score"]) <= TOL, (res, want))

    def test_v2_paths_with_slashes_encoded_or_not():
        blobs = [open(p, "rb").read() for p in images]
        for path_model, served in ((PIPELINE_NAME.replace("/", "%2F"), "tiny"), (PIPELINE_NAME, "tiny"),
                                   ("surf%2Fother", "surf/other"), ("surf/other", "surf/other"), ("short", "tiny")):
            r = post_v2_image(srv, path_model, blobs)
            check(r.status == 200, (path_model, r))
            doc = r.json()
            check(doc["model_name"] == served, doc)
            scores = doc["outputs"][0]["data"]
            for i, p in enumerate(images):
                check(abs(scores[i] - want[os.path.basename(p)]["continue_score"]) <= TOL, (scores, want))
            for suffix, key in (("", "platform"), ("/ready", "ready"), ("/versions/1", "platform"),
                                ("/versions/1/ready", "ready")):
                r = curl(srv.url("/v2/models/%s%s" % (path_model, suffix)))
                check(r.status == 200 and r.json()["name"] == served and key in r.json(), (path_model, suffix, r))

    def test_the_c_client_preprocessing_locally_by_alias():
        p = subprocess.run([A.stopcal, "--url", srv.base, "--model", PIPELINE_NAME, "--local-preprocess", "predict",
                            "--json"] + images, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        check(p.returncode == 0, p.stderr.decode())
        doc = json.loads(p.stdout)
        check(doc["model"]["name"] == "tiny", doc)
        for res in doc["results"]:
            check(abs(res["continue_score"] - want[res["name"]]["continue_score"]) <= TOL, (res, want))

    def test_unknown_names_are_404_listing_the_known_ones():
        for r in (curl(srv.url("/v1/predict?model=surf%2Fnope"), "-F", "f=@%s" % images[0]),
                  post_v2_image(srv, "surf%2Fnope", [open(images[0], "rb").read()]),
                  curl(srv.url("/v2/models/surf/nope/ready")), curl(srv.url("/v2/models/surf%2Fnope"))):
            check(r.status == 404 and r.headers.get("content-type", "").startswith("application/json"), r)
            err = r.json()["error"]
            for name in ("surf/nope", "tiny", "surf/other", PIPELINE_NAME, "short"):
                check(name in err, err)
        # A path that is no model route at all stays "no such endpoint".
        r = curl(srv.url("/v2/models/"))
        check(r.status == 404 and "no such endpoint" in r.json()["error"], r)

    def test_env_twin_and_command_line_precedence():
        env_srv = Server(A.stopcald, ["tiny=" + A.model], env={"STOPCAL_ALIAS": "a/b=tiny,c/d=tiny"})
        try:
            r = curl(env_srv.url("/v1/models"))
            check(r.json()["models"][0]["aliases"] == ["a/b", "c/d"], r.json())
        finally:
            check(env_srv.stop() == 0, "stopcald exit status")
        cli_srv = Server(A.stopcald, ["tiny=" + A.model], "--alias", "e/f=tiny", env={"STOPCAL_ALIAS": "a/b=tiny"})
        try:
            r = curl(cli_srv.url("/v1/models"))
            check(r.json()["models"][0]["aliases"] == ["e/f"], r.json())
            check(curl(cli_srv.url("/v2/models/a%2Fb/ready")).status == 404, "the environment's alias survived")
        finally:
            check(cli_srv.stop() == 0, "stopcald exit status")

    def test_bad_aliases_stop_the_server_with_a_reason():
        m = ["--model", "tiny=" + A.model]
        err = start_fails(*m, "--alias", "x/y=missing")
        check("missing" in err and "tiny" in err, err)
        err = start_fails(*m, "--model", "two=" + A.model, "--alias", "tiny=two")
        check("already names the model 'tiny'" in err, err)
        err = start_fails(*m, "--alias", "x=tiny", "--alias", "x=tiny2", "--model", "tiny2=" + A.model)
        check("'x' already names the model 'tiny'" in err, err)
        for bad in ("a//b", "/a", "a/", "a/infer", "a/versions/b", "a/../b", "a b", "=tiny", "noequals"):
            err = start_fails(*m, "--alias", bad if "=" in bad or bad == "noequals" else bad + "=tiny")
            check("--alias" in err, (bad, err))
        err = start_fails("--model", "a/ready=" + A.model)
        check("--model" in err and "ready" in err, err)

    def test_aliases_recorded_in_model_files():
        files = {}
        for name, aliases in (("f1", "surf/from_file,f1/short"), ("f2", "surf/from_file")):
            files[name] = os.path.join(TMP, "%s.safetensors" % name)
            p = subprocess.run([sys.executable, os.path.join(HERE, "make_constant_model.py"), ROOT, files[name],
                                "1.5" if name == "f1" else "-1.5", name, aliases], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=120)
            check(p.returncode == 0, p.stderr.decode())
        s = Server(A.stopcald, [files["f1"]])
        try:
            r = curl(s.url("/v1/models"))
            check(r.json()["models"][0]["aliases"] == ["surf/from_file", "f1/short"], r.json())
            r = post_v2_image(s, "surf%2Ffrom_file", [open(images[0], "rb").read()])
            check(r.status == 200 and r.json()["model_name"] == "f1", r)
            check(abs(r.json()["outputs"][1]["data"][0] - 1.5) <= 1e-6, r.json())
        finally:
            check(s.stop() == 0, "stopcald exit status")
        # Two files claiming one alias: refused, until the command line decides.
        err = start_fails("--model", files["f1"], "--model", files["f2"])
        check("surf/from_file" in err and "--alias" in err and files["f2"] in err, err)
        s = Server(A.stopcald, [files["f1"], files["f2"]], "--alias", "surf/from_file=f2")
        try:
            r = curl(s.url("/v1/predict?model=surf/from_file"), "-F", "f=@" + images[0])
            check(r.status == 200 and r.json()["model"]["name"] == "f2", r)
            check(abs(r.json()["results"][0]["logit"] + 1.5) <= 1e-6, r.json())
            check("overridden by --alias" in s.log_text(), s.log_text()[-2000:])
        finally:
            check(s.stop() == 0, "stopcald exit status")

    def test_stops_cleanly():
        check(srv.stop() == 0, "stopcald exit status")

    return [test_v1_models_lists_the_aliases, test_aliases_recorded_in_model_files, test_v1_predict_by_alias_encoded_or_not,
            test_v2_paths_with_slashes_encoded_or_not, test_the_c_client_preprocessing_locally_by_alias,
            test_unknown_names_are_404_listing_the_known_ones,
            test_env_twin_and_command_line_precedence, test_bad_aliases_stop_the_server_with_a_reason,
            test_stops_cleanly]


# ---- the shim: facetselfcal's call sequence -----------------------------------------------------------

def shim_tests():
    sys.path.insert(0, A.python_dir)
    import stopcal  # noqa: E402
    os.environ.pop("PYTHONPATH", None)
    for k in [k for k in os.environ if k.startswith("STOPCAL_")]:
        del os.environ[k]
    srv = Server(A.stopcald, ["tiny=" + A.model], "--alias", PIPELINE_NAME + "=tiny")
    work = os.path.join(TMP, "selfcal-run")
    os.makedirs(os.path.join(work, "fits_images"), exist_ok=True)
    images = []
    for i in range(6):  # one image per cycle, relative paths as the pipeline passes them
        rel = os.path.join("fits_images", "selfcal_%03d-MFS-image.fits" % i)
        shutil.copy(write_fits("cycle%d.fits" % i, 700 + i, 96, 80), os.path.join(work, rel))
        images.append(rel)
    want = stopcal_infer(A.infer, A.model, [os.path.join(work, p) for p in images])
    served = {}  # the server's own answers, for the bit-for-bit comparison
    for rel in images:
        r = curl(srv.url("/v1/predict"), "-F", "f=@" + os.path.join(work, rel))
        check(r.status == 200, r)
        served[rel] = r.json()["results"][0]
    shim_env = clean_env(PYTHONPATH=A.python_dir, STOPCAL_URL=srv.base)
    sys.path.insert(0, A.python_dir)  # the stand-in, for the tests that run in this process
    os.environ["STOPCAL_URL"] = srv.base
    cache = os.path.join(work, ".cache", "cortexchange")

    def test_the_pipeline_gets_stopcal_infer_scores():
        out = run_pipeline(cache, images, shim_env, work)
        check(out["model"] and out["why"] == "", out)
        check(out["module"].startswith(os.path.join(A.python_dir, "cortexchange")), out["module"])
        for rel, got in zip(images, out["scores"]):
            check(got == sigmoid_of_fp32(served[rel]["logit"]), (rel, got, served[rel]))  # bit for bit
            check(abs(got - served[rel]["continue_score"]) <= 5e-10, (rel, got, served[rel]))  # its 9 digits
            w = want[os.path.basename(rel)]
            check(abs(got - w["continue_score"]) <= TOL, (rel, got, w))  # stopcal-infer (other threads)
        check(not os.path.exists(os.path.join(work, ".cache")), "the stand-in wrote a cache")

    def test_predict_returns_a_one_element_mean_and_no_std():
        model = pipeline_sequence.build(cache)
        mean, std = model.predict(model.prepare_data(os.path.join(work, images[4])))
        check(std is None and len(mean) == 1 and mean.shape == (1,), (mean, std))
        check(float(mean) == float(mean[0]) == mean.item() == mean.tolist()[0], mean)
        check(model.device == "cpu" and model.served_model == "tiny", vars(model))
        try:
            model.prepare_data(os.path.join(work, "missing.fits"))
            check(False, "prepare_data accepted a missing file")
        except FileNotFoundError as e:
            check("missing.fits" in str(e), str(e))

    def test_failover_keys_and_retries_come_from_the_stopcal_client():
        env = clean_env(PYTHONPATH=A.python_dir, STOPCAL_URL=dead_url() + "," + srv.base)
        out = run_pipeline(cache, images[4:5], env, work)
        check(out["model"] and out["scores"][0] == sigmoid_of_fp32(served[images[4]]["logit"]), out)
        keyfile = os.path.join(TMP, "shim-token")
        with open(keyfile, "w") as f:
            f.write("shim-secret\n")
        authed = Server(A.stopcald, ["tiny=" + A.model], "--alias", PIPELINE_NAME + "=tiny", "--api-key-file",
                        keyfile)
        try:
            out = run_pipeline(cache, images[4:5], clean_env(PYTHONPATH=A.python_dir, STOPCAL_URL=authed.base,
                                                               STOPCAL_API_KEY_FILE=keyfile), work)
            check(out["model"], out)
            out = run_pipeline(cache, images[4:5], clean_env(PYTHONPATH=A.python_dir, STOPCAL_URL=authed.base),
                               work)
            check(not out["model"] and "401" in out["why"] and authed.base in out["why"], out)
            check(out["scores"] == [1.0], out)
        finally:
            check(authed.stop() == 0, "stopcald exit status")

    def test_server_down_at_construction_is_an_import_error():
        dead = dead_url()
        t0 = time.monotonic()
        out = run_pipeline(cache, images[4:6], clean_env(PYTHONPATH=A.python_dir, STOPCAL_URL=dead,
                                                         STOPCAL_RETRIES="1"), work)
        check(time.monotonic() - t0 < 30, "construction took %.1f s" % (time.monotonic() - t0))
        check(not out["model"] and out["why"].startswith("ImportError: "), out)
        check(dead in out["why"] and "after 2 attempts" in out["why"] and "refused" in out["why"].lower(), out)
        check(out["scores"] == [1.0, 1.0], out)  # the pipeline's own fallback took over

    def test_unknown_model_is_an_import_error_naming_the_known_ones():
        try:
            pipeline_sequence.build(cache, model_name="surf/some_other_model")
            check(False, "an unknown model was accepted")
        except ImportError as e:
            msg = str(e)
            check("surf/some_other_model" in msg and srv.base in msg, msg)
            check("tiny" in msg and PIPELINE_NAME in msg and "--alias" in msg, msg)

    def test_other_architectures_and_variational_dropout_are_refused():
        from cortexchange.architecture import get_architecture
        for name in ("surf/TransferLearning", "surf/StopPredictor", "other/Thing", "surf/../x"):
            try:
                get_architecture(name)
                check(False, "served %s" % name)
            except ImportError as e:
                check(isinstance(e, ValueError) and name in str(e) and "TransferLearningV2" in str(e), str(e))
        for bad in (None, "noslash"):
            try:
                get_architecture(bad)
                check(False, "accepted %r" % bad)
            except ValueError as e:
                check(not isinstance(e, ImportError), e)
        try:
            pipeline_sequence.build(cache, variational_dropout=4)
            check(False, "variational_dropout=4 accepted")
        except ValueError as e:
            check("variational_dropout" in str(e) and not isinstance(e, ImportError), str(e))

    def test_server_killed_mid_run_is_a_clear_error_from_predict():
        mortal = Server(A.stopcald, ["tiny=" + A.model], "--alias", PIPELINE_NAME + "=tiny")
        os.environ.update(STOPCAL_URL=mortal.base, STOPCAL_RETRIES="2")
        try:
            model = pipeline_sequence.build(cache)
            first = pipeline_sequence.score(model, os.path.join(work, images[4]))
            check(abs(first - want[os.path.basename(images[4])]["continue_score"]) <= TOL, first)
            mortal.proc.send_signal(signal.SIGKILL)
            mortal.proc.wait(timeout=10)
            t0 = time.monotonic()
            try:
                pipeline_sequence.score(model, os.path.join(work, images[5]))
                check(False, "a score came from a dead server")
            except stopcal.StopcalError as e:
                msg = str(e)
                check(e.status == 0 and e.kind == stopcal.UNREACHABLE, (e.status, e.kind))
                check(mortal.base in msg and images[5] in msg and "after 3 attempts" in msg, msg)
            check(time.monotonic() - t0 < 30, "predict took %.1f s to fail" % (time.monotonic() - t0))
        finally:
            os.environ["STOPCAL_URL"] = srv.base
            del os.environ["STOPCAL_RETRIES"]
            mortal.kill()
            mortal.log.close()

    def test_confident_answers_are_not_the_no_model_sentinel():
        hot = os.path.join(TMP, "hot25.safetensors")
        hotter = os.path.join(TMP, "hot40.safetensors")
        for path, logit in ((hot, 25), (hotter, 40)):
            p = subprocess.run([sys.executable, os.path.join(HERE, "make_constant_model.py"), ROOT, path, str(logit),
                                "hot%d" % logit], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            check(p.returncode == 0, p.stderr.decode())
        s = Server(A.stopcald, ["hot25=" + hot, "hot40=" + hotter], "--alias", PIPELINE_NAME + "=hot25")
        try:
            img = os.path.join(work, images[4])
            r = curl(s.url("/v1/predict"), "-F", "f=@" + img)
            check(r.status == 200 and r.json()["results"][0]["continue_score"] == 1.0, r)  # 9 digits: 1.0
            os.environ["STOPCAL_URL"] = s.base
            got = pipeline_sequence.score(pipeline_sequence.build(cache), img)
            check(got < 1.0 and got == 1.0 / (1.0 + math.exp(-25.0)), got)
            got = pipeline_sequence.score(pipeline_sequence.build(cache, model_name="hot40"), img)
            check(got == 1.0, got)  # only past a logit of about 37 is the double itself 1.0
        finally:
            os.environ["STOPCAL_URL"] = srv.base
            check(s.stop() == 0, "stopcald exit status")

    def test_the_stand_in_never_shadows_a_real_cortexchange():
        real = os.path.join(TMP, "real-site")
        os.makedirs(os.path.join(real, "cortexchange"), exist_ok=True)
        with open(os.path.join(real, "cortexchange", "__init__.py"), "w") as f:
            f.write("REAL = True\n")
        probe = "import cortexchange; print(cortexchange.__file__)"
        for path, expect in ((real + os.pathsep + A.python_dir, real), (A.python_dir + os.pathsep + real, A.python_dir)):
            p = subprocess.run([sys.executable, "-c", probe], env=clean_env(PYTHONPATH=path), stdout=subprocess.PIPE,
                               timeout=60)
            check(p.stdout.decode().startswith(os.path.join(expect, "cortexchange")), (path, p.stdout))
        p = subprocess.run([sys.executable, "-c", probe], env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        check(p.returncode != 0 and b"No module named 'cortexchange'" in p.stderr, p.stderr)

    def test_stops_cleanly():
        check(srv.stop() == 0, "stopcald exit status")

    return [test_the_pipeline_gets_stopcal_infer_scores, test_predict_returns_a_one_element_mean_and_no_std,
            test_failover_keys_and_retries_come_from_the_stopcal_client,
            test_server_down_at_construction_is_an_import_error,
            test_unknown_model_is_an_import_error_naming_the_known_ones,
            test_other_architectures_and_variational_dropout_are_refused,
            test_server_killed_mid_run_is_a_clear_error_from_predict,
            test_confident_answers_are_not_the_no_model_sentinel, test_the_stand_in_never_shadows_a_real_cortexchange,
            test_stops_cleanly]


# ---- the package: pip install, and its `stopcal` beside the C one ------------------------------------

def normalise(text):
    """Request ids differ from one request to the next; nothing else may."""
    text = re.sub(r'"request_id":"[^"]*"', '"request_id":"…"', text)
    return re.sub(r"request [0-9a-f]+,", "request …,", text)


def package_tests():
    venv = os.path.join(TMP, "venv")
    src = os.path.join(TMP, "src-python")
    shutil.copytree(A.python_dir, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    # Debian's setuptools and wheel (python3-setuptools, python3-wheel) build it: no network.
    p = subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300)
    check(p.returncode == 0, p.stdout.decode())
    p = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation", "--no-index",
                        "--no-deps", "--disable-pip-version-check", src], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300, env=clean_env())
    check(p.returncode == 0, p.stdout.decode()[-3000:])
    console = os.path.join(venv, "bin", "stopcal")
    py = os.path.join(venv, "bin", "python")
    srv = Server(A.stopcald, ["tiny=" + A.model], "--alias", PIPELINE_NAME + "=tiny")
    keyfile = os.path.join(TMP, "pkg-token")
    with open(keyfile, "w") as f:
        f.write("pkg-secret\n")
    wrong = os.path.join(TMP, "pkg-wrong")
    with open(wrong, "w") as f:
        f.write("nope\n")
    authed = Server(A.stopcald, ["tiny=" + A.model], "--api-key-file", keyfile)
    images = [write_fits("pkg%d.fits" % i, 900 + i) for i in range(3)]
    elsewhere = os.path.join(TMP, "elsewhere")
    os.makedirs(elsewhere, exist_ok=True)

    def run(binary, args, env=None):
        p = subprocess.run([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=elsewhere,
                           env=clean_env(**(env or {})), timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_installs_the_module_and_the_command_only():
        check(os.access(console, os.X_OK), "no stopcal command in the venv")
        p = subprocess.run([py, "-c", "import stopcal, stopcal.cli; print(stopcal.__file__)"], cwd=elsewhere,
                           env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        check(p.returncode == 0 and p.stdout.decode().startswith(venv), (p.stdout, p.stderr))
        p = subprocess.run([py, "-c", "import cortexchange"], cwd=elsewhere, env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        check(p.returncode != 0 and b"No module named 'cortexchange'" in p.stderr, p.stderr)
        p = subprocess.run([os.path.join(venv, "bin", "pip"), "show", "-f", "stopcal"], env=clean_env(),
                           stdout=subprocess.PIPE, timeout=120)
        files = [ln.strip() for ln in p.stdout.decode().split("Files:")[1].splitlines() if ln.strip()]
        check(files and all(f.startswith(("stopcal/", "stopcal-0.1.0.dist-info/", "../../../bin/stopcal"))
                            for f in files), files)
        check(not any("cortexchange" in f for f in files), files)

    def test_same_output_and_exit_codes_as_the_c_command():
        u = ["--url", srv.base]
        dead = dead_url()
        cases = [
            u + ["predict"] + images, u + ["predict", "--json"] + images,
            u + ["predict", "--csv", "--threshold", "0.97"] + images, ["predict", "--json"] + images[:1],
            u + ["should-stop", "--threshold", "1", images[0]], u + ["should-stop", "--threshold", "0", images[0]],
            u + ["should-stop", "--json", images[1]], u + ["--model", PIPELINE_NAME, "predict", images[2]],
            u + ["models"], u + ["models", "--json"], u + ["health"], ["--version"], ["--help"],
            ["--url", authed.base, "--api-key-file", keyfile, "predict", images[0]],
            # errors
            u + ["should-stop", os.path.join(TMP, "missing.fits")], u + ["should-stop", images[0], images[1]],
            u + ["predict"], u + ["frobnicate"], [], u + ["--threshold", "2", "predict", images[0]],
            u + ["--threshold", "x", "should-stop", images[0]], u + ["--json", "--csv", "predict", images[0]],
            u + ["--retries", "1.5", "health"], u + ["--timeout", "0", "models"], u + ["health", "extra"],
            u + ["--model", "surf/unknown", "predict", images[0]],
            ["--url", authed.base, "--api-key-file", wrong, "predict", images[0]],
            ["--url", authed.base, "--api-key-file", os.path.join(TMP, "no-such-key"), "models"],
        ]
        for args in cases:
            env = {"STOPCAL_URL": srv.base} if "--url" not in args else None
            c, py_ = run(A.stopcal, args, env), run(console, args, env)
            check(c[0] == py_[0], (args, c, py_))
            check(normalise(c[1]) == normalise(py_[1]), (args, c[1], py_[1]))
            check((c[2] == "") == (py_[2] == ""), (args, c[2], py_[2]))
            if c[2] and not c[2].startswith("usage"):
                # the same first words ("stopcal: server unreachable: http://…"), libcurl's and
                # Python's own wording of a socket error aside
                head = lambda t: t.split("\n")[0][:60]  # noqa: E731
                check(head(c[2]) == head(py_[2]) or c[2].split(":")[:2] == py_[2].split(":")[:2], (args, c[2], py_[2]))
        check(any(run(console, a)[0] != 0 for a in cases), "every case succeeded: the error cases ran nothing")

    def test_connection_errors_and_retries_as_the_c_command():
        dead = dead_url()
        for args in (["--url", dead, "--retries", "1", "predict", images[0]],
                     ["--url", dead, "--retries", "0", "should-stop", images[0]],
                     ["--url", dead + "," + srv.base, "health"], ["--url", dead, "health"],
                     ["--url", dead, "--url", srv.base, "--retries", "0", "predict", "--csv", images[0]]):
            c, py_ = run(A.stopcal, args), run(console, args)
            check(c[0] == py_[0], (args, c, py_))
            fix = lambda t: re.sub(r"(unreachable: http://127.0.0.1:\d+): .*", r"\1", normalise(t))  # noqa: E731
            check(fix(c[1]) == fix(py_[1]), (args, c[1], py_[1]))
            check(c[2].split(":")[:2] == py_[2].split(":")[:2], (args, c[2], py_[2]))
            for text in (c[2], py_[2]):
                check(("after 2 attempts" in text) == ("1" in args[:4]) if "predict" in args else True, text)

    def test_python_m_stopcal_is_the_same_command():
        a = run(console, ["--url", srv.base, "predict", "--json", images[0]])
        b = run(py, ["-m", "stopcal", "--url", srv.base, "predict", "--json", images[0]])
        check(a[0] == b[0] == 0 and normalise(a[1]) == normalise(b[1]), (a, b))

    def test_stops_cleanly():
        for s in (srv, authed):
            check(s.stop() == 0, "stopcald exit status")

    return [test_installs_the_module_and_the_command_only, test_same_output_and_exit_codes_as_the_c_command,
            test_connection_errors_and_retries_as_the_c_command, test_python_m_stopcal_is_the_same_command,
            test_stops_cleanly]


# ---- README's commands, on a checkpoint in the training code's layout --------------------------------

def readme_blocks():
    """The sh blocks of README's "Using stopcal from facetselfcal" section, continuation lines joined."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("\n## Using stopcal from facetselfcal\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [[ln for ln in b.replace("\\\n", " ").splitlines() if ln.strip()] for b in blocks]


def readme_tests():
    sys.path.insert(0, os.path.join(ROOT, "tests", "convert"))
    sys.path.insert(0, os.path.join(ROOT, "models", "convert"))
    import convert_fixtures as fx  # noqa: E402 - torch: the training code's layout and the reference
    import reference_preprocess  # noqa: E402
    import numpy as np  # noqa: E402
    import torch  # noqa: E402

    run_dir = os.path.join(TMP, "readme-run")
    os.makedirs(run_dir, exist_ok=True)
    serve, pipeline = readme_blocks()[:2]
    state = {}

    def test_convert_and_serve_as_readme_says():
        check(len(serve) == 2 and serve[0].startswith("python3 models/stopcal-convert ") and
              serve[1].startswith("build/server/stopcald "), serve)
        convert = shlex.split(serve[0])
        files = {convert[convert.index("--backbone") + 1]: "release", convert[convert.index("--checkpoint") + 1]: "ck"}
        check("--lora" in convert and convert[convert.index("--lora") + 1] == "drop", convert)
        release = fx.make_release(seed=11, registers=4)
        pkg = fx.FakeTrainingPackage(TMP)
        for name, kind in files.items():
            if kind == "release":
                torch.save(release, os.path.join(run_dir, name))
                state["release"] = os.path.join(run_dir, name)
            else:  # tuned positions, CLS and register tokens, LoRA: what "posclsreg ... lora" says
                torch.save(fx.make_finetuned(release, pkg, seed=12, tune_cls_token=True, tune_register_tokens=True,
                                             pos_embed="fine-tune", resize_val=112), os.path.join(run_dir, name))
                state["ck"] = os.path.join(run_dir, name)
        state["pkg"] = pkg  # the reference's torch.load needs it; the converter (its own process) does not
        p = subprocess.run([sys.executable, os.path.join(ROOT, "models", "stopcal-convert")] + convert[2:],
                           cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        check(p.returncode == 0, p.stdout.decode()[-3000:])
        state["model"] = os.path.join(run_dir, convert[convert.index("-o") + 1])
        fixed = []
        for a in shlex.split(serve[1])[1:]:  # the model file lies in the run's folder
            if a.endswith(".safetensors"):
                name, eq, f = a.rpartition("=")
                a = name + eq + os.path.join(run_dir, f)
            fixed.append(a)
        state["srv"] = Server(A.stopcald, [], *fixed)

    def test_the_pipeline_runs_unchanged_with_the_two_exports():
        srv = state["srv"]
        check(len(pipeline) == 3 and pipeline[2].startswith("python3 facetselfcal.py --early-stopping"), pipeline)
        exports = [ln.replace("/path/to/stopcal", ROOT).replace("http://gpu-node:8080", srv.base)
                   for ln in pipeline[:2]]
        check(all(ln.startswith("export ") for ln in exports), exports)
        work = os.path.join(run_dir, "selfcal")
        os.makedirs(work, exist_ok=True)
        images = []
        for i in range(4, 7):
            rel = "selfcal_%03d-MFS-image.fits" % i
            shutil.copy(write_fits("readme%d.fits" % i, 1200 + i, 120, 100), os.path.join(work, rel))
            images.append(rel)
        script = "\n".join(exports + ["exec %s %s %s %s" % (
            sys.executable, os.path.join(HERE, "pipeline_sequence.py"), ".cache/cortexchange", " ".join(images))])
        p = subprocess.run(["bash", "-c", script], cwd=work, env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        check(p.returncode == 0, p.stderr.decode())
        out = json.loads(p.stdout.decode().splitlines()[-1])
        check(out["model"] and out["module"].startswith(os.path.join(ROOT, "client", "python")), out)
        # The PyTorch reference of the same two files with the adapters dropped, on the reference
        # preprocessing of each image.
        cfg = curl(srv.url("/v1/models")).json()["models"][0]["config"]
        pre = cfg["preprocessing"]
        tensors = [reference_preprocess.preprocess(os.path.join(work, rel), pre["profile"], cfg["input"]["size"],
                                             pre["mean"], pre["std"])[0] for rel in images]
        logits = fx.reference_logits(state["release"], state["ck"], [np.asarray(t, np.float32) for t in tensors],
                                     "drop")
        for got, logit in zip(out["scores"], logits):
            want = 1.0 / (1.0 + math.exp(-logit))
            check(abs(got - want) <= 1e-4 * max(1.0, abs(logit)) * want * (1 - want) + 1e-6, (got, want, logit))
        merged = fx.reference_logits(state["release"], state["ck"], [np.asarray(t, np.float32) for t in tensors],
                                     "merge")  # what --lora merge would serve: not what was asked for
        check(max(abs(g - 1.0 / (1.0 + math.exp(-m))) for g, m in zip(out["scores"], merged)) > 1e-3,
              (out["scores"], merged))
        state["scores"] = out["scores"]
        state["images"], state["work"] = images, work

    def test_going_back_leaves_the_pipeline_as_it_was():
        srv = state["srv"]
        script = "\n".join([
            "export PYTHONPATH=%s/client/python${PYTHONPATH:+:$PYTHONPATH}" % ROOT,
            "export STOPCAL_URL=%s" % srv.base,
            # README's way back
            "export PYTHONPATH=${PYTHONPATH#%s/client/python}" % ROOT,
            "exec %s %s .cache/cortexchange %s" % (sys.executable, os.path.join(HERE, "pipeline_sequence.py"),
                                                    state["images"][0])])
        check("export PYTHONPATH=${PYTHONPATH#/path/to/stopcal/client/python}" in
              open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(), "README's way back changed")
        p = subprocess.run(["bash", "-c", script], cwd=state["work"], env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        check(p.returncode == 0, p.stderr.decode())
        out = json.loads(p.stdout.decode().splitlines()[-1])
        check(not out["model"] and "cortexchange" in out["why"] and out["scores"] == [1.0], out)

    def test_the_alias_recorded_by_the_converter_serves_alone():
        text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
        check("with `--alias %s`\nadded to the `stopcal-convert` command" % PIPELINE_NAME in text, "README changed")
        convert = shlex.split(serve[0])
        out = convert[convert.index("-o") + 1].replace(".safetensors", "-aliased.safetensors")
        convert[convert.index("-o") + 1] = out
        p = subprocess.run([sys.executable, os.path.join(ROOT, "models", "stopcal-convert")] + convert[2:] +
                           ["--alias", PIPELINE_NAME], cwd=run_dir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        check(p.returncode == 0 and PIPELINE_NAME in p.stdout.decode(), p.stdout.decode()[-3000:])
        s = Server(A.stopcald, [os.path.join(run_dir, out)])
        try:
            models = curl(s.url("/v1/models")).json()["models"]
            check(models[0]["aliases"] == [PIPELINE_NAME], models)
            env = clean_env(PYTHONPATH=os.path.join(ROOT, "client", "python"), STOPCAL_URL=s.base)
            got = run_pipeline(".cache/cortexchange", state["images"], env, state["work"])
            check(got["model"] and got["scores"] == state["scores"], (got, state["scores"]))
        finally:
            check(s.stop() == 0, "stopcald exit status")

    def test_stops_cleanly():
        state["pkg"].remove()
        check(state["srv"].stop() == 0, "stopcald exit status")

    return [test_convert_and_serve_as_readme_says, test_the_pipeline_runs_unchanged_with_the_two_exports,
            test_going_back_leaves_the_pipeline_as_it_was, test_the_alias_recorded_by_the_converter_serves_alone,
            test_stops_cleanly]


GROUPS = {"aliases": alias_tests, "shim": shim_tests, "package": package_tests, "readme": readme_tests}


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=sorted(GROUPS))
    ap.add_argument("--stopcald", required=True)
    ap.add_argument("--infer", required=True)
    ap.add_argument("--stopcal", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--python-dir", required=True)
    A = ap.parse_args()
    return run_tests(GROUPS[A.group](), 600)


if __name__ == "__main__":
    sys.exit(main())
