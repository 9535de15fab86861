"""``python -m verl_spro.main_ppo [HYDRA ARGS...]``: verl's stock ``main_ppo`` with the SPRO plugin loaded explicitly.

The same command line as ``python -m verl.trainer.main_ppo`` (same Hydra config, same overrides). The difference:
the plugin is installed here, whatever ``VERL_USE_EXTERNAL_PLUGINS`` says, and the process exits before Hydra and
Ray when it is not in effect in verl (its hooks on ``need_reference_policy`` and ``validate_config`` are then
missing). The checks that need the config (``adv_estimator=spro`` on a supported verl with every hook in place,
``rollout.n >= 2``, the reference policy, a plugin policy that lets the Ray workers load it) run in verl's own
``validate_config``, before Ray starts.
"""

from __future__ import annotations

import sys

__all__ = ["main", "plugin_not_in_effect"]


def plugin_not_in_effect(verl_main: object) -> str | None:
    """Why the hooks ``main_ppo`` relies on to stop a bad SPRO run before Ray are not in ``verl_main``, or None."""
    missing = [
        name
        for name in ("need_reference_policy", "validate_config")
        if not hasattr(getattr(verl_main, name, None), "__verl_spro_wraps__")
    ]
    if not missing:
        return None
    from verl_spro.verl_hooks import hook_failures, verl_version

    why = "; ".join(f"{target}: {reason}" for target, reason in hook_failures().items()) or "not installed"
    return (
        f"verl-spro: the plugin is not in effect in verl {verl_version()}'s main_ppo ({', '.join(missing)} not "
        f"hooked: {why}); refusing to start"
    )


def main() -> None:
    """Load the plugin, check it took, then hand over to verl's ``main_ppo.main`` (Hydra reads ``sys.argv``)."""
    from verl_spro.verl_hooks import install

    install()
    from verl.trainer import main_ppo as verl_main

    problem = plugin_not_in_effect(verl_main)
    if problem is not None:
        print(problem, file=sys.stderr)
        raise SystemExit(2)
    verl_main.main()


if __name__ == "__main__":
    main()
