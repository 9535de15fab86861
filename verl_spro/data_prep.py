"""Turn JSONL or parquet files of math and code problems into verl's RL parquet schema.

Each output row has ``data_source``, ``prompt`` (a list of chat messages ``{role, content}``), ``ability``,
``reward_model {style: "rule", ground_truth}`` and ``extra_info {split, index, ability, layout, source_file,
source_line}``. Input layouts, detected per row (or forced with ``--format``):

  prime  PRIME's Eurus-2-RL-Data: already verl-shaped (data_source, prompt, ability, reward_model); kept as is
         after validation (code rows need JSON test cases ``{"inputs": [...], "outputs": [...]}``).
  math   MATH: ``problem`` and ``solution``; the answer is the last \\boxed{...} of the solution.
  gsm8k  GSM8K: ``question`` and ``answer``; the answer is the number after ``####``.

GSM8K and MATH rows get data_source ``openai/gsm8k`` and ``DigitalLearningGmbH/MATH-lighteval``, which verl's
``default_compute_score`` grades; PRIME's sources (numina_*, apps, codecontests, codeforces, taco) are graded by
verl too. Every rejected row is listed with its file, 1-based line (row number for parquet) and reason in a
JSONL report (``--rejects``, default ``OUTPUT.rejects.jsonl``), and summarised on stderr.

Exit status: 0 when rows were written, 1 when none were (or any row was rejected, with ``--strict``),
2 when an input file is missing or unreadable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from verl_spro.rewards import GSM8K_DATA_SOURCE, MATH_DATA_SOURCE

LAYOUTS = ("prime", "math", "gsm8k")

# The instructions verl's own examples/data_preprocess/{gsm8k,math_dataset}.py append to the question.
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

_GSM8K_ANSWER = re.compile(r"####\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*$")
#: How many rejects the stderr summary lists one by one (the report file has all of them).
_SHOWN_REJECTS = 20


class RowError(ValueError):
    """A row that cannot be converted; the message is the reason reported to the user."""


@dataclass(frozen=True)
class Reject:
    """One rejected input row."""

    file: str
    line: int
    reason: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``verl-spro prepare-data``'s options."""
    parser.add_argument("inputs", nargs="+", help="input files: *.jsonl (one JSON object a line) or *.parquet")
    parser.add_argument("-o", "--output", required=True, help="parquet file to write (verl's schema)")
    parser.add_argument(
        "--format", choices=("auto", *LAYOUTS), default="auto", help="input layout (default: detected per row)"
    )
    parser.add_argument("--split", default="train", help="value of extra_info.split (default: train)")
    parser.add_argument("--rejects", help="JSONL report of rejected rows (default: OUTPUT.rejects.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="stop after writing this many rows")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any row is rejected")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Convert ``args.inputs`` into ``args.output``; see the module docstring for the exit status."""
    from tqdm import tqdm

    missing = [path for path in args.inputs if not os.path.isfile(path)]
    if missing:
        for path in missing:
            print(f"prepare-data: input file not found: {path}", file=sys.stderr)
        return 2

    records: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for path in args.inputs:
        try:
            rows, total = _open_rows(path)
        except Exception as exc:  # an unreadable file is reported, never half-processed silently
            print(f"prepare-data: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        with tqdm(total=total, desc=os.path.basename(path), unit="row", disable=args.no_progress) as bar:
            for line, row in rows:
                bar.update(1)
                if args.limit is not None and len(records) >= args.limit:
                    break
                try:
                    if isinstance(row, RowError):
                        raise row
                    record = convert_row(row, args.format)
                except RowError as exc:
                    rejects.append(Reject(path, line, str(exc)))
                    continue
                record["extra_info"].update(
                    split=args.split, index=len(records), source_file=os.path.basename(path), source_line=line
                )
                records.append(record)

    rejects_path = args.rejects or f"{args.output}.rejects.jsonl"
    _write_rejects(rejects_path, rejects)
    if records:
        write_parquet(records, args.output)
    _print_summary(args.output, len(records), rejects, rejects_path)
    if not records or (args.strict and rejects):
        return 1
    return 0


def convert_row(row: Any, layout: str = "auto") -> dict[str, Any]:
    """Convert one input row (a dict) into a verl record; raise :class:`RowError` with the reason if it can't."""
    if not isinstance(row, dict):
        raise RowError(f"not a JSON object but {type(row).__name__}")
    if layout == "auto":
        layout = detect_layout(row)
    return _CONVERTERS[layout](row)


def detect_layout(row: dict[str, Any]) -> str:
    """The layout of ``row`` from its keys: ``prime`` (prompt/reward_model), ``math`` (problem), ``gsm8k``."""
    if "reward_model" in row or "prompt" in row:
        return "prime"
    if "problem" in row:
        return "math"
    if "question" in row:
        return "gsm8k"
    raise RowError(
        f"unknown layout (keys: {', '.join(sorted(map(str, row))) or 'none'}); expected PRIME's "
        "(prompt, reward_model), MATH's (problem, solution) or GSM8K's (question, answer)"
    )


def _text_field(row: dict[str, Any], key: str) -> str:
    if key not in row or row[key] is None:
        raise RowError(f"missing field '{key}'")
    value = row[key]
    if not isinstance(value, str):
        raise RowError(f"field '{key}' is {type(value).__name__}, not a string")
    if not value.strip():
        raise RowError(f"empty field '{key}'")
    return value


def _record(data_source: str, messages: list[dict[str, str]], ability: str, ground_truth: str, layout: str):
    return {
        "data_source": data_source,
        "prompt": messages,
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"ability": ability, "layout": layout},
    }


def _convert_gsm8k(row: dict[str, Any]) -> dict[str, Any]:
    question = _text_field(row, "question")
    answer = _text_field(row, "answer")
    match = _GSM8K_ANSWER.search(answer.strip())
    if match is None:
        raise RowError("unparsable answer: no '#### <number>' at the end of 'answer'")
    # verl's gsm8k grader compares strings after removing thousands separators from the response.
    ground_truth = match.group(1).replace(",", "")
    content = f"{question.strip()} {GSM8K_INSTRUCTION}"
    return _record(GSM8K_DATA_SOURCE, [{"role": "user", "content": content}], "math", ground_truth, "gsm8k")


def _convert_math(row: dict[str, Any]) -> dict[str, Any]:
    from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed

    problem = _text_field(row, "problem")
    solution = _text_field(row, "solution")
    boxed = last_boxed_only_string(solution)
    try:
        ground_truth = remove_boxed(boxed) if boxed is not None else None
    except (AssertionError, IndexError):
        ground_truth = None
    if not ground_truth or not ground_truth.strip():
        raise RowError("unparsable answer: no \\boxed{...} answer in 'solution'")
    content = f"{problem.strip()} {MATH_INSTRUCTION}"
    return _record(MATH_DATA_SOURCE, [{"role": "user", "content": content}], "math", ground_truth.strip(), "math")


def _convert_prime(row: dict[str, Any]) -> dict[str, Any]:
    from verl_spro.rewards import infer_ability

    data_source = _text_field(row, "data_source")
    prompt = row.get("prompt")
    if prompt is None:
        raise RowError("missing field 'prompt'")
    if hasattr(prompt, "tolist"):  # numpy arrays from pandas-written parquet
        prompt = prompt.tolist()
    if not isinstance(prompt, list) or not prompt:
        raise RowError("field 'prompt' is not a non-empty list of chat messages")
    messages = []
    for i, message in enumerate(prompt):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RowError(f"prompt[{i}] is not a {{role, content}} message")
        content = message.get("content")
        if not isinstance(content, str):
            raise RowError(f"prompt[{i}].content is not a string")
        messages.append({"role": message["role"], "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise RowError("empty question: no user message with content in 'prompt'")

    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict):
        raise RowError("missing field 'reward_model'")
    ground_truth = reward_model.get("ground_truth")
    if isinstance(ground_truth, dict):  # test cases stored as an object rather than a JSON string
        ground_truth = json.dumps(ground_truth)
    if not isinstance(ground_truth, str) or not ground_truth.strip():
        raise RowError("missing or empty 'reward_model.ground_truth'")

    ability = row.get("ability") or infer_ability(ground_truth)
    if not isinstance(ability, str):
        raise RowError(f"field 'ability' is {type(ability).__name__}, not a string")
    ability = ability.lower()
    if ability == "code":
        _check_test_cases(ground_truth)
    return _record(data_source, messages, ability, ground_truth, "prime")


def _check_test_cases(ground_truth: str) -> None:
    try:
        cases = json.loads(ground_truth)
    except ValueError as exc:
        raise RowError(f"unparsable answer: code test cases are not JSON ({exc})") from None
    if not isinstance(cases, dict) or not isinstance(cases.get("inputs"), list):
        raise RowError("unparsable answer: code test cases lack an 'inputs' list")
    if not isinstance(cases.get("outputs"), list) or len(cases["outputs"]) != len(cases["inputs"]):
        raise RowError("unparsable answer: code test cases need as many 'outputs' as 'inputs'")


_CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "prime": _convert_prime,
    "math": _convert_math,
    "gsm8k": _convert_gsm8k,
}


def _open_rows(path: str) -> tuple[Iterator[tuple[int, Any]], int]:
    """(line or row number, row or RowError) pairs of a file, and how many there are (for the progress bar)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        return _parquet_rows(parquet), parquet.metadata.num_rows
    with open(path, encoding="utf-8") as handle:
        total = sum(1 for _ in handle)
    return _jsonl_rows(path), total


def _parquet_rows(parquet: Any) -> Iterator[tuple[int, Any]]:
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _jsonl_rows(path: str) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                yield number, RowError("empty line")
                continue
            try:
                yield number, json.loads(text)
            except ValueError as exc:
                yield number, RowError(f"malformed JSON: {exc}")


def output_schema() -> Any:
    """The pyarrow schema of the written parquet (the columns verl's RLHFDataset and reward managers read)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            (
                "extra_info",
                pa.struct(
                    [
                        ("split", pa.string()),
                        ("index", pa.int64()),
                        ("ability", pa.string()),
                        ("layout", pa.string()),
                        ("source_file", pa.string()),
                        ("source_line", pa.int64()),
                    ]
                ),
            ),
        ]
    )


def write_parquet(records: list[dict[str, Any]], path: str) -> None:
    """Write verl records to ``path`` with :func:`output_schema`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=output_schema()), path)


def _write_rejects(path: str, rejects: list[Reject]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for reject in rejects:
            handle.write(json.dumps({"file": reject.file, "line": reject.line, "reason": reject.reason}) + "\n")


def _print_summary(output: str, written: int, rejects: list[Reject], rejects_path: str) -> None:
    err = sys.stderr
    if rejects:
        print(f"prepare-data: {len(rejects)} row(s) rejected (all listed in {rejects_path}):", file=err)
        for reject in rejects[:_SHOWN_REJECTS]:
            print(f"  {reject.file}:{reject.line}: {reject.reason}", file=err)
        if len(rejects) > _SHOWN_REJECTS:
            print(f"  ... and {len(rejects) - _SHOWN_REJECTS} more", file=err)
        # Group by the reason's leading phrase (before any per-row detail) for a readable tally.
        tally = Counter(reject.reason.split(":")[0].split(" (")[0] for reject in rejects)
        for reason, count in tally.most_common():
            print(f"  {count:>8}  {reason}", file=err)
    if written:
        print(f"prepare-data: wrote {written} row(s) to {output}", file=err)
    else:
        print(f"prepare-data: no valid rows; {output} not written", file=err)
