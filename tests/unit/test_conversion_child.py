"""The model conversion runs in a forked child: what the child raises reaches the caller as itself, and a child that
dies says how (a crash is not reported as a guess of out-of-memory; under emulation torch's import crashed with
SIGSEGV and the message said "out of memory?")."""

import os
import signal

import pytest

from vms_supervisor import default_model
from vms_supervisor.default_model import ModelPrepareError


def _conversion_that(behaviour):
    def convert(gguf_path, target):
        behaviour()

    return convert


def _raise_disk_full():
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (lambda: os.kill(os.getpid(), signal.SIGSEGV), r"died \(killed by SIGSEGV\)"),
        (lambda: os.kill(os.getpid(), signal.SIGKILL), r"died \(killed by SIGKILL: out of memory\?\)"),
        (lambda: os._exit(3), r"died \(exit status 3\)"),
    ],
    ids=["crash", "oom-kill", "exit"],
)
def test_a_child_that_dies_is_reported_with_how_it_ended(monkeypatch, tmp_path, behaviour, expected):
    monkeypatch.setattr(default_model, "_convert", _conversion_that(behaviour))
    with pytest.raises(ModelPrepareError, match=expected):
        default_model._convert_in_child(tmp_path / "model.gguf", tmp_path)


def test_an_error_raised_in_the_child_is_raised_as_itself(monkeypatch, tmp_path):
    monkeypatch.setattr(default_model, "_convert", _conversion_that(_raise_disk_full))
    with pytest.raises(OSError, match="No space left on device") as raised:
        default_model._convert_in_child(tmp_path / "model.gguf", tmp_path)
    assert raised.value.errno == 28


def test_an_error_larger_than_the_pipe_buffer_reaches_the_caller(monkeypatch, tmp_path):
    def raise_large() -> None:
        raise ModelPrepareError("x" * 1_000_000)  # a pipe holds 64 KiB: the parent must read before it waits

    monkeypatch.setattr(default_model, "_convert", _conversion_that(raise_large))
    with pytest.raises(ModelPrepareError) as raised:
        default_model._convert_in_child(tmp_path / "model.gguf", tmp_path)
    assert len(str(raised.value)) == 1_000_000
