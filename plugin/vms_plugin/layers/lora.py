"""LoRA (low-rank adaptation) in a decoder layer's linear layers: S slots of adapters, filled at run time.

An adapter adds scale * B @ A @ x to a projection's output, A [r, in] and B [out, r] per targeted projection
(PEFT's q/k/v/o and gate/up/down), scale = alpha / r. The model stacks q/k/v into qkv and gate/up into gate_up,
so a slot holds for each of the four linear layers A [parts * r, in] and B [out, parts * r]: each part's A in its
own r rows, its B in its own output rows and r columns (block-diagonal: a few more multiply-adds, one product per
layer). A smaller rank or an untargeted projection is zeros; B carries the scale. Under tensor parallelism a rank
keeps the share its base weight has: B's rows of its outputs for the column-parallel qkv and gate_up, A's columns
of its inputs for the row-parallel o and down, whose partial products the layer's all-reduce sums with the base's.

The arrays are made once and filled in place, so that the CPU kernels can name them by address (ops/cpu.py).
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from vms_plugin.layers.parallel import Part

# The model's linear layers and the checkpoint's projections stacked in each, in stacking order.
TARGETS: dict[str, tuple[str, ...]] = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate_up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}
PROJECTIONS = frozenset(module for modules in TARGETS.values() for module in modules)


class ProjectionAdapter(NamedTuple):
    """One projection's adapter as the checkpoint holds it."""

    a: np.ndarray  # [r, in] float32
    b: np.ndarray  # [out, r] float32
    scale: float  # alpha / r (rsLoRA: alpha / sqrt(r))


class AdapterPair(NamedTuple):
    a: np.ndarray  # [S, parts * r, in] float32
    b: np.ndarray  # [S, out, parts * r] float32, scaled


@dataclass(frozen=True)
class TargetShape:
    """A linear layer as this rank holds it: its inputs, each stacked part's outputs, and this rank's share of each
    part's checkpoint weight (layers/parallel.py; None: whole)."""

    in_features: int
    part_outputs: tuple[int, ...]
    parts: tuple[Part | None, ...]


class LayerAdapters:
    """A decoder layer's S slots of adapters of rank up to r."""

    def __init__(self, shapes: Mapping[str, TargetShape], slots: int, rank: int) -> None:
        self.shapes, self.slots, self.rank = dict(shapes), slots, rank
        self.pairs = {
            name: AdapterPair(
                np.zeros((slots, len(shape.part_outputs) * rank, shape.in_features), np.float32),
                np.zeros((slots, sum(shape.part_outputs), len(shape.part_outputs) * rank), np.float32),
            )
            for name, shape in self.shapes.items()
        }
        self.version = 0  # counts fills: an implementation that copies the arrays to a device copies again

    def fill(self, slot: int, projections: Mapping[str, ProjectionAdapter]) -> None:
        """Slot `slot` holds these projections' adapters (by PEFT's module name); every other projection none."""
        shares = list(self._shares(projections))  # all checked before the slot changes
        for pair in self.pairs.values():
            pair.a[slot] = 0.0
            pair.b[slot] = 0.0
        for name, index, first_row, a, b in shares:
            pair, columns = self.pairs[name], slice(index * self.rank, index * self.rank + a.shape[0])
            pair.a[slot, columns] = a
            pair.b[slot, first_row : first_row + b.shape[0], columns] = b
        self.version += 1

    def clear(self, slot: int) -> None:
        self.fill(slot, {})

    def check(self, projections: Mapping[str, ProjectionAdapter]) -> None:
        """A ValueError naming the first projection whose adapter does not fit this layer."""
        for _ in self._shares(projections):
            pass

    def _shares(self, projections: Mapping[str, ProjectionAdapter]) -> Iterator[tuple[str, int, int, Any, Any]]:
        """(linear layer, part index, the part's first output row, A, scaled B) of each projection's adapter, this
        rank's share of it."""
        for name, shape in self.shapes.items():
            first_row = 0
            stacked = zip(TARGETS[name], shape.part_outputs, shape.parts, strict=True)
            for index, (module, outputs, part) in enumerate(stacked):
                if module in projections:
                    a, b = self._rank_share(module, projections[module], part, shape.in_features, outputs)
                    yield name, index, first_row, a, b
                first_row += outputs

    def _rank_share(
        self, module: str, adapter: ProjectionAdapter, part: Part | None, in_features: int, outputs: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(A, scaled B) of this rank, checked against the layer's sizes."""
        a, b = adapter.a, adapter.b * np.float32(adapter.scale)
        if part is not None and part.axis == 0:
            b = part.of(b)
        elif part is not None:
            a = part.of(a)
        if a.shape[0] > self.rank:
            raise ValueError(f"{module}: LoRA rank {a.shape[0]} is greater than max_lora_rank {self.rank}")
        if a.shape[1] != in_features or b.shape[0] != outputs:
            raise ValueError(
                f"{module}: lora_A {tuple(adapter.a.shape)} and lora_B {tuple(adapter.b.shape)} do not fit the "
                f"model's projection of {in_features} inputs and {outputs} outputs (an adapter of another model?)"
            )
        return a, b
