#!/usr/bin/env python3
"""The shipped demo model (models/demo): its bytes are the ones the card records, the examples
are the ones it was shown with, and stopcal-infer answers on them what PyTorch answers, with the
expected decisions.

    test_demo.py [--infer BIN] --case NAME       one case (exit 0 pass, 1 fail, 77 skipped)
    test_demo.py --list

PyTorch side: tests/reference/dinov2_torch.py (an independent forward pass, fp32) on the tensors
that models/demo/preprocess.py computes from the FITS files, the same preprocessing the model was
trained on.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DEMO = os.path.join(ROOT, "models", "demo")
MODEL = os.path.join(DEMO, "stopcal-demo.safetensors")
EXAMPLES = os.path.join(DEMO, "examples")
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, DEMO)

import stopcal_harness as harness  # noqa: E402  (also puts models/ on sys.path)
import stopcal_model as sm  # noqa: E402

SKIP = 77
check = harness.check


class Skipped(Exception):
    pass


def expected():
    with open(os.path.join(EXAMPLES, "expected.json")) as f:
        return json.load(f)


def example_paths():
    ex = expected()["examples"]
    return [os.path.join(EXAMPLES, n) for n in sorted(ex)], [ex[n] for n in sorted(ex)]


def preprocessed(paths, size):
    import preprocess as pp
    return [pp.preprocess_fits(p, size) for p in paths]


def torch_scores(tensors):
    """Logits of the PyTorch reference on (3, S, S) tensors, one batch."""
    return harness.reference_logits(MODEL, tensors)


# --------------------------------------------------------------------------------------------


def test_model_file_matches_card(ctx):
    """sha256 of the shipped file = the card's = the one expected.json was made with; it loads."""
    digest = harness.sha256_of(MODEL)
    with open(os.path.join(DEMO, "MODEL_CARD.md")) as f:
        card = f.read()
    found = re.findall(r"sha256 `([0-9a-f]{64})`", card)
    check(found, "MODEL_CARD.md records no sha256 `...` line")
    check(found[0] == digest, f"MODEL_CARD.md says sha256 {found[0]}, the file's is {digest}")
    check(expected()["model_sha256"] == digest,
          f"examples/expected.json was made with model {expected()['model_sha256']}, the file "
          f"is {digest}")
    cfg, _ = sm.read_model(MODEL)
    check(cfg["name"] == "stopcal-demo-vits-reg", f"model name {cfg['name']!r}")
    check(cfg["output"]["logit"] == "continue", "the logit must be the continue logit")
    check(cfg["preprocessing"]["profile"] == "cortexchange-v2", "profile")
    ctx.note(f"model sha256 {digest}, {os.path.getsize(MODEL):,} bytes")


def test_examples_are_the_recorded_files(ctx):
    """Each example FITS file has the sha256 expected.json records and a 4-D LOFAR header."""
    from astropy.io import fits
    paths, exp = example_paths()
    check(len(paths) >= 2, "fewer than two examples")
    check({e["expected"] for e in exp} == {"stop", "continue"},
          "the examples must include a stop and a continue image")
    for p, e in zip(paths, exp):
        check(harness.sha256_of(p) == e["sha256"], f"{p}: sha256 differs from expected.json")
        check(os.path.getsize(p) <= 300 * 1024, f"{p}: over 300 KB")
        with fits.open(p) as h:
            hdr = h[0].header
            check(hdr["NAXIS"] == 4 and hdr["BITPIX"] == -32, f"{p}: not a 4-D float32 image")
            for k, v in (("CTYPE1", "RA---SIN"), ("CTYPE2", "DEC--SIN"), ("CTYPE3", "FREQ"),
                         ("CTYPE4", "STOKES"), ("BUNIT", "JY/BEAM")):
                check(hdr[k] == v, f"{p}: {k} = {hdr[k]!r}, expected {v!r}")
            check(hdr["BMAJ"] >= hdr["BMIN"] > 0, f"{p}: beam")


def test_preprocessing_matches_reference(ctx):
    """The demo's preprocessing (what the model was trained on) equals the project's reference
    preprocessing (models/convert/reference_preprocess.py) on the examples."""
    sys.path.insert(0, os.path.join(ROOT, "models", "convert"))
    import reference_preprocess as ref_preprocess
    paths, _ = example_paths()
    for p, (ours, rms, nf) in zip(paths, preprocessed(paths, 112)):
        ref, ref_rms, ref_nf = ref_preprocess.preprocess(p, "cortexchange-v2", 112)
        d = float(np.max(np.abs(ours - ref)))
        ctx.note(f"{os.path.basename(p)}: max |Δ pixel| = {d:.3g}, rms {rms:.6g} vs {ref_rms:.6g}")
        check(d <= 1e-6, f"{p}: demo preprocessing differs from the reference by {d:.3g}")
        check(abs(rms - ref_rms) <= 1e-9 * ref_rms and nf == ref_nf, f"{p}: rms / non-finite")


def _check_results(ctx, label, results, names, exp, ref_logits):
    max_dl, max_ds = harness.compare(ctx, label, ref_logits, results)
    for r, n, e in zip(results, names, exp):
        check(r.get("name") == n, f"{label}: result name {r.get('name')!r}, expected {n!r}")
        check(r.get("decision") == e["expected"],
              f"{label}: {os.path.basename(n)}: decision {r.get('decision')!r} (continue_score "
              f"{r.get('continue_score')}), expected {e['expected']!r}")
        check(abs(r["continue_score"] + r["stop_probability"] - 1.0) <= 1e-6,
              f"{label}: stop_probability is not 1 − continue_score")
    return max_ds


def test_engine_matches_torch_on_pixels(ctx):
    """stopcal-infer --pixels on the preprocessed examples = PyTorch (|Δ continue_score| ≤ 1e-4),
    with the expected decisions."""
    check(ctx.infer, "--infer BIN is required")
    paths, exp = example_paths()
    tensors = [t for t, _, _ in preprocessed(paths, 112)]
    files = [harness.write_pixels(ctx, os.path.basename(p) + ".f32", t)
             for p, t in zip(paths, tensors)]
    _, doc = harness.run_infer(ctx, MODEL, files)
    check(doc["model"]["sha256"] == harness.sha256_of(MODEL), "model sha256 in the output")
    ref = torch_scores(tensors)
    for n, l, e in zip(paths, ref, exp):
        check((harness.sigmoid(l) >= 0.5) == (e["expected"] == "continue"),
              f"PyTorch itself decides {os.path.basename(n)} against the expectation "
              f"(continue_score {harness.sigmoid(l):.4f}, expected {e['expected']})")
    _check_results(ctx, "pixels", doc["results"], files, exp, ref)


def test_engine_matches_torch_on_fits(ctx):
    """stopcal-infer on the example FITS files (the server's path: decode + preprocess in C)
    = PyTorch on the Python-preprocessed tensors, with the expected decisions."""
    check(ctx.infer, "--infer BIN is required")
    paths, exp = example_paths()
    cmd = [ctx.infer, "--model", MODEL, "--json", *paths]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "not wired" in r.stderr:
        raise Skipped(f"stopcal-infer has no FITS input yet: {r.stderr.strip()}")
    check(r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}")
    for mark in harness.SANITIZER_MARKS:
        check(mark not in r.stderr, f"sanitizer report:\n{r.stderr}")
    doc = json.loads(r.stdout)
    pre = preprocessed(paths, 112)
    ref = torch_scores([t for t, _, _ in pre])
    _check_results(ctx, "fits", doc["results"], paths, exp, ref)
    for res, (_, rms, nf) in zip(doc["results"], pre):
        check(isinstance(res.get("rms"), float) and abs(res["rms"] - rms) <= 1e-6 * rms,
              f"{res['name']}: rms {res.get('rms')} vs {rms}")
        check(res.get("nonfinite_pixels") == nf, f"{res['name']}: nonfinite_pixels")


# --------------------------------------------------------------------------------------------


def main():
    tests = {k[len("test_"):]: v for k, v in globals().items()
             if k.startswith("test_") and callable(v)}
    p = argparse.ArgumentParser()
    p.add_argument("--infer")
    p.add_argument("--case", action="append")
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    if args.list:
        print("\n".join(tests))
        return 0
    names = args.case or list(tests)
    failed = skipped = 0
    for name in names:
        tmp = tempfile.mkdtemp(prefix="stopcal-test-")
        ctx = harness.Context(args.infer, tmp)
        t0 = time.monotonic()
        try:
            tests[name](ctx)
            print(f"PASS {name} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Skipped as e:
            skipped += 1
            print(f"SKIP {name}: {e}", flush=True)
        except Exception as e:  # report every failure, whatever raised it
            failed += 1
            detail = str(e) if isinstance(e, harness.TestFailure) else traceback.format_exc()
            print(f"FAIL {name} ({time.monotonic() - t0:.1f} s)\n{detail}", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        return 1
    return SKIP if skipped and skipped == len(names) else 0


if __name__ == "__main__":
    sys.exit(main())
