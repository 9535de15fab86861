"""Rule rewards for math and code, in verl's custom-reward-function form.

verl's ``default_compute_score`` (``verl/utils/reward_score/__init__.py``) dispatches on ``data_source`` and
raises ``NotImplementedError`` for a source it does not know. :func:`compute_score` delegates to it for every
source it knows (so PRIME's Eurus-2-RL-Data, GSM8K and MATH score exactly as in stock verl) and otherwise picks
a rule from ``extra_info["ability"]`` (which ``verl-spro prepare-data`` writes): PRIME's math grader
(``\\boxed{}`` answer) or PRIME's code grader (JSON test cases ``{"inputs": [...], "outputs": [...]}``).

Select it in a verl config (the configs under ``configs/`` do)::

    reward:
      custom_reward_function:
        path: pkg://verl_spro.rewards
        name: compute_score
"""

from __future__ import annotations

import json
from typing import Any

#: ``data_source`` values verl 0.9.1's ``default_compute_score`` dispatches (plus any ``aime*``); a test checks
#: this list against verl, so a verl upgrade that drops one fails loudly.
VERL_MATH_DATA_SOURCES: frozenset[str] = frozenset(
    {
        "openai/gsm8k",
        "lighteval/MATH",
        "DigitalLearningGmbH/MATH-lighteval",
        "HuggingFaceH4/MATH-500",
        "math_dapo",
        "math",
        "math_dapo_reasoning",
        "numina_aops_forum",
        "numina_synthetic_math",
        "numina_amc_aime",
        "numina_synthetic_amc",
        "numina_cn_k12",
        "numina_olympiads",
        "hiyouga/geometry3k",
    }
)
VERL_CODE_DATA_SOURCES: frozenset[str] = frozenset({"codecontests", "apps", "codeforces", "taco"})
VERL_OTHER_DATA_SOURCES: frozenset[str] = frozenset(
    {
        "searchR1_nq",
        "searchR1_triviaqa",
        "searchR1_popqa",
        "searchR1_hotpotqa",
        "searchR1_2wikimultihopqa",
        "searchR1_musique",
        "searchR1_bamboogle",
    }
)

#: The data_source values ``prepare-data`` writes for GSM8K and MATH rows (both known to verl).
GSM8K_DATA_SOURCE = "openai/gsm8k"
MATH_DATA_SOURCE = "DigitalLearningGmbH/MATH-lighteval"


def verl_knows(data_source: str) -> bool:
    """True if verl's ``default_compute_score`` has a rule for ``data_source``."""
    return (
        data_source in VERL_MATH_DATA_SOURCES
        or data_source in VERL_CODE_DATA_SOURCES
        or data_source in VERL_OTHER_DATA_SOURCES
        or data_source.startswith("aime")
    )


def infer_ability(ground_truth: Any) -> str:
    """``"code"`` when the ground truth is a JSON object of test cases, else ``"math"``."""
    if isinstance(ground_truth, dict):
        return "code" if "inputs" in ground_truth else "math"
    text = str(ground_truth).lstrip()
    if text.startswith("{"):
        try:
            return "code" if "inputs" in json.loads(text) else "math"
        except (ValueError, TypeError):
            return "math"
    return "math"


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> float | dict[str, Any]:
    """Score one response: 1.0 for a correct final answer (or passing code), else 0.0 (code: fraction passed).

    Args:
        data_source: the row's ``data_source`` (verl's ``data.reward_fn_key``).
        solution_str: the decoded response.
        ground_truth: ``reward_model.ground_truth`` of the row.
        extra_info: the row's ``extra_info``; ``ability`` (``math``/``code``) picks the rule for a source
            verl does not know, otherwise it is inferred from the ground truth.
        **kwargs: passed on to verl (``sandbox_fusion_url``, ``concurrent_semaphore``, ...).
    """
    from verl.utils.reward_score import default_compute_score

    if verl_knows(data_source):
        return default_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)

    ability = str((extra_info or {}).get("ability") or infer_ability(ground_truth)).lower()
    if ability == "code":
        from verl.utils.reward_score import prime_code

        result = prime_code.compute_score(solution_str, ground_truth, continuous=True)
    else:
        from verl.utils.reward_score import prime_math

        result = prime_math.compute_score(solution_str, str(ground_truth))
    # verl's graders return (score, ...) tuples; verl's own dispatcher keeps the first element.
    return float(result[0]) if isinstance(result, tuple | list) else float(result)
