"""`verl-spro sweep`: the tasks are right, the arguments are checked, a tiny run of the protocol writes every output,
and the analysis pairs seeds and keeps every run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from verl_spro.cli import main
from verl_spro.sweep import MEASURES, TINY, arms, compare_to_grpo
from verl_spro.tiny_lm import EOS, SORT, TASKS, addition_with_carries


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------- tasks


def test_demo_sort_task_is_unchanged() -> None:
    """The demo's task: 2-4 digits, left-padded with '.', the 14-symbol vocabulary the README states."""
    assert SORT.vocab == ["<pad>", "<eos>", *"0123456789.="]
    prompts, answers = SORT.sample_problems(200, torch.Generator().manual_seed(0))
    assert prompts.shape == (200, 5)
    for ids, answer in zip(prompts.tolist(), answers, strict=True):
        text = SORT.decode(ids)
        digits = text.lstrip(".")[:-1]
        assert text.endswith("=") and 2 <= len(digits) <= 4 and answer == "".join(sorted(digits))
    assert sum(p.numel() for p in SORT.build_policy(0).parameters()) == 247_744


@pytest.mark.parametrize("name", list(TASKS))
def test_tasks_answers_rewards_and_lengths(name: str) -> None:
    task = TASKS[name]
    prompts, answers = task.sample_problems(300, torch.Generator().manual_seed(1))
    assert prompts.shape == (300, task.prompt_len)
    lengths = {len(a) + 1 for a in answers}
    assert min(lengths) == task.answer_tokens[0] and max(lengths) == task.answer_tokens[1]
    assert task.answer_tokens[1] < task.max_response_len  # room for one wrong token more
    # The SFT targets are the answers, and they get reward 1; one token changed or EOS missing gets 0.
    responses, mask = task.sft_targets(answers)
    assert task.rewards(responses, answers).tolist() == [1.0] * 300
    assert mask.sum(dim=1).tolist() == [float(len(a) + 1) for a in answers]
    wrong = responses.clone()
    wrong[:, 0] = torch.where(wrong[:, 0] == task.encode("1")[0], task.encode("2")[0], task.encode("1")[0])
    assert task.rewards(wrong, answers).sum() == 0
    no_eos = responses.masked_fill(responses == EOS, task.encode("0")[0])
    assert task.rewards(no_eos, answers).sum() == 0


def test_addition_with_carries_adds() -> None:
    task = TASKS["add_carries"]
    assert task.answer_tokens == (15, 25)
    prompts, answers = task.sample_problems(500, torch.Generator().manual_seed(2))
    for ids, answer in zip(prompts.tolist(), answers, strict=True):
        columns = task.decode(ids).rstrip("=").rstrip(".")
        a, b = int(columns[0::2][::-1]), int(columns[1::2][::-1])
        sums, carries = answer[0::2], answer[1::2]
        assert int(carries[-1] + sums[::-1]) == a + b
        # each carry is the carry of its column
        carry = 0
        for i, (x, y) in enumerate(zip(columns[0::2], columns[1::2], strict=True)):
            carry = (int(x) + int(y) + carry) // 10
            assert carries[i] == str(carry)
    assert addition_with_carries("57", "68") == "5121"


# ---------------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--betas", "nan"], "--betas must be finite and > 0"),
        (["--betas", "0.1,inf"], "--betas must be finite and > 0"),
        (["--betas", "0"], "--betas must be finite and > 0"),
        (["--betas", "0.2,0.2"], "--betas has a repeated value"),
        (["--betas", "0.1,x"], "--betas must be comma-separated numbers"),
        (["--tasks", "sort,nope"], "--tasks has an unknown task 'nope'"),
        (["--tasks", "sort,sort"], "--tasks has a repeated task"),
        (["--workers", "100000"], "--workers must be <="),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(
    args: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *args, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("first_seed", [str(2**70), "-3"])
def test_bad_first_seed_is_refused_before_any_work(
    first_seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "--first-seed", first_seed, "--out", str(tmp_path / "out")]) == 2
    assert "--first-seed: seeds" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "results"
    a_file.write_text("keep me")
    assert main(["sweep", "--out", str(a_file)]) == 2
    assert f"--out {a_file}: exists and is not a directory" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_an_output_name_taken_by_a_directory_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "steps.csv").mkdir()
    assert main(["sweep", "--tiny", "--seeds", "1", "--tasks", "sort", "--workers", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'steps.csv'} is a directory" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steps.csv"]


# ---------------------------------------------------------------------------------------------------- tiny run


def test_tiny_run_of_the_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    assert (
        main(["sweep", "--tiny", "--seeds", "2", "--tasks", "sort,add_carries", "--workers", "1", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "SPRO-GRPO [95% CI]" in printed and "wall" in printed and "CPU" in printed

    steps = _read_csv(out / "steps.csv")
    arm_names = [a.name for a in arms((0.05, 0.2, 1.0))]
    expected = {(t, a, s, k) for t in ("sort", "add_carries") for a in arm_names for s in (0, 1) for k in range(4)}
    assert {(r["task"], r["arm"], int(r["seed"]), int(r["step"])) for r in steps} == expected
    assert len(steps) == len(expected) == 2 * 4 * 2 * (TINY.steps + 1)
    # Same seed, same warm-up and data in every arm: step 0 (before any update) is identical across arms.
    step0 = {(r["task"], r["seed"], r["accuracy"], r["response_length"]) for r in steps if r["step"] == "0"}
    assert len(step0) == 2 * 2  # one value per (task, seed), whatever the arm
    assert all(r["spro/msa_abs_mean"] != "" for r in steps if r["arm"].startswith("spro"))

    assert len(_read_csv(out / "warmups.csv")) == 4
    assert len(_read_csv(out / "runs.csv")) == 2 * 4 * 2
    summary = _read_csv(out / "summary.csv")
    assert len(summary) == 2 * 3 * len(MEASURES)  # tasks x betas x measures: nothing dropped
    assert {int(r["seeds"]) for r in summary} == {2}
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------- analysis


def _runs(diffs: list[float], steps_spro: list[float], steps_grpo: list[float]) -> pd.DataFrame:
    rows = []
    for seed, (d, s_spro, s_grpo) in enumerate(zip(diffs, steps_spro, steps_grpo, strict=True)):
        for arm, beta, acc, hit in (("grpo", math.nan, 0.5, s_grpo), ("spro_beta0.2", 0.2, 0.5 + d, s_spro)):
            rows.append(
                {
                    "task": "sort",
                    "arm": arm,
                    "beta": beta,
                    "seed": seed,
                    "answer_tokens": 4.0,
                    "final_accuracy": acc,
                    "final_greedy_accuracy": acc,
                    "steps_to_target": hit,
                    "final_entropy": 0.3,
                    "final_response_length": 4.0,
                    "spro/msa_abs_mean": 0.01 if arm != "grpo" else math.nan,
                    "spro/outcome_abs_mean": 0.4 if arm != "grpo" else math.nan,
                }
            )
    return pd.DataFrame(rows)


def test_compare_to_grpo_pairs_seeds_censors_and_drops_nothing() -> None:
    diffs = [0.10, 0.05, 0.20, 0.15, 0.00]
    nan = math.nan
    summary = compare_to_grpo(_runs(diffs, [10, nan, 30, 20, 40], [20, 20, nan, nan, 40]), steps=60).set_index(
        "measure"
    )
    acc = summary.loc["final_accuracy"]
    assert acc["seeds"] == 5
    assert acc["diff"] == pytest.approx(sum(diffs) / 5)
    assert 0.0 <= acc["ci_low"] < acc["diff"] < acc["ci_high"] <= 0.20 + 1e-12
    assert acc["msa_over_outcome"] == pytest.approx(0.025)
    hit = summary.loc["steps_to_target"]
    # never reached counts as steps + 1 = 61: spro (10, 61, 30, 20, 40), grpo (20, 20, 61, 61, 40)
    assert hit["spro"] == pytest.approx(161 / 5) and hit["grpo"] == pytest.approx(202 / 5)
    assert (hit["spro_reached"], hit["grpo_reached"]) == (4, 3)
    # Identical arms: a zero difference with a zero-width interval.
    same = compare_to_grpo(_runs([0.0] * 5, [5] * 5, [5] * 5), steps=60).set_index("measure")
    assert same.loc["final_accuracy", ["diff", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
