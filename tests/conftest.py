import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("GAGAVATAR_REALDATA", ROOT.parent / "shared" / "realdata"))
REFERENCE = Path(os.environ.get("GAGAVATAR_REFERENCE", ROOT.parent / "shared" / "reference"))
TESTDATA = Path(__file__).resolve().parent / "data"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def realdata() -> Path:
    """../shared/realdata, or a skip saying why (a user's clone does not have it)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real-face test data not found at {REALDATA} (only CI and developers have it)")
    return REALDATA


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def pipeline_fixture() -> Path:
    """../shared/reference/pipeline_fixture (SPEC §10), or a skip saying why."""
    folder = REFERENCE / "pipeline_fixture"
    if not (folder / "expected.npz").is_file():
        pytest.skip(f"the reference pipeline fixture is not at {folder} (only CI and developers have it)")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on a busy 2-core machine two threads can make a frame 100x
    slower (the server does the same by default, see ``cpu_threads``)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def animator():
    """The bundled tiny model on the CPU, loaded once a module."""
    from gagavatar.reenact import Animator

    return Animator.load(device="cpu")
