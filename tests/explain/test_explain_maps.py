"""The attention map on the sky (stopcal-infer --explain on FITS inputs): the FITS map lies on the
input's own pixel grid in FITS axis order with the input's celestial WCS (checked with astropy),
its peak on the pixels of the lone bright source a model built to look there must pick (through
the real preprocessing's transpose and resize), a per-head cube, and the PNG's size and overlay."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)
import stopcal_harness as h  # noqa: E402
import looking_model  # noqa: E402

W, H = 300, 200           # NAXIS1, NAXIS2: not square, so a swapped axis cannot hide
SRC = (221, 57)            # 0-based (x, y) of the bright source


def sky_image(path, src=SRC, four_d=True, gz=False):
    """A LOFAR-like image: noise, one bright compact source, a SIN projection with a rotation
    (PC matrix), degenerate FREQ and STOKES axes whose keywords must not reach the map."""
    from astropy.io import fits
    rng = np.random.default_rng(3)
    img = rng.normal(0, 1e-3, (H, W))
    yy, xx = np.mgrid[0:H, 0:W]
    img += 0.5 * np.exp(-((xx - src[0]) ** 2 + (yy - src[1]) ** 2) / (2 * 1.5 ** 2))
    hdr = fits.Header()
    data = img.astype(np.float32)
    if four_d:
        data = data[None, None]
    hdu = fits.PrimaryHDU(data, header=hdr)
    hd = hdu.header
    for k, v in [("CTYPE1", "RA---SIN"), ("CRPIX1", 150.5), ("CRVAL1", 123.4), ("CDELT1", -1.5 / 3600),
                 ("CUNIT1", "deg"), ("CTYPE2", "DEC--SIN"), ("CRPIX2", 100.5), ("CRVAL2", 54.3),
                 ("CDELT2", 1.5 / 3600), ("CUNIT2", "deg"), ("PC1_1", 0.98), ("PC1_2", -0.2),
                 ("PC2_1", 0.2), ("PC2_2", 0.98), ("RADESYS", "FK5"), ("EQUINOX", 2000.0),
                 ("DATE-OBS", "2024-05-01T12:00:00"), ("LONPOLE", 180.0)]:
        hd[k] = v
    if four_d:
        for k, v in [("CTYPE3", "FREQ"), ("CRPIX3", 1.0), ("CRVAL3", 1.44e8), ("CDELT3", 1e6),
                     ("CTYPE4", "STOKES"), ("CRPIX4", 1.0), ("CRVAL4", 1.0), ("CDELT4", 1.0)]:
            hd[k] = v
    hd["BUNIT"] = "JY/BEAM"
    hdu.writeto(path, overwrite=True)
    if gz:
        with open(path, "rb") as f:
            raw = f.read()
        with gzip.open(path + ".gz", "wb") as f:
            f.write(raw)
        return path + ".gz"
    return path


def explain(ctx, model, inputs, *extra):
    out = ctx.path("maps")
    os.makedirs(out, exist_ok=True)
    cmd = [ctx.infer, "--model", model, "--json", "--explain", out, *extra, *inputs]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for mark in h.SANITIZER_MARKS:
        h.check(mark not in r.stderr, f"sanitizer report:\n{r.stderr}")
    h.check(r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}")
    return json.loads(r.stdout), out


def test_fits_map_lands_on_the_source_with_the_inputs_wcs(ctx):
    from astropy.io import fits
    from astropy.wcs import WCS
    model = looking_model.write(ctx.path("look.safetensors"))
    src = sky_image(ctx.path("sky.fits"))
    doc, out = explain(ctx, model, [src])
    e = doc["results"][0]["explain"]
    grid = np.array(e["cls_attention"])
    g = e["grid"]
    h.check(g == 8 and grid.shape == (8, 8), f"grid {g}, shape {grid.shape}")
    # The patch the model looked at hardest, in image order [y][x]: the source's patch.
    iy, ix = np.unravel_index(np.argmax(grid), grid.shape)
    want = (int((SRC[1] + 0.5) * g / H), int((SRC[0] + 0.5) * g / W))
    h.check((iy, ix) == want, f"the largest attention is on patch (y {iy}, x {ix}), the source is in {want}")
    h.check(grid.max() > 5 * np.median(grid), f"the source patch barely stands out: {grid.max()} vs median "
                                              f"{np.median(grid)}")
    path = os.path.join(out, "sky.fits.attention.fits")
    h.check(e["files"][0] == path, f"files {e['files']}")
    with fits.open(path) as hl:
        hdr, m = hl[0].header, hl[0].data
    h.check(hdr["NAXIS"] == 2 and (hdr["NAXIS1"], hdr["NAXIS2"]) == (W, H) and m.shape == (H, W),
            f"map axes NAXIS1={hdr.get('NAXIS1')} NAXIS2={hdr.get('NAXIS2')}, data {m.shape}: want the input's "
            f"{W} x {H}")
    # The map's peak covers the source's own pixel, in FITS order (numpy [y, x]).
    h.check(m[SRC[1], SRC[0]] == m.max(), f"map at the source pixel {m[SRC[1], SRC[0]]} < max {m.max()}")
    ys, xs = np.nonzero(m == m.max())
    h.check(xs.min() <= SRC[0] <= xs.max() and ys.min() <= SRC[1] <= ys.max(), "peak region misses the source")
    # Every pixel carries its patch's value: the grid, back-projected through the resize.
    px = ((np.arange(W) + 0.5) * g / W).astype(int)
    py = ((np.arange(H) + 0.5) * g / H).astype(int)
    h.check(np.array_equal(m, grid[py][:, px].astype(np.float32)), "map pixels are not their patches' values")
    # The WCS: the map's world coordinates are the input's celestial ones, pixel for pixel.
    with fits.open(src) as hl:
        win = WCS(hl[0].header).celestial
    wmap = WCS(hdr)
    h.check(wmap.naxis == 2 and wmap.wcs.ctype[0] == "RA---SIN" and wmap.wcs.ctype[1] == "DEC--SIN",
            f"map WCS {wmap.wcs.ctype}")
    pts = np.array([[0, 0], [W - 1, H - 1], [SRC[0], SRC[1]], [17.3, 150.8]])
    a = win.pixel_to_world_values(pts[:, 0], pts[:, 1])
    b = wmap.pixel_to_world_values(pts[:, 0], pts[:, 1])
    h.check(np.allclose(a, b, rtol=0, atol=1e-10), f"world coordinates differ: {a} vs {b}")
    for k in ("RADESYS", "EQUINOX", "DATE-OBS", "PC1_2", "PC2_1", "CRPIX1", "CRVAL2", "LONPOLE"):
        h.check(k in hdr, f"{k} not copied")
    h.check("CTYPE3" not in hdr and "CRVAL4" not in hdr, "the degenerate axes' keywords leaked into a 2-D map")
    h.check(abs(hdr["CSCORE"] - doc["results"][0]["continue_score"]) < 1e-9 and
            hdr["DECISION"] == doc["results"][0]["decision"] and hdr["EXPLMAP"] == "CLS-LAST",
            "score/decision keywords")
    ctx.note(f"peak patch (y {iy}, x {ix}) = {grid.max():.4f}, median {np.median(grid):.4f}")


def test_gzip_input_same_map_and_rollout_files(ctx):
    from astropy.io import fits
    model = looking_model.write(ctx.path("look.safetensors"))
    src = sky_image(ctx.path("sky.fits"), gz=True)
    doc, out = explain(ctx, model, [src], "--rollout")
    files = doc["results"][0]["explain"]["files"]
    h.check([os.path.basename(f) for f in files] == [
        "sky.fits.gz.attention.fits", "sky.fits.gz.attention.png", "sky.fits.gz.rollout.fits",
        "sky.fits.gz.rollout.png"], f"files {files}")
    with fits.open(files[2]) as hl:
        hdr, m = hl[0].header, hl[0].data
    h.check(hdr["EXPLMAP"] == "ROLLOUT" and m.shape == (H, W) and "CRVAL1" in hdr, "rollout map header")
    h.check(m[SRC[1], SRC[0]] == m.max(), "the rollout peaks on the source too (one block: Â = (A + I)/2)")


def test_heads_all_is_a_cube_whose_mean_is_the_map(ctx):
    from astropy.io import fits
    model = h.genmodel(ctx, "m.safetensors", "--embed-dim", 192, "--heads", 3, "--depth", 2,
                       "--registers", 4, "--input-size", 112, "--seed", 9)
    src = sky_image(ctx.path("sky.fits"), four_d=False)
    doc, out = explain(ctx, model, [src], "--heads", "all")
    e = doc["results"][0]["explain"]
    with fits.open(e["files"][0]) as hl:
        hdr, cube = hl[0].header, hl[0].data
    h.check(cube.shape == (3, H, W) and hdr["NAXIS3"] == 3 and hdr["EXPLHEAD"] == "ALL" and
            hdr["CTYPE3"] == "HEAD", f"cube {cube.shape}")
    mean = np.array(e["cls_attention"])
    g = e["grid"]
    px = ((np.arange(W) + 0.5) * g / W).astype(int)
    py = ((np.arange(H) + 0.5) * g / H).astype(int)
    h.check(np.allclose(cube.mean(axis=0), mean[py][:, px], atol=1e-7), "cube mean is not the mean map")
    h.check(hdr["NREGS"] == 4 and "REGATT4" in hdr and abs(
        hdr["REGATT2"] - e["register_attention"][1]) < 1e-9, "register attention keywords")


def test_png_size_and_overlay_where_the_map_is_high(ctx):
    from PIL import Image
    model = looking_model.write(ctx.path("look.safetensors"))
    src = sky_image(ctx.path("sky.fits"))
    doc, out = explain(ctx, model, [src])
    png = os.path.join(out, "sky.fits.attention.png")
    im = Image.open(png)
    x0, y0, iw, ih = map(int, im.info["stopcal:image-box"].split())
    h.check((iw, ih) == (512, round(512 * H / W)), f"image box {iw} x {ih}")
    h.check(im.mode == "RGB" and im.size[0] >= x0 + iw + 16 and im.size[1] > y0 + ih + 40,
            f"PNG {im.mode} {im.size}")
    h.check(abs(float(im.info["stopcal:continue_score"]) - doc["results"][0]["continue_score"]) < 1e-8,
            "score chunk")
    a = np.asarray(im).astype(int)
    # North up: FITS row y is drawn at height ih - 1 - y·ih/H.
    def at(x, y):
        return a[y0 + ih - 1 - int((y + 0.5) * ih / H), x0 + int((x + 0.5) * iw / W)]
    hot, cold = at(SRC[0] + 3, SRC[1] + 3), at(20, 180)
    h.check(hot[0] > 200 and hot[0] - hot[2] > 60, f"no warm overlay on the source's patch: {hot}")
    h.check(abs(cold[0] - cold[2]) < 40, f"overlay strong where attention is low: {cold}")
    bx, by, bw, bh = map(int, im.info["stopcal:bar-box"].split())
    top, bottom = a[by, bx + bw // 2], a[by + bh - 1, bx + bw // 2]
    h.check(sum(top) > sum(bottom) + 300, f"colour bar top {top} not brighter than bottom {bottom}")
    # The text strip below the image has ink (score and decision).
    strip = a[y0 + ih + 10:y0 + ih + 24, 10:400]
    h.check((strip.max(axis=2) > 200).sum() > 100, "no text under the image")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
