#!/usr/bin/env python3
"""The rms, the median selection and the stretch, each against its reference on arrays built to reach
every path: numpy's get_rms (ref_preprocess.get_rms) on float32 and float64 data with NaN/Inf (counted
as 0), ties, large offsets, odd and even counts, samples that mislead the median window, tiny arrays;
numpy's median and partition property for the introselect (also with median-of-medians pivots only);
matplotlib's SymLogNorm for the stretch, both the exact in-place form and the row form the
preprocessing uses.

Usage: test_rms_stretch.py IMAGE_TOOL WORKDIR
"""
import json
import os
import subprocess
import sys

import numpy as np
from matplotlib.colors import SymLogNorm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "convert"))
import reference_preprocess as ref_preprocess  # noqa: E402

RMS_REL_TOL = 1e-6


def tool_json(tool, *args):
    p = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def rms_cases(rng):
    noise = rng.normal(0.0, 1.3e-4, 400_000)
    sources = noise.copy()
    idx = rng.integers(0, sources.size, 2000)
    sources[idx] += rng.pareto(1.2, idx.size) * 1e-3
    bordered = sources.copy()
    bordered[:80_000] = np.nan
    bordered[-5:] = np.inf
    bordered[100:110] = -np.inf
    quantised = np.round(rng.normal(0.0, 3.0, 200_001)) * 0.01  # many ties, odd count
    offset = 1000.0 + rng.normal(0.0, 1e-3, 100_000)             # mean far from any early sample
    misleading = rng.normal(0.0, 1.0, 300_000)
    stride = (misleading.size // 65536) | 1                      # rms.c samples every stride-th pixel
    misleading[::stride] = 50.0 + rng.random(misleading[::stride].size)  # the sample sees only outliers
    even_tiny = rng.normal(0.5, 0.2, 10)
    tiny = np.array([1.0, 2.0, 4.0, 100.0, -3.0, 0.0, 0.0])
    positive = rng.exponential(1.0, 250_000)
    bright_first = sources.copy()
    bright_first[0] = 1e4                                        # a bright first pixel as the sums' centre
    return {
        "noise": noise, "sources": sources, "nan-inf-borders": bordered, "quantised-ties": quantised,
        "large-offset": offset, "misleading-sample": misleading, "even-tiny": even_tiny, "tiny": tiny,
        "positive": positive, "bright-first-pixel": bright_first,
        "two-values": np.tile([1.0, 3.0], 5000), "sorted": np.sort(sources), "reversed": np.sort(sources)[::-1],
    }


def main():
    tool, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(11)
    ok = True
    path = os.path.join(work, "values.raw")

    # --- rms -----------------------------------------------------------------------------------------
    for name, x in rms_cases(rng).items():
        for dtype in (np.float64, np.float32):
            xd = x.astype(dtype)
            clean = xd.astype(np.float64)
            bad = ~np.isfinite(clean)
            clean[bad] = 0.0
            with np.errstate(all="ignore"):
                want = ref_preprocess.get_rms(clean)
            xd.tofile(path)
            got = tool_json(tool, "rms", "f32" if dtype == np.float32 else "f64", path)
            label = f"rms {name} ({np.dtype(dtype).name}, n={x.size})"
            if not np.isfinite(want) or want == 0:
                good = "error" in got
                print(f"{'ok  ' if good else 'FAIL'} {label}: reference {want}, ours {got}")
            else:
                rel = abs(got.get("rms", np.nan) - want) / want
                good = rel <= RMS_REL_TOL and got.get("nonfinite") == int(bad.sum()) and \
                    got.get("xmin") == float(clean.min())
                print(f"{'ok  ' if good else 'FAIL'} {label}: {got.get('rms')!r} vs {want!r} (rel {rel:.2g}), "
                      f"nonfinite {got.get('nonfinite')} vs {int(bad.sum())}")
            ok &= good

    # --- median and selection ---------------------------------------------------------------------------
    arrays = {
        "random": rng.normal(size=100_001), "sorted": np.arange(50_000.0), "reversed": np.arange(50_000.0)[::-1],
        "all-equal": np.full(4097, 2.5), "few-values": rng.integers(0, 3, 30_000).astype(float),
        "organ-pipe": np.concatenate([np.arange(20_000.0), np.arange(20_000.0)[::-1]]),
        "n=1": np.array([7.0]), "n=2": np.array([3.0, -1.0]), "n=17": rng.normal(size=17),
        "even": rng.normal(size=65_536),
    }
    for name, a in arrays.items():
        a.tofile(path)
        got = tool_json(tool, "median", path)["median"]
        want = float(np.median(a))
        good = got == want
        print(f"{'ok  ' if good else 'FAIL'} median {name}: {got!r} vs numpy {want!r}")
        ok &= good
        for budget in (0, 1000):  # median-of-medians pivots only, and median-of-three only
            k = a.size // 3
            got = tool_json(tool, "select", path, k, budget)
            want = float(np.partition(a, k)[k])
            good = got["value"] == want and got["partitioned"]
            if not good:
                print(f"FAIL select {name} k={k} budget={budget}: {got} vs {want!r}")
            ok &= good
    print(f"{'ok  ' if ok else 'FAIL'} selection: k-th value and partition property, both pivot rules")

    # --- stretch -------------------------------------------------------------------------------------------
    for rms in (1.3e-4, 0.7, 250.0):
        lt = 2 * rms
        x = np.concatenate([rng.normal(0, rms, 20_000), rng.pareto(1.0, 2000) * rms * 10,
                            -rng.pareto(1.5, 500) * rms * 5, [lt, -lt, np.nextafter(lt, 1e9), -rms, 0.0,
                                                              rms * 50_000, rms * 1e6]])
        norm = SymLogNorm(linthresh=rms * 2, linscale=2, vmin=-rms, vmax=rms * 50_000, base=10)
        y = norm(x)
        want = np.ma.getdata(np.clip(y - y.min(), 0, 1))
        x.tofile(path)
        out = os.path.join(work, "stretched.raw")
        tool_json(tool, "stretch", repr(rms), path, out)
        exact = np.fromfile(out, dtype=np.float64)
        d_exact = float(np.max(np.abs(exact - want)))
        row = {}
        for dtype in (np.float64, np.float32):
            xd = x.astype(dtype)
            xd.tofile(path)
            yd = norm(xd.astype(np.float64))
            want_d = np.ma.getdata(np.clip(yd - yd.min(), 0, 1))
            tool_json(tool, "stretchrow", "f32" if dtype == np.float32 else "f64", repr(rms),
                      repr(float(xd.astype(np.float64).min())), path, out)
            row[np.dtype(dtype).name] = float(np.max(np.abs(np.fromfile(out, dtype=np.float64) - want_d)))
        good = d_exact <= 1e-15 and max(row.values()) <= 1e-14
        print(f"{'ok  ' if good else 'FAIL'} stretch rms={rms}: exact form max|diff| {d_exact:.3g}, "
              f"row form {row['float64']:.3g} (f64) {row['float32']:.3g} (f32)")
        ok &= good

    print("rms/median/stretch:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
