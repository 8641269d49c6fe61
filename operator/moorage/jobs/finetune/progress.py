"""How far a run has got: saved in every checkpoint, summarised in metrics.json."""

from dataclasses import dataclass, field


@dataclass
class Progress:
    step: int = 0
    """Optimizer steps done."""
    losses: list[float] = field(default_factory=list)
    """The loss of each step done, in order."""
    seconds: float = 0.0
    """Training time so far, over all runs."""
    tokens: int = 0
    """Tokens trained on so far, over all processes and runs."""
