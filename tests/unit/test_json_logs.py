"""VMS_LOG_FORMAT=json (json_logs.py): vLLM's engine lines read into level, source and message; any other line
kept whole; a line that is a JSON object already left as it is; request ids named; Python records as objects."""

import json
import logging

from vms_supervisor.json_logs import JsonFormatter, engine_line, line


def test_a_vllm_log_line_becomes_its_level_source_and_message() -> None:
    text = "(EngineCore pid=4242) WARNING 12-05 17:10:32 [worker.py:104] vms_plugin: model loaded in 1.4 s"
    entry = json.loads(engine_line(text + "\n"))
    assert entry["level"] == "warning" and entry["source"] == "engine worker.py:104 EngineCore pid=4242"
    assert entry["message"] == "vms_plugin: model loaded in 1.4 s" and entry["time"].endswith("+00:00")
    assert "request_id" not in entry
    plain = json.loads(engine_line("INFO 12-05 17:10:32 [loggers.py:12] Received request cmpl-9f8e7d-0: prompt"))
    assert plain["source"] == "engine loggers.py:12" and plain["request_id"] == "cmpl-9f8e7d-0"


def test_other_lines_are_kept_whole_and_json_lines_as_they_are() -> None:
    progress = "Loading weights:  35%|███▍      | 94/272 [00:00<00:00, 782.20it/s]"
    entry = json.loads(engine_line(progress))
    assert entry == {**entry, "level": "info", "source": "engine", "message": progress}
    already = '{"time": "t", "level": "info", "message": "m"}'
    assert engine_line(already) == already
    assert json.loads(engine_line("{not json"))["message"] == "{not json"
    assert json.loads(engine_line('["a list"]'))["message"] == '["a list"]'  # an object per line, not any JSON


def test_python_records_and_the_commands_lines_are_objects() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("vms.operator").makeRecord(
            "vms.operator",
            logging.ERROR,
            __file__,
            1,
            "engine %s failed for chatcmpl-abc",
            ("x",),
            __import__("sys").exc_info(),
        )
    entry = json.loads(JsonFormatter("operator").format(record))
    assert entry["level"] == "error" and entry["source"] == "operator vms.operator"
    assert (
        entry["message"].startswith("engine x failed for chatcmpl-abc\nTraceback")
        and "ValueError: boom" in entry["message"]
    )
    assert entry["request_id"] == "chatcmpl-abc"
    assert json.loads(line("serving", source="vms")) == {**json.loads(line("serving")), "source": "vms"}
