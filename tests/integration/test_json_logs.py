"""VMS_LOG_FORMAT=json on a served run: every line `vms serve` writes (its own, the operator's, the admin API's
and the engine's, echoed) is one JSON object with time, level, source and message, and vLLM's request lines
carry their request id."""

import json

import httpx
import pytest

from integration.served import serving

pytestmark = pytest.mark.integration

ENV = {"VMS_LOG_FORMAT": "json", "VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB"}


def test_every_line_of_a_served_run_is_a_json_object(served_tiny_qwen3_dir, tmp_path) -> None:
    model = str(served_tiny_qwen3_dir)
    with serving(tmp_path, ENV, "--model", model, "--", "--enable-log-requests") as served:
        reply = httpx.post(
            served.base_url + "/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 4}, timeout=120
        )
        assert reply.status_code == 200, reply.text
        request_id = reply.json()["id"]
        restarted = served.admin("POST", "/admin/engine/restart")  # the engine's ending and start logged again
        assert restarted.status_code == 200 and restarted.json()["state"] != "ready"
        served.wait_state("ready")
    lines = served.log.read_text().splitlines()
    entries, not_json = [], []
    for text in lines:
        try:
            entry = json.loads(text)
        except ValueError:
            not_json.append(text)
            continue
        entries.append(entry) if isinstance(entry, dict) else not_json.append(text)
    assert not_json == [], f"{len(not_json)} of {len(lines)} lines are not JSON objects"
    assert all({"time", "level", "source", "message"} <= entry.keys() for entry in entries)
    sources = {entry["source"].split()[0] for entry in entries}
    assert {"vms", "operator", "engine"} <= sources, sources
    assert any(entry.get("request_id", "").startswith(request_id) for entry in entries), "no line names the request"
