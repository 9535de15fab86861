"""Turn JSONL or parquet files of math and code problems into verl's RL parquet schema.

Each output row has ``data_source``, ``prompt`` (a list of chat messages ``{role, content}``), ``ability``,
``reward_model {style: "rule", ground_truth}`` and ``extra_info {split, index, ability, layout, source_file,
source_line}``. Input layouts, detected per row (or forced with ``--format``):

  prime  PRIME's Eurus-2-RL-Data: already verl-shaped; data_source, prompt messages (role, content), ability and
         reward_model (style, ground_truth) are kept as they are after validation (code rows need JSON test cases
         ``{"inputs": [...], "outputs": [...]}``). Like every layout, a row's extra_info is this tool's (the
         fields below) and other columns are not written: the output schema is fixed.
  math   MATH: ``problem`` and ``solution``; the answer is the last \\boxed{...} of the solution.
  gsm8k  GSM8K: ``question`` and ``answer``; the answer is the number after ``####`` (or ``answer`` itself
         when it is a number).

A numeric answer (a JSON or parquet integer or float, e.g. ``reward_model.ground_truth: 42``) is accepted as its
decimal string (``42``; ``3.0`` gives ``3``); booleans, NaN and infinities are rejected.

GSM8K and MATH rows get data_source ``openai/gsm8k`` and ``DigitalLearningGmbH/MATH-lighteval``, which verl's
``default_compute_score`` grades; PRIME's sources (numina_*, apps, codecontests, codeforces, taco) are graded by
verl too. Every rejected row is listed with its file, 1-based line (row number for parquet) and reason in a
JSONL report (``--rejects``, default ``OUTPUT.rejects.jsonl``), and summarised on stderr.

Rows are streamed (JSONL a line at a time, parquet a batch at a time; the output is written in row groups), so
memory does not grow with the input. Each line is decoded and parsed on its own: a line that is not UTF-8, not
JSON, nested too deeply, or longer than 32 MiB (:data:`MAX_LINE_BYTES`: parsing costs about 13 times a line's
size, so one huge line cannot take the machine's memory) is rejected with its line number, and the run goes on.
A file is read as parquet when its name ends in ``.parquet`` (any case) or it starts with parquet's magic bytes,
as JSONL otherwise.

Nothing is lost: an output or ``--rejects`` path that is one of the inputs (also through a symlink or hard link)
is refused, as are one input given twice (by path, symlink or hard link) and an empty path; every output is
written to a hidden temporary file beside it (``.NAME.HOST.PID.*.tmp``) and renamed into place at the end, so an
interrupted or killed run leaves the previous files as they were. Inputs and outputs are checked before any row
is read.

Exit status: 0 when rows were written, 1 when none were (or any row was rejected, with ``--strict``),
2 when an input is missing or unreadable or an output path is refused or unwritable, 130 on Ctrl-C and 143 on
SIGTERM (the previous outputs left as they were).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_spro.argtypes import positive_int
from verl_spro.output_files import AtomicFile, OutputPathError, atomic_write, one_line, out_path
from verl_spro.rewards import GSM8K_DATA_SOURCE, MATH_DATA_SOURCE

LAYOUTS = ("prime", "math", "gsm8k")

# The instructions verl's own examples/data_preprocess/{gsm8k,math_dataset}.py append to the question.
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

_GSM8K_ANSWER = re.compile(r"####\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*$")
#: How many rejects the stderr summary lists one by one (the report file has all of them).
_SHOWN_REJECTS = 20
#: The longest JSONL line read (bytes); a longer one is rejected without being held in memory.
MAX_LINE_BYTES = 32 << 20
#: Rows per parquet read batch, and the bounds of one written row group (rows; approximate text bytes).
_READ_BATCH_ROWS = 1024
_WRITE_BATCH_ROWS = 4096
_WRITE_BATCH_BYTES = 32 << 20


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
    parser.add_argument(
        "-o", "--output", type=out_path("-o/--output"), required=True, help="parquet file to write (verl's schema)"
    )
    parser.add_argument(
        "--format", choices=("auto", *LAYOUTS), default="auto", help="input layout (default: detected per row)"
    )
    parser.add_argument("--split", default="train", help="value of extra_info.split (default: train)")
    parser.add_argument(
        "--rejects", type=out_path("--rejects"), help="JSONL report of rejected rows (default: OUTPUT.rejects.jsonl)"
    )
    parser.add_argument(
        "--limit", type=positive_int("--limit"), default=None, help="stop after writing this many rows (>= 1)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any row is rejected")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class UsageError(Exception):
    """An unreadable input or a refused or unwritable output: one line, exit status 2, previous outputs kept."""


class _Stopped(Exception):
    """SIGTERM (``scancel``, ``kill``) during a run; SIGINT arrives as ``KeyboardInterrupt``."""


def run(args: argparse.Namespace) -> int:
    """Convert ``args.inputs`` into ``args.output``; see the module docstring for the exit status."""
    args.output = str(args.output)
    rejects_path = str(args.rejects or f"{args.output}.rejects.jsonl")
    outputs: list[AtomicFile] = []
    try:
        with _stop_on_signals():
            _check_inputs(args.inputs)
            _check_outputs({"--output": args.output, "--rejects": rejects_path}, args.inputs)
            outputs = [AtomicFile(args.output), AtomicFile(rejects_path)]
            parquet_out, rejects_out = outputs
            summary = _convert(args, parquet_out, rejects_out)
            if summary.written:
                parquet_out.commit()
            rejects_out.commit()
    except (UsageError, OutputPathError) as exc:
        print(f"prepare-data: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Stopped) as exc:
        what = "terminated" if isinstance(exc, _Stopped) else "interrupted"
        print(f"prepare-data: {what}; {args.output} and {rejects_path} left as they were", file=sys.stderr)
        return 143 if isinstance(exc, _Stopped) else 130
    except OSError as exc:  # reading errors are UsageErrors already: this is a write (disk full, quota, EFBIG)
        print(
            f"prepare-data: writing failed ({one_line(exc)}); {args.output} and {rejects_path} left as they were",
            file=sys.stderr,
        )
        return 2
    finally:
        for output in outputs:
            output.discard()
    _print_summary(args.output, summary, rejects_path)
    if not summary.written or (args.strict and summary.rejected):
        return 1
    return 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Stopped` and SIGINT into ``KeyboardInterrupt`` so that temporary files are removed
    (main thread only). SIGINT is set explicitly: a process started in the background inherits it ignored."""

    def handler(signum: int, frame: Any) -> None:
        raise _Stopped

    try:
        previous = signal.signal(signal.SIGTERM, handler), signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def _check_inputs(paths: list[str]) -> None:
    """Every input is a readable regular file (parquet: with a readable footer); all problems in one message."""
    problems = []
    seen: dict[tuple[int, int], str] = {}
    for path in paths:
        if os.path.isfile(path) and _file_id(path) in seen:
            problems.append(f"input {path} is the same file as input {seen[_file_id(path)]}: give each input once")
        elif not os.path.exists(path):
            problems.append(f"input file not found: {path}")
        elif os.path.isdir(path):
            problems.append(f"input {path} is a directory, not a file")
        elif not os.path.isfile(path):
            problems.append(f"input {path} is not a regular file")
        else:
            seen[_file_id(path)] = path
            try:
                if _is_parquet(path):
                    import pyarrow.parquet as pq

                    pq.ParquetFile(path).close()
                else:
                    with open(path, "rb") as handle:
                        handle.read(1)
            except Exception as exc:  # OSError, ArrowInvalid: the reader's reason, on one line
                problems.append(f"cannot read input {path}: {one_line(exc)}")
    if problems:
        raise UsageError("; ".join(problems))


def _check_outputs(outputs: dict[str, str], inputs: list[str]) -> None:
    """No output is an input (same file, also through a symlink or hard link) or another output, or a directory."""
    input_ids = {_file_id(path): path for path in inputs}
    seen: dict[tuple[int, int] | str, str] = {}
    for option, path in outputs.items():
        real = os.path.realpath(path)
        file_id = _file_id(path) if os.path.exists(path) else None
        if file_id in input_ids or real in {os.path.realpath(p) for p in inputs}:
            clash = input_ids.get(file_id) if file_id in input_ids else path
            raise UsageError(f"{option} {path} is the input file {clash}: it would be overwritten; choose another path")
        for key in (file_id, real):
            if key is not None and key in seen:
                raise UsageError(f"{option} {path} is the same file as {seen[key]}; choose another path")
        seen.update({key: f"{option} {path}" for key in (file_id, real) if key is not None})
        if os.path.isdir(path):
            raise UsageError(f"{option} {path} is a directory; give a file path")
        if os.path.exists(path) and not os.path.isfile(path):
            raise UsageError(f"{option} {path} is not a regular file; give a file path")


def _file_id(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


@dataclass
class Summary:
    """What a run wrote: row and reject counts, the first rejects and a tally of reasons."""

    written: int = 0
    rejected: int = 0
    shown: list[Reject] = field(default_factory=list)
    tally: Counter = field(default_factory=Counter)

    def add_reject(self, reject: Reject) -> None:
        self.rejected += 1
        if len(self.shown) < _SHOWN_REJECTS:
            self.shown.append(reject)
        # Group by the reason's leading phrase (before any per-row detail) for a readable tally.
        self.tally[reject.reason.split(":")[0].split(" (")[0]] += 1


def _convert(args: argparse.Namespace, parquet_out: AtomicFile, rejects_out: AtomicFile) -> Summary:
    """Stream every input row through :func:`convert_row` into the temporary outputs; memory stays bounded."""
    from tqdm import tqdm

    summary = Summary()
    with _ParquetSink(parquet_out.temp) as sink, open(rejects_out.temp, "w", encoding="utf-8") as report:
        for path in args.inputs:
            parquet = _is_parquet(path)
            bar = tqdm(
                total=_row_count(path) if parquet else os.path.getsize(path),
                desc=os.path.basename(path),
                unit="row" if parquet else "B",
                unit_scale=not parquet,
                disable=args.no_progress,
            )
            with bar:
                for line, size, row in _parquet_rows(path) if parquet else _jsonl_rows(path):
                    bar.update(size)
                    try:
                        if isinstance(row, RowError):
                            raise row
                        record = convert_row(row, args.format)
                    except RowError as exc:
                        reject = Reject(path, line, str(exc))
                        report.write(json.dumps({"file": path, "line": line, "reason": reject.reason}) + "\n")
                        summary.add_reject(reject)
                        continue
                    record["extra_info"].update(
                        split=args.split, index=summary.written, source_file=os.path.basename(path), source_line=line
                    )
                    sink.add(record)
                    summary.written += 1
                    if args.limit is not None and summary.written >= args.limit:
                        return summary
    return summary


def convert_row(row: Any, layout: str = "auto") -> dict[str, Any]:
    """Convert one input row (a dict) into a verl record; raise :class:`RowError` with the reason if it can't."""
    if not isinstance(row, dict):
        raise RowError(f"not a JSON object but {type(row).__name__}")
    if layout == "auto":
        layout = detect_layout(row)
    try:
        return _CONVERTERS[layout](row)
    except RecursionError:  # e.g. test cases nested thousands deep, re-serialised with json.dumps
        raise RowError("a field is nested too deeply") from None


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


def _answer_text(value: Any, key: str) -> str:
    """An answer as the string verl's graders compare: strings as they are, numbers as their decimal string."""
    if value is None:
        raise RowError(f"missing '{key}'")
    if isinstance(value, bool):
        raise RowError(f"'{key}' is a boolean, not an answer")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RowError(f"'{key}' is {value}, not a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict):  # code test cases stored as an object rather than a JSON string
        return json.dumps(value)
    if not isinstance(value, str):
        raise RowError(f"'{key}' is {type(value).__name__}, not a string or number")
    if not value.strip():
        raise RowError(f"empty '{key}'")
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
    if isinstance(row.get("answer"), (int, float)):  # the final answer alone, as a number
        ground_truth = _answer_text(row["answer"], "answer")
    else:
        match = _GSM8K_ANSWER.search(_text_field(row, "answer").strip())
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
    ground_truth = _answer_text(reward_model.get("ground_truth"), "reward_model.ground_truth")
    style = reward_model.get("style") or "rule"
    if not isinstance(style, str):
        raise RowError(f"reward_model.style is {type(style).__name__}, not a string")

    ability = row.get("ability") or infer_ability(ground_truth)
    if not isinstance(ability, str):
        raise RowError(f"field 'ability' is {type(ability).__name__}, not a string")
    ability = ability.lower()
    if ability == "code":
        _check_test_cases(ground_truth)
    record = _record(data_source, messages, ability, ground_truth, "prime")
    record["reward_model"]["style"] = style
    return record


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


def _is_parquet(path: str) -> bool:
    """By name (``.parquet`` in any case) or content (parquet files start with ``PAR1``; a JSONL line cannot)."""
    if path.lower().endswith(".parquet"):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def _row_count(path: str) -> int:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        return parquet.metadata.num_rows


def _parquet_rows(path: str) -> Iterator[tuple[int, int, Any]]:
    """(row number, 1, row) for every row, read a batch at a time; a corrupt page stops the run (UsageError)."""
    import pyarrow.parquet as pq

    number = 0
    with pq.ParquetFile(path) as parquet:
        batches = parquet.iter_batches(batch_size=_READ_BATCH_ROWS)
        while True:
            try:
                batch = next(batches, None)
            except Exception as exc:  # OSError or ArrowInvalid from a corrupt page: no row of it can be trusted
                raise UsageError(
                    f"cannot read input {path} after row {number}: {one_line(exc)}; nothing written"
                ) from None
            if batch is None:
                return
            for row in batch.to_pylist():
                number += 1
                yield number, 1, row


def _jsonl_rows(path: str) -> Iterator[tuple[int, int, Any]]:
    """(1-based line, bytes, row or RowError) for every line: each line is decoded and parsed on its own."""
    try:
        with open(path, "rb") as handle:
            number = 0
            while raw := handle.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    size = len(raw) + _skip_line(handle)
                    reason = f"line of {size:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit per row"
                    yield number, size, RowError(reason)
                    continue
                yield number, len(raw), _parse_line(raw[3:] if number == 1 and raw.startswith(_BOM) else raw)
    except OSError as exc:
        raise UsageError(f"cannot read input {path}: {one_line(exc)}") from None


_BOM = b"\xef\xbb\xbf"


def _skip_line(handle: Any) -> int:
    """Read to the end of the current line in bounded chunks; returns the bytes skipped."""
    skipped = 0
    while chunk := handle.readline(1 << 20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _parse_line(raw: bytes) -> Any:
    """The JSON value of one line, or the RowError saying why it has none."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowError(f"not valid UTF-8 (byte {exc.start + 1} of the line: {raw[exc.start : exc.start + 1]!r})")
    if not text.strip():
        return RowError("empty line")
    try:
        row = json.loads(text)
    except RecursionError:
        return RowError("JSON nested too deeply to parse")
    except ValueError as exc:
        return RowError(f"malformed JSON: {exc}")
    if "\\u" in text:  # a \uD800-style escape decodes to a lone surrogate, which no UTF-8 output can hold
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return RowError("a string holds a lone UTF-16 surrogate (\\uD800-\\uDFFF escape): not valid Unicode")
        except RecursionError:
            return RowError("JSON nested too deeply to parse")
    return row


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


class _ParquetSink:
    """Writes records to a parquet file in row groups of bounded size (rows and approximate bytes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.writer: Any = None
        self.buffer: list[dict[str, Any]] = []
        self.buffered_bytes = 0

    def add(self, record: dict[str, Any]) -> None:
        self.buffer.append(record)
        # The text that dominates a row's size (other callers of write_parquet may leave fields out).
        truth = (record.get("reward_model") or {}).get("ground_truth") or ""
        self.buffered_bytes += len(truth) + sum(len(m.get("content") or "") for m in record.get("prompt") or [])
        if len(self.buffer) >= _WRITE_BATCH_ROWS or self.buffered_bytes >= _WRITE_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.buffer:
            return
        schema = output_schema()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, schema)
        self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=schema))
        self.buffer, self.buffered_bytes = [], 0

    def __enter__(self) -> _ParquetSink:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.flush()
            if self.writer is None:  # no record at all: still a valid (empty) parquet file with the schema
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(self.path, output_schema())
        if self.writer is not None:
            self.writer.close()


def write_parquet(records: Iterable[dict[str, Any]], path: str) -> None:
    """Write verl records to ``path`` with :func:`output_schema`, atomically (a temporary file renamed over it)."""

    def write(temp: Path) -> None:
        with _ParquetSink(str(temp)) as sink:
            for record in records:
                sink.add(record)

    atomic_write(Path(path), write)


def _print_summary(output: str, summary: Summary, rejects_path: str) -> None:
    err = sys.stderr
    if summary.rejected:
        print(f"prepare-data: {summary.rejected} row(s) rejected (all listed in {rejects_path}):", file=err)
        for reject in summary.shown:
            print(f"  {reject.file}:{reject.line}: {reject.reason}", file=err)
        if summary.rejected > len(summary.shown):
            print(f"  ... and {summary.rejected - len(summary.shown)} more", file=err)
        for reason, count in summary.tally.most_common():
            print(f"  {count:>8}  {reason}", file=err)
    if summary.written:
        print(f"prepare-data: wrote {summary.written} row(s) to {output}", file=err)
    else:
        kept = " (the previous file is left as it was)" if os.path.exists(output) else ""
        print(f"prepare-data: no valid rows; {output} not written{kept}", file=err)
