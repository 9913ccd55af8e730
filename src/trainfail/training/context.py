"""What every stage needs to know besides an experiment's own settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainfail.core import phases


# The config keys that hold seeds (every key whose schema is definitions/seeds: tests/test_config.py
# keeps the two in step). `seed_offset` shifts each of them: fresh seeds in one setting.
SEED_KEYS = ("seeds", "tuning_seeds", "claim_seeds")


def shifted(block, offset: int):
    """`block` (an experiment's config) with `offset` added to every seed list, at any depth
    (e.g. tuning.seeds). The claim and tuning seeds keep their counts and stay disjoint."""
    if not offset:
        return block
    if isinstance(block, dict):
        return {k: ([int(s) + offset for s in v] if k in SEED_KEYS and isinstance(v, list) else shifted(v, offset))
                for k, v in block.items()}
    if isinstance(block, list):
        return [shifted(v, offset) for v in block]
    return block


@dataclass
class Context:
    """The validated config, seen from one experiment's point of view; its seeds (and every
    experiment's) shifted by `seed_offset`."""

    config: dict
    results: Path = Path("results")

    @property
    def seed_offset(self) -> int:
        return int(self.config.get("seed_offset", 0))

    @property
    def seeds(self) -> list[int]:
        return [int(s) + self.seed_offset for s in self.config.get("seeds", [0])]

    @property
    def device(self) -> str:
        return self.config.get("device", "auto")

    @property
    def data_dir(self) -> Path:
        return Path(self.config.get("data_dir", "data"))

    @property
    def preset(self) -> str:
        return self.config.get("preset", "custom")

    def experiment(self, experiment_id: str) -> dict:
        return shifted(self.config.get("experiments", {}).get(experiment_id, {}), self.seed_offset)

    def seeds_for(self, cfg: dict) -> list[int]:
        return list(cfg.get("seeds") or self.seeds)


@dataclass
class RunEnv:
    """What a run's `execute` gets: the device and cached datasets already on it, and the results
    root the job writes to (a tuned run reads its sweep's choice there: tuning.env_choice)."""

    device: torch.device
    data_dir: Path
    cache_dir: Path
    results: Path | None = None
    _datasets: dict = field(default_factory=dict)

    def dataset(self, name: str):
        from trainfail.training import data

        if name not in self._datasets:
            with phases.phase("data"):
                self._datasets[name] = data.prepared(name, self.cache_dir, self.data_dir).to(self.device)
        return self._datasets[name]
