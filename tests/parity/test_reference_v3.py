"""Checks of the PyTorch DINOv3 reference itself (tests/reference/dinov3_torch.py), so that agreeing
with it means something. No binary needed.

- fp32 is close to fp64;
- it agrees with the release-layout model (models/convert/dinov3_reference.py: hub names,
  LinearKMaskedBias, separate SwiGLU w1/w2/w3) on a file the converter wrote from that release;
- the RoPE conventions the engine must follow are each visible at the parity tolerance: rows
  before columns, the prefix tokens left unrotated, the half-pixel "separate" coordinates, the
  periods; and the k bias matters (RoPE rotates it), so storing it masked is not a no-op.
"""

import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tests", "convert"))
import dinov3_torch  # noqa: E402
import stopcal_harness as h  # noqa: E402
from stopcal_harness import check  # noqa: E402

V3 = ("--family", "dinov3")
SENSITIVE = 1e-3  # a convention error must move a logit by 10× the parity tolerance


def _batch(size, seeds):
    return torch.stack([torch.from_numpy(h.make_image(s, size)) for s in seeds])


def test_reference_fp32_agrees_with_fp64(ctx):
    for label, args, size in (("tiny@560", ("--variant", "tiny"), 560),
                              ("vits16@224", ("--variant", "s"), 224)):
        m = h.genmodel(ctx, "m.safetensors", *V3, *args, "--input-size", size, "--seed", 1)
        x = _batch(size, [1, 2])
        l32 = dinov3_torch.Dinov3Classifier.from_file(m, torch.float32).logits(x).double()
        l64 = dinov3_torch.Dinov3Classifier.from_file(m, torch.float64).logits(x)
        diff = float((l32 - l64).abs().max())
        ctx.note(f"{label}: fp32 vs fp64 max |Δ logit| = {diff:.3g} (logits {l64.tolist()})")
        check(diff < 1e-5, f"{label}: the fp32 reference is {diff:.3g} from fp64")


def test_genmodel_periods_follow_the_release_formula(ctx):
    m = h.genmodel(ctx, "m.safetensors", *V3, "--variant", "tiny", "--rope-base", 50,
                   "--input-size", 64)
    cfg, w = h.sm.read_model(m)
    want = dinov3_torch.periods_from_base(50.0, 64).numpy()
    got = w["rope.periods"].astype(np.float64)
    check(cfg["architecture"]["rope_base"] == 50.0, f"rope_base {cfg['architecture']}")
    check(np.max(np.abs(got - want) / want) < 1e-6, f"periods {got} vs {want}")


def _variant(cfg, w, size, **patch):
    """Logit of image seed 3 with one convention of the reference replaced."""
    model = dinov3_torch.Dinov3Classifier(cfg, w)
    if "rope" in patch:
        model.rope = lambda hh, ww: patch["rope"](model.w["rope.periods"], hh, ww, model.dtype)
    return float(model.logits(_batch(size, [3]))[0])


def test_rope_conventions_are_each_visible(ctx):
    m = h.genmodel(ctx, "m.safetensors", *V3, "--variant", "tiny", "--input-size", 96,
                   "--seed", 5)
    cfg, w = h.sm.read_model(m)
    base = _variant(cfg, w, 96)

    def columns_first(periods, hh, ww, dtype):
        s, c = dinov3_torch.rope_sin_cos(periods, ww, hh, dtype)
        n = s.shape[0]
        idx = torch.arange(n).reshape(ww, hh).T.reshape(-1)  # transpose the grid
        return s[idx], c[idx]

    def corner_coords(periods, hh, ww, dtype):  # i/h instead of (i + ½)/h
        p = periods.to(dtype)
        ch, cw = torch.arange(hh, dtype=dtype) / hh, torch.arange(ww, dtype=dtype) / ww
        co = 2 * torch.stack(torch.meshgrid(ch, cw, indexing="ij"), -1).reshape(-1, 2) - 1
        a = (2 * math.pi * co[:, :, None] / p).reshape(hh * ww, -1).repeat(1, 2)
        return torch.sin(a), torch.cos(a)

    def interleaved(periods, hh, ww, dtype):  # (row, col) pairs instead of all rows then cols
        s, c = dinov3_torch.rope_sin_cos(periods, hh, ww, dtype)
        q = s.shape[1] // 4
        order = torch.stack([torch.arange(q), torch.arange(q) + q], 1).reshape(-1)
        order = torch.cat([order, order + 2 * q])
        return s[:, order], c[:, order]

    def no_rope(periods, hh, ww, dtype):
        n, dh = hh * ww, 4 * periods.shape[0]
        return torch.zeros(n, dh, dtype=dtype), torch.ones(n, dh, dtype=dtype)

    for label, fn in (("columns before rows", columns_first), ("corner coordinates",
                                                               corner_coords),
                      ("interleaved row/column angles", interleaved), ("no RoPE", no_rope)):
        d = abs(_variant(cfg, w, 96, rope=fn) - base)
        ctx.note(f"{label}: |Δ logit| = {d:.3g}")
        check(d > SENSITIVE, f"{label} should change the logit, Δ = {d:.3g}")


def test_prefix_tokens_are_not_rotated_and_k_bias_matters(ctx):
    m = h.genmodel(ctx, "m.safetensors", *V3, "--variant", "tiny", "--input-size", 96,
                   "--seed", 6)
    cfg, w = h.sm.read_model(m)
    base = _variant(cfg, w, 96)
    # Rotating CLS and the storage tokens as if they were patches at the grid's first cells.
    model = dinov3_torch.Dinov3Classifier(cfg, w)
    R = cfg["architecture"]["num_registers"]
    s, c = model.rope(6, 6)
    model.rope = lambda hh, ww: (torch.cat([s[:1 + R], s]), torch.cat([c[:1 + R], c]))
    d = abs(float(model.logits(_batch(96, [3]))[0]) - base)
    ctx.note(f"prefix tokens rotated: |Δ logit| = {d:.3g}")
    check(d > SENSITIVE, f"rotating the prefix tokens should change the logit, Δ = {d:.3g}")
    D = cfg["architecture"]["embed_dim"]
    w2 = dict(w)
    for i in range(cfg["architecture"]["depth"]):
        b = w2[f"blocks.{i}.attn.qkv.bias"].copy()
        b[D:2 * D] = 0
        w2[f"blocks.{i}.attn.qkv.bias"] = b
    d = abs(_variant(cfg, w2, 96) - base)
    ctx.note(f"k bias zeroed: |Δ logit| = {d:.3g}")
    check(d > SENSITIVE, f"with RoPE the k bias is not a softmax constant, Δ = {d:.3g}")


def test_agrees_with_the_release_layout_model(ctx):
    import convert_fixtures as fx
    import convert_fixtures_v3 as fx3
    sys.path.insert(0, os.path.join(ROOT, "models"))
    from convert import dinov3, mapping
    for ffn in ("mlp", "swiglu"):
        rel = fx3.make_release(seed=2, ffn=ffn)
        bp = ctx.path(f"b-{ffn}.pth")
        torch.save(rel, bp)
        pkg = fx.FakeTrainingPackage(ctx.tmp)
        cp = ctx.path(f"c-{ffn}.pth")
        torch.save(fx3.make_finetuned(rel, pkg, resize_val=80, tune_cls_token=True), cp)
        images = [h.make_image(s, 80) for s in (1, 2)]
        ref = fx3.reference_logits(bp, cp, images, "merge")
        pkg.remove()
        res = dinov3.convert(mapping.load_backbone(bp), mapping.load_checkpoint(cp), lora="merge")
        out = ctx.path(f"m-{ffn}.safetensors")
        h.sm.write_model(out, res.config, res.tensors)
        got = dinov3_torch.Dinov3Classifier.from_file(out).logits(
            torch.from_numpy(np.stack(images))).tolist()
        d = max(abs(a - b) for a, b in zip(ref, got))
        ctx.note(f"{ffn}: release-layout model {ref} vs model-file reference {got}: {d:.3g}")
        check(d < 2e-5, f"{ffn}: the two references differ by {d:.3g}")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
