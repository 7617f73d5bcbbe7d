"""Checks of the PyTorch reference itself, so that agreeing with it means something.

No binary needed: these pin down that the fp32 reference is close to exact, that the cases the
parity suite relies on are sensitive (interpolation modes differ, every block and the native-grid
early return change the answer), and that the reference follows DINOv2's token layout.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import dinov2_torch  # noqa: E402
import stopcal_harness as h  # noqa: E402
from stopcal_harness import check  # noqa: E402

TINY = ("--embed-dim", 128, "--heads", 2)


def _batch(size, seeds):
    return torch.stack([torch.from_numpy(h.make_image(s, size)) for s in seeds])


def test_reference_fp32_agrees_with_fp64(ctx):
    for label, args, size in (("tiny-reg@560", (*TINY, "--depth", 2, "--registers", 4), 560),
                              ("vits14@224", ("--variant", "s"), 224)):
        m = h.genmodel(ctx, "m.safetensors", *args, "--input-size", size, "--seed", 1)
        x = _batch(size, [1, 2])
        l32 = dinov2_torch.Dinov2Classifier.from_file(m, torch.float32).logits(x).double()
        l64 = dinov2_torch.Dinov2Classifier.from_file(m, torch.float64).logits(x)
        diff = float((l32 - l64).abs().max())
        ctx.note(f"{label}: fp32 vs fp64 max |Δ logit| = {diff:.3g} (logits {l64.tolist()})")
        check(diff < 1e-5, f"{label}: the fp32 reference is {diff:.3g} from fp64")


def test_interpolation_modes_differ_off_the_native_grid(ctx):
    for size in (224, 560):
        m = h.genmodel(ctx, "m.safetensors", *TINY, "--depth", 2, "--input-size", size)
        cfg, w = h.sm.read_model(m)
        x = _batch(size, [3])
        out = {}
        for mode in h.sm.POS_INTERPOLATIONS:
            cfg["architecture"]["pos_embed_interpolation"] = mode
            out[mode] = float(dinov2_torch.Dinov2Classifier(cfg, w).logits(x)[0])
        diff = abs(out["bicubic_antialias"] - out["bicubic_scale_factor"])
        ctx.note(f"@{size}: antialias vs scale factor changes the logit by {diff:.3g}")
        check(diff > 1e-3, f"@{size}: the two modes should be told apart, Δ = {diff:.3g}")


def test_antialias_upsampling_is_not_plain_bicubic(ctx):
    # The trap ARCHITECTURE.md §3 warns about: at 37 → 40, antialias=True is not a no-op.
    grid = torch.randn(1, 8, 37, 37)
    aa = F.interpolate(grid, size=(40, 40), mode="bicubic", antialias=True, align_corners=False)
    plain = F.interpolate(grid, size=(40, 40), mode="bicubic", align_corners=False)
    diff = float((aa - plain).abs().max())
    ctx.note(f"37→40 antialias vs plain bicubic: max |Δ| = {diff:.3g}")
    check(diff > 1e-2, "antialias changes the upsampling kernel")


def test_native_grid_uses_the_table_as_stored(ctx):
    m = h.genmodel(ctx, "m.safetensors", *TINY, "--depth", 1, "--input-size", 518)
    model = dinov2_torch.Dinov2Classifier.from_file(m)
    check(torch.equal(model.pos_embed_for_grid(37), model.w["pos_embed"]), "g = G: stored table")
    # Resampling at g = G by the scale-factor rule would not be the identity: the early return
    # is observable, so the parity case at 518 px tests it.
    grid = model.w["pos_embed"][:, 1:].reshape(1, 37, 37, 128).permute(0, 3, 1, 2)
    s = 37.1 / 37
    resampled = F.interpolate(grid, scale_factor=(s, s), mode="bicubic", align_corners=False)
    diff = float((resampled - grid).abs().max())
    ctx.note(f"scale-factor resample at g = G moves the table by up to {diff:.3g}")
    check(diff > 1e-3, "the early return is observable")


def test_registers_carry_no_position(ctx):
    m = h.genmodel(ctx, "m.safetensors", *TINY, "--depth", 1, "--registers", 4,
                   "--input-size", 224)
    model = dinov2_torch.Dinov2Classifier.from_file(m)
    t = model.tokens(_batch(224, [4, 5]))
    check(t.shape == (2, 1 + 4 + 16 * 16, 128), f"token layout {tuple(t.shape)}")
    check(torch.equal(t[:, 1:5], model.w["register_tokens"].expand(2, -1, -1)),
          "register rows are the register tokens exactly")
    cls = model.w["cls_token"][0] + model.w["pos_embed"][:, 0]
    check(torch.equal(t[:, 0], cls.expand(2, -1)), "CLS gets position 0")


def test_every_block_changes_the_logit(ctx):
    # ViT-S/14's 12 blocks at full width; a small 8×8 grid keeps 25 forward passes cheap.
    m = h.genmodel(ctx, "m.safetensors", "--variant", "s", "--input-size", 112)
    cfg, w = h.sm.read_model(m)
    x = _batch(112, [6])
    base = float(dinov2_torch.Dinov2Classifier(cfg, w).logits(x)[0])
    smallest = float("inf")
    for i in range(cfg["architecture"]["depth"]):
        for branch in ("ls1", "ls2"):
            w2 = dict(w)
            w2[f"blocks.{i}.{branch}.gamma"] = np.zeros_like(w[f"blocks.{i}.{branch}.gamma"])
            d = abs(float(dinov2_torch.Dinov2Classifier(cfg, w2).logits(x)[0]) - base)
            smallest = min(smallest, d)
    ctx.note(f"ViT-S/14: removing any one attention or MLP branch moves the logit by ≥ "
             f"{smallest:.3g}")
    check(smallest > 1e-3, "every branch matters at the parity tolerance")


def test_logits_tell_images_apart(ctx):
    m = h.genmodel(ctx, "m.safetensors", "--variant", "s", "--registers", 4, "--input-size", 224)
    logits = dinov2_torch.Dinov2Classifier.from_file(m).logits(_batch(224, range(8)))
    spread = float(logits.max() - logits.min())
    ctx.note(f"ViT-S/14-reg logits over 8 images: {[round(v, 4) for v in logits.tolist()]}")
    check(spread > 0.1 and float(logits.abs().max()) < 10, f"O(1) logits that vary: {logits}")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
