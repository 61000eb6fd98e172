"""MediaPipe's console noise (TF Lite, absl, protobuf) is silenced where it starts, and
GAGAVATAR_VERBOSE=1 brings it back. Run in subprocesses: the noise is written by native
code to file descriptor 2, which pytest's capture would hide either way."""
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

NOISE = re.compile(r"W0000|I0000|absl|GetPrototype|XNNPACK|inference_feedback")


def _run(args: list[str], verbose: bool, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GAGAVATAR_VERBOSE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if verbose:
        env["GAGAVATAR_VERBOSE"] = "1"
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("verbose", [False, True])
def test_native_stderr_silenced_unless_verbose(verbose, tmp_path):
    code = ("import os\n"
            "from gagavatar.tracking.landmarks import native_logs_silenced\n"
            "with native_logs_silenced():\n"
            "    os.write(2, b'native noise\\n')\n"
            "os.write(2, b'after\\n')\n")
    result = _run(["-c", code], verbose, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "after" in result.stderr  # fd 2 is back
    assert ("native noise" in result.stderr) == verbose


@pytest.mark.realdata
def test_tracking_console_is_quiet(realdata, tmp_path):
    args = ["-m", "gagavatar", "track", str(realdata / "monroe.jpg"), "--out", str(tmp_path / "tracked")]
    quiet = _run(args, False, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "frames tracked" in quiet.stdout
    noise = [line for line in (quiet.stdout + quiet.stderr).splitlines() if NOISE.search(line)]
    assert not noise, noise
    # the same command with GAGAVATAR_VERBOSE=1 shows MediaPipe's lines (so the check above can fail)
    loud = _run(args + ["--no-overlay"], True, tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert NOISE.search(loud.stderr), loud.stderr
