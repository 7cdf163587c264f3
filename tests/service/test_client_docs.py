"""docs/CLIENT.md's Python examples, run as written against a real API and wake worker (only the
address is changed to the test server's)."""

import re
import subprocess
import sys
from pathlib import Path

from tests.service.test_client import Waker
from tests.service.up import serve_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLIENT.md"


def test_every_python_example_runs(settings, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 2
    with serve_app(settings) as base, Waker(settings):
        for block in blocks:
            code = block.replace("http://127.0.0.1:8000", base)
            run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=120)
            assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "seqs.json").read_text() == '{"cam-1": 101}'  # 100 frames learned and one corrected
