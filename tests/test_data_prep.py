"""`verl-spro prepare-data`: GSM8K / MATH / PRIME rows from JSONL and parquet into verl's schema, every bad row
reported with its line and reason, the output readable by verl's RLHFDataset and graded 1.0 by verl's rewards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl_spro import data_prep, rewards
from verl_spro.cli import main as cli_main

CODE_CASES = json.dumps({"inputs": ["3\n"], "outputs": ["3\n"]})
GOOD_ROWS: list[Any] = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7"},
    {"question": "A big number?", "answer": "It is 1,234.\n#### 1,234"},
    {"problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.", "solution": "The sum is $\\boxed{1}$."},
    {"problem": "Simplify $\\sqrt{8}$.", "solution": "$\\sqrt{8}=\\boxed{2\\sqrt{2}}$"},
    {
        "data_source": "numina_olympiads",
        "prompt": [{"role": "system", "content": "Think."}, {"role": "user", "content": "What is 6*7?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "42"},
        "extra_info": {"split": "dummy", "index": 99},
    },
    {
        "data_source": "apps",
        "prompt": [{"role": "user", "content": "Echo the input."}],
        "ability": "code",
        "reward_model": {"style": "rule", "ground_truth": CODE_CASES},
    },
]
# (row or raw JSONL text, expected fragment of the reason)
BAD_ROWS: list[tuple[Any, str]] = [
    ({"question": "No answer here"}, "missing field 'answer'"),
    ({"question": "   ", "answer": "#### 3"}, "empty field 'question'"),
    ({"question": "Q?", "answer": "the answer is three"}, "unparsable answer"),
    ({"problem": "P?", "solution": "no box at all"}, "unparsable answer"),
    ('{"question": "broken", ', "malformed JSON"),
    (
        {"prompt": [{"role": "user", "content": ""}], "data_source": "x", "reward_model": {"ground_truth": "1"}},
        "empty question",
    ),
    (
        {"prompt": [{"role": "user", "content": "c"}], "data_source": "apps", "ability": "code",
         "reward_model": {"style": "rule", "ground_truth": "not json"}},
        "unparsable answer",
    ),
    ({"title": "unrelated"}, "unknown layout"),
]  # fmt: skip


def _write_jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def _prepare(*args: str) -> int:
    return cli_main(["prepare-data", "--no-progress", *args])


def _solution_for(record: dict[str, Any]) -> str:
    """A response verl's grader for this row accepts."""
    truth = record["reward_model"]["ground_truth"]
    if record["ability"] == "code":
        return "```python\nprint(input())\n```"
    if record["data_source"] == rewards.GSM8K_DATA_SOURCE:
        return f"Step by step... #### {truth}"
    return f"Step 1: work. Step 2: so the answer is $\\boxed{{{truth}}}$."


@pytest.fixture(scope="module")
def mixed_jsonl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str]]:
    """Good and bad rows interleaved; returns the file and {1-based line: expected reason} for the bad ones."""
    rows: list[Any] = []
    expected: dict[int, str] = {}
    for good, (bad, reason) in zip(GOOD_ROWS, BAD_ROWS, strict=False):
        rows.append(good)
        rows.append(bad)
        expected[len(rows)] = reason
    for bad, reason in BAD_ROWS[len(GOOD_ROWS) :]:
        rows.append(bad)
        expected[len(rows)] = reason
    path = tmp_path_factory.mktemp("in") / "mixed.jsonl"
    _write_jsonl(path, rows)
    return path, expected


@pytest.fixture(scope="module")
def converted(mixed_jsonl: tuple[Path, dict[int, str]], tmp_path_factory: pytest.TempPathFactory):
    path, expected = mixed_jsonl
    out = tmp_path_factory.mktemp("out") / "train.parquet"
    rc = _prepare(str(path), "-o", str(out))
    return rc, out, expected


def test_counts_and_exit_status(converted, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, expected = converted
    assert rc == 0
    assert pq.ParquetFile(out).metadata.num_rows == len(GOOD_ROWS)
    assert len(expected) == len(BAD_ROWS)


def test_every_bad_row_is_reported_with_line_and_reason(converted) -> None:
    _, out, expected = converted
    report = [json.loads(line) for line in Path(f"{out}.rejects.jsonl").read_text().splitlines()]
    assert {r["line"]: r["reason"] for r in report}.keys() == expected.keys()
    for entry in report:
        assert entry["file"].endswith("mixed.jsonl")
        assert expected[entry["line"]] in entry["reason"], entry


def test_stderr_summary_lists_rejects(mixed_jsonl, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, expected = mixed_jsonl
    assert _prepare(str(path), "-o", str(tmp_path / "x.parquet"), "--rejects", str(tmp_path / "rej.jsonl")) == 0
    err = capsys.readouterr().err
    assert f"{len(expected)} row(s) rejected" in err
    assert f"wrote {len(GOOD_ROWS)} row(s)" in err
    for line in expected:
        assert f"{path}:{line}:" in err
    assert len((tmp_path / "rej.jsonl").read_text().splitlines()) == len(expected)


def test_output_is_in_verl_schema(converted) -> None:
    _, out, _ = converted
    table = pq.read_table(out)
    assert table.schema.equals(data_prep.output_schema())
    records = table.to_pylist()
    assert [r["extra_info"]["index"] for r in records] == list(range(len(GOOD_ROWS)))
    assert {r["extra_info"]["layout"] for r in records} == {"gsm8k", "math", "prime"}
    by_source = {r["data_source"]: r for r in records}
    assert records[0]["reward_model"] == {"style": "rule", "ground_truth": "7"}
    assert by_source["DigitalLearningGmbH/MATH-lighteval"]["prompt"][0]["role"] == "user"
    assert "\\boxed{}" in by_source["DigitalLearningGmbH/MATH-lighteval"]["prompt"][0]["content"]
    # PRIME rows keep their messages, system prompt included.
    assert [m["role"] for m in by_source["numina_olympiads"]["prompt"]] == ["system", "user"]
    assert by_source["apps"]["ability"] == "code"
    assert {r["extra_info"]["split"] for r in records} == {"train"}
    assert all(r["data_source"] and r["reward_model"]["ground_truth"] for r in records)
    # Thousands separators are dropped from GSM8K answers (verl's grader compares without them).
    assert next(r for r in records if r["extra_info"]["source_line"] == 3)["reward_model"]["ground_truth"] == "1234"


def test_verl_default_compute_score_grades_the_ground_truth_as_correct(converted) -> None:
    from verl.utils.reward_score import default_compute_score

    _, out, _ = converted
    for record in pq.read_table(out).to_pylist():
        truth = record["reward_model"]["ground_truth"]
        assert rewards.verl_knows(record["data_source"])
        score = default_compute_score(record["data_source"], _solution_for(record), truth, record["extra_info"])
        assert score == 1.0, record
        # Our registered reward agrees with verl's where verl knows the source.
        assert rewards.compute_score(record["data_source"], _solution_for(record), truth, record["extra_info"]) == 1.0


def test_verl_rlhf_dataset_reads_the_output(converted, tmp_path: Path) -> None:
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    _, out, _ = converted
    # No length filter, so no tokenizer is needed: the rollout applies the chat template.
    config = OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp_path)})
    dataset = RLHFDataset(str(out), tokenizer=None, config=config)
    assert len(dataset) == len(GOOD_ROWS)
    item = dataset[4]
    assert item["raw_prompt"][-1] == {"role": "user", "content": "What is 6*7?"}
    assert item["index"] == 4
    assert item["reward_model"]["ground_truth"] == "42"


def test_parquet_input_with_forced_format(tmp_path: Path) -> None:
    source = tmp_path / "gsm8k.parquet"
    rows = [
        {"question": "One plus one?", "answer": "#### 2"},
        {"question": "", "answer": "#### 2"},
        {"question": "Two plus two?", "answer": "four"},
        {"question": "Three plus three?", "answer": "#### 6"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), source)
    out = tmp_path / "out.parquet"
    assert _prepare(str(source), "-o", str(out), "--format", "gsm8k", "--split", "test") == 0
    records = pq.read_table(out).to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in records] == ["2", "6"]
    assert {r["extra_info"]["split"] for r in records} == {"test"}
    report = [json.loads(line) for line in Path(f"{out}.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"].split(":")[0]) for r in report] == [
        (2, "empty field 'question'"),
        (3, "unparsable answer"),
    ]


def test_forced_format_reports_missing_fields(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    _write_jsonl(source, [{"question": "Q?", "answer": "#### 1"}])
    out = tmp_path / "out.parquet"
    assert _prepare(str(source), "-o", str(out), "--format", "math") == 1  # nothing written
    assert not out.exists()
    assert "missing field 'problem'" in Path(f"{out}.rejects.jsonl").read_text()


def test_strict_and_missing_input(mixed_jsonl, tmp_path: Path) -> None:
    path, _ = mixed_jsonl
    assert _prepare(str(path), "-o", str(tmp_path / "s.parquet"), "--strict") == 1
    assert _prepare(str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "n.parquet")) == 2


def test_reward_fallback_for_sources_verl_does_not_know() -> None:
    assert not rewards.verl_knows("my_private_math")
    math_info = {"ability": "math"}
    assert rewards.compute_score("my_private_math", "so $\\boxed{\\frac{1}{2}}$", "0.5", math_info) == 1.0
    assert rewards.compute_score("my_private_math", "so $\\boxed{3}$", "0.5", math_info) == 0.0
    # Without extra_info.ability, JSON test cases mean code.
    assert rewards.compute_score("my_private_code", "```python\nprint(input())\n```", CODE_CASES) == 1.0


@pytest.mark.parametrize("source", sorted(rewards.VERL_MATH_DATA_SOURCES - {"hiyouga/geometry3k"}))
def test_verl_knows_every_math_source_we_list(source: str) -> None:
    from verl.utils.reward_score import default_compute_score

    default_compute_score(source, "\\boxed{1}", "1")  # raises NotImplementedError for a source verl dropped
