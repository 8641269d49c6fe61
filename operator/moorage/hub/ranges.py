"""A file's bytes as ranges that several connections fetch at once.

A big file is cut into ranges of tens of MiB; each connection claims one, fetches it with an HTTP Range
request and writes it at its offset. When nothing is left to claim, an idle connection takes the second
half of the largest range still in flight (the way aria2 does), so one slow connection does not hold up the
end of the file. What is done is a list of byte intervals, saved beside the .part (snapshot.write_state) so
a later run fetches only what is missing.

Not thread-safe by itself: the pull's lock guards every call.
"""

from dataclasses import dataclass

Interval = tuple[int, int]
"""[start, end) in bytes."""


@dataclass(eq=False)
class Range:
    start: int
    end: int
    """Exclusive; it shrinks when an idle connection takes the second half."""
    pos: int
    """[start, pos) is written."""
    reserved: int
    """[pos, reserved) is being written now: a split never cuts into it."""
    owned: bool = False
    failures: int = 0

    @property
    def left(self) -> int:
        return self.end - self.pos


class Ranges:
    def __init__(self, size: int, done: list[Interval], piece: int) -> None:
        """What is missing of [0, size), given what is done, cut into pieces of at most `piece` bytes."""
        self.size = size
        self.items: list[Range] = [Range(a, b, b, b) for a, b in done]
        for a, b in missing(size, done):
            for start in range(a, b, piece):
                end = min(start + piece, b)
                self.items.append(Range(start, end, start, start))
        self.items.sort(key=lambda r: r.start)

    @property
    def complete(self) -> bool:
        return all(r.pos == r.end for r in self.items)

    def claim(self) -> Range | None:
        """The first range nobody fetches and that is not done, now owned by the caller."""
        for r in self.items:
            if not r.owned and r.pos < r.end:
                r.owned = True
                return r
        return None

    def steal_size(self) -> int:
        """Bytes a split of the largest range in flight would hand over (0: none is in flight)."""
        victim = self._victim()
        return 0 if victim is None else (victim.end - victim.reserved) // 2

    def steal(self, smallest: int) -> Range | None:
        """The second half of the largest range in flight, owned by the caller; None when no range in
        flight has at least 2 * smallest bytes left (a split would cost more in a new request than it
        saves)."""
        victim = self._victim()
        if victim is None or victim.end - victim.reserved < 2 * smallest:
            return None
        mid = victim.reserved + (victim.end - victim.reserved) // 2
        taken = Range(mid, victim.end, mid, mid, owned=True)
        victim.end = mid
        self.items.insert(self.items.index(victim) + 1, taken)
        return taken

    def prefix(self) -> int:
        """How many bytes from the start are written without a gap: what can be hashed in order."""
        cursor = 0
        for r in self.items:
            if r.start != cursor:
                break
            cursor = r.pos
            if r.pos < r.end:
                break
        return cursor

    def done(self) -> list[Interval]:
        """The written bytes as sorted, merged intervals."""
        merged: list[Interval] = []
        for r in self.items:
            if r.pos == r.start:
                continue
            if merged and merged[-1][1] == r.start:
                merged[-1] = (merged[-1][0], r.pos)
            else:
                merged.append((r.start, r.pos))
        return merged

    def _victim(self) -> Range | None:
        flying = [r for r in self.items if r.owned and r.pos < r.end]
        return max(flying, key=lambda r: r.end - r.reserved, default=None)


def missing(size: int, done: list[Interval]) -> list[Interval]:
    """The gaps of sorted, disjoint `done` intervals within [0, size)."""
    gaps, cursor = [], 0
    for a, b in done:
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < size:
        gaps.append((cursor, size))
    return gaps
