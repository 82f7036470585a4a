"""The compute releases the GIL: a Python thread keeps counting during a large call."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from polyattn import _native
from conftest import qkv


def test_second_thread_progresses_during_a_call():
    q, k, v, do = qkv((4, 2048, 64), seed=31, dtype=np.float64, with_do=True)
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
        # The native calls alone (what polyattn.attention_backward runs after its
        # NumPy-side folding, during which the GIL changes hands anyway).
        c0, t0 = count, time.perf_counter()
        _, state = _native.forward(q, k, v)
        _native.backward(state, q, k, v, do)
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
    # With the GIL held through the calls, the counter runs only when the main thread
    # is between bytecodes around the calls, for as long as the OS takes to reschedule
    # it (milliseconds on a loaded machine): measured with a build that does not
    # release the GIL, 1.2 % of `free` for this ~2 s call. Released, the counter runs
    # throughout, sharing the cores with the engine's threads: measured 30-54 % on 2
    # loaded cores. 10 % separates the two with a margin of 3x on either side.
    assert during > 0.1 * free, (during, free, t1 - t0)
