"""``python -m verl_spro.main_ppo [HYDRA ARGS...]``: verl's stock ``main_ppo`` with the SPRO plugin loaded explicitly.

The same command line as ``python -m verl.trainer.main_ppo`` (same Hydra config, same overrides). The difference:
the plugin is installed here, whatever ``VERL_USE_EXTERNAL_PLUGINS`` says, and the process exits before Hydra and
Ray when it is not in effect in verl (its hooks on ``need_reference_policy`` and ``validate_config`` are then
missing). The checks that need the config (``adv_estimator=spro`` on a supported verl with every hook in place,
``rollout.n >= 2``, the reference policy, a plugin policy that lets the Ray workers load it) run in verl's own
``validate_config``, before Ray starts.

The Ray job carries verl-spro itself (:func:`ship_plugin`), so that a Ray cluster whose nodes have verl but not
verl-spro runs ``adv_estimator=spro``: the package directory goes in the job's ``runtime_env`` ``py_modules`` and
``verl_spro.plugin`` in its ``VERL_USE_EXTERNAL_MODULES`` (verl imports the modules listed there on ``import verl``,
in every worker). Once Ray is up and before verl's task runner starts, one task on every node checks that SPRO can
run there (:func:`check_nodes`); a node where it cannot (a verl outside the supported range, say) stops the run
with one line naming the node.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from verl_spro.output_files import one_line

__all__ = ["check_nodes", "main", "plugin_not_in_effect", "ship_plugin"]

#: verl imports the modules listed in this variable on ``import verl`` (``verl/__init__.py``), in every process.
MODULES_ENV = "VERL_USE_EXTERNAL_MODULES"
PLUGIN_MODULE = "verl_spro.plugin"
#: Seconds the per-node check may take (a node's first worker with the shipped ``runtime_env`` included).
NODE_CHECK_TIMEOUT_S = 600.0


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
    verl_main.run_ppo = shipping_run_ppo(verl_main.run_ppo)
    if not os.environ.get("HYDRA_FULL_ERROR"):  # Hydra's switch for the full traceback keeps its meaning
        for name in _REFUSING:
            setattr(verl_main, name, _refusing(getattr(verl_main, name)))
        _compact_hydra_errors_refuse()
    try:
        verl_main.main()
    except _Refused as refusal:
        print(f"verl-spro: main_ppo refused the config before Ray started: {refusal}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


#: The functions verl's ``main`` calls on the config before Ray starts (both hooked by verl-spro for ``spro``).
_REFUSING = ("need_reference_policy", "validate_config")


class _Refused(BaseException):
    """A config refused before Ray: a ``BaseException``, so that it passes through Hydra's job runner (which prints
    ~10 lines of "Error executing job" and traceback for an ``Exception``) to :func:`main`, which prints it last."""


def _compact_hydra_errors_refuse() -> None:
    """A command line Hydra cannot compose (an unknown key without ``+``, a bad value) ends, like a refused config,
    with its reason on one last line: Hydra would print it in several lines, then its HYDRA_FULL_ERROR hint.

    Hydra reports through ``hydra._internal.utils.run_and_report`` (private: when it is missing, Hydra's own
    report stays); only its compact errors are turned into :class:`_Refused`, anything else reaches it unchanged."""
    try:
        import hydra._internal.utils as hydra_utils
        from hydra.errors import CompactHydraException
    except ImportError:
        return
    original = getattr(hydra_utils, "run_and_report", None)
    if original is None or hasattr(original, "__verl_spro_wraps__"):
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        def compact_refused() -> Any:
            try:
                return func()
            except CompactHydraException as err:
                cause = err.__cause__
                raise _Refused(one_line(f"{err} {cause}" if cause is not None else str(err))) from err

        return original(compact_refused)

    run_and_report.__verl_spro_wraps__ = original  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def _refusing(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, with any exception it raises turned into :class:`_Refused` carrying its message on one line."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as err:
            # A ValueError/RuntimeError message says what is wrong; any other error is named by its type too.
            raise _Refused(one_line(err, with_type=not isinstance(err, (ValueError, RuntimeError)))) from err

    return wrapper


def _modules_list(value: Any) -> list[str]:
    return [m.strip() for m in str(value or "").split(",") if m.strip()]


def ship_plugin(config: Any, environ: dict[str, str] | None = None) -> None:
    """Add verl-spro to ``config.ray_kwargs.ray_init.runtime_env``, keeping every entry the user put there.

    ``py_modules`` gets this package's directory appended (the user's modules stay, in their order);
    ``env_vars.VERL_USE_EXTERNAL_MODULES`` becomes the user's value, then the driver's own ``VERL_USE_EXTERNAL_MODULES``
    (a driver-side setting reaches the workers of every node), then ``verl_spro.plugin``, without repeats. Every other
    ``runtime_env`` key is left alone; verl merges this ``runtime_env`` over its defaults in ``run_ppo``.
    """
    from omegaconf import OmegaConf, open_dict

    env = os.environ if environ is None else environ
    package_dir = str(Path(__file__).resolve().parent)
    key = "ray_kwargs.ray_init.runtime_env"

    def check(value: Any, kind: type, what: str) -> None:  # a bad runtime_env is refused, never silently replaced
        if value is not None and not (OmegaConf.is_config(value) and isinstance(OmegaConf.to_object(value), kind)):
            shape = "a list" if kind is list else "a mapping"
            raise _Refused(f"{what} must be {shape}, got {value!r}; fix the override")

    with open_dict(config):
        ray_init = config.ray_kwargs.setdefault("ray_init", {})
        check(ray_init.get("runtime_env"), dict, key)
        if ray_init.get("runtime_env") is None:
            ray_init.runtime_env = {}
        runtime_env = ray_init.runtime_env
        existing = runtime_env.get("py_modules")
        check(existing, list, f"{key}.py_modules")
        check(runtime_env.get("env_vars"), dict, f"{key}.env_vars")
        py_modules = list(OmegaConf.to_container(existing, resolve=True) if existing is not None else [])
        if not any(isinstance(m, str) and Path(m).resolve() == Path(package_dir) for m in py_modules):
            py_modules.append(package_dir)
        runtime_env.py_modules = py_modules
        if runtime_env.get("env_vars") is None:
            runtime_env.env_vars = {}
        modules = _modules_list(runtime_env.env_vars.get(MODULES_ENV))
        for module in [*_modules_list(env.get(MODULES_ENV)), PLUGIN_MODULE]:
            if module not in modules:
                modules.append(module)
        runtime_env.env_vars[MODULES_ENV] = ",".join(modules)


def _node_report() -> dict[str, Any]:
    """Runs in a Ray worker on one node, with the job's ``runtime_env``: can SPRO run here, and from where?"""
    report: dict[str, Any] = {"hostname": os.uname().nodename, "verl": "not importable", "plugin_file": None}
    try:
        import verl  # imports verl_spro.plugin through the shipped VERL_USE_EXTERNAL_MODULES
    except Exception as err:
        report["problem"] = f"verl does not import ({type(err).__name__}: {err})"
        return report
    import verl_spro
    from verl_spro.verl_hooks import spro_unavailable

    report.update(verl=str(getattr(verl, "__version__", "?")), plugin_file=verl_spro.__file__)
    report["problem"] = spro_unavailable()
    return report


def _node_label(node: dict[str, Any], hostname: str) -> str:
    # The launchers give every `ray start` a `spro_node:<name>` resource (the SLURM / host name).
    names = [key.split(":", 1)[1] for key in node.get("Resources", {}) if key.startswith("spro_node:")]
    name = names[0] if names else hostname or node.get("NodeManagerHostname", "?")
    return f"{name} ({node.get('NodeManagerAddress', '?')})"


def check_nodes(timeout_s: float = NODE_CHECK_TIMEOUT_S) -> str | None:
    """One task per alive Ray node, with the job's ``runtime_env``: None when SPRO can run on every node, else one line.

    Needs a connected Ray (``ray.init`` done). Prints one line per node: where verl-spro was loaded from there.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0, max_retries=0)(_node_report)
    refs = {
        n["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
        ).remote()
        for n in nodes
    }
    for node in nodes:
        try:
            report = ray.get(refs[node["NodeID"]], timeout=timeout_s)
        except Exception as err:  # the runtime_env could not be set up there, the node died, or the timeout
            detail = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            return (
                f"verl-spro: Ray node {_node_label(node, '')}: the per-node check failed "
                f"({type(err).__name__}: {detail}); stopping before the rollout"
            )
        label = _node_label(node, report["hostname"])
        if report["problem"] is not None:
            return f"verl-spro: Ray node {label}: {report['problem']}; stopping before the rollout"
        print(f"verl-spro: Ray node {label}: verl {report['verl']}, verl-spro from {report['plugin_file']}", flush=True)
    return None


class _NodesCheckedFirst:
    """verl's task-runner class for ``run_ppo``, whose ``remote``/``options`` run ``checks`` first (by default
    :func:`check_nodes`); the first that returns a reason stops the run with it."""

    def __init__(self, runner_class: Any, checks: Sequence[Callable[[], str | None]] = (check_nodes,)) -> None:
        self._runner_class = runner_class
        self._checks = tuple(checks)

    def _checked(self) -> Any:
        for check in self._checks:
            problem = check()
            if problem is not None:
                print(problem, file=sys.stderr, flush=True)
                raise SystemExit(2)
        return self._runner_class

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._checked().remote(*args, **kwargs)

    def options(self, *args: Any, **kwargs: Any) -> Any:
        return self._checked().options(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner_class, name)


def shipping_run_ppo(run_ppo: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap verl's ``run_ppo``: :func:`ship_plugin` on the config; before the task runner, the cluster's resources
    (:func:`verl_spro.resources.cluster_problem`) and, for spro, :func:`check_nodes`."""

    @functools.wraps(run_ppo)
    def wrapper(config: Any, task_runner_class: Any, *args: Any, **kwargs: Any) -> Any:
        ship_plugin(config)
        from verl_spro.dataproto_adapter import trains_with_spro
        from verl_spro.resources import cluster_problem

        # Resources first: a cluster that cannot hold the workers would hang verl's task runner forever.
        checks: list[Callable[[], str | None]] = [functools.partial(cluster_problem, config)]
        if trains_with_spro(config):
            checks.append(check_nodes)
        return run_ppo(config, _NodesCheckedFirst(task_runner_class, checks), *args, **kwargs)

    return wrapper


if __name__ == "__main__":
    main()
