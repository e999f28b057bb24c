"""`python -m deconv_compiler ...`: the `deconvc` command, for environments without its script on PATH."""

from deconv_compiler.cli.main import main

main(prog_name="deconvc")
