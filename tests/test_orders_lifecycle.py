"""The per-recipient order state table, checked with Hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fieldc2.orders.lifecycle import TABLE, run, step
from fieldc2.orders.model import OrderState, Signal

signals = st.lists(st.sampled_from(list(Signal)), max_size=30)
states = st.sampled_from(list(OrderState))


@given(states, signals)
def test_never_backwards_and_terminal_is_final(start: OrderState, inputs: list[Signal]) -> None:
    state = start
    for signal in inputs:
        after = step(state, signal)
        if after is None:
            continue
        assert not state.terminal, f"{state} moved to {after} on {signal}"
        assert after.rank > state.rank, f"{state} -> {after} on {signal} is not forward"
        state = after
    assert run(start, inputs) is state


@given(signals)
def test_from_issued_the_end_state_is_the_strongest_signal(inputs: list[Signal]) -> None:
    """Whatever order receipts and replies arrive in, the furthest one wins,
    except that the first final word (done or failed) is never overturned."""
    finals = {Signal.DONE: OrderState.DONE, Signal.FAILED: OrderState.FAILED,
              Signal.CANCELLED: OrderState.CANCELLED}
    final = next((s for s in inputs if s in finals), None)
    end = run(OrderState.ISSUED, inputs)
    if final is not None:
        assert end is finals[final]
        return
    expected = OrderState.ISSUED
    for signal, state in ((Signal.WRITTEN, OrderState.DELIVERED),
                          (Signal.DELIVERED, OrderState.DELIVERED),
                          (Signal.ACKNOWLEDGED, OrderState.ACKNOWLEDGED),
                          (Signal.STARTED, OrderState.IN_PROGRESS)):
        if signal in inputs and state.rank > expected.rank:
            expected = state
    assert end is expected


def test_every_open_state_can_finish() -> None:
    for state in OrderState:
        if not state.terminal:
            assert TABLE[(state, Signal.DONE)] is OrderState.DONE
            assert TABLE[(state, Signal.FAILED)] is OrderState.FAILED
            assert TABLE[(state, Signal.CANCELLED)] is OrderState.CANCELLED


def test_receipts_out_of_order_are_ignored() -> None:
    assert step(OrderState.ACKNOWLEDGED, Signal.DELIVERED) is None
    assert step(OrderState.DONE, Signal.STARTED) is None
    assert step(OrderState.FAILED, Signal.DONE) is None
    assert step(OrderState.DELIVERED, Signal.WRITTEN) is None
