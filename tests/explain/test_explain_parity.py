"""The engine's explain pass (vit_explain through stopcal-infer --explain) against the PyTorch
reference (tests/reference/attention_torch.py): the last block's CLS attention per head and its
head mean, the register and CLS parts, and the attention rollout, all to 1e-5 on fp32 models."""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import stopcal_harness as h  # noqa: E402

ATOL = 1e-5


def explain_parity(ctx, label, model, images, extra=()):
    import torch
    import attention_torch as at
    torch.set_num_threads(2)
    paths = [h.write_pixels(ctx, f"{label}-{i}.f32", im) for i, im in enumerate(images)]
    out = ctx.path("maps")
    os.makedirs(out, exist_ok=True)
    _, doc = h.run_infer(ctx, model, paths, "--explain", out, "--rollout", "--heads", "all", *extra)
    ref = at.AttentionRecorder.from_file(model)
    arch = ref.arch
    R, H = arch["num_registers"], arch["num_heads"]
    g = ref.input_size // arch["patch_size"]
    worst = {"heads": 0.0, "mean": 0.0, "rollout": 0.0, "other": 0.0}
    for i, (im, res) in enumerate(zip(images, doc["results"])):
        logits, cls, roll = ref.explain(torch.from_numpy(im)[None].expand(1, 3, -1, -1).contiguous())
        e = res.get("explain")
        h.check(isinstance(e, dict), f"{label}: result {i} has no explain object: {res}")
        h.check((e["grid"], e["heads"], e["registers"]) == (g, H, R),
                f"{label}: grid/heads/registers {e['grid']}/{e['heads']}/{e['registers']}, want {g}/{H}/{R}")
        h.check(abs(res["logit"] - float(logits[0])) <= 1e-4 * max(1, abs(float(logits[0]))),
                f"{label}: explain pass logit {res['logit']} vs reference {logits[0]}")
        got_heads = np.array(e["cls_attention_heads"])
        want_heads = np.stack([at.patch_grid(cls[0, k], R, g) for k in range(H)])
        got_mean = np.array(e["cls_attention"])
        want_mean = at.patch_grid(cls[0].mean(axis=0), R, g)
        got_roll = np.array(e["rollout"])
        want_roll = at.patch_grid(roll[0], R, g)
        h.check(got_heads.shape == (H, g, g) and got_mean.shape == (g, g) and got_roll.shape == (g, g),
                f"{label}: shapes {got_heads.shape} {got_mean.shape} {got_roll.shape}")
        worst["heads"] = max(worst["heads"], float(np.abs(got_heads - want_heads).max()))
        worst["mean"] = max(worst["mean"], float(np.abs(got_mean - want_mean).max()))
        worst["rollout"] = max(worst["rollout"], float(np.abs(got_roll - want_roll).max()))
        other = [abs(e["cls_self"] - float(cls[0, :, 0].mean())),
                 abs(e["rollout_cls"] - float(roll[0, 0])),
                 abs(e["patch_sum"] - float(cls[0, :, 1 + R:].sum(axis=1).mean()))]
        other += [abs(a - float(b)) for a, b in zip(e["register_attention"], cls[0, :, 1:1 + R].mean(axis=0))]
        other += [abs(a - float(b)) for a, b in zip(e["rollout_registers"], roll[0, 1:1 + R])]
        worst["other"] = max([worst["other"]] + other)
        # The maps must be worth comparing: not uniform (a transposed or shuffled grid would then
        # still match), and the grid's orientation must matter.
        h.check(float(want_mean.std()) > 20 * ATOL,
                f"{label}: the reference map is nearly uniform (std {want_mean.std():.3g})")
        h.check(float(np.abs(want_mean - want_mean.T).max()) > 20 * ATOL,
                f"{label}: the reference map is symmetric, its orientation untested")
    ctx.note(f"{label}: max |Δ| per-head {worst['heads']:.3g}, mean {worst['mean']:.3g}, "
             f"rollout {worst['rollout']:.3g}, CLS/register/sums {worst['other']:.3g}")
    for k, v in worst.items():
        h.check(v <= ATOL, f"{label}: {k} differs from the reference by {v:.3g} > {ATOL}")


def images(size, seeds):
    return [h.make_image(s, size) for s in seeds]


def test_s14_two_blocks_no_registers(ctx):
    m = h.genmodel(ctx, "s14.safetensors", "--variant", "s", "--depth", 2, "--input-size", 224, "--seed", 5)
    explain_parity(ctx, "vits14@224", m, images(224, [41, 42]))


def test_s14_two_blocks_with_registers(ctx):
    m = h.genmodel(ctx, "s14reg.safetensors", "--variant", "s", "--depth", 2, "--registers", 4,
                   "--input-size", 224, "--seed", 6)
    explain_parity(ctx, "vits14-reg@224", m, images(224, [43]))


def test_swiglu_registers_three_blocks(ctx):
    m = h.genmodel(ctx, "sw.safetensors", "--embed-dim", 128, "--heads", 2, "--depth", 3, "--ffn", "swiglu",
                   "--registers", 2, "--input-size", 112, "--seed", 7)
    explain_parity(ctx, "swiglu-reg@112", m, images(112, [44]))


def test_portable_cpu_path(ctx):
    # The forward pass through OpenBLAS GEMMs and BLAS attention: the explain op sits on top of
    # whichever kernels the backend chose.
    os.environ["STOPCAL_CPU_GEMM"] = os.environ["STOPCAL_CPU_ATTENTION"] = "blas"
    m = h.genmodel(ctx, "s14b.safetensors", "--variant", "s", "--depth", 2, "--registers", 4,
                   "--input-size", 224, "--seed", 8)
    explain_parity(ctx, "vits14-reg@224 blas", m, images(224, [45]))


if __name__ == "__main__":
    sys.exit(h.main(globals()))
