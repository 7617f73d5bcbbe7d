"""python3 -m stopcal: the command-line client (stopcal.cli)."""
from stopcal.cli import entry

entry()
