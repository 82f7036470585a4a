"""The compute releases the GIL: a Python thread keeps counting during a large call."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

import polyattn
from conftest import qkv


def test_second_thread_progresses_during_a_call():
    q, k, v, do = qkv((4, 1024, 64), seed=31, dtype=np.float64, with_do=True)
    count = 0
    stop = False

    def counter():
        nonlocal count
        while not stop:
            count += 1

    old = sys.getswitchinterval()
    # A short switch interval bounds what the counter can do around the call while the
    # main thread holds the GIL: at most two intervals' worth (0.2 ms).
    sys.setswitchinterval(1e-4)
    t = threading.Thread(target=counter)
    t.start()
    try:
        time.sleep(0.05)
        c0, t0 = count, time.perf_counter()
        polyattn.attention_backward(q, k, v, do)
        c1, t1 = count, time.perf_counter()
        # The counter's rate with the GIL free, for the same duration, as a yardstick.
        time.sleep(t1 - t0)
        c2 = count
    finally:
        stop = True
        t.join()
        sys.setswitchinterval(old)
    during, free = c1 - c0, c2 - c1
    assert t1 - t0 > 0.05, "the call is too short to tell"
    # With the GIL held for the whole call the counter could run only in the 0.2 ms
    # around it: under 0.2 ms / (t1 - t0) < 0.4 % of `free`. Released, it runs
    # throughout, sharing the cores with the engine's threads: require 5 %.
    assert during > 0.05 * free, (during, free, t1 - t0)
