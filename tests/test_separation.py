import pytest
import torch

from circuitbook.separation import midpoint_separation, sign_separation

LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def test_both_measures_on_constructed_channels():
    h = torch.zeros(8, 5)
    h[:, 0] = torch.tensor([-1.0, -0.5, -0.2, -0.1, 1.0, 1.2, 0.9, 1.1])  # sign flips with the class
    h[:, 1] = -h[:, 0]  # the same, downwards
    h[:, 2] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # no information
    h[:, 3] = torch.tensor([1.0, 1.1, 1.2, 1.1, 2.0, 2.2, 1.9, 2.1])  # always positive, larger for class 1
    sign, mid = sign_separation(h, LABELS), midpoint_separation(h, LABELS)  # channel 4 never changes
    assert sign.shape == mid.shape == (5,)
    assert sign[0] == sign[1] == mid[0] == mid[1] == 1  # a centred, perfect channel: both agree
    assert mid[2] == 0.5 and sign[2] == 0.25  # midpoint 0.5: chance; zero: the 0s count for neither side
    assert mid[3] == 1 and sign[3] == 0.5  # where they differ: a shift without a sign change
    assert sign[4] == mid[4] == 0  # strict sides: a constant channel carries nothing


def test_a_shifted_copy_keeps_its_midpoint_separation_but_not_its_sign_separation():
    torch.manual_seed(0)
    y = torch.randint(0, 2, (200,))
    h = (2 * y - 1).float()[:, None] + 0.8 * torch.randn(200, 3)  # centred at zero, noisy
    for shift in (5.0, -5.0):
        assert torch.allclose(midpoint_separation(h + shift, y), midpoint_separation(h, y))
        assert torch.allclose(sign_separation(h + shift, y), torch.full((3,), 0.5))
    assert (sign_separation(h, y) > 0.75).all()  # centred: the sign separates too
    flipped = midpoint_separation(-h, y)  # orientation does not matter
    assert torch.allclose(flipped, midpoint_separation(h, y))


def test_one_channel_gives_a_scalar():
    v = torch.tensor([-1.0, -2.0, 0.5, -1.0, 1.0, 2.0, 3.0, 4.0])  # one class-0 prompt on the wrong side
    assert float(sign_separation(v, LABELS)) == (3 / 4 + 1) / 2
    assert sign_separation(v, LABELS).shape == ()


def test_the_best_sign_separating_node_is_chosen_and_ties_go_to_the_first():
    from circuitbook.separation import best_sign_separating

    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    values = {
        "shifted": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),  # separates by size, not by sign: 0.5
        "signed": torch.tensor([1.0, 2.0, -0.5, -1.0, -2.0, -3.0]),  # one prompt on the wrong side: 5/6
        "zeros": torch.tensor([0.0, 0.0, 0.0, -1.0, -1.0, -1.0]),  # zeros count for neither side: 0.5
    }
    assert best_sign_separating(values, labels) == ("signed", pytest.approx(5 / 6))
    values["perfect"] = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    values["also_perfect"] = -values["perfect"]
    assert best_sign_separating(values, labels) == ("perfect", 1.0)
    with pytest.raises(ValueError):
        best_sign_separating({}, labels)
