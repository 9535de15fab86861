"""SPRO vs GRPO, learning on a laptop CPU: the same tiny policy, task and seeds, only the estimator differs.

A ~250k-parameter Qwen2 model (built in code, nothing downloaded) is warmed up with a short supervised phase on
sorting digits, then trained with RL: G sampled answers per prompt, a 0/1 rule reward, advantages from verl's
real ``compute_advantage`` (``adv_estimator=spro`` through this package's plugin, or verl's ``grpo``), verl's real
PPO-clip policy loss with ``loss_agg_mode=seq-mean-token-mean`` and no KL loss. The warmed-up model is the frozen
reference policy that SPRO's intrinsic reward compares against.

Writes ``OUT/metrics.csv`` (one row per estimator, seed and step) and a PNG of accuracy (sampled and greedy),
entropy, response length and SPRO's two advantage terms against step (mean over seeds with a ± std band), and
prints a summary table with the SPRO - GRPO differences and their paired t-intervals over seeds
(:mod:`verl_spro.stats`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verl_spro.argtypes import positive_int, positive_threads
from verl_spro.output_files import (
    OutDirLock,
    OutputPathError,
    add_out_arguments,
    atomic_write,
    claim_out_dir,
    one_line,
)
from verl_spro.stats import INTERVAL, MIN_SEEDS_FOR_INTERVAL, paired_difference, verdict
from verl_spro.tiny_lm import SORT, Task

if TYPE_CHECKING:
    import torch

ESTIMATORS = ("spro", "grpo")
OUTPUT_FILES = ("metrics.csv", "spro_vs_grpo.png")  # what a run writes into --out


class TrainingDiverged(RuntimeError):
    """A non-finite advantage, loss or gradient: the run cannot go on (reported as one line, never as NaNs)."""


@dataclass(frozen=True)
class Hyper:
    """Everything both estimators share. Only ``estimator`` in :func:`train_rl` differs between the two runs."""

    steps: int = 100  # RL steps
    prompts_per_step: int = 16
    group_size: int = 8  # G responses per prompt
    mini_batches: int = 2  # PPO mini-batches per epoch: all but the first are off-policy, so clipping acts
    ppo_epochs: int = 2
    lr: float = 2e-4
    clip_ratio: float = 0.2
    temperature: float = 1.0
    beta: float = 0.05  # SPRO's intrinsic reward scale (algorithm.spro.beta)
    sft_steps: int = 40  # enough for ~40% sampled accuracy, far from all (the cap when the warm-up has a stop_at)
    sft_check_every: int = 20  # with a stop_at: steps between two accuracy checks
    sft_batch: int = 64
    sft_lr: float = 3e-3
    eval_every: int = 10
    eval_size: int = 256
    target_accuracy: float = 0.65


QUICK = Hyper(steps=80)  # and one seed


# --------------------------------------------------------------------------------------------------------- CLI


SEED_MAX = 2**32 - 1  # numpy's and most tools' range; torch takes up to 2**64 - 1 and the loops add < 2**17


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--quick``, ``--seeds``, ``--steps``, ``--out`` (and a few knobs) on ``parser``."""
    parser.add_argument("--quick", action="store_true", help="short run: 1 seed, 80 steps (about 1 min on 2 cores)")
    parser.add_argument("--seeds", type=positive_int("--seeds"), default=None, help="number of seeds (default 5)")
    parser.add_argument("--steps", type=positive_int("--steps"), default=None, help="RL steps per run")
    add_out_arguments(parser, Path("spro_demo"), "output folder (default ./spro_demo)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    parser.add_argument("--beta", type=float, default=None, help="SPRO intrinsic reward scale (default 0.05)")
    parser.add_argument("--threads", type=positive_threads("--threads"), default=1, help="torch CPU threads (1)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def check_first_seed(first_seed: int, n_seeds: int) -> str | None:
    """None if the seeds ``first_seed .. first_seed + n_seeds - 1`` all lie in 0 .. SEED_MAX, else the reason."""
    if first_seed < 0 or first_seed + n_seeds - 1 > SEED_MAX:
        return f"--first-seed: seeds {first_seed}..{first_seed + n_seeds - 1} must lie in 0..{SEED_MAX}"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``verl-spro demo``. Returns the exit code (2 on bad arguments, 130 when interrupted)."""
    hp = QUICK if args.quick else Hyper()
    if args.steps is not None:
        hp = replace(hp, steps=args.steps)
    if args.beta is not None:
        from verl_spro.config import SproConfig, SproConfigError

        try:
            SproConfig(beta=args.beta)  # the same rule as algorithm.spro.beta in training
        except SproConfigError as err:
            print(f"verl-spro demo: error: --beta: {err}", file=sys.stderr)
            return 2
        hp = replace(hp, beta=args.beta)
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 5)
    claim = check_first_seed(args.first_seed, n_seeds) or claim_out_dir(
        args.out, files=OUTPUT_FILES, earlier=OUTPUT_FILES, replace=args.force
    )
    if not isinstance(claim, OutDirLock):
        print(f"verl-spro demo: error: {claim}", file=sys.stderr)
        return 2
    try:
        return _run_locked(args, hp, n_seeds)
    finally:
        claim.release()


def _run_locked(args: argparse.Namespace, hp: Hyper, n_seeds: int) -> int:

    seeds = list(range(args.first_seed, args.first_seed + n_seeds))
    t0 = time.time()
    try:
        rows = run_demo(hp, seeds, threads=args.threads)
    except KeyboardInterrupt:
        print("verl-spro demo: interrupted; nothing written", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"verl-spro demo: error: training diverged: {exc}; nothing written (a smaller --beta?)", file=sys.stderr)
        return 1
    try:
        write_csv(rows, args.out / "metrics.csv")
        print(summary_table(rows, hp))
        if not args.no_plots:
            for path in plot(rows, args.out, hp):
                print(f"wrote {path}")
    except (OSError, OutputPathError, KeyboardInterrupt) as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"cannot write to {args.out}: {one_line(exc)}"
        print(f"verl-spro demo: error: {why}; previous files left as they were", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 2
    print(f"wrote {args.out / 'metrics.csv'}  ({time.time() - t0:.0f} s)")
    return 0


# ------------------------------------------------------------------------------------------------ the policy


def policy_forward(
    policy: torch.nn.Module, prompts: torch.Tensor, responses: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of each response token.

    Args:
        prompts: [B, P] token ids (same length for all rows, no padding).
        responses: [B, T] token ids (PAD after EOS; causal attention keeps padding from affecting earlier tokens).

    Returns:
        log_probs: [B, T] log pi(response[t] | prefix).
        entropy: [B, T] entropy of pi(. | prefix).
    """
    import torch
    from verl.utils.torch_functional import entropy_from_logits

    tokens = torch.cat([prompts, responses], dim=1)
    logits = policy(input_ids=tokens[:, :-1]).logits[:, prompts.shape[1] - 1 :].float()  # [B, T, V]
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    return log_probs, entropy_from_logits(logits)


def generate(
    policy: torch.nn.Module,
    prompts: torch.Tensor,
    generator: torch.Generator | None,
    temperature: float | None,
    max_len: int,
) -> torch.Tensor:
    """Sample (or, with ``temperature=None``, greedily decode) one response per prompt, with a KV cache.

    Args:
        prompts: [B, P] token ids.
        max_len: T, the number of tokens generated at most.

    Returns:
        responses: [B, T] token ids, PAD after the first EOS.
    """
    import torch

    from verl_spro.tiny_lm import EOS, PAD

    done = torch.zeros(len(prompts), dtype=torch.bool)
    tokens: list[torch.Tensor] = []
    with torch.no_grad():
        out = policy(input_ids=prompts, use_cache=True)
        for _ in range(max_len):
            logits = out.logits[:, -1].float()
            if temperature is None:
                nxt = logits.argmax(dim=-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            done |= nxt == EOS
            tokens.append(nxt)
            if bool(done.all()):
                break
            out = policy(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True)
    responses = torch.stack(tokens, dim=1)
    return torch.nn.functional.pad(responses, (0, max_len - responses.shape[1]), value=PAD)


def sft_warmup(
    policy: torch.nn.Module, hp: Hyper, seed: int, task: Task = SORT, stop_at: float | None = None
) -> tuple[int, float]:
    """Supervised warm-up (cross-entropy on answer tokens), short on purpose: the policy ends up partly right.

    Runs ``hp.sft_steps`` steps, or with ``stop_at``, stops at the first multiple of ``hp.sft_check_every`` steps
    where the sampled accuracy (temperature ``hp.temperature``) on ``hp.eval_size`` held-out problems reaches
    ``stop_at``, with ``hp.sft_steps`` as the cap. Returns (steps done, that sampled accuracy; NaN if never measured).
    """
    import torch

    gen = torch.Generator().manual_seed(10_000 + seed)
    check_gen = torch.Generator().manual_seed(50_000 + seed)  # its own stream: checking leaves the SFT data alone
    check_prompts, check_answers = task.sample_problems(hp.eval_size, check_gen)
    optim = torch.optim.AdamW(policy.parameters(), lr=hp.sft_lr, weight_decay=0.0)
    accuracy = float("nan")
    for step in range(1, hp.sft_steps + 1):
        policy.train()
        prompts, answers = task.sample_problems(hp.sft_batch, gen)
        responses, mask = task.sft_targets(answers)
        log_probs, _ = policy_forward(policy, prompts, responses)
        loss = -(log_probs * mask).sum() / mask.sum()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if stop_at is not None and step % hp.sft_check_every == 0:
            accuracy = evaluate(policy, check_prompts, check_answers, task, check_gen, hp.temperature)
            if accuracy >= stop_at:
                return step, accuracy
    return hp.sft_steps, accuracy


def evaluate(
    policy: torch.nn.Module,
    prompts: torch.Tensor,
    answers: list[str],
    task: Task = SORT,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
) -> float:
    """Accuracy on a fixed held-out set ([N, P] prompts, N answer strings), greedy unless ``temperature`` is given."""
    policy.eval()
    responses = generate(policy, prompts, generator, temperature, task.max_response_len)
    return float(task.rewards(responses, answers).mean())


# ------------------------------------------------------------------------------------------------ the RL loop


def train_rl(
    estimator: str,
    hp: Hyper,
    seed: int,
    init_state: dict[str, torch.Tensor],
    progress: Any = None,
    task: Task = SORT,
) -> list[dict[str, Any]]:
    """RL from the warmed-up weights ``init_state`` with ``estimator`` ("spro" or "grpo"); one metrics row per step.

    The warmed-up weights are also the frozen reference policy (SFT then RL, as in the paper). ``hp.beta`` is
    SPRO's beta. The same ``seed`` gives the same prompts whatever the estimator.
    """
    import copy

    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo import ray_trainer  # module attribute lookup: picks up the plugin's wrapper
    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn
    from verl.workers.config import FSDPActorConfig

    from verl_spro.dataproto_adapter import SPRO_METRICS_KEY
    from verl_spro.estimator import SproInputError
    from verl_spro.tiny_lm import EOS, response_mask

    torch.manual_seed(seed)
    policy = task.build_policy(seed)
    policy.load_state_dict(init_state)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optim = torch.optim.AdamW(policy.parameters(), lr=hp.lr, weight_decay=0.0)

    batch_size = hp.prompts_per_step * hp.group_size
    algo_cfg = OmegaConf.create(
        {
            "adv_estimator": estimator,
            "norm_adv_by_std_in_grpo": True,
            "spro": {"beta": hp.beta, "msa_norm_by_std": False},
        }
    )
    # verl's real actor config: the policy loss reads clip ratios and global_batch_info from it.
    actor_cfg = FSDPActorConfig(
        strategy="fsdp",
        rollout_n=hp.group_size,
        ppo_mini_batch_size=batch_size // hp.mini_batches,
        ppo_micro_batch_size_per_gpu=batch_size // hp.mini_batches,
        clip_ratio=hp.clip_ratio,
        clip_ratio_low=hp.clip_ratio,
        clip_ratio_high=hp.clip_ratio,
        loss_agg_mode="seq-mean-token-mean",
        entropy_coeff=0.0,
        use_kl_loss=False,
    )
    policy_loss_fn = get_policy_loss_fn("vanilla")

    # Same prompts for both estimators (same seed); sampling has its own stream.
    prompt_gen = torch.Generator().manual_seed(20_000 + seed)
    sample_gen = torch.Generator().manual_seed(30_000 + seed)
    eval_prompts, eval_answers = task.sample_problems(hp.eval_size, torch.Generator().manual_seed(40_000 + seed))
    eval_accuracy = evaluate(policy, eval_prompts, eval_answers, task)

    rows: list[dict[str, Any]] = []
    for step in range(hp.steps + 1):
        # 1. Rollout: G samples per prompt from the current policy.
        prompts, answers = task.sample_problems(hp.prompts_per_step, prompt_gen)
        prompts = prompts.repeat_interleave(hp.group_size, dim=0)  # [B*G, P]
        answers = [a for a in answers for _ in range(hp.group_size)]
        policy.eval()
        responses = generate(policy, prompts, sample_gen, hp.temperature, task.max_response_len)  # [B*G, T]
        mask = response_mask(responses)  # [B*G, T]
        score = task.rewards(responses, answers)  # [B*G]
        with torch.no_grad():
            old_log_probs, entropy = policy_forward(policy, prompts, responses)
            ref_log_prob, _ = policy_forward(reference, prompts, responses)
        # The outcome reward sits on the last response token, as verl's reward managers put it.
        last = (mask.sum(dim=1).long() - 1).clamp(min=0)
        token_level_rewards = torch.zeros_like(mask)
        token_level_rewards[torch.arange(len(score)), last] = score

        # 2. Advantages through verl's own compute_advantage (spro: this package's plugin).
        data = DataProto.from_dict(
            tensors={
                "responses": responses,
                "response_mask": mask,
                "token_level_rewards": token_level_rewards,
                "old_log_probs": old_log_probs,
                "ref_log_prob": ref_log_prob,
            },
            non_tensors={"uid": np.array([f"{step}-{i // hp.group_size}" for i in range(len(score))], dtype=object)},
        )
        where = f"{estimator} (beta {hp.beta:g}), seed {seed}, step {step}"
        try:
            data = ray_trainer.compute_advantage(
                data, adv_estimator=estimator, norm_adv_by_std_in_grpo=True, config=algo_cfg
            )
        except SproInputError as exc:  # e.g. a beta so large that the process term overflows float32
            raise TrainingDiverged(f"{where}: {exc}") from None
        advantages = data.batch["advantages"]
        if not bool(torch.isfinite(advantages).all()):
            raise TrainingDiverged(f"{where}: non-finite advantages")

        row: dict[str, Any] = {
            "estimator": estimator,
            "seed": seed,
            "step": step,
            "accuracy": float(score.mean()),
            "eval_accuracy": eval_accuracy if step % hp.eval_every == 0 else float("nan"),
            "entropy": float(agg_loss(entropy, mask, loss_agg_mode="seq-mean-token-mean")),
            "response_length": float(mask.sum(dim=1).mean()),
            "truncated": float((~(responses == EOS).any(dim=1)).float().mean()),
        }
        row.update({k: float(v) for k, v in data.meta_info.get(SPRO_METRICS_KEY, {}).items()})
        if step == hp.steps:  # the last row only measures the final policy
            rows.append(row)
            break

        # 3. PPO update: epochs over shuffled mini-batches, verl's vanilla (clip) loss, no KL term.
        policy.train()
        order = torch.cat([torch.randperm(len(score), generator=sample_gen) for _ in range(hp.ppo_epochs)])
        for idx in order.chunk(hp.mini_batches * hp.ppo_epochs):
            mb_mask = mask[idx]
            actor_cfg.global_batch_info.update(
                dp_size=1, batch_num_tokens=int(mb_mask.sum()), global_batch_size=len(idx), loss_scale_factor=None
            )
            log_probs, _ = policy_forward(policy, prompts[idx], responses[idx])
            pg_loss, pg_metrics = policy_loss_fn(
                old_log_prob=old_log_probs[idx],
                log_prob=log_probs,
                advantages=advantages[idx],
                response_mask=mb_mask,
                loss_agg_mode=actor_cfg.loss_agg_mode,
                config=actor_cfg,
            )
            optim.zero_grad()
            pg_loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            if not (bool(torch.isfinite(pg_loss)) and bool(torch.isfinite(grad_norm))):
                raise TrainingDiverged(
                    f"{estimator} (beta {hp.beta:g}), seed {seed}, step {step}: non-finite policy loss or gradient"
                )
            optim.step()
        row["pg_clipfrac"] = pg_metrics["actor/pg_clipfrac"]
        rows.append(row)
        if (step + 1) % hp.eval_every == 0:
            eval_accuracy = evaluate(policy, eval_prompts, eval_answers, task)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(est=estimator, seed=seed, acc=f"{row['accuracy']:.2f}")
    return rows


@contextlib.contextmanager
def torch_settings(threads: int) -> Iterator[None]:
    """``threads`` torch CPU threads and deterministic algorithms, restored on the way out (runs may sit in tests)."""
    import torch
    import verl  # noqa: F401  (loads the verl.plugins entry points, ours included)

    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def warm_up(
    task: Task, hp: Hyper, seed: int, stop_at: float | None = None
) -> tuple[dict[str, torch.Tensor], int, float]:
    """A fresh policy for ``seed`` after :func:`sft_warmup`: (its weights, SFT steps done, checked accuracy)."""
    policy = task.build_policy(seed)
    steps, accuracy = sft_warmup(policy, hp, seed, task, stop_at)
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}, steps, accuracy


def run_demo(hp: Hyper, seeds: list[int], threads: int = 1, show_progress: bool = True) -> list[dict[str, Any]]:
    """For each seed: one warm-up, then RL with every estimator from the same warmed-up weights."""
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    with torch_settings(threads):
        with tqdm(total=len(seeds) * len(ESTIMATORS) * hp.steps, desc="RL steps", disable=not show_progress) as bar:
            for seed in seeds:
                init_state, _, _ = warm_up(SORT, hp, seed)
                for estimator in ESTIMATORS:
                    rows.extend(train_rl(estimator, hp, seed, init_state, progress=bar))
    return rows


# ---------------------------------------------------------------------------------------------------- reports

ROLLING = 10  # steps: "final acc" and "steps to target" both read the 10-step rolling sampled accuracy


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per dict; the union of all keys as columns. Written atomically (:func:`atomic_write`)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _per_run(rows: list[dict[str, Any]], hp: Hyper):
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for (estimator, seed), run_df in df.groupby(["estimator", "seed"], sort=False):
        run_df = run_df.sort_values("step")
        smooth = run_df["accuracy"].rolling(ROLLING, min_periods=1).mean()
        hit = run_df["step"][smooth >= hp.target_accuracy]
        evals = run_df["eval_accuracy"].dropna()
        out.append(
            {
                "estimator": estimator,
                "seed": seed,
                "start_accuracy": float(run_df["accuracy"].iloc[:5].mean()),
                "final_accuracy": float(run_df["accuracy"].iloc[-ROLLING:].mean()),
                "final_eval_accuracy": float(evals.iloc[-1]) if len(evals) else np.nan,
                "steps_to_target": float(hit.iloc[0]) if len(hit) else np.nan,
                "entropy": float(run_df["entropy"].mean()),
                "response_length": float(run_df["response_length"].mean()),
            }
        )
    return pd.DataFrame(out)


def summary_table(rows: list[dict[str, Any]], hp: Hyper) -> str:
    """Per estimator, mean ± std over seeds of the final accuracy, steps to target, mean entropy and length, then
    the SPRO - GRPO differences with their intervals (one seed: no spread; fewer than 3: no difference stated)."""
    per_run = _per_run(rows, hp)
    n_seeds = per_run["seed"].nunique()
    cols = {
        "start_accuracy": "start acc",
        "final_accuracy": "final acc",
        "final_eval_accuracy": "greedy eval acc",
        "steps_to_target": f"steps to {hp.target_accuracy:.0%}",
        "entropy": "mean entropy",
        "response_length": "mean resp len",
    }

    def cell(values: Any, digits: int) -> str:
        if n_seeds == 1:
            return f"{values.mean():.{digits}f}"
        return f"{values.mean():.{digits}f}±{values.std(ddof=0):.{digits}f}"

    header = f"{'estimator':<10}" + "".join(f"{name:>20}" for name in cols.values())
    lines = [header, "-" * len(header)]
    for estimator, group in per_run.groupby("estimator", sort=False):
        cells = []
        for col in cols:
            values = group[col]
            if col == "steps_to_target":
                reached = values.dropna()
                text = (cell(reached, 0) if len(reached) else "never") + f" ({len(reached)}/{len(values)})"
            else:
                text = cell(values, 3)
            cells.append(f"{text:>20}")
        lines.append(f"{estimator:<10}" + "".join(cells))
    spread = "one seed, so no spread" if n_seeds == 1 else f"mean±std over {n_seeds} seeds"
    lines.append(
        f"{spread}; final acc = sampled accuracy over the last {ROLLING} steps; steps to target: first step where "
        f"the {ROLLING}-step rolling sampled accuracy reaches {hp.target_accuracy:.0%} (runs that did)."
    )
    estimators = set(per_run["estimator"])
    if {"spro", "grpo"} <= estimators:
        if n_seeds < MIN_SEEDS_FOR_INTERVAL:
            lines.append(
                f"SPRO vs GRPO: {n_seeds} seed(s) are too few to tell a difference from noise, so none is stated "
                f"(run {MIN_SEEDS_FOR_INTERVAL} or more seeds; the default is 5)."
            )
        else:
            wide = per_run.pivot(index="seed", columns="estimator")
            parts = []
            for col in ("final_accuracy", "final_eval_accuracy"):
                diff, low, high = paired_difference(wide[col]["spro"], wide[col]["grpo"])
                parts.append(f"{cols[col]} {diff:+.3f} [{low:+.3f}, {high:+.3f}]: {verdict(low, high)}")
            lines.append(f"SPRO - GRPO, paired by seed, {INTERVAL} over {n_seeds} seeds:")
            lines += [f"  {p}" for p in parts]
    return "\n".join(lines)


def _band(ax: Any, wide: Any, color: str | None, label: str, **style: Any) -> None:
    """Mean over seeds ([steps, seeds] frame) as a line, ± std over seeds (as in the table) as a band."""
    mean, std = wide.mean(axis=1), wide.std(axis=1, ddof=0)
    ax.plot(wide.index, mean, color=color, label=label, **style)
    ax.fill_between(wide.index, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def plot(rows: list[dict[str, Any]], out: Path, hp: Hyper) -> list[Path]:
    """Write :func:`figure` to ``OUT/spro_vs_grpo.png``."""
    import matplotlib.pyplot as plt

    fig = figure(rows, hp)
    path = out / "spro_vs_grpo.png"
    save_figure(fig, path)
    plt.close(fig)
    return [path]


def figure(rows: list[dict[str, Any]], hp: Hyper) -> Any:
    """Four panels against RL step, both estimators, mean ± std over seeds (the table's spread):
    sampled accuracy (10-step rolling, the quantity behind "steps to target", whose line is drawn) with the
    greedy held-out accuracy; entropy; response length; SPRO's |process| and |outcome| advantage terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    colors = {"spro": "tab:red", "grpo": "tab:blue"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    ax_acc, ax_ent, ax_len, ax_adv = axes.flat
    for estimator, group in df.groupby("estimator", sort=False):
        color, name = colors.get(estimator), estimator.upper()
        wide = group.pivot(index="step", columns="seed", values="accuracy").rolling(ROLLING, min_periods=1).mean()
        _band(ax_acc, wide, color, f"{name} sampled ({ROLLING}-step rolling)")
        evals = group.dropna(subset=["eval_accuracy"]).pivot(index="step", columns="seed", values="eval_accuracy")
        _band(ax_acc, evals, color, f"{name} greedy, held-out", ls="--", marker=".")
        _band(ax_ent, group.pivot(index="step", columns="seed", values="entropy"), color, name)
        _band(ax_len, group.pivot(index="step", columns="seed", values="response_length"), color, name)
    ax_acc.axhline(hp.target_accuracy, color="gray", ls=":", label=f"target of 'steps to {hp.target_accuracy:.0%}'")
    spro = df[df["estimator"] == "spro"]
    for key, label, color in (
        ("spro/outcome_abs_mean", "|outcome advantage| (spro/outcome_abs_mean)", "tab:purple"),
        ("spro/msa_abs_mean", "|process advantage| (spro/msa_abs_mean)", "tab:orange"),
    ):
        if key in spro and spro[key].notna().any():
            _band(ax_adv, spro.pivot(index="step", columns="seed", values=key), color, label)
    ax_adv.set_yscale("symlog", linthresh=1e-3)
    titles = (
        (ax_acc, "accuracy", "fraction of answers correct"),
        (ax_ent, "policy entropy (nats/token)", "entropy (nats per token)"),
        (ax_len, "response length (tokens)", "tokens per response"),
        (
            ax_adv,
            f"SPRO's two advantage terms, mean |.| per token (beta {hp.beta:g})",
            "mean |advantage| (symlog scale)",
        ),
    )
    for ax, title, ylabel in titles:
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n_seeds = df["seed"].nunique()
    spread = "one seed (no spread)" if n_seeds == 1 else f"mean and ± std band over {n_seeds} seeds"
    fig.suptitle(f"SPRO vs GRPO, tiny Qwen2 on sorting digits, {spread}")
    fig.tight_layout()
    return fig
