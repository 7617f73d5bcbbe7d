#!/usr/bin/env python3
"""stopcal as a drop-in for facetselfcal's cortExchange model (issue 17), against the real stopcald on
an ephemeral loopback port, compared with stopcal-infer on the same files.

usage: test_dropin.py GROUP --stopcald BIN --infer BIN --stopcal BIN --model FILE --python-dir DIR
GROUP: aliases  model names with '/' and --alias over /v1 and /v2, the 404 naming the known models"""
import argparse
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
from serverlib import Server, TMP, check, curl, run_tests, stopcal_infer, write_fits  # noqa: E402

A = None
TOL = 1e-6
PIPELINE_NAME = "surf/dino_big_lora_tune_posclsreg_may_O2_aug_099"


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

    def test_stops_cleanly():
        check(srv.stop() == 0, "stopcald exit status")

    return [test_v1_models_lists_the_aliases, test_v1_predict_by_alias_encoded_or_not,
            test_v2_paths_with_slashes_encoded_or_not, test_unknown_names_are_404_listing_the_known_ones,
            test_env_twin_and_command_line_precedence, test_bad_aliases_stop_the_server_with_a_reason,
            test_stops_cleanly]


GROUPS = {"aliases": alias_tests}


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
