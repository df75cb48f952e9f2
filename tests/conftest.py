from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The real LUME benchmark lives in shared/ beside the checkout (never copied into the project).
LUME = Path(os.environ.get("LUME_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "lume"))
if not (LUME / "forget.jsonl").is_file():
    raise RuntimeError(f"the LUME files are not at {LUME}; set LUME_DIR to the folder with forget.jsonl and retain.jsonl")


@pytest.fixture(scope="session")
def builtin():
    from causal_unlearn import load_model

    return load_model("olmo-tiny-bios", device="cpu")


@pytest.fixture(scope="session")
def world():
    from causal_unlearn import make_bios_world

    return make_bios_world()
