"""Every truncation of every example spec in `specs/` → a `ModelSpec` or a located `SpecError` from
`load_spec`, and exit code 0 or 2 from `deconvc validate` (the weights file, if any, sits next to
the spec). Exhaustive, not random: one test per example file, every byte length from 0 to its size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import deconv_compiler as dc
from tests.fuzz.checks import assert_clean_exit, assert_good_spec_error, invoke
from tests.fuzz.limits import time_limit
from tests.fuzz.spec_strategies import EXAMPLE_SPEC_FILES, SPECS_DIR


@pytest.mark.parametrize("spec_file", EXAMPLE_SPEC_FILES, ids=lambda p: p.name)
def test_every_prefix_of_an_example_spec(spec_file: Path, tmp_path: Path) -> None:
    text = spec_file.read_bytes()
    for npz in SPECS_DIR.glob("*.npz"):
        (tmp_path / npz.name).write_bytes(npz.read_bytes())
    target = tmp_path / spec_file.name
    for end in range(len(text) + 1):
        target.write_bytes(text[:end])
        with time_limit(f"prefix {end}"):
            try:
                dc.load_spec(target)
            except dc.SpecError as error:
                assert_good_spec_error(error, f"{spec_file.name}[:{end}]")
            result = invoke(["validate", str(target)])
        assert_clean_exit(result, f"validate {spec_file.name}[:{end}]")
