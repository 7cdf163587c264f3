import pytest
import torch

from ffcore.data.jitter import all_shifts, random_shifts, shift_images, shifts


def test_two_pixels_each_way_are_exactly_the_25_shifts():
    assert len(shifts(2)) == 25 and len(set(shifts(2))) == 25
    assert set(shifts(2)) == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert shifts(0) == [(0, 0)]
    with pytest.raises(ValueError, match="max_shift"):
        shifts(-1)


def test_a_shift_moves_every_pixel_and_fills_the_border_with_zeros():
    image = torch.arange(1, 26, dtype=torch.float32).reshape(1, 25)  # a 5 x 5 image, no zero pixel
    moved = shift_images(image, (5, 5), 1, -2).reshape(5, 5)  # one down, two left
    original = image.reshape(5, 5)
    assert torch.equal(moved[1:, :3], original[:4, 2:])
    assert (moved[0] == 0).all() and (moved[:, 3:] == 0).all()
    variants = all_shifts(image, (5, 5), 2)
    assert variants.shape == (25, 1, 25)
    assert len({tuple(v.flatten().tolist()) for v in variants}) == 25  # 25 different images
    assert torch.equal(variants[12], image)  # the middle shift is (0, 0)


def test_random_shifts_draw_from_those_shifts_per_image():
    image = torch.rand(1, 64)
    x = image.repeat(400, 1)
    out = random_shifts(x, (8, 8), 2, torch.Generator().manual_seed(0))
    allowed = {tuple(v.flatten().tolist()) for v in all_shifts(image, (8, 8), 2)}
    seen = {tuple(row.tolist()) for row in out}
    assert seen <= allowed and len(seen) == 25  # all 25 turn up among 400 draws
    assert random_shifts(x, (8, 8), 0) is x
