"""Our tests/ is collected as our own, never shadowed by the top-level ``tests`` package verl's wheel installs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


def test_this_module_is_ours_and_not_part_of_a_tests_package() -> None:
    assert Path(__file__).resolve().parent == TESTS_DIR
    assert not (TESTS_DIR / "__init__.py").exists(), "tests/__init__.py would make pytest import us as `tests`"
    assert not __name__.startswith("tests.")


def test_verls_tests_package_exists_and_is_not_ours() -> None:
    """The collision is real (verl ships `tests`), which is why pytest runs with --import-mode=importlib."""
    spec = importlib.util.find_spec("tests")
    if spec is not None and spec.origin:
        assert Path(spec.origin).resolve().parent != TESTS_DIR


def test_pytest_collects_every_test_file_of_ours() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(TESTS_DIR)],
        cwd=TESTS_DIR.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected_files = {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}
    ours = {f"tests/{path.name}" for path in TESTS_DIR.glob("test_*.py")}
    assert ours == collected_files
