#!/usr/bin/env python3
"""Generate the FITS files the image tests read: LOFAR-like radio images (noise at a realistic rms,
beam-convolved point sources with a power-law flux distribution, extended emission, negative
calibration artefacts around bright sources, NaN borders as in mosaics) with realistic 4-D headers,
in every BITPIX the decoder accepts, tile-compressed and gzip-compressed.

Usage: gen_fits.py OUTDIR [--quick]     (writes OUTDIR/*.fits* and OUTDIR/manifest.txt)
       gen_fits.py --seeds OUTDIR        (small files of every kind: the fuzzer's seed corpus)
The manifest lists one file per line: name, then key=value pairs describing it.
"""
import gzip
import os
import sys

import numpy as np
from astropy.io import fits


def lofar_header(hdr, nx, ny, rms):
    """Keywords as a LOFAR/WSClean image carries them (4-D: RA, DEC, FREQ, STOKES)."""
    cdelt = 1.5 / 3600.0
    hdr["BUNIT"] = "JY/BEAM"
    hdr["BMAJ"] = 6.0 / 3600.0
    hdr["BMIN"] = 4.5 / 3600.0
    hdr["BPA"] = 37.2
    hdr["EQUINOX"] = 2000.0
    hdr["BTYPE"] = "Intensity"
    hdr["TELESCOP"] = "LOFAR"
    hdr["OBSERVER"] = "stopcal test"
    hdr["OBJECT"] = "P205+55"
    hdr["CTYPE1"] = "RA---SIN"
    hdr["CRPIX1"] = nx / 2 + 1
    hdr["CRVAL1"] = 205.0
    hdr["CDELT1"] = -cdelt
    hdr["CUNIT1"] = "deg"
    hdr["CTYPE2"] = "DEC--SIN"
    hdr["CRPIX2"] = ny / 2 + 1
    hdr["CRVAL2"] = 55.0
    hdr["CDELT2"] = cdelt
    hdr["CUNIT2"] = "deg"
    hdr["CTYPE3"] = "FREQ"
    hdr["CRPIX3"] = 1.0
    hdr["CRVAL3"] = 1.44e8
    hdr["CDELT3"] = 4.8e7
    hdr["CUNIT3"] = "Hz"
    hdr["CTYPE4"] = "STOKES"
    hdr["CRPIX4"] = 1.0
    hdr["CRVAL4"] = 1.0
    hdr["CDELT4"] = 1.0
    hdr["SPECSYS"] = "TOPOCENT"
    hdr["ORIGIN"] = "WSClean"
    hdr["HISTORY"] = "synthetic image written by stopcal tests/image/gen_fits.py"
    hdr["WSCNOISE"] = (float(rms), "synthetic noise level")


def sky(ny, nx, seed, rms=1.2e-4, nan_border=True, n_sources=None):
    """A float64 sky image (ny rows of nx pixels): noise, sources, artefacts, optional NaN border."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, rms, size=(ny, nx))
    if n_sources is None:
        n_sources = max(20, nx * ny // 20000)
    sigma = 1.7  # beam sigma in pixels (6" FWHM at 1.5"/pixel)
    half = 12
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    # power-law fluxes from 3 sigma up to ~1e4 sigma
    flux = rms * 3.0 * (1.0 - rng.random(n_sources)) ** (-1.0 / 0.8)
    flux = np.minimum(flux, rms * 3e4)
    ys = rng.integers(half, ny - half, n_sources)
    xs = rng.integers(half, nx - half, n_sources)
    for f, y, x in zip(flux, ys, xs):
        dy, dx = rng.random(2) - 0.5
        stamp = f * np.exp(-((yy - dy) ** 2 + (xx - dx) ** 2) / (2 * sigma * sigma))
        if f > rms * 300:  # calibration artefacts: a negative ring and spokes around bright sources
            r = np.hypot(yy - dy, xx - dx)
            stamp -= 0.02 * f * np.exp(-((r - 7.0) ** 2) / 4.0)
            stamp[half, :] -= 0.01 * f
        img[y - half:y + half + 1, x - half:x + half + 1] += stamp
    # extended emission: a few broad, elongated blobs
    for _ in range(3):
        cy, cx = rng.random(2) * (ny, nx)
        sy, sx = 10 + rng.random(2) * min(nx, ny) / 12
        gy = np.exp(-((np.arange(ny) - cy) ** 2) / (2 * sy * sy))
        gx = np.exp(-((np.arange(nx) - cx) ** 2) / (2 * sx * sx))
        img += rms * 5.0 * np.outer(gy, gx)
    if nan_border:  # mosaics are blanked outside the primary-beam cut
        y, x = np.ogrid[:ny, :nx]
        r = np.hypot((y - ny / 2) / (ny / 2), (x - nx / 2) / (nx / 2))
        img[r > 0.93] = np.nan
        img[:, :3] = np.nan
    return img


def write(path, hdu_list):
    fits.HDUList(hdu_list).writeto(path, overwrite=True, output_verify="exception")


def lofar_4d(path, ny, nx, seed, dtype=np.float32, nan_border=True):
    img = sky(ny, nx, seed, nan_border=nan_border)
    hdu = fits.PrimaryHDU(img.astype(dtype)[None, None, :, :])
    lofar_header(hdu.header, nx, ny, 1.2e-4)
    write(path, [hdu])


def main_with(out, quick=False):
    """Write every test image into out (the 2048² one at 512² when quick) and out/manifest.txt."""
    os.makedirs(out, exist_ok=True)
    manifest = []

    def add(name, **kv):
        manifest.append(name + "".join(f" {k}={v}" for k, v in kv.items()))

    big = 512 if quick else 2048
    lofar_4d(os.path.join(out, "lofar_2048.fits"), big, big, 1)
    add("lofar_2048.fits", kind="lofar4d", bitpix=-32)
    lofar_4d(os.path.join(out, "lofar_1000x1200.fits"), 1200, 1000, 2)  # NAXIS1=1000, NAXIS2=1200
    add("lofar_1000x1200.fits", kind="lofar4d", bitpix=-32)
    lofar_4d(os.path.join(out, "small_300.fits"), 300, 300, 3)
    add("small_300.fits", kind="lofar4d", bitpix=-32)
    lofar_4d(os.path.join(out, "f64_640x512.fits"), 512, 640, 4, dtype=np.float64)
    add("f64_640x512.fits", kind="lofar4d", bitpix=-64)

    # BITPIX 16 with BSCALE/BZERO and BLANK (integer images from older imagers).
    img = sky(400, 360, 5, nan_border=False)
    bscale, bzero, blank = 2.5e-6, 1.0e-3, -32768
    raw = np.clip(np.round((img - bzero) / bscale), -32767, 32767).astype(np.int16)
    raw[:7, :] = blank  # a blanked strip
    hdu = fits.PrimaryHDU(raw[None, None])
    lofar_header(hdu.header, 360, 400, 1.2e-4)
    hdu.header["BSCALE"] = bscale
    hdu.header["BZERO"] = bzero
    hdu.header["BLANK"] = blank
    write(os.path.join(out, "i16_scaled.fits"), [hdu])
    add("i16_scaled.fits", kind="scaled", bitpix=16)

    # BITPIX 8, 32, 64 (unscaled or scaled): decode parity and a full pipeline run each.
    img = sky(200, 220, 6, nan_border=False)
    u8 = np.clip(np.round(img / img.max() * 255 * 4), 0, 255).astype(np.uint8)
    hdu = fits.PrimaryHDU(u8)
    hdu.header["BSCALE"] = 0.01
    hdu.header["BZERO"] = -0.5
    write(os.path.join(out, "u8.fits"), [hdu])
    add("u8.fits", kind="scaled", bitpix=8)
    i32 = np.round(img / 1e-7).astype(np.int32)
    hdu = fits.PrimaryHDU(i32)
    hdu.header["BSCALE"] = 1e-7
    hdu.header["BZERO"] = 0.0
    write(os.path.join(out, "i32.fits"), [hdu])
    add("i32.fits", kind="scaled", bitpix=32)
    i64 = np.round(img / 1e-9).astype(np.int64)
    hdu = fits.PrimaryHDU(i64)
    write(os.path.join(out, "i64.fits"), [hdu])
    add("i64.fits", kind="plain", bitpix=64)

    # Tile-compressed (fpack-style .fits.fz): empty primary, image in a compressed extension.
    # RICE_1 with quantisation, as fpack writes float images by default. (astropy 5.2 writes an
    # all-NaN image when it quantises a float image holding NaNs, so the NaN-bordered one is lossless
    # GZIP_2 instead.)
    for name, ctype, q, border in (("tiled_rice_512.fits.fz", "RICE_1", 16.0, False),
                                   ("tiled_gzip2_512.fits.fz", "GZIP_2", 0.0, True)):
        img = sky(512, 512, 7, nan_border=border).astype(np.float32)
        comp = fits.CompImageHDU(img, compression_type=ctype, quantize_level=q)
        lofar_header(comp.header, 512, 512, 1.2e-4)
        for k in ("CTYPE3", "CRPIX3", "CRVAL3", "CDELT3", "CUNIT3",
                  "CTYPE4", "CRPIX4", "CRVAL4", "CDELT4"):
            del comp.header[k]
        write(os.path.join(out, name), [fits.PrimaryHDU(), comp])
        add(name, kind="tilecomp", bitpix=-32)

    # gzip-compressed file (.fits.gz), as facetselfcal users sometimes keep them.
    img = sky(600, 600, 8)
    hdu = fits.PrimaryHDU(img.astype(np.float32)[None, None])
    lofar_header(hdu.header, 600, 600, 1.2e-4)
    plain = os.path.join(out, "gz_600.fits")
    write(plain, [hdu])
    with open(plain, "rb") as f, gzip.open(os.path.join(out, "gz_600.fits.gz"), "wb", compresslevel=6) as g:
        g.write(f.read())
    os.remove(plain)
    add("gz_600.fits.gz", kind="gzip", bitpix=-32)

    # Empty primary + plain IMAGE extension (the "first image extension" rule).
    img = sky(256, 300, 9)
    write(os.path.join(out, "ext_image.fits"), [fits.PrimaryHDU(), fits.ImageHDU(img.astype(np.float32))])
    add("ext_image.fits", kind="extension", bitpix=-32)

    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")


def seeds(out):
    """Small files (a few KiB) of every kind the decoder reads: the fuzzer's starting corpus."""
    os.makedirs(out, exist_ok=True)
    img = sky(30, 36, 20, n_sources=5)
    for dtype, name in ((np.float32, "f32"), (np.float64, "f64")):
        hdu = fits.PrimaryHDU(img.astype(dtype)[None, None])
        lofar_header(hdu.header, 36, 30, 1.2e-4)
        write(os.path.join(out, f"lofar4d_{name}.fits"), [hdu])
    raw = np.clip(np.round(np.nan_to_num(img) / 1e-5), -30000, 30000)
    for dtype, name in ((np.uint8, "u8"), (np.int16, "i16"), (np.int32, "i32"), (np.int64, "i64")):
        data = (np.abs(raw) % 250).astype(dtype) if dtype == np.uint8 else raw.astype(dtype)
        hdu = fits.PrimaryHDU(data)
        hdu.header["BSCALE"] = 1e-5
        hdu.header["BZERO"] = 0.0
        if dtype == np.int16:
            hdu.header["BLANK"] = -32768
        write(os.path.join(out, f"scaled_{name}.fits"), [hdu])
    clean = np.nan_to_num(img).astype(np.float32)
    write(os.path.join(out, "tiled_rice.fits.fz"),
          [fits.PrimaryHDU(), fits.CompImageHDU(clean, compression_type="RICE_1", tile_shape=(8, 36))])
    write(os.path.join(out, "tiled_gzip2.fits.fz"),
          [fits.PrimaryHDU(), fits.CompImageHDU(img.astype(np.float32), compression_type="GZIP_2",
                                                quantize_level=0.0)])
    write(os.path.join(out, "extension.fits"), [fits.PrimaryHDU(), fits.ImageHDU(clean)])
    with open(os.path.join(out, "lofar4d_f32.fits"), "rb") as f:
        data = f.read()
    with gzip.open(os.path.join(out, "lofar4d_f32.fits.gz"), "wb") as g:
        g.write(data)


if __name__ == "__main__":
    if sys.argv[1] == "--seeds":
        seeds(sys.argv[2])
    else:
        main_with(sys.argv[1], "--quick" in sys.argv[2:])
