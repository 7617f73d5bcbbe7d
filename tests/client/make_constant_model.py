#!/usr/bin/env python3
"""A tiny random model whose logit is LOGIT for every image (head.fc2 weight 0, bias LOGIT), to show
what a confident answer becomes on its way to facetselfcal, and to carry aliases in the file
(usage: make_constant_model.py REPO_ROOT OUTPUT LOGIT NAME [ALIAS,...])."""
import importlib.machinery
import importlib.util
import os
import sys

import numpy as np

root, out, logit, name = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
aliases = sys.argv[5].split(",") if len(sys.argv) > 5 else []
sys.path.insert(0, os.path.join(root, "models"))
loader = importlib.machinery.SourceFileLoader("genmodel", os.path.join(root, "models", "stopcal-genmodel"))
spec = importlib.util.spec_from_loader("genmodel", loader)
gen = importlib.util.module_from_spec(spec)
loader.exec_module(gen)
args = gen.build_parser().parse_args(["--embed-dim", "128", "--heads", "2", "--depth", "1", "--input-size", "28",
                                      "--seed", "33", "--name", name, "-o", out])
cfg = gen.config_from_args(args)
if aliases:
    cfg["aliases"] = aliases
tensors = gen.random_tensors(cfg, args.seed)
w = tensors["head.fc2.weight"]
shape = (w() if callable(w) else w).shape
tensors["head.fc2.weight"] = np.zeros(shape, np.float32)
tensors["head.fc2.bias"] = np.full((1,), logit, np.float32)
gen.sm.write_model(out, cfg, tensors, dtype="F32")
