#!/usr/bin/env python3
"""CPU engine benchmark: stopcal vs PyTorch eager vs ONNX Runtime on the same weights and threads.

Run everything (creates .venv-bench with onnxruntime + onnx if needed, builds Release in
build-bench, then runs this driver; about 15–20 minutes on 2 quiet cores):

    bash tests/bench/run_engine_bench.sh [--markdown FILE] [driver options]

A benchmark, not a test: it asserts nothing about speed (ARCHITECTURE.md §8 asks for printed ratios).

For ViT-S/14 @224 and ViT-B/14 @560, each with and without 4 registers, at batch 1 and 8, it
prints images/s for
  - ours:  tests/bench/bench_engine (C, in-process vit_forward after one warm-up pass, model load
           excluded), one process per batch size, so its peak RSS is that configuration's;
  - torch: tests/reference/dinov2_torch.py (the parity reference, eager, torch.set_num_threads(N));
  - ORT:   onnxruntime (CPUExecutionProvider, intra_op_num_threads=N, inter_op 1, ORT_ENABLE_ALL)
           on an ONNX export of that same torch module;
the ratios ours/ORT and ours/torch, the machine's own sgemm rate (OpenBLAS, square 4096³ GEMM,
measured by bench_engine --sgemm before and after the runs) and the share of it our whole forward
pass reaches, from FLOPs counted from the architecture:
    per block 2·T·D·(3D + D + 2F) (qkv, proj, fc1, fc2) + 4·T²·D (Q·Kᵀ, P·V);
    + patch embedding 2·g²·3P²·D + head 2·D·H (the engine normalises and classifies CLS only).

ONNX export: torch.onnx (opset 17) traces the reference module with the positional table already
resized for the input grid, so the table is a constant in the graph (the engine too computes it once
per resolution). This also sidesteps torch.onnx's missing antialiased bicubic, so the register
models get ORT figures as well. The batch axis is dynamic (one export per model). Every peer scores
the same pixels (standard normal, seeded), and the table footnotes give each peer's largest logit
difference from torch, to show they computed the same thing.

Iterations (every count is in the table), per round: S@224 1 warm-up + ≥5 timed passes and ≥3 s;
B@560 ours and ORT 1 warm-up + ≥3 timed (batch 1) or ≥2 timed (batch 8) and ≥3 s; torch B@560
(several seconds per image) 1 warm-up + 2 timed at batch 1 and a single timed pass, no warm-up, at
batch 8, in the first round only. --rounds (default 5, at most 2 at 560 px) repeats every
measurement with the engines alternating, in fresh processes, because this machine's speed changes
by tens of % from one minute to the next (other jobs, and the host under the VM), and because some
engines are bimodal from one process to the next (ONNX Runtime's S/14 @224 batch 1 runs at either
~10.8 or ~15.7 img/s here, same model and settings, about one fresh process in three fast); every
figure is the best pass over all rounds, the median in parentheses. Before each measurement the driver waits
(--wait-quiet, default 30 s) for the CPUs to go idle, and the table gives, for each best pass, how
long its threads waited for a CPU (schedstat run delay), and the share of the CPUs other processes
used.

OPENBLAS_CORETYPE is never set or unset here: if it is in the environment, every process inherits
it and the header says so.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GENMODEL = os.path.join(ROOT, "models", "stopcal-genmodel")
DEFAULT_EXE = os.path.join(ROOT, "build-bench", "tests", "bench", "bench_engine")

# name → (variant, registers, input size); the four configurations issue 2 asks for.
CASES = {
    "s224": ("s", 0, 224),
    "s224-reg": ("s", 4, 224),
    "b560": ("b", 0, 560),
    "b560-reg": ("b", 4, 560),
}
ARCH = {"s": (384, 12, 6, 1536), "b": (768, 12, 12, 3072)}  # D, depth, heads, F (ARCHITECTURE.md §3)
PATCH = 14


def flops_per_image(variant, registers, size):
    """The formula in the docstring; bench_engine computes the same from the model file."""
    D, depth, _, F = ARCH[variant]
    g = size // PATCH
    T = 1 + registers + g * g
    block = 2 * T * D * (3 * D + D + 2 * F) + 4 * T * T * D
    head = 2 * D * D + 2 * D  # Linear(D, D) + Linear(D, 1), CLS only
    return depth * block + 2 * g * g * 3 * PATCH * PATCH * D + head


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_delay_s():
    """Seconds this process's threads have waited, runnable, for a CPU (schedstat field 2, summed
    over threads): what other processes on our cores cost us. As bench_engine measures it."""
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1]) * 1e-9
        except (OSError, IndexError, ValueError):
            pass
    return total


def timed_passes(fn, warmup, min_iters, max_iters, min_time):
    """Run fn() warmup times untimed, then until min_iters and min_time are both reached.
    Returns (pass times, run-queue waits per pass, last output)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times, waits = [], []
    while len(times) < max_iters and (len(times) < min_iters or sum(times) < min_time):
        w0, t0 = run_delay_s(), time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        waits.append(run_delay_s() - w0)
    return times, waits, out


def load_pixels(path, batch, size):
    import numpy as np
    a = np.fromfile(path, dtype="<f4").reshape(-1, 3, size, size)
    reps = -(-batch // a.shape[0])
    return np.ascontiguousarray(np.concatenate([a] * reps)[:batch])


# ---------------------------------------------------------------- workers (one process each)

def worker_torch(args):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import dinov2_torch
    torch.set_num_threads(args.threads)
    ref = dinov2_torch.Dinov2Classifier.from_file(args.model)
    x = torch.from_numpy(load_pixels(args.pixels, args.batch, ref.input_size))
    times, waits, out = timed_passes(lambda: ref.logits(x), args.warmup, args.min_iters,
                                     args.max_iters, args.min_time)
    return {"times_s": times, "run_delay_s": waits, "logits": [float(v) for v in out], "peak_rss_mib": peak_rss_mib(),
            "threads": torch.get_num_threads(), "version": torch.__version__}


def worker_export(args):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import dinov2_torch
    ref = dinov2_torch.Dinov2Classifier.from_file(args.model)
    S = ref.input_size
    # The table for this input's grid, resized now (as the engine does once per resolution) and
    # handed to the trace as a constant: under tracing the grid size is a traced value.
    pos = ref.pos_embed_for_grid(S // ref.arch["patch_size"])
    ref.pos_embed_for_grid = lambda grid: pos
    # Same maths, with normalized_shape a Python int: torch 1.13's exporter refuses the traced
    # x.shape[-1] the reference passes.
    D, eps = ref.arch["embed_dim"], ref.arch["layernorm_eps"]
    ref._layer_norm = lambda x, prefix: torch.nn.functional.layer_norm(
        x, (D,), ref.w[prefix + ".weight"], ref.w[prefix + ".bias"], eps=eps)

    class Classifier(torch.nn.Module):
        def forward(self, pixels):
            return ref.logits(pixels)

    t0 = time.perf_counter()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python-side shape checks
        torch.onnx.export(Classifier(), torch.zeros(1, 3, S, S), args.onnx, opset_version=17,
                          input_names=["pixels"], output_names=["logits"],
                          dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    return {"export_s": time.perf_counter() - t0, "bytes": os.path.getsize(args.onnx)}


def worker_ort(args):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    size = sess.get_inputs()[0].shape[-1]
    x = load_pixels(args.pixels, args.batch, size)
    times, waits, out = timed_passes(lambda: sess.run(None, {"pixels": x})[0], args.warmup,
                                     args.min_iters, args.max_iters, args.min_time)
    return {"times_s": times, "run_delay_s": waits, "logits": [float(v) for v in out.reshape(-1)],
            "peak_rss_mib": peak_rss_mib(), "version": ort.__version__}


WORKERS = {"torch": worker_torch, "export": worker_export, "ort": worker_ort}


def run_worker(kind, timeout, **kw):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind]
    for k, v in kw.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return run_json(cmd, timeout)


def system_busy_s():
    """CPU-seconds every process on the machine has used since boot (/proc/stat, all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


QUIET = {"wait_s": 0.0, "threshold": 0.15}
THREADS = [2]


def wait_quiet():
    """Other engineers share this machine: wait (at most QUIET['wait_s']) until the CPUs have been
    nearly idle for a second, and return the share of the CPUs others used in the last sample."""
    deadline = time.monotonic() + QUIET["wait_s"]
    while True:
        b0 = system_busy_s()
        time.sleep(1.0)
        share = (system_busy_s() - b0) / os.cpu_count()
        if share < QUIET["threshold"] or time.monotonic() >= deadline:
            return share
        log(f"  waiting for a quiet machine (others use {100 * share:.0f}% of the CPUs) …")
        time.sleep(4.0)


def run_json(cmd, timeout):
    """Run a measuring process; its JSON result gains wall_s, and other_load: the share of the
    machine's CPUs that other processes used while it ran (its own CPU time subtracted)."""
    before = wait_quiet()
    t0, b0, c0 = time.perf_counter(), system_busy_s(), children_cpu_s()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    wall = time.perf_counter() - t0
    other = ((system_busy_s() - b0) - (children_cpu_s() - c0)) / (wall * os.cpu_count())
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    res["other_load"] = max(0.0, other)
    res["other_load_before"] = before
    return res


# ---------------------------------------------------------------- the driver

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def iteration_plan(case, peer, batch, quick):
    """(warmup, min_iters, max_iters, min_time) for one measurement."""
    slow = CASES[case][2] >= 500
    if quick:
        return (1, 1, 1, 0.0) if slow else (1, 2, 5, 0.5)
    if peer == "torch" and slow:
        # tens of seconds per image: keep the whole run near 15 minutes
        # (batch 8: no warm-up; one pass is minutes and the one-time costs are a fraction of it)
        return (1, 2, 2, 0.0) if batch == 1 else (0, 1, 1, 0.0)
    if slow:
        return (1, 3, 5, 3.0) if batch == 1 else (1, 2, 3, 3.0)
    return (1, 5, 50, 3.0)


def merge(rb, engine, res, plan):
    """Fold one round's measurement into rb[engine]: passes concatenated, worst contention and
    peak RSS kept, the first round's logits and breakdown kept."""
    res["plan"] = plan
    res["rounds"] = 1
    if engine not in rb:
        rb[engine] = res
        return
    acc = rb[engine]
    acc["times_s"] += res["times_s"]
    acc["run_delay_s"] = acc.get("run_delay_s", []) + res.get("run_delay_s", [])
    acc["other_load"] = max(acc["other_load"], res["other_load"])
    for k in ("peak_rss_kib", "peak_rss_mib"):
        if k in res:
            acc[k] = max(acc[k], res[k])
    acc["rounds"] += 1


def summarise(times, batch):
    s = sorted(times)
    med = s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])
    return {"img_s": batch / s[0], "img_s_median": batch / med, "iters": len(s),
            "spread": s[-1] / s[0] - 1}


def sgemm(exe, threads):
    res = run_json([exe, "--sgemm", "4096", "--threads", str(threads), "--min-iters", "5"], 300)
    log(f"sgemm 4096³, {threads} threads: {res['gflops']:.1f} GFLOP/s "
        f"(others used {100 * res['other_load']:.0f}% of the CPUs)")
    return res


def log_result(case, batch, peer, res):
    s = summarise(res["times_s"], batch)
    log(f"{case} batch {batch} {peer:5s}: {s['img_s']:.3g} img/s best, {s['img_s_median']:.3g} "
        f"median, {s['iters']} passes; best pass waited {100 * best_pass_wait(res, THREADS[0]):.0f}% "
        f"for a CPU; others used {100 * res['other_load']:.0f}% of the CPUs")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    p.add_argument("--pixels", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--min-iters", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--max-iters", type=int, default=50, help=argparse.SUPPRESS)
    p.add_argument("--min-time", type=float, default=3.0, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--cases", default=",".join(CASES),
                   help="comma list of " + ", ".join(CASES) + " (default all)")
    p.add_argument("--batches", default="1,8", help="comma list (default 1,8)")
    p.add_argument("--peers", default="torch,ort", help="which peers to run (default torch,ort)")
    p.add_argument("--exe", default=DEFAULT_EXE, help="bench_engine binary (default build-bench)")
    p.add_argument("--markdown", help="also write the table as markdown to this file")
    p.add_argument("--json", help="write every raw measurement as JSON to this file")
    p.add_argument("--workdir", help="keep models and exports here instead of a temp dir")
    p.add_argument("--quick", action="store_true", help="one pass per slow case (a smoke run)")
    p.add_argument("--rounds", type=int, default=5,
                   help="measure every engine this many times, alternating (default 5; at 560 px "
                   "at most 2, and torch there only once)")
    p.add_argument("--breakdown", default="s224,b560", metavar="CASES",
                   help="cases whose batch-1 run also times each operation of a block alone "
                   "(bench_engine --breakdown; default s224,b560; '' for none)")
    p.add_argument("--wait-quiet", type=float, default=30, metavar="S",
                   help="before each measurement wait up to S seconds for other processes to "
                   "leave the CPUs idle (default 30; 0 = never wait)")
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    QUIET["wait_s"] = args.wait_quiet
    THREADS[0] = args.threads
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            p.error(f"unknown case {c}")
    batches = [int(b) for b in args.batches.split(",")]
    peers = [x for x in args.peers.split(",") if x]
    if not os.access(args.exe, os.X_OK):
        p.error(f"{args.exe} is not built: run bash tests/bench/run_engine_bench.sh")

    t_start = time.perf_counter()
    work = args.workdir or tempfile.mkdtemp(prefix="stopcal-bench-")
    os.makedirs(work, exist_ok=True)
    raw = {"cases": {}, "load_avg_start": os.getloadavg(), "threads": args.threads,
           "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        raw["sgemm"] = [sgemm(args.exe, args.threads)]
        import numpy as np
        for case in cases:
            variant, regs, size = CASES[case]
            model = os.path.join(work, case + ".safetensors")
            pixels = os.path.join(work, f"pixels{size}.f32")
            if not os.path.exists(model):
                gen = [sys.executable, GENMODEL, "--variant", variant, "--input-size", str(size),
                       "--seed", "1", "-o", model] + (["--registers", str(regs)] if regs else [])
                subprocess.run(gen, check=True)
            if not os.path.exists(pixels):
                rng = np.random.default_rng(size)
                rng.standard_normal((max(batches), 3, size, size), dtype=np.float32).astype("<f4") \
                    .tofile(pixels)
            r = raw["cases"][case] = {"flops_per_image": flops_per_image(variant, regs, size),
                                      "batches": {}}
            onnx_path = os.path.join(work, case + ".onnx")
            if "ort" in peers and not os.path.exists(onnx_path):
                r["export"] = run_worker("export", 900, model=model, onnx=onnx_path)
                log(f"{case}: ONNX export {r['export']['export_s']:.0f} s")
            for b in batches:
                rb = r["batches"][b] = {}
                # Rounds alternate the engines so that each meets the machine's good and bad
                # moments alike; every engine's figure is its best pass over all rounds.
                rounds = min(args.rounds, 2) if size >= 500 else args.rounds
                for rnd in range(rounds):
                    w, lo, hi, mt = iteration_plan(case, "ours", b, args.quick)
                    breakdown = rnd == 0 and b == 1 and case in args.breakdown.split(",")
                    res = run_json([args.exe, "--model", model, "--pixels", pixels, "--batch",
                                    str(b), "--threads", str(args.threads), "--warmup", str(w),
                                    "--min-iters", str(lo), "--max-iters", str(hi),
                                    "--min-time", str(mt), "--breakdown", str(int(breakdown))], 900)
                    if abs(res["flops_per_image"] / r["flops_per_image"] - 1) > 1e-6:
                        raise RuntimeError(f"FLOP counts disagree: C {res['flops_per_image']}, "
                                           f"python {r['flops_per_image']}")
                    merge(rb, "ours", res, [w, lo, hi, mt])
                    log_result(case, b, "ours", res)
                    for peer in peers:
                        if peer == "torch" and rnd > 0 and CASES[case][2] >= 500:
                            continue  # minutes per round, and far behind anyway
                        w, lo, hi, mt = iteration_plan(case, peer, b, args.quick)
                        kw = dict(pixels=pixels, batch=b, threads=args.threads, warmup=w,
                                  min_iters=lo, max_iters=hi, min_time=mt)
                        if peer == "torch":
                            res = run_worker("torch", 1800, model=model, **kw)
                        else:
                            res = run_worker("ort", 900, onnx=onnx_path, **kw)
                        merge(rb, peer, res, [w, lo, hi, mt])
                        log_result(case, b, peer, res)
            if not args.workdir:
                for f in (model, onnx_path):
                    if os.path.exists(f):
                        os.remove(f)
            raw["sgemm"].append(sgemm(args.exe, args.threads))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    raw["load_avg_end"] = os.getloadavg()
    raw["wall_s"] = time.perf_counter() - t_start
    md = render(raw, cases, batches, peers)
    print(md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)
    return 0


def fmt_rate(res, batch):
    if res is None:
        return "—"
    s = summarise(res["times_s"], batch)
    if s["iters"] == 1:
        return f"{s['img_s']:.3g}"
    return f"{s['img_s']:.3g} ({s['img_s_median']:.3g})"


def plan_str(res):
    if res is None:
        return "—"
    return f"{res.get('rounds', 1)}×{res['plan'][0]}+{len(res['times_s'])}"


def best_pass_wait(res, threads):
    """Share of the best pass its threads spent runnable but without a CPU."""
    i = min(range(len(res["times_s"])), key=lambda j: res["times_s"][j])
    w = res.get("run_delay_s")
    return w[i] / (res["times_s"][i] * threads) if w and w[i] >= 0 else float("nan")


def load_str(res, threads):
    if res is None:
        return "—"
    return f"{100 * best_pass_wait(res, threads):.0f} ({100 * res['other_load']:.0f})"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def render_breakdown(raw, cases):
    """Where one pass of ours goes: each op of a block timed alone (bench_engine --breakdown)."""
    rows = [(c, raw["cases"][c]["batches"][b]["ours"]) for c in cases
            for b in raw["cases"][c]["batches"] if "breakdown" in raw["cases"][c]["batches"][b]["ours"]]
    if not rows:
        return []
    head = [c for c, _ in rows]
    out = ["", "Where our batch-1 pass goes: each operation of a block timed alone, as the CPU "
           "backend runs it, at the model's shapes with random data (best call × blocks; % of the "
           "measured pass; GFLOP/s for GEMMs). Indented rows are not counted in the sum: the "
           "portable BLAS attention and its GEMMs, fc1 without its fused GELU, and OpenBLAS's "
           "sgemm at the fc1 shape, for comparison.", "",
           "| op | " + " | ".join(f"{c}: ms/pass (%, GFLOP/s)" for c in head) + " |",
           "|---|" + "---|" * len(head)]
    ops = [x["op"] for x in rows[0][1]["breakdown"]]
    for i, op in enumerate(ops):
        cells = []
        for _, res in rows:
            x = res["breakdown"][i]
            g = f", {x['gflops']:.0f}" if x["gflops"] else ""
            cells.append(f"{1e3 * x['per_pass_s']:.1f} ({100 * x['share']:.0f}%{g})")
        out.append(f"| {op.replace('  ', '↳ ', 1) if op.startswith('  ') else op} | "
                   + " | ".join(cells) + " |")
    out.append("| sum of a block's ops × blocks / measured pass | " + " | ".join(
        f"{1e3 * res['breakdown_sum_s']:.0f} / {1e3 * res['best_s']:.0f} ms" for _, res in rows)
        + " |")
    return out


def render(raw, cases, batches, peers):
    th = raw["threads"]
    sg = [x["gflops"] for x in raw["sgemm"]]
    peak = max(sg)
    o = raw["sgemm"][0]
    versions = {}
    for case in cases:
        for b in batches:
            for peer in peers:
                res = raw["cases"][case]["batches"][b].get(peer)
                if res:
                    versions[peer] = res.get("version")
    lines = [
        "### stopcal CPU engine vs PyTorch eager vs ONNX Runtime",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, "
        f"{raw['threads']} threads for every engine. OpenBLAS: {o['openblas_config']} "
        f"(core {o['openblas_core']}); OPENBLAS_CORETYPE "
        + (f"= {raw['openblas_coretype']} (inherited)" if raw["openblas_coretype"] else "not set")
        + f". torch {versions.get('torch', '—')}, onnxruntime {versions.get('ort', '—')}.",
        f"sgemm 4096³ (OpenBLAS, {raw['threads']} threads), measured before the first case and "
        f"after each: {', '.join(f'{x:.0f}' for x in sg)} GFLOP/s; the % column uses the best, "
        f"{peak:.1f} GFLOP/s. "
        f"Load average {raw['load_avg_start'][0]:.2f} at start, {raw['load_avg_end'][0]:.2f} at end; "
        f"whole run {raw['wall_s'] / 60:.1f} min.",
        "",
        "| model | tokens | GFLOP/img | batch | ours img/s | torch img/s | ORT img/s | ours/ORT | "
        "ours/torch | ours GFLOP/s | % of sgemm | ours peak RSS MiB | passes ours/torch/ORT | "
        "CPU wait % of best pass (others' CPU %) ours / torch / ORT |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for case in cases:
        variant, regs, size = CASES[case]
        r = raw["cases"][case]
        name = f"ViT-{variant.upper()}/14{'-reg4' if regs else ''} @{size}"
        for b in batches:
            rb = r["batches"][b]
            ours = summarise(rb["ours"]["times_s"], b)
            t = rb.get("torch")
            x = rb.get("ort")
            ratio = lambda peer: (f"{ours['img_s'] / summarise(peer['times_s'], b)['img_s']:.2f}×"
                                  if peer else "—")
            gf = ours["img_s"] * r["flops_per_image"] * 1e-9
            lines.append(
                f"| {name} | {rb['ours']['tokens']} | {r['flops_per_image'] * 1e-9:.1f} | {b} | "
                f"{fmt_rate(rb['ours'], b)} | {fmt_rate(t, b)} | {fmt_rate(x, b)} | {ratio(x)} | "
                f"{ratio(t)} | {gf:.0f} | {100 * gf / peak:.0f}% | "
                f"{rb['ours']['peak_rss_kib'] / 1024:.0f} | "
                f"{plan_str(rb['ours'])} / {plan_str(t)} / {plan_str(x)} | "
                f"{load_str(rb['ours'], th)} / {load_str(t, th)} / {load_str(x, th)} |")
            ref = t["logits"] if t else None
            if ref:
                d = {k: max(abs(a - c) for a, c in zip(rb[k]["logits"], ref))
                     for k in ("ours", "ort") if rb.get(k)}
                notes.append(f"{name} b{b}: max |logit − torch| " +
                             ", ".join(f"{k} {v:.1e}" for k, v in d.items()))
    lines += [
        "",
        "img/s: best pass (median pass in parentheses; one figure where one pass was timed). "
        "Passes: R×W+N = R rounds (separate processes, engines alternating) of W warm-up "
        "passes each, N timed passes in all. ours/ORT and ours/torch compare best passes. "
        "GFLOP/img is counted from the architecture (per block 2·T·D·(4D + 2F) + 4·T²·D, plus patch "
        "embedding and head); % of sgemm = ours GFLOP/s / the machine's sgemm GFLOP/s. "
        "CPU wait %: how long the best pass's threads sat runnable without a CPU (schedstat "
        "run delay, summed over threads, / (pass time × threads)) — other processes on our "
        "cores; in parentheses, the share of the machine's CPUs other processes used during the "
        "whole measurement (/proc/stat minus our own CPU time, model loading included). The "
        "driver waits for a quiet machine before each measurement; a row whose wait % is above "
        "a few % is depressed by other jobs, not by its engine.",
        "ORT runs a torch.onnx export (opset 17, dynamic batch axis) of "
        "tests/reference/dinov2_torch.py with the positional table pre-resized to the input grid "
        "(a constant in the graph) and LayerNorm's normalized_shape given as an int (same maths; "
        "torch 1.13 cannot export the traced one), so register models (whose antialiased bicubic "
        "torch.onnx cannot export) are timed too; CPUExecutionProvider, intra-op threads "
        f"{raw['threads']}, inter-op 1, sequential, ORT_ENABLE_ALL.",
        "Peak RSS (getrusage) of the peers' processes, MiB: " + "; ".join(
            f"{CASES[c][0].upper()}{'-reg' if CASES[c][1] else ''}@{CASES[c][2]} b{b} " + ", ".join(
                f"{peer} {raw['cases'][c]['batches'][b][peer]['peak_rss_mib']:.0f}"
                for peer in peers if raw["cases"][c]["batches"][b].get(peer))
            for c in cases for b in batches) + ".",
    ] + (["Same pixels through every engine: " + "; ".join(notes) + "."] if notes else []) \
        + render_breakdown(raw, cases)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
