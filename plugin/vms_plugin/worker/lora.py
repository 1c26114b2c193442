"""LoRA adapters at run time: vLLM's add / remove / pin / list calls, and the slots each step's adapters occupy.

vLLM's engine asks the worker to load an adapter (`--lora-modules`, /v1/load_lora_adapter) or hands it a request
naming one it has not loaded yet; either way the adapter is read here into host memory, up to --max-cpu-loras of
them (least recently used unpinned ones make room). A step's adapters, at most --max-loras (the scheduler keeps
to that), are copied into the model's slots (layers/lora.py) when they are not there already, into slots no
request of the step uses.
"""

from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from vllm.config import LoRAConfig
from vllm.exceptions import LoRAAdapterNotFoundError
from vllm.lora.request import LoRARequest

from vms_plugin.layers.lora import LayerAdapters
from vms_plugin.models.lora_checkpoint import AdapterCheckpoint, AdapterNotFound, read_adapter


class AdapterManager:
    def __init__(self, lora_config: LoRAConfig, layers: list[LayerAdapters]) -> None:
        self.layers = layers
        self.max_rank = lora_config.max_lora_rank
        self.capacity = max(lora_config.max_cpu_loras or 0, lora_config.max_loras)
        self.loaded: OrderedDict[int, AdapterCheckpoint] = OrderedDict()  # least recently used first
        self.pinned: set[int] = set()
        self.slots: list[int | None] = [None] * lora_config.max_loras  # the adapter id each slot holds

    def add(self, request: LoRARequest) -> bool:
        """Read the request's adapter (False: it is loaded already); a message naming the problem if it cannot be."""
        adapter_id = request.lora_int_id
        if adapter_id in self.loaded:
            self.loaded.move_to_end(adapter_id)
            return False
        checkpoint = self._read(request)
        self._make_room()
        self.loaded[adapter_id] = checkpoint
        return True

    def remove(self, adapter_id: int) -> bool:
        if self.loaded.pop(adapter_id, None) is None:
            return False
        self.pinned.discard(adapter_id)
        if adapter_id in self.slots:
            slot = self.slots.index(adapter_id)
            for layer in self.layers:
                layer.clear(slot)
            self.slots[slot] = None
        return True

    def pin(self, adapter_id: int) -> bool:
        """Keep the adapter loaded until removed."""
        if adapter_id not in self.loaded:
            raise ValueError(f"LoRA adapter {adapter_id} is not loaded, so it cannot be pinned")
        self.pinned.add(adapter_id)
        return True

    def ids(self) -> set[int]:
        return set(self.loaded)

    def slots_for(self, requests: Iterable[LoRARequest]) -> dict[int, int]:
        """The slot of each adapter of a step's requests, adapters loaded and copied into slots as needed."""
        wanted = {request.lora_int_id: request for request in requests}
        if len(wanted) > len(self.slots):
            raise RuntimeError(f"a step has {len(wanted)} adapters, more than --max-loras {len(self.slots)}")
        for request in wanted.values():
            self.add(request)
        placed = {adapter_id: self.slots.index(adapter_id) for adapter_id in wanted if adapter_id in self.slots}
        for adapter_id in wanted.keys() - placed.keys():
            slot = next(index for index, holder in enumerate(self.slots) if holder not in wanted)
            checkpoint = self.loaded[adapter_id]
            for index, layer in enumerate(self.layers):
                layer.fill(slot, checkpoint.layers.get(index, {}))
            self.slots[slot], placed[adapter_id] = adapter_id, slot
        return placed

    def _read(self, request: LoRARequest) -> AdapterCheckpoint:
        path = Path(request.lora_path)
        try:
            checkpoint = read_adapter(path, self.max_rank)
        except AdapterNotFound as error:
            # vLLM's own error: its server answers it with 404 and this message.
            raise LoRAAdapterNotFoundError(request.lora_name, request.lora_path) from error
        extra_layers = sorted(set(checkpoint.layers) - set(range(len(self.layers))))
        if extra_layers:
            raise ValueError(
                f"{path}: the adapter has layers {extra_layers[:3]} but the model has {len(self.layers)} layers"
            )
        for index, projections in checkpoint.layers.items():
            self.layers[index].check(projections)
        return checkpoint

    def _make_room(self) -> None:
        while len(self.loaded) >= self.capacity:
            evictable = [adapter_id for adapter_id in self.loaded if adapter_id not in self.pinned]
            if not evictable:
                raise RuntimeError(
                    f"all {self.capacity} places for LoRA adapters hold pinned adapters; remove one first "
                    "or raise --max-cpu-loras"
                )
            self.remove(evictable[0])
