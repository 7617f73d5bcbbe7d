"""DINOv3 model files (FORMAT.md, format_version 3): a good file loads in both readers and scores;
a missing, extra or misshapen tensor, a DINOv2 key, dinov3 or a runtime object in a version 2 file
are refused by both with a message naming the problem; version 1 and 2 DINOv2 files still load.
"""

import importlib.machinery
import importlib.util
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import stopcal_harness as h  # noqa: E402
from stopcal_harness import TestFailure, check  # noqa: E402

sm = h.sm
SIZE = 32  # a 2×2 grid of 16-pixel patches


def tiny(ctx, family="dinov3", *extra):
    path = h.genmodel(ctx, f"{family}.safetensors", "--family", family, "--embed-dim", 64,
                      "--heads", 1, "--depth", 2, "--input-size", SIZE if family == "dinov3" else 28,
                      "--name", f"tiny-{family}", *extra)
    cfg, arrays = sm.read_model(path)
    cfg.pop(sm.DIGEST_KEY)
    return path, cfg, arrays


def write(ctx, cfg, arrays, name="bad.safetensors"):
    """A file with exactly these tensors and this config, nothing checked (the readers judge)."""
    path = ctx.path(name)
    sm.write_safetensors(path, {k: ("F32", a.shape, a) for k, a in arrays.items()},
                         {"stopcal.config": json.dumps(cfg)})
    return path


def pixels(ctx, size=SIZE):
    return h.write_pixels(ctx, "x.f32", h.make_image(0, size))


def expect_refusal(ctx, path, *keywords, size=SIZE):
    try:
        sm.read_model(path)
        raise TestFailure("the Python reader accepted it")
    except sm.ModelFormatError as e:
        for k in keywords:
            check(k in str(e), f"Python reader: {k!r} not in {str(e)!r}")
    r, _ = h.run_infer(ctx, path, [pixels(ctx, size)], json_out=False, expect_ok=False)
    lines = r.stderr.splitlines()
    check(r.returncode != 0 and r.stdout == "", f"refused: exit {r.returncode}, stdout {r.stdout!r}")
    check(len(lines) == 1 and lines[0].startswith("stopcal-infer: "), f"one line: {r.stderr!r}")
    for k in keywords:
        check(k in lines[0], f"{k!r} not in the C reader's message: {lines[0]!r}")
    ctx.note(f"refused: {lines[0]}")


def test_a_dinov3_file_loads_in_both_readers_and_scores(ctx):
    path, cfg, arrays = tiny(ctx)
    check(cfg["format_version"] == 3 and cfg["architecture"]["family"] == "dinov3", f"{cfg}")
    check("pos_embed" not in arrays and arrays["rope.periods"].shape == (16,), "rope.periods, no pos_embed")
    check(arrays["register_tokens"].shape == (1, 4, 64), "4 storage tokens by default")
    check(cfg["preprocessing"]["profile"] == "cortexchange-v3", "v3 profile by default")
    check(abs(cfg["architecture"]["layernorm_eps"] - 1e-5) < 1e-12, "eps 1e-5 (layernormbf16)")
    want = 100.0 ** (2 * np.arange(16) / 32)
    check(np.allclose(arrays["rope.periods"], want, rtol=1e-6), "periods from the base")
    _, doc = h.run_infer(ctx, path, [pixels(ctx)])
    check(np.isfinite(doc["results"][0]["logit"]), f"{doc['results'][0]}")


def test_a_missing_rope_periods_is_refused(ctx):
    _, cfg, arrays = tiny(ctx)
    del arrays["rope.periods"]
    expect_refusal(ctx, write(ctx, cfg, arrays), "missing tensor", "rope.periods")


def test_a_pos_embed_in_a_dinov3_file_is_refused(ctx):
    _, cfg, arrays = tiny(ctx)
    arrays["pos_embed"] = np.zeros((1, 5, 64), np.float32)
    expect_refusal(ctx, write(ctx, cfg, arrays), "unexpected tensor", "pos_embed")


def test_rope_periods_stay_f32_in_a_bf16_file_and_no_reader_takes_them_narrower(ctx):
    """The periods are a formula's values: bf16 would move them by up to 2^-9 and every RoPE
    angle with them, so a bf16 file keeps them F32 and a file storing them narrower is refused."""
    path, cfg, arrays = tiny(ctx, "dinov3", "--dtype", "bf16")
    _, read, dtypes = sm.read_safetensors(path)
    check(dtypes["rope.periods"] == "F32" and dtypes["blocks.0.attn.qkv.weight"] == "BF16", dtypes)
    want = 100.0 ** (np.arange(16, dtype=np.float32) * 2 / 32)  # Dh 64: base^(2k/(Dh/2))
    check(np.allclose(read["rope.periods"], want, rtol=1e-6, atol=0), read["rope.periods"])
    cfg["format_version"] = 3
    path = ctx.path("bf16_periods.safetensors")
    sm.write_safetensors(path, {k: ("BF16" if k == "rope.periods" else "F32", a.shape, a)
                                for k, a in arrays.items()}, {"stopcal.config": json.dumps(cfg)})
    expect_refusal(ctx, path, "rope.periods", "must be stored as F32", "BF16")


def test_a_wrong_rope_periods_shape_is_refused(ctx):
    _, cfg, arrays = tiny(ctx)
    arrays["rope.periods"] = np.ones(8, np.float32)
    expect_refusal(ctx, write(ctx, cfg, arrays), "rope.periods", "shape")


def test_a_non_positive_rope_period_is_refused_by_the_engine(ctx):
    _, cfg, arrays = tiny(ctx)
    arrays["rope.periods"][3] = 0.0
    r, _ = h.run_infer(ctx, write(ctx, cfg, arrays), [pixels(ctx)], json_out=False, expect_ok=False)
    check(r.returncode != 0 and "rope.periods[3]" in r.stderr, f"refused: {r.stderr!r}")


def test_dinov3_in_a_version_2_file_is_refused(ctx):
    _, cfg, arrays = tiny(ctx)
    cfg["format_version"] = 2
    expect_refusal(ctx, write(ctx, cfg, arrays), "dinov3", "format_version 3")


def test_a_dinov2_key_in_a_dinov3_config_is_refused(ctx):
    _, cfg, arrays = tiny(ctx)
    cfg["architecture"]["pos_embed_grid"] = 37
    expect_refusal(ctx, write(ctx, cfg, arrays), "pos_embed_grid")


def test_a_dinov3_config_without_rope_base_is_refused(ctx):
    _, cfg, arrays = tiny(ctx)
    del cfg["architecture"]["rope_base"]
    expect_refusal(ctx, write(ctx, cfg, arrays), "rope_base")


def test_an_unknown_family_is_refused_naming_the_known_ones(ctx):
    _, cfg, arrays = tiny(ctx)
    cfg["architecture"]["family"] = "dinov4"
    expect_refusal(ctx, write(ctx, cfg, arrays), "dinov4", "dinov2", "dinov3")


def test_runtime_precision_is_read_in_version_3_only(ctx):
    _, cfg, arrays = tiny(ctx)
    for p in sm.PRECISIONS:
        ok = write(ctx, {**cfg, "runtime": {"precision": p}}, arrays, f"rt-{p}.safetensors")
        check(sm.read_model(ok)[0]["runtime"] == {"precision": p}, "read back")
        h.run_infer(ctx, ok, [pixels(ctx)])
    expect_refusal(ctx, write(ctx, {**cfg, "runtime": {"precision": "fp8"}}, arrays), "runtime.precision")
    expect_refusal(ctx, write(ctx, {**cfg, "runtime": {"precision": "fp32", "x": 1}}, arrays), "runtime")
    _, cfg2, arrays2 = tiny(ctx, "dinov2")
    expect_refusal(ctx, write(ctx, {**cfg2, "format_version": 2, "runtime": {"precision": "fp32"}}, arrays2),
                   "runtime", "format_version 3", size=28)


def test_dinov2_files_of_versions_1_and_2_still_load_with_the_same_answers(ctx):
    path, cfg, arrays = tiny(ctx, "dinov2", "--registers", 4)
    _, want = h.run_infer(ctx, path, [pixels(ctx, 28)])
    for v in (1, 2):
        old = write(ctx, {**cfg, "format_version": v}, arrays, f"v{v}.safetensors")
        check(sm.read_model(old)[0]["format_version"] == v, f"read as version {v}")
        _, got = h.run_infer(ctx, old, [pixels(ctx, 28)])
        check(got["results"][0]["logit"] == want["results"][0]["logit"],
              f"v{v}: {got['results'][0]['logit']} vs {want['results'][0]['logit']}")


def test_genmodel_writes_every_dinov3_size(ctx):
    # backbones.py: S 384/12/6 mlp, S+ 384/12/6 swiglu ratio 6, B 768/12/12, L 1024/24/16,
    # L+ 1024/24/16 swiglu, H+ 1280/32/20 swiglu; SwiGLU hidden int(6·D·2/3) rounded up to 8.
    sizes = {"s": (384, 12, 6, "mlp", 1536), "s+": (384, 12, 6, "swiglu", 1536),
             "b": (768, 12, 12, "mlp", 3072), "l": (1024, 24, 16, "mlp", 4096),
             "l+": (1024, 24, 16, "swiglu", 4096), "h+": (1280, 32, 20, "swiglu", 5120)}
    loader = importlib.machinery.SourceFileLoader("stopcal_genmodel", h.GENMODEL)
    gm = importlib.util.module_from_spec(importlib.util.spec_from_loader("stopcal_genmodel", loader))
    loader.exec_module(gm)
    for v, (D, L, NH, ffn, F) in sizes.items():
        cfg = gm.config_from_args(gm.build_parser().parse_args(["--family", "dinov3", "--variant", v,
                                                                "-o", "x"]))
        a = cfg["architecture"]
        got = (a["embed_dim"], a["depth"], a["num_heads"], a["ffn"], a["ffn_hidden_dim"])
        check(got == (D, L, NH, ffn, F), f"{v}: {got}")
        check(a["num_registers"] == 4 and a["patch_size"] == 16, f"{v}: {a}")
    # A B/16-wide file, one block deep, written and scored.
    path = h.genmodel(ctx, "b16.safetensors", "--family", "dinov3", "--variant", "b", "--depth", 1,
                      "--input-size", 64)
    h.run_infer(ctx, path, [pixels(ctx, 64)])


def _torch_dinov3_logit(cfg, w, image):
    """The same network in a few lines of torch (float64), RoPE as rope_position_encoding.py
    computes it in eval mode: an independent check of the angle and rotation conventions (the full
    parity suite against a PyTorch DINOv3 is tests/parity's)."""
    import torch
    a = cfg["architecture"]
    D, NH, R, P = a["embed_dim"], a["num_heads"], a["num_registers"], a["patch_size"]
    g, Dh, pre = image.shape[-1] // P, D // NH, 1 + a["num_registers"]
    W = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
    x = torch.nn.functional.conv2d(torch.tensor(image[None], dtype=torch.float64),
                                   W["patch_embed.proj.weight"], W["patch_embed.proj.bias"], stride=P)
    x = torch.cat([W["cls_token"], W["register_tokens"], x.flatten(2).transpose(1, 2)], 1)
    c = torch.arange(0.5, g, dtype=torch.float32) / g
    coords = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).flatten(0, 1) * 2.0 - 1.0
    angles = (2 * np.pi * coords[:, :, None] / torch.tensor(w["rope.periods"])[None, None]).flatten(1, 2).tile(2)
    cos, sin = torch.cos(angles).double(), torch.sin(angles).double()

    def rope(u):
        p = u[:, :, pre:]
        return torch.cat([u[:, :, :pre], p * cos + torch.cat([-p[..., Dh // 2:], p[..., :Dh // 2]], -1) * sin], 2)

    def ln(u, n):
        return torch.nn.functional.layer_norm(u, (D,), W[n + ".weight"], W[n + ".bias"], a["layernorm_eps"])

    for i in range(a["depth"]):
        b = f"blocks.{i}."
        q, k, v = (ln(x, b + "norm1") @ W[b + "attn.qkv.weight"].T + W[b + "attn.qkv.bias"]) \
            .reshape(1, -1, 3, NH, Dh).permute(2, 0, 3, 1, 4)
        o = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / Dh ** 0.5, -1) @ v
        x = x + W[b + "ls1.gamma"] * (o.transpose(1, 2).reshape(1, -1, D) @ W[b + "attn.proj.weight"].T
                                      + W[b + "attn.proj.bias"])
        y = torch.nn.functional.gelu(ln(x, b + "norm2") @ W[b + "mlp.fc1.weight"].T + W[b + "mlp.fc1.bias"])
        x = x + W[b + "ls2.gamma"] * (y @ W[b + "mlp.fc2.weight"].T + W[b + "mlp.fc2.bias"])
    h = torch.relu(ln(x, "norm")[:, 0] @ W["head.fc1.weight"].T + W["head.fc1.bias"])
    return float(h @ W["head.fc2.weight"][0] + W["head.fc2.bias"][0])


def test_the_engine_matches_a_few_lines_of_torch_at_two_sizes(ctx):
    for size in (64, 48):  # grids 4 and 3: the RoPE table of each
        path = h.genmodel(ctx, f"t{size}.safetensors", "--family", "dinov3", "--variant", "tiny",
                          "--input-size", size, "--seed", 5)
        cfg, w = sm.read_model(path)
        image = h.make_image(3, size)
        want = _torch_dinov3_logit(cfg, w, image)
        _, doc = h.run_infer(ctx, path, [h.write_pixels(ctx, "t.f32", image)])
        got = doc["results"][0]["logit"]
        ctx.note(f"{size} px: engine {got:.7f}, torch {want:.7f}")
        check(abs(got - want) <= h.LOGIT_RTOL * max(1, abs(want)), f"{size} px: {got} vs {want}")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
