"""The examples' run.sh and the README's commands run as written after the README's set-up: no bare `verl-spro`
that is not on PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(REPO.glob("examples/*/run.sh"))
#: A PATH without any environment's bin directory: what a fresh shell without an activated venv has.
BARE_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"


def _verl_spro_script() -> str:
    script = Path(sys.executable).parent / "verl-spro"
    assert script.exists(), "the test runs in the environment verl-spro is installed in"
    return str(script)


def _fake_clone(tmp_path: Path, with_venv: bool) -> Path:
    """A copy of examples/ in a clone-like tree; with_venv: `.venv/bin` holds this environment's verl-spro."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "examples", clone / "examples")
    if with_venv:
        bin_dir = clone / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "verl-spro").symlink_to(_verl_spro_script())
        (bin_dir / "python").symlink_to(sys.executable)
    return clone


def _raw_data(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [{"question": f"What is {i}+1?", "answer": f"#### {i + 1}"} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), raw / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:4]), raw / "validation.parquet")
    return raw


def test_every_example_uses_the_environment_helper() -> None:
    assert EXAMPLES
    for script in EXAMPLES:
        text = script.read_text()
        assert 'examples_use_verl_spro_env "${repo_root}"' in text, script
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_data_stage_runs_with_the_clones_venv_and_no_activated_environment(tmp_path: Path) -> None:
    clone = _fake_clone(tmp_path, with_venv=True)
    data = tmp_path / "data"
    env = {"PATH": BARE_PATH, "HOME": str(tmp_path), "STAGE": "data", "RAW_DIR": str(_raw_data(tmp_path)),
           "DATA_DIR": str(data)}  # fmt: skip
    result = subprocess.run(
        ["bash", str(clone / "examples/spro_math_7b/run.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert pq.ParquetFile(data / "train.parquet").metadata.num_rows == 12
    assert pq.ParquetFile(data / "validation.parquet").metadata.num_rows == 4


@pytest.mark.parametrize("script", [path.relative_to(REPO) for path in EXAMPLES], ids=str)
def test_without_verl_spro_anywhere_the_example_says_what_to_do(tmp_path: Path, script: Path) -> None:
    clone = _fake_clone(tmp_path, with_venv=False)
    env = {"PATH": BARE_PATH, "HOME": str(tmp_path), "STAGE": "check"}
    result = subprocess.run(["bash", str(clone / script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 127
    assert "command not found" not in result.stderr
    assert result.stderr.startswith("verl-spro is not installed here: activate the environment")
    assert "scripts/setup_cpu.sh" in result.stderr


def test_readme_calls_verl_spro_through_the_venv_unless_the_block_installs_it() -> None:
    """After `scripts/setup_cpu.sh` nothing is activated: a bare `verl-spro` in a README command would be 'command
    not found'. A block that pip-installs verl-spro into the active environment may call it bare."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks
    bare = []
    for block in blocks:
        if "pip install" in block:
            continue
        for line in block.splitlines():
            command = line.split("#", 1)[0]
            if re.search(r"(^|[\s;&|(])verl-spro(\s|$)", command):
                bare.append(line)
    assert not bare, f"call .venv/bin/verl-spro (or activate the venv first): {bare}"
    assert "source .venv/bin/activate" in readme


def test_examples_find_verl_spro_on_path_first(tmp_path: Path) -> None:
    clone = _fake_clone(tmp_path, with_venv=False)
    data = tmp_path / "data"
    path = f"{os.path.dirname(_verl_spro_script())}:{BARE_PATH}"
    env = {"PATH": path, "HOME": str(tmp_path), "STAGE": "data", "RAW_DIR": str(_raw_data(tmp_path)),
           "DATA_DIR": str(data)}  # fmt: skip
    result = subprocess.run(
        ["bash", str(clone / "examples/spro_math_7b/run.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (data / "train.parquet").exists()
