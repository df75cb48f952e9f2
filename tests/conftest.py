from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

LUME = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lume"


@pytest.fixture(scope="session")
def builtin():
    from causal_unlearn import load_model

    return load_model("olmo-tiny-bios", device="cpu")


@pytest.fixture(scope="session")
def world():
    from causal_unlearn import make_bios_world

    return make_bios_world()
