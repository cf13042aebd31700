"""The mid-size copy chooser's decisions, driven with made-up times (one rank
alone, so its times stand for every rank's): it must follow the faster way, keep
a near tie, come back to a way that slowed, and keep its probes rare when the
other way is much slower; likewise for staged writes and for the result stores
of operations that read peers in place. The MPI tests check that real ranks agree."""

from __future__ import annotations

import re

from collex import _core

BYTES = 256 * 1024  # a size class that starts on the slots
CALLS = 600
FIRST = 12  # calls in a class's first window; the first probe is the next four


def run(slots_us, attach_us, calls: int = CALLS):
    """The way each call took (True: slots) and the decisions, for per-call times
    given as functions of the call's index."""
    taken, decisions = _core._copy_ways_run(
        BYTES, calls, lambda call, slots: (slots_us(call) if slots else attach_us(call)) * 1e-6
    )
    return list(taken), decisions


def attach_calls(taken, start: int, stop: int) -> int:
    return sum(1 for slots in taken[start:stop] if not slots)


def test_switches_to_the_faster_way_at_the_first_probe():
    taken, decisions = run(lambda c: 100.0, lambda c: 50.0)
    assert all(taken[:FIRST]), "a class up to 1 MiB starts on the slots"
    assert taken[FIRST : FIRST + 4] == [False] * 4, "the first probe: four calls the other way"
    assert decisions[0][0] == FIRST + 3 and "switches to attach" in decisions[0][1], decisions
    # From then on attach, but for probes of the slots, which stay rare.
    assert attach_calls(taken, FIRST + 4, CALLS) >= CALLS - FIRST - 4 - 4 * len(decisions)


def test_keeps_a_near_tie():
    taken, decisions = run(lambda c: 100.0, lambda c: 95.0)
    assert decisions and all("keeps slots" in line for _, line in decisions), decisions


def test_probes_of_a_much_slower_way_stay_rare():
    # Attaching 4x slower: a probe costs 4 x 3 extra call-times, so at 2 % of the
    # class's time the next may come no sooner than 600 calls later.
    taken, decisions = run(lambda c: 100.0, lambda c: 400.0, calls=2000)
    assert "keeps slots" in decisions[0][1], decisions
    assert int(re.search(r"next probe in (\d+)", decisions[0][1])[1]) >= 590, decisions
    assert attach_calls(taken, FIRST + 4, 600) == 0


def test_comes_back_when_the_way_in_use_slows():
    # The slots win until call 300, then run 4x slower than before: the next
    # window's times show it and a probe follows at once, without waiting for
    # the one that was due far later.
    taken, decisions = run(lambda c: 100.0 if c < 300 else 400.0, lambda c: 150.0)
    assert attach_calls(taken, FIRST + 4, 300) == 4, "the slots win until call 300 (one probe of attaching)"
    switch = [call for call, line in decisions if "switches to attach" in line]
    assert switch and 300 < switch[0] <= 300 + 2 * 32 + 4, decisions
    # From then on attach, but for at most one probe of the slots (four calls).
    assert attach_calls(taken, switch[0] + 1, CALLS) >= CALLS - switch[0] - 1 - 4


def test_first_calls_do_not_decide():
    # The first two calls of a class touch fresh pages, and the fourth moves a
    # plain array onto shared pages that the peers then map and touch: the first
    # six go untimed, so 30x slower ones there do not decide.
    taken, decisions = run(lambda c: 3000.0 if c < 6 else 100.0, lambda c: 120.0)
    assert "keeps slots" in decisions[0][1], decisions


def test_fixed_and_non_mid_size_calls_are_not_timed():
    taken, decisions = _core._copy_ways_run(0, 50, lambda call, slots: 1.0)
    assert decisions == [] and all(taken)


def test_staged_writes_follow_the_faster_stores_even_when_copies_are_fixed():
    # A staged broadcast (32 KiB) starts on ordinary stores and moves to streaming
    # ones when they are faster, whatever COLLEX_MIDSIZE_COPY fixed (fix()).
    taken, decisions = _core._copy_ways_run(
        32 * 1024, CALLS, lambda call, ordinary: 15e-6 if ordinary else 4e-6, kind="staged", fixed=True
    )
    assert all(taken[:FIRST]) and taken[FIRST : FIRST + 4] == [False] * 4
    assert decisions[0][0] == FIRST + 3, decisions
    first = decisions[0][1]
    assert "staged broadcast <=32 KiB" in first and "switches to streaming stores" in first
    assert sum(taken[FIRST + 4 :]) <= 4 * len(decisions)


def test_staged_writes_keep_ordinary_stores_when_faster():
    taken, decisions = _core._copy_ways_run(
        32 * 1024, 200, lambda call, ordinary: 3e-6 if ordinary else 6e-6, kind="staged"
    )
    assert decisions and all("keeps ordinary stores" in line for _, line in decisions), decisions


def test_result_writes_follow_the_faster_stores_even_when_copies_are_fixed():
    # An 8 MiB all-reduce starts on ordinary stores (as by size) and moves to
    # streaming ones when they are faster, as where the cores pass data between
    # their caches slowly, whatever COLLEX_MIDSIZE_COPY fixed.
    taken, decisions = _core._copy_ways_run(
        8 << 20, CALLS, lambda call, ordinary: 3.3e-3 if ordinary else 0.6e-3, kind="large", fixed=True
    )
    assert all(taken[:FIRST]) and taken[FIRST : FIRST + 4] == [False] * 4
    first = decisions[0][1]
    assert "all-reduce results <=8 MiB" in first and "switches to streaming stores" in first, decisions
    assert sum(taken[FIRST + 4 :]) <= 4 * len(decisions)


def test_result_writes_start_streamed_above_8_mib_and_keep_ordinary_when_faster():
    taken, decisions = _core._copy_ways_run(
        12 << 20, 200, lambda call, ordinary: 0.7e-3 if ordinary else 0.9e-3, kind="large"
    )
    assert not any(taken[:FIRST]) and all(taken[FIRST : FIRST + 4]), (
        "a class over 8 MiB starts streamed, then probes ordinary"
    )
    assert "switches to ordinary stores" in decisions[0][1], decisions
    assert all("keeps ordinary stores" in line for _, line in decisions[1:]), decisions


def test_result_writes_outside_1_to_16_mib_are_not_timed():
    for size in (1 << 19, 17 << 20):
        taken, decisions = _core._copy_ways_run(size, 50, lambda call, ordinary: 1.0, kind="large")
        assert decisions == [] and all(taken), size
