import pytest
import torch

from ffcore.metrics import confusion_matrix, error_rate, macro_f1


def test_error_and_macro_f1_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    assert error_rate(pred, target) == pytest.approx(2 / 6)
    assert confusion_matrix(pred, target, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 per class: c0 = 2*1/(2+1+1) = 0.5, c1 = 4/(4+1) = 0.8, c2 = 2/(2+1) = 2/3
    assert macro_f1(pred, target, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_perfect_predictions_and_shape_errors():
    y = torch.tensor([0, 1, 2])
    assert error_rate(y, y) == 0.0 and macro_f1(y, y, 4) == 1.0
    with pytest.raises(ValueError, match="shape"):
        error_rate(y, y[:2])
