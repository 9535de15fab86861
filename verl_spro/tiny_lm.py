"""A tiny Qwen2 policy, character tokenizers and verifiable tasks, all built offline in code.

Used by ``verl-spro demo`` and ``verl-spro sweep``. Nothing here touches a model hub: each task has a fixed
character table and the model is a randomly initialised ``Qwen2ForCausalLM`` from a ``Qwen2Config`` written below.

Every task has a fixed prompt length (left-padded with ``.``, so no attention mask is needed), a response of answer
tokens then EOS, and a 0/1 reward: 1 for exactly the answer followed by EOS, else 0. Correct answers of one task
have different lengths and wrong ones (a token dropped, repeated, or no EOS) other lengths again, so the responses
of one group end at different positions: that is where SPRO's masked step advantage differs from GRPO's
per-sequence advantage.

- ``sort`` (the demo's task): sort 2 to 4 digits, ``"3142=" -> "1234"``, answers of 3 to 5 tokens with EOS.
- ``sort_long``: sort 6 to 10 digits, answers of 7 to 11 tokens.
- ``add_carries``: add two numbers of 7 to 12 digits, given column by column from the units and answered column by
  column, each column's sum digit then its carry (57 + 68: ``"7856...=" -> "5121"``: 7+8 = 15 -> 5 carry 1,
  5+6+1 = 12 -> 2 carry 1), answers of 15 to 25 tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import Qwen2ForCausalLM

PAD, EOS = 0, 1
SPECIAL = ["<pad>", "<eos>"]

# (n, generator) -> n (prompt text, answer text) pairs; the prompt texts all have the task's prompt length.
ProblemMaker = Callable[[int, "torch.Generator"], list[tuple[str, str]]]


@dataclass(frozen=True)
class Task:
    """A verifiable task over a character vocabulary.

    Attributes:
        name: short identifier (``sort``, ``sort_long``, ``add_carries``).
        chars: the characters of the vocabulary; token ids are 2.. (0 is PAD, 1 is EOS).
        prompt_len: P, the length of every prompt.
        max_response_len: T, the generation budget: the longest answer plus EOS plus one token of room.
        answer_tokens: (shortest, longest) correct answer, EOS included.
        make: draws problems, see :data:`ProblemMaker`.
    """

    name: str
    chars: str
    prompt_len: int
    max_response_len: int
    answer_tokens: tuple[int, int]
    make: ProblemMaker

    @functools.cached_property
    def vocab(self) -> list[str]:
        """Token id -> symbol: the special tokens, then :attr:`chars`."""
        return [*SPECIAL, *self.chars]

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {c: i + len(SPECIAL) for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        """Character ids of ``text`` (no EOS added)."""
        return [self._ids[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        """Text up to (not including) the first EOS; PAD and EOS are dropped."""
        vocab, out = self.vocab, []
        for i in ids:
            if i == EOS:
                break
            if i != PAD:
                out.append(vocab[i])
        return "".join(out)

    def build_policy(self, seed: int) -> Qwen2ForCausalLM:
        """A randomly initialised Qwen2 causal LM of about 250k parameters, deterministic for ``seed``."""
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        config = Qwen2Config(
            vocab_size=len(self.vocab),
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=self.prompt_len + self.max_response_len,
            tie_word_embeddings=True,
            pad_token_id=PAD,
            eos_token_id=EOS,
            bos_token_id=EOS,
            attn_implementation="eager",
        )
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config).float()

    def sample_problems(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """``n`` random problems.

        Returns:
            prompts: [n, prompt_len] token ids.
            answers: the ``n`` target strings (no EOS).
        """
        import torch

        pairs = self.make(n, generator)
        prompts = torch.tensor([self.encode(p) for p, _ in pairs], dtype=torch.long)
        return prompts, [a for _, a in pairs]

    def sft_targets(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Supervised responses for ``answers``: the answer then EOS.

        Returns:
            responses: [n, max_response_len] token ids, PAD after EOS.
            mask: [n, max_response_len] float, 1 on the answer and EOS.
        """
        import torch

        responses = torch.full((len(answers), self.max_response_len), PAD, dtype=torch.long)
        mask = torch.zeros(len(answers), self.max_response_len)
        for i, answer in enumerate(answers):
            ids = [*self.encode(answer), EOS]
            responses[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1.0
        return responses, mask

    def rewards(self, responses: torch.Tensor, answers: list[str]) -> torch.Tensor:
        """[B] float: 1.0 when the response ([B, T] ids) is exactly the answer followed by EOS, else 0.0."""
        import torch

        return torch.tensor(
            [float(EOS in ids and self.decode(ids) == a) for ids, a in zip(responses.tolist(), answers, strict=True)]
        )


def response_mask(responses: torch.Tensor) -> torch.Tensor:
    """[B, T] float mask: 1 up to and including the first EOS (all T tokens when there is none)."""
    import torch

    is_eos = (responses == EOS).long()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos  # how many EOS strictly before each position
    return (eos_before == 0).float()


def sort_task(name: str, min_digits: int, max_digits: int) -> Task:
    """Sort ``min_digits`` to ``max_digits`` digits: prompt ``"..3142="``, answer ``"1234"``."""

    def make(n: int, generator: torch.Generator) -> list[tuple[str, str]]:
        import torch

        lengths = torch.randint(min_digits, max_digits + 1, (n,), generator=generator).tolist()
        digits = torch.randint(0, 10, (n, max_digits), generator=generator).tolist()
        texts = ["".join(str(d) for d in row[:k]) for row, k in zip(digits, lengths, strict=True)]
        return [(t.rjust(max_digits, ".") + "=", "".join(sorted(t))) for t in texts]

    return Task(
        name=name,
        chars="0123456789.=",
        prompt_len=max_digits + 1,
        max_response_len=max_digits + 2,
        answer_tokens=(min_digits + 1, max_digits + 1),
        make=make,
    )


def addition_with_carries(a: str, b: str) -> str:
    """``a + b`` written column by column from the units: each column's sum digit then its carry (0 or 1).

    Both numbers have the same number of digits n; the answer has 2n characters.
    """
    out, carry = [], 0
    for x, y in zip(reversed(a), reversed(b), strict=True):
        total = int(x) + int(y) + carry
        carry = total // 10
        out += [str(total % 10), str(carry)]
    return "".join(out)


def addition_task(name: str, min_digits: int, max_digits: int) -> Task:
    """Add two n-digit numbers (n in ``min_digits..max_digits``) with the carries written out.

    The prompt gives the operands column by column from the units, the way one adds by hand: 4821 + 3967 is
    ``"17268943" + "." * (2 * max_digits - 8) + "="`` (1 and 7, then 2 and 6, ...). So the two digits of column i
    are always the same distance before the answer's column i, whatever n. The answer is
    :func:`addition_with_carries`.
    """

    def make(n: int, generator: torch.Generator) -> list[tuple[str, str]]:
        import torch

        lengths = torch.randint(min_digits, max_digits + 1, (n,), generator=generator).tolist()
        digits = torch.randint(0, 10, (n, 2, max_digits), generator=generator).tolist()
        pairs = []
        for (row_a, row_b), k in zip(digits, lengths, strict=True):
            # no leading zero: the operands really have k digits
            a = str(max(row_a[0], 1)) + "".join(map(str, row_a[1:k]))
            b = str(max(row_b[0], 1)) + "".join(map(str, row_b[1:k]))
            columns = "".join(x + y for x, y in zip(reversed(a), reversed(b), strict=True))
            pairs.append((columns.ljust(2 * max_digits, ".") + "=", addition_with_carries(a, b)))
        return pairs

    return Task(
        name=name,
        chars="0123456789.=",
        prompt_len=2 * max_digits + 1,
        max_response_len=2 * max_digits + 2,
        answer_tokens=(2 * min_digits + 1, 2 * max_digits + 1),
        make=make,
    )


SORT = sort_task("sort", 2, 4)  # the demo's task
TASKS: dict[str, Task] = {
    task.name: task for task in (SORT, sort_task("sort_long", 6, 10), addition_task("add_carries", 7, 12))
}
