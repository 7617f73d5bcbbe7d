"""An independent PyTorch forward pass of a stopcal DINOv3 classifier: the parity reference.

Written from DINOv3's definition (facebookresearch/dinov3: models/vision_transformer.py,
layers/{attention,block,rope_position_encoding,ffn_layers,layer_scale,patch_embed}.py) with
torch.nn.functional only, and fed the weights of a stopcal model file through
models/stopcal_model.py, widened to fp32 as the C reader widens them. What it does, in eval mode:

  - tokens [CLS, storage tokens (the file's register_tokens), patches], no absolute positions;
  - per block: x += ls1·proj(attn(norm1 x)), x += ls2·ffn(norm2 x); the attention's q and k of
    the patch tokens (not CLS or storage) rotated by axial RoPE: patch (row i, col j) of an
    h×w grid sits at c = (2(i+½)/h − 1, 2(j+½)/w − 1) ("separate" normalisation, no shift,
    jitter or rescale outside training), angles 2π·c/period for the Dh/4 periods, the row
    angles then the column angles, the Dh/2 of them tiled twice; q' = q·cos + rotate_half(q)·sin
    with rotate_half(x) = (−x₂, x₁) over the two halves of the head;
  - the key bias of qkv is whatever the file holds (the converter stores the release's masked
    bias, i.e. zeros for k);
  - ffn: GELU (erf) MLP, or SwiGLU w3(silu(w1 x)·w2 x) with w1, w2 the halves of w12;
  - the final norm over all tokens; its CLS row → head (Linear, ReLU, Linear) → the logit.

The RoPE periods are the file's `rope.periods` tensor (as the release's `rope_embed.periods`
buffer is part of the checkpoint); `periods_from_base` is the release's formula, for tests.

    python3 tests/reference/dinov3_torch.py --model M.safetensors --pixels a.f32 b.f32 [--fp64]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
sys.path.insert(0, HERE)
import stopcal_model as sm  # noqa: E402


def periods_from_base(base, head_dim, dtype=torch.float64):
    """DINOv3's RopePositionEmbedding periods from `base`: base^(2i / (Dh/2)), i < Dh/4."""
    i = torch.arange(head_dim // 4, dtype=dtype)
    return base ** (2 * i / (head_dim // 2))


def rope_sin_cos(periods, h, w, dtype):
    """(sin, cos), each (h·w, Dh), for an h×w patch grid in row-major order."""
    periods = periods.to(dtype)
    ch = (torch.arange(h, dtype=dtype) + 0.5) / h
    cw = (torch.arange(w, dtype=dtype) + 0.5) / w
    coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).reshape(h * w, 2)
    coords = 2.0 * coords - 1.0
    angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # (hw, 2, Dh/4)
    angles = angles.reshape(h * w, -1).repeat(1, 2)                     # (hw, Dh)
    return torch.sin(angles), torch.cos(angles)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Dinov3Classifier:
    """The classifier of one DINOv3 model file: backbone + head, weights as torch tensors."""

    def __init__(self, cfg, weights, dtype=torch.float32):
        self.cfg = cfg
        self.arch = cfg["architecture"]
        if self.arch.get("family") != "dinov3":
            raise ValueError(f"family {self.arch.get('family')!r}, not dinov3")
        self.dtype = dtype
        self.w = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype)
                  for k, v in weights.items()}
        self._rope = {}

    @classmethod
    def from_file(cls, path, dtype=torch.float32):
        cfg, weights = sm.read_model(path)
        return cls(cfg, weights, dtype)

    @property
    def input_size(self):
        return self.cfg["input"]["size"]

    def rope(self, h, w):
        if (h, w) not in self._rope:
            self._rope[(h, w)] = rope_sin_cos(self.w["rope.periods"], h, w, self.dtype)
        return self._rope[(h, w)]

    def _layer_norm(self, x, prefix):
        return F.layer_norm(x, (x.shape[-1],), self.w[prefix + ".weight"], self.w[prefix + ".bias"],
                            eps=self.arch["layernorm_eps"])

    def _linear(self, x, prefix):
        return F.linear(x, self.w[prefix + ".weight"], self.w[prefix + ".bias"])

    def _attention(self, x, b, sin, cos):
        B, N, D = x.shape
        heads = self.arch["num_heads"]
        hd = D // heads
        qkv = self._linear(x, b + "attn.qkv").reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, hd)
        p = N - sin.shape[0]              # CLS + storage tokens keep their q and k
        q = torch.cat([q[:, :, :p], q[:, :, p:] * cos + rotate_half(q[:, :, p:]) * sin], dim=2)
        k = torch.cat([k[:, :, :p], k[:, :, p:] * cos + rotate_half(k[:, :, p:]) * sin], dim=2)
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(hd), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)
        return self._linear(out, b + "attn.proj")

    def _ffn(self, x, b):
        if self.arch["ffn"] == "mlp":
            return self._linear(F.gelu(self._linear(x, b + "mlp.fc1")), b + "mlp.fc2")
        x1, x2 = self._linear(x, b + "mlp.w12").chunk(2, dim=-1)
        return self._linear(F.silu(x1) * x2, b + "mlp.w3")

    def tokens(self, pixels):
        """Patch embedding, then [CLS, storage, patches]: (B, 1 + R + h·w, D), and (h, w)."""
        P = self.arch["patch_size"]
        x = F.conv2d(pixels, self.w["patch_embed.proj.weight"], self.w["patch_embed.proj.bias"],
                     stride=P)
        B, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        parts = [self.w["cls_token"].expand(B, -1, -1)]
        if self.arch["num_registers"] > 0:
            parts.append(self.w["register_tokens"].expand(B, -1, -1))
        return torch.cat(parts + [x], dim=1), (h, w)

    @torch.no_grad()
    def logits(self, pixels):
        """Logits (B,) for pixels (B, 3, S, S) or (B, 1, S, S) (one channel is replicated)."""
        pixels = torch.as_tensor(pixels).to(self.dtype)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        S = self.input_size
        if tuple(pixels.shape[1:]) != (3, S, S):
            raise ValueError(f"pixels of shape {tuple(pixels.shape)}, the model wants "
                             f"(B, 3, {S}, {S})")
        x, (h, w) = self.tokens(pixels)
        sin, cos = self.rope(h, w)
        for i in range(self.arch["depth"]):
            b = f"blocks.{i}."
            x = x + self.w[b + "ls1.gamma"] * self._attention(self._layer_norm(x, b + "norm1"), b,
                                                              sin, cos)
            x = x + self.w[b + "ls2.gamma"] * self._ffn(self._layer_norm(x, b + "norm2"), b)
        cls = self._layer_norm(x, "norm")[:, 0]
        return self._linear(F.relu(self._linear(cls, "head.fc1")), "head.fc2")[:, 0]


def classifier_for(path, dtype=torch.float32):
    """The reference classifier of a model file, for its family (dinov2 or dinov3)."""
    cfg, weights = sm.read_model(path)
    if cfg["architecture"].get("family") == "dinov3":
        return Dinov3Classifier(cfg, weights, dtype)
    import dinov2_torch
    return dinov2_torch.Dinov2Classifier(cfg, weights, dtype)


def main(argv=None):
    import dinov2_torch
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--pixels", nargs="+", required=True)
    p.add_argument("--fp64", action="store_true", help="compute in float64")
    args = p.parse_args(argv)
    model = classifier_for(args.model, torch.float64 if args.fp64 else torch.float32)
    imgs = [dinov2_torch.load_pixels(q, model.input_size) for q in args.pixels]
    batch = torch.stack([torch.from_numpy(i).expand(3, -1, -1) for i in imgs])
    logits = [float(v) for v in model.logits(batch)]
    print(json.dumps({"model": {"name": model.cfg["name"]},
                      "results": [{"name": n, "logit": v,
                                   "continue_score": dinov2_torch.continue_score(v)}
                                  for n, v in zip(args.pixels, logits)]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
