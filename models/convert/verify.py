"""`stopcal-convert ... --verify IMAGE...`: the converted file in our engine against the same
checkpoint tensors in a PyTorch model of the reference (convert/torch_reference.py).

Each image becomes one input tensor — a FITS file through the reference preprocessing
(models/convert/reference_preprocess.py, float64, the model's profile), a raw float32 `.f32` file as it
is — and both networks score that same tensor, so the difference measures the conversion and
the engine, not the preprocessing. Where stopcal-infer reads FITS itself, the images are also
scored end to end and that difference (preprocessing included) is printed beside it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import stopcal_model as sm

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
LOGIT_RTOL = 1e-4  # |Δ logit| ≤ 1e-4 · max(1, |logit|), the parity tests' bound


class VerifyError(RuntimeError):
    pass


def find_infer(explicit=None):
    """stopcal-infer: --infer, $STOPCAL_INFER, PATH, or a build directory of this checkout."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise VerifyError(f"--infer {explicit}: not an executable file")
    candidates = [os.environ.get("STOPCAL_INFER"), shutil.which("stopcal-infer")]
    built = [os.path.join(ROOT, d, "server", "stopcal-infer") for d in os.listdir(ROOT)
             if d.startswith("build")] if os.path.isdir(ROOT) else []
    candidates += sorted((p for p in built if os.path.isfile(p)), key=os.path.getmtime,
                         reverse=True)  # the newest build first
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise VerifyError("cannot find stopcal-infer: build it, or pass --infer PATH (or set "
                      "STOPCAL_INFER)")


def _load_pixels(path, size):
    a = np.fromfile(path, dtype="<f4")
    for c in (3, 1):
        if a.size == c * size * size:
            return np.repeat(a.reshape(c, size, size), 3 // c, axis=0)
    raise VerifyError(f"{path}: {a.size} floats is neither 3×{size}² nor 1×{size}²")


def _preprocess_fits(path, cfg):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import reference_preprocess as ref_preprocess
    except ImportError as e:
        raise VerifyError(f"{path}: FITS input needs the reference preprocessing "
                          f"(models/convert/reference_preprocess.py with astropy, matplotlib and "
                          f"torch): {e}; or pass preprocessed .f32 tensors") from None
    pre = cfg["preprocessing"]
    out = ref_preprocess.preprocess(path, pre["profile"], cfg["input"]["size"], pre["mean"],
                                    pre["std"])
    return np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float32)


def _run_infer(infer, model, inputs, pixels):
    cmd = [infer, "--model", model, "--json"] + (["--pixels"] if pixels else []) + inputs
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise VerifyError(f"stopcal-infer exited {r.returncode}: {r.stderr.strip()[:400]}")
    try:
        return [float(x["logit"]) for x in json.loads(r.stdout)["results"]]
    except (ValueError, KeyError, TypeError) as e:
        raise VerifyError(f"stopcal-infer's output is not the expected JSON ({e})") from None


def verify(model_path, backbone, ck, lora, images, infer=None, out=print):
    """Print per-image logits of both and the largest difference; returns the exit status
    (0: within tolerance, 1: beyond it). Raises VerifyError when it cannot run."""
    try:
        import torch
        from . import torch_reference
    except ImportError as e:
        raise VerifyError(f"PyTorch is needed ({e}); the conversion itself does not need "
                          f"it") from None
    cfg, _ = sm.read_model(model_path)
    size = cfg["input"]["size"]
    infer = find_infer(infer)
    tensors, fits = [], []
    for p in images:
        if p.endswith((".f32", ".raw")):
            tensors.append(_load_pixels(p, size))
        else:
            tensors.append(_preprocess_fits(p, cfg))
            fits.append(p)

    tmp = tempfile.mkdtemp(prefix="stopcal-verify-")
    try:
        paths = []
        for i, t in enumerate(tensors):
            paths.append(os.path.join(tmp, f"{i}.f32"))
            np.ascontiguousarray(t, dtype="<f4").tofile(paths[-1])
        engine = _run_infer(infer, model_path, paths, pixels=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    state = {k: torch.from_numpy(np.ascontiguousarray(t.numpy())) for k, t in ck.state.items()}
    lora_arg = lora if cfg["lora"]["handling"] != "none" else None
    if getattr(backbone, "family", "dinov2") == "dinov3":
        from . import dinov3, dinov3_reference
        release = {k: torch.from_numpy(v) for k, v in dinov3.release_names(backbone).items()}
        model = dinov3_reference.build(release, state, ck.model_kwargs, lora_arg)
    else:
        release = {k: torch.from_numpy(t.f32()) for k, t in backbone.tensors.items()}
        model = torch_reference.build(release, state, ck.model_kwargs, lora_arg)
    ref = [float(v) for v in torch_reference.logits(model, np.stack(tensors))]

    end_to_end = None
    if fits:
        try:
            end_to_end = dict(zip(fits, _run_infer(infer, model_path, fits, pixels=False)))
        except VerifyError as e:
            out(f"end-to-end (stopcal-infer reading the FITS files itself) skipped: {e}")

    worst, ok = 0.0, True
    bf16 = any(v == "BF16" for v in _dtypes(model_path))
    out(f"{'image':40s} {'engine logit':>14s} {'torch logit':>14s} {'|Δ|':>10s}"
        + ("  end-to-end |Δ|" if end_to_end else ""))
    for p, e, r in zip(images, engine, ref):
        d = abs(e - r)
        worst = max(worst, d)
        ok &= d <= LOGIT_RTOL * max(1.0, abs(r))
        line = f"{os.path.basename(p)[:40]:40s} {e:14.6f} {r:14.6f} {d:10.3g}"
        if end_to_end and p in end_to_end:
            line += f"  {abs(end_to_end[p] - r):10.3g}"
        out(line)
    out(f"max |Δ logit| = {worst:.3g} over {len(images)} image(s) "
        f"(tolerance 1e-4·max(1,|logit|); the torch model is the checkpoint's fp32 tensors"
        + (", the file is bf16 so expect more" if bf16 else "") + ")")
    if bf16:
        out("no verdict for a bf16 file: its rounding dominates; verify the f32 conversion")
        return 0
    out("PASS" if ok else "FAIL: the converted model differs from the checkpoint beyond tolerance")
    return 0 if ok else 1


def _dtypes(path):
    from . import st_reader
    _, tensors = st_reader.read(path)
    return {t.st_dtype for t in tensors.values()}

