"""The `deconvc` command line (installed as `deconv_compiler.cli`)."""
