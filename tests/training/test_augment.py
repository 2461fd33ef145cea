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


def test_lesion_masks_move_with_their_images():
    """A bright square and its mask: after every kind of augmentation the mask still covers
    the square; the masks do not change the images' random draws."""
    x = torch.full((8, 32, 32, 1), 20, dtype=torch.uint8)
    masks = torch.zeros((8, 32, 32), dtype=torch.uint8)
    for i in range(8):
        r, c = 3 * i % 16 + 2, 5 * i % 18 + 1
        x[i, r : r + 12, c : c + 10] = 230
        masks[i, r : r + 12, c : c + 10] = 1
    masks[7] = 255  # an image whose lesion is unknown stays unknown
    for kind in ("histo", "ultrasound", "mammo"):
        out, moved = BatchAugment(kind, seed=1)(x, masks)
        assert torch.equal(out, BatchAugment(kind, seed=1)(x))
        assert moved.dtype == torch.uint8 and moved.shape == masks.shape
        assert (moved[7] == 255).float().mean() > 0.8
        for i in range(7):
            square = out[i, 0] > (out[i, 0].max() + out[i, 0].min()) / 2
            lesion = moved[i] == 1
            iou = (square & lesion).sum() / (square | lesion).sum()
            assert iou > 0.8, (kind, i, float(iou))
