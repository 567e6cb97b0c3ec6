"""Answer extraction, agreement (answers and meaning) and tau calibration."""

from __future__ import annotations

import pytest

from nightowl.chat import DevPoint, calibrate_tau, evaluate_tau, extract_answer, measure_agreement
from nightowl.chat.agreement import meaning_agreement


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("First 3 + 4 = 7. The answer is 7.", "7"),
        ("She has $1,250 left.\n#### 1250", "1250"),
        ("Yes, Paris is the capital.", "yes"),
        ("(B) because the others are wrong", "B"),
        ("Marie Curie", "marie curie"),
        ("Final answer: 3.50", "3.5"),
        ("Photosynthesis turns light into chemical energy in plants and algae.", None),
    ],
)
def test_extract_answer(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_answer_agreement_counts_final_answers_not_wording() -> None:
    a = measure_agreement(
        ["2+2 is 4. The answer is 4.", "Adding gives 4, so the answer is 4", "The answer is 5."],
        None,
    )
    assert a.method == "answer"
    assert a.share == pytest.approx(2 / 3)
    assert a.winner == 0


def test_meaning_agreement_with_real_embedder() -> None:
    from nightowl.memory import build_embedder

    emb = build_embedder("all-MiniLM-L6-v2")
    same = [
        "Photosynthesis lets plants turn sunlight into chemical energy.",
        "Plants use photosynthesis to convert light into chemical energy.",
        "The stock market fell sharply on Tuesday after the announcement.",
    ]
    a = meaning_agreement(same, emb, sim=0.7)
    assert a.method == "meaning"
    assert a.share == pytest.approx(2 / 3)
    assert a.winner in (0, 1)
    different = [
        "Photosynthesis lets plants turn sunlight into chemical energy.",
        "The stock market fell sharply on Tuesday after the announcement.",
        "My favourite recipe uses three eggs and a cup of flour.",
    ]
    assert meaning_agreement(different, emb, sim=0.7).share == pytest.approx(1 / 3)


def test_calibrate_tau_reaches_target_with_fewest_escalations() -> None:
    points = [
        DevPoint(share=1.0, student_correct=True),
        DevPoint(share=1.0, student_correct=True),
        DevPoint(share=0.67, student_correct=True),
        DevPoint(share=0.67, student_correct=False),
        DevPoint(share=0.33, student_correct=False),
    ]
    choice = calibrate_tau(points, target_accuracy=0.8)
    # tau=0.67 accepts 4 (one wrong) -> 0.8 with 1 escalation; tau=0.33 gives 0.6.
    assert choice.reached and choice.tau == pytest.approx(0.67)
    assert choice.accuracy == pytest.approx(0.8) and choice.teacher_share == pytest.approx(0.2)
    assert evaluate_tau(points, 1.0) == (1.0, pytest.approx(0.6))
    strict = calibrate_tau(points, target_accuracy=1.0)
    assert strict.tau == pytest.approx(1.0)
    impossible = calibrate_tau(
        [DevPoint(share=1.0, student_correct=False, teacher_correct=False)], 0.5
    )
    assert not impossible.reached
