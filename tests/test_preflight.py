"""`verl-spro check`: each misconfiguration it claims to catch, one test each, and a clean config passing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl_spro import data_prep
from verl_spro.cli import main as cli_main
from verl_spro.hydra_compose import REPO_CONFIG_DIR

Table = dict[str, list[str]]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A train/val parquet in verl's schema, one with the wrong schema, and a local model directory."""
    root = tmp_path_factory.mktemp("preflight")
    rows = [data_prep.convert_row({"question": f"What is {i}+1?", "answer": f"#### {i + 1}"}) for i in range(300)]
    for i, row in enumerate(rows):
        row["extra_info"].update(split="train", index=i, source_file="gen", source_line=i + 1)
    data_prep.write_parquet(rows, str(root / "train.parquet"))
    data_prep.write_parquet(rows[:10], str(root / "val.parquet"))
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "#### 1"}]), root / "raw.parquet")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return {
        "train": str(root / "train.parquet"),
        "val": str(root / "val.parquet"),
        "raw": str(root / "raw.parquet"),
        "model": str(model),
        "root": str(root),
    }


def _clean_overrides(files: dict[str, str]) -> list[str]:
    return [
        f"data.train_files={files['train']}",
        f"data.val_files={files['val']}",
        f"actor_rollout_ref.model.path={files['model']}",
    ]


def _parse(stdout: str) -> Table:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STATUS"))
    name_at, detail_at = lines[header].index("CHECK"), lines[header].index("DETAIL")
    table: Table = {}
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        table.setdefault(line[name_at:detail_at].strip(), []).append(line[:name_at].strip())
    return table


def _check(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    *overrides: str,
    config: str | None = "spro_fsdp2_7b",
    cpu_only: bool = True,
) -> tuple[int, Table, str]:
    args = ["check"]
    if config is not None:
        args += ["--config-path", REPO_CONFIG_DIR, "--config-name", config]
    if cpu_only:
        args.append("--cpu-only")
    capsys.readouterr()
    rc = cli_main([*args, *_clean_overrides(files), *overrides])
    out = capsys.readouterr().out
    return rc, _parse(out), out


@pytest.mark.parametrize("config", ["spro_fsdp2_7b", "spro_megatron_7b", "grpo_megatron_7b"])
def test_clean_config_passes_on_cpu(capsys, files, config: str) -> None:
    rc, table, out = _check(capsys, files, config=config)
    assert rc == 0, out
    assert all(status in ("OK", "WARN") for statuses in table.values() for status in statuses)
    for name in ("estimator", "spro config", "data.train_files", "data.val_files", "model", "batch sizes"):
        assert table[name] == ["OK"], out
    assert table["verl validate_config"] == ["OK"]
    assert table["GPUs"] == ["WARN"]  # no GPU here, downgraded by --cpu-only
    if config.startswith("spro"):
        assert table["reference policy"] == ["OK"] and table["KL loss"] == ["OK"]


def test_estimator_typo(capsys, files) -> None:
    rc, table, out = _check(capsys, files, "algorithm.adv_estimator=sprp")
    assert rc == 1
    assert table["estimator"] == ["FAIL"]
    assert "did you mean 'spro'" in out


def test_kl_loss_with_spro_warns(capsys, files) -> None:
    rc, table, out = _check(capsys, files, "actor_rollout_ref.actor.use_kl_loss=true")
    assert rc == 0
    assert table["KL loss"] == ["WARN"]
    assert "use_kl_loss=false" in out


def test_loss_agg_mode_other_than_the_papers_warns(capsys, files) -> None:
    rc, table, _ = _check(capsys, files, "actor_rollout_ref.actor.loss_agg_mode=token-mean")
    assert rc == 0
    assert table["loss aggregation"] == ["WARN"]


def test_missing_rollout_name_with_verls_own_config(capsys, files) -> None:
    # verl's stock ppo_trainer leaves rollout.name at ??? (mandatory); SPRO keys need `+` there.
    rc, table, out = _check(
        capsys,
        files,
        "algorithm.adv_estimator=spro",
        "+algorithm.spro.beta=0.05",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        config=None,
    )
    assert rc == 1
    assert table["rollout"] == ["FAIL"]
    assert "actor_rollout_ref.rollout.name is not set" in out
    assert table["estimator"] == ["OK"] and table["spro config"] == ["OK"]


def test_missing_data_file(capsys, files) -> None:
    rc, table, out = _check(capsys, files, f"data.train_files={files['root']}/nope.parquet")
    assert rc == 1
    assert table["data.train_files"] == ["FAIL"]
    assert "file not found" in out


def test_data_file_with_wrong_schema(capsys, files) -> None:
    rc, table, out = _check(capsys, files, f"data.val_files={files['raw']}")
    assert rc == 1
    assert table["data.val_files"] == ["FAIL"]
    assert "no column 'prompt'" in out and "no column 'reward_model'" in out


def test_too_few_training_rows_for_one_batch(capsys, files) -> None:
    rc, table, out = _check(capsys, files, f"data.train_files={files['val']}")
    assert rc == 1
    assert table["data.train_files"] == ["FAIL"]
    assert "fewer than data.train_batch_size" in out


def test_unknown_spro_key(capsys, files) -> None:
    rc, table, out = _check(capsys, files, "+algorithm.spro.betta=0.1")
    assert rc == 1
    assert table["spro config"] == ["FAIL"]
    assert "algorithm.spro.betta" in out


def test_negative_beta(capsys, files) -> None:
    rc, table, out = _check(capsys, files, "algorithm.spro.beta=-0.1")
    assert rc == 1
    assert table["spro config"] == ["FAIL"]
    assert "beta" in out


def test_single_sample_per_prompt(capsys, files) -> None:
    rc, table, _ = _check(capsys, files, "actor_rollout_ref.rollout.n=1")
    assert rc == 1
    assert table["group size"] == ["FAIL"]


def test_indivisible_batch_size(capsys, files) -> None:
    # 33 prompts x 4 samples = 132 responses per mini-batch over 8 FSDP ranks.
    rc, table, out = _check(capsys, files, "actor_rollout_ref.actor.ppo_mini_batch_size=33")
    assert rc == 1
    assert "FAIL" in table["batch sizes"]
    assert "132 responses per mini-batch do not split over 8 data-parallel ranks" in out


def test_megatron_layout_that_does_not_divide_the_gpus(capsys, files) -> None:
    rc, table, out = _check(
        capsys, files, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=3", config="spro_megatron_7b"
    )
    assert rc == 1
    assert table["batch sizes"] == ["FAIL"]
    assert table["verl validate_config"] == ["FAIL"]  # verl's own message is reported too
    assert "model parallel size" in out


def test_missing_reference_micro_batch(capsys, files) -> None:
    rc, table, out = _check(capsys, files, "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=null")
    assert rc == 1
    assert "FAIL" in table["batch sizes"]
    assert table["verl validate_config"] == ["FAIL"]
    assert "log_prob_micro_batch_size_per_gpu" in out


def test_gpu_count_mismatch_fails_without_cpu_only(capsys, files) -> None:
    rc, table, out = _check(capsys, files, cpu_only=False)
    assert rc == 1
    assert table["GPUs"] == ["FAIL"]
    assert "config needs 8 per node" in out


def test_missing_local_model(capsys, files) -> None:
    rc, table, _ = _check(capsys, files, f"actor_rollout_ref.model.path={files['root']}/no_model")
    assert rc == 1
    assert table["model"] == ["FAIL"]


def test_hub_model_id_is_a_warning(capsys, files) -> None:
    rc, table, out = _check(capsys, files, "actor_rollout_ref.model.path=some-org/some-model-that-is-not-cached")
    assert rc == 0
    assert table["model"] == ["WARN"]
    assert "will be downloaded" in out


def test_config_that_does_not_compose(capsys, files) -> None:
    rc, table, _ = _check(capsys, files, "algorithm.no_such_key=1")
    assert rc == 1
    assert table == {"config composes": ["FAIL"]}


def test_console_script(files) -> None:
    script = shutil.which("verl-spro") or os.path.join(os.path.dirname(sys.executable), "verl-spro")
    result = subprocess.run(
        [script, "check", "--config-path", REPO_CONFIG_DIR, "--config-name", "spro_megatron_7b",
         *_clean_overrides(files), "algorithm.spro.beta=-1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "VERL_SPRO_CPU_ONLY": "1"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    table = _parse(result.stdout)
    assert table["spro config"] == ["FAIL"]
    assert table["GPUs"] == ["WARN"]  # VERL_SPRO_CPU_ONLY=1 acts as --cpu-only


@pytest.mark.parametrize("key", ["train_files", "val_files"])
@pytest.mark.parametrize(("value", "message"), [("[]", "=[] is an empty list"), ("''", " has an empty path")])
def test_empty_file_list_or_path_fails_naming_the_key(capsys, files, key: str, value: str, message: str) -> None:
    rc, table, out = _check(capsys, files, f"data.{key}={value}")
    assert rc == 1
    assert table[f"data.{key}"] == ["FAIL"]
    assert f"data.{key}{message}" in out


@pytest.mark.parametrize(
    ("override", "config"),
    [
        ("trainer.n_gpus_per_node=0", "spro_fsdp2_7b"),
        ("trainer.nnodes=-1", "spro_fsdp2_7b"),
        ("data.train_batch_size=0", "spro_fsdp2_7b"),
        ("data.train_batch_size=2.5", "spro_fsdp2_7b"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size=0", "spro_fsdp2_7b"),
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=0", "spro_fsdp2_7b"),
        ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=-4", "spro_fsdp2_7b"),
        ("actor_rollout_ref.rollout.n=0", "spro_fsdp2_7b"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size=0", "spro_megatron_7b"),
        ("actor_rollout_ref.actor.megatron.tensor_model_parallel_size=0", "spro_megatron_7b"),
        ("actor_rollout_ref.actor.megatron.context_parallel_size=0", "spro_megatron_7b"),
    ],
)
def test_zero_negative_or_fractional_size_fails_naming_the_key(capsys, files, override: str, config: str) -> None:
    key, value = override.split("=")
    rc, table, out = _check(capsys, files, override, config=config)
    assert rc == 1
    assert "FAIL" in table["sizes"], out
    assert f"{key}={value}" in out and "must be an integer >= 1" in out
    # The checks that would divide by it say they were skipped, instead of a ZeroDivisionError or verl's assert.
    assert "ZeroDivisionError" not in out and "Traceback" not in out
    for name in ("batch sizes", "verl validate_config"):
        assert table[name] == ["WARN"], out


# --- what main_ppo cannot run: refused by check (issue 20, item 7) ---------------------------------------------


def test_a_relative_config_path_is_resolved_as_main_ppo_does(capsys, files, monkeypatch) -> None:
    """main_ppo (Hydra) takes a relative --config-path from verl/trainer, not from the current directory."""
    monkeypatch.chdir(os.path.dirname(REPO_CONFIG_DIR))
    capsys.readouterr()
    rc = cli_main(["check", "--config-path", "configs", "--config-name", "spro_fsdp2_7b", "--cpu-only"])
    out = capsys.readouterr().out
    assert rc == 1 and "config composes" in _parse(out) and _parse(out)["config composes"] == ["FAIL"], out
    assert "takes a relative path from its own folder" in out and f"--config-path={REPO_CONFIG_DIR}" in out


@pytest.mark.parametrize(("cpu_only", "status", "rc"), [(False, "FAIL", 1), (True, "WARN", 0)])
def test_an_unknown_rollout_fails_unless_cpu_only(capsys, files, cpu_only: bool, status: str, rc: int) -> None:
    code, table, out = _check(capsys, files, "actor_rollout_ref.rollout.name=vlm", cpu_only=cpu_only)
    assert table["rollout engine"] == [status], out
    assert "unknown rollout name 'vlm': verl knows sglang, trtllm, vllm" in out
    if cpu_only:
        assert code == rc


@pytest.mark.parametrize(
    ("path", "name", "status", "message"),
    [
        ("{root}/reward.py", "score", "OK", "score in"),
        ("{root}/missing.py", "score", "FAIL", "no such file"),
        ("{root}/reward.py", "nope", "FAIL", "defines no such name"),
        ("pkg://verl_spro.smoke", "compute_score", "OK", "compute_score in"),
        ("pkg://verl_spro.smoke", "nope", "FAIL", "defines no such name"),
    ],
)
def test_the_custom_reward_function_file_and_name_are_checked(
    capsys, files, path: str, name: str, status: str, message: str
) -> None:
    reward = os.path.join(files["root"], "reward.py")
    with open(reward, "w") as handle:
        handle.write(
            "import math\n\ndef score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n"
        )
    path = path.format(root=files["root"])
    _, table, out = _check(
        capsys, files, f"reward.custom_reward_function.path={path}", f"reward.custom_reward_function.name={name}"
    )
    assert table["reward function"] == [status], out
    assert message in out


def test_a_beta_that_overflows_float32_fails(capsys, files) -> None:
    rc, table, out = _check(capsys, files, "algorithm.spro.beta=1e300")
    assert rc == 1 and table["spro config"] == ["FAIL"], out
    assert "algorithm.spro.beta=1e+300 is beyond float32" in out
    assert table["verl validate_config"] == ["FAIL"]  # the validation hook refuses it too, before any worker


def test_the_validation_hook_refuses_a_non_integer_rollout_n(files) -> None:
    from verl.trainer.main_ppo import need_critic, need_reference_policy, validate_config

    from verl_spro.config import SproConfigError
    from verl_spro.hydra_compose import compose_trainer_config

    config = compose_trainer_config(
        REPO_CONFIG_DIR, "spro_fsdp2_7b", [*_clean_overrides(files), "actor_rollout_ref.rollout.n=2.5"]
    )
    with pytest.raises(SproConfigError, match=r"actor_rollout_ref.rollout.n=2.5 is not an integer"):
        validate_config(
            config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
        )
