#!/usr/bin/env python3
"""Benchmark (not a test): FITS bytes → model input tensor for a 2048² LOFAR-like image, one thread,
ours (image_tool bench → image_to_tensor) against the Python reference path:
  - "reference f64": models/convert/reference_preprocess.py, the float64 maths our parity tests compare with;
  - "deployed f32": cortExchange as deployed — astropy's float32 array through numpy/matplotlib in
    float32, interpolate in float32 (what V3 does; V2 even does it in bfloat16).
Prints MPixel/s (input pixels per second) for each and the ratios. Target (ARCHITECTURE.md §8): ≥ 10×.

Usage: bench_preprocess.py IMAGE_TOOL [WORKDIR] [--seconds S]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from astropy.io import fits  # noqa: E402
from matplotlib.colors import SymLogNorm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "image"))
import gen_fits  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "convert"))
import reference_preprocess as ref_preprocess  # noqa: E402


def deployed_f32(path, profile, size):
    """The deployed path's dtypes: astropy float32 in, numpy/matplotlib in float32, interpolate in
    float32, NaN set to 0 first (as our service does)."""
    with fits.open(path) as hdul:
        data = hdul[0].data.squeeze()
    data = np.nan_to_num(data, nan=0.0)
    rms = ref_preprocess.get_rms(data)
    y = SymLogNorm(linthresh=rms * 2, linscale=2, vmin=-rms, vmax=rms * 50000, base=10)(data)
    y = np.clip(y - y.min(), 0, 1)
    t = torch.from_numpy(np.ma.getdata(y)[..., None]).swapdims(0, 2).unsqueeze(0)
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=profile == "cortexchange-v3")
    return t.repeat_interleave(3, dim=1)


def time_python(fn, seconds):
    """Best wall and best CPU time per call (the machine may be shared: CPU time is the steadier)."""
    fn()  # warm up (imports, allocator)
    walls, cpus = [], []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(walls) < 3:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = 5.0
    if "--seconds" in sys.argv:
        seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
        args = [a for a in args if a != sys.argv[sys.argv.index("--seconds") + 1]]
    tool = args[0]
    work = args[1] if len(args) > 1 else tempfile.mkdtemp(prefix="stopcal-bench-")
    torch.set_num_threads(1)
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "bench_2048.fits")
    if not os.path.exists(path):
        gen_fits.lofar_4d(path, 2048, 2048, 1)
    mpix = 2048 * 2048 / 1e6
    print(f"image: {path} (2048 x 2048 float32, LOFAR-like 4-D, NaN border); one thread; best of >= {seconds:g} s")
    print(f"{'':18s}{'wall':>22s}{'cpu':>24s}")
    for profile in ("cortexchange-v2", "cortexchange-v3"):
        p = subprocess.run([tool, "bench", profile, "560", str(seconds), path], capture_output=True, text=True,
                           check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        ours = json.loads(p.stdout)
        rows = [("ours (C)", ours["best_s"], ours["best_cpu_s"]),
                ("reference f64", *time_python(lambda: ref_preprocess.preprocess(path, profile, 560), seconds)),
                ("deployed f32", *time_python(lambda: deployed_f32(path, profile, 560), seconds))]
        print(f"{profile}:")
        for name, wall, cpu in rows:
            ratio = "" if name.startswith("ours") else \
                f"   ours x{wall / ours['best_s']:.1f} (wall), x{cpu / ours['best_cpu_s']:.1f} (cpu)"
            print(f"  {name:16s}{mpix / wall:8.1f} MPixel/s {wall * 1e3:7.1f} ms"
                  f"{mpix / cpu:8.1f} MPixel/s {cpu * 1e3:7.1f} ms{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
