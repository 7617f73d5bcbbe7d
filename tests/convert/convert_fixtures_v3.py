"""Synthetic DINOv3 inputs for the converter tests, in the layouts the real files have.

- A DINOv3 release file: `torch.save(model.state_dict())` of facebookresearch/dinov3's hub
  `DinoVisionTransformer` — cls_token, storage_tokens, mask_token (1, D), patch_embed.proj.*,
  rope_embed.periods (base^(2i/(Dh/2)), fp32), blocks.N.{norm1, attn.qkv.{weight, bias,
  bias_mask}, attn.proj, ls1.gamma, norm2, mlp.fc1/fc2 or mlp.w1/w2/w3, ls2.gamma}, norm.*.
  The raw qkv bias has a non-zero k third that bias_mask (1, 0, 1 by thirds) cancels, so a
  converter that forgets the mask is caught.
- The same backbone as Hugging Face DINOv3ViTModel safetensors with its config.json: q/k/v_proj
  (no k bias), o_proj, layer_scale{1,2}.lambda1, mlp.{up,down}_proj or mlp.{gate,up,down}_proj,
  embeddings.*, norm.*.
- Fine-tuned checkpoints in the training code's layout (convert_fixtures.make_finetuned), with
  model_name dinov3_vit*16 and storage tokens under feature_extractor.encoder.storage_tokens.

Reference logits come from convert/dinov3_reference.py fed the files' own tensors.
"""

import collections
import json
import math
import os

import numpy as np
import torch

import convert_fixtures as fx
from convert import dinov3_reference


def swiglu_hidden(dim, ratio=4.0, align=8):
    """DINOv3's SwiGLUFFN width for hidden_features h = dim·ratio: ⌊2/3·h⌋ rounded up to
    a multiple of align."""
    d = int(int(dim * ratio) * 2 / 3)
    return d + (-d % align)


def make_release(seed=0, dim=fx.D_TINY, depth=2, heads=2, storage=4, ffn="mlp", base=100.0,
                 patch=16, ratio=4.0):
    n = fx._gen(seed)
    g = torch.Generator().manual_seed(seed + 1)
    hd = dim // heads
    sd = collections.OrderedDict()
    sd["cls_token"] = n(1, 1, dim, std=0.5)
    if storage:
        sd["storage_tokens"] = n(1, storage, dim, std=0.5)
    sd["mask_token"] = torch.zeros(1, dim)
    sd["patch_embed.proj.weight"] = n(dim, 3, patch, patch, std=1 / math.sqrt(3 * patch * patch))
    sd["patch_embed.proj.bias"] = n(dim, std=0.1)
    sd["rope_embed.periods"] = base ** (2 * torch.arange(hd // 4, dtype=torch.float32) / (hd // 2))
    hidden = int(dim * ratio) if ffn == "mlp" else swiglu_hidden(dim, ratio)
    for i in range(depth):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"] = n(dim, std=0.1, mean=1.0)
        sd[b + "norm1.bias"] = n(dim, std=0.1)
        sd[b + "attn.qkv.weight"] = n(3 * dim, dim, std=1 / math.sqrt(dim))
        sd[b + "attn.qkv.bias"] = n(3 * dim, std=0.1) + torch.cat(
            [torch.zeros(dim), torch.full((dim,), 5.0), torch.zeros(dim)])
        sd[b + "attn.qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim),
                                                   torch.ones(dim)])
        sd[b + "attn.proj.weight"] = n(dim, dim, std=1 / math.sqrt(dim))
        sd[b + "attn.proj.bias"] = n(dim, std=0.1)
        sd[b + "ls1.gamma"] = torch.rand(dim, generator=g) * 0.9 + 0.1
        sd[b + "norm2.weight"] = n(dim, std=0.1, mean=1.0)
        sd[b + "norm2.bias"] = n(dim, std=0.1)
        if ffn == "mlp":
            sd[b + "mlp.fc1.weight"] = n(hidden, dim, std=1 / math.sqrt(dim))
            sd[b + "mlp.fc1.bias"] = n(hidden, std=0.1)
            sd[b + "mlp.fc2.weight"] = n(dim, hidden, std=1 / math.sqrt(hidden))
            sd[b + "mlp.fc2.bias"] = n(dim, std=0.1)
        else:
            for w in ("w1", "w2"):
                sd[b + f"mlp.{w}.weight"] = n(hidden, dim, std=1 / math.sqrt(dim))
                sd[b + f"mlp.{w}.bias"] = n(hidden, std=0.1)
            sd[b + "mlp.w3.weight"] = n(dim, hidden, std=1 / math.sqrt(hidden))
            sd[b + "mlp.w3.bias"] = n(dim, std=0.1)
        sd[b + "ls2.gamma"] = torch.rand(dim, generator=g) * 0.9 + 0.1
    sd["norm.weight"] = n(dim, std=0.1, mean=1.0)
    sd["norm.bias"] = n(dim, std=0.1)
    return sd


def hf_state_dict(release):
    hf = collections.OrderedDict()
    D = release["cls_token"].shape[-1]
    hf["embeddings.cls_token"] = release["cls_token"]
    hf["embeddings.mask_token"] = release["mask_token"][None]
    hf["embeddings.register_tokens"] = release.get("storage_tokens", torch.zeros(1, 0, D))
    hf["embeddings.patch_embeddings.weight"] = release["patch_embed.proj.weight"]
    hf["embeddings.patch_embeddings.bias"] = release["patch_embed.proj.bias"]
    depth = 1 + max(int(k.split(".")[1]) for k in release if k.startswith("blocks."))
    for i in range(depth):
        s, d = f"blocks.{i}.", f"layer.{i}."
        hf[d + "norm1.weight"] = release[s + "norm1.weight"]
        hf[d + "norm1.bias"] = release[s + "norm1.bias"]
        for j, part in enumerate(("q_proj", "k_proj", "v_proj")):
            hf[d + f"attention.{part}.weight"] = \
                release[s + "attn.qkv.weight"][j * D:(j + 1) * D].clone()
            if part != "k_proj":  # key_bias = False
                hf[d + f"attention.{part}.bias"] = \
                    release[s + "attn.qkv.bias"][j * D:(j + 1) * D].clone()
        hf[d + "attention.o_proj.weight"] = release[s + "attn.proj.weight"]
        hf[d + "attention.o_proj.bias"] = release[s + "attn.proj.bias"]
        hf[d + "layer_scale1.lambda1"] = release[s + "ls1.gamma"]
        hf[d + "norm2.weight"] = release[s + "norm2.weight"]
        hf[d + "norm2.bias"] = release[s + "norm2.bias"]
        names = (("fc1", "up_proj"), ("fc2", "down_proj")) if s + "mlp.fc1.weight" in release \
            else (("w1", "gate_proj"), ("w2", "up_proj"), ("w3", "down_proj"))
        for src, dst in names:
            for leaf in ("weight", "bias"):
                hf[f"{d}mlp.{dst}.{leaf}"] = release[f"{s}mlp.{src}.{leaf}"]
        hf[d + "layer_scale2.lambda1"] = release[s + "ls2.gamma"]
    hf["norm.weight"] = release["norm.weight"]
    hf["norm.bias"] = release["norm.bias"]
    return hf


def hf_config(release, heads, base=100.0, eps=1e-5):
    D = release["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in release if k.startswith("blocks."))
    gated = "blocks.0.mlp.w1.weight" in release
    F = release["blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"].shape[0]
    return {"architectures": ["DINOv3ViTModel"], "model_type": "dinov3_vit",
            "hidden_size": D, "num_attention_heads": heads, "num_hidden_layers": depth,
            "intermediate_size": F, "hidden_act": "silu" if gated else "gelu",
            "use_gated_mlp": gated, "layer_norm_eps": eps, "rope_theta": base,
            "patch_size": release["patch_embed.proj.weight"].shape[-1], "image_size": 224,
            "num_channels": 3, "num_register_tokens": release["storage_tokens"].shape[1]
            if "storage_tokens" in release else 0, "query_bias": True, "key_bias": False,
            "value_bias": True, "proj_bias": True, "mlp_bias": True, "layerscale_value": 1.0,
            "pos_embed_rescale": 2.0, "torch_dtype": "float32"}


def write_hf(directory, release, heads, config=True, **cfg):
    """model.safetensors (+ config.json) in directory; returns the safetensors path."""
    import stopcal_model as sm
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "model.safetensors")
    hf = hf_state_dict(release)
    sm.write_safetensors(path, {k: ("F32", tuple(v.shape), v.numpy()) for k, v in hf.items()},
                         metadata={"format": "pt"})
    if config:
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump({**hf_config(release, heads), **cfg}, f, indent=2)
    return path


def reference_logits(release_path, checkpoint_path, images, lora, round_bf16=False):
    """Logits of the torch DINOv3 reference built from the two files' tensors."""
    torch.set_num_threads(1)
    release = torch.load(release_path)
    ck = torch.load(checkpoint_path)
    state = ck["model_state_dict"]
    if round_bf16:
        release = {k: v.to(torch.bfloat16).float() for k, v in release.items()}
        state = {k: v.to(torch.bfloat16).float() for k, v in state.items()}
    config = ck["config"]
    model_kwargs = config.model if hasattr(config, "model") else config["model"]
    model = dinov3_reference.build(release, state, model_kwargs, lora)
    batch = np.stack([np.ascontiguousarray(i) for i in images])
    return [float(v) for v in dinov3_reference.logits(model, batch)]


def make_finetuned(release, pkg, model_name="dinov3_vitb16", **kw):
    """convert_fixtures.make_finetuned for a DINOv3 release: tuned storage tokens are saved
    under the module's attribute name, feature_extractor.encoder.storage_tokens."""
    view = dict(release)
    if "storage_tokens" in view:
        view["register_tokens"] = view["storage_tokens"]
    ck = fx.make_finetuned(view, pkg, model_name=model_name, **kw)
    ck["model_state_dict"] = collections.OrderedDict(
        (k.replace("encoder.register_tokens", "encoder.storage_tokens"), v)
        for k, v in ck["model_state_dict"].items())
    return ck
