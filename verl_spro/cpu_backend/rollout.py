"""An HF-``generate``-style rollout for verl's async server mode, on the CPU.

verl 0.9.1 always rolls out through a server (``RolloutReplica`` + a Ray actor serving token-in/token-out
``generate``) and syncs the actor's weights into it through an in-worker ``BaseRollout`` adapter. vLLM, SGLang and
TensorRT-LLM fill those roles on GPUs; here:

* :class:`CpuGenerateServer` (Ray actor): a ``transformers`` causal LM, temperature / top-k / top-p sampling with a
  KV cache, one request at a time, returning the per-token log-probs of the sampled tokens under the
  temperature-scaled distribution (what verl's actor computes, so ``rollout_log_probs`` match ``old_log_probs``).
  Sampling is seeded per request from (``rollout.seed``, weight version, prompt, how many times that prompt was seen
  since the last weight update): a run is reproducible whatever order verl's agent loop sends the requests in.
* :class:`CpuRolloutReplica`: starts that actor (``RolloutReplicaRegistry``, name :data:`ROLLOUT_NAME`).
* :class:`CpuServerAdapter`: the worker side; on ``update_weights`` it gathers the actor's full tensors and pushes
  them to the server (verl's ``naive`` checkpoint engine path).
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import ray
import torch
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import RolloutConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from verl_spro.cpu_backend import ROLLOUT_NAME


def server_name(replica_rank: int) -> str:
    """The Ray actor name of replica ``replica_rank``'s server (the adapter finds it by this name)."""
    return f"{ROLLOUT_NAME}_server_{replica_rank}"


def _model_field(model_config: Any, key: str) -> Any:
    getter = model_config.get if hasattr(model_config, "get") else lambda k, d=None: getattr(model_config, k, d)
    return getter(key, None)


def sample_token(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator
) -> tuple[int, float]:
    """Sample one token from ``logits`` ([V]) and return it with its log-prob under ``softmax(logits / temperature)``.

    ``temperature <= 0`` is greedy (log-prob under the untempered softmax). ``top_k <= 0`` and ``top_p >= 1`` keep
    the whole vocabulary; the returned log-prob is always under the full tempered distribution, as verl's actor
    computes it.
    """
    logits = logits.float()
    if temperature <= 0:
        token = int(torch.argmax(logits))
        return token, float(torch.log_softmax(logits, dim=-1)[token])
    log_probs = torch.log_softmax(logits / temperature, dim=-1)
    masked = log_probs.clone()
    if 0 < top_k < masked.numel():
        kth = torch.topk(masked, top_k).values[-1]
        masked[masked < kth] = float("-inf")
    if top_p < 1.0:
        sorted_lp, order = torch.sort(masked, descending=True)
        cumulative = torch.cumsum(torch.softmax(sorted_lp, dim=-1), dim=-1)
        drop = cumulative - torch.softmax(sorted_lp, dim=-1) >= top_p  # keep the smallest set reaching top_p
        masked[order[drop]] = float("-inf")
    token = int(torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=generator))
    return token, float(log_probs[token])


class CpuGenerateServer:
    """A Ray actor serving verl's token-in/token-out ``generate`` with a ``transformers`` model on the CPU."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int) -> None:
        from transformers import AutoModelForCausalLM

        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        path = _model_field(model_config, "local_path") or _model_field(model_config, "path")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
        self.model.eval()
        self.eos_ids = self._eos_ids(path)
        self.replica_rank = replica_rank
        self.weight_version = 0
        self.global_steps: int | None = None
        self._seen: dict[tuple[int, ...], int] = {}

    def _eos_ids(self, path: str) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.config, getattr(self.model, "generation_config", None)):
            value = getattr(source, "eos_token_id", None)
            ids.update([value] if isinstance(value, int) else (value or []))
        try:
            from transformers import AutoTokenizer

            tokenizer_eos = AutoTokenizer.from_pretrained(path).eos_token_id
            if tokenizer_eos is not None:
                ids.add(int(tokenizer_eos))
        except (OSError, ValueError):
            pass  # a model folder without a tokenizer: the model's own EOS ids are all there is
        return ids

    def _request_seed(self, prompt_ids: list[int]) -> int:
        key = tuple(prompt_ids)
        occurrence = self._seen.get(key, 0)
        self._seen[key] = occurrence + 1
        text = f"{self.config.seed}:{self.weight_version}:{occurrence}:{','.join(map(str, key))}"
        return zlib.crc32(text.encode())

    async def generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **kwargs: Any
    ) -> TokenOutput:
        """Sample a response to ``prompt_ids`` (token ids) with ``sampling_params`` (verl's agent-loop keys)."""
        prompt_ids = [int(t) for t in prompt_ids]
        limit = (
            sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens") or self.config.response_length
        )
        max_tokens = max(1, min(int(limit), self.config.response_length))
        temperature = float(sampling_params.get("temperature", 1.0))
        top_k = int(sampling_params.get("top_k", -1) or -1)
        top_p = float(sampling_params.get("top_p", 1.0) or 1.0)
        generator = torch.Generator().manual_seed(self._request_seed(prompt_ids))
        tokens: list[int] = []
        log_probs: list[float] = []
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
            for _ in range(max_tokens):
                token, log_prob = sample_token(out.logits[0, -1], temperature, top_k, top_p, generator)
                tokens.append(token)
                log_probs.append(log_prob)
                if token in self.eos_ids:
                    break
                out = self.model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
        return TokenOutput(
            token_ids=tokens,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    async def load_weights(self, weights: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Load the actor's full weights (HF names); returns the new weight version."""
        result = self.model.load_state_dict(weights, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{ROLLOUT_NAME} rollout: weights not in the model: {result.unexpected_keys[:5]}")
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        missing = set(result.missing_keys) - tied
        if missing:
            raise ValueError(f"{ROLLOUT_NAME} rollout: the actor sent no value for {sorted(missing)[:5]}")
        self.weight_version += 1
        self.global_steps = global_steps
        self._seen.clear()
        return self.weight_version

    # The control methods verl's replica and checkpoint manager call. Weights and the KV cache (built per request)
    # live in host memory, so there is nothing to free or restore, and a request is never left half-done.
    async def wake_up(self) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False, **kwargs: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps


class CpuRolloutReplica(RolloutReplica):
    """One :class:`CpuGenerateServer` per replica (tensor parallel size 1)."""

    async def launch_servers(self) -> None:
        if self.world_size != 1:
            raise ValueError(
                f"{ROLLOUT_NAME} rollout: tensor/data/pipeline parallel sizes must be 1 (world size {self.world_size})"
            )
        server = (
            ray.remote(CpuGenerateServer)
            .options(name=server_name(self.replica_rank), max_concurrency=self.max_concurrency, num_cpus=0)
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.set_global_steps.remote(None)  # waits for __init__ (model load) to finish
        self.servers = [server]
        self._server_handle = server
        self._server_address = server_name(self.replica_rank)


async def _iterate(weights: Iterable[Any] | AsyncIterator[Any]) -> AsyncIterator[Any]:
    if hasattr(weights, "__aiter__"):
        async for item in weights:
            yield item
    else:
        for item in weights:
            yield item
            await asyncio.sleep(0)


class CpuServerAdapter(BaseRollout):
    """The in-worker side of the rollout: pushes the actor's weights to this replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank = rank if replica_rank == -1 else replica_rank  # world size 1 per replica
        self._server: Any = None

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights: Any, wire_format: str = "named_tensors", **kwargs: Any) -> None:
        """Gather ``(name, tensor)`` pairs (DTensors made full) and load them into the server."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"{ROLLOUT_NAME} rollout: weight wire format {wire_format!r}")
        state: dict[str, torch.Tensor] = {}
        async for name, tensor in _iterate(weights):
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            state[name] = full.detach().to("cpu", copy=True)
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        await self._server.load_weights.remote(state, kwargs.get("global_steps"))
