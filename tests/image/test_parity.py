#!/usr/bin/env python3
"""Parity of our FITS decoding and preprocessing with the reference (models/convert/reference_preprocess.py: astropy,
numpy, matplotlib's SymLogNorm, torch's F.interpolate) on the images gen_fits.py writes.

Usage: test_parity.py IMAGE_TOOL WORKDIR [--quick]
Checks, for every generated file: decoded pixels equal astropy's (NaN where astropy has NaN); for both
profiles: tensor max |diff| <= 1e-5, rms relative difference <= 1e-6, same non-finite count.
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_fits  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "convert"))
import reference_preprocess as ref_preprocess  # noqa: E402

TENSOR_TOL = 1e-5
RMS_REL_TOL = 1e-6


def run_tool(tool, *args):
    p = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise RuntimeError(f"{tool} {args} failed ({p.returncode}): {p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def first_mismatches(ours, ref, tol, count=5):
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    bad = np.argwhere(~(diff <= tol))
    lines = []
    for idx in bad[:count]:
        i = tuple(idx)
        lines.append(f"    at {i}: ours {ours[i]!r} reference {ref[i]!r}")
    return lines


def check_decode(tool, work, name):
    path = os.path.join(work, name)
    out = os.path.join(work, name + ".decoded.f64")
    info = run_tool(tool, "decode", path, out)
    if "error" in info:
        print(f"FAIL decode {name}: {info['error']}")
        return False
    ours = np.fromfile(out, dtype=np.float64).reshape(info["height"], info["width"])
    ref, rel = ref_preprocess.read_image(path)
    ref = ref.squeeze()
    ok = ref.shape == ours.shape
    if ok:
        nan_ok = np.array_equal(np.isnan(ours), np.isnan(ref))
        both = np.isfinite(ref) & np.isfinite(ours)
        tol = rel * np.abs(ref) + 1e-300
        excess = np.abs(ours - ref) / tol
        worst = float(np.max(excess[both])) if both.any() else 0.0
        d = float(np.max(np.abs(ours[both] - ref[both]))) if both.any() else 0.0
        ok = nan_ok and worst <= 1.0
        print(f"{'ok  ' if ok else 'FAIL'} decode {name}: {ours.shape[1]}x{ours.shape[0]} BITPIX {info['bitpix']} "
              f"HDU {info['hdu']} max|diff| {d:.3g} (relative tolerance {rel:.3g}) "
              f"NaN layout {'same' if nan_ok else 'DIFFERS'}")
        if not ok:
            bad = np.argwhere(~(excess <= 1.0) & both)[:5]
            for i in map(tuple, bad):
                print(f"    at {i}: ours {ours[i]!r} astropy {ref[i]!r}")
    else:
        print(f"FAIL decode {name}: shape {ours.shape} vs astropy {ref.shape}")
    return ok


def check_preprocess(tool, work, name, profile, size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    path = os.path.join(work, name)
    out = os.path.join(work, f"{name}.{profile}.{size}.f32")
    info = run_tool(tool, "preprocess", profile, size, ",".join(map(repr, mean)), ",".join(map(repr, std)),
                    0, 0, path, out)
    label = f"{name} {profile} {size}" + (f" mean={mean} std={std}" if profile.endswith("v3") else "")
    if "error" in info:
        print(f"FAIL {label}: {info['error']}")
        return False
    ours = np.fromfile(out, dtype=np.float32).reshape(3, size, size)
    ref, rms, nonfinite = ref_preprocess.preprocess(path, profile, size, mean, std)
    d = float(np.max(np.abs(ours.astype(np.float64) - ref.astype(np.float64))))
    rms_rel = abs(info["rms"] - rms) / rms
    ok = d <= TENSOR_TOL and rms_rel <= RMS_REL_TOL and info["nonfinite"] == nonfinite
    print(f"{'ok  ' if ok else 'FAIL'} {label}: tensor max|diff| {d:.3g}  rms {info['rms']:.10g} vs {rms:.10g} "
          f"(rel {rms_rel:.2g})  nonfinite {info['nonfinite']} vs {nonfinite}")
    if not ok:
        print("\n".join(first_mismatches(ours, ref, TENSOR_TOL)))
    return ok


def main():
    tool, work = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv[3:]
    torch.set_num_threads(1)
    gen_fits.main_with(work, quick)
    names = [line.split()[0] for line in open(os.path.join(work, "manifest.txt")) if line.strip()]
    ok = True
    for name in names:
        ok &= check_decode(tool, work, name)
    for name in names:
        for profile in ("cortexchange-v2", "cortexchange-v3"):
            ok &= check_preprocess(tool, work, name, profile, 560)
    # Other model sizes, and v3's dataset statistics (per channel, as the model file stores them).
    ok &= check_preprocess(tool, work, "lofar_1000x1200.fits", "cortexchange-v2", 224)
    ok &= check_preprocess(tool, work, "lofar_1000x1200.fits", "cortexchange-v3", 224,
                           (0.0891, 0.0891, 0.0891), (0.1254, 0.1254, 0.1254))
    ok &= check_preprocess(tool, work, "small_300.fits", "cortexchange-v3", 560, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    ok &= check_preprocess(tool, work, "lofar_2048.fits", "cortexchange-v3", 518, (0.05, 0.05, 0.05),
                           (0.2, 0.2, 0.2))
    # Same size in and out: V3 skips interpolate, V2 runs an identity interpolate.
    ok &= check_preprocess(tool, work, "small_300.fits", "cortexchange-v2", 300)
    ok &= check_preprocess(tool, work, "small_300.fits", "cortexchange-v3", 300)
    print("parity:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
