"""Never crash: whatever it is given, the compiler answers with a correct model or a clear error.

Hypothesis-driven properties, one module per input the compiler takes:

* `test_spec_mappings`: spec mappings (the Python API) → a model that matches the numpy reference,
  or a located `SpecError`; enough examples must really be compared.
* `test_spec_files`: spec files on the command line → `deconvc validate`/`compile` exit 0 or 2.
* `test_example_prefixes`: every truncation of every example spec in `specs/`.
* `test_keras_configs`: mutated saved-Keras configs → a model whose outputs match the numpy
  reference, or a located `KerasModelError`/`CompileError`.
* `test_keras_file_mutations`: structurally mutated `.h5`, `.keras` and `.weights.h5` files (links,
  virtual and external storage, dtypes, shapes, filters, zip methods, flipped bytes) → `deconvc
  validate` exits 0 or 2, reads nothing outside the file.
* `test_onnx_inputs`: structurally mutated ONNX files (input types and dims, external data locations,
  metadata, attributes, subgraphs, opsets, flipped bytes) → `deconvc inspect`/`run`/`bench` exit 0,
  2, or 1 with onnxruntime's own failure; external data outside the model's folder always refused.

Shared: `limits` (hypothesis profiles and example counts, per-example time and memory limits,
outcome tallies), `spec_strategies` (valid specs and their mutations), `checks` (what an error
and a CLI exit must look like, tolerances). `HYPOTHESIS_PROFILE=thorough python -m pytest
tests/fuzz` runs 10x the examples of the default "ci" profile, on a fresh random draw.
"""
