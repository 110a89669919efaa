"""The stream engine's scheduling primitives: the micro-batcher coalesces calls of many threads oldest clip
first, never mixes keys when grouped, holds items for a fill (counting the items already in calls), lets a
flush through after the linger, and keeps the per-item fault boundary; the gate admits oldest first."""

import threading
import time

import pytest

from instvl.annotate.batching import Batcher, Gate, set_priority


def test_batcher_coalesces_calls_of_many_threads_oldest_first():
    calls: list[list[int]] = []
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        calls.append(list(items))
        return [i * 10 for i in items]

    batcher = Batcher("t", run, max_batch=8, linger_s=0.05)
    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.map([i])[0]))
               for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: i * 10 for i in range(20)}
    assert max(len(c) for c in calls) == 8 and len(calls) <= 4
    assert batcher.stats.items == 20


def test_grouped_batcher_never_mixes_keys():
    seen: list[set[str]] = []

    def run(items):
        seen.append({k for k, _ in items})
        return items

    batcher = Batcher("g", run, max_batch=8, linger_s=0.02, grouped=True)
    futures = [batcher.submit((k, i), key=k) for i in range(6) for k in "ab"]
    assert [f.result() for f in futures] == [(k, i) for i in range(6) for k in "ab"]
    batcher.close()
    assert all(len(s) == 1 for s in seen)


def test_held_items_go_in_waves_when_full_flushed_or_too_old():
    calls: list[list[int]] = []
    flush = threading.Event()

    def run(items):
        calls.append(list(items))
        return items

    batcher = Batcher("h", run, max_batch=1, linger_s=0.0, calls=16, fill=5, hold_s=30.0,
                      flush=flush.is_set)
    held = [batcher.submit(i, urgent=False) for i in range(4)]
    time.sleep(0.1)
    assert not calls  # 4 < fill: held
    fifth = batcher.submit(4, urgent=False)
    assert [f.result(5) for f in [*held, fifth]] == [0, 1, 2, 3, 4] and batcher.waves == 1
    late = batcher.submit(5, urgent=False)
    time.sleep(0.1)
    assert not late.done()
    flush.set()  # nothing more will come: the engine says so and pokes
    batcher.poke()
    assert late.result(5) == 5 and batcher.waves == 2
    batcher.close()

    old = Batcher("o", run, max_batch=4, linger_s=0.0, fill=100, hold_s=0.05)
    started = time.monotonic()
    assert old.map([7, 8], urgent=False) == [7, 8]
    assert 0.04 <= time.monotonic() - started < 2
    old.close()



def test_held_items_outstay_their_hold_while_keep_says_so():
    """`keep()` (the tracker has work enough) lets held items wait past `hold_s` for a full batch; once it
    turns false (and the batcher is poked) the overdue items go at once."""
    fed = threading.Event()
    fed.set()
    batcher = Batcher("k", lambda items: items, max_batch=8, linger_s=0.0, fill=8, hold_s=0.05,
                      keep=fed.is_set)
    held = batcher.submit(1, urgent=False)
    time.sleep(0.3)
    assert not held.done()  # six times its hold, kept
    fed.clear()
    batcher.poke()
    assert held.result(5) == 1
    full = [batcher.submit(i, urgent=False) for i in range(8)]
    fed.set()
    assert [f.result(5) for f in full] == list(range(8))  # a full batch goes whatever keep says
    batcher.close()

def test_a_held_batch_that_fails_is_retried_item_by_item():
    def run(items):
        if 3 in items:
            raise RuntimeError("item 3 is bad")
        return [i * 2 for i in items]

    batcher = Batcher("f", run, max_batch=8, linger_s=0.0, fill=6, hold_s=5.0)
    futures = [batcher.submit(i, urgent=False) for i in range(6)]
    assert [f.result(5) for f in futures if f is not futures[3]] == [0, 2, 4, 8, 10]
    with pytest.raises(RuntimeError, match="item 3"):
        futures[3].result(5)
    assert batcher.stats.max_batch == 6
    batcher.close()


def test_held_items_refill_the_calls_up_to_fill():
    """Held items count the items already in calls: once a wave is out, one more held item goes at once
    (a self-scheduling engine stays at `fill` sequences) instead of waiting for `fill` new ones."""
    started: list[int] = []
    release = threading.Event()

    def run(items):
        started.extend(items)
        release.wait(10)
        return items

    batcher = Batcher("r", run, max_batch=1, linger_s=0.0, calls=8, fill=4, hold_s=60.0)
    first = [batcher.submit(i, urgent=False) for i in range(3)]
    time.sleep(0.1)
    assert not started  # 3 held, none in calls: below fill
    first.append(batcher.submit(3, urgent=False))
    deadline = time.monotonic() + 5
    while len(started) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    refill = batcher.submit(4, urgent=False)  # 1 held + 4 in calls = fill
    while len(started) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(started) == [0, 1, 2, 3, 4] and batcher.waves == 2
    release.set()
    assert [f.result(5) for f in [*first, refill]] == [0, 1, 2, 3, 4]
    batcher.close()


def test_a_flush_waits_the_linger_so_items_submitted_together_go_together():
    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        return items

    batcher = Batcher("l", run, max_batch=8, linger_s=0.5, fill=100, hold_s=60.0, flush=lambda: True)
    futures = []
    for i in range(3):  # each within the linger of the one before
        futures.append(batcher.submit(i, urgent=False))
        time.sleep(0.05)
    assert [f.result(5) for f in futures] == [0, 1, 2]  # long before hold_s: the flush let them go
    assert calls == [[0, 1, 2]]
    batcher.close()


def test_gate_admits_the_oldest_clip_first():
    gate = Gate("g", slots=1)
    order: list[int] = []
    holding = threading.Event()
    proceed = threading.Event()

    def first():
        with gate.hold():
            holding.set()
            proceed.wait(5)

    def clip(seq: int):
        set_priority(seq)
        with gate.hold():
            order.append(seq)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    holding.wait(5)
    for seq in (30, 10, 20):
        threads.append(threading.Thread(target=clip, args=(seq,)))
        threads[-1].start()
        time.sleep(0.05)
    proceed.set()
    for t in threads:
        t.join(5)
    assert order == [10, 20, 30]
    assert gate.stats.calls == 4
