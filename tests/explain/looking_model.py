"""A model built to look where the sky is brightest: its last (only) block's CLS query attends to
each patch in proportion to the patch's mean brightness, so the patch holding a lone bright source
must carry the largest CLS attention. Used to check that the attention map lands on the right
sky pixels.

Construction (D = 64, one head, one block, 8 × 8 patches at 112 px):
  - patch embedding: feature 0 = the patch's mean over its 3·14² pixels, feature 1 = 1 (bias);
    no positions; CLS = e₁;
  - block 1 LayerNorm (weight 1, bias 0): token (m, 1, 0, …) → its feature 0 increases with m
    (checked below over the input range);
  - q = 200·e₀ for every token (bias only), k = the normed token's feature 0, v = 0, FFN = 0: the
    CLS scores are 25·k_j, so softmax peaks at the brightest patch and the residual stream, hence
    the logit, does not depend on the image.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import stopcal_model as sm  # noqa: E402

D, S, P = 64, 112, 14


def normed_feature0(m):
    x = np.zeros(D)
    x[0], x[1] = m, 1.0
    return (x[0] - x.mean()) / np.sqrt(x.var() + 1e-6)


def write(path, profile="cortexchange-v2"):
    ms = np.linspace(0, 1, 201)
    f = [normed_feature0(m) for m in ms]
    assert all(b > a for a, b in zip(f, f[1:])), "feature 0 must increase with brightness"
    cfg = sm.make_config(embed_dim=D, depth=1, num_heads=1, input_size=S, pos_embed_grid=S // P,
                         profile=profile, name="looks-at-the-brightest-patch")
    shapes = sm.expected_tensor_shapes(cfg)
    t = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    t["patch_embed.proj.weight"][0] = 1.0 / (3 * P * P)
    t["patch_embed.proj.bias"][1] = 1.0
    t["cls_token"][0, 0, 1] = 1.0
    b = "blocks.0."
    for n in ("norm1.weight", "norm2.weight", "ls1.gamma", "ls2.gamma"):
        t[b + n][:] = 1.0
    t[b + "attn.qkv.bias"][0] = 200.0         # q = 200·e₀
    t[b + "attn.qkv.weight"][D + 0, 0] = 1.0  # k₀ = normed feature 0
    t["norm.weight"][:] = 1.0
    rng = np.random.default_rng(1)
    t["head.fc1.weight"] = rng.normal(0, 0.2, shapes["head.fc1.weight"]).astype(np.float32)
    t["head.fc2.weight"] = rng.normal(0, 0.2, shapes["head.fc2.weight"]).astype(np.float32)
    sm.write_model(path, cfg, t)
    return path


if __name__ == "__main__":
    write(sys.argv[1])
