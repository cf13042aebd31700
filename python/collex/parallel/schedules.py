"""Pipeline schedules as data: for p ranks, v stages per rank and m micro-batches,
each rank's list of actions, built without running anything (so that they can
be tested, counted and drawn alone). One executor (pipeline.py) runs any list.

An action is (op, chunk, microbatch): op "F" (forward), "B" (backward), "I"
(backward of the input only) or "W" (the weight gradients deferred from an I);
chunk c of rank r is global stage c*p + r. Transfers are implied: a forward of
stage s > 0 receives from stage s-1, a backward of stage s < S-1 receives from
stage s+1, and each sends its result on.
"""

from __future__ import annotations

from typing import NamedTuple


class Action(NamedTuple):
    op: str  # "F", "B", "I" or "W"
    chunk: int
    microbatch: int


SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb1p")


def gpipe(p: int, m: int, rank: int) -> list[Action]:
    """Every forward, then every backward."""
    return [Action("F", 0, i) for i in range(m)] + [Action("B", 0, i) for i in range(m)]


def one_f_one_b(p: int, m: int, rank: int) -> list[Action]:
    """p - rank - 1 warm-up forwards, then alternately one forward and one backward,
    then the remaining backwards: at most p - rank micro-batches live at once."""
    warm = min(p - rank - 1, m)
    acts = [Action("F", 0, i) for i in range(warm)]
    for k in range(m - warm):
        acts += [Action("F", 0, warm + k), Action("B", 0, k)]
    acts += [Action("B", 0, i) for i in range(m - warm, m)]
    return acts


def zero_bubble_h1(p: int, m: int, rank: int) -> list[Action]:
    """ZB-H1: 1F1B's order with each backward cut into I (the input gradient, on
    the critical path) and W (the weight gradient, off it). Rank r lists each W
    r micro-batches after its I (the remaining ones at the end) and the executor
    runs a listed W earlier whenever it would otherwise wait for a message: the
    later ranks, whose I passes the earlier ones wait for, put their W passes
    off, and the idle time at the end of 1F1B's step fills with them. Every rank
    then holds at most p contexts (p - r forwards and r deferred W's), 1F1B's
    peak; with F = I = W the bubble is (p-1) units against 1F1B's 3(p-1)."""
    acts: list[Action] = []
    done_w = 0
    for a in one_f_one_b(p, m, rank):
        if a.op == "F":
            acts.append(a)
            continue
        acts.append(Action("I", 0, a.microbatch))
        if a.microbatch - rank >= 0:
            acts.append(Action("W", 0, a.microbatch - rank))
            done_w += 1
    acts += [Action("W", 0, i) for i in range(done_w, m)]
    return acts


def interleaved(p: int, m: int, rank: int, v: int) -> list[Action]:
    """Megatron's interleaved 1F1B: rank r holds stages r, r + p, ..., r + (v-1)p.
    Micro-batches go through in groups of p, each group through every chunk
    before the next group starts (backwards through the chunks in reverse); the
    warm-up is longer than 1F1B's, the bubble shrinks to (p-1)/(v*m)."""
    if m % p:
        raise ValueError(f"interleaved: n_microbatches={m} is not a multiple of the {p} pipeline ranks")
    total = m * v

    def forward(k: int) -> Action:
        return Action("F", (k // p) % v, (k // (p * v)) * p + k % p)

    def backward(k: int) -> Action:
        return Action("B", v - 1 - (k // p) % v, (k // (p * v)) * p + k % p)

    warm = min((p - rank - 1) * 2 + (v - 1) * p, total)
    acts = [forward(k) for k in range(warm)]
    for k in range(total - warm):
        acts += [forward(warm + k), backward(k)]
    acts += [backward(k) for k in range(total - warm, total)]
    return acts


def build(name: str, p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """Rank `rank`'s actions for schedule `name`."""
    if name == "interleaved":
        return interleaved(p, m, rank, v)
    if v != 1:
        raise ValueError(f"schedule {name!r} runs one stage per rank, got {v} (use 'interleaved')")
    return {"gpipe": gpipe, "1f1b": one_f_one_b, "zb1p": zero_bubble_h1}[name](p, m, rank)


def needs(a: Action, p: int, stages: int, rank: int) -> tuple | None:
    """The message an action waits for: ("F", stage, mb) for a forward's input,
    ("B", stage, mb) for a backward's output gradient, or None (the first stage's
    forward, a W, and the last stage's backward, whose gradient comes from the loss)."""
    s = a.chunk * p + rank
    if a.op == "F":
        return None if s == 0 else ("F", s, a.microbatch)
    if a.op == "W" or s == stages - 1:
        return None
    return ("B", s, a.microbatch)


def simulate(name: str, p: int, m: int, v: int = 1, cost: dict | None = None) -> dict:
    """Runs every rank's list on a model of the pipeline, as the executor does:
    sends never block, a receive waits for its message, and a rank whose next
    action waits runs a deferred W meanwhile if it has one (the executor's rule;
    "zb1p" lists each W at the latest point it may run). Each op takes cost[op]
    time units (default F=1, B=2, I=1, W=1). Returns the makespan, each rank's
    busy time, the bubble fraction and each rank's peak number of live forward
    contexts (forwards whose B or I has not run). Raises ValueError when the
    lists deadlock."""
    cost = cost or {"F": 1.0, "B": 2.0, "I": 1.0, "W": 1.0}
    lists = [build(name, p, m, r, v) for r in range(p)]
    stages = p * v
    ready: dict[tuple, float] = {}  # message -> when it arrives
    done = [set() for _ in range(p)]  # actions run, per rank
    pos, clock, busy = [0] * p, [0.0] * p, [0.0] * p
    live, peak = [0] * p, [0] * p

    def next_action(r: int) -> Action | None:
        while pos[r] < len(lists[r]) and lists[r][pos[r]] in done[r]:
            pos[r] += 1  # a W already run early
        return lists[r][pos[r]] if pos[r] < len(lists[r]) else None

    def early_w(r: int) -> Action | None:
        for a in lists[r][pos[r] :]:
            if a.op == "W" and a not in done[r] and Action("I", a.chunk, a.microbatch) in done[r]:
                return a
        return None

    while True:
        choice = None  # (start, rank, action)
        for r in range(p):
            a = next_action(r)
            if a is None:
                continue
            key = needs(a, p, stages, r)
            at = clock[r] if key is None else ready.get(key)
            if at is not None and at <= clock[r]:
                cand = (clock[r], r, a)
            elif early_w(r) is not None:
                cand = (clock[r], r, early_w(r))
            elif at is not None:
                cand = (at, r, a)
            else:
                continue
            if choice is None or cand[0] < choice[0]:
                choice = cand
        if choice is None:
            break
        start, r, a = choice
        s = a.chunk * p + r
        clock[r] = start + cost[a.op]
        busy[r] += cost[a.op]
        done[r].add(a)
        if a.op == "F":
            live[r] += 1
            peak[r] = max(peak[r], live[r])
            if s + 1 < stages:
                ready[("F", s + 1, a.microbatch)] = clock[r]
        elif a.op in ("B", "I"):
            live[r] -= 1
            if s > 0:
                ready[("B", s - 1, a.microbatch)] = clock[r]
    if any(next_action(r) is not None for r in range(p)):
        raise ValueError(f"schedule {name!r} deadlocks at p={p}, m={m}, v={v}")
    span = max(clock)
    return {"makespan": span, "busy": busy, "bubble": 1.0 - sum(busy) / (p * span), "peak_live": peak}
