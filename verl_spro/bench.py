"""Time and memory of SPRO against verl's own estimators, through verl's real ``compute_advantage``.

For each batch shape ``B x T`` (group size ``G``, input dtype fp32 or bf16, row layout) the same inputs go through
``verl.trainer.ppo.ray_trainer.compute_advantage`` with ``adv_estimator`` = ``spro``, ``grpo`` and
``grpo_vectorized``, through ``compute_spro_advantage`` alone (the estimator without verl's wrapper, the config
parsing and the metrics), and through a read pass that sums each input tensor once (the memory-bound floor).
Row layouts (``--layouts``, both by default): ``blocks``, each prompt's ``G`` rows consecutive (the legacy
trainer's layout), and ``spread``, the rows of a group scattered by a seeded permutation (the V1 trainer's: rows in
TransferQueue order, reordered by its sequence-length balancing).
Methods are interleaved: each repeat runs every method once, in turn, so that drifting machine load hits all
of them alike; each method's best and median over the repeats are reported.

verl's ``compute_advantage`` writes ``advantages``/``returns`` into the ``DataProto`` it is given, so every call
gets a fresh shallow ``DataProto`` around the same input tensors, built outside the timed region.

Peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the call minus the memory allocated before
it. On the CPU, the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) during the call
minus the resident set size before it, after ``malloc_trim`` hands freed heap memory back to the kernel: the
physical memory the call touches, outputs included, measured in a separate pass from the timings.

Noise: each method's spread over the repeats is ``median / best - 1``. Above ``--noise-threshold`` (default 0.25,
i.e. the median call 25% slower than the best one) the measurement is marked noisy: ``noisy=yes`` in the CSV, its
ratios printed with a ``?`` and a warning line at the end. A noisy ratio is not a result: rerun on a quieter machine.
On the CPU, a load average above the core count (at the start or the end) also gets a warning line: then even
steady timings may all be inflated alike.

``--out`` and every option are checked before any work (one-line error, exit status 2); ``--device cuda`` without a
GPU exits 1; a shape whose B is not a multiple of G is skipped (``status=skipped`` and the reason in its CSV row).
Writes ``bench.csv`` and ``bench.png`` (time against ``B*T``, log-log, one line per method), each renamed into place
once complete, and prints the ratios.
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_spro.argtypes import finite_float_above, int_in_range
from verl_spro.output_files import OutDirLock, add_out_arguments, claim_out_dir

__all__ = ["CSV_COLUMNS", "METHODS", "add_arguments", "run"]

#: Every method the benchmark times, in the order of each round-robin repeat.
METHODS = ("spro", "grpo", "grpo_vectorized", "spro_estimator_only", "read_pass")

CSV_COLUMNS = (
    "device",
    "dtype",
    "mask_dtype",
    "batch",
    "length",
    "group",
    "layout",
    "method",
    "status",
    "threads",
    "repeats",
    "best_ms",
    "median_ms",
    "peak_extra_bytes",
    "peak_extra_over_bt4",
    "spread",
    "noisy",
    "note",
)

#: Default ``--noise-threshold``: a method whose median call is this much slower than its best is noisy.
NOISE_THRESHOLD = 0.25
#: Ceilings of the size options: beyond them a value is a typo (torch indexes with int64; 2**31 rows is absurd).
_MAX_SIZE = 2**31 - 1
_MAX_REPEATS = 10_000

LAYOUTS = ("blocks", "spread")
FULL_GRID = {"batch_sizes": [256, 1024, 4096], "lengths": [1024, 4096, 16384], "group_sizes": [4, 8, 16]}
#: The default grid: every B and T of the full grid with B*T up to 16M elements (64 MiB per fp32 tensor), G=8.
DEFAULT_GRID = {**FULL_GRID, "group_sizes": [8], "max_elements": 4096 * 4096}
QUICK_GRID = {"batch_sizes": [32, 128], "lengths": [64, 256], "group_sizes": [8]}

# Per-element bytes a combination needs besides its inputs: outputs and temporaries of the most demanding
# method (measured: SPRO peaks near 4 * 4 bytes per element) with headroom for the allocator.
_WORK_BYTES_PER_ELEMENT = 8 * 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``verl-spro bench`` options."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the tensors live")
    add_out_arguments(parser, Path("bench_out"), "folder for bench.csv and bench.png")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--quick", action="store_true", help="tiny grid, 3 repeats: a smoke run of a few seconds")
    grid.add_argument(
        "--full",
        action="store_true",
        help="the whole grid: B x T in {256,1024,4096} x "
        "{1024,4096,16384}, G in {4,8,16} (needs ~12 GiB free at 4096 x 16384)",
    )
    for option, metavar in (("--batch-sizes", "B"), ("--lengths", "T"), ("--group-sizes", "G")):
        parser.add_argument(
            option,
            type=int_in_range(1, _MAX_SIZE, option),
            nargs="+",
            metavar=metavar,
            help=f"override the grid's {metavar}",
        )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"],
        help="dtype of rewards and log-probs (the mask keeps --mask-dtype)",
    )
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=LAYOUTS,
        default=list(LAYOUTS),
        help="row layouts: blocks (each group's rows consecutive) and spread (a group's rows scattered, as verl's V1 "
        "trainer may deliver them)",
    )
    parser.add_argument(
        "--mask-dtype",
        choices=["int64", "float32", "bool"],
        default="int64",
        help="response_mask dtype (verl's attention-mask slices are int64)",
    )
    parser.add_argument(
        "--repeats",
        type=int_in_range(1, _MAX_REPEATS, "--repeats"),
        help="timed calls per method (default 15; 3 with --quick)",
    )
    parser.add_argument(
        "--warmup", type=int_in_range(0, _MAX_REPEATS, "--warmup"), default=2, help="untimed calls per method first"
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to time")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument(
        "--mem-limit-gib",
        type=finite_float_above(0.0, "--mem-limit-gib"),
        help="skip combinations whose estimated footprint exceeds this many GiB (> 0; default: 80%% of the free "
        "memory of the device)",
    )
    parser.add_argument(
        "--noise-threshold",
        type=finite_float_above(0.0, "--noise-threshold"),
        default=NOISE_THRESHOLD,
        help=f"mark a method noisy when its median call is this fraction slower than its best (default "
        f"{NOISE_THRESHOLD})",
    )
    parser.add_argument("--seed", type=int_in_range(0, 2**63 - 1, "--seed"), default=0, help="input seed")


# ----------------------------------------------------------------------------------------------------------------
# Inputs and methods
# ----------------------------------------------------------------------------------------------------------------


def _torch_dtype(name: str) -> Any:
    import torch

    return {
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "float32": torch.float32,
        "int64": torch.int64,
        "bool": torch.bool,
    }[name]


def make_inputs(
    batch: int, length: int, group: int, dtype: str, mask_dtype: str, device: str, seed: int, layout: str = "blocks"
) -> dict:
    """A verl-like batch: right-padded responses of random lengths, a 0/1 reward at EOS, ``B/G`` prompt groups
    whose rows are consecutive (``layout="blocks"``) or scattered by a permutation seeded by ``seed`` (``"spread"``).

    Returns:
        ``{"tensors": {name: [B, T] tensor}, "uid": [B] object array}`` with verl's batch keys
        ``token_level_rewards``, ``response_mask``, ``old_log_probs``, ``ref_log_prob``.
    """
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(length // 8, 1), length + 1, (batch,), generator=gen)
    positions = torch.arange(length)
    tensors = {
        "token_level_rewards": torch.zeros(batch, length, dtype=_torch_dtype(dtype)),
        "response_mask": (positions.unsqueeze(0) < lengths.unsqueeze(1)).to(_torch_dtype(mask_dtype)),
        "old_log_probs": torch.rand(batch, length, generator=gen).mul_(-3.0).to(_torch_dtype(dtype)),
        "ref_log_prob": torch.rand(batch, length, generator=gen).mul_(-3.0).to(_torch_dtype(dtype)),
    }
    rewards = torch.randint(0, 2, (batch,), generator=gen).to(_torch_dtype(dtype))
    tensors["token_level_rewards"][torch.arange(batch), lengths - 1] = rewards
    tensors = {name: t.to(device) for name, t in tensors.items()}
    order = torch.randperm(batch, generator=gen).tolist() if layout == "spread" else range(batch)
    uid = np.array([f"prompt-{row // group}" for row in order], dtype=object)
    return {"tensors": tensors, "uid": uid}


def _make_methods(inputs: dict) -> dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]]:
    """method -> ``(prepare, call)``: ``prepare()`` (untimed) builds the call's argument, ``call(arg)`` is timed."""
    import verl  # noqa: F401  (loads the verl-spro plugin)
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from verl import DataProto
    from verl.trainer.ppo import ray_trainer

    from verl_spro.estimator import compute_spro_advantage

    tensors, uid = inputs["tensors"], inputs["uid"]
    batch = len(uid)
    config = OmegaConf.create({"adv_estimator": "spro", "spro": {"beta": 0.05}})

    def fresh_data() -> Any:
        # A new shallow DataProto around the same tensors: compute_advantage writes advantages/returns into it.
        return DataProto(
            batch=TensorDict(dict(tensors), batch_size=[batch]), non_tensor_batch={"uid": uid}, meta_info={}
        )

    def through_verl(estimator: str) -> Callable[[Any], Any]:
        def call(data: Any) -> Any:
            return ray_trainer.compute_advantage(
                data, adv_estimator=estimator, norm_adv_by_std_in_grpo=True, config=config
            )

        return call

    def estimator_only(_: Any) -> Any:
        return compute_spro_advantage(
            tensors["token_level_rewards"],
            tensors["response_mask"],
            tensors["old_log_probs"],
            tensors["ref_log_prob"],
            uid,
            beta=0.05,
        )

    def read_pass(_: Any) -> Any:
        return [t.sum() for t in tensors.values()]

    return {
        "spro": (fresh_data, through_verl("spro")),
        "grpo": (fresh_data, through_verl("grpo")),
        "grpo_vectorized": (fresh_data, through_verl("grpo_vectorized")),
        "spro_estimator_only": (lambda: None, estimator_only),
        "read_pass": (lambda: None, read_pass),
    }


# ----------------------------------------------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _timed(device: str, prepare: Callable[[], Any], call: Callable[[Any], Any]) -> float:
    """Seconds for one ``call(prepare())``, the preparation and the freeing of the result left out."""
    arg = prepare()
    _sync(device)
    start = time.perf_counter()
    result = call(arg)
    _sync(device)
    elapsed = time.perf_counter() - start
    del result, arg
    return elapsed


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_supported() -> bool:
    """True where the peak RSS can be reset (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        _proc_status_kib("VmHWM")
        return True
    except OSError:
        return False


def _peak_extra_bytes(device: str, prepare: Callable[[], Any], call: Callable[[Any], Any]) -> int:
    """Peak memory the call adds on top of what is allocated before it (its outputs included)."""
    import torch

    arg = prepare()
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = call(arg)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        _malloc_trim()
        before = _proc_status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := current RSS
        result = call(arg)
        peak = (_proc_status_kib("VmHWM") - before) * 1024
    del result, arg
    return max(int(peak), 0)


@dataclass
class Combo:
    """One point of the grid and what was measured there."""

    dtype: str
    batch: int
    length: int
    group: int
    layout: str = "blocks"
    times: dict[str, list[float]] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    status: str = "ok"
    note: str = ""

    @property
    def elements(self) -> int:
        return self.batch * self.length

    def noisy(self, threshold: float) -> list[str]:
        """The methods whose :func:`spread` exceeds ``threshold``."""
        return [name for name, times in self.times.items() if spread(times) > threshold]


def spread(times: list[float]) -> float:
    """How much slower the median repeat is than the best one: ``median / best - 1`` (0 for one repeat)."""
    best = min(times)
    return statistics.median(times) / best - 1.0 if best > 0 else 0.0


def _free_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _footprint_bytes(combo: Combo, mask_dtype: str) -> int:
    import torch

    input_bytes = 3 * _torch_dtype(combo.dtype).itemsize + _torch_dtype(mask_dtype).itemsize
    _ = torch  # itemsize needs torch loaded
    return combo.elements * (input_bytes + _WORK_BYTES_PER_ELEMENT)


def measure(combo: Combo, args: argparse.Namespace, limit_bytes: int, memory: bool) -> None:
    """Fill ``combo.times`` / ``combo.memory``, or mark it skipped with the reason."""
    import torch

    need = _footprint_bytes(combo, args.mask_dtype)
    if combo.batch % combo.group:
        combo.status, combo.note = "skipped", f"B={combo.batch} is not a multiple of G={combo.group}"
        return
    if need > limit_bytes:
        combo.status = "skipped"
        combo.note = f"needs ~{need / 2**30:.1f} GiB, limit {limit_bytes / 2**30:.1f} GiB (--mem-limit-gib)"
        return
    try:
        inputs = make_inputs(
            combo.batch, combo.length, combo.group, combo.dtype, args.mask_dtype, args.device, args.seed, combo.layout
        )
        methods = {name: fns for name, fns in _make_methods(inputs).items() if name in args.methods}
        if "spro" in methods:  # once, untimed: the spro call really went through verl-spro's wrapper
            prepare, call = methods["spro"]
            data = call(prepare())
            if "spro_metrics" not in data.meta_info:
                raise RuntimeError("compute_advantage(adv_estimator='spro') did not go through verl-spro")
            del data
        for prepare, call in methods.values():
            for _ in range(args.warmup):
                _timed(args.device, prepare, call)
        combo.times = {name: [] for name in methods}
        for _ in range(args.repeats):  # round-robin: each repeat runs every method once
            for name, (prepare, call) in methods.items():
                combo.times[name].append(_timed(args.device, prepare, call))
        if memory:
            gc.collect()  # once (slow with verl loaded); the measured calls then run with the collector as usual
            for name, (prepare, call) in methods.items():
                combo.memory[name] = min(_peak_extra_bytes(args.device, prepare, call) for _ in range(2))
        del inputs, methods
    except torch.OutOfMemoryError as err:  # pragma: no cover - depends on the machine
        combo.status, combo.note = "skipped", f"out of memory: {str(err).splitlines()[0]}"
        combo.times, combo.memory = {}, {}
    finally:
        if args.device == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------


def _rows(combos: list[Combo], args: argparse.Namespace, threads: int) -> list[dict[str, Any]]:
    rows = []
    for combo in combos:
        base = {
            "device": args.device,
            "dtype": combo.dtype,
            "mask_dtype": args.mask_dtype,
            "batch": combo.batch,
            "length": combo.length,
            "group": combo.group,
            "layout": combo.layout,
            "threads": threads,
        }
        if combo.status != "ok":
            for method in args.methods:
                rows.append({**base, "method": method, "status": combo.status, "repeats": 0, "note": combo.note})
            continue
        for method, times in combo.times.items():
            mem = combo.memory.get(method)
            rows.append(
                {
                    **base,
                    "method": method,
                    "status": "ok",
                    "repeats": len(times),
                    "best_ms": f"{min(times) * 1e3:.4f}",
                    "median_ms": f"{statistics.median(times) * 1e3:.4f}",
                    "peak_extra_bytes": "" if mem is None else mem,
                    "peak_extra_over_bt4": "" if mem is None else f"{mem / (combo.elements * 4):.3f}",
                    "spread": f"{spread(times):.3f}",
                    "noisy": "yes" if spread(times) > args.noise_threshold else "no",
                    "note": "" if mem is not None or args.no_memory else "peak memory not measurable here",
                }
            )
    return rows


def loglog_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``log(y)`` against ``log(x)`` (``nan`` with fewer than two distinct ``x``)."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    if len(set(xs)) < 2:
        return math.nan
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def _ratio(a: list[float] | None, b: list[float] | None, threshold: float) -> str:
    if not (a and b):
        return "-"
    noisy = spread(a) > threshold or spread(b) > threshold
    return f"{min(a) / min(b):.2f}{'?' if noisy else ''}"


def report(combos: list[Combo], threshold: float = NOISE_THRESHOLD) -> list[str]:
    """The text table: per combo, best-time ratios and SPRO's peak extra memory per ``B*T*4`` bytes; slopes.

    A ratio one of whose two methods is noisy (:func:`spread` above ``threshold``) ends in ``?``; a warning line
    lists the noisy shapes."""
    lines = [
        f"{'dtype':5} {'B':>5} {'T':>6} {'G':>3} {'spro ms':>9} {'grpo ms':>9} {'read ms':>8} "
        f"{'spro/grpo':>9} {'spro/gvec':>9} {'spro/read':>9} {'est/read':>8} {'mem/BT4':>7} {'grpo mem':>8} layout"
    ]
    for c in combos:
        if c.status != "ok":
            lines.append(f"{c.dtype:5} {c.batch:>5} {c.length:>6} {c.group:>3} {c.layout} {c.status}: {c.note}")
            continue
        t = c.times

        def ratio(a: str, b: str, times: dict = t) -> str:
            return _ratio(times.get(a), times.get(b), threshold)

        def ms(name: str, times: dict = t) -> str:
            return f"{min(times[name]) * 1e3:.2f}" if name in times else "-"

        mem = {k: f"{v / (c.elements * 4):.2f}" for k, v in c.memory.items()}
        lines.append(
            f"{c.dtype:5} {c.batch:>5} {c.length:>6} {c.group:>3} {ms('spro'):>9} {ms('grpo'):>9} "
            f"{ms('read_pass'):>8} {ratio('spro', 'grpo'):>9} {ratio('spro', 'grpo_vectorized'):>9} "
            f"{ratio('spro', 'read_pass'):>9} {ratio('spro_estimator_only', 'read_pass'):>8} {mem.get('spro', '-'):>7} "
            f"{mem.get('grpo', '-'):>8} {c.layout}"
        )
    lines.append("")
    noisy = [c for c in combos if c.status == "ok" and c.noisy(threshold)]
    if noisy:
        worst = max(spread(t) for c in noisy for t in c.times.values())
        shapes = ", ".join(
            f"{c.dtype} {c.batch}x{c.length} G={c.group} ({', '.join(c.noisy(threshold))}) {c.layout}" for c in noisy
        )
        lines.append(
            f"WARNING: noisy measurements in {len(noisy)} of {sum(c.status == 'ok' for c in combos)} shape(s): "
            f"median more than {threshold:.0%} above best (worst {worst:.0%}); their ratios (marked ?) are not "
            f"results, rerun on a quieter machine: {shapes}"
        )
    for dtype, group, layout in sorted({(c.dtype, c.group, c.layout) for c in combos}):
        ok = [c for c in combos if c.status == "ok" and (c.dtype, c.group, c.layout) == (dtype, group, layout)]
        slopes = {}
        for method in METHODS:
            points = [(c.elements, min(c.times[method])) for c in ok if method in c.times]
            slopes[method] = loglog_slope(points)
        text = ", ".join(f"{m} {s:.3f}" for m, s in slopes.items() if not math.isnan(s))
        if text:
            lines.append(f"log-log slope of best time vs B*T ({dtype}, G={group}, {layout}): {text}")
    return lines


def plot(combos: list[Combo], path: Path, title: str) -> None:
    """Best time against ``B*T``, log-log, one line per method; one panel per dtype and layout (G=8 where run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c.dtype, c.layout) for c in combos}) or [("fp32", "blocks")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (dtype, layout) in zip(axes[0], panels, strict=True):
        ok = [c for c in combos if c.status == "ok" and (c.dtype, c.layout) == (dtype, layout)]
        group = 8 if any(c.group == 8 for c in ok) else (ok[0].group if ok else 0)
        for method in METHODS:
            points = sorted(
                (c.elements, min(c.times[method]) * 1e3) for c in ok if c.group == group and method in c.times
            )
            if not points:
                continue
            by_x: dict[int, float] = {}
            for x, y in points:  # several (B, T) with the same B*T: keep the fastest (lines stay functions)
                by_x[x] = min(by_x.get(x, math.inf), y)
            ax.plot(list(by_x), list(by_x.values()), marker="o", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("B * T (elements per [B, T] tensor)")
        ax.set_ylabel("best time per call (ms)")
        ax.set_title(f"{dtype} inputs, G={group}, {layout} rows")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def machine_description(device: str) -> str:
    """CPU model, cores, torch version and threads (plus the GPU on CUDA)."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, torch.get_num_threads()={torch.get_num_threads()}"
    )
    if device == "cuda":
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def _grid(args: argparse.Namespace) -> list[Combo]:
    grid = dict(QUICK_GRID if args.quick else FULL_GRID if args.full else DEFAULT_GRID)
    batch_sizes = args.batch_sizes or grid["batch_sizes"]
    lengths = args.lengths or grid["lengths"]
    group_sizes = args.group_sizes or grid["group_sizes"]
    max_elements = grid.get("max_elements") if not (args.batch_sizes or args.lengths) else None
    combos = []
    for dtype in args.dtypes:
        for group in group_sizes:
            for batch in batch_sizes:
                for length in lengths:
                    for layout in args.layouts:
                        combos.append(Combo(dtype, batch, length, group, layout))
    for combo in combos:
        if max_elements is not None and combo.elements > max_elements:
            combo.status = "skipped"
            combo.note = f"B*T > {max_elements} in the default grid: run with --full"
    return combos


def _load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns 0, 1 when ``--device cuda`` has no GPU, 2 for an unusable ``--out``, 130 on Ctrl-C."""
    outputs = ("bench.csv", "bench.png")
    claim = claim_out_dir(args.out, files=outputs, earlier=outputs, replace=args.force)
    if not isinstance(claim, OutDirLock):
        print(f"verl-spro bench: error: {claim}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"verl-spro bench: interrupted; nothing written to {args.out}", file=sys.stderr)
        return 130
    finally:
        claim.release()


def _run(args: argparse.Namespace) -> int:
    import torch

    from verl_spro.output_files import AtomicFile, OutputPathError

    if args.device == "cuda" and not torch.cuda.is_available():
        print("verl-spro bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 1
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.quick:
        args.warmup = min(args.warmup, 1)
    memory = not args.no_memory and (args.device == "cuda" or cpu_peak_supported())
    limit = int(args.mem_limit_gib * 2**30) if args.mem_limit_gib else int(0.8 * _free_bytes(args.device))
    threads = torch.get_num_threads()
    machine = machine_description(args.device)
    loads = [_load_average()]
    print(f"verl-spro bench on {args.device}: {machine}, load average {loads[0]:.1f}")
    if not memory and not args.no_memory:
        print("peak memory: /proc/self/clear_refs is not writable here, memory columns left empty")

    combos = _grid(args)
    started = time.perf_counter()
    for combo in combos:
        if combo.status != "ok":
            continue
        t0 = time.perf_counter()
        measure(combo, args, limit, memory)
        done = f"{time.perf_counter() - t0:.1f}s" if combo.status == "ok" else f"{combo.status}: {combo.note}"
        print(f"  {combo.dtype} B={combo.batch} T={combo.length} G={combo.group} {combo.layout}: {done}", flush=True)

    csv_path, png_path = args.out / "bench.csv", args.out / "bench.png"
    try:
        csv_file, png_file = AtomicFile(str(csv_path)), AtomicFile(str(png_path))
    except OutputPathError as exc:  # --out changed under us since the check
        print(f"verl-spro bench: {exc}", file=sys.stderr)
        return 2
    try:
        with open(csv_file.temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
            writer.writeheader()
            writer.writerows(_rows(combos, args, threads))
        plot(combos, Path(png_file.temp), f"verl-spro bench, {args.device}: {machine}")
        csv_file.commit()
        png_file.commit()
    except OSError as exc:  # disk full, quota: the previous files stay
        print(f"verl-spro bench: writing to {args.out} failed: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        csv_file.discard()
        png_file.discard()
    print()
    print("\n".join(report(combos, args.noise_threshold)))
    loads.append(_load_average())
    cores = os.cpu_count() or 1
    if args.device == "cpu" and max(loads) > cores:
        print(
            f"WARNING: load average {max(loads):.1f} on {cores} cores: other processes competed for the CPU, "
            "so every timing above may be inflated (even the steady ones); rerun on a quiet machine"
        )
    if args.device == "cuda":
        ref = [c for c in combos if c.status == "ok" and (c.batch, c.length) == (1024, 4096) and "spro" in c.times]
        for c in ref:
            best = min(c.times["spro"]) * 1e3
            noisy = " (noisy: not a result)" if spread(c.times["spro"]) > args.noise_threshold else ""
            print(f"target (H100-class): spro <= 0.5 ms at 1024x4096 ({c.dtype}, G={c.group}): {best:.3f} ms{noisy}")
    print(f"\nwrote {csv_path} and {png_path} in {time.perf_counter() - started:.1f}s")
    return 0
