"""Where does SPRO's process term matter? A pre-registered sweep over answer length and beta, on the CPU.

The demo's machinery (tiny Qwen2 built in code, verl's real ``compute_advantage`` and PPO-clip policy loss, one
``train_rl`` shared with ``verl-spro demo``) on three tasks whose correct answers get longer (digit sort: 3-5
tokens, long digit sort: 7-11, addition with carries: 15-25), each with its own SFT warm-up to the same sampled
start accuracy and that warmed-up model frozen as the reference; arms ``grpo`` and ``spro`` at each beta, with the
same seeds, data, hyper-parameters and steps. The protocol (docs/sweep/PROTOCOL.md) was fixed before any result.

Writes to OUT: ``steps.csv`` (every run and step), ``warmups.csv`` (one row per task and seed), ``runs.csv`` (the
measures of every run), ``summary.csv`` (per task, beta and measure: the difference to GRPO, paired by seed, with
a 95% paired t-interval over seeds, :mod:`verl_spro.stats`) and ``sweep.png``; prints the summary table.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verl_spro.argtypes import positive_int, positive_threads, usable_cpus
from verl_spro.demo import (
    Hyper,
    TrainingDiverged,
    check_first_seed,
    save_figure,
    write_csv,
)
from verl_spro.output_files import OutDirLock, OutputPathError, add_out_arguments, claim_out_dir, one_line
from verl_spro.stats import INTERVAL, paired_difference, verdict
from verl_spro.tiny_lm import TASKS

if TYPE_CHECKING:
    import pandas as pd

# ------------------------------------------------------------------------- the protocol (docs/sweep/PROTOCOL.md)

SWEEP_TASKS = ("sort", "sort_long", "add_carries")
BETAS = (0.05, 0.2, 1.0)
SEEDS = 5
OUTPUT_FILES = ("steps.csv", "warmups.csv", "runs.csv", "summary.csv", "sweep.png")  # written into --out
START_ACCURACY = 0.40  # every warm-up stops at the first check where sampled accuracy reaches this
TARGET_ACCURACY = 0.55  # "steps to target": 10-step rolling sampled accuracy, the same for every task
FINAL_WINDOW = 10  # final sampled accuracy / entropy / length: mean over the last 10 steps
PROTOCOL = Hyper(
    steps=60,
    prompts_per_step=16,
    group_size=8,
    mini_batches=2,
    ppo_epochs=2,
    lr=2e-4,
    clip_ratio=0.2,
    temperature=1.0,
    sft_steps=1500,  # cap of the warm-up
    sft_check_every=10,
    sft_batch=64,
    sft_lr=3e-3,
    eval_every=20,
    eval_size=256,
    target_accuracy=TARGET_ACCURACY,
)
# Seconds, not a result: the same code path on a toy scale, for the tests.
TINY = replace(
    PROTOCOL, steps=3, prompts_per_step=4, group_size=4, sft_steps=4, sft_check_every=2, eval_every=1, eval_size=16
)

# Measures compared to GRPO (per run, see per_run_measures), in the summary's order.
MEASURES = {
    "final_accuracy": "final sampled acc",
    "final_greedy_accuracy": "final greedy acc",
    "steps_to_target": "steps to target",
    "final_entropy": "final entropy",
    "final_response_length": "final resp len",
}


@dataclass(frozen=True)
class Arm:
    """One estimator setting; ``beta`` is NaN for GRPO (no process term)."""

    name: str
    estimator: str
    beta: float


def arms(betas: tuple[float, ...]) -> list[Arm]:
    """GRPO, then SPRO at each beta."""
    return [Arm("grpo", "grpo", math.nan), *(Arm(f"spro_beta{b:g}", "spro", b) for b in betas)]


# --------------------------------------------------------------------------------------------------------- CLI


def _betas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--betas must be comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise argparse.ArgumentTypeError(f"--betas must be finite and > 0 (GRPO is always an arm), got {bad[0]}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"--betas has a repeated value: {text!r}")
    return values


def _tasks(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"--tasks has an unknown task {unknown[0]!r} (known: {', '.join(TASKS)})")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"--tasks has a repeated task: {text!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the sweep's options; the defaults are the pre-registered protocol."""
    add_out_arguments(
        parser,
        Path("spro_sweep"),
        "output folder (default ./spro_sweep)",
        "replace the results of an earlier sweep in --out (they are deleted first, so no old file stays beside new "
        "ones); without it such an --out is refused",
    )
    parser.add_argument("--seeds", type=positive_int("--seeds"), default=SEEDS, help=f"seeds per arm ({SEEDS})")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    parser.add_argument("--tasks", type=_tasks, default=SWEEP_TASKS, help=f"comma-separated ({','.join(SWEEP_TASKS)})")
    parser.add_argument(
        "--betas", type=_betas, default=BETAS, help=f"SPRO betas, comma-separated ({','.join(map(str, BETAS))})"
    )
    parser.add_argument("--steps", type=positive_int("--steps"), default=None, help=f"RL steps ({PROTOCOL.steps})")
    parser.add_argument(
        "--workers", type=positive_threads("--workers"), default=None, help="processes of 1 thread (2, or 1 on 1 CPU)"
    )
    parser.add_argument("--tiny", action="store_true", help="toy sizes (seconds): checks the pipeline, no result")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``verl-spro sweep``. Returns the exit code (2 on bad arguments, 130 when interrupted by
    Ctrl-C, 143 when stopped by SIGTERM; either stops the workers and keeps the finished units)."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    claim = check_first_seed(args.first_seed, args.seeds) or claim_out_dir(
        args.out, files=OUTPUT_FILES, earlier=OUTPUT_FILES, replace=args.force
    )
    if not isinstance(claim, OutDirLock):
        print(f"verl-spro sweep: error: {claim}", file=sys.stderr)
        return 2
    try:
        for name in OUTPUT_FILES:  # --force: an interrupted sweep must not leave old results beside new ones
            (args.out / name).unlink(missing_ok=True)
        return _run_locked(args)
    finally:
        claim.release()


def _run_locked(args: argparse.Namespace) -> int:
    hp = TINY if args.tiny else PROTOCOL
    workers = args.workers if args.workers is not None else min(2, usable_cpus())
    if args.steps is not None:
        hp = replace(hp, steps=args.steps)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    print(
        f"sweep: tasks {','.join(args.tasks)}; arms {', '.join(a.name for a in arms(args.betas))}; seeds "
        f"{seeds[0]}..{seeds[-1]}; {hp.steps} RL steps; {workers} worker(s)",
        flush=True,
    )
    registered = (hp, args.tasks, args.betas, seeds) == (PROTOCOL, SWEEP_TASKS, BETAS, list(range(SEEDS)))
    print(
        "this is the pre-registered protocol (docs/sweep/PROTOCOL.md)"
        if registered
        else "NOT the pre-registered protocol: its results are not the committed ones",
        flush=True,
    )
    t0, cpu0 = time.time(), time.process_time()
    try:
        warmups, steps = run_sweep(hp, args.tasks, args.betas, seeds, workers, out=args.out)
    except KeyboardInterrupt as exc:
        how = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        print(f"verl-spro sweep: {how}; the finished (task, seed) units are in {args.out}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except TrainingDiverged as exc:
        print(
            f"verl-spro sweep: error: training diverged: {exc}; the finished (task, seed) units are in {args.out}",
            file=sys.stderr,
        )
        return 1
    except (OSError, OutputPathError) as exc:
        print(f"verl-spro sweep: error: cannot write to {args.out}: {one_line(exc)}", file=sys.stderr)
        return 2
    runs = per_run_measures(steps, hp)
    summary = compare_to_grpo(runs, hp.steps)
    try:
        write_csv(runs.to_dict("records"), args.out / "runs.csv")
        write_csv(summary.to_dict("records"), args.out / "summary.csv")
        print(summary_table(summary, warmups))
        if not args.no_plots:
            print(f"wrote {plot(summary, args.out)}")
    except (OSError, OutputPathError, KeyboardInterrupt) as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"cannot write to {args.out}: {one_line(exc)}"
        print(f"verl-spro sweep: error: {why}; steps.csv and warmups.csv are complete", file=sys.stderr)
        if isinstance(exc, KeyboardInterrupt):
            return 143 if isinstance(exc, Terminated) else 130
        return 2
    wall = time.time() - t0
    cpu = time.process_time() - cpu0 + _children_cpu()
    print(f"wrote {args.out}/{{steps,warmups,runs,summary}}.csv  (wall {wall:.0f} s, CPU {cpu:.0f} s)")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the workers are stopped and what is finished is kept."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------------- the runs


def run_unit(
    task_name: str, seed: int, hp: Hyper, betas: tuple[float, ...], threads: int = 1, progress: Any = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One task and seed: one warm-up shared by every arm, then RL in each arm. Returns (warm-up row, step rows).

    ``progress.update(1)`` is called after every RL step (``train_rl``'s tqdm-style progress)."""
    from verl_spro.demo import torch_settings, train_rl, warm_up
    from verl_spro.quiet import quiet_verl_import_noise

    # A worker process does not inherit the CLI's filters: the same start-up noise, quieted the same way.
    quiet_verl_import_noise()
    task = TASKS[task_name]
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with torch_settings(threads):
        init_state, sft_steps, start_accuracy = warm_up(task, hp, seed, stop_at=START_ACCURACY)
        warmup = {"task": task_name, "seed": seed, "sft_steps": sft_steps, "sampled_accuracy": start_accuracy}
        for arm in arms(betas):
            arm_hp = hp if arm.estimator == "grpo" else replace(hp, beta=arm.beta)
            for row in train_rl(arm.estimator, arm_hp, seed, init_state, progress=progress, task=task):
                rows.append({"task": task_name, "arm": arm.name, "beta": arm.beta, **row})
    warmup["seconds"] = time.time() - t0
    return warmup, rows


class _QueueProgress:
    """A worker's ``train_rl`` progress: each RL step goes to the parent through a queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def update(self, n: int = 1) -> None:
        self.queue.put(n)

    def set_postfix(self, **_: Any) -> None:
        pass


_worker_progress: _QueueProgress | None = None


def _init_worker(queue: Any, parent: int) -> None:
    """Pool worker start: Ctrl-C and SIGTERM are the parent's to handle (it stops the workers); a worker whose
    parent dies, even by SIGKILL, gets SIGTERM from the kernel (Linux) instead of computing on for nobody."""

    global _worker_progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_progress = _QueueProgress(queue)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above: nobody would read the results
        os._exit(1)


def _run_unit_star(unit: tuple[str, int, Hyper, tuple[float, ...]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return run_unit(*unit, progress=_worker_progress)


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class SweepProgress:
    """RL steps and units done out of the total, elapsed time and an ETA, printed every ``every`` seconds (the
    first line after ``every`` seconds: a unit, warm-up and four arms, takes minutes)."""

    def __init__(
        self,
        total_steps: int,
        total_units: int,
        every: float = 30.0,
        clock: Any = time.monotonic,
        say: Any = print,
    ) -> None:
        self.total_steps, self.total_units, self.every = total_steps, total_units, every
        self.clock, self.say = clock, say
        self.steps = self.units = 0
        self.start = clock()
        self.next_line = self.start + every

    def update(self, n: int = 1) -> None:
        self.steps += n
        self.tick()

    def set_postfix(self, **_: Any) -> None:
        pass

    def unit_done(self) -> None:
        self.units += 1

    def line(self) -> str:
        elapsed = self.clock() - self.start
        if self.steps:
            eta = f"ETA {_duration(elapsed * (self.total_steps - self.steps) / self.steps)}"
        else:
            eta = "ETA after the first RL step (warming up)"
        percent = 100 * self.steps / max(self.total_steps, 1)
        return (
            f"sweep: {self.steps}/{self.total_steps} RL steps ({percent:.0f}%), {self.units}/{self.total_units} "
            f"units done; elapsed {_duration(elapsed)}, {eta}"
        )

    def tick(self) -> None:
        """Print the progress line if it is due."""
        if self.clock() >= self.next_line:
            self.say(self.line(), flush=True)
            self.next_line = self.clock() + self.every


def run_sweep(
    hp: Hyper,
    task_names: tuple[str, ...],
    betas: tuple[float, ...],
    seeds: list[int],
    workers: int = 1,
    out: Path | None = None,
    progress_every: float = 30.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (task, seed) unit, on ``workers`` processes of one torch thread each. Returns (warm-ups, step rows).

    A progress line (RL steps and units done, elapsed, ETA) every ``progress_every`` seconds.

    With ``out``, ``warmups.csv`` and ``steps.csv`` are rewritten after every finished unit, so an interrupted
    sweep keeps what it finished.
    """
    import multiprocessing

    import pandas as pd

    # The long tasks first, so the last unit to finish is a short one.
    units = sorted(((t, s) for t in task_names for s in seeds), key=lambda u: -TASKS[u[0]].max_response_len)
    warmups: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    t0 = time.time()

    def record(warmup: dict[str, Any], unit_rows: list[dict[str, Any]]) -> None:
        warmups.append(warmup)
        rows.extend(unit_rows)
        print(
            f"[{len(warmups)}/{len(units)}] {warmup['task']} seed {warmup['seed']}: warm-up {warmup['sft_steps']} "
            f"steps (sampled acc {warmup['sampled_accuracy']:.3f}), {len(betas) + 1} arms, "
            f"{warmup['seconds']:.0f} s; elapsed {time.time() - t0:.0f} s",
            flush=True,
        )
        if out is not None:
            write_csv(sorted(warmups, key=lambda w: (w["task"], w["seed"])), out / "warmups.csv")
            write_csv(rows, out / "steps.csv")

    progress = SweepProgress(len(units) * len(arms(betas)) * hp.steps, len(units), every=progress_every)
    if workers == 1:
        for task_name, seed in units:
            record(*run_unit(task_name, seed, hp, betas, progress=progress))
            progress.unit_done()
    else:
        # spawn: a fork of a process that already ran torch can deadlock in its thread pools. The workers ignore
        # SIGINT: Ctrl-C (and SIGTERM, turned into KeyboardInterrupt by `run`) reaches the parent alone, which then
        # stops them (terminate), instead of a traceback each.
        context = multiprocessing.get_context("spawn")
        steps_done = context.Queue()
        pool = context.Pool(workers, initializer=_init_worker, initargs=(steps_done, os.getpid()))
        stopped = True
        try:
            results = pool.imap_unordered(_run_unit_star, [(t, s, hp, betas) for t, s in units])
            while True:
                try:
                    result = results.next(timeout=1.0)
                except multiprocessing.TimeoutError:
                    result = None
                except StopIteration:
                    break
                while not steps_done.empty():
                    progress.update(steps_done.get_nowait())
                if result is not None:
                    progress.unit_done()
                    record(*result)
                progress.tick()
            # The last steps' reports may trail the last result (another pipe): collect them for the final count.
            while progress.steps < progress.total_steps:
                try:
                    progress.update(steps_done.get(timeout=1.0))
                except queue.Empty:
                    break
            stopped = False
        finally:
            children = multiprocessing.active_children()
            pool.terminate()
            pool.join()
            if stopped and children:
                print(
                    f"verl-spro sweep: stopped {len(children)} worker process(es) "
                    f"(pid {', '.join(str(pid) for pid in sorted(c.pid for c in children))})",
                    file=sys.stderr,
                    flush=True,
                )
    steps = pd.DataFrame(rows).sort_values(["task", "arm", "seed", "step"], kind="stable").reset_index(drop=True)
    if out is not None:
        write_csv(steps.to_dict("records"), out / "steps.csv")
    return pd.DataFrame(warmups).sort_values(["task", "seed"]).reset_index(drop=True), steps


# ---------------------------------------------------------------------------------------------------- analysis


def per_run_measures(steps: pd.DataFrame, hp: Hyper) -> pd.DataFrame:
    """One row per (task, arm, seed) with the protocol's measures (NaN steps_to_target: never reached)."""
    import numpy as np
    import pandas as pd

    out = []
    for (task, arm, seed), run_df in steps.groupby(["task", "arm", "seed"], sort=False):
        run_df = run_df.sort_values("step")
        last = run_df.iloc[-FINAL_WINDOW:]
        rolling = run_df["accuracy"].rolling(FINAL_WINDOW, min_periods=1).mean()
        hit = run_df["step"][rolling >= hp.target_accuracy]
        evals = run_df["eval_accuracy"].dropna()
        row = {
            "task": task,
            "arm": arm,
            "beta": float(run_df["beta"].iloc[0]),
            "seed": seed,
            "answer_tokens": answer_tokens(task),
            "start_accuracy": float(run_df["accuracy"].iloc[:5].mean()),
            "start_greedy_accuracy": float(evals.iloc[0]) if len(evals) else np.nan,
            "final_accuracy": float(last["accuracy"].mean()),
            "final_greedy_accuracy": float(evals.iloc[-1]) if len(evals) else np.nan,
            "steps_to_target": float(hit.iloc[0]) if len(hit) else np.nan,
            "final_entropy": float(last["entropy"].mean()),
            "final_response_length": float(last["response_length"].mean()),
        }
        for key in ("spro/msa_abs_mean", "spro/outcome_abs_mean"):
            row[key] = float(run_df[key].mean()) if key in run_df else np.nan
        out.append(row)
    return pd.DataFrame(out)


@functools.cache
def answer_tokens(task_name: str) -> float:
    """Mean length of a correct answer in tokens, EOS included (over 4096 problems drawn with a fixed seed)."""
    import torch

    _, answers = TASKS[task_name].sample_problems(4096, torch.Generator().manual_seed(0))
    return sum(len(a) + 1 for a in answers) / len(answers)


def compare_to_grpo(runs: pd.DataFrame, steps: int) -> pd.DataFrame:
    """Per task, SPRO beta and measure: SPRO and GRPO means over seeds, and the paired difference with its interval.

    A run that never reaches the target counts as ``steps + 1`` steps for the difference (censored; the number of
    runs that reached it is in ``spro_reached`` / ``grpo_reached``).
    """
    import pandas as pd

    out = []
    by_length = sorted(runs.groupby("task"), key=lambda item: float(item[1]["answer_tokens"].iloc[0]))
    for task, task_runs in by_length:
        grpo = task_runs[task_runs["arm"] == "grpo"].set_index("seed")
        for _, spro in task_runs[task_runs["arm"] != "grpo"].groupby("arm", sort=False):
            spro = spro.set_index("seed")
            seeds = sorted(set(spro.index) & set(grpo.index))
            for measure in MEASURES:
                a, b = spro.loc[seeds, measure], grpo.loc[seeds, measure]
                row = {
                    "task": task,
                    "answer_tokens": float(task_runs["answer_tokens"].iloc[0]),
                    "beta": float(spro["beta"].iloc[0]),
                    "measure": measure,
                    "seeds": len(seeds),
                }
                if measure == "steps_to_target":
                    row.update(spro_reached=int(a.notna().sum()), grpo_reached=int(b.notna().sum()))
                    a, b = a.fillna(steps + 1), b.fillna(steps + 1)
                diff, low, high = paired_difference(a, b)
                row.update(spro=float(a.mean()), grpo=float(b.mean()), diff=diff, ci_low=low, ci_high=high)
                row["msa_over_outcome"] = float(
                    (spro.loc[seeds, "spro/msa_abs_mean"] / spro.loc[seeds, "spro/outcome_abs_mean"]).mean()
                )
                out.append(row)
    return pd.DataFrame(out)


def summary_table(summary: pd.DataFrame, warmups: pd.DataFrame) -> str:
    """Warm-ups per task, then per task and beta: SPRO - GRPO [95% interval] for each measure."""
    lines = ["warm-up (SFT steps, sampled accuracy at its end), per task, mean over seeds:"]
    for task, group in sorted(warmups.groupby("task"), key=lambda item: answer_tokens(str(item[0]))):
        lines.append(
            f"  {task:<12} {group['sft_steps'].mean():7.0f} steps  sampled acc {group['sampled_accuracy'].mean():.3f}"
            f"  (seeds: {', '.join(f'{v:.2f}' for v in group['sampled_accuracy'])})"
        )
    header = f"{'task':<12}{'ans len':>8}{'beta':>6}  {'measure':<18}{'SPRO':>8}{'GRPO':>8}  {'SPRO-GRPO [95% CI]':<26}"
    lines += ["", header + "verdict", "-" * (len(header) + 14)]
    for row in summary.itertuples():
        ci = "" if math.isnan(row.ci_low) else f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
        lines.append(
            f"{row.task:<12}{row.answer_tokens:8.1f}{row.beta:6g}  {MEASURES[row.measure]:<18}{row.spro:8.3f}"
            f"{row.grpo:8.3f}  {f'{row.diff:+.3f}{ci}':<26}{verdict(row.ci_low, row.ci_high)}"
        )
    lines.append(
        f"mean over seeds; difference paired by seed with a {INTERVAL} over seeds; steps to target: a run that "
        "never reaches it counts as steps+1."
    )
    return "\n".join(lines)


#: The y axis of each panel of sweep.png: what a point above 0 means.
PANEL_YLABELS = {
    "final_accuracy": "SPRO - GRPO, accuracy (up: SPRO better)",
    "final_greedy_accuracy": "SPRO - GRPO, accuracy (up: SPRO better)",
    "steps_to_target": "SPRO - GRPO, RL steps (up: SPRO slower, worse)",
}


def plot(summary: pd.DataFrame, out: Path) -> Path:
    """Write :func:`figure` to ``OUT/sweep.png``."""
    import matplotlib.pyplot as plt

    fig = figure(summary)
    path = out / "sweep.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def figure(summary: pd.DataFrame) -> Any:
    """SPRO - GRPO against answer length, one line per beta with its 95% intervals, one panel per main measure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(PANEL_YLABELS)
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.4))
    betas = sorted(summary["beta"].unique())
    for ax, measure in zip(axes, panels, strict=True):
        for i, beta in enumerate(betas):
            rows = summary[(summary["measure"] == measure) & (summary["beta"] == beta)].sort_values("answer_tokens")
            x = rows["answer_tokens"] + (i - (len(betas) - 1) / 2) * 0.25  # side by side, not on top of each other
            yerr = [rows["diff"] - rows["ci_low"], rows["ci_high"] - rows["diff"]]
            ax.errorbar(x, rows["diff"], yerr=yerr, marker="o", capsize=3, label=f"beta {beta:g}")
        ax.axhline(0.0, color="black", lw=0.8)
        tasks = summary.drop_duplicates("task").sort_values("answer_tokens")
        labels = [f"{t}\n{n:.0f}" for t, n in zip(tasks["task"], tasks["answer_tokens"], strict=True)]
        ax.set_xticks(tasks["answer_tokens"], labels)
        ax.set_xlabel("task: mean correct answer length (tokens, EOS included)")
        ax.set_title(f"SPRO - GRPO: {MEASURES[measure]}")
        ax.set_ylabel(PANEL_YLABELS[measure])
        ax.grid(alpha=0.3)
        ax.legend()
    n_seeds = int(summary["seeds"].max())
    fig.suptitle(f"Difference to GRPO, mean and {INTERVAL} over {n_seeds} paired seed(s)")
    fig.tight_layout()
    return fig
