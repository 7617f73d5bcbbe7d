"""Python client of stopcald, standard library only.

    import stopcal
    score = stopcal.predict("image_009.fits")     # continue score in [0, 1], as the reference's predict_nn
    scores = stopcal.predict_many(["a.fits", "b.fits"])
    doc = stopcal.predict_full(["a.fits"])        # the whole /v1/predict answer (model, request_id, results)
    r = stopcal.explain("a.fits")                 # the result with "explain": where the model looked
    stopcal.explain("a.fits", format="fits", out="a.attention.fits")  # the map on the image's pixel grid + WCS

The continue score keeps the reference pipeline's meaning (high = keep self-calibrating); stop when
score < threshold (0.5 by default). `python3 -m stopcal` (or the `stopcal` command that
`pip install ./client/python` installs) is the command-line client, as the C `stopcal`.

Configuration from the environment:
  STOPCAL_URL           server base URL(s), comma-separated, tried in order (default http://127.0.0.1:8080)
  STOPCAL_API_KEY       bearer token (or STOPCAL_API_KEY_FILE: a file whose first line is the token)
  STOPCAL_MODEL         model name (default: the server's default)
  STOPCAL_TIMEOUT       seconds per attempt (default 120)
  STOPCAL_RETRIES       extra rounds over all servers on connection errors, 429 and 503 (default 3)
Every function also takes these as keyword arguments (url=, api_key=, api_key_file=, model=, timeout=,
connect_timeout=, retries=, backoff=).
"""
import http.client
import json
import math
import os
import random
import socket
import struct
import time
import urllib.parse
import uuid

__all__ = ["StopcalError", "predict", "predict_many", "predict_full", "exact_score", "explain", "health",
           "server_health",
           "models", "urls", "__version__"]
__version__ = "0.1.0"  # the C tools' STOPCAL_VERSION (a test compares `stopcal --version` of both)

FILES_PER_REQUEST = 8
MAX_BACKOFF_S = 30.0
MAX_URLS = 16

# What went wrong, in the C client's words (stopcal_strerror), so both commands print the same.
UNREACHABLE, TIMED_OUT, AUTH, BUSY, HTTP_ERROR, BAD_ANSWER, INVALID = (
    "server unreachable", "timed out", "authentication failed", "server busy", "HTTP error", "bad answer",
    "invalid argument")


class StopcalError(RuntimeError):
    """A request failed; .status is the HTTP status (0 when no server answered), .kind what failed
    (one of the module's UNREACHABLE, TIMED_OUT, AUTH, BUSY, HTTP_ERROR, BAD_ANSWER, INVALID)."""

    def __init__(self, message, status=0, kind=HTTP_ERROR):
        super().__init__(message)
        self.status = status
        self.kind = kind


def urls(url=None):
    """The server base URLs, in order: url (a string, comma-separated, or a list of them), else
    $STOPCAL_URL, else http://127.0.0.1:8080; http:// is added where no scheme is given."""
    if isinstance(url, (list, tuple)):
        url = ",".join(url)
    text = url or os.environ.get("STOPCAL_URL") or "http://127.0.0.1:8080"
    out = []
    for u in text.split(","):
        u = u.strip(" \t").rstrip(" \t/")
        if u:
            out.append(u if u.startswith(("http://", "https://")) else "http://" + u)
    if not out:
        raise StopcalError("no server URL given", kind=INVALID)
    if len(out) > MAX_URLS:
        raise StopcalError("too many server URLs (at most %d)" % MAX_URLS, kind=INVALID)
    return out


def _token(api_key, api_key_file):
    if api_key:
        return api_key
    path = api_key_file
    if not path and os.environ.get("STOPCAL_API_KEY"):
        return os.environ["STOPCAL_API_KEY"]
    path = path or os.environ.get("STOPCAL_API_KEY_FILE")
    if not path:
        return None
    try:
        with open(path) as f:
            line = f.readline()
    except OSError:
        raise StopcalError("cannot read the API key file %s" % path, kind=INVALID) from None
    if not line:
        raise StopcalError("the API key file %s is empty" % path, kind=INVALID)
    return line.rstrip("\r\n")


def _error_text(body):
    try:
        return json.loads(body)["error"]
    except Exception:  # noqa: BLE001 - any undecodable body is shown as text
        return body[:200].decode("utf-8", "replace") if body else "(no body)"


def _attempt(base, method, path, body, headers, connect_timeout, timeout):
    """One HTTP exchange: (status, headers, body bytes). Raises OSError (socket.timeout included)."""
    u = urllib.parse.urlsplit(base)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=connect_timeout)
    try:
        conn.connect()
        conn.sock.settimeout(timeout)
        conn.request(method, (u.path or "") + path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def _exchange(path, body=None, content_type=None, url=None, api_key=None, api_key_file=None, timeout=None,
              connect_timeout=None, retries=None, backoff=None, only=None):
    """The request with failover across servers and retries with backoff (as libstopcal: connection
    failures, timeouts, 429 and 503 move on to the next server; other answers are final).
    Returns (base URL that answered, body bytes). only: one attempt on that server, no retries."""
    bases = [only] if only else urls(url)
    timeout = float(timeout if timeout is not None else os.environ.get("STOPCAL_TIMEOUT", 120))
    connect_timeout = float(connect_timeout if connect_timeout is not None else min(5.0, timeout))
    retries = 0 if only else int(retries if retries is not None else os.environ.get("STOPCAL_RETRIES", 3))
    backoff = 0.2 if backoff is None else float(backoff)
    headers = {"User-Agent": "stopcal-python/" + __version__}
    token = _token(api_key, api_key_file)
    if token:
        headers["Authorization"] = "Bearer " + token
    if content_type:
        headers["Content-Type"] = content_type
    method = "POST" if body is not None else "GET"
    last = StopcalError("no attempt made", kind=UNREACHABLE)
    for attempt in range(retries + 1):
        retry_after = 0.0
        for base in bases:
            try:
                status, rheaders, data = _attempt(base, method, path, body, headers, connect_timeout, timeout)
            except socket.timeout:
                last = StopcalError("%s: timed out (after %g s)" % (base, timeout), kind=TIMED_OUT)
                continue
            except (OSError, http.client.HTTPException) as e:  # refused, reset, unresolvable, garbled
                last = StopcalError("%s: %s" % (base, str(e) or type(e).__name__), kind=UNREACHABLE)
                continue
            if 200 <= status < 300:
                return base, data
            text = _error_text(data)
            if status in (429, 503):
                try:
                    retry_after = max(retry_after, float(rheaders.get("Retry-After") or 0))
                except ValueError:
                    pass
                last = StopcalError("%s answered HTTP %d: %s" % (base, status, text), status, BUSY)
                continue
            if status in (401, 403):
                raise StopcalError("%s refused the request (HTTP %d, authentication): %s; set STOPCAL_API_KEY or "
                                   "--api-key-file to the server's token" % (base, status, text), status, AUTH)
            raise StopcalError("%s answered HTTP %d: %s" % (base, status, text), status, HTTP_ERROR)
        if attempt < retries:
            wait = min(MAX_BACKOFF_S, backoff * (2 ** min(attempt, 16))) * random.uniform(0.5, 1.5)
            time.sleep(min(MAX_BACKOFF_S, max(wait, retry_after)))
    if retries:
        raise StopcalError("%s (after %d attempts)" % (last, retries + 1), last.status, last.kind)
    raise last


def _json(data):
    try:
        return json.loads(data)
    except ValueError as e:
        raise StopcalError("the server's answer is not JSON: %s" % e, kind=BAD_ANSWER) from None


def _request(path, body=None, content_type=None, **kw):
    """The request with failover and retries; returns the decoded JSON."""
    return _json(_exchange(path, body, content_type, **kw)[1])


def _multipart(paths):
    boundary = "stopcal-" + uuid.uuid4().hex
    parts = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            raise StopcalError("cannot open %s" % p, kind=INVALID) from None
        name = os.path.basename(p) or p
        name = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                      "Content-Type: application/fits\r\n\r\n" % (boundary, name)).encode() + data + b"\r\n")
    body = b"".join(parts) + ("--%s--\r\n" % boundary).encode()
    return body, "multipart/form-data; boundary=" + boundary


def predict_full(paths, model=None, threshold=None, **kw):
    """Score FITS files; returns the /v1/predict answer {"model", "request_id", "results": [result…]}
    (results in order; sent in requests of at most 8 files, the other keys from the last one) with
    "server": the base URL that answered. model None: $STOPCAL_MODEL, else the server's default."""
    paths = [os.fspath(p) for p in paths]
    if model is None:
        model = os.environ.get("STOPCAL_MODEL")
    query = {}
    if model:
        query["model"] = model
    if threshold is not None:
        query["threshold"] = repr(float(threshold))
    path = "/v1/predict" + ("?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote) if query else "")
    out = None
    for i in range(0, len(paths), FILES_PER_REQUEST):
        body, ctype = _multipart(paths[i:i + FILES_PER_REQUEST])
        base, data = _exchange(path, body, ctype, **kw)
        doc = _json(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise StopcalError("the server's answer is not a predict result: no \"results\"", kind=BAD_ANSWER)
        doc["server"] = base
        if out is not None:
            doc["results"] = out["results"] + doc["results"]
        out = doc
    return out if out is not None else {"results": []}


def exact_score(result):
    """A result's continue score as the server computed it: sigmoid, in double, of the fp32 logit
    (result_continue_score in server/result_json.c). The JSON's continue_score carries 9 digits, so
    it reads 1.0 from logits of about 21 on; this is 1.0 only from about 37 on. Falls back to the
    continue_score sent when the logit is missing or does not match it."""
    sent = result.get("continue_score")
    logit = result.get("logit")
    if not isinstance(logit, (int, float)) or not math.isfinite(logit):
        return sent
    x = struct.unpack("<f", struct.pack("<f", logit))[0]  # 9 digits name one fp32 value exactly
    score = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    if isinstance(sent, (int, float)) and abs(score - sent) <= 1e-8:
        return score
    return sent


def explain(path, format="json", heads="mean", rollout=False, out=None, model=None, threshold=None, _raw=False,
            **kw):
    """Where the model looked, for one FITS file (POST /v1/explain).

    format="json": the result object with its "explain" member (cls_attention: the last block's
    CLS attention per patch, [row][column] along the image's y and x axes; with rollout=True also
    "rollout"). format="fits": the map on the image's own pixel grid, with its WCS; format="png":
    the image with the map overlaid, the score and the decision. heads="all": one map per head
    (json, fits). fits/png return the file's bytes, or write them to `out` and return its path."""
    if format not in ("json", "fits", "png"):
        raise StopcalError("format must be json, fits or png, not %r" % (format,), kind=INVALID)
    path = os.fspath(path)
    if model is None:
        model = os.environ.get("STOPCAL_MODEL")
    query = {"format": format, "heads": heads, "rollout": "1" if rollout else "0"}
    if model:
        query["model"] = model
    if threshold is not None:
        query["threshold"] = repr(float(threshold))
    body, ctype = _multipart([path])
    _, data = _exchange("/v1/explain?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote), body, ctype,
                        **kw)
    if _raw:  # the command-line client writes the answer as it came
        return data
    if format == "json":
        doc = _json(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or not doc["results"]:
            raise StopcalError("the server's answer is not an explain result", kind=BAD_ANSWER)
        return doc["results"][0]
    if out is None:
        return data
    with open(out, "wb") as f:
        f.write(data)
    return out


def predict_many(paths, **kw):
    """Continue scores of several FITS files, in order (as the JSON carries them; exact_score() of
    predict_full's results gives every digit)."""
    return [r["continue_score"] for r in predict_full(paths, **kw)["results"]]


def predict(path, **kw):
    """The continue score of one FITS file (high = keep self-calibrating; stop when < 0.5)."""
    return predict_many([path], **kw)[0]


def server_health(base, **kw):
    """One attempt at GET /v2/health/ready on one server: ("ready" | "not-ready" | "unreachable",
    the reason when unreachable)."""
    kw.pop("url", None)
    kw.pop("retries", None)
    try:
        _exchange("/v2/health/ready", only=base, **kw)
        return "ready", ""
    except StopcalError as e:
        if e.kind in (UNREACHABLE, TIMED_OUT):
            return "unreachable", str(e)
        return "not-ready", ""


def health(**kw):
    """True when a server answers ready."""
    try:
        return _request("/v2/health/ready", **kw).get("ready") is True
    except StopcalError:
        return False


def models(**kw):
    """GET /v1/models, decoded."""
    return _request("/v1/models", **kw)
