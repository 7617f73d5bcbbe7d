"""POST /v1/explain and GET / on the real stopcald over loopback, with the real curl: the JSON,
FITS and PNG answers (checked with astropy and PIL, and against /v1/predict's score for the same
image), the page, and every bad request answered with a status and a JSON error.

  test_explain_server.py --stopcald BIN --infer BIN"""

import argparse
import io
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)
import serverlib as sl  # noqa: E402
import looking_model  # noqa: E402
from test_explain_maps import SRC, H, W, sky_image  # noqa: E402

ARGS = None


def explain(srv, query, *curl_args):
    return sl.curl(srv.url("/v1/explain" + query), *curl_args, timeout=120)


def post_fits(srv, path, query=""):
    return explain(srv, query, "-H", "Content-Type: application/fits", "--data-binary", "@" + path)


def error_of(r, status, *words):
    sl.check(r.status == status, "want HTTP %d, got %r" % (status, r))
    sl.check(r.headers.get("content-type", "").startswith("application/json"), "error not JSON: %r" % r.headers)
    msg = r.json().get("error", "")
    for w in words:
        sl.check(w in msg, "error %r does not name %r" % (msg, w))


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--stopcald", required=True)
    p.add_argument("--infer", required=True)
    p.add_argument("--client", required=True, help="the stopcal CLI")
    ARGS = p.parse_args()
    from astropy.io import fits
    from astropy.wcs import WCS
    from PIL import Image

    look = looking_model.write(os.path.join(sl.TMP, "look.safetensors"))
    sky = sky_image(os.path.join(sl.TMP, "sky.fits"))
    other = sl.write_fits("other.fits", 7, 90, 70)
    key = os.path.join(sl.TMP, "key")
    with open(key, "w") as f:
        f.write("s3cret\n")
    multi = os.path.join(sl.TMP, "multi.safetensors")
    import subprocess
    gen = os.path.join(HERE, "..", "..", "models", "stopcal-genmodel")
    subprocess.run([sys.executable, gen, "--embed-dim", "128", "--heads", "2", "--depth", "2", "--registers", "4",
                    "--input-size", "56", "--seed", "23", "-o", multi], check=True, capture_output=True)
    srv = sl.Server(ARGS.stopcald, ["look=" + look, "multi=" + multi])

    def test_json_matches_predict_and_finds_the_source():
        r = post_fits(srv, sky, "?name=sky.fits&rollout=1")
        sl.check(r.status == 200, repr(r))
        doc = r.json()
        res = doc["results"][0]
        e = res["explain"]
        grid = np.array(e["cls_attention"])
        iy, ix = np.unravel_index(np.argmax(grid), grid.shape)
        g = e["grid"]
        sl.check((iy, ix) == (int((SRC[1] + 0.5) * g / H), int((SRC[0] + 0.5) * g / W)),
                 "peak patch (%d, %d)" % (iy, ix))
        sl.check("rollout" in e and np.array(e["rollout"]).shape == (g, g), "no rollout grid")
        sl.check(res["name"] == "sky.fits" and doc["model"]["name"] == "look", "name/model")
        pr = sl.curl(srv.url("/v1/predict"), "-H", "Content-Type: application/fits", "--data-binary", "@" + sky)
        want = pr.json()["results"][0]
        sl.check(abs(res["continue_score"] - want["continue_score"]) < 1e-6 and res["decision"] == want["decision"]
                 and res["rms"] == want["rms"], "explain %r vs predict %r" % (res, want))

    def test_fits_map_carries_the_wcs():
        r = post_fits(srv, sky, "?format=fits")
        sl.check(r.status == 200 and r.headers.get("content-type") == "application/fits", repr(r.headers))
        with fits.open(io.BytesIO(r.body)) as hl:
            hdr, m = hl[0].header, hl[0].data
        sl.check(m.shape == (H, W) and m[SRC[1], SRC[0]] == m.max(), "map %s, peak off the source" % (m.shape,))
        with fits.open(sky) as hl:
            win = WCS(hl[0].header).celestial
        xs, ys = np.array([0, W - 1, SRC[0]]), np.array([0, H - 1, SRC[1]])
        sl.check(np.allclose(win.pixel_to_world_values(xs, ys), WCS(hdr).pixel_to_world_values(xs, ys), atol=1e-10),
                 "world coordinates differ")
        # The same map stopcal-infer --explain writes for the same file and model.
        out = os.path.join(sl.TMP, "maps")
        os.makedirs(out, exist_ok=True)
        import subprocess
        p = subprocess.run([ARGS.infer, "--model", look, "--explain", out, sky], capture_output=True, text=True)
        sl.check(p.returncode == 0, p.stderr)
        with fits.open(os.path.join(out, "sky.fits.attention.fits")) as hl:
            d = float(np.abs(hl[0].data - m).max())
            sl.check(d < 1e-6, "server and stopcal-infer maps differ by %g" % d)

    def test_png_and_the_cube():
        r = post_fits(srv, sky, "?format=png")
        sl.check(r.status == 200 and r.headers.get("content-type") == "image/png", repr(r.headers))
        im = Image.open(io.BytesIO(r.body))
        x0, y0, iw, ih = map(int, im.info["stopcal:image-box"].split())
        sl.check((iw, ih) == (512, round(512 * H / W)) and im.size[0] > iw and im.size[1] > ih, "PNG %s" % (im.size,))
        r = post_fits(srv, other, "?format=fits&heads=all&model=multi")
        sl.check(r.status == 200, repr(r))
        with fits.open(io.BytesIO(r.body)) as hl:
            sl.check(hl[0].data.shape == (2, 70, 90) and hl[0].header["EXPLHEAD"] == "ALL", "a plane per head")
        j = post_fits(srv, other, "?heads=all&model=multi").json()["results"][0]["explain"]
        cube = np.array(j["cls_attention_heads"])
        sl.check(cube.shape == (2, 4, 4) and np.allclose(cube.mean(axis=0), j["cls_attention"], atol=1e-7),
                 "JSON heads")

    def test_several_images_json_and_the_count_refused_for_maps():
        files = ["-F", "a=@%s" % sky, "-F", "b=@%s" % other]
        r = explain(srv, "", *files)
        sl.check(r.status == 200 and [x["name"] for x in r.json()["results"]] == ["sky.fits", "other.fits"], repr(r))
        for fmt in ("fits", "png"):
            error_of(explain(srv, "?format=" + fmt, *files), 400, "2 images", fmt)

    def test_bad_requests():
        error_of(post_fits(srv, sky, "?format=jpeg"), 400, "format", "jpeg")
        error_of(post_fits(srv, sky, "?heads=some"), 400, "heads")
        error_of(post_fits(srv, sky, "?rollout=2"), 400, "rollout")
        error_of(post_fits(srv, sky, "?format=png&heads=all"), 400, "heads=all", "PNG")
        error_of(post_fits(srv, sky, "?model=nope"), 404, "nope")
        error_of(sl.curl(srv.url("/v1/explain")), 405, "GET")
        error_of(explain(srv, "", "-H", "Content-Type: application/fits", "--data-binary", "not a fits file"), 400)
        error_of(explain(srv, "?format=fits", "-H", "Content-Type: application/fits", "--data-binary", ""), 400,
                 "empty")
        error_of(explain(srv, "", "-H", "Content-Type: text/plain", "--data-binary", "@" + sky), 415)
        m = sl.curl(srv.url("/metrics")).body.decode()
        sl.check('endpoint="/v1/explain",code="400"' in m or 'endpoint="/v1/explain"' in m, "no explain metrics")

    def test_page_is_self_contained():
        r = sl.curl(srv.url("/"))
        sl.check(r.status == 200 and r.headers.get("content-type", "").startswith("text/html"), repr(r))
        page = r.body.decode()
        for need in ("<form", "/v1/explain", "/v1/models", 'type="file"'):
            sl.check(need in page, "page lacks %s" % need)
        for bad in ("http://", "https://", "<script src", "@import", "url("):
            sl.check(bad not in page, "page refers outside itself: %s" % bad)

    def test_auth_covers_explain_not_the_page():
        s2 = sl.Server(ARGS.stopcald, [look], "--api-key-file", key)
        try:
            sl.check(sl.curl(s2.url("/")).status == 200, "page needs no key")
            error_of(post_fits(s2, sky), 401)
            r = explain(s2, "", "-H", "Authorization: Bearer s3cret", "-H", "Content-Type: application/fits",
                        "--data-binary", "@" + sky)
            sl.check(r.status == 200, repr(r))
        finally:
            sl.check(s2.stop() == 0, "server exit status")

    def test_budget_applies():
        s3 = sl.Server(ARGS.stopcald, [look], "--memory-budget", str(1 << 20))
        try:
            big = sl.write_fits("big.fits", 3, 400, 400)  # 640 kB body: the map cannot fit in 1 MiB with it
            error_of(post_fits(s3, big, "?format=fits"), 503, "budget")
            sl.check(post_fits(s3, other, "").status == 200, "a small explain still fits")
        finally:
            sl.check(s3.stop() == 0, "server exit status")

    def test_cli_and_python_module():
        import subprocess
        out_fits, out_png = os.path.join(sl.TMP, "cli.fits"), os.path.join(sl.TMP, "cli.png")
        base = [ARGS.client, "--url", srv.base, "--retries", "0"]
        for out in (out_fits, out_png):
            p = subprocess.run(base + ["explain", sky, "-o", out], capture_output=True, text=True, timeout=120)
            sl.check(p.returncode == 0 and out in p.stderr, "stopcal explain -o %s: %d %s" % (out, p.returncode,
                                                                                             p.stderr))
        with fits.open(out_fits) as hl:
            r = post_fits(srv, sky, "?format=fits")
            with fits.open(io.BytesIO(r.body)) as h2:
                sl.check(np.array_equal(hl[0].data, h2[0].data), "CLI map differs from the endpoint's")
        sl.check(Image.open(out_png).size[0] > 512, "CLI PNG")
        p = subprocess.run(base + ["explain", "--rollout", sky], capture_output=True, text=True, timeout=120)
        sl.check(p.returncode == 0 and "rollout" in json.loads(p.stdout)["results"][0]["explain"], p.stderr)
        for bad, why in ((["explain", sky, "-o", "x.txt"], ".fits, .png or .json"),
                         (["explain"], "exactly one FITS file"),
                         (["explain", os.path.join(sl.TMP, "nope.fits")], "cannot open"),
                         (["--heads", "all", "explain", sky, "-o", out_png], "heads=all"),
                         (["predict", sky, "-o", out_png], "go with explain")):
            p = subprocess.run(base + bad, capture_output=True, text=True, timeout=120)
            sl.check(p.returncode != 0 and why in p.stderr, "stopcal %s: %d %r" % (" ".join(bad), p.returncode,
                                                                                p.stderr))
        # The Python command (python3 -m stopcal) answers as the C one does.
        pydir = os.path.join(HERE, "..", "..", "client", "python")
        env = dict(os.environ, PYTHONPATH=pydir)
        pycmd = [sys.executable, "-m", "stopcal", "--url", srv.base, "--retries", "0"]
        for args in (["explain", sky, "-o", "x.txt"], ["explain"], ["explain", os.path.join(sl.TMP, "nope.fits")],
                     ["--heads", "all", "explain", sky, "-o", out_png], ["predict", sky, "-o", out_png],
                     ["--heads", "some", "explain", sky], ["explain", sky, "-o", out_fits]):
            c = subprocess.run(base + args, capture_output=True, text=True, timeout=120)
            py = subprocess.run(pycmd + args, capture_output=True, text=True, timeout=120, env=env)
            sl.check((c.returncode, c.stderr, c.stdout) == (py.returncode, py.stderr, py.stdout),
                     "C and Python stopcal %s differ: %r vs %r" % (" ".join(args), (c.returncode, c.stderr),
                                                                  (py.returncode, py.stderr)))
        with open(out_fits, "rb") as f:
            sl.check(f.read(8) == b"SIMPLE  ", "python explain -o wrote no FITS")
        sys.path.insert(0, pydir)
        import stopcal
        res = stopcal.explain(sky, url=srv.base, retries=0)
        sl.check(res["name"] == "sky.fits" and np.array(res["explain"]["cls_attention"]).shape == (8, 8), repr(res)[:200])
        data = stopcal.explain(sky, format="fits", url=srv.base, retries=0)
        sl.check(data.startswith(b"SIMPLE  =") and len(data) % 2880 == 0, "python FITS bytes")
        path = stopcal.explain(sky, format="png", out=os.path.join(sl.TMP, "py.png"), url=srv.base, retries=0)
        sl.check(Image.open(path).format == "PNG", "python PNG")
        try:
            stopcal.explain(sky, format="png", heads="all", url=srv.base, retries=0)
            sl.check(False, "heads=all as PNG accepted")
        except stopcal.StopcalError as e:
            sl.check(e.status == 400 and "heads=all" in str(e), str(e))

    tests = [test_json_matches_predict_and_finds_the_source, test_cli_and_python_module, test_fits_map_carries_the_wcs, test_png_and_the_cube,
             test_several_images_json_and_the_count_refused_for_maps, test_bad_requests, test_page_is_self_contained,
             test_auth_covers_explain_not_the_page, test_budget_applies]
    try:
        rc = sl.run_tests(tests, 280)
    finally:
        stop_rc = srv.stop()
    if stop_rc != 0:
        print("FAIL stopcald exited %d" % stop_rc)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
