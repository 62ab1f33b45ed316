# SPDX-License-Identifier: MIT
"""make install puts the package where /usr/bin/python3 finds it, under DESTDIR and PREFIX."""
import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("prefix, site", [
    ("/usr/local", f"/usr/local/lib/python{sysconfig.get_python_version()}/dist-packages"),
    ("/usr", "/usr/lib/python3/dist-packages"),
])
def test_make_install_puts_an_importable_package_on_the_interpreters_path(tmp_path, prefix, site):
    if not (ROOT / "Makefile").exists():
        pytest.skip("not run from the source tree")
    subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={tmp_path}", f"PREFIX={prefix}"],
                   check=True, stdout=subprocess.DEVNULL)
    assert site in sys.path  # where this interpreter looks, without PYTHONPATH
    installed = tmp_path / site.lstrip("/")
    out = subprocess.run([sys.executable, "-c", "import shmq; print(shmq.__file__, shmq.Queue)"],
                         env={**os.environ, "PYTHONPATH": str(installed)}, cwd=str(tmp_path),
                         check=True, capture_output=True, text=True).stdout
    assert out.startswith(str(installed / "shmq" / "__init__.py"))
