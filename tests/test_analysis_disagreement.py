"""kdray.analysis.disagreement: eq. 7 matrices on a hand example (no Ray)."""

from __future__ import annotations

import numpy as np

from kdray.analysis.disagreement import disagreement_counts, mean_disagreement, to_dense


def test_disagreement_matrix_by_hand():
    teacher = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    student = np.array([0, 1, 1, 0, 2, 0, 1, 1])
    # disagreements (teacher -> student): 0->1 twice, 1->0, 2->0, 2->1
    d = to_dense(mean_disagreement([disagreement_counts(teacher, student)]), np.arange(3))
    np.testing.assert_array_equal(d, [[0, 2, 0], [1, 0, 0], [1, 1, 0]])


def test_average_over_seeds_counts_missing_cells_as_zero():
    s0 = disagreement_counts(np.array([0, 1, 2]), np.array([1, 1, 2]))  # 0->1
    s1 = disagreement_counts(np.array([0, 1, 2]), np.array([2, 0, 2]))  # 0->2, 1->0
    m = mean_disagreement([s0, s1])
    assert set(m.columns) == {"teacher_pred", "student_pred", "mean_count", "n_seeds"}
    got = {(int(i), int(j)): v for i, j, v in zip(m.teacher_pred, m.student_pred, m.mean_count)}
    assert got == {(0, 1): 0.5, (0, 2): 0.5, (1, 0): 0.5}
    assert set(m["n_seeds"]) == {2}


def test_identical_predictions_have_no_disagreement():
    d = disagreement_counts(np.array([3, 1, 4]), np.array([3, 1, 4]))
    assert len(d) == 0
    assert to_dense(mean_disagreement([d]), np.arange(5)).sum() == 0
