"""Shared plumbing for the parity and model-file tests: random models, test images, running
`stopcal-infer`, comparing with the PyTorch reference, and a tiny test runner for ctest.

A test file defines functions `test_<sentence>(ctx)` and ends with `harness.main(globals())`;
ctest runs one case per process: `test_x.py --infer BIN --case <sentence>`.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GENMODEL = os.path.join(ROOT, "models", "stopcal-genmodel")
sys.path.insert(0, os.path.join(ROOT, "models"))
sys.path.insert(0, HERE)

import stopcal_model as sm  # noqa: E402,F401  (tests use it as h.sm)

LOGIT_RTOL = 1e-4   # |Δ logit| ≤ 1e-4 · max(1, |logit|)
SCORE_ATOL = 1e-4   # |Δ continue_score| ≤ 1e-4 (ARCHITECTURE.md §3)
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error")


class TestFailure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise TestFailure(message)


class Context:
    """What a test gets: the binary under test and a private temporary directory."""

    def __init__(self, infer, tmpdir):
        self.infer = infer
        self.tmp = tmpdir
        self.notes = []  # measured numbers, printed after the verdict

    def path(self, name):
        return os.path.join(self.tmp, name)

    def note(self, text):
        self.notes.append(text)
        print(text, flush=True)


# --------------------------------------------------------------------------------------------
# models and images


def genmodel(ctx, filename, *args):
    """Write a random model with models/stopcal-genmodel (the CLI, so it is tested too)."""
    out = ctx.path(filename)
    r = subprocess.run([sys.executable, GENMODEL, *map(str, args), "-o", out],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"stopcal-genmodel {' '.join(map(str, args))} failed:\n{r.stderr}")
    return out


def make_image(seed, size, channels=3):
    """A (C, S, S) float32 image shaped like preprocessed radio data: a noise floor in [0, 1]
    with a few compact and extended sources; with 3 channels each channel differs, so a mixed-up
    channel order in the patch embedding cannot hide."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    planes = []
    for _ in range(channels):
        im = 0.1 + 0.05 * rng.standard_normal((size, size))
        for _ in range(int(rng.integers(1, 7))):
            cx, cy = rng.uniform(0, 1, 2)
            w, amp = rng.uniform(0.01, 0.25), rng.uniform(0.2, 0.9)
            im += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * w * w))
        planes.append(np.clip(im, 0, 1))
    return np.stack(planes).astype(np.float32)


def write_pixels(ctx, filename, image):
    """Write an image as raw little-endian float32 (C, S, S), the form stopcal-infer reads."""
    path = ctx.path(filename)
    np.ascontiguousarray(image, dtype="<f4").tofile(path)
    return path


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --------------------------------------------------------------------------------------------
# running the binary


def run_infer(ctx, model, pixels, *extra, json_out=True, expect_ok=True):
    """Run stopcal-infer; returns (CompletedProcess, parsed JSON or None). Always checks that
    no sanitizer spoke, and when expect_ok that it exited 0 with nothing on stderr.

    The engine is pinned to the CPU (`--device cpu`) and to fp32 (`--precision fp32`) unless
    `extra` names a device or a precision: on a GPU node `auto` would run the bf16 CUDA path, and a
    model file's runtime.precision or STOPCAL_PRECISION could ask for bf16, which the fp32
    tolerances here are not for. With JSON output the backend and precision that actually ran are
    checked too."""
    extra = [str(e) for e in extra]
    if "--device" not in extra:
        extra = ["--device", "cpu", *extra]
    if "--precision" not in extra and extra[extra.index("--device") + 1] == "cpu":
        extra = ["--precision", "fp32", *extra]  # the fp32 tolerances, whatever the model file says
    cmd = [ctx.infer, "--model", model, *extra]
    if json_out:
        cmd.append("--json")
    cmd += ["--pixels", *pixels]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for mark in SANITIZER_MARKS:
        check(mark not in r.stderr, f"sanitizer report from {' '.join(cmd)}:\n{r.stderr}")
    if not expect_ok:
        return r, None
    check(r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}")
    doc = None
    if json_out:
        try:
            doc = json.loads(r.stdout)
        except ValueError as e:
            raise TestFailure(f"stdout is not one JSON object ({e}):\n{r.stdout[:2000]}")
        want = extra[extra.index("--device") + 1].split(":")[0]
        if want != "auto":
            check(doc.get("backend") == want,
                  f"{' '.join(cmd)} ran on backend {doc.get('backend')!r}, not {want!r}")
        want = extra[extra.index("--precision") + 1] if "--precision" in extra else "auto"
        if want != "auto":
            check(doc.get("precision") == want,
                  f"{' '.join(cmd)} computed in {doc.get('precision')!r}, not {want!r}")
    return r, doc


def reference_logits(model_path, images, dtype="fp32"):
    """Logits of the PyTorch reference for a list of (C, S, S) images, in one batch."""
    import torch
    import dinov3_torch  # the reference of the file's family (dinov2_torch or dinov3_torch)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = dinov3_torch.classifier_for(
        model_path, torch.float64 if dtype == "fp64" else torch.float32)
    batch = torch.stack([torch.from_numpy(np.ascontiguousarray(i)).expand(3, -1, -1)
                         for i in images])
    return [float(v) for v in model.logits(batch)]


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def compare(ctx, label, ref_logits, results):
    """Assert the engine's results match the reference logits; print the largest differences.
    Returns (max |Δ logit|, max |Δ continue_score|)."""
    check(len(results) == len(ref_logits),
          f"{label}: {len(results)} results for {len(ref_logits)} images")
    bad, max_dl, max_ds = [], 0.0, 0.0
    for i, (ref, res) in enumerate(zip(ref_logits, results)):
        got_l, got_s = res.get("logit"), res.get("continue_score")
        check(isinstance(got_l, (int, float)) and isinstance(got_s, (int, float)),
              f"{label}: result {i} lacks a numeric logit/continue_score: {res}")
        dl, ds = abs(got_l - ref), abs(got_s - sigmoid(ref))
        max_dl, max_ds = max(max_dl, dl), max(max_ds, ds)
        if not (dl <= LOGIT_RTOL * max(1.0, abs(ref)) and ds <= SCORE_ATOL):
            bad.append(f"  image {i} ({res.get('name')}): logit {got_l!r} vs reference {ref!r} "
                       f"(Δ {dl:.3g}); continue_score {got_s!r} vs {sigmoid(ref)!r} (Δ {ds:.3g})")
    ctx.note(f"{label}: {len(results)} image(s), logits {['%.6f' % v for v in ref_logits]}, "
             f"max |Δ logit| = {max_dl:.3g}, max |Δ continue_score| = {max_ds:.3g}")
    if bad:
        raise TestFailure(f"{label}: {len(bad)} of {len(results)} results differ from the "
                          f"reference beyond tolerance; first ones:\n" + "\n".join(bad[:5]) +
                          f"\n  max |Δ logit| = {max_dl:.3g}, max |Δ continue_score| = "
                          f"{max_ds:.3g}")
    return max_dl, max_ds


def check_parity(ctx, label, model, images, *extra):
    """Write the images, run the binary on all of them in one call, compare with the reference."""
    paths = [write_pixels(ctx, f"{label}-{i}.f32", im) for i, im in enumerate(images)]
    _, doc = run_infer(ctx, model, paths, *extra)
    check(isinstance(doc.get("results"), list), f"{label}: no results list in {doc}")
    check([r.get("name") for r in doc["results"]] == paths,
          f"{label}: result names {[r.get('name') for r in doc['results']]} are not the paths "
          f"given, in order")
    return compare(ctx, label, reference_logits(model, images), doc["results"])


# --------------------------------------------------------------------------------------------
# the runner


def main(namespace):
    """Run the test functions of a test file: all of them, or the one named by --case."""
    tests = {k[len("test_"):]: v for k, v in namespace.items()
             if k.startswith("test_") and callable(v)}
    p = argparse.ArgumentParser()
    p.add_argument("--infer", help="path to the stopcal-infer binary under test")
    p.add_argument("--case", action="append", help="run only this case (repeatable)")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if args.list:
        print("\n".join(tests))
        return 0
    names = args.case or list(tests)
    unknown = [n for n in names if n not in tests]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        # A neutral name: refusal messages quote the model path, and a keyword in it would
        # satisfy a test by accident.
        tmp = tempfile.mkdtemp(prefix="stopcal-test-")
        ctx = Context(args.infer, tmp)
        t0 = time.monotonic()
        try:
            tests[name](ctx)
            print(f"PASS {name} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception as e:  # report every failure, whatever raised it
            failed += 1
            detail = str(e) if isinstance(e, TestFailure) else traceback.format_exc()
            print(f"FAIL {name} ({time.monotonic() - t0:.1f} s)\n{detail}", flush=True)
        finally:
            if args.keep:
                print(f"  kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0
