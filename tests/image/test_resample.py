#!/usr/bin/env python3
"""models/image/resample.c against torch.nn.functional.interpolate(align_corners=False), all four modes, on
float64 inputs: the preprocessing's bilinear resizes (down and up, non-square, with and without
antialias) and the positional-embedding resizes (37 → 40 and 37 → 16, by size and by scale_factor as
DINOv2 calls it, bicubic with and without antialias), plus edge sizes. Also the float32 entry point.

Usage: test_resample.py IMAGE_TOOL WORKDIR
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

F64_TOL = 1e-12  # relative to the input's largest magnitude
F32_TOL = 2e-6

MODES = {"bilinear": ("bilinear", False), "bilinear_aa": ("bilinear", True),
         "bicubic": ("bicubic", False), "bicubic_aa": ("bicubic", True)}


def reference(x, mode, size=None, scale=None):
    name, aa = MODES[mode]
    t = torch.from_numpy(x)[None]
    if scale is not None:
        out = F.interpolate(t, scale_factor=scale, mode=name, antialias=aa, align_corners=False)
    else:
        out = F.interpolate(t, size=size, mode=name, antialias=aa, align_corners=False)
    return out[0].numpy()


def run(tool, work, x, mode, oh, ow, sh, sw, dtype):
    c, ih, iw = x.shape
    src = os.path.join(work, "resample_in.raw")
    dst = os.path.join(work, "resample_out.raw")
    x.astype(dtype).tofile(src)
    p = subprocess.run([tool, "resample", "f32" if dtype == np.float32 else "f64", mode, str(c), str(ih), str(iw),
                        str(oh), str(ow), repr(sh), repr(sw), src, dst], capture_output=True, text=True)
    info = json.loads(p.stdout.strip() or "{}")
    if p.returncode != 0 or "error" in info:
        return None
    return np.fromfile(dst, dtype=dtype).reshape(c, oh, ow)


def main():
    tool, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    cases = [  # (channels, in_h, in_w, out_h, out_w, scale or None, modes)
        (16, 37, 37, 40, 40, None, ["bicubic", "bicubic_aa"]),                      # pos-embed, registers, 560
        (16, 37, 37, 16, 16, None, ["bicubic", "bicubic_aa"]),                      # pos-embed, 224
        (16, 37, 37, None, None, ((40 + 0.1) / 37, (40 + 0.1) / 37), ["bicubic", "bicubic_aa"]),
        (16, 37, 37, None, None, ((16 + 0.1) / 37, (16 + 0.1) / 37), ["bicubic", "bicubic_aa"]),
        (4, 37, 37, None, None, ((37 + 0.1) / 37, (37 + 0.1) / 37), ["bicubic"]),  # 37.1/37: output 37, scale ≠ 1
        (1, 2048, 2048, 560, 560, None, list(MODES)),                               # preprocessing, downsampling
        (1, 1200, 1000, 560, 560, None, list(MODES)),                               # non-square
        (1, 300, 300, 560, 560, None, list(MODES)),                                 # upsampling
        (2, 512, 640, 224, 224, None, list(MODES)),
        (3, 5, 7, 3, 11, None, list(MODES)),                                        # down one axis, up the other
        (1, 1, 1, 4, 4, None, list(MODES)),
        (1, 8, 8, 8, 8, None, list(MODES)),                                         # identity
        (1, 9, 13, 1, 1, None, list(MODES)),
    ]
    ok = True
    worst = {m: 0.0 for m in MODES}
    for c, ih, iw, oh, ow, scale, modes in cases:
        x = rng.standard_normal((c, ih, iw)) * 3.0
        for mode in modes:
            ref = reference(x, mode, size=None if scale else (oh, ow), scale=scale)
            roh, row = ref.shape[1:]
            sh, sw = scale if scale else (0.0, 0.0)
            ours = run(tool, work, x, mode, roh, row, sh, sw, np.float64)
            label = f"{mode:12s} {c}x{ih}x{iw} -> {roh}x{row}" + (f" scale_factor={scale[0]:.6f}" if scale else "")
            if ours is None:
                print(f"FAIL {label}: the resampler refused")
                ok = False
                continue
            scale_mag = max(1.0, float(np.abs(x).max()))
            d = float(np.max(np.abs(ours - ref)))
            good = d <= F64_TOL * scale_mag
            worst[mode] = max(worst[mode], d)
            print(f"{'ok  ' if good else 'FAIL'} {label}: max|diff| {d:.3g}")
            if not good:
                for i in map(tuple, np.argwhere(np.abs(ours - ref) > F64_TOL * scale_mag)[:5]):
                    print(f"    at {i}: ours {ours[i]!r} torch {ref[i]!r}")
                ok = False
    # float32 in/out (the positional embedding is stored in fp32), compared with torch in float64.
    x = rng.standard_normal((8, 37, 37)).astype(np.float32)
    for mode in MODES:
        ref = reference(x.astype(np.float64), mode, size=(40, 40))
        ours = run(tool, work, x.astype(np.float64), mode, 40, 40, 0.0, 0.0, np.float32)
        d = float(np.max(np.abs(ours.astype(np.float64) - ref))) if ours is not None else float("inf")
        good = d <= F32_TOL * float(np.abs(x).max())
        print(f"{'ok  ' if good else 'FAIL'} {mode:12s} f32 8x37x37 -> 40x40: max|diff| {d:.3g}")
        ok &= good
    # Invalid sizes are refused, not crashed on.
    for bad in (["1", "0", "5", "5", "5"], ["1", "5", "5", "0", "5"], ["0", "5", "5", "5", "5"]):
        p = subprocess.run([tool, "resample", "f64", "bilinear", *bad, "0", "0", "/dev/null", os.devnull],
                           capture_output=True, text=True)
        good = p.returncode != 0 and p.returncode < 128
        print(f"{'ok  ' if good else 'FAIL'} refuses sizes {bad}")
        ok &= good
    print("worst max|diff| per mode (f64):", ", ".join(f"{m} {v:.3g}" for m, v in worst.items()))
    print("resample:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
