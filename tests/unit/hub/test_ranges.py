"""Cutting a file into ranges, handing them out, splitting the biggest in flight, and what can be hashed."""

from pathlib import Path

from moorage.hub import snapshot
from moorage.hub.ranges import Ranges, missing


def test_missing_bytes_are_cut_into_pieces_after_what_is_done() -> None:
    ranges = Ranges(100, [(0, 10), (40, 50)], piece=20)
    assert [(r.start, r.end, r.pos) for r in ranges.items] == [
        (0, 10, 10),
        (10, 30, 10),
        (30, 40, 30),
        (40, 50, 50),
        (50, 70, 50),
        (70, 90, 70),
        (90, 100, 90),
    ]
    assert missing(100, [(0, 10), (40, 50)]) == [(10, 40), (50, 100)]
    assert ranges.prefix() == 10 and not ranges.complete


def test_claims_go_in_order_and_never_twice() -> None:
    ranges = Ranges(60, [], piece=20)
    claimed = [ranges.claim() for _ in range(4)]
    assert [r.start if r else None for r in claimed] == [0, 20, 40, None]


def test_an_idle_worker_takes_the_second_half_of_the_biggest_range_in_flight() -> None:
    ranges = Ranges(100, [], piece=100)
    first = ranges.claim()
    assert first is not None
    first.pos = first.reserved = 20
    taken = ranges.steal(smallest=10)
    assert taken is not None and (taken.start, taken.end, taken.owned) == (60, 100, True)
    assert first.end == 60
    first.pos = first.reserved = 50
    assert ranges.steal(smallest=10) is not None  # 40 left in the second half: halved again
    assert ranges.steal(smallest=100) is None  # too small to be worth a request


def test_a_split_never_cuts_into_bytes_being_written() -> None:
    ranges = Ranges(100, [], piece=100)
    first = ranges.claim()
    assert first is not None
    first.pos, first.reserved = 10, 90
    taken = ranges.steal(smallest=1)
    assert taken is not None and taken.start == 95


def test_prefix_and_done_follow_the_written_bytes() -> None:
    ranges = Ranges(30, [], piece=10)
    a, b, c = (ranges.claim() for _ in range(3))
    assert a is not None and b is not None and c is not None
    b.pos = 20  # the second range is whole, the first not started
    c.pos = 25
    assert ranges.prefix() == 0
    assert ranges.done() == [(10, 25)]
    a.pos = 10
    assert ranges.prefix() == 25 and ranges.done() == [(0, 25)]
    c.pos = 30
    assert ranges.complete and ranges.prefix() == 30


def test_the_state_file_is_trusted_only_when_it_makes_sense(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    snapshot.write_state(path, 100, [(0, 10), (50, 60)])
    assert snapshot.read_state(path, 100) == [(0, 10), (50, 60)]
    assert snapshot.read_state(path, 99) == []  # another size: another file
    snapshot.write_state(path, 100, [(50, 60), (0, 10)])
    assert snapshot.read_state(path, 100) == []  # not sorted
    snapshot.write_state(path, 100, [(0, 200)])
    assert snapshot.read_state(path, 100) == []
    snapshot.state_path(path).write_text("{not json")
    assert snapshot.read_state(path, 100) == []
    snapshot.state_path(path).unlink()
    assert snapshot.read_state(path, 100) == []
