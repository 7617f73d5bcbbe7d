#!/usr/bin/env python3
"""facetselfcal's early-stopping use of cortExchange, written from the facts in issue 17 (not
facetselfcal's code): build the model once (TORCH_HOME, init_downloader with WebDAV arguments,
get_architecture("surf/TransferLearningV2"), the class with model_name and device="cpu"), treating
ImportError and SystemExit as "no model"; then one float(model.predict(model.prepare_data(path))[0])
per cycle on a relative path, 1.0 standing for "no model".

usage: pipeline_sequence.py CACHE IMAGE...   prints {"model": bool, "why": str, "scores": [...],
"module": the cortexchange file imported} as one JSON line"""
import json
import os
import sys

MODEL = "surf/dino_big_lora_tune_posclsreg_may_O2_aug_099"
ARCHITECTURE = "surf/TransferLearningV2"
NO_MODEL = 1.0


def build(cache, model_name=MODEL, **kwargs):
    from cortexchange.architecture import Architecture, get_architecture
    from cortexchange.wdclient import init_downloader

    os.environ["TORCH_HOME"] = os.path.realpath(cache)
    init_downloader(url="https://webdav.example.invalid/public.php/webdav/", login="someone",
                    password="not-a-password", cache=os.path.realpath(cache))
    cls = get_architecture(ARCHITECTURE)
    assert issubclass(cls, Architecture), cls
    return cls(device="cpu", model_name=model_name, **kwargs)


def build_or_none(cache, **kwargs):
    """(model, None), or (None, why) where the pipeline would go on without the network."""
    try:
        return build(cache, **kwargs), None
    except (ImportError, SystemExit) as e:
        return None, "%s: %s" % (type(e).__name__, e)


def score(model, image):
    if model is None:
        return NO_MODEL
    return float(model.predict(model.prepare_data(image))[0])


def main():
    cache, images = sys.argv[1], sys.argv[2:]
    model, why = build_or_none(cache)
    scores = [score(model, im) for im in images]
    mod = sys.modules.get("cortexchange")
    print(json.dumps({"model": model is not None, "why": why or "", "scores": scores,
                      "module": getattr(mod, "__file__", None)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
