#!/usr/bin/env python3
"""Tests of stopcal-convert (issue 7): synthetic checkpoints in the reference's exact layouts,
converted without torch or the training package, scored by stopcal-infer and compared with a
PyTorch model of the reference built from the checkpoint's own tensors.

    python3 tests/convert/test_convert.py --infer build/server/stopcal-infer [--case NAME]

The converter always runs in a subprocess whose `import torch` fails (a stub shadows it) and on
whose path the training package does not exist, as on a machine with neither.
"""

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, HERE)

import stopcal_harness as harness  # noqa: E402
from stopcal_harness import check  # noqa: E402

import convert_fixtures as fx  # noqa: E402
import stopcal_model as sm  # noqa: E402  (models/ is on the path via the harness)
import torch  # noqa: E402

CONVERT = os.path.join(ROOT, "models", "stopcal-convert")
LORA_DIFFERENCE = 1e-2  # merge and drop must be told apart by far more than the tolerance


# --------------------------------------------------------------------------------------------
# plumbing


def _no_torch_dir(ctx):
    """A directory whose torch package refuses to import; put first on the converter's path."""
    d = ctx.path("no-torch")
    os.makedirs(os.path.join(d, "torch"), exist_ok=True)
    with open(os.path.join(d, "torch", "__init__.py"), "w") as f:
        f.write('raise ImportError("torch is not installed here (stopcal-convert test)")\n')
    return d


def run_convert(ctx, *args, expect_ok=True, with_torch=False, extra_path=None):
    """Run stopcal-convert; returns the CompletedProcess. With expect_ok it must exit 0; else it
    must exit non-zero with a one-line 'stopcal-convert: ...' message and no traceback."""
    env = dict(os.environ)
    path = [] if with_torch else [_no_torch_dir(ctx)]
    if extra_path:
        path.append(extra_path)
    env["PYTHONPATH"] = os.pathsep.join(path)
    cmd = [sys.executable, CONVERT, *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ctx.tmp)
    shown = " ".join(map(str, args))
    check("Traceback" not in r.stderr, f"stopcal-convert {shown} crashed:\n{r.stderr}")
    if expect_ok:
        check(r.returncode == 0, f"stopcal-convert {shown} exited {r.returncode}:\n{r.stderr}")
    else:
        check(r.returncode != 0, f"stopcal-convert {shown} should have failed:\n{r.stdout}")
        lines = r.stderr.strip().splitlines()
        check(len(lines) == 1 and lines[0].startswith("stopcal-convert: "),
              f"expected one 'stopcal-convert: ...' line on stderr, got:\n{r.stderr}")
    return r


class Files:
    """A backbone and a checkpoint written for one test, plus the pieces to recompute them."""

    def __init__(self, ctx, registers=4, ffn="mlp", seed=0, config_class=None, **finetune):
        self.ctx = ctx
        self.release = fx.make_release(seed=seed, registers=registers, ffn=ffn)
        tag = "reg4_" if registers else ""
        self.backbone = ctx.path(f"dinov2_vitt14_{tag}pretrain.pth")
        torch.save(self.release, self.backbone)
        self.pkg = fx.FakeTrainingPackage(ctx.tmp)
        finetune.setdefault("model_name", "dinov2_vitb14_reg" if registers else "dinov2_vitb14")
        self.finetune = finetune
        self.checkpoint = ctx.path("ckpt_step=1234.pth")
        torch.save(fx.make_finetuned(self.release, self.pkg, config_class=config_class,
                                     **finetune), self.checkpoint)
        self.size = finetune.get("resize_val", 112)
        self.images = [harness.make_image(seed + i, self.size) for i in range(2)]

    def reference(self, lora, round_bf16=False):
        """Torch logits from the files' tensors (the training package importable meanwhile)."""
        sys.path.insert(0, self.pkg.dir)
        try:
            return fx.reference_logits(self.backbone, self.checkpoint, self.images, lora,
                                       round_bf16=round_bf16)
        finally:
            sys.path.remove(self.pkg.dir)
            self.pkg.remove()

    def done_writing(self):
        self.pkg.remove()


def convert_and_compare(ctx, files, label, lora, *extra, backbone=None):
    """Convert, score with stopcal-infer, compare with the torch reference; returns
    (model path, engine logits, max |Δ logit|)."""
    out = ctx.path(f"{label}.safetensors")
    args = ["--backbone", backbone or files.backbone, "--checkpoint", files.checkpoint,
            "-o", out, *extra]
    if lora:
        args += ["--lora", lora]
    run_convert(ctx, *args)
    ref = files.reference(lora)
    paths = [harness.write_pixels(ctx, f"{label}-{i}.f32", im) for i, im in
             enumerate(files.images)]
    _, doc = harness.run_infer(ctx, out, paths)
    max_dl, _ = harness.compare(ctx, label, ref, doc["results"])
    return out, [r["logit"] for r in doc["results"]], max_dl


# --------------------------------------------------------------------------------------------
# conversions that must equal the reference


def test_lora_merge_and_drop_each_match_their_reference_and_differ(ctx):
    files = Files(ctx, registers=4, resize_val=112)
    files.done_writing()
    _, merged, _ = convert_and_compare(ctx, files, "merge", "merge")
    _, dropped, _ = convert_and_compare(ctx, files, "drop", "drop")
    gap = max(abs(a - b) for a, b in zip(merged, dropped))
    ctx.note(f"merge vs drop: max |logit difference| = {gap:.3g}")
    check(gap > LORA_DIFFERENCE, f"--lora merge and --lora drop give nearly the same logits "
                                 f"({merged} vs {dropped}): the adapters were not applied")
    cfg, _ = sm.read_model(ctx.path("merge.safetensors"))
    check(cfg["lora"] == {"handling": "merge", "rank": 8, "alpha": 16}, f"lora: {cfg['lora']}")
    cfg, w_drop = sm.read_model(ctx.path("drop.safetensors"))
    check(cfg["lora"]["handling"] == "drop", f"lora: {cfg['lora']}")
    check(np.array_equal(w_drop["blocks.1.attn.qkv.weight"],
                         files.release["blocks.1.attn.qkv.weight"].numpy()),
          "--lora drop changed the backbone's qkv weight")


def test_token_overrides_from_the_checkpoint_match_the_reference(ctx):
    files = Files(ctx, registers=4, resize_val=56, tune_cls_token=True,
                  tune_register_tokens=True, pos_embed="fine-tune")
    ck = torch.load(files.checkpoint)["model_state_dict"]
    files.done_writing()
    for lora in ("merge", "drop"):
        out, _, _ = convert_and_compare(ctx, files, f"tokens-{lora}", lora)
        _, w = sm.read_model(out)
        for name in ("cls_token", "register_tokens", "pos_embed"):
            got, want = w[name], ck[f"feature_extractor.encoder.{name}"].numpy()
            check(np.array_equal(got, want), f"{name} is not the checkpoint's (max |Δ| "
                                             f"{np.abs(got - want).max():.3g})")
            check(not np.array_equal(got, files.release[name].numpy()),
                  f"{name} is still the backbone's")


def test_model_without_registers_or_lora_matches_the_reference(ctx):
    files = Files(ctx, registers=0, resize_val=112, use_lora=False)
    files.done_writing()
    out, _, _ = convert_and_compare(ctx, files, "noreg", None)
    cfg, _ = sm.read_model(out)
    arch = cfg["architecture"]
    check(arch["num_registers"] == 0 and arch["pos_embed_interpolation"] ==
          "bicubic_scale_factor", f"architecture {arch}")
    check(cfg["lora"] == {"handling": "none", "rank": 0, "alpha": 0}, f"lora {cfg['lora']}")


def test_pos_embed_zeros_is_applied_as_the_reference_builds_it(ctx):
    files = Files(ctx, registers=4, resize_val=56, pos_embed="zeros")
    files.done_writing()
    out, _, _ = convert_and_compare(ctx, files, "zeros", "merge")
    _, w = sm.read_model(out)
    check(np.all(w["pos_embed"][:, 1:] == 0), "the patch part of pos_embed is not zero")
    check(np.array_equal(w["pos_embed"][:, :1], files.release["pos_embed"][:, :1].numpy()),
          "the CLS position changed")


def test_pos_embed_zeros_then_fine_tuned_takes_the_checkpoint_table(ctx):
    files = Files(ctx, registers=4, resize_val=56, pos_embed="zeros+fine-tune")
    ck = torch.load(files.checkpoint)["model_state_dict"]
    files.done_writing()
    out, _, _ = convert_and_compare(ctx, files, "zeros-ft", "drop")
    _, w = sm.read_model(out)
    check(np.array_equal(w["pos_embed"], ck["feature_extractor.encoder.pos_embed"].numpy()),
          "pos_embed is not the fine-tuned table")


def test_swiglu_backbone_maps_w12_and_w3(ctx):
    files = Files(ctx, registers=4, ffn="swiglu", resize_val=56)
    files.done_writing()
    out, _, _ = convert_and_compare(ctx, files, "swiglu", "merge")
    cfg, w = sm.read_model(out)
    check(cfg["architecture"]["ffn"] == "swiglu" and cfg["architecture"]["ffn_hidden_dim"] == 344,
          f"architecture {cfg['architecture']}")
    # Hugging Face names the fused SwiGLU weights_in/weights_out.
    hf = fx.write_hf_safetensors(ctx.path("hf-swiglu.safetensors"), files.release)
    run_convert(ctx, "--backbone", hf, "--checkpoint", files.checkpoint, "--lora", "merge",
                "-o", ctx.path("hf-swiglu-model.safetensors"))
    _, w_hf = sm.read_model(ctx.path("hf-swiglu-model.safetensors"))
    check(all(np.array_equal(w[k], w_hf[k]) for k in w), "the HF SwiGLU conversion differs")


def test_hugging_face_safetensors_backbone_gives_the_same_model(ctx):
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    hf = fx.write_hf_safetensors(ctx.path("hf-dinov2.safetensors"), files.release)
    out_hf, _, _ = convert_and_compare(ctx, files, "hf", "merge", backbone=hf)
    run_convert(ctx, "--backbone", files.backbone, "--checkpoint", files.checkpoint,
                "--lora", "merge", "-o", ctx.path("pth.safetensors"))
    cfg_hf, w_hf = sm.read_model(out_hf)
    _, w_pth = sm.read_model(ctx.path("pth.safetensors"))
    for name in w_pth:
        check(np.array_equal(w_hf[name], w_pth[name]), f"{name} differs between the Hugging Face "
                                                       f"and the torch-hub conversions")
    check(cfg_hf["provenance"]["sources"][0]["format"] == "hugging-face-safetensors",
          f"provenance {cfg_hf['provenance']['sources']}")


def test_bf16_output_is_the_f32_model_rounded(ctx):
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    common = ["--backbone", files.backbone, "--checkpoint", files.checkpoint, "--lora", "drop"]
    run_convert(ctx, *common, "-o", ctx.path("f32.safetensors"))
    run_convert(ctx, *common, "--dtype", "bf16", "-o", ctx.path("bf16.safetensors"))
    _, w32 = sm.read_model(ctx.path("f32.safetensors"))
    meta, w16, dtypes = sm.read_safetensors(ctx.path("bf16.safetensors"))
    check(set(dtypes.values()) == {"BF16"}, f"stored dtypes {set(dtypes.values())}")
    for name, a in w32.items():
        want = sm.bf16_bits_to_f32(sm.f32_to_bf16_bits(a)).reshape(a.shape)
        check(np.array_equal(w16[name], want), f"{name} is not the f32 weight rounded to bf16")
    # The engine on the bf16 file equals the reference on the bf16-rounded checkpoint tensors.
    ref16 = files.reference("drop", round_bf16=True)
    ref32 = files.reference("drop")
    paths = [harness.write_pixels(ctx, f"bf16-{i}.f32", im) for i, im in enumerate(files.images)]
    _, doc = harness.run_infer(ctx, ctx.path("bf16.safetensors"), paths)
    harness.compare(ctx, "bf16 vs reference on bf16-rounded tensors", ref16, doc["results"])
    drift = max(abs(r["logit"] - l) for r, l in zip(doc["results"], ref32))
    ctx.note(f"bf16 file vs fp32 reference: max |Δ logit| = {drift:.3g} (measured, not asserted)")


def test_config_pickled_as_an_unknown_class_is_read(ctx):
    files = Files(ctx, registers=4, resize_val=56, config_class="fake", mean=0.25, std=0.5)
    files.done_writing()
    out, _, _ = convert_and_compare(ctx, files, "fakecfg", "merge")
    cfg, _ = sm.read_model(out)
    pre = cfg["preprocessing"]
    check(pre["mean"] == [0.25] * 3 and pre["std"] == [0.5] * 3 and cfg["input"]["size"] == 56,
          f"preprocessing {pre}, input {cfg['input']}")


def test_metadata_records_profile_inputs_and_provenance(ctx):
    files = Files(ctx, registers=4, resize_val=56, mean=0.125, std=0.75)
    files.done_writing()
    out = ctx.path("meta.safetensors")
    run_convert(ctx, "--backbone", files.backbone, "--checkpoint", files.checkpoint, "--lora",
                "merge", "-o", out)
    cfg, _ = sm.read_model(out)
    pre = cfg["preprocessing"]
    check(pre["profile"] == "cortexchange-v2", f"default profile {pre['profile']}")
    check(pre["mean"] == [0.125] * 3 and pre["std"] == [0.75] * 3 and pre["noise_sigma"] == 0,
          f"preprocessing {pre}")
    check(cfg["input"]["size"] == 56, f"input {cfg['input']}")
    prov = cfg["provenance"]
    want = {"backbone": harness.sha256_of(files.backbone),
            "checkpoint": harness.sha256_of(files.checkpoint)}
    got = {s["role"]: s["sha256"] for s in prov["sources"]}
    check(got == want, f"provenance sha256 {got}, expected {want}")
    check(prov["created_by"] == "stopcal-convert" and prov["dropped"] == ["mask_token"] and
          prov["checkpoint"]["model"]["model_name"] == "dinov2_vitb14_reg" and
          prov["checkpoint"]["model_class"].endswith(".ImagenetTransferLearning"),
          f"provenance {json.dumps(prov)[:600]}")
    run_convert(ctx, "--backbone", files.backbone, "--checkpoint", files.checkpoint, "--lora",
                "merge", "--profile", "cortexchange-v3", "-o", ctx.path("v3.safetensors"))
    cfg3, _ = sm.read_model(ctx.path("v3.safetensors"))
    check(cfg3["preprocessing"]["profile"] == "cortexchange-v3", "--profile not recorded")


# --------------------------------------------------------------------------------------------
# refusals


def _refused(ctx, files_args, *words):
    r = run_convert(ctx, *files_args, expect_ok=False)
    low = r.stderr.lower()
    check(all(w.lower() in low for w in words), f"message lacks {words}: {r.stderr.strip()}")
    return r.stderr.strip()


def test_lift_other_than_stack_is_refused(ctx):
    files = Files(ctx, registers=4, resize_val=56, lift="conv")
    files.done_writing()
    msg = _refused(ctx, ["--backbone", files.backbone, "--checkpoint", files.checkpoint,
                         "--lora", "merge", "-o", ctx.path("x.safetensors")], "lift", "conv",
                   "stack")
    check(not os.path.exists(ctx.path("x.safetensors")), "a refused conversion wrote a file")
    ctx.note(msg)


def test_non_dinov2_backbones_are_refused(ctx):
    for name in ("resnet50", "vit_l_16", "dinov3_vitb16"):
        files = Files(ctx, registers=4, resize_val=56, model_name=name, use_lora=False)
        files.done_writing()
        ctx.note(_refused(ctx, ["--backbone", files.backbone, "--checkpoint", files.checkpoint,
                                "-o", ctx.path("x.safetensors")], name, "DINOv2"))


def test_backbone_alone_is_refused(ctx):
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    ctx.note(_refused(ctx, ["--backbone", files.backbone, "-o", ctx.path("x.safetensors")],
                      "--checkpoint", "head"))


def test_lora_choice_is_required_when_adapters_exist(ctx):
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    ctx.note(_refused(ctx, ["--backbone", files.backbone, "--checkpoint", files.checkpoint,
                            "-o", ctx.path("x.safetensors")], "--lora merge", "--lora drop"))


def test_alias_that_is_not_a_model_name_is_refused(ctx):
    """--alias takes model names only (FORMAT.md, aliases): a space, a path word of /v2 or an
    empty part is refused before anything is written, naming the alias."""
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    out = ctx.path("x.safetensors")
    for alias, words in (("two words", ("two words",)), ("surf/infer", ("surf/infer", "infer")),
                         ("a//b", ("a//b",))):
        ctx.note(_refused(ctx, ["--backbone", files.backbone, "--checkpoint", files.checkpoint,
                                "--lora", "drop", "--alias", alias, "-o", out], *words))
        check(not os.path.exists(out), f"a refused alias {alias!r} still wrote {out}")


def test_mismatched_backbone_and_checkpoint_are_refused(ctx):
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    other = ctx.path("noreg.pth")
    torch.save(fx.make_release(seed=5, registers=0), other)
    ctx.note(_refused(ctx, ["--backbone", other, "--checkpoint", files.checkpoint, "--lora",
                            "merge", "-o", ctx.path("x.safetensors")], "register"))
    wide = ctx.path("wide.pth")
    torch.save(fx.make_release(seed=6, dim=192, registers=4), wide)
    ctx.note(_refused(ctx, ["--backbone", wide, "--checkpoint", files.checkpoint, "--lora",
                            "merge", "-o", ctx.path("x.safetensors")], "classifier.2.weight"))
    ctx.note(_refused(ctx, ["--backbone", files.checkpoint, "--checkpoint", files.backbone,
                            "-o", ctx.path("x.safetensors")], "--checkpoint"))


def test_unknown_checkpoint_keys_are_refused_by_name(ctx):
    files = Files(ctx, registers=4, resize_val=56,
                  extra_state={"feature_extractor.encoder.blocks.0.mlp.fc1.weight":
                               torch.zeros(512, 128)})
    files.done_writing()
    ctx.note(_refused(ctx, ["--backbone", files.backbone, "--checkpoint", files.checkpoint,
                            "--lora", "merge", "-o", ctx.path("x.safetensors")],
                      "feature_extractor.encoder.blocks.0.mlp.fc1.weight"))


# --------------------------------------------------------------------------------------------
# hostile and broken files


class _Payload:
    """An object whose unpickling calls fn(*args): how malicious checkpoints run code."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _zip_with_pickle(path, data_pkl, records=None, prefix="archive"):
    """A torch.save-shaped zip around arbitrary data.pkl bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        for name, data in (records or {}).items():
            z.writestr(f"{prefix}/data/{name}", data)
        z.writestr(f"{prefix}/version", "3\n")
    return path


def _malicious_files(ctx, marker, files):
    """(label, path) of checkpoints and backbones that try to create `marker`."""
    import builtins
    import subprocess as sp
    sh = f"touch {marker}"
    good = torch.load(files.checkpoint)
    cases = []

    def ckpt_with(label, evil, where="config"):
        d = dict(good)
        d[where] = evil
        p = ctx.path(f"evil-{label}.pth")
        torch.save(d, p)
        cases.append((label, p))

    ckpt_with("os.system", _Payload(os.system, (sh,)))
    ckpt_with("builtins.eval", _Payload(builtins.eval, (f"__import__('os').system({sh!r})",)))
    ckpt_with("builtins.exec", _Payload(builtins.exec, (f"open({marker!r}, 'w')",)))
    ckpt_with("subprocess.call", _Payload(sp.call, (["touch", marker],)))
    ckpt_with("subprocess.Popen", _Payload(sp.Popen, (["touch", marker],)), where="step")
    ckpt_with("nested-in-state-dict", {"classifier.2.weight": _Payload(os.system, (sh,))},
              where="model_state_dict")
    # A backbone file whose state dict carries the payload.
    rel = dict(files.release)
    rel["norm.bias"] = _Payload(os.system, (sh,))
    torch.save(rel, ctx.path("evil-backbone.pth"))
    cases.append(("backbone os.system", ctx.path("evil-backbone.pth")))
    # Hand-written pickles: protocol 0 INST, protocol 4 STACK_GLOBAL, getattr laundering,
    # a function from an unknown module, torch's own loader, and numpy's.
    raw = {
        "INST posix.system": f"(S'{sh}'\niposix\nsystem\n.".encode(),
        "STACK_GLOBAL os.system": pickle.dumps(_Payload(os.system, (sh,)), protocol=4),
        "getattr(os, 'system')": (b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\nX\x02\x00"
                                  b"\x00\x00os\x85R" + b"X\x06\x00\x00\x00system\x86R"
                                  + b"X" + struct.pack("<I", len(sh)) + sh.encode()
                                  + b"\x85R."),
        "unknown-module function": b"\x80\x02ctraining_utils\nrun_payload\nX\x01\x00\x00\x00x"
                                   b"\x85R.",
        "torch.hub.load": b"\x80\x02ctorch.hub\nload\nX\x01\x00\x00\x00x\x85R.",
        "numpy.load": b"\x80\x02cnumpy\nload\nX\x01\x00\x00\x00x\x85R.",
        "copyreg laundering": (b"\x80\x02ccopyreg\n_reconstructor\ncposix\nsystem\ncbuiltins\n"
                               b"object\nN\x87R."),
    }
    for label, data in raw.items():
        cases.append((label, _zip_with_pickle(ctx.path(f"evil-{len(cases)}.pth"), data)))
    return cases


def test_malicious_pickles_are_refused_and_nothing_runs(ctx):
    files = Files(ctx, registers=4, resize_val=56)
    marker = ctx.path("PWNED")
    cases = _malicious_files(ctx, marker, files)
    files.done_writing()
    # Positive control: the standard unpickler really runs these payloads.
    control = ctx.path("CONTROL")
    torch.save({"x": _Payload(os.system, (f"touch {control}",))}, ctx.path("control.pth"))
    torch.load(ctx.path("control.pth"))
    check(os.path.exists(control), "positive control: torch.load did not run the payload")
    for label, path in cases:
        is_backbone = "backbone" in label
        args = (["--backbone", path, "--checkpoint", files.checkpoint] if is_backbone else
                ["--backbone", files.backbone, "--checkpoint", path])
        r = run_convert(ctx, *args, "--lora", "merge", "-o", ctx.path("x.safetensors"),
                        expect_ok=False)
        check("refusing" in r.stderr or "not a torch storage" in r.stderr,
              f"{label}: refused without saying why: {r.stderr.strip()}")
        r2 = run_convert(ctx, "--inspect", path, expect_ok=False)
        check(not os.path.exists(marker), f"{label}: the payload ran (marker file created)")
        check(not os.path.exists(ctx.path("x.safetensors")), f"{label}: a file was written")
        ctx.note(f"{label}: {r.stderr.strip()[len('stopcal-convert: '):][:150]}")
        check(r2.returncode != 0, f"{label}: --inspect accepted it")


def test_malformed_files_are_refused_with_a_clear_message(ctx):
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    good_pkl = zipfile.ZipFile(files.checkpoint).read("ckpt_step=1234/data.pkl")
    cases = []

    def add(label, data_or_path, *words):
        if isinstance(data_or_path, bytes):
            p = ctx.path(f"bad-{len(cases)}.pth")
            with open(p, "wb") as f:
                f.write(data_or_path)
            data_or_path = p
        cases.append((label, data_or_path, words))

    add("empty file", b"", "not a torch.save")
    add("text", b"hello, I am not a checkpoint\n" * 10, "not a torch.save")
    add("legacy torch.save", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02}q\x00.",
        "legacy")
    add("truncated zip", open(files.checkpoint, "rb").read()[:5000], "zip")
    add("zip without data.pkl", _zip_bytes({"archive/version": b"3"}), "data.pkl")
    add("garbage pickle", _zip_bytes({"archive/data.pkl": b"\x80\x02}q\x00(X\x01"}),
        "malformed pickle")
    add("missing storage record", _zip_with_pickle(ctx.path("nostorage.pth"), good_pkl,
                                                   prefix="ckpt_step=1234"),
        "storage record", "missing")
    tensor = (b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00"
              b"\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04"
              b"tQK\x00K\x08K\x08\x86K\x08K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.")
    add("tensor past its storage", _zip_with_pickle(ctx.path("oob.pth"), tensor,
                                                    {"0": b"\0" * 16}), "reaches element")
    add("checkpoint without model_state_dict", _torch_bytes(ctx, {"step": 3}),
        "model_state_dict")
    add("checkpoint without config", _torch_bytes(ctx, {"model_state_dict": {
        "classifier.2.weight": torch.zeros(2, 2)}}), "no config")
    st = ctx.path("model.safetensors")
    run_convert(ctx, "--backbone", files.backbone, "--checkpoint", files.checkpoint, "--lora",
                "drop", "-o", st)
    add("safetensors as checkpoint", st, "safetensors")
    for label, path, words in cases:
        r = run_convert(ctx, "--backbone", files.backbone, "--checkpoint", path, "--lora", "merge",
                        "-o", ctx.path("x.safetensors"), expect_ok=False)
        msg = r.stderr.strip()
        check(all(w.lower() in msg.lower() for w in words) and os.path.basename(path) in msg,
              f"{label}: message should name the file and say {words}: {msg}")
        ctx.note(f"{label}: {msg[len('stopcal-convert: '):][:140]}")
    for label, path, words in cases[:8]:
        r = run_convert(ctx, "--backbone", path, "--checkpoint", files.checkpoint, "--lora",
                        "merge", "-o", ctx.path("x.safetensors"), expect_ok=False)
        check(os.path.basename(path) in r.stderr, f"{label} as backbone: {r.stderr.strip()}")


def _zip_bytes(records):
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in records.items():
            z.writestr(name, data)
    return buf.getvalue()


def _torch_bytes(ctx, obj):
    p = ctx.path(f"obj-{abs(hash(repr(obj))) % 10**8}.pth")
    torch.save(obj, p)
    return p


def test_training_package_is_never_imported(ctx):
    trap = ctx.path("TRAINING-CODE-IMPORTED")
    release = fx.make_release(seed=0, registers=4)
    backbone = ctx.path("dinov2_vitt14_reg4_pretrain.pth")
    torch.save(release, backbone)
    pkg = fx.FakeTrainingPackage(ctx.tmp, trap_marker=trap)
    os.remove(trap)  # writing the checkpoint imported it once; start clean
    checkpoint = ctx.path("ckpt.pth")
    torch.save(fx.make_finetuned(release, pkg, resize_val=56), checkpoint)
    pkg.remove()
    # The package is importable by the converter (on its PYTHONPATH), and still never imported.
    run_convert(ctx, "--backbone", backbone, "--checkpoint", checkpoint, "--lora", "merge",
                "-o", ctx.path("m.safetensors"), extra_path=pkg.dir)
    run_convert(ctx, "--inspect", checkpoint, extra_path=pkg.dir)
    check(not os.path.exists(trap), "the converter imported the training package")


def test_inspect_describes_checkpoints_backbones_and_model_files(ctx):
    files = Files(ctx, registers=4, resize_val=56, tune_cls_token=True)
    files.done_writing()
    r = run_convert(ctx, "--inspect", files.checkpoint)
    for want in ("fine-tuned checkpoint", "ImagenetTransferLearning", "argparse.Namespace",
                 "torch.optim.adamw.AdamW", "resize_val: 56", "lora_alpha: 16",
                 "classifier.2.weight", "feature_extractor.encoder.cls_token",
                 "8 LoRA adapter tensors for 2 blocks", "without a dot", "--lora merge|drop"):
        check(want in r.stdout, f"--inspect checkpoint lacks {want!r}:\n{r.stdout}")
    r = run_convert(ctx, "--inspect", files.backbone)
    for want in ("DINOv2 D=128 depth=2 heads=2", "registers=4", "mask_token", "pos-grid=37"):
        check(want in r.stdout, f"--inspect backbone lacks {want!r}:\n{r.stdout}")
    hf = fx.write_hf_safetensors(ctx.path("hf.safetensors"), files.release)
    r = run_convert(ctx, "--inspect", hf)
    check("layer_scale1.lambda1" in r.stdout and "DINOv2 D=128" in r.stdout,
          f"--inspect HF:\n{r.stdout}")
    out = ctx.path("m.safetensors")
    run_convert(ctx, "--backbone", files.backbone, "--checkpoint", files.checkpoint, "--lora",
                "merge", "-o", out)
    r = run_convert(ctx, "--inspect", out)
    for want in ("stopcal model file", "valid against models/FORMAT.md", '"handling": "merge"',
                 "stopcal-convert"):
        check(want in r.stdout, f"--inspect model lacks {want!r}:\n{r.stdout}")


def test_verify_compares_engine_and_torch_on_fits_images(ctx):
    from astropy.io import fits
    files = Files(ctx, registers=4, resize_val=56)
    files.done_writing()
    images = []
    rng = np.random.default_rng(3)
    for i in range(2):
        sky = rng.normal(0, 1e-4, (1, 1, 200, 200)).astype(np.float32)
        sky[0, 0, 90 + i * 20:100 + i * 20, 60:70] += 0.05
        images.append(ctx.path(f"img{i}.fits"))
        fits.PrimaryHDU(sky).writeto(images[-1])
    raw = harness.write_pixels(ctx, "raw.f32", files.images[0])
    r = run_convert(ctx, "--backbone", files.backbone, "--checkpoint", files.checkpoint,
                    "--lora", "merge", "-o", ctx.path("v.safetensors"), "--infer", ctx.infer,
                    "--verify", *images, raw, with_torch=True)
    check("max |Δ logit|" in r.stdout and "PASS" in r.stdout, f"--verify output:\n{r.stdout}")
    ctx.note(r.stdout.strip().splitlines()[-2])


if __name__ == "__main__":
    sys.exit(harness.main(globals()))
