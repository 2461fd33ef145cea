import torch

from breastcad.training.augment import BatchAugment


def test_augmentations_keep_shape_range_and_are_seeded():
    x = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8)
    for kind in ("none", "histo", "ultrasound", "mammo"):
        a, b = BatchAugment(kind, seed=3)(x), BatchAugment(kind, seed=3)(x)
        assert a.shape == (6, 3, 16, 16) and a.dtype == torch.float32
        assert a.min() >= 0 and a.max() <= 1 and torch.equal(a, b)
    assert torch.allclose(BatchAugment("none")(x), x.permute(0, 3, 1, 2).float() / 255)


def test_histopathology_flips_and_rotations_only_rearrange_pixels():
    x = torch.randint(0, 256, (8, 12, 12, 3), dtype=torch.uint8)
    aug = BatchAugment("histo", seed=0)
    aug._jitter = lambda t, amount, colour=False: t  # geometry only
    out = aug(x)
    for i in range(8):
        before = (x[i].permute(2, 0, 1).float() / 255).flatten().sort().values
        assert torch.allclose(out[i].flatten().sort().values, before)
    assert not torch.allclose(out, x.permute(0, 3, 1, 2).float() / 255)
