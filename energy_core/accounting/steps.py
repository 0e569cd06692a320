"""Which optimizer steps are new: one decision a step, however many hooks report it.

With gradient accumulation a framework calls its batch-end hook once per micro-batch, each
time with the optimizer step that is still current, so the ends of the micro-batches after
an optimizer step repeat its number: they are no step's end. A budget's stop, a time shift's
pause and a power cap's change there would split a step (or throw part of its work away), so
each of them acts at the first report of a step only. A repeated or earlier number is no new
step either (a resumed fit begins where its checkpoint left off).
"""

from __future__ import annotations

BEFORE_ANY = -(2**62)  # earlier than any step a fit can begin at


class StepGate:
    """Says once per optimizer step that it is new: two integer operations on the hot path.

    Examples:
        >>> gate = StepGate()
        >>> gate.begin(10)  # the fit begins at step 10: it is taken as seen
        >>> [gate.new(step) for step in (10, 11, 11, 11, 12)]
        [False, True, False, False, True]
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = BEFORE_ANY

    def begin(self, step: int = BEFORE_ANY) -> None:
        """Start counting: ``step`` (where a fit begins) counts as seen; none by default."""
        self.last = step

    def new(self, step: int) -> bool:
        """Whether ``step`` is later than every step seen so far (then it is seen)."""
        if step <= self.last:
            return False
        self.last = step
        return True
