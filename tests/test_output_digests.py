"""The same spec and options give the same bytes: in any process, and as before.

`tests/golden/spec_digests.json` holds the SHA-256 of every example spec compiled with a few
option sets, recorded before the one-graph redesign and unchanged by it. Each is compiled in two
fresh processes with different PYTHONHASHSEED (set ordering, dict order from hashing and object
addresses must not leak into the file) and must match the digest.

A deliberate change of the output (a new node name, another metadata key) changes the digests:
regenerate them with `python -m tests.test_output_digests > tests/golden/spec_digests.json` and
say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).with_name("golden") / "spec_digests.json"


def _options(variant: str) -> dict[str, Any]:
    """`target=cuda` → {"target": "cuda"}; "" → {}; numbers become ints."""
    if not variant:
        return {}
    key, value = variant.split("=")
    return {key: int(value) if value.isdigit() else value}


def digests(variants: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """Digest of each spec in specs/ compiled with each variant's options, in this process."""
    import deconv_compiler as dc

    found: dict[str, dict[str, str]] = {}
    for name, names in sorted(variants.items()):
        graph = dc.spec_graph(dc.load_spec(ROOT / "specs" / name))
        for variant in names:
            model = dc.compile_model(graph, dc.CompileOptions(**_options(variant)))
            found.setdefault(name, {})[variant] = hashlib.sha256(model.SerializeToString()).hexdigest()
    return found


def _in_fresh_process(hash_seed: str, variants: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    code = (
        "import json, sys; from tests.test_output_digests import digests; "
        "print(json.dumps(digests(json.loads(sys.argv[1]))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(variants)],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, dict[str, str]] = json.loads(result.stdout)
    return found


def test_every_example_spec_compiles_to_its_recorded_bytes_in_any_process() -> None:
    golden = json.loads(GOLDEN.read_text())
    examples = sorted(p.name for p in (ROOT / "specs").glob("*") if p.suffix in (".yaml", ".json"))
    assert sorted(golden) == examples, "every example spec has recorded digests (and only those)"
    variants = {name: sorted(recorded) for name, recorded in golden.items()}
    first, second = (_in_fresh_process(seed, variants) for seed in ("1", "4242"))
    assert first == second, "the output depends on the process (hash seed)"
    changed = [
        f"{name} [{v or 'defaults'}]"
        for name in golden
        for v in golden[name]
        if first[name][v] != golden[name][v]
    ]
    assert not changed, f"the output changed for: {', '.join(changed)}"


if __name__ == "__main__":  # regenerate the golden file (see the module docstring)
    names = sorted(p.name for p in (ROOT / "specs").glob("*") if p.suffix in (".yaml", ".json"))
    print(
        json.dumps(
            digests({n: ["", "opset=11", "seed=5", "strategy=native", "target=cuda"] for n in names}),
            indent=2,
            sort_keys=True,
        )
    )
