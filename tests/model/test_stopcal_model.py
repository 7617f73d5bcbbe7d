"""The Python half of the model-file contract: models/stopcal_model.py and stopcal-genmodel.

No binary needed. Pins down the byte layout FORMAT.md asks of writers, exact dtype conversions,
the tensor table, and that generated models are reproducible and have weights that matter.
"""

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import stopcal_harness as h  # noqa: E402
from stopcal_harness import TestFailure, check  # noqa: E402

sm = h.sm


def _genmodel_module():
    loader = importlib.machinery.SourceFileLoader("stopcal_genmodel", h.GENMODEL)
    spec = importlib.util.spec_from_loader("stopcal_genmodel", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_bf16_rounds_to_nearest_even(ctx):
    one = 1.0
    ulp = 2.0 ** -7  # bf16 spacing just above 1
    cases = {
        one + ulp / 2: one,                     # tie, even neighbour is 1.0
        one + 3 * ulp / 2: one + 2 * ulp,       # tie, even neighbour is above
        one + ulp / 2 + 2.0 ** -20: one + ulp,  # just past the tie
        -(one + ulp / 4): -one,
    }
    for x, want in cases.items():
        got = float(sm.bf16_bits_to_f32(sm.f32_to_bf16_bits(np.float32(x))))
        check(got == want, f"bf16({x!r}) = {got!r}, expected {want!r}")
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32)
    back = sm.bf16_bits_to_f32(sm.f32_to_bf16_bits(special))
    check(np.isposinf(back[0]) and np.isneginf(back[1]) and np.isnan(back[2]), f"{back}")
    check(np.signbit(back[4]) and not np.signbit(back[3]), "signed zeros survive")
    check(np.isinf(sm.bf16_bits_to_f32(sm.f32_to_bf16_bits(np.float32(3.4e38)))),
          "values past bf16's largest finite round to infinity, as IEEE rounding does")


def test_written_files_follow_the_byte_layout(ctx):
    path = h.genmodel(ctx, "m.safetensors", "--embed-dim", 64, "--heads", 1, "--depth", 2,
                      "--registers", 4, "--input-size", 28, "--dtype", "bf16")
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", raw)
    check((8 + n) % 8 == 0, f"8 + N = {8 + n} is a multiple of 8")
    text = raw[8:8 + n].decode()
    header, end = json.JSONDecoder().raw_decode(text)
    check(set(text[end:]) <= {" "} and len(text) - end < 8, "padded with fewer than 8 spaces")
    check(next(iter(header)) == "__metadata__", "__metadata__ comes first")
    names = [k for k in header if k != "__metadata__"]
    check(names == sorted(names), "tensors in name order")
    at = 0
    for name in names:
        b, e = header[name]["data_offsets"]
        check(b == at, f"{name} starts where the previous one ended")
        check(header[name]["dtype"] == "BF16", f"{name} stored as BF16")
        at = e
    check(8 + n + at == len(raw), "the last tensor ends at the end of the file")
    cfg = json.loads(header["__metadata__"]["stopcal.config"])
    check(cfg["provenance"]["created_by"] == "stopcal-genmodel" and "seed" in cfg["provenance"],
          f"provenance: {cfg['provenance']}")


def test_round_trips_are_exact(ctx):
    cfg = sm.make_config(embed_dim=64, depth=1, num_heads=1, input_size=28)
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal(s).astype(np.float32)
              for k, s in sm.expected_tensor_shapes(cfg).items()}
    for dtype, widen in (("F32", lambda a: a),
                         ("F16", lambda a: a.astype(np.float16).astype(np.float32)),
                         ("BF16", lambda a: sm.bf16_bits_to_f32(sm.f32_to_bf16_bits(a)))):
        path = ctx.path(f"rt-{dtype}.safetensors")
        sm.write_model(path, cfg, arrays, dtype=dtype)
        cfg2, back = sm.read_model(path)
        digest = cfg2.pop(sm.DIGEST_KEY, None)
        check(cfg2 == cfg, "the config comes back unchanged (and the data digest added)")
        with open(path, "rb") as f:
            raw = f.read()
        start = 8 + struct.unpack_from("<Q", raw, 0)[0]
        check(digest == hashlib.sha256(raw[start:]).hexdigest(), "the digest is of the data section")
        for k, a in arrays.items():
            check(np.array_equal(back[k], widen(a).reshape(a.shape)), f"{dtype} {k}")


def test_python_reader_refuses_a_flipped_byte_and_reads_version_1(ctx):
    cfg = sm.make_config(embed_dim=64, depth=1, num_heads=1, input_size=28)
    rng = np.random.default_rng(1)
    arrays = {k: rng.standard_normal(s).astype(np.float32)
              for k, s in sm.expected_tensor_shapes(cfg).items()}
    path = ctx.path("flip.safetensors")
    sm.write_model(path, cfg, arrays)
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    raw[-5] ^= 0x80
    with open(path, "wb") as f:
        f.write(raw)
    try:
        sm.read_model(path)
        raise TestFailure("a flipped weight byte was read")
    except sm.ModelFormatError as e:
        check("corrupted" in str(e), f"message: {e}")
    # The same tensors as a version 1 file (no digest): read, and equal.
    v1 = {**cfg, "format_version": 1}
    sm.write_safetensors(ctx.path("v1.safetensors"),
                         {k: ("F32", a.shape, a) for k, a in arrays.items()},
                         {"stopcal.config": json.dumps(v1)})
    cfg1, back = sm.read_model(ctx.path("v1.safetensors"))
    check(cfg1 == v1, "a version 1 config reads back as written")
    check(all(np.array_equal(back[k], a) for k, a in arrays.items()), "v1 tensors")


def test_tensor_table_matches_format_md(ctx):
    for ffn, regs in (("mlp", 0), ("swiglu", 4)):
        cfg = sm.make_config(embed_dim=768, depth=12, num_heads=12, ffn=ffn, num_registers=regs,
                             input_size=560)
        shapes = sm.expected_tensor_shapes(cfg)
        check(len(shapes) == 10 + (regs > 0) + 14 * 12, f"{len(shapes)} tensors for {ffn}")
        check(shapes["pos_embed"] == (1, 1 + 37 * 37, 768), "pos_embed")
        check(shapes["patch_embed.proj.weight"] == (768, 3, 14, 14), "patch_embed")
        check(shapes["head.fc2.weight"] == (1, 768), "head.fc2")
        if ffn == "swiglu":
            F = cfg["architecture"]["ffn_hidden_dim"]
            check(shapes["blocks.11.mlp.w12.weight"] == (2 * F, 768), "w12")
            check(shapes["blocks.11.mlp.w3.weight"] == (768, F), "w3")
            check(shapes["register_tokens"] == (1, 4, 768), "registers")


def test_variants_have_dinov2_sizes(ctx):
    gm = _genmodel_module()
    want = {"s": (384, 12, 6, "mlp", 1536), "b": (768, 12, 12, "mlp", 3072),
            "l": (1024, 24, 16, "mlp", 4096), "g": (1536, 40, 24, "swiglu", 4096)}
    for v, (D, L, H, ffn, F) in want.items():
        for regs, interp in ((0, "bicubic_scale_factor"), (4, "bicubic_antialias")):
            args = gm.build_parser().parse_args(["--variant", v, "--registers", str(regs),
                                                 "-o", "x"])
            a = gm.config_from_args(args)["architecture"]
            got = (a["embed_dim"], a["depth"], a["num_heads"], a["ffn"], a["ffn_hidden_dim"])
            check(got == (D, L, H, ffn, F), f"{v}: {got}")
            check(a["pos_embed_interpolation"] == interp and a["num_registers"] == regs,
                  f"{v} with {regs} registers interpolates by {a['pos_embed_interpolation']}")
    a = gm.config_from_args(gm.build_parser().parse_args(
        ["--embed-dim", "128", "--depth", "2", "--ffn", "swiglu", "--registers", "4",
         "--pos-interp", "bicubic_scale_factor", "-o", "x"]))["architecture"]
    check((a["num_heads"], a["ffn_hidden_dim"], a["pos_embed_interpolation"]) ==
          (2, 344, "bicubic_scale_factor"), f"custom tiny SwiGLU: {a}")


def test_generated_models_are_reproducible(ctx):
    args = ("--embed-dim", 64, "--heads", 1, "--depth", 1, "--input-size", 28)
    a = h.genmodel(ctx, "a.safetensors", *args, "--seed", 5)
    b = h.genmodel(ctx, "b.safetensors", *args, "--seed", 5)
    c = h.genmodel(ctx, "c.safetensors", *args, "--seed", 6)
    check(h.sha256_of(a) == h.sha256_of(b), "same seed, same bytes")
    check(h.sha256_of(a) != h.sha256_of(c), "another seed, other weights")


def test_generated_weights_are_meaningful(ctx):
    path = h.genmodel(ctx, "m.safetensors", "--variant", "s", "--registers", 4,
                      "--input-size", 224, "--seed", 1)
    _, w = sm.read_model(path)
    gammas = np.concatenate([v for k, v in w.items() if k.endswith(".gamma")])
    check(gammas.min() >= 0.1 and gammas.max() <= 1.0, "LayerScale in [0.1, 1], not 1e-5")
    lnw = np.concatenate([v for k, v in w.items() if "norm" in k and k.endswith(".weight")])
    check(abs(lnw.mean() - 1) < 0.02 and 0.05 < lnw.std() < 0.2, "LayerNorm weights near 1")
    for k, v in w.items():
        check(np.abs(v).max() > 0 and np.isfinite(v).all(), f"{k} is non-zero and finite")
    qkv = w["blocks.0.attn.qkv.weight"]
    check(0.02 < qkv.std() < 0.08, f"linear weights at DINOv2's scale, std {qkv.std():.3f}")
    pos = w["pos_embed"][0, 1:].reshape(37, 37, -1)
    smooth = np.abs(np.diff(pos, axis=0)).mean() / np.abs(pos).mean()
    check(smooth < 0.6, f"the positional table varies smoothly over the grid ({smooth:.2f})")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
