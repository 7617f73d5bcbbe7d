#!/usr/bin/env python3
"""The reference preprocessing (ARCHITECTURE.md §4), written with the libraries the pipeline uses: astropy
reads, numpy computes the rms, matplotlib's SymLogNorm stretches, torch's F.interpolate resizes.
It follows cortExchange's TransferLearningV2/V3 step by step, in float64 throughout (ARCHITECTURE.md §3:
"the preprocessing in float64"), with non-finite pixels set to 0 first and no noise.

What the deployed code does differently, and why this reference does not follow it:
- It reads `hdul[0].data` (None for a tile-compressed file); we take the first HDU with image data.
- astropy hands float32 for BITPIX -32 (and scaled 8/16-bit) images and matplotlib keeps float32;
  the tensor is then cast to bfloat16 before `interpolate` (V2), or to float32 for `interpolate` and
  back to bfloat16 (V3). Those are precision losses, not the maths; we compute in float64.
- mean/std: torchvision `normalize` on the 1-channel tensor after resizing, then the model's
  `lift="stack"` repeats it to 3 channels. We repeat first and apply mean[c]/std[c] per channel,
  which is the same when the three values agree (they do for checkpoints: one scalar each).
"""
import numpy as np
import torch
import torch.nn.functional as F
from astropy.io import fits
from matplotlib.colors import SymLogNorm


def read_image(path):
    """The first HDU holding image data (the primary, or the first image extension), in float64, and
    the relative precision it carries. Integer images are scaled here in float64 — astropy would
    scale 8/16-bit ones in float32, which is the deployed pipeline's dtype, not its maths (BLANK → NaN as
    astropy does). A quantised tile-compressed image comes back from astropy as float32: that is its
    precision (2^-23)."""
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        for hdu in hdul:
            if not (hdu.is_image and hdu.data is not None):
                continue
            if isinstance(hdu, fits.CompImageHDU):
                return np.array(hdu.data, dtype=np.float64), 2.0 ** -23
            hdr = hdu.header
            raw = np.array(hdu.data)
            out = raw.astype(np.float64)
            if raw.dtype.kind in "iu":
                blank = raw == hdr["BLANK"] if "BLANK" in hdr else np.zeros(raw.shape, bool)
                out = out * hdr.get("BSCALE", 1.0) + hdr.get("BZERO", 0.0)
                out[blank] = np.nan
            return out, 1e-15
    raise ValueError(f"{path}: no image data")


def get_rms(data, mask_sup=1e-7):
    """Iteratively clipped noise estimate (kMS): std of |x| > 1e-7 pixels within 3 rms of the median,
    repeated until it changes by < 10% (at most 10 times). The median is not updated."""
    flat = data.ravel()
    m = flat[np.abs(flat) > mask_sup]
    rms_old = np.std(m)
    med = np.median(m)
    rms = rms_old
    for _ in range(10):
        rms = np.std(m[np.abs(m - med) < rms_old * 3.0])
        if np.abs((rms - rms_old) / rms_old) < 0.1:
            break
        rms_old = rms
    return rms


def stretch(image):
    """rms, then SymLogNorm, min-shift and clip: the [0, 1] image the network sees before resizing."""
    rms = get_rms(image)
    norm = SymLogNorm(linthresh=rms * 2, linscale=2, vmin=-rms, vmax=rms * 50000, base=10)
    y = norm(image)
    y = y - y.min()
    y = np.clip(y, 0, 1)
    return np.ma.getdata(y), float(rms)


def preprocess(path, profile, size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """Returns (tensor float32 (3, size, size), rms, nonfinite_pixels)."""
    image = read_image(path)[0].squeeze()
    if image.ndim != 2:
        raise ValueError(f"{path}: {image.ndim}-D after squeeze")
    bad = ~np.isfinite(image)
    image[bad] = 0.0
    y, rms = stretch(image)
    # (H, W, 1) -> swapdims(0, 2) -> (1, W, H) -> (1, 1, W, H): the tensor is the transpose.
    t = torch.from_numpy(np.ascontiguousarray(y[..., None])).swapdims(0, 2).unsqueeze(0)
    if profile == "cortexchange-v2":
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    elif profile == "cortexchange-v3":
        if t.shape[-2] != size or t.shape[-1] != size:
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    else:
        raise ValueError(profile)
    t = t.repeat_interleave(3, dim=1)[0]
    m = torch.tensor(mean, dtype=torch.float64)[:, None, None]
    s = torch.tensor(std, dtype=torch.float64)[:, None, None]
    t = (t - m) / s
    return t.to(torch.float32).numpy(), rms, int(bad.sum())
