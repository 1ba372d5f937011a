import numpy as np

from ffm_private.training_data import last_window, prefix_windows


def test_prefix_windows_are_right_aligned_and_exclude_the_target():
    w = prefix_windows(np.array([5, 6, 7, 8]), 3, pad=99)
    assert w.tolist() == [[99, 99, 99], [99, 99, 5], [99, 5, 6], [5, 6, 7]]


def test_last_window():
    assert last_window(np.array([1, 2, 3, 4]), 3, pad=0).tolist() == [2, 3, 4]
    assert last_window(np.array([4]), 3, pad=9).tolist() == [9, 9, 4]
