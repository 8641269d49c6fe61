"""Which examples each process trains on at each step: a pure function of the step.

Because the order never depends on what ran before, a resumed run picks up at exactly the examples
the interrupted one would have used next, with no data-loader state to save.
"""

from dataclasses import dataclass, field
from math import ceil

import torch

from moorage.api.finetune import Training
from moorage.jobs.finetune.distributed import World


def total_steps(training: Training, examples: int, world: World) -> int:
    if training.max_steps is not None:
        return training.max_steps
    per_step = training.batch_size * training.gradient_accumulation_steps * world.size
    return max(1, ceil(training.epochs * examples / per_step))


@dataclass
class Order:
    """An endless stream of epochs, each a fresh seeded shuffle of the examples."""

    examples: int
    batch_size: int
    accumulation: int
    world: World
    seed: int
    _epochs: dict[int, list[int]] = field(default_factory=dict)

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches for optimizer step `step` (counted from 0)."""
        per_micro = self.batch_size * self.world.size
        first = step * per_micro * self.accumulation
        return [
            [
                self._at(first + micro * per_micro + self.world.rank * self.batch_size + i)
                for i in range(self.batch_size)
            ]
            for micro in range(self.accumulation)
        ]

    def epoch(self, step: int) -> float:
        return step * self.batch_size * self.accumulation * self.world.size / self.examples

    def _at(self, position: int) -> int:
        epoch, offset = divmod(position, self.examples)
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._epochs = {epoch: torch.randperm(self.examples, generator=generator).tolist()}
        return self._epochs[epoch][offset]
