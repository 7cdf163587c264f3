import torch

from ffcore.negatives import (
    all_label_inputs,
    embed_label,
    hybrid_images,
    hybrid_masks,
    wrong_labels_hard,
    wrong_labels_uniform,
)


def test_embed_label_overwrites_the_first_pixels_only():
    x = torch.rand(3, 20)
    out = embed_label(x, torch.tensor([0, 4, 9]), 10)
    assert out[:, :10].tolist()[1] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert out[:, :10].sum(1).tolist() == [1, 1, 1]
    assert torch.equal(out[:, 10:], x[:, 10:])
    neutral = embed_label(x, None, 10)
    assert torch.allclose(neutral[:, :10], torch.full((3, 10), 0.1))
    assert torch.equal(x, x.clone())  # the input itself is untouched


def test_all_label_inputs_is_label_major():
    x = torch.rand(2, 12)
    out = all_label_inputs(x, 3)
    assert out.shape == (6, 12)
    assert out[:, :3].argmax(1).tolist() == [0, 0, 1, 1, 2, 2]


def test_uniform_wrong_labels_are_wrong_and_cover_every_other_class():
    g = torch.Generator().manual_seed(0)
    labels = torch.full((5000,), 3)
    wrong = wrong_labels_uniform(labels, 10, g)
    assert (wrong != 3).all()
    assert set(wrong.tolist()) == set(range(10)) - {3}


def test_hard_wrong_labels_follow_the_models_probabilities_without_the_true_class():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.6, 0.3, 0.1, 0.0]]).repeat(20000, 1)
    labels = torch.zeros(20000, dtype=torch.long)
    wrong = wrong_labels_hard(probs, labels, g)
    assert (wrong != 0).all()
    freq = torch.bincount(wrong, minlength=4).float() / len(wrong)
    assert abs(freq[1].item() - 0.75) < 0.02 and abs(freq[2].item() - 0.25) < 0.02
    assert freq[3].item() < 0.001
    # a model certain of the truth still yields a wrong label
    certain = wrong_labels_hard(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]), g)
    assert certain.item() in (1, 2)


def _neighbour_agreement(masks):
    return 0.5 * ((masks[:, 1:, :] == masks[:, :-1, :]).float().mean() + (masks[:, :, 1:] == masks[:, :, :-1]).float().mean())


def test_hybrid_masks_have_large_regions_of_ones_and_zeros():
    g = torch.Generator().manual_seed(0)
    masks = hybrid_masks(500, (28, 28), blur_steps=6, generator=g)
    assert masks.shape == (500, 28, 28)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert 0.4 < masks.mean().item() < 0.6  # thresholded at 0.5 of a symmetric blur: balanced
    bits = torch.randint(0, 2, (500, 28, 28), generator=g).float()
    assert abs(_neighbour_agreement(bits).item() - 0.5) < 0.01  # random bits: no long-range structure
    assert _neighbour_agreement(masks).item() > 0.85  # blurred: large regions
    assert _neighbour_agreement(hybrid_masks(500, (28, 28), 10, g)) > _neighbour_agreement(hybrid_masks(500, (28, 28), 2, g))
    assert not torch.equal(masks[0], masks[1])


def test_hybrid_images_mix_two_different_images():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(4, dtype=torch.float32)[:, None].repeat(1, 36)  # image i is constant i
    hybrid = hybrid_images(x, (6, 6), generator=g)
    for i in range(4):
        values = set(hybrid[i].tolist())
        assert values <= set(range(4))
        assert values - {float(i)}, "every hybrid takes pixels from a different image"
        assert len(values) <= 2
