#!/usr/bin/env python3
"""CPU engine benchmark: stopcal (fp32 and bf16) vs PyTorch eager (fp32 and bf16 autocast), ONNX
Runtime and OpenVINO (fp32 and bf16) on the same weights, pixels and threads.

Run everything (creates .venv-bench with onnxruntime + onnx if needed, builds Release in
build-bench, then runs this driver; about 15–20 minutes on 2 quiet cores):

    bash tests/bench/run_engine_bench.sh [--markdown FILE] [driver options]

A benchmark, not a test: it asserts nothing about speed (ARCHITECTURE.md §8 asks for printed ratios).

For ViT-S/14 @224 and ViT-B/14 @560, each with and without 4 registers, and DINOv3's ViT-B/16
(4 storage tokens, RoPE) @224 and @560, at batch 1 and 8, it prints images/s for
  - ours:  tests/bench/bench_engine (C, in-process vit_forward after one warm-up pass, model load
           excluded), one process per batch size, so its peak RSS is that configuration's;
  - torch: tests/reference/dinov2_torch.py or dinov3_torch.py (the parity reference of the model's
           family, eager, torch.set_num_threads(N));
  - ORT:   onnxruntime (CPUExecutionProvider, intra_op_num_threads=N, inter_op 1, ORT_ENABLE_ALL)
           on an ONNX export of that same torch module;
  - OV:    OpenVINO (PyPI `openvino`, CPU plugin, INFERENCE_NUM_THREADS=N, one stream, LATENCY) on
           the same ONNX file, compiled with INFERENCE_PRECISION_HINT f32 ("ov") and bf16
           ("ov-bf16"); the compiled model's INFERENCE_PRECISION_HINT is read back and printed, and
           a bf16 row whose compiled model did not keep bf16 (a CPU without AVX512_BF16/AMX: the
           plugin falls back to f32) is reported as such, not timed as bf16;
  - torch-bf16: the same torch module under torch.autocast("cpu", torch.bfloat16), the
           pipeline's own setting;
  - ours-bf16: bench_engine with STOPCAL_PRECISION=bf16 (the AVX512_BF16 kernels); on a CPU
           without them the engine refuses, and the row says so with the engine's message;
the ratios ours/ORT and ours/torch, the machine's own sgemm rate (OpenBLAS, square 4096³ GEMM,
measured by bench_engine --sgemm before and after the runs) and the share of it our whole forward
pass reaches; the multiply-add instructions' own peaks (bench_engine --peak: register-only loops of
fp32 FMAs and of vdpbf16ps, measured with the sgemm) and the share of the bf16 one that our bf16
pass and OpenVINO's reach; all from FLOPs counted from the architecture:
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

# name → (variant, registers, input size); the four configurations issue 2 asks for, and the
# DINOv3 B/16 ones of issue 15 (family in FAMILY, default dinov2).
CASES = {
    "s224": ("s", 0, 224),
    "s224-reg": ("s", 4, 224),
    "b560": ("b", 0, 560),
    "b560-reg": ("b", 4, 560),
    "v3-b224": ("b", 4, 224),
    "v3-b560": ("b", 4, 560),
}
FAMILY = {"v3-b224": "dinov3", "v3-b560": "dinov3"}
ARCH = {"s": (384, 12, 6, 1536), "b": (768, 12, 12, 3072)}  # D, depth, heads, F (ARCHITECTURE.md §3)
PATCHES = {"dinov2": 14, "dinov3": 16}


def family(case):
    return FAMILY.get(case, "dinov2")


def case_name(case):
    variant, regs, size = CASES[case]
    if family(case) == "dinov3":
        return f"DINOv3 ViT-{variant.upper()}/16 @{size}"
    return f"ViT-{variant.upper()}/14{'-reg4' if regs else ''} @{size}"


def flops_per_image(variant, registers, size, fam="dinov2"):
    """The formula in the docstring; bench_engine computes the same from the model file. (The
    DINOv3 RoPE rotation, O(T·D) per block, is left out as the norms and softmax are.)"""
    PATCH = PATCHES[fam]
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

def worker_torch(args, autocast=False):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import dinov3_torch
    torch.set_num_threads(args.threads)
    ref = dinov3_torch.classifier_for(args.model)
    x = torch.from_numpy(load_pixels(args.pixels, args.batch, ref.input_size))

    def run():
        if not autocast:
            return ref.logits(x)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return ref.logits(x).float()

    times, waits, out = timed_passes(run, args.warmup, args.min_iters, args.max_iters, args.min_time)
    return {"times_s": times, "run_delay_s": waits, "logits": [float(v) for v in out], "peak_rss_mib": peak_rss_mib(),
            "threads": torch.get_num_threads(), "version": torch.__version__,
            "precision": "bf16 autocast" if autocast else "fp32"}


def worker_torch_bf16(args):
    return worker_torch(args, autocast=True)


def openvino_compile(onnx, threads, precision):
    """(compiled model, what the compiled model says its INFERENCE_PRECISION_HINT is, the CPU
    plugin's OPTIMIZATION_CAPABILITIES, version), or raises ImportError when openvino is missing."""
    import openvino as ov
    core = ov.Core()
    caps = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    compiled = core.compile_model(core.read_model(onnx), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: "f32", "bf16", "f16"
    hint = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return compiled, hint, caps, ov.__version__


def is_bf16(hint):
    return hint.lower() in ("bf16", "bfloat16") or "bfloat16" in hint.lower()


def worker_ov(args, precision="f32"):
    try:
        compiled, hint, caps, version = openvino_compile(args.onnx, args.threads, precision)
    except ImportError:
        return {"unavailable": "openvino is not installed in this Python (pip install openvino)"}
    res = {"inference_precision_hint": hint, "cpu_capabilities": caps, "version": version}
    log(f"  OpenVINO {version}: asked INFERENCE_PRECISION_HINT={precision}, the compiled model says "
        f"{hint}; CPU capabilities {', '.join(caps)}")
    if precision == "bf16" and not is_bf16(hint):
        res["unavailable"] = (f"OpenVINO compiled the model at INFERENCE_PRECISION_HINT={hint}: this "
                              f"CPU cannot run bf16 (capabilities: {', '.join(caps)}; bf16 needs "
                              "AVX512_BF16 or AMX)")
        return res
    x = load_pixels(args.pixels, args.batch, compiled.inputs[0].get_partial_shape()[-1].get_length())
    req = compiled.create_infer_request()
    out_port = compiled.outputs[0]

    def run():
        return req.infer({0: x})[out_port]

    times, waits, out = timed_passes(run, args.warmup, args.min_iters, args.max_iters, args.min_time)
    res.update({"times_s": times, "run_delay_s": waits, "logits": [float(v) for v in out.reshape(-1)],
                "peak_rss_mib": peak_rss_mib(), "precision": hint})
    return res


def worker_ov_bf16(args):
    return worker_ov(args, "bf16")


def worker_export(args):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import dinov3_torch
    ref = dinov3_torch.classifier_for(args.model)
    S = ref.input_size
    # The table for this input's grid (DINOv2's resized positions, DINOv3's RoPE sin/cos),
    # computed now (as the engine does once per resolution) and handed to the trace as a
    # constant: under tracing the grid size is a traced value.
    g = S // ref.arch["patch_size"]
    if ref.arch["family"] == "dinov3":
        rope = ref.rope(g, g)
        ref.rope = lambda h, w: rope
    else:
        pos = ref.pos_embed_for_grid(g)
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


WORKERS = {"torch": worker_torch, "export": worker_export, "ort": worker_ort, "ov": worker_ov,
           "ov-bf16": worker_ov_bf16, "torch-bf16": worker_torch_bf16}
PEERS = ("torch", "ort", "ov", "ov-bf16", "torch-bf16")


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


class Refused(RuntimeError):
    """The engine declined the configuration (e.g. bf16 on a CPU without it); str() is its message."""


def run_json(cmd, timeout, env=None, refusal=None):
    """Run a measuring process; its JSON result gains wall_s, and other_load: the share of the
    machine's CPUs that other processes used while it ran (its own CPU time subtracted). A failure
    whose stderr holds `refusal` raises Refused with the process's last stderr line."""
    before = wait_quiet()
    t0, b0, c0 = time.perf_counter(), system_busy_s(), children_cpu_s()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=env)
    if p.returncode != 0 and refusal and refusal in p.stderr:
        raise Refused(p.stderr.strip().splitlines()[-1])
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
    if peer in ("torch", "torch-bf16") and slow:
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


def peaks(exe, threads):
    res = run_json([exe, "--peak", "1", "--threads", str(threads)], 120)
    bf16 = res["bf16_dot_gflops"]
    log(f"instruction peaks, {threads} threads: fp32 FMA {res['fp32_fma_gflops']:.0f} GFLOP/s, "
        + (f"vdpbf16ps {bf16:.0f} GFLOP/s" if bf16 else "no vdpbf16ps"))
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
    p.add_argument("--peers", default=",".join(PEERS),
                   help="which peers to run, of " + ", ".join(PEERS) + " (default all)")
    p.add_argument("--ours", default="fp32,bf16",
                   help="our precisions to run: fp32, bf16 (STOPCAL_PRECISION=bf16) (default both)")
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
    for x in peers:
        if x not in PEERS:
            p.error(f"unknown peer {x}")
    ours_precisions = [x for x in args.ours.split(",") if x]
    if not set(ours_precisions) <= {"fp32", "bf16"}:
        p.error("--ours takes fp32 and/or bf16")
    if not os.access(args.exe, os.X_OK):
        p.error(f"{args.exe} is not built: run bash tests/bench/run_engine_bench.sh")

    t_start = time.perf_counter()
    work = args.workdir or tempfile.mkdtemp(prefix="stopcal-bench-")
    os.makedirs(work, exist_ok=True)
    raw = {"cases": {}, "load_avg_start": os.getloadavg(), "threads": args.threads,
           "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        raw["sgemm"] = [sgemm(args.exe, args.threads)]
        raw["peaks"] = [peaks(args.exe, args.threads)]
        import numpy as np
        for case in cases:
            variant, regs, size = CASES[case]
            model = os.path.join(work, case + ".safetensors")
            pixels = os.path.join(work, f"pixels{size}.f32")
            if not os.path.exists(model):
                gen = [sys.executable, GENMODEL, "--family", family(case), "--variant", variant,
                       "--input-size", str(size), "--seed", "1", "-o", model,
                       "--registers", str(regs)]
                subprocess.run(gen, check=True)
            if not os.path.exists(pixels):
                rng = np.random.default_rng(size)
                rng.standard_normal((max(batches), 3, size, size), dtype=np.float32).astype("<f4") \
                    .tofile(pixels)
            r = raw["cases"][case] = {"flops_per_image": flops_per_image(variant, regs, size,
                                                                         family(case)),
                                      "batches": {}}
            onnx_path = os.path.join(work, case + ".onnx")
            if {"ort", "ov", "ov-bf16"} & set(peers) and not os.path.exists(onnx_path):
                r["export"] = run_worker("export", 900, model=model, onnx=onnx_path)
                log(f"{case}: ONNX export {r['export']['export_s']:.0f} s")
            for b in batches:
                rb = r["batches"][b] = {}
                # Rounds alternate the engines so that each meets the machine's good and bad
                # moments alike; every engine's figure is its best pass over all rounds.
                rounds = min(args.rounds, 2) if size >= 500 else args.rounds
                for rnd in range(rounds):
                    w, lo, hi, mt = iteration_plan(case, "ours", b, args.quick)
                    for prec in ours_precisions:
                        engine = "ours" if prec == "fp32" else "ours-bf16"
                        if engine in rb and "unavailable" in rb[engine]:
                            continue
                        breakdown = rnd == 0 and b == 1 and case in args.breakdown.split(",")
                        env = dict(os.environ, STOPCAL_PRECISION=prec)
                        try:
                            res = run_json([args.exe, "--model", model, "--pixels", pixels, "--batch",
                                            str(b), "--threads", str(args.threads), "--warmup", str(w),
                                            "--min-iters", str(lo), "--max-iters", str(hi),
                                            "--min-time", str(mt), "--breakdown", str(int(breakdown))],
                                           900, env=env, refusal="--precision")
                        except Refused as e:
                            rb[engine] = {"unavailable": f"stopcal refused: {e}"}
                            log(f"{case} batch {b} {engine}: {rb[engine]['unavailable']}")
                            continue
                        if abs(res["flops_per_image"] / r["flops_per_image"] - 1) > 1e-6:
                            raise RuntimeError(f"FLOP counts disagree: C {res['flops_per_image']}, "
                                               f"python {r['flops_per_image']}")
                        if res.get("precision", "fp32") != prec:
                            raise RuntimeError(f"bench_engine ran {res.get('precision')}, not {prec}")
                        merge(rb, engine, res, [w, lo, hi, mt])
                        log_result(case, b, engine, res)
                    for peer in peers:
                        if peer in ("torch", "torch-bf16") and rnd > 0 and CASES[case][2] >= 500:
                            continue  # minutes per round, and far behind anyway
                        if peer in rb and "unavailable" in rb[peer]:
                            continue
                        w, lo, hi, mt = iteration_plan(case, peer, b, args.quick)
                        kw = dict(pixels=pixels, batch=b, threads=args.threads, warmup=w,
                                  min_iters=lo, max_iters=hi, min_time=mt)
                        if peer.startswith("torch"):
                            res = run_worker(peer, 3600, model=model, **kw)
                        else:
                            res = run_worker(peer, 900, onnx=onnx_path, **kw)
                        if "unavailable" in res:
                            rb[peer] = res
                            log(f"{case} batch {b} {peer}: {res['unavailable']}")
                            continue
                        merge(rb, peer, res, [w, lo, hi, mt])
                        log_result(case, b, peer, res)
            if not args.workdir:
                for f in (model, onnx_path):
                    if os.path.exists(f):
                        os.remove(f)
            raw["sgemm"].append(sgemm(args.exe, args.threads))
            raw["peaks"].append(peaks(args.exe, args.threads))
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


def peak_note(raw, engine):
    """The instruction's own peak, for reading a breakdown's GEMM GFLOP/s against."""
    key = "bf16_dot_gflops" if engine == "ours-bf16" else "fp32_fma_gflops"
    best = max((x[key] for x in raw.get("peaks", []) if x.get(key)), default=None)
    name = "vdpbf16ps" if engine == "ours-bf16" else "the fp32 FMA"
    return f" The GEMMs' ceiling here, {name} alone in registers: {best:.0f} GFLOP/s." if best else ""


def render_breakdown(raw, cases, engine):
    """Where one pass of ours (engine: ours or ours-bf16) goes: each op of a block timed alone
    (bench_engine --breakdown)."""
    rows = [(c, raw["cases"][c]["batches"][b][engine]) for c in cases
            for b in raw["cases"][c]["batches"]
            if "breakdown" in raw["cases"][c]["batches"][b].get(engine, {})]
    if not rows:
        return []
    head = [c for c, _ in rows]
    out = ["", f"Where our {ENGINE_LABELS[engine].split()[-1]} batch-1 pass goes: each operation "
           "of a block timed alone, as the CPU backend runs it, at the model's shapes with random "
           "data (best call × blocks; % of the measured pass; GFLOP/s for GEMMs). Indented rows "
           "are not counted in the sum: the portable fp32 BLAS attention and its GEMMs, fc1 "
           "without its fused GELU, and OpenBLAS's sgemm at the fc1 shape, for comparison."
           + peak_note(raw, engine), "",
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


ENGINE_LABELS = {"ours": "ours fp32", "ours-bf16": "ours bf16", "torch": "torch fp32",
                 "torch-bf16": "torch bf16 autocast", "ort": "ORT fp32", "ov": "OpenVINO fp32",
                 "ov-bf16": "OpenVINO bf16"}


def rate(rb, engine, b):
    res = rb.get(engine)
    return summarise(res["times_s"], b)["img_s"] if res and "times_s" in res else None


def render(raw, cases, batches, peers):
    th = raw["threads"]
    sg = [x["gflops"] for x in raw["sgemm"]]
    peak = max(sg)
    o = raw["sgemm"][0]
    fma_peaks = [x["fp32_fma_gflops"] for x in raw.get("peaks", []) if x.get("fp32_fma_gflops")]
    bf16_peaks = [x["bf16_dot_gflops"] for x in raw.get("peaks", []) if x.get("bf16_dot_gflops")]
    bf16_peak = max(bf16_peaks) if bf16_peaks else None
    engines = [e for e in ("ours", "ours-bf16") if any(
        e in raw["cases"][c]["batches"][b] for c in cases for b in batches)] + list(peers)
    versions, hints = {}, {}
    for case in cases:
        for b in batches:
            for peer in peers:
                res = raw["cases"][case]["batches"][b].get(peer)
                if res and res.get("version"):
                    versions[peer] = res.get("version")
                if res and res.get("inference_precision_hint"):
                    hints.setdefault(peer, set()).add(res["inference_precision_hint"])
    lines = [
        "### stopcal CPU engine vs PyTorch eager, ONNX Runtime and OpenVINO (fp32 and bf16)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, "
        f"{raw['threads']} threads for every engine. OpenBLAS: {o['openblas_config']} "
        f"(core {o['openblas_core']}); OPENBLAS_CORETYPE "
        + (f"= {raw['openblas_coretype']} (inherited)" if raw["openblas_coretype"] else "not set")
        + f". torch {versions.get('torch', versions.get('torch-bf16', '—'))}, onnxruntime "
        f"{versions.get('ort', '—')}, openvino {versions.get('ov', versions.get('ov-bf16', '—'))}"
        + "".join(f"; {ENGINE_LABELS[k]}: the compiled model's INFERENCE_PRECISION_HINT = "
                  f"{', '.join(sorted(v))}" for k, v in sorted(hints.items())) + ".",
        f"sgemm 4096³ (OpenBLAS, {raw['threads']} threads), measured before the first case and "
        f"after each: {', '.join(f'{x:.0f}' for x in sg)} GFLOP/s; the % column uses the best, "
        f"{peak:.1f} GFLOP/s. "
        + (f"Instruction peaks (register-only loops of independent multiply-adds, "
           f"{raw['threads']} threads, at the same moments): fp32 FMA "
           f"{', '.join(f'{x:.0f}' for x in fma_peaks)} GFLOP/s"
           + (f"; vdpbf16ps {', '.join(f'{x:.0f}' for x in bf16_peaks)} GFLOP/s, the bf16 "
              f"% column uses the best, {bf16_peak:.1f}" if bf16_peak else "; no vdpbf16ps on this CPU")
           + ". " if fma_peaks else "")
        + f"Load average {raw['load_avg_start'][0]:.2f} at start, {raw['load_avg_end'][0]:.2f} at end; "
        f"whole run {raw['wall_s'] / 60:.1f} min.",
        "",
        "| model | tokens | GFLOP/img | batch | " + " | ".join(f"{ENGINE_LABELS[e]} img/s" for e in engines)
        + " | ours/ORT | ours/torch | ours bf16 / OpenVINO bf16 | ours bf16 / ours fp32 | ours GFLOP/s "
        "(% of sgemm) | bf16 GFLOP/s ours / OpenVINO (% of vdpbf16ps peak) | ours peak RSS MiB | passes " + " / ".join(engines) + " | CPU wait % of best "
        "pass (others' CPU %) " + " / ".join(engines) + " |",
        "|---|---|---|---|" + "---|" * (len(engines) + 9),
    ]
    notes, unavailable = [], {}
    for case in cases:
        r = raw["cases"][case]
        name = case_name(case)
        for b in batches:
            rb = r["batches"][b]
            cells = []
            for e in engines:
                res = rb.get(e)
                if res and "unavailable" in res:
                    mark = unavailable.setdefault(res["unavailable"], len(unavailable) + 1)
                    cells.append(f"n/a ({mark})")
                else:
                    cells.append(fmt_rate(res, b) if res else "—")

            def ratio(a, c):
                x, y = rate(rb, a, b), rate(rb, c, b)
                return f"{x / y:.2f}×" if x and y else "—"

            ours = rb.get("ours") if rb.get("ours") and "times_s" in rb["ours"] else None
            gf = (f"{rate(rb, 'ours', b) * r['flops_per_image'] * 1e-9:.0f} "
                  f"({100 * rate(rb, 'ours', b) * r['flops_per_image'] * 1e-9 / peak:.0f}%)") if ours else "—"
            def bf16_share(e):
                x = rate(rb, e, b)
                if not x:
                    return "—"
                gflops = x * r["flops_per_image"] * 1e-9
                return f"{gflops:.0f}" + (f" ({100 * gflops / bf16_peak:.0f}%)" if bf16_peak else "")

            tokens = next((rb[e]["tokens"] for e in ("ours", "ours-bf16") if rb.get(e) and "tokens" in rb[e]), "—")
            timed = lambda e: rb.get(e) and "times_s" in rb[e]
            lines.append(
                f"| {name} | {tokens} | {r['flops_per_image'] * 1e-9:.1f} | {b} | " + " | ".join(cells)
                + f" | {ratio('ours', 'ort')} | {ratio('ours', 'torch')} | {ratio('ours-bf16', 'ov-bf16')} | "
                f"{ratio('ours-bf16', 'ours')} | {gf} | {bf16_share('ours-bf16')} / {bf16_share('ov-bf16')} | "
                + (f"{ours['peak_rss_kib'] / 1024:.0f}" if ours else "—") + " | "
                + " / ".join(plan_str(rb[e]) if timed(e) else "—" for e in engines) + " | "
                + " / ".join(load_str(rb[e], th) if timed(e) else "—" for e in engines) + " |")
            t = rb.get("torch")
            ref = t["logits"] if t and "logits" in t else None
            if ref:
                d = {k: max(abs(a - c) for a, c in zip(rb[k]["logits"], ref))
                     for k in engines if k != "torch" and rb.get(k) and "logits" in rb[k]}
                notes.append(f"{name} b{b}: max |logit − torch fp32| " +
                             ", ".join(f"{ENGINE_LABELS[k]} {v:.1e}" for k, v in d.items()))
    lines += [
        "",
        "img/s: best pass (median pass in parentheses; one figure where one pass was timed). "
        "n/a (k): the engine cannot run that configuration on this machine, for reason k below. "
        "Passes: R×W+N = R rounds (separate processes, engines alternating) of W warm-up "
        "passes each, N timed passes in all. Ratios compare best passes. "
        "GFLOP/img is counted from the architecture (per block 2·T·D·(4D + 2F) + 4·T²·D, plus patch "
        "embedding and head); % of sgemm = ours fp32 GFLOP/s / the machine's sgemm GFLOP/s; % of "
        "vdpbf16ps peak = the bf16 pass's GFLOP/s / what the instruction itself delivers, the "
        "ceiling no bf16 GEMM on these cores can pass. "
        "CPU wait %: how long the best pass's threads sat runnable without a CPU (schedstat "
        "run delay, summed over threads, / (pass time × threads)) — other processes on our "
        "cores; in parentheses, the share of the machine's CPUs other processes used during the "
        "whole measurement (/proc/stat minus our own CPU time, model loading included). The "
        "driver waits for a quiet machine before each measurement; a row whose wait % is above "
        "a few % is depressed by other jobs, not by its engine.",
    ] + [f"({k}) {why}" for why, k in unavailable.items()] + [
        "ORT and OpenVINO run a torch.onnx export (opset 17, dynamic batch axis) of "
        "tests/reference/dinov2_torch.py with the positional table pre-resized to the input grid "
        "(DINOv3: dinov3_torch.py with the RoPE sin/cos table of the grid) "
        "(a constant in the graph) and LayerNorm's normalized_shape given as an int (same maths; "
        "torch 1.13 cannot export the traced one), so register models (whose antialiased bicubic "
        "torch.onnx cannot export) are timed too; ORT: CPUExecutionProvider, intra-op threads "
        f"{raw['threads']}, inter-op 1, sequential, ORT_ENABLE_ALL; OpenVINO: CPU plugin, "
        f"INFERENCE_NUM_THREADS {raw['threads']}, one stream, PERFORMANCE_HINT LATENCY, "
        "INFERENCE_PRECISION_HINT f32 or bf16 (read back from the compiled model). torch bf16: "
        "torch.autocast('cpu', dtype=torch.bfloat16) around the same module. ours bf16: "
        "STOPCAL_PRECISION=bf16.",
        "Peak RSS (getrusage) of the peers' processes, MiB: " + "; ".join(
            (f"v3-{CASES[c][0].upper()}" if family(c) == "dinov3"
             else f"{CASES[c][0].upper()}{'-reg' if CASES[c][1] else ''}") + f"@{CASES[c][2]} b{b} " + ", ".join(
                f"{ENGINE_LABELS[peer]} {raw['cases'][c]['batches'][b][peer]['peak_rss_mib']:.0f}"
                for peer in peers if "peak_rss_mib" in raw["cases"][c]["batches"][b].get(peer, {}))
            for c in cases for b in batches) + ".",
    ] + (["Same pixels through every engine: " + "; ".join(notes) + "."] if notes else []) \
        + render_breakdown(raw, cases, "ours") + render_breakdown(raw, cases, "ours-bf16")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
