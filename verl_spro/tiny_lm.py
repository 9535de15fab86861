"""A tiny Qwen2 policy, a character tokenizer and a verifiable sorting task, all built offline in code.

Used by ``verl-spro demo``. Nothing here touches a model hub: the tokenizer is a fixed character table and
the model is a randomly initialised ``Qwen2ForCausalLM`` from a ``Qwen2Config`` written below.

The task: sort a list of 2 to 4 digits. The prompt is the digits left-padded with ``.`` to a fixed width, then
``=`` (``"3142="``, ``"..31="``; a fixed prompt length spares attention masks); a response is the sorted digits then
EOS (``"1234"``). The reward is 1 for exactly the sorted digits followed by EOS, else 0. Correct answers have 2 to 4
digits and wrong ones (a digit dropped, repeated, or no EOS) other lengths, so the responses of one group end at
different positions: that is where SPRO's masked step advantage differs from GRPO's per-sequence advantage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import Qwen2ForCausalLM

PAD, EOS = 0, 1
CHARS = "0123456789.="
VOCAB = ["<pad>", "<eos>", *CHARS]
CHAR_TO_ID = {c: i + 2 for i, c in enumerate(CHARS)}
MIN_DIGITS, MAX_DIGITS = 2, 4
PROMPT_LEN = MAX_DIGITS + 1  # "..3142="
MAX_RESPONSE_LEN = MAX_DIGITS + 2  # the longest answer plus EOS, and one token of room to ramble


def encode(text: str) -> list[int]:
    """Character ids of ``text`` (no EOS added)."""
    return [CHAR_TO_ID[c] for c in text]


def decode(ids: list[int]) -> str:
    """Text up to (not including) the first EOS; PAD and EOS are dropped."""
    out = []
    for i in ids:
        if i == EOS:
            break
        if i != PAD:
            out.append(VOCAB[i])
    return "".join(out)


def build_policy(seed: int) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM of about 250k parameters, deterministic for ``seed``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(VOCAB),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=PROMPT_LEN + MAX_RESPONSE_LEN,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).float()


def sample_problems(n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """``n`` random sorting problems.

    Returns:
        prompts: [n, PROMPT_LEN] token ids of ``"..3142="``.
        answers: the ``n`` target strings (``"1234"``).
    """
    import torch

    lengths = torch.randint(MIN_DIGITS, MAX_DIGITS + 1, (n,), generator=generator).tolist()
    digits = torch.randint(0, 10, (n, MAX_DIGITS), generator=generator).tolist()
    texts = ["".join(str(d) for d in row[:k]) for row, k in zip(digits, lengths, strict=True)]
    prompts = torch.tensor([encode(t.rjust(MAX_DIGITS, ".") + "=") for t in texts], dtype=torch.long)
    return prompts, ["".join(sorted(t)) for t in texts]


def sft_targets(answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised responses for ``answers``: the answer then EOS.

    Returns:
        responses: [n, MAX_RESPONSE_LEN] token ids, PAD after EOS.
        mask: [n, MAX_RESPONSE_LEN] float, 1 on the answer and EOS.
    """
    import torch

    responses = torch.full((len(answers), MAX_RESPONSE_LEN), PAD, dtype=torch.long)
    mask = torch.zeros(len(answers), MAX_RESPONSE_LEN)
    for i, answer in enumerate(answers):
        ids = [*encode(answer), EOS]
        responses[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1.0
    return responses, mask


def response_mask(responses: torch.Tensor) -> torch.Tensor:
    """[B, T] float mask: 1 up to and including the first EOS (all T tokens when there is none)."""
    import torch

    is_eos = (responses == EOS).long()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos  # how many EOS strictly before each position
    return (eos_before == 0).float()


def rewards(responses: torch.Tensor, answers: list[str]) -> torch.Tensor:
    """[B] float: 1.0 when the response is exactly the answer followed by EOS, else 0.0."""
    import torch

    return torch.tensor(
        [float(EOS in ids and decode(ids) == a) for ids, a in zip(responses.tolist(), answers, strict=True)]
    )
