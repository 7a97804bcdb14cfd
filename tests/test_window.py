"""Prime-learning-window rules (inforeg.window) on hand-made trace sequences."""
from __future__ import annotations

import math

import pytest

from inforeg.window import epoch_pattern, epoch_range, epochs_on, official_window, paper_window, window_state


@pytest.mark.parametrize("traces", [[], [3.0]])
def test_paper_window_closed_without_two_traces(traces):
    """Epochs 0 and 1 (fewer than two traces) are never open, and the statistic is NaN."""
    is_open, r = paper_window(traces, K=0.04)
    assert is_open is False
    assert math.isnan(r)


def test_paper_window_closed_before_min_epoch():
    """A steeply rising trace still gives a closed window before min_epoch."""
    assert paper_window([1.0, 10.0], K=0.04, min_epoch=3)[0] is False
    assert paper_window([1.0, 1.0, 10.0], K=0.04, min_epoch=3) == (True, 0.9)


def test_paper_window_statistic_uses_last_two_epochs():
    """r = (T[t-1] - T[t-2]) / T[t-1], from the last two traces only."""
    assert paper_window([1.0, 2.0], K=0.04) == (True, 0.5)
    assert paper_window([100.0, 4.0, 5.0], K=0.04) == (True, pytest.approx(0.2))


def test_paper_window_threshold_is_strict():
    """r equal to K keeps the window closed; just above K opens it (exact binary fractions)."""
    assert paper_window([0.75, 1.0], K=0.25) == (False, 0.25)
    assert paper_window([0.75, 1.0], K=0.2499)[0] is True


def test_paper_window_falling_trace_closes():
    """A falling trace gives a negative r and a closed window."""
    is_open, r = paper_window([2.0, 1.0], K=0.04)
    assert is_open is False
    assert r == -1.0


def test_paper_window_closed_on_zero_trace():
    """A zero latest trace cannot be divided by: the window is closed."""
    assert paper_window([1.0, 0.0], K=0.04)[0] is False


def test_official_window_epoch0_is_open_with_k_one():
    """No traces yet: the padded moving average is 0 and k = 1 (open at the default threshold 0.05)."""
    assert official_window([]) == (True, 1.0)
    assert official_window([], threshold=1.0) == (False, 1.0)  # strictly greater


def test_official_window_hand_computed_k():
    """Traces [1, 2, 4], span 10: ten zeros padded, k = (7/10 - 3/10) / (7/10) = 4/7."""
    is_open, k = official_window([1.0, 2.0, 4.0], threshold=0.05, span=10)
    assert k == pytest.approx((7 / 10 - 3 / 10) / (7 / 10), rel=1e-12)
    assert is_open is True
    # one trace: previous mean is all padding, so k = 1 whatever the value
    assert official_window([5.0])[1] == pytest.approx(1.0)


def test_official_window_span_and_long_sequences():
    """Past the padding: span 3 on [1, 2, 4, 8] gives (14/3 - 7/3) / (14/3) = 1/2; 15 epochs 1..15 with span 10
    give (10.5 - 9.5) / 10.5."""
    assert official_window([1.0, 2.0, 4.0, 8.0], span=3)[1] == pytest.approx(0.5, rel=1e-12)
    assert official_window([float(i) for i in range(1, 16)], span=10)[1] == pytest.approx(1 / 10.5, rel=1e-12)


def test_official_window_closes_on_flat_trace_after_span():
    """A constant trace keeps k > 0 while zeros are in the average, then k = 0 once they have left it."""
    assert official_window([5.0] * 3) == (True, pytest.approx(1 / 3))  # (15/10 - 10/10) / (15/10)
    assert official_window([5.0] * 10)[0] is True  # (50 - 45) / 50 = 0.1
    assert official_window([5.0] * 11) == (False, 0.0)


def test_official_window_threshold_is_strict():
    """k equal to the threshold keeps the window closed."""
    assert official_window([5.0] * 10, threshold=0.1) == (False, pytest.approx(0.1))
    assert official_window([4.0] * 4, threshold=0.25, span=4) == (False, 0.25)


def test_window_state_official_one_verdict_from_first_modality():
    """rule='official': every modality gets the verdict of the first modality's trace."""
    traces = {"A": [1.0, 2.0, 4.0], "B": [4.0] * 3}
    state = window_state("official", traces, ("A", "B"), K=0.04, min_epoch=0, threshold=0.05, span=2,
                         watch=None)
    expected = official_window(traces["A"], 0.05, 2)
    assert expected[0] is True and official_window(traces["B"], 0.05, 2)[0] is False
    assert state == {"A": expected, "B": expected}


def test_window_state_official_watch_other_modality():
    """rule='official' with watch='B': all modalities follow B's trace; an unknown watch raises."""
    traces = {"A": [1.0, 2.0, 4.0], "B": [4.0] * 3, "C": [1.0, 1.0, 9.0]}
    state = window_state("official", traces, ("A", "B", "C"), 0.04, 0, 0.05, 2, watch="B")
    expected = official_window(traces["B"], 0.05, 2)
    assert expected[0] is False
    assert state == {m: expected for m in "ABC"}
    with pytest.raises(ValueError, match="watch"):
        window_state("official", traces, ("A", "B", "C"), 0.04, 0, 0.05, 2, watch="Z")


def test_window_state_official_honours_min_epoch():
    """rule='official' before min_epoch: closed for all, the statistic still reported."""
    traces = {"A": [1.0], "B": [1.0]}
    state = window_state("official", traces, ("A", "B"), 0.04, min_epoch=2, threshold=0.05, span=10, watch=None)
    assert state == {"A": (False, 1.0), "B": (False, 1.0)}
    traces = {"A": [1.0, 2.0], "B": [1.0, 2.0]}
    state = window_state("official", traces, ("A", "B"), 0.04, min_epoch=2, threshold=0.05, span=10, watch=None)
    assert state["A"][0] is True and state["B"][0] is True


def test_window_state_paper_per_modality():
    """rule='paper': each modality is judged on its own trace."""
    traces = {"A": [1.0, 2.0], "B": [2.0, 1.0]}
    state = window_state("paper", traces, ("A", "B"), K=0.04, min_epoch=2, threshold=0.05, span=10, watch=None)
    assert state == {"A": (True, 0.5), "B": (False, -1.0)}


def test_window_state_unknown_rule_raises():
    """An unknown rule raises a ValueError naming the known ones."""
    with pytest.raises(ValueError, match="paper, official"):
        window_state("median", {"A": []}, ("A",), 0.04, 2, 0.05, 10, None)


def _history(windows: str, fracs: list[float]) -> list[dict]:
    return [{"epoch": e, "window": {"a": w == "o"}, "reg_frac": {"a": f}} for e, (w, f) in enumerate(zip(windows, fracs))]


def test_epochs_on_range_and_pattern_read_a_history():
    h = _history(".oo.o.", [0.0, 0.0, 0.75, 0.25, 0.5, 0.0])
    assert epochs_on(h, "window", "a") == [1, 2, 4]
    assert epochs_on(h, "reg_frac", "a") == [2, 3, 4]
    assert epoch_range(h, "window", "a") == "1-4" and epoch_range(h, "reg_frac", "a") == "2-4"
    assert epoch_pattern(h, "window", "a") == ".oo.o."
    assert epoch_pattern(h, "reg_frac", "a") == "..#+#."
    never = _history("...", [0.0, 0.0, 0.0])
    assert epochs_on(never, "window", "a") == [] and epoch_range(never, "reg_frac", "a") == "none"


@pytest.mark.parametrize("fn", [epochs_on, epoch_range, epoch_pattern])
def test_history_readers_name_an_unknown_key(fn):
    with pytest.raises(ValueError, match="'window' or 'reg_frac', got 'alpha'"):
        fn(_history("o", [1.0]), "alpha", "a")
