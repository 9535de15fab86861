"""What verl-spro costs a process that imports verl, and the version gate: no import-time probe, the reference-policy
hook imports nothing, development builds inside the supported range count, and the CPU backend changes nothing
unless it is enabled (its patches checked like the SPRO hooks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from verl_spro.verl_hooks import SUPPORTED_VERL_RANGE, unsupported_verl


@pytest.mark.parametrize("version", ["0.9.1", "0.9.2.dev0", "0.9.1+local", "0.9.7.post1", "0.9.3rc1"])
def test_builds_inside_the_supported_range_are_accepted(version: str) -> None:
    assert unsupported_verl(version) is None


@pytest.mark.parametrize("version", ["0.9.0", "0.9.1rc1", "0.10.0.dev0", "0.10.0", "1.0.0", "unknown", ""])
def test_builds_outside_the_supported_range_are_refused_in_one_line(version: str) -> None:
    assert unsupported_verl(version) == (
        f"verl {version} is not supported by verl-spro (supported: verl{SUPPORTED_VERL_RANGE})"
    )


def _python(script: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_MODULES"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**environ, **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "stderr": result.stderr}


def test_importing_verl_runs_no_estimator_and_the_reference_hook_imports_no_trainer() -> None:
    state = _python(
        """
        import json, sys
        import verl
        from verl.trainer.ppo import core_algos
        calls = []
        original = core_algos.get_adv_estimator_fn
        core_algos.get_adv_estimator_fn = lambda name: calls.append(name) or original(name)
        from verl.trainer.ppo import ray_trainer  # the hooks run now
        from verl.trainer.ppo.utils import need_reference_policy
        from omegaconf import OmegaConf
        trainers = [m for m in ("verl.trainer.ppo.v1.trainer_base", "verl.trainer.ppo.v1.utils") if m in sys.modules]
        config = OmegaConf.create({"algorithm": {"adv_estimator": "spro"}, "actor_rollout_ref": {"actor": {}}})
        print(json.dumps({
            "estimator_calls": calls,
            "wrapped": hasattr(ray_trainer.compute_advantage, "__verl_spro_wraps__"),
            "needs_ref": need_reference_policy(config),
            "new_trainer_modules": [m for m in ("verl.trainer.ppo.v1.trainer_base", "verl.trainer.ppo.v1.utils")
                                    if m in sys.modules and m not in trainers],
        }))
        """
    )
    assert state["estimator_calls"] == []  # nothing ran verl's compute_advantage while ray_trainer was imported
    assert state["wrapped"] and state["needs_ref"]
    assert state["new_trainer_modules"] == []


_BACKEND_STATE = """
    import json, logging
    logging.basicConfig(level=logging.WARNING)
    import verl
    from verl.plugin.platform import get_platform
    import verl_spro.cpu_backend as backend
    from verl.workers.rollout import base
    print(json.dumps({
        "rollout": backend.ROLLOUT_NAME,
        "installed": backend.installed(),
        "platform": type(get_platform()).__name__,
        "adapter": (backend.ROLLOUT_NAME, "async") in base._ROLLOUT_REGISTRY,
    }))
"""


def test_the_cpu_backend_changes_nothing_unless_enabled() -> None:
    state = _python(_BACKEND_STATE)
    assert state["rollout"] == "hf_cpu"
    assert not state["installed"] and state["platform"] != "PlatformCPU" and not state["adapter"]
    enabled = _python(_BACKEND_STATE, VERL_USE_EXTERNAL_MODULES="verl_spro.cpu_backend")
    assert enabled["installed"] and enabled["platform"] == "PlatformCPU" and enabled["adapter"]


def test_the_cpu_backend_on_an_unsupported_verl_patches_nothing_and_says_why_in_one_line() -> None:
    script = _BACKEND_STATE.replace("    import verl\n", "    import verl\n    verl.__version__ = '0.11.0'\n", 1)
    import_script = script.replace("as backend\n", "as backend\n    backend.install()\n", 1)
    state = _python(import_script)
    assert state["installed"] and state["platform"] != "PlatformCPU" and not state["adapter"]
    errors = [line for line in state["stderr"].splitlines() if "the CPU route will not work" in line]
    assert errors and all(
        f"verl 0.11.0 is not supported by verl-spro (supported: verl{SUPPORTED_VERL_RANGE})" in line for line in errors
    )
    assert any("verl.plugin.platform" in line for line in errors)
