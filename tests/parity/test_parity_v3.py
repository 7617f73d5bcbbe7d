"""Parity of `stopcal-infer` on DINOv3 models with the PyTorch reference (tests/reference/
dinov3_torch.py), on the CPU backend (fp32): |Δ logit| ≤ 1e-4·max(1, |logit|) and
|Δ continue_score| ≤ 1e-4 (ARCHITECTURE.md §3), as for DINOv2.

Every case writes a random dinov3 model (models/stopcal-genmodel --family dinov3) and images;
the sizes are multiples of 16 other than 224 too (256, 560, an odd 13×13 grid), since DINOv3 has
no table to resize: the RoPE angles are computed for each grid.

    test_parity_v3.py --infer build/server/stopcal-infer [--case NAME]...
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import stopcal_harness as h  # noqa: E402
from stopcal_harness import check  # noqa: E402

V3 = ("--family", "dinov3")


def images(size, seeds, channels=3):
    return [h.make_image(s, size, channels) for s in seeds]


def test_tiny_dinov3_at_224(ctx):
    m = h.genmodel(ctx, "tiny.safetensors", *V3, "--variant", "tiny", "--input-size", 224,
                   "--seed", 1)
    h.check_parity(ctx, "dinov3-tiny@224", m, images(224, [10, 11]))


def test_s16_at_224_full_depth(ctx):
    m = h.genmodel(ctx, "s16.safetensors", *V3, "--variant", "s", "--input-size", 224,
                   "--seed", 2)
    cfg, _ = h.sm.read_model(m)
    a = cfg["architecture"]
    check((a["embed_dim"], a["depth"], a["num_heads"], a["num_registers"], a["patch_size"]) ==
          (384, 12, 6, 4, 16), f"ViT-S/16: {a}")
    h.check_parity(ctx, "vits16@224", m, images(224, [20, 21]))


def test_swiglu_variant(ctx):
    m = h.genmodel(ctx, "swiglu.safetensors", *V3, "--variant", "tiny-swiglu",
                   "--head-hidden", 96, "--input-size", 224, "--seed", 3)
    cfg, _ = h.sm.read_model(m)
    check(cfg["architecture"]["ffn"] == "swiglu", "a SwiGLU model")
    h.check_parity(ctx, "dinov3-tiny-swiglu@224", m, images(224, [30, 31]))


def test_input_size_256(ctx):
    m = h.genmodel(ctx, "t256.safetensors", *V3, "--variant", "tiny", "--input-size", 256,
                   "--seed", 4)
    h.check_parity(ctx, "dinov3-tiny@256", m, images(256, [40, 41]))


def test_input_size_560(ctx):
    # 35×35 patches, 1 + 4 + 1225 tokens.
    m = h.genmodel(ctx, "t560.safetensors", *V3, "--variant", "tiny", "--input-size", 560,
                   "--seed", 5)
    h.check_parity(ctx, "dinov3-tiny@560", m, images(560, [50, 51]))


def test_b16_at_560_two_blocks(ctx):
    # ViT-B/16's width and heads at the deployed input size, two blocks of twelve.
    m = h.genmodel(ctx, "b16.safetensors", *V3, "--variant", "b", "--depth", 2,
                   "--input-size", 560, "--seed", 6)
    h.check_parity(ctx, "vitb16-2blocks@560", m, images(560, [60]))


def test_odd_grid_and_no_storage_tokens(ctx):
    # 208 px → 13×13: the coordinates (i + ½)/13 are not dyadic; no storage tokens, so the
    # rotated tokens start right after CLS.
    m = h.genmodel(ctx, "odd.safetensors", *V3, "--variant", "tiny", "--registers", 0,
                   "--input-size", 208, "--seed", 7)
    h.check_parity(ctx, "dinov3-tiny-noreg@208", m, images(208, [70, 71]))


def test_bf16_weight_file(ctx):
    # The reference reads the same file: the bf16-rounded weights, widened exactly to fp32.
    m = h.genmodel(ctx, "bf16.safetensors", *V3, "--variant", "tiny", "--input-size", 256,
                   "--dtype", "bf16", "--seed", 8)
    _, _, dtypes = h.sm.read_safetensors(m)
    check("BF16" in set(dtypes.values()), f"{m} holds {set(dtypes.values())}")
    h.check_parity(ctx, "dinov3-tiny-bf16@256", m, images(256, [80, 81]))


def test_batch_of_three_images_in_one_call(ctx):
    m = h.genmodel(ctx, "batch.safetensors", *V3, "--variant", "tiny", "--input-size", 224,
                   "--seed", 9)
    ims = [h.make_image(90, 224), h.make_image(91, 224, channels=1), h.make_image(92, 224)]
    paths = [h.write_pixels(ctx, f"img{i}.f32", im) for i, im in enumerate(ims)]
    ref = h.reference_logits(m, ims)
    check(min(abs(a - b) for a, b in [(ref[0], ref[1]), (ref[1], ref[2]), (ref[0], ref[2])]) > 1e-3,
          f"the three images should give different logits: {ref}")
    _, doc = h.run_infer(ctx, m, paths)
    h.compare(ctx, "dinov3 batch of 3", ref, doc["results"])
    _, split = h.run_infer(ctx, m, paths, "--max-batch", 2)
    h.compare(ctx, "dinov3 batch of 3 with --max-batch 2", ref, split["results"])
    for i, p in enumerate(paths):
        _, one = h.run_infer(ctx, m, [p])
        h.compare(ctx, f"dinov3 image {i} alone", ref[i:i + 1], one["results"])


if __name__ == "__main__":
    sys.exit(h.main(globals()))
