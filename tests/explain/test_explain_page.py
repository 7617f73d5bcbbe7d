"""The page (GET /) in a real headless browser: Debian's chromium driven by chromedriver through
selenium, against the real stopcald. It must load with no console errors, list the models, and a
FITS file given to the page's own form must come back as the score, the decision, the overlay
image and a link to the FITS map. A screenshot is kept as a test artefact.

  test_explain_page.py --stopcald BIN --screenshot OUT.png

Exit 77 (ctest: skipped) with one line saying what is missing when chromium, chromedriver or
selenium is not installed (tests/install_deps.sh installs them)."""

import argparse
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)
import serverlib as sl  # noqa: E402
import looking_model  # noqa: E402
from test_explain_maps import sky_image  # noqa: E402


def browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                              else None)
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium = None
    missing = [n for n, v in (("chromium", chromium), ("chromedriver", driver), ("python3-selenium", selenium))
               if not v]
    if missing:
        print("SKIP page test: %s not installed (bash tests/install_deps.sh)" % ", ".join(missing))
        sys.exit(77)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
              "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_for(fn, what, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stopcald", required=True)
    p.add_argument("--screenshot", required=True)
    args = p.parse_args()
    driver = browser_or_skip()
    look = looking_model.write(os.path.join(sl.TMP, "look.safetensors"))
    sky = sky_image(os.path.join(sl.TMP, "sky.fits"))
    srv = sl.Server(args.stopcald, ["look=" + look])
    failed = 0
    try:
        from selenium.webdriver.common.by import By
        driver.get(srv.url("/"))
        wait_for(lambda: "look" in driver.find_element(By.ID, "models").text, "the model list")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        sl.check(not errors, "console errors on load: %r" % errors)
        driver.find_element(By.ID, "file").send_keys(sky)
        driver.find_element(By.ID, "go").click()
        verdict = wait_for(lambda: "CONTINUE_SCORE" in driver.find_element(By.ID, "verdict").text.upper() and
                           driver.find_element(By.ID, "verdict").text, "the score")
        sl.check("STOP" in verdict.upper() or "CONTINUE " in verdict.upper(), "no decision in %r" % verdict)
        wait_for(lambda: driver.execute_script(
            "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0;"), "the overlay")
        width = driver.execute_script("return document.getElementById('overlay').naturalWidth;")
        sl.check(width >= 512, "overlay image is %d px wide" % width)
        link = wait_for(lambda: driver.find_elements(By.ID, "fitslink"), "the FITS link")[0]
        sl.check(link.get_attribute("href").startswith("blob:") and
                 link.get_attribute("download") == "sky.attention.fits", "FITS link %r" % link.get_attribute("href"))
        sl.check(driver.find_element(By.ID, "error").text == "", "page error %r" % driver.find_element(By.ID, "error").text)
        result = driver.find_element(By.ID, "result").text
        sl.check('"cls_attention"' in result and '"continue_score"' in result, "result object not shown")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        sl.check(not errors, "console errors after explaining: %r" % errors)
        driver.save_screenshot(args.screenshot)
        print("screenshot: %s" % args.screenshot)
        print("PASS page loads, explains a FITS file through its form, shows score, overlay and FITS link")
    except Exception as e:  # noqa: BLE001
        failed = 1
        print("FAIL page: %s: %s" % (type(e).__name__, e))
        try:
            driver.save_screenshot(args.screenshot)
        except Exception:  # noqa: BLE001
            pass
    finally:
        driver.quit()
        rc = srv.stop()
    if rc != 0:
        print("FAIL stopcald exited %d" % rc)
        return 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
