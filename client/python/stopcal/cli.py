"""The `stopcal` command in Python, for machines where the C client is not built: the same commands,
options, output and exit codes as client/stopcal_main.c (a test runs both on the same files).

    stopcal predict FILE...      a table (or --json, --csv); exit 0, or 1 with a message on stderr
    stopcal should-stop FILE     exit 0 = stop, 1 = continue, 2 = error
    stopcal explain FILE -o OUT  where the model looked: OUT.fits, OUT.png, OUT.json (no -o: JSON)
    stopcal health               readiness of every server; exit 0 when at least one is ready
    stopcal models               the served models (or --json)

One difference: --local-preprocess needs the C preprocessing library, so this command refuses it."""
import getopt
import json
import math
import os
import re
import sys

import stopcal

USAGE = """usage: stopcal [options] predict FILE...
       stopcal [options] should-stop FILE   (exit 0 = stop, 1 = continue, >= 2 = error)
       stopcal [options] explain FILE [-o OUT.fits|OUT.png|OUT.json] [--rollout] [--heads all]
                        where the model looked: the attention map (FITS on the image's pixel
                        grid with its WCS, PNG overlay, or JSON on stdout without -o)
       stopcal [options] health
       stopcal [options] models
Client of stopcald, the LOFAR self-calibration stop/continue classifier.

  --url URL             server base URL; repeatable or comma-separated, tried in order (failover)
                        (default: $STOPCAL_URL, else http://127.0.0.1:8080)
  --model NAME          model to use (default: the server's default)
  --threshold T         decision threshold on continue_score (default: the model's, 0.5)
  --timeout S           seconds per attempt, whole request (default 120)
  --connect-timeout S   seconds to connect (default 5)
  --retries N           extra rounds over all servers on connection errors, 429 and 503 (default 3)
  --api-key-file FILE   bearer token file (default: $STOPCAL_API_KEY)
  --local-preprocess    decode and preprocess FITS here; send pixels over /v2 infer
  --json | --csv        predict/models output format (default: a table)
  --help, --version
"""

LONG = ["url=", "model=", "threshold=", "timeout=", "connect-timeout=", "retries=", "api-key-file=",
        "local-preprocess", "json", "csv", "help", "version", "output=", "rollout", "heads="]


def _real(x):
    """A number as jansson writes it with JSON_REAL_PRECISION(17), so --json matches the C command's."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return json.dumps(x, ensure_ascii=False)
    x = float(x)
    if not math.isfinite(x):
        return "null"  # jansson refuses non-finite reals; the C command prints what the server sent
    text = re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", "%.17g" % x)  # jansson: 1e-05 -> 1e-5, 1e+20 -> 1e20
    return text if "." in text or "e" in text else text + ".0"


def _print_json(doc):
    rows = []
    for r in doc["results"]:
        rms = r.get("rms")
        rows.append("{%s}" % ",".join([
            '"name":%s' % json.dumps(r.get("name", ""), ensure_ascii=False),
            '"continue_score":%s' % _real(r.get("continue_score", math.nan)),
            '"stop_probability":%s' % _real(r.get("stop_probability", math.nan)),
            '"decision":"%s"' % ("stop" if r.get("decision") == "stop" else "continue"),
            '"threshold":%s' % _real(r.get("threshold", math.nan)),
            '"logit":%s' % _real(r.get("logit", math.nan)),
            '"rms":%s' % (_real(rms) if isinstance(rms, (int, float)) and not isinstance(rms, bool) else "null"),
            '"nonfinite_pixels":%d' % int(r.get("nonfinite_pixels") or 0),
            '"precision":%s' % (json.dumps(r["precision"]) if isinstance(r.get("precision"), str) else "null")]))
    model = doc.get("model") or {}
    print('{"model":{"name":%s,"sha256":%s},"request_id":%s,"server":%s,"results":[%s]}' % (
        json.dumps(model.get("name") or "", ensure_ascii=False), json.dumps(model.get("sha256") or ""),
        json.dumps(doc.get("request_id") or "", ensure_ascii=False), json.dumps(doc["server"]), ",".join(rows)))


def _csv_field(s):
    return '"%s"' % s.replace('"', '""') if any(c in s for c in ',"\n\r') else s


def _g(x, fmt="%.9g"):
    return fmt % x if isinstance(x, (int, float)) else fmt % math.nan


def _print_csv(doc):
    print("name,continue_score,stop_probability,decision,threshold,logit,rms,nonfinite_pixels,model,model_sha256")
    model = doc.get("model") or {}
    for r in doc["results"]:
        rms = r.get("rms")
        print("%s,%s,%s,%s,%s,%s,%s,%d,%s,%s" % (
            _csv_field(r.get("name", "")), _g(r.get("continue_score")), _g(r.get("stop_probability")),
            "stop" if r.get("decision") == "stop" else "continue", _g(r.get("threshold")), _g(r.get("logit")),
            _g(rms) if isinstance(rms, (int, float)) else "", int(r.get("nonfinite_pixels") or 0),
            _csv_field(model.get("name") or ""), model.get("sha256") or ""))


def _print_table(doc):
    model = doc.get("model") or {}
    print("# model %s (sha256 %s), request %s, server %s" % (model.get("name") or "", model.get("sha256") or "",
                                                             doc.get("request_id") or "", doc["server"]))
    print("%-40s %14s %16s %9s %9s" % ("NAME", "CONTINUE_SCORE", "STOP_PROBABILITY", "DECISION", "THRESHOLD"))
    for r in doc["results"]:
        print("%-40s %14.6f %16.6f %9s %9.3g" % (r.get("name", ""), r.get("continue_score", math.nan),
                                                 r.get("stop_probability", math.nan),
                                                 "stop" if r.get("decision") == "stop" else "continue",
                                                 r.get("threshold", math.nan)))


def _cmd_models(kw, json_out):
    try:
        _, data = stopcal._exchange("/v1/models", **kw)
    except stopcal.StopcalError as e:
        print("stopcal: %s" % e, file=sys.stderr)
        return 1
    if json_out:
        sys.stdout.write(data.decode("utf-8", "replace") + "\n")
        return 0
    try:
        models = json.loads(data)["models"]
        assert isinstance(models, list)
    except Exception:  # noqa: BLE001 - anything but a list of models is "not understood"
        print("stopcal: the server's model list is not understood", file=sys.stderr)
        return 1
    print("%-20s %-8s %-10s %-16s %-7s %s" % ("NAME", "DEFAULT", "INPUT_SIZE", "PROFILE", "BACKEND", "SHA256"))
    for m in models:
        def s(k):
            v = m.get(k) if isinstance(m, dict) else None
            return v if isinstance(v, str) else "?"
        size = m.get("input_size") if isinstance(m, dict) else None
        print("%-20s %-8s %-10d %-16s %-7s %s" % (s("name"), "yes" if m.get("default") is True else "no",
                                                  size if isinstance(size, int) else 0, s("profile"), s("backend"),
                                                  s("sha256")))
    return 0


def _cmd_health(kw):
    any_ready = False
    for base in stopcal.urls(kw.get("url")):
        state, why = stopcal.server_health(base, **kw)
        print("%s %s%s" % (base, state, ": " + why if state == "unreachable" else ""))
        any_ready |= state == "ready"
    if not any_ready:
        print("stopcal: no server is ready", file=sys.stderr)
    return 0 if any_ready else 1


def _cmd_explain(kw, image, out, all_heads, rollout, model, threshold):
    """As cmd_explain in client/stopcal_main.c: the format follows OUT's extension."""
    fmt = "json"
    if out is not None:
        ext = os.path.splitext(out)[1].lower()
        if ext in (".fits", ".fit", ".fts"):
            fmt = "fits"
        elif ext == ".png":
            fmt = "png"
        elif ext != ".json":
            print("stopcal: explain -o %s: name a .fits, .png or .json file" % out, file=sys.stderr)
            return 1
    try:
        # raw bytes whatever the format: the C command writes what the server sent
        data = stopcal.explain(image, format=fmt, heads="all" if all_heads else "mean", rollout=rollout,
                               model=model or "", threshold=threshold, _raw=True, **kw)
    except stopcal.StopcalError as e:
        print("stopcal: %s: %s" % (e.kind, e), file=sys.stderr)
        return 1
    try:
        if out is None:
            sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
            sys.stdout.flush()
        else:
            with open(out, "wb") as f:
                f.write(data)
    except OSError:
        print("stopcal: cannot write %s" % (out or "stdout"), file=sys.stderr)
        return 1
    if out is not None:
        print("stopcal: %s: %s map written to %s (%d bytes)" % (image, "rollout" if rollout else "attention", out,
                                                                 len(data)), file=sys.stderr)
    return 0


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    fail_rc = 2 if "should-stop" in argv else 1  # should-stop reports errors as 2, option errors too
    try:
        opts, args = getopt.gnu_getopt(argv, "o:", LONG)
    except getopt.GetoptError as e:
        print("stopcal: %s" % e, file=sys.stderr)
        sys.stderr.write(USAGE)
        return fail_rc
    url_list, kw = [], {}
    model = threshold = None
    json_out = csv_out = local = rollout = all_heads = False
    out = None
    for o, v in opts:
        if o == "--url":
            if len(url_list) == 64:
                print("stopcal: too many --url", file=sys.stderr)
                return fail_rc
            url_list.append(v)
        elif o == "--model":
            model = v
        elif o == "--threshold":
            t = _number(v)
            if t is None or not 0 <= t <= 1:
                print("stopcal: --threshold must be a number in [0, 1], not '%s'" % v, file=sys.stderr)
                return fail_rc
            threshold = t
        elif o in ("--timeout", "--connect-timeout"):
            t = _number(v)
            if t is None or not 0 < t < 1e6:
                print("stopcal: %s must be a positive number of seconds, not '%s'" % (o, v), file=sys.stderr)
                return fail_rc
            kw["timeout" if o == "--timeout" else "connect_timeout"] = t
        elif o == "--retries":
            t = _number(v)
            if t is None or not 0 <= t <= 100 or t != int(t):
                print("stopcal: --retries must be an integer in [0, 100], not '%s'" % v, file=sys.stderr)
                return fail_rc
            kw["retries"] = int(t)
        elif o == "--api-key-file":
            kw["api_key_file"] = v
        elif o == "--local-preprocess":
            local = True
        elif o == "--json":
            json_out = True
        elif o == "--csv":
            csv_out = True
        elif o in ("-o", "--output"):
            out = v
        elif o == "--rollout":
            rollout = True
        elif o == "--heads":
            if v not in ("mean", "all"):
                print("stopcal: --heads must be mean or all, not '%s'" % v, file=sys.stderr)
                return fail_rc
            all_heads = v == "all"
        elif o == "--help":
            sys.stdout.write(USAGE)
            return 0
        elif o == "--version":
            print("stopcal %s" % stopcal.__version__)
            return 0
    if not args:
        sys.stderr.write(USAGE)
        return 1
    cmd, files = args[0], args[1:]
    if not kw.get("api_key_file") and os.environ.get("STOPCAL_API_KEY_FILE"):
        kw["api_key_file"] = os.environ["STOPCAL_API_KEY_FILE"]
    is_predict, is_stop = cmd == "predict", cmd == "should-stop"
    is_explain = cmd == "explain"
    if cmd not in ("predict", "should-stop", "explain", "health", "models"):
        print("stopcal: unknown command '%s' (predict, should-stop, explain, health, models)" % cmd, file=sys.stderr)
        return 1
    if is_explain and len(files) != 1:
        print("stopcal: explain takes exactly one FITS file (and -o OUT.fits|OUT.png|OUT.json)", file=sys.stderr)
        return 1
    if (out is not None or rollout or all_heads) and not is_explain:
        print("stopcal: -o, --rollout and --heads go with explain", file=sys.stderr)
        return fail_rc
    if is_stop and len(files) != 1:
        print("stopcal: should-stop takes exactly one FITS file", file=sys.stderr)
        return 2
    if is_predict and not files:
        print("stopcal: predict needs at least one FITS file", file=sys.stderr)
        return 1
    if not is_predict and not is_stop and not is_explain and files:
        print("stopcal: %s takes no arguments" % cmd, file=sys.stderr)
        return 1
    if json_out and csv_out:
        print("stopcal: --json and --csv are exclusive", file=sys.stderr)
        return fail_rc
    if local:
        print("stopcal: --local-preprocess needs the C client (build/client/stopcal): this Python command "
              "sends the FITS files to the server, which preprocesses them", file=sys.stderr)
        return fail_rc
    try:
        kw["url"] = stopcal.urls(url_list or None)
        stopcal._token(None, kw.get("api_key_file"))  # an unreadable key file fails before any request
    except stopcal.StopcalError as e:
        print("stopcal: %s" % e, file=sys.stderr)
        return fail_rc
    if is_explain:
        return _cmd_explain(kw, files[0], out, all_heads, rollout, model, threshold)
    if cmd == "health":
        return _cmd_health(kw)
    if cmd == "models":
        return _cmd_models(kw, json_out)
    try:
        # The C command never reads $STOPCAL_MODEL; "" keeps the library from doing so.
        doc = stopcal.predict_full(files, model=model or "", threshold=threshold, **kw)
    except stopcal.StopcalError as e:
        print("stopcal: %s: %s" % (e.kind, e), file=sys.stderr)
        return fail_rc
    if is_stop:
        if len(doc["results"]) != 1:
            print("stopcal: expected one result, got %d" % len(doc["results"]), file=sys.stderr)
            return 2
        r = doc["results"][0]
        if json_out:
            _print_json(doc)
        else:
            print("%s %s (continue_score %.6f, threshold %.3g)" % (
                r.get("name", ""), "stop" if r.get("decision") == "stop" else "continue",
                r.get("continue_score", math.nan), r.get("threshold", math.nan)))
        return 0 if r.get("decision") == "stop" else 1
    if json_out:
        _print_json(doc)
    elif csv_out:
        _print_csv(doc)
    else:
        _print_table(doc)
    return 0


def entry():
    """The console script: exit with main()'s status; a closed stdout (| head) is not an error."""
    try:
        rc = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        rc = 1
    sys.exit(rc)
