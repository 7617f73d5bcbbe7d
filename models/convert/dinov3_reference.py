"""The reference pipeline's DINOv3 classifier in PyTorch, built from release state-dict names.

It mirrors the modules facebookresearch/dinov3 builds for a hub ViT (`DinoVisionTransformer`
with `RopePositionEmbedding` and its persistent `periods` buffer, `SelfAttentionBlock`s whose
`attn.qkv` is a `LinearKMaskedBias` multiplying its bias by the `bias_mask` buffer, LayerScale,
an MLP or a SwiGLU feed-forward with separate w1/w2/w3, `norm_layer="layernormbf16"`, i.e. eps
1e-5) and loads a release state dict into them with `load_state_dict(strict=True)`, so every
name and shape of the release layout is checked. The classifier around it is the DINOv2 one
(convert/torch_reference.py): LoRA wrapping each block's qkv, the head on the CLS token.

Nothing here reads stopcal files or shares code with the converter's mapping (convert/dinov3.py):
comparing the engine on a converted file with this model tests the conversion itself.
Attention is written out (torch 1.13 has no scaled_dot_product_attention). Needs torch.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import torch_reference as tr

LAYERNORM_EPS = 1e-5  # "layernormbf16", the norm_layer of every hub ViT in dinov3/hub/backbones.py


class RopePositionEmbedding(nn.Module):
    """Eval-mode axial RoPE: "separate" coordinate normalisation, no augmentation."""

    def __init__(self, head_dim):
        super().__init__()
        self.register_buffer("periods", torch.ones(head_dim // 4))

    def forward(self, H, W):
        dd = {"dtype": torch.float32}
        ch = torch.arange(0.5, H, **dd) / H
        cw = torch.arange(0.5, W, **dd) / W
        coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


class LinearKMaskedBias(nn.Linear):
    def __init__(self, dim_in, dim_out):
        super().__init__(dim_in, dim_out, bias=True)
        self.register_buffer("bias_mask", torch.ones(dim_out))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias * self.bias_mask)


def _rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, masked_k_bias):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.qkv = LinearKMaskedBias(dim, 3 * dim) if masked_k_bias else nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope):
        B, N, C = x.shape
        hd = C // self.heads
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, hd).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        sin, cos = rope
        p = N - sin.shape[-2]
        q = torch.cat((q[:, :, :p], q[:, :, p:] * cos + _rotate_half(q[:, :, p:]) * sin), dim=2)
        k = torch.cat((k[:, :, :p], k[:, :, p:] * cos + _rotate_half(k[:, :, p:]) * sin), dim=2)
        attn = torch.softmax(q @ k.transpose(-2, -1) * hd ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(dim, hidden), nn.Linear(dim, hidden), \
            nn.Linear(hidden, dim)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class Block(nn.Module):
    def __init__(self, dim, heads, ffn, hidden, masked_k_bias):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.attn = SelfAttention(dim, heads, masked_k_bias)
        self.ls1 = tr.LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.mlp = Mlp(dim, hidden) if ffn == "mlp" else SwiGLUFFN(dim, hidden)
        self.ls2 = tr.LayerScale(dim)

    def forward(self, x, rope):
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """A DINOv3 hub ViT, sized from a release state dict's shapes."""

    def __init__(self, sd):
        super().__init__()
        dim = sd["cls_token"].shape[-1]
        head_dim = 4 * sd["rope_embed.periods"].shape[0]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        ffn = "mlp" if "blocks.0.mlp.fc1.weight" in sd else "swiglu"
        fc = "blocks.0.mlp.fc1.weight" if ffn == "mlp" else "blocks.0.mlp.w1.weight"
        hidden = sd[fc].shape[0]
        masked = "blocks.0.attn.qkv.bias_mask" in sd
        self.patch_size = sd["patch_embed.proj.weight"].shape[-1]
        self.n_storage_tokens = sd["storage_tokens"].shape[1] if "storage_tokens" in sd else 0
        self.patch_embed = tr.PatchEmbed(self.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if self.n_storage_tokens:
            self.storage_tokens = nn.Parameter(torch.zeros(1, self.n_storage_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.rope_embed = RopePositionEmbedding(head_dim)
        self.blocks = nn.ModuleList(Block(dim, dim // head_dim, ffn, hidden, masked)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        if "local_cls_norm.weight" in sd:  # untie_global_and_local_cls_norm: training only
            self.local_cls_norm = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.head = nn.Identity()

    def forward(self, x):
        B, _, H, W = x.shape
        x = self.patch_embed(x)
        parts = [self.cls_token.expand(B, -1, -1)]
        if self.n_storage_tokens:
            parts.append(self.storage_tokens.expand(B, -1, -1))
        x = torch.cat(parts + [x], dim=1)
        rope = self.rope_embed(H // self.patch_size, W // self.patch_size)
        for blk in self.blocks:
            x = blk(x, rope)
        return self.head(self.norm(x)[:, 0])  # x_norm_clstoken


def build(release_sd, checkpoint_sd, model_kwargs, lora):
    """The reference's classifier, in eval mode, from a DINOv3 release state dict (hub names)
    and a fine-tuned model_state_dict (training-code names), both name → torch.Tensor.
    lora as in torch_reference.build. Token overrides may be spelled storage_tokens (the
    module's attribute) or register_tokens (DINOv2's spelling)."""
    release_sd = {k: v.float() for k, v in release_sd.items()}
    release_sd.setdefault("mask_token", torch.zeros(1, release_sd["cls_token"].shape[-1]))
    encoder = DinoVisionTransformer(release_sd)
    encoder.load_state_dict(release_sd, strict=True)
    adapters = {k: v for k, v in checkpoint_sd.items() if tr.is_lora_key(k)}
    r = next((v.shape[0] for k, v in adapters.items() if "linear_a_q" in k), 1)
    use_lora = bool(model_kwargs.get("use_lora", False)) or bool(adapters)
    alpha = float(model_kwargs.get("lora_alpha", 16.0))
    fe = tr.FeatureExtractor(encoder, use_lora, r, alpha)
    dim = release_sd["cls_token"].shape[-1]
    hidden = checkpoint_sd["classifier.2.weight"].shape[0]
    model = tr.ReferenceClassifier(fe, dim, hidden)
    sd = {}
    for k, v in checkpoint_sd.items():
        if tr.is_lora_key(k):
            continue
        sd[k.replace("encoder.register_tokens", "encoder.storage_tokens")] = v.float()
    if lora == "merge":
        sd.update({tr.dotted(k): v.float() for k, v in adapters.items()})
    _, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise ValueError(f"checkpoint keys the reference model does not have: {unexpected[:5]}")
    model.eval()
    return model


logits = tr.logits
