"""Our tests/ is collected as our own, never shadowed by the top-level ``tests`` package verl's wheel installs."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


def verls_top_level_tests_modules() -> set[str]:
    """Module names directly under the ``tests`` package that verl's wheel installs (read from its RECORD)."""
    files = importlib.metadata.files("verl") or []
    return {f.stem for f in files if len(f.parts) == 2 and f.parts[0] == "tests" and f.suffix == ".py"}


def test_this_module_is_ours_and_tests_is_not_a_package() -> None:
    assert not (TESTS_DIR / "__init__.py").exists(), "tests/__init__.py would make pytest import us as `tests`"
    assert Path(sys.modules[__name__].__file__).resolve().parent == TESTS_DIR


def test_no_test_file_name_is_also_a_module_of_verls_tests_package() -> None:
    """pytest's importlib mode first tries a plain `import tests.<name>`: a same-named module in verl's `tests`
    package would then be collected instead of ours, silently."""
    theirs = verls_top_level_tests_modules()
    assert "__init__" in theirs, "verl's wheel no longer ships a top-level `tests` package: revisit this test"
    ours = {path.stem for path in TESTS_DIR.glob("*.py")}
    assert not ours & theirs, f"rename these test files: {sorted(ours & theirs)}"


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
