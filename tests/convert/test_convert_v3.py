#!/usr/bin/env python3
"""Tests of stopcal-convert on DINOv3 (issue 15): synthetic release and Hugging Face backbones and
fine-tuned checkpoints in the training code's layout (tests/convert/convert_fixtures_v3.py),
converted without torch or the training package, scored by stopcal-infer and compared with the
PyTorch DINOv3 of convert/dinov3_reference.py built from the files' own tensors; the refusals.

    python3 tests/convert/test_convert_v3.py --infer build/server/stopcal-infer [--case NAME]
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tests", "image"))
sys.path.insert(0, HERE)

import stopcal_harness as harness  # noqa: E402
from stopcal_harness import check  # noqa: E402

import convert_fixtures as fx  # noqa: E402
import convert_fixtures_v3 as fx3  # noqa: E402
import stopcal_model as sm  # noqa: E402
import test_convert as tc  # noqa: E402  (run_convert: no torch, no training package)
import torch  # noqa: E402

run_convert = tc.run_convert


class Files:
    """A DINOv3 release backbone (+ its Hugging Face twin on request) and a checkpoint."""

    def __init__(self, ctx, storage=4, ffn="mlp", seed=0, hf=False, release_kw=None,
                 **finetune):
        self.ctx = ctx
        self.release = fx3.make_release(seed=seed, storage=storage, ffn=ffn, **(release_kw or {}))
        self.backbone = ctx.path("dinov3_vitt16_pretrain_lvd1689m-00000000.pth")
        torch.save(self.release, self.backbone)
        self.hf = fx3.write_hf(ctx.path("hf-dinov3"), self.release, heads=2) if hf else None
        self.pkg = fx.FakeTrainingPackage(ctx.tmp)
        finetune.setdefault("model_name", "dinov3_vitb16")
        finetune.setdefault("resize_val", 64)
        self.checkpoint = ctx.path("ckpt_step=1234.pth")
        torch.save(fx3.make_finetuned(self.release, self.pkg, **finetune), self.checkpoint)
        self.size = finetune["resize_val"]
        self.images = [harness.make_image(seed + i, self.size) for i in range(2)]
        self.pkg.remove()

    def reference(self, lora, images=None, round_bf16=False):
        sys.path.insert(0, self.pkg.dir)
        try:
            return fx3.reference_logits(self.backbone, self.checkpoint, images or self.images,
                                        lora, round_bf16=round_bf16)
        finally:
            sys.path.remove(self.pkg.dir)
            self.pkg.remove()


def convert(ctx, files, label, lora, *extra, backbone=None, expect_ok=True):
    out = ctx.path(f"{label}.safetensors")
    args = ["--backbone", backbone or files.backbone, "--checkpoint", files.checkpoint, "-o", out,
            *extra]
    if lora:
        args += ["--lora", lora]
    r = run_convert(ctx, *args, expect_ok=expect_ok)
    return out, r


def convert_and_compare(ctx, files, label, lora, *extra, backbone=None):
    out, _ = convert(ctx, files, label, lora, *extra, backbone=backbone)
    ref = files.reference(lora)
    paths = [harness.write_pixels(ctx, f"{label}-{i}.f32", im) for i, im in enumerate(files.images)]
    _, doc = harness.run_infer(ctx, out, paths)
    harness.compare(ctx, label, ref, doc["results"])
    return out, [r["logit"] for r in doc["results"]]


# --------------------------------------------------------------------------------------------
# conversions that must equal the reference


def test_release_lora_merge_and_drop_each_match_their_reference(ctx):
    files = Files(ctx)
    m, merged = convert_and_compare(ctx, files, "merge", "merge")
    _, dropped = convert_and_compare(ctx, files, "drop", "drop")
    d = max(abs(a - b) for a, b in zip(merged, dropped))
    check(d > tc.LORA_DIFFERENCE, f"merge and drop should differ, Δ = {d:.3g}")
    cfg, w = sm.read_model(m)
    a = cfg["architecture"]
    check(a["family"] == "dinov3" and a["rope_base"] == 100.0 and a["layernorm_eps"] == 1e-5
          and a["patch_size"] == 16 and a["num_registers"] == 4, f"architecture {a}")
    D = a["embed_dim"]
    for i in range(a["depth"]):
        kb = w[f"blocks.{i}.attn.qkv.bias"][D:2 * D]
        check(np.all(kb == 0), f"block {i}: the k bias is stored masked (zero), max "
                               f"{np.abs(kb).max()}")
    check(cfg["preprocessing"]["profile"] == "cortexchange-v3", "v3 is DINOv3's default profile")


def test_both_profiles_are_accepted_and_recorded(ctx):
    files = Files(ctx, use_lora=False)
    for profile in ("cortexchange-v2", "cortexchange-v3"):
        out, r = convert(ctx, files, profile, None, "--profile", profile)
        cfg, _ = sm.read_model(out)
        check(cfg["preprocessing"]["profile"] == profile, f"--profile {profile}: "
                                                          f"{cfg['preprocessing']}")
        check(cfg["preprocessing"]["mean"] == [np.float32(0.05).item()] * 3,
              f"mean from the checkpoint: {cfg['preprocessing']['mean']}")
        check(profile in r.stdout, f"the summary names the profile:\n{r.stdout}")


def test_hugging_face_backbone_gives_the_same_model(ctx):
    files = Files(ctx, hf=True, tune_cls_token=True, tune_register_tokens=True)
    a, la = convert_and_compare(ctx, files, "release", "merge")
    b, lb = convert_and_compare(ctx, files, "hf", "merge", backbone=files.hf)
    _, wa = sm.read_model(a)
    cb, wb = sm.read_model(b)
    check(set(wa) == set(wb), "same tensor set")
    worst = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    ctx.note(f"release vs Hugging Face: max |Δ weight| {worst:.3g}, logits {la} vs {lb}")
    check(worst <= 1e-6, f"the two layouts give different weights: {worst:.3g}")
    check(cb["provenance"]["sources"][0]["format"] == "hugging-face-dinov3-safetensors",
          f"{cb['provenance']['sources'][0]}")


def test_swiglu_backbone_in_both_layouts(ctx):
    files = Files(ctx, ffn="swiglu", storage=0, hf=True, seed=5)
    out, _ = convert_and_compare(ctx, files, "swiglu", "merge")
    cfg, _ = sm.read_model(out)
    check(cfg["architecture"]["ffn"] == "swiglu" and cfg["architecture"]["ffn_hidden_dim"] ==
          fx3.swiglu_hidden(fx.D_TINY), f"{cfg['architecture']}")
    convert_and_compare(ctx, files, "swiglu-hf", "merge", backbone=files.hf)


def test_token_overrides_from_the_checkpoint(ctx):
    files = Files(ctx, tune_cls_token=True, tune_register_tokens=True, use_lora=False, seed=7)
    out, r = convert(ctx, files, "tokens", None)
    check("cls_token, register_tokens" in r.stdout, f"summary names the overrides:\n{r.stdout}")
    _, w = sm.read_model(out)
    check(not np.allclose(w["register_tokens"], files.release["storage_tokens"].numpy()),
          "the tuned storage tokens replace the backbone's")
    convert_and_compare(ctx, files, "tokens2", None)


def test_bf16_output_matches_the_bf16_rounded_reference(ctx):
    files = Files(ctx, seed=9)
    out, _ = convert(ctx, files, "bf16", "merge", "--dtype", "bf16")
    cfg, w = sm.read_model(out)
    paths = [harness.write_pixels(ctx, f"b{i}.f32", im) for i, im in enumerate(files.images)]
    _, doc = harness.run_infer(ctx, out, paths)
    # The reference on the file's own (bf16-rounded) weights, widened exactly: the conversion
    # rounds after merging, so rounding the inputs first would be a different model.
    import dinov3_torch
    ref = [float(v) for v in dinov3_torch.Dinov3Classifier(cfg, w).logits(
        torch.from_numpy(np.stack(files.images)))]
    harness.compare(ctx, "bf16 file", ref, doc["results"])


def test_fits_end_to_end_with_the_v3_profile(ctx):
    """FITS → stopcal-infer (C decode and cortexchange-v3 preprocessing) = the reference
    preprocessing (convert/reference_preprocess.py) + the torch DINOv3 of the files."""
    import gen_fits
    from convert import reference_preprocess as rp
    files = Files(ctx, resize_val=112, mean=0.05, std=0.2, seed=11)
    out, _ = convert(ctx, files, "fits", "merge")
    cfg, _ = sm.read_model(out)
    pre = cfg["preprocessing"]
    images = []
    for i, (ny, nx) in enumerate(((300, 300), (360, 400))):
        images.append(ctx.path(f"lofar{i}.fits"))
        gen_fits.lofar_4d(images[-1], ny, nx, seed=20 + i)
    tensors = [rp.preprocess(p, "cortexchange-v3", 112, pre["mean"], pre["std"])[0]
               for p in images]
    ref = files.reference("merge", images=tensors)
    r = __import__("subprocess").run([ctx.infer, "--model", out, "--device", "cpu", "--json",
                                      *images], capture_output=True, text=True, timeout=600)
    check(r.returncode == 0, f"stopcal-infer on FITS exited {r.returncode}:\n{r.stderr}")
    doc = json.loads(r.stdout)
    harness.compare(ctx, "FITS → score, cortexchange-v3", ref, doc["results"])


def test_inspect_and_verify_on_dinov3(ctx):
    import gen_fits
    files = Files(ctx, hf=True, resize_val=64, seed=13)
    for b, words in ((files.backbone, ("DINOv3", "storage-tokens=4", "rope-base=100")),
                     (files.hf, ("DINOv3", "patch=16"))):
        r = run_convert(ctx, "--inspect", b)
        check(all(w in r.stdout for w in words), f"--inspect {b}:\n{r.stdout}")
    image = ctx.path("lofar.fits")
    gen_fits.lofar_4d(image, 200, 200, seed=5)
    raw = harness.write_pixels(ctx, "raw.f32", files.images[0])
    for b in (files.backbone, files.hf):
        r = run_convert(ctx, "--backbone", b, "--checkpoint", files.checkpoint, "--lora", "merge",
                        "-o", ctx.path("v.safetensors"), "--infer", ctx.infer, "--verify", image,
                        raw, with_torch=True)
        check("max |Δ logit|" in r.stdout and "PASS" in r.stdout, f"--verify output:\n{r.stdout}")
        ctx.note(r.stdout.strip().splitlines()[-2])


# --------------------------------------------------------------------------------------------
# refusals


def _refused(ctx, args, *words):
    r = run_convert(ctx, *args, expect_ok=False)
    for w in words:
        check(w in r.stderr, f"the refusal should mention {w!r}:\n{r.stderr}")
    ctx.note(r.stderr.strip())


def _save(ctx, name, obj):
    p = ctx.path(name)
    torch.save(obj, p)
    return p


def test_unknown_families_are_refused(ctx):
    files = Files(ctx)
    # A DINOv3 ConvNeXt backbone (no ViT tensors at all).
    convnext = {"downsample_layers.0.0.weight": torch.zeros(4, 3, 4, 4),
                "stages.0.0.gamma": torch.zeros(4)}
    _refused(ctx, ["--backbone", _save(ctx, "convnext.pth", convnext), "--checkpoint",
                   files.checkpoint, "--lora", "merge", "-o", ctx.path("x.safetensors")],
             "downsample_layers.0.0.weight", "cannot be mapped")
    # A checkpoint of neither family on a DINOv3 backbone.
    other = Files(ctx, model_name="resnet50", use_lora=False)
    _refused(ctx, ["--backbone", other.backbone, "--checkpoint", other.checkpoint,
                   "-o", ctx.path("y.safetensors")], "resnet50", "dinov3")


def test_missing_tensors_are_refused(ctx):
    files = Files(ctx)
    for drop, words in (("rope_embed.periods", ("rope_embed.periods",)),
                        ("blocks.1.norm2.weight", ("blocks.1.norm2.weight",)),
                        ("blocks.0.mlp.fc2.bias", ("blocks.0.mlp.fc2.bias",))):
        sd = {k: v for k, v in files.release.items() if k != drop}
        _refused(ctx, ["--backbone", _save(ctx, "cut.pth", sd), "--checkpoint", files.checkpoint,
                       "--lora", "merge", "-o", ctx.path("x.safetensors")], *words)
    hf = fx3.write_hf(ctx.path("hf-noconfig"), files.release, heads=2, config=False)
    _refused(ctx, ["--backbone", hf, "--checkpoint", files.checkpoint, "--lora", "merge",
                   "-o", ctx.path("x.safetensors")], "config.json")
    hf = fx3.write_hf(ctx.path("hf-badact"), files.release, heads=2, hidden_act="relu")
    _refused(ctx, ["--backbone", hf, "--checkpoint", files.checkpoint, "--lora", "merge",
                   "-o", ctx.path("x.safetensors")], "hidden_act", "relu")


def test_wrong_patch_size_is_refused(ctx):
    files = Files(ctx, release_kw={"patch": 14})
    _refused(ctx, ["--backbone", files.backbone, "--checkpoint", files.checkpoint, "--lora",
                   "merge", "-o", ctx.path("x.safetensors")], "patch size 14", "16")


def test_checkpoint_of_the_other_family_is_refused(ctx):
    v3 = Files(ctx)
    # A DINOv2 checkpoint (its model_name, its positional table) on a DINOv3 backbone.
    release2 = fx.make_release(registers=4)
    pkg = fx.FakeTrainingPackage(ctx.tmp)
    ck2 = _save(ctx, "ckpt_dinov2.pth", fx.make_finetuned(release2, pkg, resize_val=64,
                                                          pos_embed="fine-tune"))
    b2 = _save(ctx, "dinov2_vitt14_reg4_pretrain.pth", release2)
    pkg.remove()
    _refused(ctx, ["--backbone", v3.backbone, "--checkpoint", ck2, "--lora", "merge",
                   "-o", ctx.path("x.safetensors")], "DINOv2 checkpoint", "DINOv3 backbone")
    # And the reverse: the DINOv3 checkpoint on the DINOv2 backbone.
    _refused(ctx, ["--backbone", b2, "--checkpoint", v3.checkpoint, "--lora", "merge",
                   "-o", ctx.path("y.safetensors")], "DINOv3", "DINOv2 backbone")
    # A DINOv3-named checkpoint that carries a positional table.
    pkg = fx.FakeTrainingPackage(ctx.tmp)
    ck3 = fx3.make_finetuned(v3.release, pkg, resize_val=64)
    ck3["model_state_dict"]["feature_extractor.encoder.pos_embed"] = torch.zeros(1, 17, 128)
    p3 = _save(ctx, "ckpt_pos.pth", ck3)
    pkg.remove()
    _refused(ctx, ["--backbone", v3.backbone, "--checkpoint", p3, "--lora", "merge",
                   "-o", ctx.path("z.safetensors")], "pos_embed", "DINOv3 backbone")


def test_untied_cls_norm_is_refused_and_local_cls_norm_dropped(ctx):
    files = Files(ctx, use_lora=False)
    sd = dict(files.release)
    sd["cls_norm.weight"], sd["cls_norm.bias"] = torch.ones(128), torch.zeros(128)
    _refused(ctx, ["--backbone", _save(ctx, "untied.pth", sd), "--checkpoint", files.checkpoint,
                   "-o", ctx.path("x.safetensors")], "cls_norm.weight", "untied")
    sd = dict(files.release)
    sd["local_cls_norm.weight"], sd["local_cls_norm.bias"] = torch.ones(128), torch.zeros(128)
    out, _ = convert(ctx, files, "local", None, backbone=_save(ctx, "local.pth", sd))
    cfg, _ = sm.read_model(out)
    check("local_cls_norm.weight" in cfg["provenance"]["dropped"], f"{cfg['provenance']}")


if __name__ == "__main__":
    sys.exit(harness.main(globals()))
