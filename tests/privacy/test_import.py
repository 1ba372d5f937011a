"""The privacy package stays light: no torch (nor Opacus) at import time."""

import subprocess
import sys


def test_import_does_not_load_torch():
    code = ("import sys, ffm_private.privacy as p; "
            "print('torch' in sys.modules, 'opacus' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]
