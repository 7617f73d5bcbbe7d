"""CPU-vs-GPU agreement on generated images (a step of tests/gpu/device_check.sh, needs a GPU).

The same random models and images through stopcal-infer on the CPU engine (fp32) and on the GPU
(bf16 GEMMs and attention, fp32 accumulation): the largest |Δ continue_score| and |Δ logit| are
printed for each model, and the step fails past a sanity bound far above bf16 rounding (0.05 in
score), which only a broken kernel or a mixed-up layout reaches.

    gpu_agreement.py --infer BUILD/server/stopcal-infer --workdir DIR [--device cuda:0]
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import stopcal_harness as h  # noqa: E402

SCORE_BOUND = 0.05


def run(infer, model, paths, device):
    cmd = [infer, "--model", model, "--device", device, "--json", "--pixels", *paths]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... exited {r.returncode}: {r.stderr.strip()}")
    doc = json.loads(r.stdout)
    want = device.split(":")[0]
    if doc.get("backend") != want:
        raise SystemExit(f"asked for {device}, ran on {doc.get('backend')!r}")
    return doc["results"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--infer", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--device", default="cuda:0")
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    ctx = h.Context(a.infer, a.workdir)
    models = [
        ("S/14 @224", 224, ("--variant", "s", "--input-size", 224, "--seed", 31)),
        ("S/14-reg @448", 448, ("--variant", "s", "--registers", 4, "--input-size", 448, "--seed", 32)),
        ("SwiGLU D=256 @112 bf16 file", 112, ("--embed-dim", 256, "--heads", 4, "--depth", 4, "--ffn", "swiglu",
                                              "--input-size", 112, "--dtype", "bf16", "--seed", 33)),
    ]
    worst_all = 0.0
    for i, (label, size, args) in enumerate(models):
        model = h.genmodel(ctx, f"agree{i}.safetensors", *args)
        paths = [h.write_pixels(ctx, f"agree{i}-{k}.f32", h.make_image(400 + 10 * i + k, size)) for k in range(8)]
        cpu = run(a.infer, model, paths, "cpu")
        gpu = run(a.infer, model, paths, a.device)
        ds = max(abs(c["continue_score"] - g["continue_score"]) for c, g in zip(cpu, gpu))
        dl = max(abs(c["logit"] - g["logit"]) for c, g in zip(cpu, gpu))
        flips = sum(c["decision"] != g["decision"] for c, g in zip(cpu, gpu))
        print(f"agreement {label}: 8 images, max |Δ continue_score| {ds:.3g}, max |Δ logit| {dl:.3g}, "
              f"{flips} decision(s) differ")
        worst_all = max(worst_all, ds)
    print(f"agreement: worst |Δ continue_score| {worst_all:.3g} (bound {SCORE_BOUND})")
    return 0 if worst_all <= SCORE_BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
