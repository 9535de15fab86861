"""`verl-spro prepare-data`: GSM8K / MATH / PRIME rows from JSONL and parquet into verl's schema, every bad row
reported with its line and reason, the output readable by verl's RLHFDataset and graded 1.0 by verl's rewards."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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


# ---------------------------------------------------------------------------------------------------------------
# Bad input, bad paths, interrupted runs: one-line errors, nothing lost.
# ---------------------------------------------------------------------------------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_lines_are_rejected_one_by_one_and_numeric_answers_accepted(tmp_path: Path) -> None:
    prime = {"data_source": "numina_olympiads", "prompt": [{"role": "user", "content": "6*7?"}], "ability": "math"}
    lines: list[tuple[bytes, str | None]] = [  # (line, reason fragment or None when the row is kept)
        (json.dumps({"question": "One plus one?", "answer": "#### 2"}).encode(), None),
        (b"[" * 100_000, "JSON nested too deeply"),
        ('{"question": "caf\xe9?", "answer": "#### 1"}'.encode("latin-1"), "not valid UTF-8"),
        (json.dumps({**prime, "reward_model": {"ground_truth": 42}}).encode(), None),
        (json.dumps({**prime, "reward_model": {"ground_truth": 3.0}}).encode(), None),
        (json.dumps({"question": "Seven?", "answer": 7}).encode(), None),
        (json.dumps({"question": "Half?", "answer": 2.5}).encode(), None),
        (b'{"question": "NaN?", "answer": NaN}', "not a finite number"),
        (json.dumps({**prime, "reward_model": {"ground_truth": True}}).encode(), "boolean"),
        (json.dumps({**prime, "reward_model": {"ground_truth": [1]}}).encode(), "not a string or number"),
        (json.dumps({"question": 12, "answer": "#### 1"}).encode(), "field 'question' is int"),
        (json.dumps({**prime, "reward_model": {"ground_truth": {"inputs": [[[[1]]]]}}}).encode(), None),
        (json.dumps({"question": "Last?", "answer": "#### 3"}).encode(), None),
    ]
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b"\n".join(line for line, _ in lines) + b"\n")
    out = tmp_path / "out.parquet"
    assert _prepare(str(source), "-o", str(out)) == 0
    report = {r["line"]: r["reason"] for r in map(json.loads, Path(f"{out}.rejects.jsonl").read_text().splitlines())}
    expected = {number: reason for number, (_, reason) in enumerate(lines, start=1) if reason}
    assert report.keys() == expected.keys()
    for number, reason in expected.items():
        assert reason in report[number], (number, report[number])
    records = pq.read_table(out).to_pylist()
    kept = [number for number, (_, reason) in enumerate(lines, start=1) if not reason]
    assert [r["extra_info"]["source_line"] for r in records] == kept
    truths = {r["extra_info"]["source_line"]: r["reward_model"]["ground_truth"] for r in records}
    assert [truths[n] for n in (4, 5, 6, 7)] == ["42", "3", "7", "2.5"]
    from verl.utils.reward_score import default_compute_score

    assert default_compute_score(rewards.GSM8K_DATA_SOURCE, "so #### 7", truths[6]) == 1.0


def test_a_lone_surrogate_is_rejected_with_its_line_and_the_run_goes_on(tmp_path: Path) -> None:
    """``\\ud800`` is valid JSON but no UTF-8 string: it must be a reject, not a crash when the batch is written."""
    src = tmp_path / "in.jsonl"
    _write_jsonl(
        src,
        [
            {"question": "One plus one?", "answer": "#### 2"},
            '{"question": "q \\ud800", "answer": "#### 4"}',
            '{"question": "pair \\ud83d\\ude00", "answer": "#### 5"}',  # a valid surrogate pair: kept
        ],
    )
    out = tmp_path / "out.parquet"
    assert _prepare(str(src), "-o", str(out)) == 0
    assert pq.read_table(out).num_rows == 2
    (reject,) = [json.loads(line) for line in (tmp_path / "out.parquet.rejects.jsonl").read_text().splitlines()]
    assert reject["line"] == 2 and "lone UTF-16 surrogate" in reject["reason"]


def test_write_parquet_of_no_record_is_a_valid_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    data_prep.write_parquet([], str(path))
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema.equals(data_prep.output_schema())


@pytest.mark.parametrize("value", ["0", "-1", "ten"])
def test_limit_must_be_a_positive_integer(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _prepare("in.jsonl", "-o", str(tmp_path / "o.parquet"), "--limit", value)
    assert exit_info.value.code == 2
    assert "argument --limit: --limit must be" in capsys.readouterr().err


def _link(kind: str, target: Path, link: Path) -> Path:
    if kind == "symlink":
        link.symlink_to(target)
    elif kind == "hardlink":
        link.hardlink_to(target)
    return target if kind == "same" else link


@pytest.mark.parametrize("option", ["--output", "--rejects"])
@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_an_output_that_is_an_input_is_refused(
    mixed_jsonl, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, kind: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(mixed_jsonl[0].read_bytes())
    before = source.read_bytes()
    path = _link(kind, source, tmp_path / "alias.jsonl")
    argv = ["-o", str(path)] if option == "--output" else ["-o", str(tmp_path / "o.parquet"), "--rejects", str(path)]
    assert _prepare(str(source), *argv) == 2
    line = _one_error_line(capsys)
    assert f"{option} {path} is the input file" in line
    assert source.read_bytes() == before
    assert not (tmp_path / "o.parquet").exists()


def test_rejects_path_equal_to_output_is_refused(mixed_jsonl, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "o.parquet")
    assert _prepare(str(mixed_jsonl[0]), "-o", out, "--rejects", out) == 2
    assert f"--rejects {out} is the same file as --output {out}" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{dir}", "is a directory"),
        ("/proc/verl_spro_x.parquet", "cannot write /proc/verl_spro_x.parquet"),
        ("{file}/x.parquet", "is not a directory"),
        ("/dev/null", "is not a regular file"),
    ],
)
def test_unwritable_output_fails_before_any_row_is_read(
    mixed_jsonl, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, message: str
) -> None:
    (tmp_path / "file").write_text("x")
    output = output.format(dir=tmp_path, file=tmp_path / "file")
    assert _prepare(str(mixed_jsonl[0]), "-o", output) == 2
    assert message in _one_error_line(capsys)  # one line: no summary of rejected rows, nothing was read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _corrupt_parquet(path: Path) -> None:
    rows = [{"question": f"What is {i}+1? " + "x" * (i % 97), "answer": f"#### {i + 1}"} for i in range(20_000)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=5000, compression="NONE")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = b"\xff" * 2000
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "input file not found"),
        (lambda p: p.mkdir(), "is a directory, not a file"),
        (lambda p: p.write_text("not parquet"), "cannot read input"),
        (_corrupt_parquet, "cannot read input"),
    ],
)
def test_unreadable_input_is_one_line_and_keeps_the_previous_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Any], message: str
) -> None:
    out = tmp_path / "out.parquet"
    good = tmp_path / "good.jsonl"
    _write_jsonl(good, GOOD_ROWS)
    assert _prepare(str(good), "-o", str(out)) == 0
    previous = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    source = tmp_path / "in.parquet"
    make(source)
    capsys.readouterr()
    assert _prepare(str(source), "-o", str(out)) == 2
    line = _one_error_line(capsys)
    assert message in line and str(source) in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p != source} == previous


# --- Interrupted and killed runs, in a subprocess, on an input big enough to be caught while writing. ---

_PREPARE_AND_REPORT_PEAK = (
    "import resource, sys; from verl_spro.cli import main; rc = main(sys.argv[1:]); "
    "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def _big_jsonl(path: Path, megabytes: int) -> Path:
    """GSM8K and PRIME rows of 0.1-2 kB (no MATH row: no verl import in the child), one bad line in 100."""
    filler = "lorem ipsum dolor sit amet " * 80
    lines, size, i = [], 0, 0
    while size < megabytes << 20:
        text = filler[: 100 + (i * 37) % 2000]
        if i % 100 == 99:
            line = '{"question": "broken'
        elif i % 2:
            line = json.dumps({"question": f"Q{i}: {text}?", "answer": f"#### {i}"})
        else:
            line = json.dumps(
                {"data_source": "numina_olympiads", "prompt": [{"role": "user", "content": text}],
                 "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(i)}}
            )  # fmt: skip
        lines.append(line)
        size += len(line) + 1
        i += 1
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _big_jsonl(tmp_path_factory.mktemp("big") / "big.jsonl", 40)


def _start(*argv: str, max_file_bytes: int | None = None) -> subprocess.Popen:
    """The child starts with SIGINT ignored, as a background job's children do (and a pytest run in the background):
    prepare-data must set its own disposition for Ctrl-C to stop it."""

    def prepare_child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if max_file_bytes:  # writes past it fail with EFBIG (Python ignores SIGXFSZ): a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.Popen(
        [sys.executable, "-c", _PREPARE_AND_REPORT_PEAK, "prepare-data", "--no-progress", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=prepare_child,
    )


@pytest.mark.parametrize(
    ("sig", "rc"), [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_a_run_stopped_mid_write_leaves_the_previous_output_intact(
    big_jsonl: Path, tmp_path: Path, sig: signal.Signals, rc: int
) -> None:
    out = tmp_path / "train.parquet"
    small = tmp_path / "small.jsonl"
    _write_jsonl(small, [*GOOD_ROWS, BAD_ROWS[0][0]])
    assert _prepare(str(small), "-o", str(out)) == 0
    previous = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p != small}
    assert set(previous) == {"train.parquet", "train.parquet.rejects.jsonl"}

    process = _start(str(big_jsonl), "-o", str(out))
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".train.parquet.") and p.stat().st_size > 0 for p in tmp_path.iterdir()):
        assert process.poll() is None, "the run ended before it was caught writing: use a bigger input"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == rc, err

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".") and p != small} == (
        previous
    )
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    if sig == signal.SIGKILL:  # no chance to clean up: hidden temporary files, removed by the next run
        assert leftovers and all(name.endswith(".tmp") for name in leftovers)
        assert _prepare(str(small), "-o", str(out)) == 0
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    else:
        assert not leftovers
        assert "Traceback" not in err and err.strip().splitlines()[0] == (
            f"prepare-data: {'interrupted' if sig == signal.SIGINT else 'terminated'}; {out} and "
            f"{out}.rejects.jsonl left as they were"
        )


def test_a_failed_write_is_one_line_and_keeps_the_previous_output(big_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    small = tmp_path / "small.jsonl"
    _write_jsonl(small, GOOD_ROWS)
    assert _prepare(str(small), "-o", str(out)) == 0
    previous = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    process = _start(str(big_jsonl), "-o", str(out), max_file_bytes=512 << 10)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert err.splitlines()[0].startswith("prepare-data: writing failed (") and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == previous  # no temporary file left either


def test_memory_stays_bounded_whatever_the_input_size(big_jsonl: Path, tmp_path: Path) -> None:
    """Five times the input (8 MB -> 40 MB) adds less to the peak RSS than the 32 MB it adds to the input (measured:
    +13 MB; holding every row, as prepare-data once did, costs about 4x the input: +130 MB)."""
    small = _big_jsonl(tmp_path / "small.jsonl", 8)
    peaks = {}
    for name, source in (("small", small), ("big", big_jsonl)):
        process = _start(str(source), "-o", str(tmp_path / f"{name}.parquet"))
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        peaks[name] = int(err.split("peak_kib")[1].split()[0]) * 1024
    assert pq.ParquetFile(tmp_path / "big.parquet").metadata.num_rows > 20_000
    assert peaks["big"] - peaks["small"] < big_jsonl.stat().st_size - small.stat().st_size, peaks


@pytest.mark.parametrize("kind", ["path", "symlink", "hardlink"])
def test_one_input_given_twice_is_refused(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.jsonl"
    _write_jsonl(source, GOOD_ROWS)
    again = source if kind == "path" else _link(kind, source, tmp_path / "again.jsonl")
    out = tmp_path / "out.parquet"
    assert _prepare(str(source), str(again), "-o", str(out)) == 2
    line = _one_error_line(capsys)
    assert f"input {again} is the same file as input {source}: give each input once" in line
    assert not out.exists()


def test_the_file_type_comes_from_the_content_or_a_suffix_in_any_case(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from verl_spro.data_prep import write_parquet

    upper = tmp_path / "IN.PARQUET"
    _write_jsonl(tmp_path / "in.jsonl", GOOD_ROWS)
    assert _prepare(str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "ref.parquet")) == 0
    rows = pq.read_table(tmp_path / "ref.parquet").to_pylist()
    write_parquet(rows, str(upper))
    unnamed = tmp_path / "rows.data"  # parquet bytes under a name that says nothing
    unnamed.write_bytes(upper.read_bytes())
    for source in (upper, unnamed):
        out = tmp_path / f"from_{source.name}.parquet"
        assert _prepare(str(source), "-o", str(out)) == 0, source
        assert len(pq.read_table(out).to_pylist()) == len(rows)


def test_prime_rows_keep_their_reward_style(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    prime = {**GOOD_ROWS[4], "reward_model": {"style": "model", "ground_truth": "42"}}
    _write_jsonl(tmp_path / "in.jsonl", [prime, GOOD_ROWS[4]])
    assert _prepare(str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.parquet")) == 0
    styles = [r["reward_model"]["style"] for r in pq.read_table(tmp_path / "out.parquet").to_pylist()]
    assert styles == ["model", "rule"]


def test_a_line_over_the_limit_is_rejected_without_being_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit (32 MiB by default) lowered to 4 KiB: a 100 KiB line is one reject naming its line and size,
    read in bounded chunks, and the rows after it are converted."""
    import pyarrow.parquet as pq

    from verl_spro import data_prep

    monkeypatch.setattr(data_prep, "MAX_LINE_BYTES", 4096)
    huge = {"question": "x" * 100_000, "answer": "#### 1"}
    _write_jsonl(tmp_path / "in.jsonl", [GOOD_ROWS[0], huge, GOOD_ROWS[1]])
    out = tmp_path / "out.parquet"
    assert _prepare(str(tmp_path / "in.jsonl"), "-o", str(out)) == 0
    rejects = [json.loads(line) for line in (tmp_path / "out.parquet.rejects.jsonl").read_text().splitlines()]
    size = len(json.dumps(huge)) + 1
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, f"line of {size:,} bytes, over the 4,096-byte limit per row")
    ]
    assert pq.read_table(out).num_rows == 2
