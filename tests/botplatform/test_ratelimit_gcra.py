"""The GCRA limiter (``botplatform/ratelimit.py``): its bound, its exact waits, the
Lua script against its Python specification, and concurrent callers on real Redis."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botplatform import ratelimit

limits_st = st.tuples(st.integers(1, 30), st.integers(1, 20_000))
gaps_st = st.lists(st.floats(0, 3_000, allow_nan=False), min_size=1, max_size=120)


def _admitted(limit: int, window: int, gaps: list[float]) -> list[float]:
    tats: dict[str, float] = {}
    now, times = 1_000_000.0, []
    for gap in gaps:
        now += gap
        if ratelimit.gcra_decide(tats, now, [("k", limit, window)]) == 0:
            times.append(now)
    return times


def _bound_held(times: list[float], limit: int, window: int) -> bool:
    """In any span of length w at most ``limit + w * limit / window`` events."""
    times = sorted(times)
    return all(
        j - i + 1 <= limit + (times[j] - times[i]) * limit / window + 1e-6
        for i in range(len(times))
        for j in range(i + limit, len(times))
    )


@given(limits=limits_st, gaps=gaps_st)
def test_never_more_than_the_burst_plus_the_rate_in_any_span(limits, gaps):
    limit, window = limits
    times = _admitted(limit, window, gaps)
    assert _bound_held(times, limit, window)
    # And at most `limit` inside any span shorter than one emission interval.
    step = window / limit
    assert all(sum(1 for u in times if t <= u < t + step) <= limit for t in times)


@given(limits=limits_st, gaps=gaps_st)
def test_a_refusal_says_exactly_how_long_to_wait(limits, gaps):
    limit, window = limits
    tats: dict[str, float] = {}
    now = 1_000_000.0
    for gap in gaps:
        now += gap
        wait = ratelimit.gcra_decide(tats, now, [("k", limit, window)])
        if wait:
            assert wait >= 1
            before = dict(tats)
            assert ratelimit.gcra_decide(dict(tats), now + wait, [("k", limit, window)]) == 0
            if wait > 1:  # a millisecond earlier is still too early
                assert ratelimit.gcra_decide(dict(tats), now + wait - 1.001, [("k", limit, window)])
            assert tats == before  # a refusal records nothing


@given(limit=st.integers(1, 50), window=st.integers(1, 10**9))
def test_a_quiet_key_admits_exactly_its_burst(limit, window):
    tats: dict[str, float] = {}
    verdicts = [ratelimit.gcra_decide(tats, 5.0, [("k", limit, window)]) for _ in range(limit + 1)]
    assert verdicts[:limit] == [0] * limit
    assert verdicts[limit] > 0


def test_all_or_nothing_over_several_keys():
    tats: dict[str, float] = {}
    both = [("bot", 10, 1000), ("chat", 1, 1000)]
    assert ratelimit.gcra_decide(tats, 0.0, both) == 0
    bot_before = tats["bot"]
    assert ratelimit.gcra_decide(tats, 1.0, both) > 0  # the chat refuses...
    assert tats["bot"] == bot_before  # ...so the bot's slot is not taken either


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=st.lists(limits_st, min_size=1, max_size=2),
    gaps=st.lists(st.floats(0, 3_000, allow_nan=False), min_size=1, max_size=40),
)
def test_the_lua_script_decides_as_its_python_specification(limits, gaps):
    prefix = f"rate_limit:test:diff:{uuid.uuid4().hex}"
    spec = [(f"{prefix}:{n}", limit, window) for n, (limit, window) in enumerate(limits)]
    tats: dict[str, float] = {}
    now = 1_700_000_000_000.0
    for gap in gaps:
        now += round(gap, 3)
        expected = ratelimit.gcra_decide(tats, now, spec)
        assert ratelimit.rate_hit(spec, now_ms=now) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [1, 3, 7])
def test_concurrent_callers_at_one_instant_get_exactly_the_burst(limit):
    key = f"rate_limit:test:instant:{uuid.uuid4().hex}"
    admitted = []
    barrier = threading.Barrier(12)

    def hit() -> None:
        barrier.wait()
        for _ in range(3):
            if ratelimit.rate_hit([(key, limit, 60_000)], now_ms=1_000.0) == 0:
                admitted.append(1)

    threads = [threading.Thread(target=hit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == limit


@pytest.mark.django_db
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limit=st.integers(1, 6), window=st.integers(50, 300), threads=st.integers(2, 6))
def test_concurrent_callers_on_the_real_clock_never_break_the_bound(limit, window, threads):
    """Real threads, the callers' own clock (``time.time()``, passed to the script):
    each grant is bracketed by the clock read just before and after it; no run of
    grants may provably exceed the bound."""
    key = f"rate_limit:test:clock:{uuid.uuid4().hex}"
    grants: list[tuple[float, float]] = []

    def clock() -> float:
        return time.time() * 1000

    def caller() -> None:
        for _ in range(12):
            before = clock()
            if ratelimit.rate_hit([(key, limit, window)]) == 0:
                grants.append((before, clock()))

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    grants.sort()
    assert grants
    for i in range(len(grants)):
        for j in range(i + limit, len(grants)):
            span = max(after for _b, after in grants[i : j + 1]) - grants[i][0]
            assert j - i + 1 <= limit + (span + 1) * limit / window


def test_absurd_limits_are_clamped_not_crashed():
    tats: dict[str, float] = {}
    assert ratelimit.gcra_decide(tats, 0.0, [("k", 10**12, 1)]) == 0
    assert ratelimit._local_plan([([(f"local:{uuid.uuid4().hex}", 0, 0)], False)]) == [0]


@pytest.mark.django_db
def test_absurd_limits_on_redis_are_clamped():
    key = f"rate_limit:test:absurd:{uuid.uuid4().hex}"
    assert ratelimit.rate_hit([(key, 0, 0)]) == 0  # clamped to 1 per 1 ms
    assert ratelimit.rate_hit([(key + "x", 10**9, 10**12)]) == 0


# --- Plans: several checks in one call, keys holding several TATs ----------------------

checks_st = st.lists(
    st.tuples(
        st.lists(
            st.tuples(
                st.integers(0, 2), st.integers(0, 1), st.integers(1, 5), st.integers(1, 5_000)
            ),
            min_size=1,
            max_size=3,
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=5,
)


def _plan(prefix: str, checks) -> list:
    return [
        ([(f"{prefix}:{k}", limit, window, index) for k, index, limit, window in limits], after)
        for limits, after in checks
    ]


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.floats(0, 2_000, allow_nan=False), checks_st), max_size=12))
def test_the_script_runs_whole_plans_as_its_python_specification(steps):
    """Several checks per call, keys shared between checks and holding two TATs,
    checks that depend on the one before: the script and ``gcra_plan`` agree."""
    prefix = f"rate_limit:test:plan:{uuid.uuid4().hex}"
    store: dict[str, list[float]] = {}
    now = 1_700_000_000_000.0
    for gap, checks in steps:
        now += round(gap, 3)
        plan = _plan(prefix, checks)
        assert ratelimit.rate_plan(plan, now_ms=now) == ratelimit.gcra_plan(store, now, plan)


def test_a_dependent_check_is_skipped_after_a_refusal_and_records_nothing():
    store: dict[str, list[float]] = {}
    incoming = ([("user", 1, 60_000)], False)
    send = ([("bot", 30, 1000), ("user", 1, 1000, 1)], True)
    assert ratelimit.gcra_plan(store, 0.0, [incoming, send]) == [0, 0]
    before = {key: list(tats) for key, tats in store.items()}
    waits = ratelimit.gcra_plan(store, 10.0, [incoming, send])
    assert waits[0] > 0 and waits[1] == ratelimit.SKIPPED
    assert store == before


def test_two_tats_of_one_key_are_independent_limits():
    store: dict[str, list[float]] = {}
    assert ratelimit.gcra_plan(store, 0.0, [([("k", 1, 60_000, 0)], False)]) == [0]
    # The first TAT is spent for a minute; the second is a limit of its own.
    assert ratelimit.gcra_plan(store, 1.0, [([("k", 2, 1000, 1)], False)]) == [0]
    assert ratelimit.gcra_plan(store, 2.0, [([("k", 1, 60_000, 0)], False)])[0] > 0
    assert ratelimit.gcra_plan(store, 3.0, [([("k", 2, 1000, 1)], False)]) == [0]


@given(
    limits=limits_st,
    clocks=st.lists(st.floats(-1e6, 1e13, allow_nan=False), min_size=1, max_size=60),
)
def test_clocks_that_jump_or_go_backwards_never_raise_nor_block_for_long(limits, clocks):
    """Runners trust each other's clocks; a TAT written by a clock far ahead is
    clamped to ``now + window`` by the next reader: a wait never exceeds one window."""
    limit, window = limits
    tats: dict[str, float] = {}
    for now in clocks:
        wait = ratelimit.gcra_decide(tats, now, [("k", limit, window)])
        assert 0 <= wait <= window + 1


@given(
    limits=limits_st,
    skew=st.floats(0, 50, allow_nan=False),
    gaps=st.lists(st.floats(0, 500, allow_nan=False), min_size=1, max_size=80),
)
def test_two_runners_with_skewed_clocks_admit_at_most_the_bound_plus_the_skew(limits, skew, gaps):
    """Two callers alternate, one clock ``skew`` ms behind the other: over any span the
    admitted events stay within the bound measured on the true clock, widened by the
    skew (a lagging clock sees refills up to ``skew`` ms late, never early)."""
    limit, window = limits
    tats: dict[str, float] = {}
    now, times = 1_000_000.0, []
    for n, gap in enumerate(gaps):
        now += gap
        seen = now - skew if n % 2 else now
        if ratelimit.gcra_decide(tats, seen, [("k", limit, window)]) == 0:
            times.append(now)
    times.sort()
    assert all(
        j - i + 1 <= limit + (times[j] - times[i] + skew) * limit / window + 1e-6
        for i in range(len(times))
        for j in range(i + limit, len(times))
    )


@pytest.mark.django_db
@given(
    limit=st.integers(-5, 10**12),
    window=st.integers(-5, 10**12),
    now=st.floats(-1e15, 1e15, allow_nan=False),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_odd_inputs_are_clamped_on_redis_and_in_python_alike(limit, window, now):
    key = f"rate_limit:test:odd:{uuid.uuid4().hex}"
    plan = [([(key, limit, window), (key, limit, window, 1)], False)]
    assert ratelimit.rate_plan(plan, now_ms=now) == ratelimit.gcra_plan({}, now, plan)
