#!/usr/bin/env python3
"""A tiny random cortexchange-v3 model whose three channels have different mean/std, so the client's
local preprocessing must send all three planes (usage: make_v3_model.py REPO_ROOT OUTPUT)."""
import importlib.machinery
import importlib.util
import os
import sys

root, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(root, "models"))
loader = importlib.machinery.SourceFileLoader("genmodel", os.path.join(root, "models", "stopcal-genmodel"))
spec = importlib.util.spec_from_loader("genmodel", loader)
gen = importlib.util.module_from_spec(spec)
loader.exec_module(gen)
args = gen.build_parser().parse_args(["--embed-dim", "128", "--heads", "2", "--depth", "2", "--registers", "4",
                                      "--input-size", "42", "--profile", "cortexchange-v3", "--seed", "32",
                                      "--name", "client-v3", "-o", out])
cfg = gen.config_from_args(args)
cfg["preprocessing"]["mean"] = [0.485, 0.456, 0.406]
cfg["preprocessing"]["std"] = [0.229, 0.224, 0.225]
gen.sm.write_model(out, cfg, gen.random_tensors(cfg, args.seed), dtype=args.dtype)
