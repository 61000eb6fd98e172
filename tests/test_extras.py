"""Optional parts (extras): `pip install gagavatar` is the library and the CLI core; a missing
extra is one line naming the pip command, never a traceback."""
from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from gagavatar.cli import app
from gagavatar.system import MissingExtra, require


def test_require_names_the_extra():
    with pytest.raises(MissingExtra, match=r"the web app needs no_such_module_xyz, which is not installed: "
                                           r"pip install 'gagavatar\[app\]'"):
        require("no_such_module_xyz", "app", "the web app")


@pytest.mark.parametrize("module, extra, command", [
    ("lmdb", "reference", ["import-reference", "{tmp}/ref", "--out", "{tmp}/out"]),
    ("gradio", "app", ["app", "--port", "1"]),
])
def test_a_missing_extra_is_one_line(module, extra, command, tmp_path, monkeypatch):
    import pickle

    import numpy as np

    (tmp_path / "ref" / "img_lmdb").mkdir(parents=True)
    record = {"shapecode": np.zeros(300), "expcode": np.zeros(100), "posecode": np.zeros(6), "eyecode": np.zeros(6),
              "transform_matrix": np.eye(3, 4)}
    with open(tmp_path / "ref" / "optim.pkl", "wb") as f:
        pickle.dump({"clip_0": record}, f)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails, as if not installed
    for name in [m for m in sys.modules if m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    result = CliRunner().invoke(app, [c.format(tmp=tmp_path) for c in command])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"pip install 'gagavatar[{extra}]'" in lines[0]
