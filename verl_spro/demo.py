"""SPRO vs GRPO, learning on a laptop CPU: the same tiny policy, task and seeds, only the estimator differs.

A ~250k-parameter Qwen2 model (built in code, nothing downloaded) is warmed up with a short supervised phase on
sorting digits, then trained with RL: G sampled answers per prompt, a 0/1 rule reward, advantages from verl's
real ``compute_advantage`` (``adv_estimator=spro`` through this package's plugin, or verl's ``grpo``), verl's real
PPO-clip policy loss with ``loss_agg_mode=seq-mean-token-mean`` and no KL loss. The warmed-up model is the frozen
reference policy that SPRO's intrinsic reward compares against.

Writes ``OUT/metrics.csv`` (one row per estimator, seed and step) and PNG plots of accuracy, entropy and
response length against step (mean over seeds with a min-max band), and prints a summary table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verl_spro.argtypes import positive_int

if TYPE_CHECKING:
    import torch

ESTIMATORS = ("spro", "grpo")


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
    sft_steps: int = 40  # enough for ~40% sampled accuracy, far from all
    sft_batch: int = 64
    sft_lr: float = 3e-3
    eval_every: int = 10
    eval_size: int = 256
    target_accuracy: float = 0.65


QUICK = Hyper(steps=80)  # and one seed


# --------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--quick``, ``--seeds``, ``--steps``, ``--out`` (and a few knobs) on ``parser``."""
    parser.add_argument("--quick", action="store_true", help="short run: 1 seed, 80 steps (about 1 min on 2 cores)")
    parser.add_argument("--seeds", type=positive_int("--seeds"), default=None, help="number of seeds (default 5)")
    parser.add_argument("--steps", type=positive_int("--steps"), default=None, help="RL steps per run")
    parser.add_argument("--out", type=Path, default=Path("spro_demo"), help="output folder (default ./spro_demo)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    parser.add_argument("--beta", type=float, default=None, help="SPRO intrinsic reward scale (default 0.05)")
    parser.add_argument("--threads", type=positive_int("--threads"), default=1, help="torch CPU threads (1)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def _check_out_dir(out: Path) -> str | None:
    """None if ``out`` can be created and written to, else the reason."""
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a directory"
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"--out {out}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"--out {out}: {probe} is not writable"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``verl-spro demo``. Returns the exit code (2 on bad arguments)."""
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
    problem = _check_out_dir(args.out)
    if problem is not None:
        print(f"verl-spro demo: error: {problem}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"verl-spro demo: error: --out {args.out}: {exc.strerror}", file=sys.stderr)
        return 2

    seeds = list(range(args.first_seed, args.first_seed + n_seeds))
    t0 = time.time()
    rows = run_demo(hp, seeds, threads=args.threads)
    write_csv(rows, args.out / "metrics.csv")
    print(summary_table(rows, hp))
    if not args.no_plots:
        for path in plot(rows, args.out):
            print(f"wrote {path}")
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
    policy: torch.nn.Module, prompts: torch.Tensor, generator: torch.Generator, temperature: float | None
) -> torch.Tensor:
    """Sample (or, with ``temperature=None``, greedily decode) one response per prompt.

    Args:
        prompts: [B, P] token ids.

    Returns:
        responses: [B, MAX_RESPONSE_LEN] token ids, PAD after the first EOS.
    """
    import torch

    from verl_spro.tiny_lm import EOS, MAX_RESPONSE_LEN, PAD

    tokens = prompts
    done = torch.zeros(len(prompts), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(MAX_RESPONSE_LEN):
            logits = policy(input_ids=tokens).logits[:, -1].float()
            if temperature is None:
                nxt = logits.argmax(dim=-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            done |= nxt == EOS
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if bool(done.all()):
                break
    responses = tokens[:, prompts.shape[1] :]
    return torch.nn.functional.pad(responses, (0, MAX_RESPONSE_LEN - responses.shape[1]), value=PAD)


def sft_warmup(policy: torch.nn.Module, hp: Hyper, seed: int) -> None:
    """Supervised warm-up (cross-entropy on answer tokens), short on purpose: the policy ends up partly right."""
    import torch

    from verl_spro.tiny_lm import sample_problems, sft_targets

    gen = torch.Generator().manual_seed(10_000 + seed)
    optim = torch.optim.AdamW(policy.parameters(), lr=hp.sft_lr, weight_decay=0.0)
    policy.train()
    for _ in range(hp.sft_steps):
        prompts, answers = sample_problems(hp.sft_batch, gen)
        responses, mask = sft_targets(answers)
        log_probs, _ = policy_forward(policy, prompts, responses)
        loss = -(log_probs * mask).sum() / mask.sum()
        optim.zero_grad()
        loss.backward()
        optim.step()


def evaluate(policy: torch.nn.Module, prompts: torch.Tensor, answers: list[str]) -> float:
    """Greedy-decoding accuracy on a fixed held-out set ([N, P] prompts, N answer strings)."""
    from verl_spro.tiny_lm import rewards

    policy.eval()
    return float(rewards(generate(policy, prompts, None, temperature=None), answers).mean())


# ------------------------------------------------------------------------------------------------ the RL loop


def train_rl(
    estimator: str,
    hp: Hyper,
    seed: int,
    init_state: dict[str, torch.Tensor],
    progress: Any = None,
) -> list[dict[str, Any]]:
    """RL from the warmed-up weights ``init_state`` with ``estimator`` ("spro" or "grpo"); one metrics row per step.

    The warmed-up weights are also the frozen reference policy (SFT then RL, as in the paper).
    """
    import copy

    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo import ray_trainer  # module attribute lookup: picks up the plugin's wrapper
    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn
    from verl.workers.config import FSDPActorConfig

    from verl_spro.tiny_lm import EOS, build_policy, response_mask, rewards, sample_problems
    from verl_spro.verl_integration import SPRO_METRICS_KEY

    torch.manual_seed(seed)
    policy = build_policy(seed)
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
    eval_prompts, eval_answers = sample_problems(hp.eval_size, torch.Generator().manual_seed(40_000 + seed))
    eval_accuracy = evaluate(policy, eval_prompts, eval_answers)

    rows: list[dict[str, Any]] = []
    for step in range(hp.steps + 1):
        # 1. Rollout: G samples per prompt from the current policy.
        prompts, answers = sample_problems(hp.prompts_per_step, prompt_gen)
        prompts = prompts.repeat_interleave(hp.group_size, dim=0)  # [B*G, P]
        answers = [a for a in answers for _ in range(hp.group_size)]
        policy.eval()
        responses = generate(policy, prompts, sample_gen, temperature=hp.temperature)  # [B*G, T]
        mask = response_mask(responses)  # [B*G, T]
        score = rewards(responses, answers)  # [B*G]
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
        data = ray_trainer.compute_advantage(
            data, adv_estimator=estimator, norm_adv_by_std_in_grpo=True, config=algo_cfg
        )
        advantages = data.batch["advantages"]

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
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optim.step()
        row["pg_clipfrac"] = pg_metrics["actor/pg_clipfrac"]
        rows.append(row)
        if (step + 1) % hp.eval_every == 0:
            eval_accuracy = evaluate(policy, eval_prompts, eval_answers)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(est=estimator, seed=seed, acc=f"{row['accuracy']:.2f}")
    return rows


def run_demo(hp: Hyper, seeds: list[int], threads: int = 1, show_progress: bool = True) -> list[dict[str, Any]]:
    """For each seed: one warm-up, then RL with every estimator from the same warmed-up weights."""
    import torch
    import verl  # noqa: F401  (loads the verl.plugins entry points, ours included)
    from tqdm.auto import tqdm

    from verl_spro.tiny_lm import build_policy

    # Global torch settings, restored on the way out (the demo may run inside a test session).
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    rows: list[dict[str, Any]] = []
    try:
        with tqdm(total=len(seeds) * len(ESTIMATORS) * hp.steps, desc="RL steps", disable=not show_progress) as bar:
            for seed in seeds:
                policy = build_policy(seed)
                sft_warmup(policy, hp, seed)
                init_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
                for estimator in ESTIMATORS:
                    rows.extend(train_rl(estimator, hp, seed, init_state, progress=bar))
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
    return rows


# ---------------------------------------------------------------------------------------------------- reports


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per (estimator, seed, step); the union of all keys as columns."""
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


def _per_run(rows: list[dict[str, Any]], hp: Hyper):
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for (estimator, seed), run_df in df.groupby(["estimator", "seed"], sort=False):
        run_df = run_df.sort_values("step")
        smooth = run_df["accuracy"].rolling(10, min_periods=1).mean()
        hit = run_df["step"][smooth >= hp.target_accuracy]
        evals = run_df["eval_accuracy"].dropna()
        out.append(
            {
                "estimator": estimator,
                "seed": seed,
                "start_accuracy": float(run_df["accuracy"].iloc[:5].mean()),
                "final_accuracy": float(run_df["accuracy"].iloc[-10:].mean()),
                "final_eval_accuracy": float(evals.iloc[-1]) if len(evals) else np.nan,
                "steps_to_target": float(hit.iloc[0]) if len(hit) else np.nan,
                "entropy": float(run_df["entropy"].mean()),
                "response_length": float(run_df["response_length"].mean()),
            }
        )
    return pd.DataFrame(out)


def summary_table(rows: list[dict[str, Any]], hp: Hyper) -> str:
    """Per estimator, mean ± std over seeds of the final accuracy, steps to target, mean entropy and length."""
    per_run = _per_run(rows, hp)
    cols = {
        "start_accuracy": "start acc",
        "final_accuracy": "final acc",
        "final_eval_accuracy": "greedy eval acc",
        "steps_to_target": f"steps to {hp.target_accuracy:.0%}",
        "entropy": "mean entropy",
        "response_length": "mean resp len",
    }
    header = f"{'estimator':<10}" + "".join(f"{name:>20}" for name in cols.values())
    lines = [header, "-" * len(header)]
    for estimator, group in per_run.groupby("estimator", sort=False):
        cells = []
        for col in cols:
            values = group[col]
            if col == "steps_to_target":
                reached = values.dropna()
                cell = f"{reached.mean():.0f}±{reached.std(ddof=0):.0f}" if len(reached) else "never"
                cell += f" ({len(reached)}/{len(values)})"
            else:
                cell = f"{values.mean():.3f}±{values.std(ddof=0):.3f}"
            cells.append(f"{cell:>20}")
        lines.append(f"{estimator:<10}" + "".join(cells))
    n_seeds = per_run["seed"].nunique()
    lines.append(
        f"mean±std over {n_seeds} seed(s); final acc = sampled accuracy over the last 10 steps; steps to target: "
        f"first step where the 10-step rolling sampled accuracy reaches {hp.target_accuracy:.0%} (runs that did)."
    )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """accuracy / entropy / response length against step, both estimators, mean over seeds with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    panels = [
        ("accuracy", "sampled accuracy (rolling 5)"),
        ("entropy", "policy entropy (nats/token)"),
        ("response_length", "response length (tokens)"),
    ]
    colors = {"spro": "tab:red", "grpo": "tab:blue"}
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.2))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for estimator, group in df.groupby("estimator", sort=False):
            wide = group.pivot(index="step", columns="seed", values=metric)
            if metric == "accuracy":
                wide = wide.rolling(5, min_periods=1).mean()
            ax.plot(wide.index, wide.mean(axis=1), color=colors.get(estimator), label=estimator.upper())
            ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=colors.get(estimator), alpha=0.2)
        if metric == "accuracy" and "eval_accuracy" in df:
            for estimator, group in df.groupby("estimator", sort=False):
                ev = group.dropna(subset=["eval_accuracy"]).groupby("step")["eval_accuracy"].mean()
                ax.plot(
                    ev.index,
                    ev.values,
                    ls="--",
                    marker=".",
                    color=colors.get(estimator),
                    alpha=0.7,
                    label=f"{estimator.upper()} greedy eval",
                )
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
        ax.legend()
    n_seeds = df["seed"].nunique()
    fig.suptitle(f"SPRO vs GRPO, tiny Qwen2 on sorting digits, mean and min-max band over {n_seeds} seed(s)")
    fig.tight_layout()
    path = out / "spro_vs_grpo.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
