"""`stopcal-convert --inspect FILE`: what a checkpoint, a backbone or a model file holds.

Reads with the same safe readers as the conversion (nothing in the file is executed), so it is
also the way to look at a checkpoint of unknown origin before converting it."""

import json
import math
import os

from . import mapping, st_reader, torchzip

import stopcal_model as sm


def _tensor_lines(tensors, limit=None):
    names = list(tensors)
    shown = names if limit is None else names[:limit]
    lines = [f"    {n:64s} {tensors[n].dtype:9s} {list(tensors[n].shape)}" for n in shown]
    if len(names) > len(shown):
        lines.append(f"    ... and {len(names) - len(shown)} more")
    return lines


def _params(tensors):
    return sum(math.prod(t.shape) for t in tensors.values())


def _backbone_summary(path):
    try:
        return "  as a backbone: " + mapping.load_backbone(path).describe()
    except mapping.ConversionError as e:
        return f"  as a backbone: not usable: {e}"


def _inspect_safetensors(path):
    try:
        metadata, tensors = st_reader.read(path)
    except st_reader.SafetensorsError as e:
        raise mapping.ConversionError(str(e)) from None
    lines = []
    if isinstance(metadata, dict) and "stopcal.config" in metadata:
        lines.append(f"{path}: stopcal model file (safetensors), {len(tensors)} tensors, "
                     f"{_params(tensors):,} parameters")
        try:
            cfg = sm.config_from_metadata(metadata)
            sm.check_tensor_set(cfg, {k: t.shape for k, t in tensors.items()})
            lines.append("  valid against models/FORMAT.md")
        except sm.ModelFormatError as e:
            lines.append(f"  INVALID: {e}")
            cfg = None
        dtypes = sorted({t.st_dtype for t in tensors.values()})
        lines.append(f"  stored as {', '.join(dtypes)}")
        if cfg is not None:
            lines.append("  stopcal.config:")
            lines += ["    " + ln for ln in json.dumps(cfg, indent=2).splitlines()]
        return lines
    lines.append(f"{path}: safetensors file (not a stopcal model), {len(tensors)} tensors, "
                 f"{_params(tensors):,} parameters")
    lines.append(_backbone_summary(path))
    lines.append("  tensors:")
    lines += _tensor_lines(tensors)
    return lines


def _inspect_torch(path):
    try:
        obj, archive = torchzip.load(path)
    except torchzip.CheckpointError as e:
        raise mapping.ConversionError(str(e)) from None
    lines = [f"{path}: torch.save archive (record prefix {archive.prefix!r}, format version "
             f"{archive.version}, {len(archive.storages)} storages)"]
    classes = sorted({g for g in archive.globals_seen})
    lines.append("  globals named by the pickle (none imported or called):")
    lines += [f"    {g}" for g in classes]
    if isinstance(obj, dict) and "model_state_dict" in obj:
        lines.append("  kind: fine-tuned checkpoint (reference save_checkpoint layout)")
        lines.append("  top-level entries:")
        for k, v in obj.items():
            kind = (f"dict of {len(v)}" if isinstance(v, dict) else
                    torchzip.standin_name(v) + " (class)" if isinstance(v, type) else
                    repr(v) if isinstance(v, (int, float, str)) else type(v).__name__ if not
                    torchzip.is_standin(v) else repr(v))
            lines.append(f"    {k}: {kind}")
        try:
            ck = mapping.Finetuned(path, obj)
        except mapping.ConversionError as e:
            lines.append(f"  NOT CONVERTIBLE: {e}")
            return lines
        lines.append(f"  model class: {ck.model_class}   step: {ck.step}")
        lines.append("  config.model:")
        lines += [f"    {k}: {v!r}" for k, v in ck.model_kwargs.items()]
        lines.append("  config.data_transforms:")
        lines += [f"    {k}: {v!r}" for k, v in ck.data_transforms.items()]
        lora = [k for k in ck.state if mapping.LORA_KEY.fullmatch(k)]
        other = {k: v for k, v in ck.state.items() if k not in lora}
        lines.append(f"  model_state_dict: {len(ck.state)} tensors")
        lines += _tensor_lines(other)
        if lora:
            blocks = {mapping.LORA_KEY.fullmatch(k).group(2) for k in lora}
            undotted = any(mapping.LORA_KEY.fullmatch(k).group(1) == "" for k in lora)
            r = ck.state[lora[0]].shape
            lines.append(f"    + {len(lora)} LoRA adapter tensors for {len(blocks)} blocks, e.g. "
                         f"{lora[0]} {list(r)}")
            lines.append("      keys spelled 'blocks{i}' without a dot: a strict=False loader "
                         "ignores them (convert with --lora drop to match it, --lora merge for "
                         "what training meant)" if undotted else
                         "      keys spelled 'blocks.{i}'")
        mn = ck.kw("model_name")
        lines.append(f"  to convert: stopcal-convert --backbone <{mn} release .pth or HF "
                     f".safetensors> --checkpoint {os.path.basename(path)}"
                     + (" --lora merge|drop" if lora else "") + " -o MODEL.safetensors")
        return lines
    if isinstance(obj, dict) and obj and all(isinstance(v, torchzip.Tensor) for v in obj.values()):
        lines.append(f"  kind: state dict of {len(obj)} tensors, {_params(obj):,} parameters")
        lines.append(_backbone_summary(path))
        lines.append("  tensors:")
        lines += _tensor_lines(obj)
        return lines
    lines.append(f"  kind: {type(obj).__name__}"
                 + (f" with keys {list(obj)[:10]}" if isinstance(obj, dict) else ""))
    return lines


def inspect(path):
    """A human-readable description of FILE, as a list of lines. Raises ConversionError for a
    file that cannot be read (or that the safe reader refuses)."""
    if not os.path.isfile(path):
        raise mapping.ConversionError(f"{path}: no such file")
    kind = torchzip.sniff(path)
    if kind == "safetensors":
        return _inspect_safetensors(path)
    if kind == "zip" or kind in ("legacy-torch", "pickle"):
        return _inspect_torch(path)
    raise mapping.ConversionError(f"{path}: neither a torch.save archive nor a safetensors file")
