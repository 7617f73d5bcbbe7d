"""Helpers for stopcald's integration tests: start the real server on an ephemeral loopback port,
talk to it with the real curl binary, write small FITS files, and score them with stopcal-infer for
comparison. Python standard library only; every wait is bounded."""
import json
import os
import random
import signal
import socket
import struct
import subprocess
import tempfile
import time

TMP = tempfile.mkdtemp(prefix="stopcald-test-")


def fits_bytes(width, height, seed, blob=0.05):
    """A BITPIX -32 FITS image: Gaussian noise plus a bright disc, different for every seed."""
    rng = random.Random(seed)
    cx, cy, rad = rng.uniform(10, width - 10), rng.uniform(10, height - 10), rng.uniform(3, 10)
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    2",
             "NAXIS1  = %20d" % width, "NAXIS2  = %20d" % height, "END"]
    header = "".join(c.ljust(80) for c in cards)
    header = header.ljust((len(header) + 2879) // 2880 * 2880)
    pixels = [rng.gauss(0, 1e-3) + (blob * rng.uniform(0.2, 2) if (x - cx) ** 2 + (y - cy) ** 2 < rad * rad else 0)
              for y in range(height) for x in range(width)]
    data = struct.pack(">%df" % len(pixels), *pixels)
    data += b"\0" * ((-len(data)) % 2880)
    return header.encode() + data


def write_fits(name, seed, width=64, height=64):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(fits_bytes(width, height, seed))
    return path


def pixels(seed, n_floats):
    rng = random.Random(seed)
    return [rng.gauss(0, 1) for _ in range(n_floats)]


class Response:
    def __init__(self, rc, status, headers, body):
        self.rc, self.status, self.headers, self.body = rc, status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<HTTP %s rc=%s %r>" % (self.status, self.rc, self.body[:300])


_seq = [0]


def curl(url, *args, timeout=30):
    """Run curl; returns Response (status 0 when no HTTP answer came, rc = curl's exit code)."""
    _seq[0] += 1
    out = os.path.join(TMP, "body%d_%d" % (os.getpid(), _seq[0]))
    hdr = out + ".h"
    cmd = ["curl", "-sS", "-o", out, "-D", hdr, "-w", "%{http_code}", "--max-time", str(timeout)]
    cmd += list(args) + [url]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 15)
    body = open(out, "rb").read() if os.path.exists(out) else b""
    headers = {}
    if os.path.exists(hdr):
        # The last header block is the final answer (a 100 Continue may precede it).
        blocks = [b for b in open(hdr, "rb").read().decode("latin-1").split("\r\n\r\n") if b.strip()]
        for line in (blocks[-1].split("\r\n")[1:] if blocks else []):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        os.unlink(hdr)
    if os.path.exists(out):
        os.unlink(out)
    status = int(p.stdout.decode() or 0) if p.stdout.decode().isdigit() else 0
    return Response(p.returncode, status, headers, body)


class Server:
    """stopcald on 127.0.0.1 and an ephemeral port; its log goes to a file the tests can read."""

    def __init__(self, binary, models, *extra, env=None, wait_ready=True):
        self.log_path = os.path.join(TMP, "stopcald-%d-%d.log" % (os.getpid(), time.monotonic_ns()))
        # A short drain grace keeps every stop() quick; a test that studies draining passes its own.
        args = [binary, "--host", "127.0.0.1", "--port", "0", "--drain-grace-ms", "100"]
        for m in models:
            args += ["--model", m]
        args += list(extra)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, env=full_env)
        self.port = None
        deadline = time.monotonic() + 60
        while self.port is None:
            if self.proc.poll() is not None:
                raise AssertionError("stopcald exited with %d: %s" % (self.proc.returncode, self.log_text()[-2000:]))
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("stopcald did not start listening within 60 s")
            for line in self.log_text().splitlines():
                if '"msg":"listening"' in line:
                    self.port = json.loads(line)["port"]
            time.sleep(0.05)
        self.base = "http://127.0.0.1:%d" % self.port
        if wait_ready:
            self.wait_ready()

    def url(self, path):
        return self.base + path

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if curl(self.url("/v2/health/ready"), timeout=5).status == 200:
                return
            time.sleep(0.05)
        raise AssertionError("stopcald not ready within %d s" % timeout)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def metric(self, text, name):
        """Sum of every sample of one metric name (any labels)."""
        total, seen = 0.0, False
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
        if not seen:
            raise AssertionError("metric %s missing" % name)
        return total

    def stop(self, timeout=60):
        """SIGTERM, wait, and return the exit status (ASan/LSan findings make it non-zero)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("stopcald did not exit within %d s of SIGTERM" % timeout)
        self.log.close()
        log = self.log_text()
        assert "Sanitizer" not in log, "sanitizer report in the server log:\n" + log[-4000:]
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def stopcal_infer(binary, model, paths):
    """{basename: result} from stopcal-infer --json on the same images."""
    p = subprocess.run([binary, "--model", model, "--json", "--threads", "1"] + list(paths), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout)
    return {os.path.basename(r["name"]): r for r in doc["results"]}


def raw_request(port, head, body=b"", timeout=10):
    """Send bytes on a fresh socket, return what comes back until the server closes or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head + body)
    chunks = []
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
            data = b"".join(chunks)
            if b"\r\n\r\n" in data:
                head_part, rest = data.split(b"\r\n\r\n", 1)
                for line in head_part.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:") and len(rest) >= int(line.split(b":")[1]):
                        s.close()
                        return data
    except socket.timeout:
        pass
    s.close()
    return b"".join(chunks)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run_tests(tests, wall_limit_s):
    """Run each test function; print PASS/FAIL lines; return the exit status."""
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(AssertionError("wall-clock limit reached")))
    signal.alarm(wall_limit_s)
    failed = 0
    for t in tests:
        t0 = time.monotonic()
        try:
            t()
            print("PASS %s (%.1f s)" % (t.__name__, time.monotonic() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 - a test's failure of any kind is reported, then the next runs
            failed += 1
            print("FAIL %s: %s: %s" % (t.__name__, type(e).__name__, e), flush=True)
    signal.alarm(0)
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    return 1 if failed else 0
