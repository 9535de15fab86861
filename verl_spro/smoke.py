"""Run verl's real trainer (``python -m verl.trainer.main_ppo``) end to end on this machine's CPU.

A tiny Qwen2 model and a byte-level ChatML tokenizer are built in code and saved to OUT/model, a small verifiable
task (one-digit additions, partial credit for answering in digits) to OUT/data; nothing is downloaded. The stock
entry point then trains on them through verl's own workers, rollout server, reference model, advantage estimator,
actor update, weight sync, logger and checkpoints, with this package's CPU backend
(``VERL_USE_EXTERNAL_MODULES=verl_spro.cpu_backend``) in place of CUDA, NCCL and vLLM.

Extra ``key=value`` arguments are Hydra overrides passed to main_ppo after the smoke defaults (they win): point
``actor_rollout_ref.model.path``, ``data.train_files``/``data.val_files`` or ``reward.custom_reward_function.*`` at
your own model, data and reward code and the same command rehearses them before a cluster run.

Writes OUT/metrics.jsonl (verl's ``file`` logger: one ``{"step": N, "data": {...}}`` line per step),
OUT/main_ppo.log (verl's full output) and OUT/checkpoints (the last step is saved; ``--resume`` continues from it,
appending to metrics.jsonl and main_ppo.log). An OUT holding an earlier run is refused unless ``--resume`` or
``--fresh`` is given, a second run into the same OUT while one runs is refused (a lock), and ``--resume`` refuses
a different ``--estimator``, ``--trainer`` or ``--seed`` than the checkpoint was made with (OUT/smoke_run.json).
SIGTERM and SIGINT stop every process the run started (exit 143 and 130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verl_spro.argtypes import int_in_range, positive_int
from verl_spro.log_phases import StartupPhases
from verl_spro.output_files import OutDirLock, atomic_write, claim_out_dir, out_path
from verl_spro.processes import pid_alive
from verl_spro.shm_leftovers import ShmLeftovers

TRAINERS = ("v1", "legacy")
ESTIMATORS = ("spro", "grpo")
DATA_SOURCE = "verl_spro_smoke_add"
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 \n+=?:.,"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPT_LEN, RESPONSE_LEN = 32, 8
TRAIN_PROMPTS, VAL_PROMPTS = 64, 8
CHECKPOINT_TRACKER = "latest_checkpointed_iteration.txt"
#: OUT's files that mean it holds an earlier run; RUN_RECORD says what its checkpoints were made with.
EARLIER_RUN = ("checkpoints", "metrics.jsonl", "main_ppo.log")
RUN_RECORD = "smoke_run.json"
RECORDED_OPTIONS = ("estimator", "trainer", "seed")  # --resume must match them
VERL_METRICS = ".main_ppo.metrics.jsonl"  # verl's file logger (it truncates); smoke appends it to metrics.jsonl
CPU_BACKEND = "verl_spro.cpu_backend"  # importing it installs it: named here, never imported by this process
CPU_ROLLOUT = "hf_cpu"  # verl_spro.cpu_backend.ROLLOUT_NAME (a test checks they agree)
ROLLOUTS = ("hf", "vllm")  # --rollout: the CPU backend's hf_cpu stand-in, or vLLM's own engine (its CPU build)
VLLM_SETUP = "bash scripts/setup_cpu.sh --vllm"
VLLM_KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB of KV cache vLLM's CPU worker allocates
VLLM_KV_CACHE_GIB = "1"  # smoke's default when the environment does not set it
#: What vLLM's CPU build needs from main_ppo (see docs: no sleep mode on a CPU, no CUDA graphs, float32 like the actor).
VLLM_OVERRIDES = (
    "actor_rollout_ref.rollout.dtype=float32",
    "actor_rollout_ref.rollout.enforce_eager=true",
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.1",
    "actor_rollout_ref.rollout.free_cache_engine=false",
    "actor_rollout_ref.rollout.max_num_seqs=16",
    "actor_rollout_ref.rollout.max_num_batched_tokens=640",
    "+actor_rollout_ref.rollout.enable_sleep_mode=false",
)
PROG = "verl-spro smoke"


# --------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the smoke options and the trailing Hydra overrides on ``parser``."""
    parser.add_argument(
        "--out", type=out_path("--out"), required=True, help="output folder (model, data, logs, checkpoints)"
    )
    parser.add_argument("--steps", type=positive_int("--steps"), default=2, help="training steps (default 2)")
    parser.add_argument("--trainer", choices=TRAINERS, default="v1", help="verl's V1 trainer or the legacy one")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="spro", help="advantage estimator (spro)")
    parser.add_argument(
        "--rollout",
        choices=ROLLOUTS,
        default="hf",
        help=f"hf: the CPU backend's stand-in rollout (default); vllm: vLLM's own engine, from the environment "
        f"`{VLLM_SETUP}` makes",
    )
    parser.add_argument(
        "--bypass-mode",
        action="store_true",
        help="algorithm.rollout_correction.bypass_mode=true: the rollout's log-probs serve as the old policy's "
        "(SPRO's process reward then uses them)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT")
    parser.add_argument(
        "--seed",
        type=int_in_range(0, 2**31 - 1, "--seed"),
        default=0,
        help="seed of the model, data, sampling and training (0 to 2**31-1; default 0)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over in an OUT that holds an earlier run (deletes OUT/checkpoints and metrics.jsonl); without "
        "it (or --resume) such an OUT is refused",
    )
    parser.add_argument(
        "--timeout",
        type=positive_int("--timeout"),
        default=900,
        help="give up when no step completes for this many seconds, start-up included (default 900)",
    )
    parser.add_argument(
        "--print-overrides",
        action="store_true",
        help="build the model and task in OUT, print main_ppo overrides for a run on an existing Ray cluster "
        "(one a line, without the one-machine Ray sizing) and run nothing; see docs/launching.md",
    )
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDES", help="Hydra overrides for main_ppo (key=value)")


def validate(args: argparse.Namespace) -> str | None:
    """None when the options can run, else a one-line reason naming the option (OUT itself is checked, created and
    locked by :func:`verl_spro.output_files.claim_out_dir` after this)."""
    for override in args.overrides:
        if not _override_key(override) or ("=" not in override and not override.startswith("~")):
            return f"override {override!r}: expected key=value (a Hydra override such as trainer.save_freq=1)"
    if args.resume and args.fresh:
        return "--resume and --fresh contradict each other: pick one"
    problem = environment_problem(args)
    if problem is not None:
        return problem
    if args.resume:
        latest = latest_checkpoint_step(args.out / "checkpoints")
        if latest is None:
            return (
                f"--resume: no checkpoint verl can resume in {args.out / 'checkpoints'} (no readable "
                f"{CHECKPOINT_TRACKER} naming a global_step_N folder): run without --resume first"
            )
        if latest >= args.steps:
            return f"--resume: the checkpoint in {args.out} is at step {latest}; --steps must be above it"
        problem = resume_mismatch(args)
        if problem is not None:
            return problem
    if args.rollout == "vllm":
        problem = vllm_problem(args)
        if problem is not None:
            return problem
    return None


def environment_problem(args: argparse.Namespace) -> str | None:
    """What would make main_ppo fail late, caught before any work: an OUT path Hydra cannot take in an override,
    an exported RAY_ADDRESS (smoke starts its own Ray), plugins turned off for a spro run."""
    from verl_spro.verl_hooks import plugins_policy_excludes_spro

    where = str(args.out.resolve())
    bad = sorted({char for char in where if not _hydra_takes(f"/a{char}b")})
    if bad:
        return (
            f"--out {args.out}: main_ppo's Hydra cannot take the path {where} in an override (it holds "
            f"{' '.join(repr(c) for c in bad)}); choose a path of ASCII letters, digits and / . _ -"
        )
    if os.environ.get("RAY_ADDRESS"):
        return (
            f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} is exported, but smoke starts its own one-machine Ray: unset "
            "it (for a run on an existing cluster see --print-overrides)"
        )
    policy = plugins_policy_excludes_spro()
    if policy is not None and args.estimator == "spro":
        return (
            f"VERL_USE_EXTERNAL_PLUGINS={policy} keeps verl from loading verl-spro, so --estimator spro cannot run: "
            "unset it (or list spro in it)"
        )
    return None


def _hydra_takes(value: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_overrides([f"key={value}"])[0]
        return override.value() == value
    except Exception:  # Hydra's parse errors have no common public base
        return False


def resume_mismatch(args: argparse.Namespace) -> str | None:
    """Why ``--resume`` would change the experiment (an option other than the checkpoint's, per OUT/smoke_run.json),
    or None."""
    record_path = args.out / RUN_RECORD
    try:
        record = json.loads(record_path.read_text())
        made_with = {key: record[key] for key in RECORDED_OPTIONS}
    except (OSError, ValueError, KeyError, TypeError):
        return (
            f"--resume: {record_path} is missing or unreadable, so what the checkpoint was made with (--estimator, "
            "--trainer, --seed) is unknown: start over with --fresh"
        )
    changed = [
        f"--{key} {made_with[key]} (not {getattr(args, key)})"
        for key in RECORDED_OPTIONS
        if made_with[key] != getattr(args, key)
    ]
    if changed:
        return f"--resume: the checkpoint in {args.out} was made with {', '.join(changed)}: resume with the same ones"
    return None


def vllm_problem(args: argparse.Namespace) -> str | None:
    """None when this Python can run ``--rollout vllm`` with the model the run will use, else a one-line reason.

    Checks, without starting anything: vLLM installed under the name verl reads, the CPU backend's vLLM fixes
    applicable (:mod:`verl_spro.cpu_backend.vllm_fixes`, checked in a child process: importing the backend installs
    it), the model's head size among those vLLM's CPU attention serves, and the KV cache within free memory.
    """
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return (
            f"--rollout vllm: vLLM is not installed in this Python ({sys.executable}); make the vLLM environment "
            f"with `{VLLM_SETUP}` and run its verl-spro (.venv-vllm/bin/verl-spro smoke --rollout vllm ...)"
        )
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return (
            "--rollout vllm: the vllm package is installed without a distribution named vllm (verl reads its "
            f"version): make the vLLM environment with `{VLLM_SETUP}`"
        )
    kv_cache = os.environ.get(VLLM_KV_CACHE_ENV) or VLLM_KV_CACHE_GIB  # vLLM too reads an empty value as unset
    if not kv_cache.isdigit() or int(kv_cache) < 1:
        return f"{VLLM_KV_CACHE_ENV}={kv_cache!r}: expected a whole number of GiB of KV cache, at least 1 (default 1)"
    available = _available_memory_gib()
    if available is not None and int(kv_cache) > available:
        return (
            f"{VLLM_KV_CACHE_ENV}={kv_cache}: vLLM's KV cache would take {kv_cache} GiB, more than the "
            f"{available:.1f} GiB of memory available now: lower it (smoke's default is {VLLM_KV_CACHE_GIB})"
        )
    model = _model_override(args.overrides) or (args.out / "model" if args.resume else None)
    check = [sys.executable, "-m", "verl_spro.cpu_backend.vllm_fixes", *([str(model)] if model else [])]
    result = subprocess.run(check, capture_output=True, text=True, check=False, timeout=300)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return f"--rollout vllm: vLLM does not import in {sys.executable}: {_last_error_line(result.stderr)}"
    return lines[-1] if lines[-1] != "ok" else None


def _model_override(overrides: list[str]) -> Path | None:
    for override in overrides:
        if _override_key(override) == "actor_rollout_ref.model.path" and "=" in override:
            return Path(override.split("=", 1)[1])
    return None


def _available_memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def latest_checkpoint_step(checkpoints: Path) -> int | None:
    """The step verl's checkpoint tracker names in ``checkpoints``, or None when there is none (or it is unreadable:
    such an OUT still counts as holding an earlier run, see :data:`EARLIER_RUN`)."""
    tracker = checkpoints / CHECKPOINT_TRACKER
    try:
        step = int(tracker.read_text().strip())
    except (OSError, ValueError):
        return None
    return step if (checkpoints / f"global_step_{step}").is_dir() else None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``verl-spro smoke``. Returns main_ppo's exit code (2 on bad arguments, 1 on a timeout)."""
    previous = _install_signal_handlers()
    try:
        problem = validate(args)
        claim = problem or claim_out_dir(
            args.out,
            earlier=EARLIER_RUN,
            replace_flag="--fresh",
            replace=args.fresh or args.resume,
            resume_flag="--resume",
        )
        if not isinstance(claim, OutDirLock):
            print(f"{PROG}: error: {claim}", file=sys.stderr)
            return 2
        try:
            return _run_locked(args)
        finally:
            claim.release()
    except KeyboardInterrupt:
        print(f"{PROG}: {_stop_reason()} before main_ppo started", file=sys.stderr)
        return 128 + _stopped_by[0]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_locked(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    if args.fresh:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if not args.resume:
        record = {key: getattr(args, key) for key in RECORDED_OPTIONS}
        atomic_write(out / RUN_RECORD, lambda tmp: tmp.write_text(json.dumps(record) + "\n"))
    if args.print_overrides:
        print("\n".join(merge_overrides(cluster_overrides(out, args), args.overrides)))
        return 0
    command = [sys.executable, "-m", "verl.trainer.main_ppo", *merge_overrides(prepare(out, args), args.overrides)]
    return run_trainer(command, out, args.steps, args.timeout, resume=args.resume)


# -------------------------------------------------------------------------------------------- model and task


def build_tokenizer() -> Any:
    """A byte-level Qwen2 tokenizer over :data:`CHARS` with ChatML special tokens and chat template.

    verl's agent loop needs ``"\\n"`` to be one token; byte-level BPE with no merges makes every character one.
    """
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_to_char = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in CHARS:
        vocab[byte_to_char[ord(char)]] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(model_dir: Path, seed: int, rollout: str = "hf") -> None:
    """Save a randomly initialised 2-layer Qwen2 (hidden 64) and its tokenizer to ``model_dir``.

    For ``rollout="vllm"`` it has 2 attention heads and 1 KV head (head size 32, the least vLLM's CPU attention
    serves) instead of 4 and 2.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokenizer = build_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2 if rollout == "vllm" else 4,
        num_key_value_heads=1 if rollout == "vllm" else 2,
        max_position_embeddings=PROMPT_LEN + RESPONSE_LEN,
        tie_word_embeddings=False,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).float()
    model.generation_config = GenerationConfig(eos_token_id=[eos], pad_token_id=pad)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


def write_task(data_dir: Path, seed: int) -> tuple[Path, Path]:
    """Write train/val parquet files of one-digit additions (``"3+4="``) in verl's RL schema."""
    from verl_spro.data_prep import write_parquet

    rng = random.Random(seed)
    paths = []
    for split, size in (("train", TRAIN_PROMPTS), ("val", VAL_PROMPTS)):
        records = []
        for index in range(size):
            a, b = rng.randrange(10), rng.randrange(10)
            records.append(
                {
                    "data_source": DATA_SOURCE,
                    "prompt": [{"role": "user", "content": f"{a}+{b}="}],
                    "ability": "math",
                    "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                    "extra_info": {"split": split, "index": index, "ability": "math"},
                }
            )
        path = data_dir / f"{split}.parquet"
        write_parquet(records, str(path))
        paths.append(path)
    return paths[0], paths[1]


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> float:
    """1.0 for the right sum; otherwise partial credit, half the fraction of the response's characters that are digits.

    The partial credit makes the reward vary inside a group even for an untrained model, so advantages are non-zero.
    """
    answer = solution_str.strip()
    if answer == str(ground_truth):
        return 1.0
    if not answer:
        return 0.0
    return 0.5 * sum(char.isdigit() for char in answer) / len(answer)


# ------------------------------------------------------------------------------------------------- overrides


def smoke_overrides(
    out: Path, model_dir: Path, train_file: Path, val_file: Path, args: argparse.Namespace
) -> list[str]:
    """main_ppo overrides of a smoke run: tiny sizes, the CPU backend's settings, OUT's files (see the module doc)."""
    seed = args.seed
    engine = []
    for role in ("actor", "ref"):
        engine += [
            f"actor_rollout_ref.{role}.strategy=fsdp2",
            f"actor_rollout_ref.{role}.fsdp_config.dtype=float32",
            f"actor_rollout_ref.{role}.use_torch_compile=false",
        ]
    return [
        f"algorithm.adv_estimator={args.estimator}",
        "algorithm.use_kl_in_reward=false",
        f"trainer.use_v1={str(args.trainer == 'v1').lower()}",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        "data.train_batch_size=4",
        f"data.max_prompt_length={PROMPT_LEN}",
        f"data.max_response_length={RESPONSE_LEN}",
        f"data.seed={seed}",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={model_dir}",
        "actor_rollout_ref.model.use_remove_padding=false",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        "+actor_rollout_ref.model.override_config.attn_implementation=eager",
        *engine,
        "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.actor.data_loader_seed={seed}",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16",
        f"actor_rollout_ref.rollout.name={CPU_ROLLOUT if args.rollout == 'hf' else 'vllm'}",
        *(VLLM_OVERRIDES if args.rollout == "vllm" else ()),
        *(["algorithm.rollout_correction.bypass_mode=true"] if args.bypass_mode else []),
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.calculate_log_probs=true",
        f"actor_rollout_ref.rollout.seed={seed}",
        "reward.num_workers=1",
        "reward.custom_reward_function.path=pkg://verl_spro.smoke",
        "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={args.steps}",
        "trainer.total_epochs=1000",
        f"trainer.save_freq={args.steps}",
        f"trainer.resume_mode={'auto' if args.resume else 'disable'}",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        "trainer.logger=[console,file]",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.project_name=verl_spro_smoke",
        f"trainer.experiment_name={args.trainer}_{args.estimator}",
        "ray_kwargs.ray_init.num_cpus=16",
        "+ray_kwargs.ray_init.num_gpus=1",
    ]


#: Keys of :func:`smoke_overrides` that size the one-machine Ray ``verl-spro smoke`` starts; on an existing cluster
#: the launchers set the first two from the allocation, and ray.init must not size a cluster it only joins.
LOCAL_RAY_KEYS = frozenset(
    ("trainer.nnodes", "trainer.n_gpus_per_node", "ray_kwargs.ray_init.num_cpus", "ray_kwargs.ray_init.num_gpus")
)


def prepare(out: Path, args: argparse.Namespace) -> list[str]:
    """Build the model (kept on ``--resume``) and the task in OUT; return the smoke run's main_ppo overrides.

    ``args`` holds the smoke options ``steps``, ``seed``, ``resume``, ``estimator`` and ``trainer``.
    """
    model_dir = out / "model"
    if not (model_dir / "config.json").is_file() or not args.resume:
        build_model(model_dir, args.seed, args.rollout)
    train_file, val_file = write_task(out / "data", args.seed)
    return smoke_overrides(out, model_dir, train_file, val_file, args)


def cluster_overrides(out: Path, args: argparse.Namespace) -> list[str]:
    """:func:`prepare`'s overrides without :data:`LOCAL_RAY_KEYS`, for a smoke run on an existing Ray cluster.

    Every Ray node of that cluster must run the CPU backend and lend Ray a logical GPU: ``SPRO_CPU_BACKEND=1`` in
    scripts/slurm_train.sbatch and scripts/ray_cluster.sh does both.
    """
    return [o for o in prepare(out, args) if _override_key(o) not in LOCAL_RAY_KEYS]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(defaults: list[str], user: list[str]) -> list[str]:
    """``defaults`` without the keys ``user`` sets, then ``user`` (Hydra refuses a key given twice)."""
    user_keys = {_override_key(o) for o in user}
    return [o for o in defaults if _override_key(o) not in user_keys] + list(user)


# -------------------------------------------------------------------------------------------- the subprocess


def _ray_tmpdir(out: Path) -> tuple[Path, bool]:
    """Ray's temp folder for this run and whether it is a separate one to delete afterwards.

    Ray's socket paths (about 65 characters below its temp folder) must fit the 107-byte Unix socket limit.
    """
    private = out / "ray"
    if len(str(private)) <= 40:
        return private, False
    return Path(tempfile.mkdtemp(prefix="verl-spro-ray-")), True


def trainer_env(out: Path, ray_tmp: Path) -> dict[str, str]:
    """The environment of main_ppo: the CPU backend on, one thread per process, offline, logs in OUT."""
    env = dict(os.environ)
    modules = [m for m in env.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    if CPU_BACKEND not in modules:
        modules.append(CPU_BACKEND)
    env.update(
        VERL_USE_EXTERNAL_MODULES=",".join(modules),
        VERL_FILE_LOGGER_PATH=str(out / VERL_METRICS),
        RAY_TMPDIR=str(ray_tmp),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONHASHSEED="0",
        RAY_DEDUP_LOGS="0",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    env[VLLM_KV_CACHE_ENV] = env.get(VLLM_KV_CACHE_ENV) or VLLM_KV_CACHE_GIB  # read by vLLM only (--rollout vllm)
    return env


def run_pids(session: int, ray_tmp: Path) -> list[int]:
    """This run's processes (not this one): those of main_ppo's session ``session`` (it was started in a new one),
    and Ray's, whose environment sets ``RAY_TMPDIR`` to exactly this run's ``ray_tmp`` (Ray starts its daemons in
    sessions of their own). Never a substring match: a ``tail -F OUT/ray/...`` or another run under a longer path
    is not this run's. Processes whose environment may not be read (another user's) are not this run's."""
    needle = b"RAY_TMPDIR=" + os.fsencode(str(ray_tmp))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) == session:
                pids.append(pid)
                continue
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    pids.append(pid)
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or str(pid)
    except OSError:
        return str(pid)


def stop_run(proc: subprocess.Popen[bytes], ray_tmp: Path, grace_s: float = 10.0) -> str:
    """Stop main_ppo and every process of this run (:func:`run_pids`): SIGTERM, then SIGKILL after ``grace_s``.

    No machine-wide ``ray stop``. A process this user may not signal is skipped with a note. Returns one line
    saying what was stopped (empty when nothing was left running).
    """
    stopped: dict[int, str] = {}
    skipped: dict[int, str] = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = [pid for pid in run_pids(proc.pid, ray_tmp) if pid not in skipped]
        if proc.poll() is None:
            targets.append(proc.pid)
        for pid in targets:
            name = _process_name(pid)
            try:
                os.kill(pid, sig)
                stopped.setdefault(pid, name)
            except ProcessLookupError:
                pass
            except PermissionError:
                skipped[pid] = name
        deadline = time.time() + grace_s
        while time.time() < deadline and (proc.poll() is None or _alive(targets, skipped)):
            time.sleep(0.2)
        if proc.poll() is not None and not _alive(run_pids(proc.pid, ray_tmp), skipped):
            break
    parts = []
    if stopped:
        names = sorted(set(stopped.values()))
        parts.append(f"stopped {len(stopped)} process(es) of this run ({', '.join(names)})")
    if skipped:
        parts.append(
            "skipped " + ", ".join(f"PID {pid} ({name})" for pid, name in skipped.items()) + ": not ours to signal"
        )
    return "; ".join(parts)


def _alive(pids: list[int], skipped: dict[int, str]) -> bool:
    """Whether any of ``pids`` not ``skipped`` (not ours to signal) is still alive."""
    return any(pid_alive(pid) for pid in pids if pid not in skipped)


def _read_new_steps(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSONL records of ``path`` from byte ``offset``; returns them and the new offset."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except OSError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    records = [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]
    return records, offset + end


def progress_line(record: dict[str, Any], steps: int) -> str:
    """``step 2/2  reward 0.211  spro/msa_abs_mean 0.0031  41.2 s`` from one metrics.jsonl record."""
    data = record.get("data", {})

    def fmt(key: str, spec: str) -> str:
        value = data.get(key)
        return format(value, spec) if isinstance(value, (int, float)) else "-"

    return (
        f"step {record.get('step')}/{steps}  reward {fmt('critic/score/mean', '.3f')}  "
        f"spro/msa_abs_mean {fmt('spro/msa_abs_mean', '.4g')}  {fmt('timing_s/step', '.1f')} s"
    )


def run_trainer(command: list[str], out: Path, steps: int, timeout_s: int, resume: bool = False) -> int:
    """Run ``command`` (main_ppo) with its output in OUT/main_ppo.log, a progress line per step, and clean-up.

    verl's file logger truncates its file, so it writes a file of this run's own (:data:`VERL_METRICS`) whose
    records are appended to OUT/metrics.jsonl as they come: a resumed run adds to the history, never replaces it.
    With ``resume`` main_ppo.log is appended to as well.
    """
    ray_tmp, remove_ray_tmp = _ray_tmpdir(out)
    ray_tmp.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    verl_metrics = out / VERL_METRICS
    verl_metrics.unlink(missing_ok=True)
    log_path = out / "main_ppo.log"
    print(f"{PROG}: main_ppo on the CPU, {steps} step(s); verl's log: {log_path}", flush=True)
    start = last_progress = time.time()
    offset, done, rc, reported = 0, 0, None, False
    leftovers = ShmLeftovers()
    with open(log_path, "ab" if resume else "wb") as log, open(metrics, "ab") as history:
        if resume:
            log.write(f"\n==== {PROG} --resume, {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode())
        log.write((" ".join(command) + "\n").encode())
        log.flush()
        phases = StartupPhases(log_path)  # what main_ppo is doing until the first step line
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=trainer_env(out, ray_tmp), start_new_session=True
        )
        try:
            while rc is None:
                time.sleep(1.0)
                rc = proc.poll()
                # Every second: a vLLM process that dies (an engine failure) takes its hold on /dev/shm with it.
                leftovers.scan([proc.pid, *run_pids(proc.pid, ray_tmp)])
                records, offset = _read_new_steps(verl_metrics, offset)
                for record in records:
                    history.write((json.dumps(record) + "\n").encode())
                    history.flush()
                    print(progress_line(record, steps), flush=True)
                    done, last_progress = done + 1, time.time()
                if done == 0:
                    for line in phases.poll():
                        print(f"{PROG}: {line}", flush=True)
                if rc is None and time.time() - last_progress > timeout_s:
                    what = "Ray or a worker did not come up" if done == 0 else f"step {done + 1} did not finish"
                    print(f"{PROG}: error: {what} within {timeout_s} s (--timeout); see {log_path}", file=sys.stderr)
                    rc, reported = 1, True
        except KeyboardInterrupt:
            print(f"{PROG}: {_stop_reason()}; stopping main_ppo and its Ray processes", file=sys.stderr)
            rc, reported = 128 + _stopped_by[0], True
        finally:
            leftovers.scan([proc.pid, *run_pids(proc.pid, ray_tmp)])
            with _signals_held():  # a second Ctrl-C must not cut the clean-up short
                what = stop_run(proc, ray_tmp)
            if what and rc != 0:
                print(f"{PROG}: {what}", file=sys.stderr)
            removed = leftovers.remove()
            if removed:
                print(f"{PROG}: removed {len(removed)} /dev/shm file(s) this run left: {', '.join(removed)}")
            if remove_ray_tmp:
                shutil.rmtree(ray_tmp, ignore_errors=True)
    if rc == 0:
        latest = latest_checkpoint_step(out / "checkpoints")
        where = f"checkpoint: {out / 'checkpoints' / f'global_step_{latest}'}" if latest else "no checkpoint saved"
        print(f"{PROG}: done in {time.time() - start:.0f} s; metrics: {metrics}; {where}", flush=True)
    elif not reported:  # main_ppo failed by itself (a bad override, a Python error): show why
        print(f"{PROG}: error: main_ppo exited with code {rc}; last lines of {log_path}:", file=sys.stderr)
        print(_tail(log_path), file=sys.stderr)
    return rc


#: The signal that stopped the run (SIGINT unless SIGTERM came): the exit status is 128 + its number.
_stopped_by = [int(signal.SIGINT)]


def _interrupt(signum: int, frame: Any) -> None:
    _stopped_by[0] = signum
    raise KeyboardInterrupt


def _install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM raise KeyboardInterrupt here, whatever this process inherited (a shell started in the
    background ignores SIGINT in its children: set explicitly, a Ctrl-C or ``kill -INT`` still stops the run).
    Returns the previous handlers."""
    _stopped_by[0] = int(signal.SIGINT)
    return {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}


def _stop_reason() -> str:
    return "stopped by SIGTERM" if _stopped_by[0] == signal.SIGTERM else "interrupted"


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM ignored for the duration (the clean-up), then handled as before."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
