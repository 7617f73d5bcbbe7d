"""Moved to models/convert/reference_preprocess.py (the converter's verify step uses it, and product
code does not import test code). This name stays for one wave so work in flight keeps running."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "convert"))
from reference_preprocess import *  # noqa: E402,F401,F403
