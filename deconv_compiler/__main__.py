"""`python -m deconv_compiler ...`: the `deconvc` command, for environments without its script on PATH.
(The CLI lives in the top-level `cli/` folder, installed as `deconv_compiler.cli`: imported by name.)"""

import importlib

importlib.import_module("deconv_compiler.cli.main").main(prog_name="deconvc")
