"""What every stage needs to know besides an experiment's own settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Context:
    """The validated config, seen from one experiment's point of view."""

    config: dict
    results: Path = Path("results")

    @property
    def seeds(self) -> list[int]:
        return list(self.config.get("seeds", [0]))

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
        return self.config.get("experiments", {}).get(experiment_id, {})

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
        from . import data

        if name not in self._datasets:
            self._datasets[name] = data.prepared(name, self.cache_dir, self.data_dir).to(self.device)
        return self._datasets[name]
