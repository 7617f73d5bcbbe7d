"""Python client of stopcald, standard library only (urllib).

    import stopcal
    score = stopcal.predict("image_009.fits")     # continue score in [0, 1], as the reference's predict_nn
    scores = stopcal.predict_many(["a.fits", "b.fits"])
    doc = stopcal.predict_full(["a.fits"])        # the whole /v1/predict answer (model, request_id, results)

The continue score keeps the reference pipeline's meaning (high = keep self-calibrating), so
facetselfcal's predict_nn can call predict() unchanged; stop when score < threshold (0.5 by default).

Configuration from the environment:
  STOPCAL_URL       server base URL(s), comma-separated, tried in order (default http://127.0.0.1:8080)
  STOPCAL_API_KEY   bearer token (or STOPCAL_API_KEY_FILE: a file whose first line is the token)
  STOPCAL_MODEL     model name (default: the server's default)
  STOPCAL_TIMEOUT   seconds per attempt (default 120)
  STOPCAL_RETRIES   extra rounds over all servers on connection errors, 429 and 503 (default 3)
Every function also takes these as keyword arguments (url=, api_key=, model=, timeout=, retries=).
"""
import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

__all__ = ["StopcalError", "predict", "predict_many", "predict_full", "health", "models"]

FILES_PER_REQUEST = 8


class StopcalError(RuntimeError):
    """A request failed; .status is the HTTP status (0 when no server answered)."""

    def __init__(self, message, status=0):
        super().__init__(message)
        self.status = status


def _urls(url):
    text = url or os.environ.get("STOPCAL_URL") or "http://127.0.0.1:8080"
    out = []
    for u in text.split(","):
        u = u.strip().rstrip("/")
        if u:
            out.append(u if "://" in u else "http://" + u)
    if not out:
        raise StopcalError("no server URL given")
    return out


def _token(api_key):
    if api_key:
        return api_key
    if os.environ.get("STOPCAL_API_KEY"):
        return os.environ["STOPCAL_API_KEY"]
    path = os.environ.get("STOPCAL_API_KEY_FILE")
    if path:
        with open(path) as f:
            return f.readline().strip()
    return None


def _error_text(body):
    try:
        return json.loads(body)["error"]
    except Exception:  # noqa: BLE001 - any undecodable body is shown as text
        return body[:200].decode("utf-8", "replace")


def _request(path, body=None, content_type=None, url=None, api_key=None, timeout=None, retries=None,
             backoff=0.2):
    """The request with failover across servers and retries with backoff; returns the decoded JSON."""
    urls = _urls(url)
    timeout = float(timeout if timeout is not None else os.environ.get("STOPCAL_TIMEOUT", 120))
    retries = int(retries if retries is not None else os.environ.get("STOPCAL_RETRIES", 3))
    headers = {"User-Agent": "stopcal-python"}
    token = _token(api_key)
    if token:
        headers["Authorization"] = "Bearer " + token
    if content_type:
        headers["Content-Type"] = content_type
    last = StopcalError("no attempt made")
    for attempt in range(retries + 1):
        retry_after = 0.0
        for base in urls:
            req = urllib.request.Request(base + path, data=body, headers=headers,
                                         method="POST" if body is not None else "GET")
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                text = _error_text(e.read())
                if e.code in (429, 503):
                    try:
                        retry_after = max(retry_after, float(e.headers.get("Retry-After") or 0))
                    except ValueError:
                        pass
                    last = StopcalError("%s answered HTTP %d: %s" % (base, e.code, text), e.code)
                    continue
                if e.code in (401, 403):
                    raise StopcalError("%s refused the request (HTTP %d, authentication): %s; set STOPCAL_API_KEY"
                                       % (base, e.code, text), e.code) from None
                raise StopcalError("%s answered HTTP %d: %s" % (base, e.code, text), e.code) from None
            except (urllib.error.URLError, OSError) as e:  # refused, reset, timeout
                reason = getattr(e, "reason", e)
                last = StopcalError("%s: %s" % (base, reason))
                continue
        if attempt < retries:
            wait = min(30.0, backoff * (2 ** attempt) * random.uniform(0.5, 1.5))
            time.sleep(min(30.0, max(wait, retry_after)))
    raise StopcalError("%s (after %d attempts)" % (last, retries + 1), last.status)


def _multipart(paths):
    boundary = "stopcal-" + uuid.uuid4().hex
    parts = []
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        name = os.path.basename(p).replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                      "Content-Type: application/fits\r\n\r\n" % (boundary, name)).encode() + data + b"\r\n")
    body = b"".join(parts) + ("--%s--\r\n" % boundary).encode()
    return body, "multipart/form-data; boundary=" + boundary


def predict_full(paths, model=None, threshold=None, **kw):
    """Score FITS files; returns {"model", "request_id", "results": [result…]} (results in order)."""
    paths = [os.fspath(p) for p in paths]
    model = model or os.environ.get("STOPCAL_MODEL")
    query = {}
    if model:
        query["model"] = model
    if threshold is not None:
        query["threshold"] = repr(float(threshold))
    path = "/v1/predict" + ("?" + urllib.parse.urlencode(query) if query else "")
    out = None
    for i in range(0, len(paths), FILES_PER_REQUEST):
        body, ctype = _multipart(paths[i:i + FILES_PER_REQUEST])
        doc = _request(path, body, ctype, **kw)
        if out is None:
            out = doc
        else:
            out["results"].extend(doc["results"])
    return out if out is not None else {"results": []}


def predict_many(paths, **kw):
    """Continue scores of several FITS files, in order."""
    return [r["continue_score"] for r in predict_full(paths, **kw)["results"]]


def predict(path, **kw):
    """The continue score of one FITS file (high = keep self-calibrating; stop when < 0.5)."""
    return predict_many([path], **kw)[0]


def health(**kw):
    """True when a server answers ready."""
    try:
        return _request("/v2/health/ready", **kw).get("ready") is True
    except StopcalError:
        return False


def models(**kw):
    """GET /v1/models, decoded."""
    return _request("/v1/models", **kw)
