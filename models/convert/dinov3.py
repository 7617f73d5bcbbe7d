"""DINOv3 backbones and their fine-tuned checkpoints → one stopcal model file (family "dinov3").

Backbones (facts from facebookresearch/dinov3 and Hugging Face transformers' dinov3_vit):

- The release `.pth` (`dinov3_vitb16_pretrain_lvd1689m-*.pth`, a flat state dict of the hub's
  `DinoVisionTransformer`): cls_token, storage_tokens, mask_token, rope_embed.periods (the RoPE
  periods, a persistent buffer), patch_embed.proj.*, blocks.N.{norm1, attn.qkv (weight, bias and
  the `bias_mask` buffer of LinearKMaskedBias: 1 for q and v, 0 for k), attn.proj, ls1.gamma,
  norm2, mlp.fc1/fc2 or mlp.w1/w2/w3, ls2.gamma}, norm.*, and for the SAT-493M ViT-L and the 7B
  a training-only local_cls_norm.*. Every hub ViT uses norm_layer "layernormbf16": eps 1e-5.
- Hugging Face `DINOv3ViTModel` safetensors with its config.json beside it: embeddings.{cls_token,
  register_tokens, mask_token, patch_embeddings.{weight,bias}}, layer.N.{norm1, attention.
  {q,k,v,o}_proj (no k bias unless config key_bias), layer_scale1.lambda1, norm2, mlp.{up,down}_proj
  or mlp.{gate,up,down}_proj, layer_scale2.lambda1}, norm.*; no periods and no bias_mask: the RoPE
  periods are computed from config.json's rope_theta as the release computes them,
  base^(2i/(Dh/2)), and the eps is config.json's layer_norm_eps.

Checkpoints: the training code's layout as for DINOv2 (convert/mapping.py): classifier.{2,4}.*,
tuned tokens under feature_extractor.encoder.{cls_token, storage_tokens (register_tokens accepted,
DINOv2's spelling)}, LoRA on q and v under feature_extractor.encoder.blocks{i}.attn.qkv.linear_*;
a DINOv3 model has no positional table, so a pos_embed tensor or a pos_embed mode other than
"pre-trained" marks a DINOv2 checkpoint.
"""

import json
import math
import os
import re

import numpy as np

from . import mapping
from .mapping import ConversionError, Lazy

import stopcal_model as sm

FAMILY = "dinov3"
PATCH = 16
RELEASE_EPS = 1e-5  # "layernormbf16"
DEFAULT_PROFILE = "cortexchange-v3"

_RELEASE_BLOCK = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
    "attn.proj.bias", "ls1.gamma", "ls2.gamma", "norm2.weight", "norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    "mlp.w3.weight", "mlp.w3.bias")
_RELEASE_TOP = {"cls_token": "cls_token", "storage_tokens": "register_tokens",
                "patch_embed.proj.weight": "patch_embed.proj.weight",
                "patch_embed.proj.bias": "patch_embed.proj.bias",
                "norm.weight": "norm.weight", "norm.bias": "norm.bias"}

_HF_TOP = {"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "register_tokens",
           "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.bias": "patch_embed.proj.bias",
           "norm.weight": "norm.weight", "norm.bias": "norm.bias"}
_HF_BLOCK = {"norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
             "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
             "attention.o_proj.weight": "attn.proj.weight",
             "attention.o_proj.bias": "attn.proj.bias",
             "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}
_HF_ATTN = ("q_proj", "k_proj", "v_proj")
_HF_MLP = ("gate_proj", "up_proj", "down_proj")


def looks_like_release(sd):
    """A DINOv3 hub state dict (rather than DINOv2's): RoPE periods or storage tokens."""
    return "rope_embed.periods" in sd or "storage_tokens" in sd


def looks_like_hf(sd):
    """Hugging Face DINOv3ViTModel names (DINOv2's are encoder.layer.N and .projection)."""
    return any(re.match(r"(dinov3_vit\.)?(layer\.\d+\.|embeddings\.patch_embeddings\.weight$)", k)
               for k in sd)


def periods_from_base(base, head_dim):
    """DINOv3's RopePositionEmbedding periods for `base`, rounded once to fp32."""
    i = np.arange(head_dim // 4, dtype=np.float64)
    return (float(base) ** (2 * i / (head_dim // 2))).astype(np.float32)


class Backbone:
    """A DINOv3 backbone under stopcal's tensor names, with its inferred architecture."""

    family = FAMILY

    def __init__(self, path, fmt, tensors, dropped, arch, release=None):
        self.path, self.format, self.tensors, self.dropped = path, fmt, tensors, dropped
        self.arch = arch
        self.release = release  # the release-name tensors, for --verify's torch model

    def describe(self):
        a = self.arch
        return (f"DINOv3 D={a['embed_dim']} depth={a['depth']} heads={a['num_heads']} "
                f"ffn={a['ffn']}({a['ffn_hidden_dim']}) storage-tokens={a['num_registers']} "
                f"patch={a['patch_size']} rope-base={a['rope_base']:g}")


def _concat(parts, source):
    shape = (sum(p.shape[0] for p in parts),) + tuple(parts[0].shape[1:])
    return Lazy(shape, lambda: np.concatenate([p.f32() for p in parts]),
                lambda: np.concatenate([p.f64() for p in parts]), source)


# --------------------------------------------------------------------------------------------
# the release .pth


def release_backbone(sd, path):
    out, dropped, unknown = {}, [], []
    masks, w12 = {}, {}
    for key, t in sd.items():
        if not isinstance(t, mapping.torchzip.Tensor):
            raise ConversionError(f"{path}: {key} is a {type(t).__name__}, not a tensor")
        if key in _RELEASE_TOP:
            out[_RELEASE_TOP[key]] = Lazy.of(t, f"{path}:{key}")
            continue
        if key == "rope_embed.periods":
            out["rope.periods"] = Lazy.of(t, f"{path}:{key}")
            continue
        if key == "mask_token" or key.startswith("local_cls_norm."):
            dropped.append(key)  # masked-token training, the local-crop CLS norm: training only
            continue
        if key.startswith("cls_norm."):
            raise ConversionError(f"{path}: has {key}: a DINOv3 with untied CLS and patch norms, "
                                  f"which stopcal's dinov3 family does not describe")
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m and m.group(2) in _RELEASE_BLOCK:
            out[f"blocks.{m.group(1)}.{m.group(2)}"] = Lazy.of(t, f"{path}:{key}")
        elif m and m.group(2) == "attn.qkv.bias_mask":
            masks[int(m.group(1))] = Lazy.of(t, f"{path}:{key}")
        elif m and m.group(2) in ("mlp.w1.weight", "mlp.w1.bias", "mlp.w2.weight",
                                  "mlp.w2.bias"):
            part, leaf = m.group(2).split(".")[1:]
            w12.setdefault((int(m.group(1)), leaf), {})[part] = Lazy.of(t, f"{path}:{key}")
        else:
            unknown.append(key)
    if unknown:
        raise mapping._unknown(unknown, path, "these tensors are not part of a DINOv3 release "
                                              "backbone and")
    for (i, leaf), parts in sorted(w12.items()):
        if set(parts) != {"w1", "w2"}:
            raise ConversionError(f"{path}: block {i} has mlp.{'/'.join(sorted(parts))}.{leaf} "
                                  f"but not both w1 and w2")
        if parts["w1"].shape != parts["w2"].shape:
            raise ConversionError(f"{path}: block {i} mlp.w1.{leaf} {parts['w1'].shape} and "
                                  f"mlp.w2.{leaf} {parts['w2'].shape} differ")
        out[f"blocks.{i}.mlp.w12.{leaf}"] = _concat(
            [parts["w1"], parts["w2"]], f"{path}:blocks.{i}.mlp.{{w1,w2}}.{leaf}")
    for i, mask in sorted(masks.items()):
        key = f"blocks.{i}.attn.qkv.bias"
        if key not in out:
            raise ConversionError(f"{path}: blocks.{i}.attn.qkv.bias_mask without a qkv bias")
        bias = out[key]
        if mask.shape != bias.shape:
            raise ConversionError(f"{path}: blocks.{i}.attn.qkv.bias_mask has shape {mask.shape}, "
                                  f"the bias {bias.shape}")
        m64 = mask.f64()
        if not np.all(np.isfinite(m64)):
            raise ConversionError(f"{path}: blocks.{i}.attn.qkv.bias_mask is not finite (an "
                                  f"uninitialised LinearKMaskedBias)")

        def masked(bias=bias, m64=m64):
            return (bias.f64() * m64).astype(np.float32)
        out[key] = Lazy(bias.shape, masked, lambda bias=bias, m64=m64: bias.f64() * m64,
                        bias.source + " × bias_mask")
    for need in ("cls_token", "rope.periods", "patch_embed.proj.weight", "norm.weight",
                 "blocks.0.attn.qkv.weight"):
        if need not in out:
            src = {"rope.periods": "rope_embed.periods", "register_tokens": "storage_tokens"}
            raise ConversionError(f"{path}: no {src.get(need, need)}: not a complete DINOv3 "
                                  f"release backbone")
    periods = out["rope.periods"]
    D = out["cls_token"].shape[-1]
    if len(periods.shape) != 1 or periods.shape[0] < 1 or D % (4 * periods.shape[0]):
        raise ConversionError(f"{path}: rope_embed.periods has shape {periods.shape}, expected "
                              f"(Dh/4,) with Dh dividing the embed dim {D}")
    head_dim = 4 * periods.shape[0]
    p = periods.f64()
    if not (np.all(np.isfinite(p)) and np.all(p > 0)):
        raise ConversionError(f"{path}: rope_embed.periods is not finite and positive")
    # Recover `base` (periods = base^(2i/(Dh/2))); the min/max-period parametrisation of
    # RopePositionEmbedding (no hub model uses it) gives periods no base reproduces.
    base = float(p[1] ** (head_dim / 4)) if len(p) > 1 else 100.0
    want = periods_from_base(base, head_dim).astype(np.float64)
    if abs(p[0] - 1.0) > 1e-6 or np.max(np.abs(p - want) / want) > 1e-5:
        raise ConversionError(f"{path}: rope_embed.periods {p[:4].tolist()}... do not follow "
                              f"base^(2i/(Dh/2)) for any base (a min/max-period RoPE)")
    if abs(base - round(base)) < 1e-4 * base:
        base = float(round(base))  # the hub's 100, not 100.00003 from fp32 periods
    arch = infer_architecture(out, path, head_dim, RELEASE_EPS, base)
    return Backbone(path, "dinov3-release", out, dropped, arch, release=sd)


# --------------------------------------------------------------------------------------------
# Hugging Face safetensors + config.json


def _hf_config(path):
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not os.path.isfile(cfg_path):
        raise ConversionError(f"{path}: a Hugging Face DINOv3 safetensors file needs the "
                              f"config.json beside it (its rope_theta, layer_norm_eps and head "
                              f"count are not in the weights); none at {cfg_path}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{cfg_path}: not readable JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ConversionError(f"{cfg_path}: not a JSON object")
    mt = cfg.get("model_type")
    if mt is not None and str(mt).lower().replace("_", "") not in ("dinov3vit", "dinov3"):
        raise ConversionError(f"{cfg_path}: model_type is {mt!r}, not dinov3_vit")
    return cfg_path, cfg


def _cfg_num(cfg, key, cfg_path, default=None, kind=float):
    v = cfg.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or \
            not math.isfinite(v) or (kind is int and v != int(v)):
        raise ConversionError(f"{cfg_path}: {key} is {v!r}; expected a {kind.__name__}")
    return kind(v)


def hf_backbone(sd, path):
    cfg_path, cfg = _hf_config(path)
    out, dropped, unknown, attn, mlp = {}, [], [], {}, {}
    for key, t in sd.items():
        name = key[len("dinov3_vit."):] if key.startswith("dinov3_vit.") else key
        if name == "embeddings.mask_token":
            dropped.append("mask_token")
            continue
        if name in _HF_TOP:
            out[_HF_TOP[name]] = Lazy.of(t, f"{path}:{key}")
            continue
        m = re.fullmatch(r"layer\.(\d+)\.(.+)", name)
        if m and m.group(2) in _HF_BLOCK:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK[m.group(2)]}"] = Lazy.of(t, f"{path}:{key}")
            continue
        mm = m and re.fullmatch(r"(attention|mlp)\.(\w+)\.(weight|bias)", m.group(2))
        if mm and mm.group(1) == "attention" and mm.group(2) in _HF_ATTN:
            attn.setdefault((int(m.group(1)), mm.group(3)), {})[mm.group(2)] = \
                Lazy.of(t, f"{path}:{key}")
            continue
        if mm and mm.group(1) == "mlp" and mm.group(2) in _HF_MLP:
            mlp.setdefault(int(m.group(1)), {})[f"{mm.group(2)}.{mm.group(3)}"] = \
                Lazy.of(t, f"{path}:{key}")
            continue
        unknown.append(key)
    if unknown:
        raise mapping._unknown(unknown, path, "these tensors are not part of a Hugging Face "
                                              "DINOv3ViTModel and")
    if "register_tokens" in out and out["register_tokens"].shape[1:2] == (0,):
        del out["register_tokens"]
    for (i, leaf), parts in sorted(attn.items()):
        if leaf == "bias" and "k_proj" not in parts and "q_proj" in parts:
            q = parts["q_proj"]
            parts["k_proj"] = Lazy(q.shape, lambda q=q: np.zeros(q.shape, np.float32), None,
                                   f"{path}:layer.{i} (no k_proj.bias: zeros)")
        missing = [p for p in _HF_ATTN if p not in parts]
        if missing:
            raise ConversionError(f"{path}: layer {i} lacks attention {'/'.join(missing)}.{leaf}")
        if len({parts[p].shape for p in _HF_ATTN}) != 1:
            raise ConversionError(f"{path}: layer {i} q/k/v_proj.{leaf} shapes differ")
        out[f"blocks.{i}.attn.qkv.{leaf}"] = _concat(
            [parts[p] for p in _HF_ATTN], f"{path}:layer.{i}.attention.{{q,k,v}}_proj.{leaf}")
    gated = None
    for i, parts in sorted(mlp.items()):
        g = "gate_proj.weight" in parts
        if gated is not None and g != gated:
            raise ConversionError(f"{path}: layer {i} mixes gated and plain MLPs")
        gated = g
        b = f"blocks.{i}.mlp."
        try:
            for leaf in ("weight", "bias"):
                if g:
                    out[b + "w12." + leaf] = _concat(
                        [parts["gate_proj." + leaf], parts["up_proj." + leaf]],
                        f"{path}:layer.{i}.mlp.{{gate,up}}_proj.{leaf}")
                    out[b + "w3." + leaf] = parts["down_proj." + leaf]
                else:
                    out[b + "fc1." + leaf] = parts["up_proj." + leaf]
                    out[b + "fc2." + leaf] = parts["down_proj." + leaf]
        except KeyError as e:
            raise ConversionError(f"{path}: layer {i} lacks mlp.{e.args[0]}") from None
        extra = set(parts) - {f"{p}.{leaf}" for p in (_HF_MLP if g else _HF_MLP[1:])
                              for leaf in ("weight", "bias")}
        if extra:
            raise ConversionError(f"{path}: layer {i} has mlp.{sorted(extra)[0]} besides "
                                  f"{'a gated' if g else 'a plain'} MLP")
    for need in ("cls_token", "patch_embed.proj.weight", "norm.weight",
                 "blocks.0.attn.qkv.weight"):
        if need not in out:
            raise ConversionError(f"{path}: no {need} (Hugging Face name): not a complete "
                                  f"DINOv3ViTModel")
    D = out["cls_token"].shape[-1]
    hidden = _cfg_num(cfg, "hidden_size", cfg_path, kind=int)
    heads = _cfg_num(cfg, "num_attention_heads", cfg_path, kind=int)
    if hidden != D or heads <= 0 or D % heads or (D // heads) % 4:
        raise ConversionError(f"{cfg_path}: hidden_size {hidden} / num_attention_heads {heads} "
                              f"do not fit the weights' embed dim {D}")
    base = _cfg_num(cfg, "rope_theta", cfg_path, default=100.0)
    if base <= 0:
        raise ConversionError(f"{cfg_path}: rope_theta {base} is not positive")
    eps = _cfg_num(cfg, "layer_norm_eps", cfg_path, default=1e-5)
    head_dim = D // heads
    periods = periods_from_base(base, head_dim)
    out["rope.periods"] = Lazy(periods.shape, lambda: periods, None,
                               f"{cfg_path}: rope_theta {base:g}")
    arch = infer_architecture(out, path, head_dim, eps, base)
    # config.json and the weights must agree where both speak.
    want_gated = cfg.get("use_gated_mlp", cfg.get("use_swiglu_ffn"))
    if want_gated is not None and bool(want_gated) != (arch["ffn"] == "swiglu"):
        raise ConversionError(f"{cfg_path}: use_gated_mlp is {want_gated} but the weights have "
                              f"{'a gated' if arch['ffn'] == 'swiglu' else 'a plain'} MLP")
    act = cfg.get("hidden_act", "gelu")
    if act not in (("silu", "swish") if arch["ffn"] == "swiglu" else ("gelu",)):
        raise ConversionError(f"{cfg_path}: hidden_act {act!r} with a {arch['ffn']} feed-forward; "
                              f"stopcal's dinov3 has GELU (erf) MLPs and SiLU-gated SwiGLU")
    for key, have in (("num_hidden_layers", arch["depth"]), ("intermediate_size",
                                                             arch["ffn_hidden_dim"]),
                      ("patch_size", arch["patch_size"]),
                      ("num_register_tokens", arch["num_registers"])):
        if key in cfg and cfg[key] != have:
            raise ConversionError(f"{cfg_path}: {key} is {cfg[key]!r} but the weights have {have}")
    return Backbone(path, "hugging-face-dinov3-safetensors", out, dropped, arch)


def release_names(backbone):
    """The backbone's tensors under the release's names (fp32 arrays), for a torch model of the
    release: the file's own for a release backbone, rebuilt from a Hugging Face one (its k bias
    already zero, so without bias_mask)."""
    if backbone.release is not None:
        return {k: Lazy.of(t, k).f32() for k, t in backbone.release.items()}
    inv = {v: k for k, v in _RELEASE_TOP.items()}
    out = {}
    for k, t in backbone.tensors.items():
        a = t.f32()
        m = re.fullmatch(r"(blocks\.\d+\.mlp\.)w12\.(weight|bias)", k)
        if m:
            half = a.shape[0] // 2
            out[f"{m.group(1)}w1.{m.group(2)}"] = a[:half]
            out[f"{m.group(1)}w2.{m.group(2)}"] = a[half:]
        elif k == "rope.periods":
            out["rope_embed.periods"] = a
        else:
            out[inv.get(k, k)] = a
    return out


# --------------------------------------------------------------------------------------------
# architecture


def infer_architecture(t, path, head_dim, eps, rope_base):
    cls = t["cls_token"].shape
    if len(cls) != 3 or cls[:2] != (1, 1):
        raise ConversionError(f"{path}: cls_token has shape {cls}, expected (1, 1, D)")
    D = cls[2]
    pw = t["patch_embed.proj.weight"].shape
    if len(pw) != 4 or pw[0] != D or pw[1] != 3 or pw[2] != pw[3]:
        raise ConversionError(f"{path}: patch embedding weight has shape {pw}, expected "
                              f"({D}, 3, P, P)")
    if pw[2] != PATCH:
        raise ConversionError(f"{path}: patch size {pw[2]}; stopcal's DINOv3 family has patch "
                              f"size {PATCH}")
    depth, ffn, F, R = mapping.block_layout(t, path, D, "an MLP (fc1) nor a SwiGLU (w1/w2)",
                                            "storage tokens have")
    return {"family": FAMILY, "embed_dim": D, "depth": depth, "num_heads": D // head_dim,
            "ffn": ffn, "ffn_hidden_dim": F, "num_registers": R, "patch_size": PATCH,
            "layernorm_eps": float(eps), "rope_base": float(rope_base)}


def load_backbone(path, obj=None, st=None):
    """A DINOv3 backbone from a release state dict (obj) or a safetensors dict (st)."""
    if st is not None:
        return hf_backbone(st, path)
    return release_backbone(obj, path)


# --------------------------------------------------------------------------------------------
# the conversion

TOKEN_KEYS = {"feature_extractor.encoder.cls_token": ("cls_token", "tune_cls_token"),
              "feature_extractor.encoder.storage_tokens": ("register_tokens",
                                                           "tune_register_tokens"),
              "feature_extractor.encoder.register_tokens": ("register_tokens",
                                                            "tune_register_tokens")}


def make_config(arch, head_hidden, size, profile, mean, std, lora_cfg, name, version,
                provenance):
    """The stopcal.config of a dinov3 model (models/FORMAT.md, models/families.json)."""
    return sm.make_config(
        family=FAMILY, embed_dim=arch["embed_dim"], depth=arch["depth"],
        num_heads=arch["num_heads"], ffn=arch["ffn"], ffn_hidden_dim=arch["ffn_hidden_dim"],
        num_registers=arch["num_registers"], patch_size=arch["patch_size"],
        layernorm_eps=arch["layernorm_eps"], rope_base=arch["rope_base"],
        head_hidden_dim=head_hidden, input_size=size, profile=profile, mean=mean, std=std,
        noise_sigma=0.0, threshold=0.5, lora_handling=lora_cfg["handling"],
        lora_rank=lora_cfg["rank"], lora_alpha=lora_cfg["alpha"], name=name, version=version,
        provenance=provenance)


def convert(backbone, ck, lora=None, profile=None, name=None, version=None, hash_inputs=True):
    """Build the stopcal config and tensors for a DINOv3 backbone + fine-tuned checkpoint."""
    profile = profile or DEFAULT_PROFILE
    notes = []
    path = ck.path
    arch = dict(backbone.arch)
    D, L = arch["embed_dim"], arch["depth"]

    model_name = ck.kw("model_name")
    if isinstance(model_name, str) and "dinov2" in model_name:
        raise ConversionError(f"{path}: config.model model_name is {model_name!r}, a DINOv2 "
                              f"checkpoint, but {backbone.path} is a DINOv3 backbone; pass the "
                              f"DINOv2 backbone it was trained on")
    if not isinstance(model_name, str) or "dinov3" not in model_name:
        origin = "" if "model_name" in ck.model_kwargs else " (absent: the reference's default)"
        raise ConversionError(f"{path}: config.model model_name is {model_name!r}{origin}; "
                              f"with a DINOv3 backbone the checkpoint must be a dinov3_* model")
    if "feature_extractor.encoder.pos_embed" in ck.state:
        raise ConversionError(f"{path}: has feature_extractor.encoder.pos_embed, a DINOv2 "
                              f"positional table; {backbone.path} is a DINOv3 backbone (RoPE, no "
                              f"table): wrong backbone file")
    pos_mode = str(ck.kw("pos_embed"))
    if pos_mode != "pre-trained":
        raise ConversionError(f"{path}: config.model pos_embed is {pos_mode!r}; DINOv3 has no "
                              f"positional table to zero or tune (a DINOv2 setting)")
    lift = ck.kw("lift")
    if lift != "stack":
        raise ConversionError(f"{path}: config.model lift is {lift!r}; only 'stack' (the grey "
                              f"image repeated to 3 channels) is supported (ARCHITECTURE.md §3)")
    m = re.search(r"vit[a-z]+?(\d+)", model_name)
    if m and int(m.group(1)) != arch["patch_size"]:
        raise ConversionError(f"{path}: model_name {model_name!r} has patch size {m.group(1)}, "
                              f"the backbone {arch['patch_size']}: wrong backbone file")

    state = dict(ck.state)
    out = dict(backbone.tensors)
    head, H = mapping.take_head(state, D, path, model_name, backbone.path)
    out.update(head)

    overrides = []
    seen = set()
    for key, (dst, flag) in TOKEN_KEYS.items():
        if key in state:
            if dst in seen:
                raise ConversionError(f"{path}: has both storage_tokens and register_tokens")
            seen.add(dst)
            t = Lazy.of(state.pop(key), f"{path}:{key}")
            if dst not in out:
                raise ConversionError(f"{path}: has {key} but the backbone has no storage tokens")
            mapping._check_shape(t, out[dst].shape, key, path)
            out[dst] = t
            overrides.append(dst)
    for dst, flag in (("cls_token", "tune_cls_token"), ("register_tokens",
                                                        "tune_register_tokens")):
        if ck.kw(flag) is True and dst not in overrides:
            raise ConversionError(f"{path}: config.model says {flag} but model_state_dict has no "
                                  f"tuned {dst.replace('register', 'storage')}")
    if overrides:
        notes.append(f"from the checkpoint: {', '.join(overrides)}")

    lora_cfg, lora_prov, adapters = mapping.take_lora(state, out, ck, lora, L, D, notes)
    size, mean, std, dt = mapping.input_params(ck, arch["patch_size"], notes)
    name, version, sources = mapping.name_version_sources(ck, backbone, name, version, lora,
                                                          adapters, hash_inputs)
    provenance = mapping._json_safe({
        "created_by": "stopcal-convert",
        "converter_version": mapping.CONVERTER_VERSION,
        "sources": sources,
        "checkpoint": {
            "model_class": ck.model_class, "step": ck.step,
            "model": {k: ck.model_kwargs.get(k) for k in (
                "model_name", "lift", "use_lora", "lora_rank", "lora_alpha", "pos_embed",
                "tune_cls_token", "tune_register_tokens", "dropout_p") if k in ck.model_kwargs},
            "data_transforms": {k: dt.get(k) for k in ("resize_val", "resize_min", "resize_max",
                                                       "normalize", "transform_group")
                                if k in dt},
        },
        "overrides": overrides,
        "lora": lora_prov,
        "dropped": sorted(set(backbone.dropped)),
        "notes": notes,
    })
    cfg = make_config(arch, H, size, profile, mean, std, lora_cfg, name, version, provenance)
    return mapping.finish(cfg, out, backbone.path, f"a {arch['ffn']} DINOv3", notes)
