"""The plain install: what the plugin needs at training time, no plotting stack.

verl-spro is built as a wheel from a copy of its sources and installed with ``pip --no-deps`` into a fresh venv that
sees this environment's packages (verl, torch, ...) through a ``.pth``, minus matplotlib and minus this checkout's
editable verl-spro: the venv is what a training image with verl gets from ``pip install verl-spro``. In it, verl
loads the plugin from the wheel's entry point and a spro advantage goes through verl's real ``compute_advantage``;
matplotlib is absent, and a tool that needs it says in one line what to install.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Left out of the new venv's view of this environment: the plotting stack and this checkout's verl-spro.
HIDDEN = ("matplotlib", "mpl_toolkits", "pylab", "__editable__.verl_spro", "__editable___verl_spro", "verl_spro")


def _run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lean")
    # This environment's site-packages as a folder of links, without what the plain install must not need.
    base = root / "base-site"
    base.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        if not entry.name.startswith(HIDDEN):
            (base / entry.name).symlink_to(entry)
    venv = root / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    venv_site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (venv_site / "base_site.pth").write_text(f"import site; site.addsitedir({str(base)!r})\n")
    # The sources a wheel is built from (not the checkout itself: a build would leave build/ and egg-info in it).
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "verl_spro", src / "verl_spro", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python]
    install = _run(*pip, "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", src)
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def test_the_plain_install_trains_spro_through_verl_without_matplotlib(lean_venv: Path) -> None:
    script = textwrap.dedent(
        """
        import importlib.metadata, importlib.util, sys
        import numpy as np, torch
        import verl  # loads the plugin through the installed wheel's verl.plugins entry point
        from omegaconf import OmegaConf
        from verl import DataProto
        from verl.trainer.ppo import ray_trainer
        import verl_spro
        from verl_spro.estimator import compute_spro_advantage

        assert importlib.util.find_spec("matplotlib") is None, "matplotlib is importable"
        assert verl_spro.__file__.startswith(sys.prefix), verl_spro.__file__
        gen = torch.Generator().manual_seed(0)
        mask = (torch.arange(16).unsqueeze(0) < torch.randint(4, 17, (8,), generator=gen).unsqueeze(1)).long()
        tensors = {
            "token_level_rewards": torch.zeros(8, 16).index_put_((torch.arange(8), mask.sum(1) - 1), torch.rand(8)),
            "response_mask": mask,
            "old_log_probs": -torch.rand(8, 16, generator=gen),
            "ref_log_prob": -torch.rand(8, 16, generator=gen),
        }
        uid = np.array([f"p{i // 4}" for i in range(8)], dtype=object)
        data = DataProto.from_dict(tensors=tensors, non_tensors={"uid": uid})
        config = OmegaConf.create({"adv_estimator": "spro", "spro": {"beta": 0.5}})
        out = ray_trainer.compute_advantage(data, "spro", config=config)
        expected = compute_spro_advantage(
            tensors["token_level_rewards"], mask, tensors["old_log_probs"], tensors["ref_log_prob"], uid, beta=0.5
        )
        torch.testing.assert_close(out.batch["advantages"], expected.advantages)
        assert out.meta_info["spro_metrics"]["spro/msa_abs_mean"] > 0
        plain = [r for r in importlib.metadata.requires("verl-spro") if "extra ==" not in r]
        print("PLAIN", ";".join(plain))
        """
    )
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    result = _run(lean_venv / "bin" / "python", "-c", script, env=env, cwd=lean_venv.parent)  # not the checkout
    assert result.returncode == 0, result.stderr[-3000:]
    plain = result.stdout.split("PLAIN ", 1)[1].strip().split(";")
    names = {r.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower() for r in plain}
    assert "matplotlib" not in names
    # Nothing beyond verl's own dependencies (omegaconf comes with hydra-core) and torch, which verl expects.
    verl_deps = {r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].split("!")[0].strip().lower()
                 for r in importlib.metadata.requires("verl")}  # fmt: skip
    assert names - verl_deps <= {"verl", "torch", "omegaconf"}, names - verl_deps


def test_a_tool_without_the_tools_extra_says_what_to_install(lean_venv: Path, tmp_path: Path) -> None:
    result = _run(lean_venv / "bin" / "verl-spro", "bench", "--quick", "--out", tmp_path / "bench")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "verl-spro bench needs matplotlib, which the plain install leaves out (it has what training needs): "
        'pip install "verl-spro[tools]"'
    ]
    assert not (tmp_path / "bench").exists()
