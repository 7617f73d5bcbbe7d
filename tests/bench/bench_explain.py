#!/usr/bin/env python3
"""What explaining costs (not part of ctest): the time of an explained request vs a plain one on
the same stopcald, for S/14 @ 224 px and B/14-reg @ 560 px (random weights, full depth), with one
FITS image per request: /v1/predict, /v1/explain (JSON, the last block's CLS attention), with
rollout=1, as a PNG, and /v1/predict again afterwards (an ordinary request must not have become
slower once explain passes have run). Medians of --repeat requests, one at a time.

  python3 tests/bench/bench_explain.py [--repeat 5]   (builds build-bench-explain, Release)
  python3 tests/bench/bench_explain.py --no-build --build build-dev   (an existing build)"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "server"))
import serverlib as sl  # noqa: E402


def timed(srv, path, fits, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.monotonic()
        r = sl.curl(srv.url(path), "-H", "Content-Type: application/fits", "--data-binary", "@" + fits, timeout=600)
        times.append(time.monotonic() - t0)
        if r.status != 200:
            raise SystemExit("%s: %r" % (path, r))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--build", default=os.path.join(ROOT, "build-bench-explain"))
    p.add_argument("--no-build", action="store_true", help="use the stopcald already in --build as it is")
    args = p.parse_args()
    if not args.no_build:
        subprocess.run(["cmake", "-S", ROOT, "-B", args.build, "-DCMAKE_BUILD_TYPE=Release",
                        "-DSTOPCAL_SANITIZE=OFF"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", args.build, "-j", str(os.cpu_count() or 2), "--target", "stopcald"],
                       check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="bench-explain-")
    gen = os.path.join(ROOT, "models", "stopcal-genmodel")
    models = {"s14-224": ["--variant", "s", "--input-size", "224"],
              "b14reg-560": ["--variant", "b", "--registers", "4", "--input-size", "560"]}
    paths = []
    for name, a in models.items():
        out = os.path.join(work, name + ".safetensors")
        subprocess.run([sys.executable, gen, *a, "--seed", "1", "--name", name, "-o", out], check=True,
                       stdout=subprocess.DEVNULL)
        paths.append("%s=%s" % (name, out))
    fits = os.path.join(ROOT, "models", "demo", "examples", "clean_stop.fits")
    srv = sl.Server(os.path.join(args.build, "server", "stopcald"), paths, "--max-batch", "8")
    try:
        nproc = os.cpu_count()
        load = os.getloadavg()[0]
        print("bench_explain: %d CPUs, load average %.1f%s, median of %d requests each, one at a time" %
              (nproc, load, " (shared with other work: the ratios are indicative)" if load > 1.5 else "",
               args.repeat))
        print("%-12s %10s %10s %8s %10s %8s %10s %8s %12s" % ("model", "predict s", "explain s", "ratio",
                                                            "rollout s", "ratio", "png s", "ratio",
                                                            "predict after"))
        for name in models:
            q = "?model=" + name
            plain = timed(srv, "/v1/predict" + q, fits, args.repeat)
            ex = timed(srv, "/v1/explain" + q, fits, args.repeat)
            ro = timed(srv, "/v1/explain" + q + "&rollout=1", fits, args.repeat)
            png = timed(srv, "/v1/explain" + q + "&format=png", fits, args.repeat)
            after = timed(srv, "/v1/predict" + q, fits, args.repeat)
            print("%-12s %10.3f %10.3f %7.2fx %10.3f %7.2fx %10.3f %7.2fx %12.3f" %
                  (name, plain, ex, ex / plain, ro, ro / plain, png, png / plain, after))
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
