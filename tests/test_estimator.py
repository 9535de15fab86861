"""The vectorised estimator against the float64 loop reference, and every SPEC invariant as a property test."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spro_reference import spro_reference

from verl_spro.estimator import SproInputError, compute_spro_advantage, group_ids


def make_batch(
    group_sizes: list[int],
    length: int,
    seed: int,
    padding_rows: int = 0,
    empty_rows: int = 0,
    holes: bool = False,
) -> dict:
    """A random batch: right-padded responses of random lengths, groups of the given sizes.

    ``padding_rows`` are verl V1 padding rows (all-zero mask, each with its own uid); ``empty_rows`` are
    zero-length responses inside real groups; ``holes`` punches masked-out spans (multi-turn tool output).
    """
    gen = torch.Generator().manual_seed(seed)
    uids = [f"g{g}" for g, size in enumerate(group_sizes) for _ in range(size)]
    batch = len(uids)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).float()
    if holes and length > 3:
        mask[:, 1:3] *= (torch.rand(batch, 1, generator=gen) > 0.5).float()
    if empty_rows:
        mask[torch.randperm(batch, generator=gen)[:empty_rows]] = 0.0
    rewards = torch.zeros(batch, length)
    rewards[torch.arange(batch), (lengths - 1)] = torch.randint(0, 2, (batch,), generator=gen).float()
    old = -torch.rand(batch, length, generator=gen) * 3
    ref = -torch.rand(batch, length, generator=gen) * 3
    if padding_rows:
        uids += [f"pad{k}" for k in range(padding_rows)]
        zeros = torch.zeros(padding_rows, length)
        mask, rewards = torch.cat([mask, zeros]), torch.cat([rewards, zeros])
        old, ref = torch.cat([old, zeros]), torch.cat([ref, zeros])
    return {
        "token_level_rewards": rewards,
        "response_mask": mask,
        "old_log_probs": old,
        "ref_log_probs": ref,
        "index": np.array(uids, dtype=object),
    }


def assert_matches_reference(inputs: dict, rtol: float = 1e-5, atol: float = 1e-5, **kwargs) -> None:
    out = compute_spro_advantage(**inputs, **kwargs, keep_msa=True)
    adv, outcome, msa = spro_reference(**{**inputs, "index": list(inputs["index"])}, **kwargs)
    assert out.advantages.dtype == torch.float32
    assert torch.isfinite(out.advantages).all()
    torch.testing.assert_close(out.outcome.double(), outcome, rtol=rtol, atol=atol)
    torch.testing.assert_close(out.msa.double(), msa, rtol=rtol, atol=atol)
    torch.testing.assert_close(out.advantages.double(), adv, rtol=rtol, atol=atol)
    assert out.returns is out.advantages
    # the scalars the metrics use, against the full msa
    torch.testing.assert_close(out.msa_abs_sum.double(), msa.abs().sum(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.msa_abs_max.double(), msa.abs().max(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 17, 256, 4096])
@pytest.mark.parametrize("beta", [0.0, 0.05, 1.0])
def test_matches_loop_reference_across_lengths(length: int, beta: float) -> None:
    inputs = make_batch([4, 1, 3, 8], length, seed=length, padding_rows=2, empty_rows=1)
    assert_matches_reference(inputs, beta=beta)


@pytest.mark.parametrize("norm_adv_by_std_in_grpo", [True, False])
@pytest.mark.parametrize("msa_norm_by_std", [True, False])
@pytest.mark.parametrize("holes", [True, False])
def test_matches_loop_reference_across_flags(norm_adv_by_std_in_grpo: bool, msa_norm_by_std: bool, holes: bool) -> None:
    inputs = make_batch([5, 2, 1, 6, 3], 64, seed=7, padding_rows=3, empty_rows=2, holes=holes)
    assert_matches_reference(
        inputs, beta=0.2, norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo, msa_norm_by_std=msa_norm_by_std
    )


@settings(max_examples=40, deadline=None)
@given(
    group_sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    length=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    padding_rows=st.integers(0, 2),
    beta=st.floats(0.0, 2.0),
    msa_norm_by_std=st.booleans(),
)
def test_matches_loop_reference_random(group_sizes, length, seed, padding_rows, beta, msa_norm_by_std) -> None:
    inputs = make_batch(group_sizes, length, seed, padding_rows=padding_rows, holes=True)
    assert_matches_reference(inputs, beta=beta, msa_norm_by_std=msa_norm_by_std, rtol=1e-4, atol=1e-4)


batches = st.builds(
    make_batch,
    group_sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    length=st.integers(1, 32),
    seed=st.integers(0, 2**31 - 1),
    padding_rows=st.integers(0, 2),
    holes=st.booleans(),
)


def group_position_sums(values: torch.Tensor, mask: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    """``[n_groups, T]``: per group and position, ``sum_i m[i,t] * values[i,t]`` (loop, for the invariants)."""
    labels = sorted(set(index))
    return torch.stack([(values * mask)[torch.tensor(index == label)].sum(dim=0) for label in labels])


@settings(max_examples=60, deadline=None)
@given(inputs=batches, beta=st.floats(0.0, 1.0), msa_norm_by_std=st.booleans())
def test_msa_sums_to_zero_per_group_and_position(inputs, beta, msa_norm_by_std) -> None:
    out = compute_spro_advantage(**inputs, beta=beta, msa_norm_by_std=msa_norm_by_std, keep_msa=True)
    sums = group_position_sums(out.msa, inputs["response_mask"], inputs["index"])
    torch.testing.assert_close(sums, torch.zeros_like(sums), atol=1e-4, rtol=0)


@settings(max_examples=60, deadline=None)
@given(inputs=batches, beta=st.floats(0.0, 1.0))
def test_single_active_member_gives_zero_msa(inputs, beta) -> None:
    out = compute_spro_advantage(**inputs, beta=beta, keep_msa=True)
    mask, index = inputs["response_mask"], inputs["index"]
    active_per_group = group_position_sums(torch.ones_like(mask), mask, index)
    labels = sorted(set(index))
    lone = torch.stack([active_per_group[labels.index(u)] for u in index]) == 1
    assert (out.msa[lone.bool() & mask.bool()] == 0).all()
    assert (out.msa[~mask.bool()] == 0).all()


@settings(max_examples=60, deadline=None)
@given(inputs=batches, beta=st.floats(0.01, 1.0), seed=st.integers(0, 1000))
def test_per_group_position_constant_on_cpr_changes_nothing(inputs, beta, seed) -> None:
    """Add c[g, t] to every active CPR of group g at position t (by editing the log-ratios) and compare."""
    mask, index = inputs["response_mask"], inputs["index"]
    labels = sorted(set(index))
    shift = torch.randn(len(labels), mask.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    old = inputs["old_log_probs"].double().clone()
    for i, label in enumerate(index):
        previous = 0.0  # the shift already carried by row i's running sum
        for t in range(mask.shape[1]):
            if mask[i, t]:
                c = float(shift[labels.index(label), t])
                old[i, t] += (c - previous) / beta
                previous = c
    shifted = {**inputs, "old_log_probs": old}
    base = compute_spro_advantage(**inputs, beta=beta, keep_msa=True)
    moved = compute_spro_advantage(**shifted, beta=beta, keep_msa=True)
    torch.testing.assert_close(moved.msa, base.msa, atol=2e-4, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(inputs=batches, beta=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_permuting_rows_permutes_output(inputs, beta, seed) -> None:
    batch = inputs["response_mask"].shape[0]
    perm = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    permuted = {k: (v[perm.numpy()] if isinstance(v, np.ndarray) else v[perm]) for k, v in inputs.items()}
    base = compute_spro_advantage(**inputs, beta=beta)
    moved = compute_spro_advantage(**permuted, beta=beta)
    torch.testing.assert_close(moved.advantages, base.advantages[perm], atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(inputs=batches, beta=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_groups_do_not_influence_one_another(inputs, beta, seed) -> None:
    """Re-drawing every input of one group leaves every other row's output bit-identical."""
    index = inputs["index"]
    victim = torch.tensor(index == index[0])
    gen = torch.Generator().manual_seed(seed)
    changed = dict(inputs)
    for key in ("token_level_rewards", "old_log_probs", "ref_log_probs"):
        changed[key] = inputs[key].clone()
        changed[key][victim] = torch.randn(int(victim.sum()), inputs[key].shape[1], generator=gen)
    base = compute_spro_advantage(**inputs, beta=beta)
    other = compute_spro_advantage(**changed, beta=beta)
    assert torch.equal(other.advantages[~victim], base.advantages[~victim])


@settings(max_examples=40, deadline=None)
@given(inputs=batches, beta=st.floats(0.001, 1.0), factor=st.floats(0.0, 10.0))
def test_msa_is_linear_in_beta(inputs, beta, factor) -> None:
    base = compute_spro_advantage(**inputs, beta=beta, keep_msa=True)
    scaled = compute_spro_advantage(**inputs, beta=beta * factor, keep_msa=True)
    torch.testing.assert_close(scaled.msa, base.msa * factor, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scaled.outcome, base.outcome)


@settings(max_examples=40, deadline=None)
@given(inputs=batches, beta=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_all_padding_rows_are_zero_and_inert(inputs, beta, seed) -> None:
    """All-zero-mask rows give exact zeros, whatever their uid and inputs (NaN included), and never touch the process
    term; one with a uid of its own changes nothing, one inside a real group counts in that group's outcome
    statistics only (as verl's grpo counts it: SPEC)."""
    gen = torch.Generator().manual_seed(seed)
    length = inputs["response_mask"].shape[1]
    index = inputs["index"]
    extra_uids = np.array([index[0], "pad-own-uid"], dtype=object)  # one joins a real group, one is alone
    junk = torch.randn(2, length, generator=gen)
    junk[0, 0] = float("nan")
    padded = {
        "token_level_rewards": torch.cat([inputs["token_level_rewards"], torch.randn(2, length, generator=gen)]),
        "response_mask": torch.cat([inputs["response_mask"], torch.zeros(2, length)]),
        "old_log_probs": torch.cat([inputs["old_log_probs"], junk]),
        "ref_log_probs": torch.cat([inputs["ref_log_probs"], torch.randn(2, length, generator=gen)]),
        "index": np.concatenate([index, extra_uids]),
    }
    base = compute_spro_advantage(**inputs, beta=beta, keep_msa=True)
    out = compute_spro_advantage(**padded, beta=beta, keep_msa=True)
    assert torch.equal(out.advantages[-2:], torch.zeros(2, length))
    assert torch.equal(out.msa[:-2], base.msa)
    other_groups = torch.tensor([label != index[0] for label in index])
    assert torch.equal(out.advantages[:-2][other_groups], base.advantages[other_groups])
    reference = spro_reference(**{**padded, "index": list(padded["index"])}, beta=beta)
    torch.testing.assert_close(out.advantages.double(), reference[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_fp32(dtype: torch.dtype) -> None:
    inputs = make_batch([8, 8, 4], 512, seed=3)
    half = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    out = compute_spro_advantage(**half, beta=0.05)
    assert out.advantages.dtype == torch.float32
    # The reference sees exactly the rounded half inputs, in float64: only fp32 compute error may remain.
    adv, _, _ = spro_reference(**{**half, "index": list(half["index"])}, beta=0.05)
    torch.testing.assert_close(out.advantages.double(), adv, rtol=1e-5, atol=1e-5)


def test_long_responses_stay_within_1e4_of_float64() -> None:
    length = 32768
    inputs = make_batch([4, 3, 1], length, seed=11)
    inputs["response_mask"][0] = 1.0  # at least one full-length response
    half = {k: (v.bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    out = compute_spro_advantage(**half, beta=0.05)
    adv, _, _ = spro_reference(**{**half, "index": list(half["index"])}, beta=0.05)
    assert torch.isfinite(out.advantages).all()
    scale = adv.abs().max()
    err = (out.advantages.double() - adv).abs().max()
    assert err <= 1e-4 * scale, f"max error {err:.3g} vs scale {scale:.3g}"


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["token_level_rewards", "old_log_probs", "ref_log_probs"])
def test_shape_mismatch_names_the_tensor(key: str) -> None:
    inputs = make_batch([2, 2], 8, seed=0)
    inputs[key] = inputs[key][:, :5]
    name = "ref_log_prob" if key == "ref_log_probs" else key
    with pytest.raises(SproInputError, match=rf"{name} has shape \(4, 5\) but response_mask has shape \(4, 8\)"):
        compute_spro_advantage(**inputs)


def test_missing_or_short_index_is_an_error() -> None:
    inputs = make_batch([2, 2], 8, seed=0)
    with pytest.raises(SproInputError, match="uid"):
        compute_spro_advantage(**{**inputs, "index": None})
    with pytest.raises(SproInputError, match=r"index \(uid\) has shape \(3,\), expected \(4,\)"):
        compute_spro_advantage(**{**inputs, "index": inputs["index"][:3]})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("key", ["old_log_probs", "ref_log_probs"])
def test_non_finite_log_probs_on_active_positions_name_the_rows(bad: float, key: str) -> None:
    inputs = make_batch([3, 3], 16, seed=1)
    inputs["response_mask"][[1, 4]] = 1.0
    inputs[key][1, 5] = bad
    inputs[key][4, 2] = bad
    expected = r"row 1 \(1 positions, first at t=5\), row 4 \(1 positions, first at t=2\)"
    with pytest.raises(SproInputError, match=expected):
        compute_spro_advantage(**inputs)


def test_non_finite_log_probs_on_padding_are_ignored() -> None:
    inputs = make_batch([3, 3], 16, seed=1)
    inputs["response_mask"][2, 8:] = 0.0
    inputs["old_log_probs"][2, 9] = float("nan")
    inputs["ref_log_probs"][2, 12] = float("inf")
    assert torch.isfinite(compute_spro_advantage(**inputs).advantages).all()


@pytest.mark.parametrize("msa_norm_by_std", [False, True])
def test_a_beta_that_overflows_float32_is_an_error_not_inf(msa_norm_by_std: bool) -> None:
    """beta = 1e300 is finite (it passes SproConfig) but beta * log-ratio is inf in float32."""
    inputs = make_batch([3, 3], 16, seed=1)
    with pytest.raises(SproInputError, match=r"overflows float32 at beta=1e\+300.*lower algorithm.spro.beta"):
        compute_spro_advantage(**inputs, beta=1e300, msa_norm_by_std=msa_norm_by_std)
    assert torch.isfinite(compute_spro_advantage(**inputs, beta=1e30).advantages).all()


def test_non_finite_reward_names_the_row() -> None:
    inputs = make_batch([3, 3], 16, seed=1)
    inputs["token_level_rewards"][3, 0] = float("nan")
    with pytest.raises(SproInputError, match=r"token_level_rewards is NaN/inf on active .*row 3 \(1 positions, first"):
        compute_spro_advantage(**inputs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rewards_on_padding_are_ignored_like_log_probs(bad: float) -> None:
    """A reward on padding (a padded row included) counts as 0 when it is not finite; finite ones count, as in
    verl's GRPO score, which sums every position."""
    inputs = make_batch([3, 3], 16, seed=1, padding_rows=1)
    inputs["response_mask"][2, 8:] = 0.0
    expected = compute_spro_advantage(**inputs).advantages
    inputs["token_level_rewards"][2, 9] = bad
    inputs["token_level_rewards"][6, 3] = bad  # the all-padding row
    out = compute_spro_advantage(**inputs).advantages
    assert torch.equal(out, expected)


@pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_mask_values_other_than_zero_one_are_an_error(bad: float, dtype: torch.dtype) -> None:
    """0.5 is not a weight and NaN is not padding: both used to pass (NaN silently poisoned the whole group)."""
    inputs = make_batch([2, 2], 8, seed=0)
    inputs["response_mask"] = inputs["response_mask"].to(dtype)
    inputs["response_mask"][1, 0] = bad
    with pytest.raises(SproInputError, match=rf"response_mask must hold exactly 0 .* got {bad} at row 1, t=0"):
        compute_spro_advantage(**inputs)


def test_integer_and_bool_masks_are_accepted() -> None:
    inputs = make_batch([3, 2], 8, seed=0)
    expected = compute_spro_advantage(**inputs).advantages
    for dtype in (torch.bool, torch.long, torch.int32, torch.uint8):
        out = compute_spro_advantage(**{**inputs, "response_mask": inputs["response_mask"].to(dtype)})
        assert torch.equal(out.advantages, expected)
    inputs["response_mask"] = inputs["response_mask"].long()
    inputs["response_mask"][0, 0] = 2
    with pytest.raises(SproInputError, match=r"got 2\.0 at row 0, t=0"):
        compute_spro_advantage(**inputs)


@pytest.mark.parametrize(
    ("labels", "n_groups"),
    [
        ([1, 1.0, np.int64(1), np.float32(1.0), True], 1),  # Python equality: all the same dict key
        ([1, "1", 1, "1"], 2),
        ([(0, "a"), (0, "a"), (1, "a"), ("x",)], 3),
        (np.array([3, 3, 7], dtype=np.int64), 2),
        (np.array(["u", "v", "u"]), 2),
        (torch.tensor([5, 5, 2]), 2),
    ],
)
def test_groups_follow_python_equality_like_verls_grpo(labels, n_groups: int) -> None:
    ids = group_ids(labels, len(labels), torch.device("cpu"))
    first_seen: dict = {}
    as_list = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    assert ids.tolist() == [first_seen.setdefault(label, len(first_seen)) for label in as_list]
    assert int(ids.max()) + 1 == n_groups


def test_unhashable_uid_names_the_row() -> None:
    with pytest.raises(SproInputError, match=r"index \(uid\) of row 1 is \[1, 2\] \(list\), which is not hashable"):
        group_ids([(1, 2), [1, 2]], 2, torch.device("cpu"))


def test_inputs_are_not_modified_and_outputs_do_not_alias_across_calls() -> None:
    inputs = make_batch([3, 3], 16, seed=2)
    before = {k: v.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    first = compute_spro_advantage(**inputs)
    kept = first.advantages.clone()
    compute_spro_advantage(**make_batch([3, 3], 16, seed=3))
    assert torch.equal(first.advantages, kept)
    for key, value in before.items():
        assert torch.equal(inputs[key], value)


@pytest.mark.parametrize("shape", [(0, 16), (0, 0), (4, 0)])
def test_empty_batch_gives_empty_result(shape: tuple[int, int]) -> None:
    empty = torch.zeros(shape)
    out = compute_spro_advantage(empty, empty, empty, empty, index=np.array([f"u{i}" for i in range(shape[0])]))
    assert out.advantages.shape == shape
    assert out.outcome.shape == (shape[0],)


def test_no_batch_sized_buffer_outlives_the_call() -> None:
    """Nothing of size [B, T] is kept between calls (the estimator used to keep a per-thread mask buffer, never
    freed, and on CUDA reused without a stream sync)."""
    batch, length = 37, 1031  # a numel no other live tensor has
    inputs = make_batch([37], length, seed=4)
    out = compute_spro_advantage(**inputs)
    del out, inputs
    gc.collect()
    big = [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and o.numel() >= batch * length]
    assert big == [], [tuple(t.shape) for t in big]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_result_on_the_gpu() -> None:
    inputs = make_batch([8, 8, 3, 1], 4096, seed=5, padding_rows=2, holes=True)
    on_gpu = {k: (v.cuda().bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    on_cpu = {k: (v.bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    gpu = compute_spro_advantage(**on_gpu, beta=0.05, msa_norm_by_std=True)
    cpu = compute_spro_advantage(**on_cpu, beta=0.05, msa_norm_by_std=True)
    assert gpu.advantages.is_cuda and gpu.advantages.dtype == torch.float32
    torch.testing.assert_close(gpu.advantages.cpu(), cpu.advantages, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shuffle", [False, True])
def test_cuda_fast_path_matches_the_float64_loop_at_32k(dtype: torch.dtype, shuffle: bool) -> None:
    """verl's layouts on the GPU: equal consecutive groups and rows shuffled."""
    inputs = make_batch([4, 4, 4], 32768, seed=6, padding_rows=2)
    inputs["response_mask"][0] = 1.0
    if shuffle:
        perm = torch.randperm(14, generator=torch.Generator().manual_seed(0))
        inputs = {k: (v[perm.numpy()] if isinstance(v, np.ndarray) else v[perm]) for k, v in inputs.items()}
    half = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    out = compute_spro_advantage(**{k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in half.items()})
    adv, _, _ = spro_reference(**{**half, "index": list(half["index"])}, beta=0.05)
    assert out.advantages.is_cuda and torch.isfinite(out.advantages).all()
    err = (out.advantages.cpu().double() - adv).abs().max()
    assert err <= 1e-4 * adv.abs().max(), f"max error {err:.3g} vs scale {adv.abs().max():.3g}"
