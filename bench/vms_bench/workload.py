"""What every backend is asked to do, identically: prompt sizes, output sizes, concurrency levels, repeats."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

# Prose the prompts are cut from; each request starts at a different offset so no two share a prefix.
_SOURCE_TEXT = (
    "The history of computing is a story of machines that grew smaller, faster and cheaper while the problems "
    "given to them grew larger. Early computers filled rooms and were programmed by rewiring; later ones read "
    "punched cards, then magnetic tape, then disks. Each generation of hardware invited new software: compilers, "
    "operating systems, databases, networks and, at last, models that learn from data rather than follow rules "
    "written by hand. Large language models are the newest chapter, and serving them well is an engineering "
    "problem of memory bandwidth, batching and scheduling as much as of arithmetic. "
)


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int = 64
    output_tokens: int = 128
    concurrency: tuple[int, ...] = (1, 32, 64)  # 1 is the single stream; the others are batch throughput
    repeats: int = 3
    max_model_len: int = 512
    kv_cache_bytes: int = 1 << 30
    vllm_cpu_eager: bool = False  # the peer's default is torch.compile; eager only for the smoke run
    prompts: list[list[int]] = field(default_factory=list)  # filled by with_prompts()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Workload":
        return cls(**{**data, "concurrency": tuple(data["concurrency"])})

    def with_prompts(self, model_dir: Path, source: str = _SOURCE_TEXT) -> "Workload":
        """max(concurrency) prompts of exactly `prompt_tokens` tokens cut from `source`, with the model's own
        tokenizer."""
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(model_dir)(source * 4, add_special_tokens=False)["input_ids"]
        count = max(self.concurrency)
        if len(ids) < count + self.prompt_tokens:
            raise ValueError(f"prompt source too short for {count} prompts of {self.prompt_tokens} tokens")
        prompts = [ids[start : start + self.prompt_tokens] for start in range(count)]
        return Workload(**{**self.to_json(), "concurrency": self.concurrency, "prompts": prompts})


SMOKE = Workload(prompt_tokens=8, output_tokens=4, concurrency=(1, 4), repeats=1, vllm_cpu_eager=True)
