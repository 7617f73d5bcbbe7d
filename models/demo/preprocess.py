"""The demo model's input: ARCHITECTURE.md §4, profile cortexchange-v2, step by step (numpy + torch).

The model is trained on exactly what this computes from the FITS data, which is what stopcal's C
preprocessing computes from the same file (tests/demo checks this against the project's reference,
models/convert/reference_preprocess.py, when torch and astropy are present).

    tensor, rms, nonfinite = preprocess_image(image2d, size=112)      # from pixels
    tensor, rms, nonfinite = preprocess_fits("x.fits", size=112)       # from a file
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def read_fits(path):
    """The first HDU with image data (primary, or the first image extension), as float64 with
    BSCALE/BZERO/BLANK applied (astropy does that), degenerate axes dropped; must be 2-D."""
    from astropy.io import fits
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.is_image and hdu.data is not None:
                img = np.array(hdu.data, dtype=np.float64).squeeze()
                if img.ndim != 2:
                    raise ValueError(f"{path}: {img.ndim}-D after dropping degenerate axes")
                return img
    raise ValueError(f"{path}: no image data")


def noise_rms(image):
    """Step 2: iterative 3σ clipping around the (fixed) median of the |x| > 1e-7 pixels."""
    m = image[np.abs(image) > 1e-7]
    rms0 = np.std(m)
    med = np.median(m)
    rms = rms0
    for _ in range(10):
        rms = np.std(m[np.abs(m - med) < 3.0 * rms0])
        if abs(rms - rms0) / rms0 < 0.1:
            break
        rms0 = rms
    return float(rms)


def symlog_stretch(image, rms):
    """Step 3: matplotlib's SymLogNorm(linthresh=2·rms, linscale=2, vmin=−rms, vmax=50000·rms,
    base=10), unclipped: t(x) = sign(x)·lt·(c + log10(|x|/lt)) for |x| > lt, else x·c, with
    c = linscale/(1 − 1/base); y = (t(x) − t(vmin)) / (t(vmax) − t(vmin))."""
    lt, linscale, base = 2.0 * rms, 2.0, 10.0
    c = linscale / (1.0 - 1.0 / base)
    log_base = math.log(base)

    def t(x):
        x = np.asarray(x, dtype=np.float64)
        a = np.abs(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.sign(x) * lt * (c + np.log(a / lt) / log_base)
        inside = a <= lt
        out[inside] = x[inside] * c
        return out

    tmin, tmax = t(np.array([-rms, 50000.0 * rms]))
    return (t(image) - tmin) / (tmax - tmin)


def preprocess_image(image, size, noise_free=True):
    """Steps 1–6 for a 2-D image: returns (float32 (3, size, size), rms, nonfinite pixels)."""
    img = np.array(image, dtype=np.float64)
    bad = ~np.isfinite(img)
    img[bad] = 0.0                                   # non-finite pixels → 0, before the rms
    rms = noise_rms(img)
    y = symlog_stretch(img, rms)                     # step 3
    y = y - np.min(y)                                # step 4
    y = np.clip(y, 0.0, 1.0)
    y = np.ascontiguousarray(y.T)                    # step 5: the transpose
    t = torch.from_numpy(y)[None, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)  # step 6
    out = t[0, 0].to(torch.float32).numpy()          # mean 0, std 1: nothing to apply
    return np.repeat(out[None], 3, axis=0), rms, int(bad.sum())


def preprocess_fits(path, size):
    return preprocess_image(read_fits(path), size)
