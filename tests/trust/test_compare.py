"""The measure two answers are compared with: honest divergence passes, cheats do not."""

from __future__ import annotations

from app.trust.compare import judge

HONEST = ("Our store opens at nine in the morning on weekdays and at ten on Saturdays and "
          "Sundays we stay closed so the staff can rest; call us for urgent repairs").split()


def test_the_same_answer_agrees() -> None:
    assert judge(HONEST, list(HONEST), 32, 0.8).agree


def test_a_late_divergence_of_greedy_decoding_still_agrees() -> None:
    drifted = HONEST[:24] + "and we are closed on Sundays, phone us if it is urgent".split()
    verdict = judge(HONEST, drifted, 16, 0.8)
    assert verdict.prefix_equal and verdict.agree


def test_truncation_canned_text_and_another_model_disagree() -> None:
    cut = HONEST[: int(len(HONEST) * 0.3)]
    assert not judge(HONEST, cut, 32, 0.8).agree  # the prefix is equal, but it stops short
    canned = "Thank you for your message, we will get back to you soon".split()
    assert not judge(HONEST, canned, 32, 0.8).agree
    other = ("The shop hours are 9 to 6 Monday through Friday, 10 to 4 Saturday, "
             "closed Sunday").split()
    assert not judge(HONEST, other, 32, 0.8).agree
