"""Preflight check of a verl training config, before it costs an allocation.

Composes exactly the config ``python -m verl.trainer.main_ppo [--config-path P --config-name N] overrides...``
would (verl's own ``ppo_trainer`` without ``--config-path``), then reports one line per check, OK/WARN/FAIL:
the estimator is registered, verl builds the reference policy (through verl-spro's hook) and no KL term is on,
``algorithm.spro.*`` is valid, every size verl counts or divides with (batch sizes, micro-batches, GPUs, nodes,
parallel sizes, ``rollout.n``) is an integer >= 1, the rollout and training engines import, the data file lists
are not empty and their files exist and have verl's columns, the model path is readable, enough GPUs are visible
on this node, the batch sizes divide the way verl needs, and verl's own ``validate_config`` passes.

With ``adv_estimator=spro``, a KL loss or in-reward KL is a WARN (legal, but not the paper's recipe and extra
work), as is a ``loss_agg_mode`` other than the paper's ``seq-mean-token-mean``.

``--cpu-only`` (or ``VERL_SPRO_CPU_ONLY=1``) downgrades the checks that need the GPU machine (engine imports,
GPU count) to WARN, for CI. Exit status: 1 if any check FAILs, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from verl_spro.output_files import one_line

OK, WARN, FAIL = "OK", "WARN", "FAIL"

#: Estimators that normalise within the group of samples of one prompt (need rollout.n >= 2).
GROUP_ESTIMATORS = frozenset({"spro", "grpo", "grpo_vectorized", "grpo_passk", "rloo", "rloo_vectorized", "opo"})
PAPER_LOSS_AGG_MODE = "seq-mean-token-mean"
CPU_ONLY_ENV = "VERL_SPRO_CPU_ONLY"
_REMOTE_PREFIXES = ("hdfs://", "s3://", "gs://", "http://", "https://")
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: Sizes verl counts or divides with: each must be an integer >= 1. These must be set ...
REQUIRED_SIZES = (
    "data.train_batch_size",
    "trainer.n_gpus_per_node",
    "trainer.nnodes",
    "trainer.total_epochs",
    "actor_rollout_ref.rollout.n",
    "actor_rollout_ref.actor.ppo_mini_batch_size",
    "actor_rollout_ref.rollout.tensor_model_parallel_size",
)
#: ... and these only where set (null means "unset" or "use the other key" in verl).
OPTIONAL_SIZES = (
    "data.val_batch_size",
    "data.max_prompt_length",
    "data.max_response_length",
    "trainer.total_training_steps",
    "actor_rollout_ref.actor.ppo_epochs",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.ref.ulysses_sequence_parallel_size",
    "actor_rollout_ref.rollout.pipeline_model_parallel_size",
    "actor_rollout_ref.rollout.data_parallel_size",
    "actor_rollout_ref.rollout.expert_parallel_size",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
)
#: Megatron parallel sizes, checked under actor/ref ``.megatron`` when that role's strategy is megatron.
MEGATRON_SIZES = (
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "context_parallel_size",
    "expert_model_parallel_size",
    "expert_tensor_parallel_size",
    "virtual_pipeline_model_parallel_size",
)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str


@dataclass
class Context:
    """What the checks share: the composed config and how strict to be about the GPU machine."""

    config: Any
    cpu_only: bool

    @property
    def gpu_fail(self) -> str:
        """The status of a missing GPU-side dependency: FAIL for a GPU run, WARN with ``--cpu-only``."""
        return WARN if self.cpu_only else FAIL

    @cached_property
    def bad_sizes(self) -> dict[str, str]:
        """``{key: problem}`` for every size that is not an integer >= 1 (see :func:`invalid_sizes`)."""
        return invalid_sizes(self.config)

    def sizes_unchecked(self, name: str) -> Check | None:
        """A WARN line for a check that needs the sizes, when some are invalid (they FAIL in ``sizes``)."""
        if not self.bad_sizes:
            return None
        return Check(name, WARN, f"not checked: invalid {', '.join(self.bad_sizes)} (see 'sizes')")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``verl-spro check``'s options."""
    parser.add_argument("--config-path", help="directory of the config, as main_ppo's --config-path (default: verl's)")
    parser.add_argument("--config-name", help="config name, as main_ppo's --config-name (default: ppo_trainer)")
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        default=os.environ.get(CPU_ONLY_ENV, "") not in ("", "0"),
        help=f"engine imports and GPU count only WARN (CI on a CPU machine; also {CPU_ONLY_ENV}=1)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, exactly as given to main_ppo (key=value)")


def run(args: argparse.Namespace) -> int:
    """Compose the config, run every check, print the table; 1 if anything FAILs."""
    checks = run_checks(args.config_path, args.config_name, list(args.overrides), cpu_only=args.cpu_only)
    print(format_table(checks))
    counts = {status: sum(c.status == status for c in checks) for status in (OK, WARN, FAIL)}
    print(f"\n{counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL")
    return 1 if counts[FAIL] else 0


def run_checks(
    config_path: str | None, config_name: str | None, overrides: list[str], cpu_only: bool = False
) -> list[Check]:
    """All checks for the config main_ppo would compose from these arguments."""
    import verl  # noqa: F401  (loads the verl.plugins entry points, ours included, as main_ppo does)

    from verl_spro.hydra_compose import compose_trainer_config

    source = f"{config_name or 'ppo_trainer'} from {config_path or 'verl.trainer.config'}"
    resolved = main_ppo_config_dir(config_path)
    if resolved is not None and not os.path.isdir(resolved):
        hint = ""
        if not os.path.isabs(config_path) and os.path.isdir(config_path):
            hint = f"; it is a folder here: pass it absolute, --config-path={os.path.abspath(config_path)}"
        return [
            Check(
                "config composes",
                FAIL,
                f"--config-path {config_path}: main_ppo (Hydra) takes a relative path from its own folder, "
                f"{resolved} is not a directory{hint}",
            )
        ]
    try:
        config = compose_trainer_config(resolved, config_name, overrides)
    except Exception as exc:
        return [Check("config composes", FAIL, f"{source}: {_one_line(exc)}")]

    ctx = Context(config=config, cpu_only=cpu_only)
    results = [Check("config composes", OK, source)]
    for check in CHECKS:
        try:
            results.extend(check(ctx))
        except Exception as exc:  # a check that crashes is a finding, not a reason to stop the others
            results.append(Check(check.__name__.removeprefix("check_").replace("_", " "), FAIL, _one_line(exc)))
    return results


def main_ppo_config_dir(config_path: str | None) -> str | None:
    """The folder ``python -m verl.trainer.main_ppo --config-path=config_path`` reads: Hydra takes a relative path
    from the folder of the file that declares ``@hydra.main`` (verl/trainer), not from the current directory."""
    if config_path is None or config_path.startswith("pkg://"):
        return config_path
    import verl.trainer.main_ppo as verl_main

    return os.path.normpath(os.path.join(os.path.dirname(os.path.realpath(verl_main.__file__)), config_path))


def format_table(checks: list[Check]) -> str:
    """Plain-text table, one aligned line per check."""
    status_width = len("STATUS")
    name_width = max([len("CHECK")] + [len(c.name) for c in checks])
    lines = [f"{'STATUS':<{status_width}}  {'CHECK':<{name_width}}  DETAIL"]
    lines += [f"{c.status:<{status_width}}  {c.name:<{name_width}}  {c.detail}" for c in checks]
    return "\n".join(lines)


_one_line = partial(one_line, with_type=True)  # a check's detail names the error type


def _estimator(config: Any) -> str:
    from verl_spro.dataproto_adapter import estimator_name

    return estimator_name(config.algorithm.adv_estimator)


def _is_spro(config: Any) -> bool:
    from verl_spro.dataproto_adapter import trains_with_spro

    return trains_with_spro(config)


# ---------------------------------------------------------------------------------------------------------------
# The checks: each takes the Context and yields Check lines.
# ---------------------------------------------------------------------------------------------------------------


def check_estimator(ctx: Context) -> Iterator[Check]:
    """``algorithm.adv_estimator`` is in verl's registry (``spro`` only when our plugin loaded)."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, get_adv_estimator_fn

    name = _estimator(ctx.config)
    try:
        fn = get_adv_estimator_fn(name)
    except ValueError:
        close = difflib.get_close_matches(name, list(ADV_ESTIMATOR_REGISTRY), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"registered: {', '.join(sorted(ADV_ESTIMATOR_REGISTRY))}"
        if name == "spro":
            hint = "the verl-spro plugin did not load: is verl-spro installed, VERL_USE_EXTERNAL_PLUGINS unset?"
        yield Check("estimator", FAIL, f"algorithm.adv_estimator={name!r} is not registered in verl; {hint}")
        return
    yield Check("estimator", OK, f"{name} -> {fn.__module__}.{fn.__qualname__}")


def check_reference_policy(ctx: Context) -> Iterator[Check]:
    """main_ppo's ``need_reference_policy`` is true for SPRO, and no KL term is on (the paper uses none)."""
    from verl.trainer.main_ppo import need_reference_policy

    config = ctx.config
    needed = bool(need_reference_policy(config))
    use_kl_loss = bool(config.actor_rollout_ref.actor.use_kl_loss)
    use_kl_in_reward = bool(config.algorithm.get("use_kl_in_reward", False))
    if not _is_spro(config):
        yield Check("reference policy", OK, f"{'built' if needed else 'not built'} ({_estimator(config)})")
        return
    if needed:
        yield Check("reference policy", OK, "built for SPRO's log pi_ref (verl's need_reference_policy)")
    else:
        yield Check(
            "reference policy",
            FAIL,
            "verl will not build the reference policy SPRO needs: verl-spro's need_reference_policy hook is not "
            "active (is the 'spro' plugin loaded on `import verl`?)",
        )
    if use_kl_loss:
        coef = config.actor_rollout_ref.actor.kl_loss_coef
        yield Check(
            "KL loss",
            WARN,
            f"actor_rollout_ref.actor.use_kl_loss=true (kl_loss_coef={coef}): SPRO uses no KL loss and needs none "
            "to build the reference; set actor_rollout_ref.actor.use_kl_loss=false",
        )
    if use_kl_in_reward:
        yield Check(
            "KL loss",
            WARN,
            "algorithm.use_kl_in_reward=true: SPRO's process reward already uses log pi - log pi_ref; "
            "set algorithm.use_kl_in_reward=false for the paper's recipe",
        )
    if not (use_kl_loss or use_kl_in_reward):
        yield Check("KL loss", OK, "off (use_kl_loss=false, use_kl_in_reward=false)")
    mode = config.actor_rollout_ref.actor.loss_agg_mode
    if mode != PAPER_LOSS_AGG_MODE:
        yield Check(
            "loss aggregation",
            WARN,
            f"actor_rollout_ref.actor.loss_agg_mode={mode}; the paper uses {PAPER_LOSS_AGG_MODE}",
        )
    else:
        yield Check("loss aggregation", OK, mode)


def check_spro_config(ctx: Context) -> Iterator[Check]:
    """``algorithm.spro.*`` is valid (``SproConfig.from_algorithm_config``)."""
    from verl_spro.config import SproConfig

    try:
        spro = SproConfig.from_algorithm_config(ctx.config.algorithm)
    except ValueError as exc:
        status = FAIL if _is_spro(ctx.config) else WARN
        yield Check("spro config", status, _one_line(str(exc)))
        return
    from verl_spro.verl_hooks import beta_overflow

    overflow = beta_overflow(spro.beta)
    if overflow is not None:
        yield Check("spro config", FAIL if _is_spro(ctx.config) else WARN, overflow)
    elif _is_spro(ctx.config):
        yield Check("spro config", OK, f"beta={spro.beta}, msa_norm_by_std={spro.msa_norm_by_std}")
    else:
        yield Check("spro config", OK, f"unused (adv_estimator={_estimator(ctx.config)})")


def invalid_sizes(config: Any) -> dict[str, str]:
    """``{key: problem}`` for each of :data:`REQUIRED_SIZES`, :data:`OPTIONAL_SIZES` and the Megatron sizes that is
    not an integer >= 1 (booleans and floats included), or is unset where required."""
    from omegaconf import OmegaConf

    keys = [(key, True) for key in REQUIRED_SIZES] + [(key, False) for key in OPTIONAL_SIZES]
    for role in ("actor", "ref"):
        if str(OmegaConf.select(config, f"actor_rollout_ref.{role}.strategy", default="")) == "megatron":
            keys += [(f"actor_rollout_ref.{role}.megatron.{key}", False) for key in MEGATRON_SIZES]
    problems = {}
    for key, required in keys:
        try:
            value = OmegaConf.select(config, key, default=None, throw_on_missing=False)
        except Exception as exc:  # an interpolation that does not resolve
            problems[key] = f"{key} cannot be resolved: {_one_line(exc)}"
            continue
        if value is None:
            if required:
                problems[key] = f"{key} is not set: it must be an integer >= 1"
        elif isinstance(value, bool) or not isinstance(value, int):
            problems[key] = f"{key}={value!r} is not an integer: it must be an integer >= 1"
        elif value < 1:
            problems[key] = f"{key}={value}: it must be an integer >= 1"
    return problems


def check_sizes(ctx: Context) -> Iterator[Check]:
    """Every batch size, micro-batch, GPU and node count, parallel size and ``rollout.n`` is an integer >= 1."""
    for problem in ctx.bad_sizes.values():
        yield Check("sizes", FAIL, problem)
    if not ctx.bad_sizes:
        yield Check("sizes", OK, "batch sizes, micro-batches, GPUs, nodes, parallel sizes, rollout.n are >= 1")


def check_group_size(ctx: Context) -> Iterator[Check]:
    """Group estimators need at least two samples per prompt."""
    if "actor_rollout_ref.rollout.n" in ctx.bad_sizes:
        return  # reported by check_sizes
    n = int(ctx.config.actor_rollout_ref.rollout.n)
    name = _estimator(ctx.config)
    if name in GROUP_ESTIMATORS and n < 2:
        yield Check(
            "group size",
            FAIL,
            f"actor_rollout_ref.rollout.n={n}: {name} compares the samples of one prompt, every outcome "
            "advantage would be 0; use n >= 2 (the paper: 4)",
        )
    else:
        yield Check("group size", OK, f"{n} samples per prompt")


def check_rollout(ctx: Context) -> Iterator[Check]:
    """``actor_rollout_ref.rollout.name`` is set, and that engine imports."""
    from omegaconf import OmegaConf

    rollout = ctx.config.actor_rollout_ref.rollout
    if OmegaConf.is_missing(rollout, "name") or not rollout.name:
        yield Check("rollout", FAIL, "actor_rollout_ref.rollout.name is not set (mandatory in verl: vllm or sglang)")
        return
    name = str(rollout.name)
    yield Check("rollout", OK, f"{name}, TP {rollout.tensor_model_parallel_size}, n={rollout.n}")
    module = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}.get(name)
    if module is None:
        from verl.workers.rollout.base import _ROLLOUT_REGISTRY

        known = sorted({key[0] if isinstance(key, tuple) else str(key) for key in _ROLLOUT_REGISTRY})
        if name in known:
            yield Check("rollout engine", OK, f"{name} is registered in verl; not import-checked")
        else:
            yield Check(
                "rollout engine",
                ctx.gpu_fail,
                f"unknown rollout name {name!r}: verl knows {', '.join(known)} (main_ppo would fail at the rollout)",
            )
        return
    yield _import_check("rollout engine", module, ctx, f"{name} is installed and imports")


def check_reward_function(ctx: Context) -> Iterator[Check]:
    """``reward.custom_reward_function``: the file exists and defines the named function (read, not run)."""
    from omegaconf import OmegaConf

    custom = OmegaConf.select(ctx.config, "reward.custom_reward_function", default=None)
    path = custom.get("path") if custom is not None else None
    if not path:
        return
    name = custom.get("name")
    where = "reward.custom_reward_function"
    if not name:
        yield Check("reward function", FAIL, f"{where}.path={path} but {where}.name is not set")
        return
    if str(path).startswith("pkg://"):
        module_name = str(path)[len("pkg://") :].replace("/", ".").removesuffix(".py")
        try:
            defined = hasattr(importlib.import_module(module_name), name)
        except Exception as exc:
            yield Check("reward function", FAIL, f"{where}.path={path}: cannot import {module_name}: {_one_line(exc)}")
            return
    else:
        if not os.path.isfile(path):
            yield Check("reward function", FAIL, f"{where}.path={path}: no such file")
            return
        try:
            defined = name in _top_level_names(path)
        except (OSError, SyntaxError, ValueError) as exc:
            yield Check("reward function", FAIL, f"{where}.path={path}: cannot be parsed: {_one_line(exc)}")
            return
    if not defined:
        yield Check("reward function", FAIL, f"{where}.name={name}: {path} defines no such name")
    else:
        yield Check("reward function", OK, f"{name} in {path}")


def _top_level_names(path: str) -> set[str]:
    import ast

    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def check_training_engine(ctx: Context) -> Iterator[Check]:
    """verl's engine for ``actor.strategy`` imports (Megatron: verl's engine, megatron-core and the bridge)."""
    actor = ctx.config.actor_rollout_ref.actor
    strategy = str(actor.strategy)
    if strategy == "megatron":
        yield _import_check("training engine", "verl.workers.engine.megatron", ctx, "verl's Megatron engine imports")
        megatron = actor.megatron
        if megatron.get("use_mbridge", False):
            vanilla = bool(megatron.get("vanilla_mbridge", False))
            module = "mbridge" if vanilla else "megatron.bridge"
            yield _import_check("model bridge", module, ctx, f"{module} imports (use_mbridge=true)")
    elif strategy in ("fsdp", "fsdp2"):
        yield _import_check("training engine", "verl.workers.engine.fsdp", ctx, f"verl's FSDP engine ({strategy})")
    else:
        yield Check("training engine", WARN, f"strategy {strategy!r} not import-checked")


def _import_check(name: str, module: str, ctx: Context, ok_detail: str) -> Check:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            importlib.import_module(module)
    except Exception as exc:  # import errors on CPU are RuntimeErrors/OSErrors as often as ImportErrors
        suffix = " (--cpu-only: needed on the GPU machine)" if ctx.cpu_only else ""
        return Check(name, ctx.gpu_fail, f"cannot import {module}: {_one_line(exc)}{suffix}")
    return Check(name, OK, ok_detail)


def check_gpus(ctx: Context) -> Iterator[Check]:
    """``torch.cuda.device_count()`` on this node against ``trainer.n_gpus_per_node``."""
    import torch

    skipped = ctx.sizes_unchecked("GPUs")
    if skipped:
        yield skipped
        return
    trainer = ctx.config.trainer
    per_node, nodes = int(trainer.n_gpus_per_node), int(trainer.nnodes)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    need = f"config needs {per_node} per node x {nodes} node(s) = {per_node * nodes}"
    if visible < per_node:
        suffix = " (--cpu-only)" if ctx.cpu_only else ""
        yield Check("GPUs", ctx.gpu_fail, f"{visible} visible on this node, {need}{suffix}")
    elif visible > per_node:
        yield Check("GPUs", WARN, f"{visible} visible on this node, {need}: {visible - per_node} left idle")
    else:
        yield Check("GPUs", OK, f"{visible} visible on this node, {need}")


def check_model(ctx: Context) -> Iterator[Check]:
    """The model path is a local HF directory (config.json) or an HF id (downloaded at start)."""
    raw = str(ctx.config.actor_rollout_ref.model.path)
    path = os.path.expanduser(raw)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            yield Check("model", OK, f"{raw} (local, config.json present)")
        else:
            yield Check("model", FAIL, f"{raw} is a directory without config.json: not a Hugging Face model")
        return
    if os.path.exists(path):
        yield Check("model", FAIL, f"{raw} is a file; actor_rollout_ref.model.path must be a model directory")
        return
    if raw.startswith(_REMOTE_PREFIXES):
        yield Check("model", WARN, f"{raw}: remote path, not checked")
        return
    if _HF_REPO_ID.match(raw) and not raw.startswith((".", "~")):
        if _in_hf_cache(raw):
            yield Check("model", OK, f"{raw} (Hugging Face id, in the local cache)")
        else:
            yield Check("model", WARN, f"{raw}: not local, will be downloaded from the Hugging Face hub at start")
        return
    yield Check("model", FAIL, f"{raw}: no such directory, and not a Hugging Face id (org/name)")


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_data(ctx: Context) -> Iterator[Check]:
    """``data.train_files``/``val_files`` exist and are parquet with the columns verl reads."""
    data = ctx.config.data
    batch = 1 if "data.train_batch_size" in ctx.bad_sizes else int(data.train_batch_size)
    for key in ("train_files", "val_files"):
        paths = data.get(key)
        if paths is None:
            yield Check(f"data.{key}", FAIL if key == "train_files" else OK, "not set")
            continue
        files = [paths] if isinstance(paths, str) else list(paths)
        if not files:
            yield Check(f"data.{key}", FAIL, f"data.{key}=[] is an empty list: give at least one parquet file")
        for raw in files:
            if not str(raw).strip():
                yield Check(f"data.{key}", FAIL, f"data.{key} has an empty path: {paths!r}")
                continue
            yield _check_data_file(f"data.{key}", str(raw), data, min_rows=batch if key == "train_files" else 1)


def _check_data_file(name: str, raw: str, data: Any, min_rows: int) -> Check:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if raw.startswith(_REMOTE_PREFIXES):
        return Check(name, WARN, f"{raw}: remote path, not checked")
    path = os.path.expanduser(raw)
    if not os.path.isfile(path):
        return Check(name, FAIL, f"{raw}: file not found (write it with `verl-spro prepare-data`)")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        return Check(name, FAIL, f"{raw}: not a readable parquet file ({_one_line(exc)})")
    schema = parquet.schema_arrow
    problems = []
    prompt_key, reward_key = str(data.get("prompt_key", "prompt")), str(data.get("reward_fn_key", "data_source"))
    for column in (prompt_key, reward_key, "reward_model"):
        if column not in schema.names:
            problems.append(f"no column '{column}'")
    if prompt_key in schema.names:
        prompt_type = schema.field(prompt_key).type
        if not (
            pa.types.is_list(prompt_type)
            and pa.types.is_struct(prompt_type.value_type)
            and {"role", "content"} <= {f.name for f in prompt_type.value_type}
        ):
            problems.append(f"'{prompt_key}' is {prompt_type}, not a list of {{role, content}} messages")
    if "reward_model" in schema.names:
        reward_type = schema.field("reward_model").type
        if not (pa.types.is_struct(reward_type) and "ground_truth" in {f.name for f in reward_type}):
            problems.append(f"'reward_model' is {reward_type}, not a struct with ground_truth")
    rows = parquet.metadata.num_rows
    if problems:
        return Check(
            name, FAIL, f"{raw}: not verl's schema: {'; '.join(problems)} (columns: {', '.join(schema.names)})"
        )
    if rows < min_rows:
        return Check(name, FAIL, f"{raw}: {rows} rows, fewer than data.train_batch_size={min_rows}: no full batch")
    return Check(name, OK, f"{raw}: {rows} rows, verl's schema")


def _data_parallel_size(config: Any, n_gpus: int) -> tuple[int, str]:
    actor = config.actor_rollout_ref.actor
    if actor.strategy == "megatron":
        mp = actor.megatron
        model_parallel = mp.tensor_model_parallel_size * mp.pipeline_model_parallel_size * mp.context_parallel_size
        layout = (
            f"TP {mp.tensor_model_parallel_size} x PP {mp.pipeline_model_parallel_size} x CP {mp.context_parallel_size}"
        )
    else:
        model_parallel = int(actor.get("ulysses_sequence_parallel_size", 1) or 1)
        layout = f"SP {model_parallel}"
    if n_gpus % model_parallel:
        raise _BatchError(f"{n_gpus} GPUs are not divisible by the actor's model parallel size ({layout})")
    return n_gpus // model_parallel, layout


class _BatchError(ValueError):
    pass


def check_batch_sizes(ctx: Context) -> Iterator[Check]:
    """The divisibility verl needs, with the numbers spelt out (verl's own messages come in the next check)."""
    from verl.trainer.main_ppo import need_reference_policy

    skipped = ctx.sizes_unchecked("batch sizes")
    if skipped:
        yield skipped
        return
    config = ctx.config
    actor, rollout, ref = (
        config.actor_rollout_ref.actor,
        config.actor_rollout_ref.rollout,
        config.actor_rollout_ref.ref,
    )
    n_gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    n, prompts, mini = int(rollout.n), int(config.data.train_batch_size), int(actor.ppo_mini_batch_size)
    try:
        dp, layout = _data_parallel_size(config, n_gpus)
    except _BatchError as exc:
        yield Check("batch sizes", FAIL, str(exc))
        return
    problems: list[tuple[str, str]] = []
    if prompts < mini:
        problems.append((FAIL, f"data.train_batch_size={prompts} < actor.ppo_mini_batch_size={mini}"))
    elif prompts % mini:
        problems.append(
            (
                WARN,
                f"data.train_batch_size={prompts} is not a multiple of ppo_mini_batch_size={mini}: verl pads "
                "the last mini-batch with dummy rows",
            )
        )
    if (prompts * n) % dp:
        problems.append(
            (
                FAIL,
                f"train_batch_size*n = {prompts}*{n} = {prompts * n} responses do not split over "
                f"{dp} data-parallel ranks ({n_gpus} GPUs / {layout})",
            )
        )
    if (mini * n) % dp:
        problems.append(
            (
                FAIL,
                f"ppo_mini_batch_size*n = {mini}*{n} = {mini * n} responses per mini-batch do not split over "
                f"{dp} data-parallel ranks ({n_gpus} GPUs / {layout})",
            )
        )
    elif not actor.use_dynamic_bsz:
        micro = actor.ppo_micro_batch_size_per_gpu
        per_rank = mini * n // dp
        if micro is None:
            problems.append((FAIL, "actor.ppo_micro_batch_size_per_gpu is not set (needed without use_dynamic_bsz)"))
        elif per_rank % int(micro):
            problems.append(
                (
                    WARN,
                    f"{per_rank} responses per rank per mini-batch are not a multiple of "
                    f"ppo_micro_batch_size_per_gpu={micro}: uneven gradient accumulation",
                )
            )
    if (
        need_reference_policy(config)
        and not ref.log_prob_use_dynamic_bsz
        and ref.log_prob_micro_batch_size_per_gpu is None
    ):
        problems.append(
            (
                FAIL,
                "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu is not set (the reference policy is "
                "built, and verl requires it)",
            )
        )
    rollout_mp = int(rollout.tensor_model_parallel_size) * int(rollout.get("pipeline_model_parallel_size", 1) or 1)
    if n_gpus % rollout_mp:
        problems.append((FAIL, f"{n_gpus} GPUs are not divisible by the rollout's TP x PP = {rollout_mp}"))
    if int(rollout.tensor_model_parallel_size) > int(config.trainer.n_gpus_per_node):
        problems.append(
            (
                FAIL,
                f"rollout tensor_model_parallel_size={rollout.tensor_model_parallel_size} spans more than the "
                f"{config.trainer.n_gpus_per_node} GPUs of a node",
            )
        )
    for status, detail in problems:
        yield Check("batch sizes", status, detail)
    if not any(status == FAIL for status, _ in problems):
        yield Check(
            "batch sizes",
            OK,
            f"{prompts} prompts x {n} = {prompts * n} responses/step in {max(prompts // mini, 1)} mini-batch(es); "
            f"{n_gpus} GPUs = DP {dp} x {layout}",
        )


def check_verl_validate_config(ctx: Context) -> Iterator[Check]:
    """verl's own ``validate_config``, called as main_ppo calls it (with verl-spro's hook)."""
    from verl.trainer.main_ppo import need_critic, need_reference_policy, validate_config

    skipped = ctx.sizes_unchecked("verl validate_config")
    if skipped:  # verl would fail with a ZeroDivisionError or an assertion that does not name the key
        yield skipped
        return
    config = ctx.config
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            validate_config(
                config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
            )
    except Exception as exc:
        yield Check("verl validate_config", FAIL, _one_line(exc))
        return
    yield Check("verl validate_config", OK, "passed")


CHECKS: tuple[Callable[[Context], Iterator[Check]], ...] = (
    check_estimator,
    check_reference_policy,
    check_spro_config,
    check_sizes,
    check_group_size,
    check_rollout,
    check_reward_function,
    check_training_engine,
    check_gpus,
    check_model,
    check_data,
    check_batch_sizes,
    check_verl_validate_config,
)
