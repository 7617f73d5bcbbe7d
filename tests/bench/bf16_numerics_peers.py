#!/usr/bin/env python3
"""How far each bf16 engine moves the logit from fp32, on the same weights and pixels: stopcal
--precision bf16, OpenVINO bf16 (INFERENCE_PRECISION_HINT=bf16, read back from the compiled model) and
PyTorch bf16 autocast (the pipeline's own setting), each against the fp32 PyTorch reference
(tests/reference/dinov2_torch.py), with OpenVINO fp32 and stopcal fp32 as controls. A measurement, not
a test: it prints |Δ logit| and |Δ continue_score| (min, median, p90, max) per engine and model.

Images: structured synthetic ones (the parity harness's make_image) and LOFAR-like FITS files
(tests/image/gen_fits.py) preprocessed by the reference preprocessing (models/convert/
reference_preprocess.py), so every engine reads the same pixels.

    .venv-bench/bin/python tests/bench/bf16_numerics_peers.py --infer build/server/stopcal-infer \\
        [--cases s224,s224-reg,b560-reg] [--images 8] [--threads 2]

On a CPU without AVX512_BF16 (or AMX) only the PyTorch autocast and control rows have figures:
stopcal refuses --precision bf16 there, and OpenVINO compiles at f32 (the script reads the compiled
model's hint back and says so instead of reporting f32 figures as bf16). Run it on such a CPU (Zen 4,
Intel since Cooper Lake) for the bf16 comparison the issue asks for.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tests", "image"))
sys.path.insert(0, os.path.join(ROOT, "models", "convert"))
sys.path.insert(0, HERE)
import bench_engine as be  # noqa: E402  (the ONNX export and the OpenVINO compile settings)

CASES = {"s224": ("s", 0, 224), "s224-reg": ("s", 4, 224), "b560": ("b", 0, 560),
         "b560-reg": ("b", 4, 560)}


def sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def images(work, size, n):
    import gen_fits
    import reference_preprocess as rp
    import stopcal_harness as h
    out = [h.make_image(900 + i, size) for i in range((n + 1) // 2)]
    for i in range(n - len(out)):
        path = os.path.join(work, f"lofar{i}.fits")
        if not os.path.exists(path):
            gen_fits.lofar_4d(path, 320 + 32 * i, 320 + 32 * i, 800 + i)
        out.append(rp.preprocess(path, "cortexchange-v2", size)[0])
    return np.stack(out).astype(np.float32)


def torch_logits(model, pixels, threads, autocast):
    import torch
    import dinov2_torch
    torch.set_num_threads(threads)
    ref = dinov2_torch.Dinov2Classifier.from_file(model)
    x = torch.from_numpy(pixels)
    with torch.no_grad():
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return [float(v) for v in ref.logits(x).float()]
        return [float(v) for v in ref.logits(x)]


def openvino_logits(onnx, pixels, threads, precision):
    try:
        compiled, hint, caps, version = be.openvino_compile(onnx, threads, precision)
    except ImportError:
        return None, "openvino is not installed in this Python (pip install openvino)"
    if precision == "bf16" and not be.is_bf16(hint):
        return None, (f"OpenVINO {version} compiled at INFERENCE_PRECISION_HINT={hint} (CPU capabilities "
                      f"{', '.join(caps)}): no bf16 on this CPU")
    req = compiled.create_infer_request()
    out = []
    for i in range(len(pixels)):  # batch 1, as facetselfcal asks
        out.append(float(req.infer({0: pixels[i:i + 1]})[compiled.outputs[0]].reshape(-1)[0]))
    return out, f"OpenVINO {version}, compiled INFERENCE_PRECISION_HINT={hint}"


def stopcal_logits(infer, model, paths, threads, precision):
    cmd = [infer, "--model", model, "--device", "cpu", "--precision", precision, "--threads",
           str(threads), "--max-batch", "1", "--json", "--pixels", *paths]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, "stopcal refused: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    doc = json.loads(r.stdout)
    got = {res["precision"] for res in doc["results"]}
    if got != {precision}:
        return None, f"stopcal computed in {got}, not {precision}"
    return [res["logit"] for res in doc["results"]], f"stopcal --precision {precision} ({doc['backend']})"


def distribution(v):
    s = sorted(v)
    return (f"min {s[0]:.2e}  median {s[len(s) // 2]:.2e}  p90 {s[int(0.9 * (len(s) - 1))]:.2e}  "
            f"max {s[-1]:.2e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--infer", required=True, help="stopcal-infer (a Release build)")
    p.add_argument("--cases", default="s224,s224-reg,b560-reg")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir")
    args = p.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="stopcal-bf16-")
    os.makedirs(work, exist_ok=True)
    print(f"### bf16 vs fp32: |Δ| against the fp32 PyTorch reference, {args.images} images per model "
          "(half structured, half LOFAR-like FITS), batch 1\n")
    for case in [c for c in args.cases.split(",") if c]:
        variant, regs, size = CASES[case]
        model = os.path.join(work, case + ".safetensors")
        if not os.path.exists(model):
            subprocess.run([sys.executable, be.GENMODEL, "--variant", variant, "--input-size", str(size),
                            "--seed", "1", "-o", model] + (["--registers", str(regs)] if regs else []),
                           check=True)
        onnx = os.path.join(work, case + ".onnx")
        if not os.path.exists(onnx):
            be.worker_export(argparse.Namespace(model=model, onnx=onnx))
        pix = images(work, size, args.images)
        paths = []
        for i, im in enumerate(pix):
            paths.append(os.path.join(work, f"{case}-{i}.f32"))
            np.ascontiguousarray(im, dtype="<f4").tofile(paths[-1])
        ref = torch_logits(model, pix, args.threads, False)
        rows = [("torch bf16 autocast", (torch_logits(model, pix, args.threads, True), "torch.autocast"))]
        rows += [("OpenVINO bf16", openvino_logits(onnx, pix, args.threads, "bf16")),
                 ("stopcal bf16", stopcal_logits(args.infer, model, paths, args.threads, "bf16")),
                 ("OpenVINO fp32", openvino_logits(onnx, pix, args.threads, "f32")),
                 ("stopcal fp32", stopcal_logits(args.infer, model, paths, args.threads, "fp32"))]
        print(f"{case} (ViT-{variant.upper()}/14{'-reg4' if regs else ''} @{size}, random weights seed 1); "
              f"reference logits {', '.join(f'{v:.3f}' for v in ref)}")
        for label, (logits, how) in rows:
            if logits is None:
                print(f"  {label:20s} n/a: {how}")
                continue
            dl = [abs(a - b) for a, b in zip(logits, ref)]
            ds = [abs(sigmoid(a) - sigmoid(b)) for a, b in zip(logits, ref)]
            print(f"  {label:20s} |Δ logit| {distribution(dl)}   |Δ continue_score| {distribution(ds)}   [{how}]")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
