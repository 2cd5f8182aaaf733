import itertools

import torch
from model_support import one_torch_thread  # noqa: F401

from napari_deep_prl.model.augment import AugmentConfig, augment_batch

MP2RAGE, PHASE, MASK = 0, 1, 2  # the research protocol's channels
OFF = dict(p=1.0, flips=False, rot90=False, max_translation=0.0, max_rotation_deg=0.0,
           noise_sigma=0.0, intensity_shift=0.0)


def _batch(n=6, s=6):
    return torch.rand(n, 3, s, s, s, generator=torch.Generator().manual_seed(1))


def test_shapes_kept_input_untouched_and_seeded():
    x = _batch()
    before = x.clone()
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(x, before)
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(1)))


def test_p_zero_is_identity():
    x = _batch()
    assert torch.equal(augment_batch(x, AugmentConfig(p=0.0), torch.Generator()), x)


def test_flips_and_rotations_are_exact_cube_symmetries_of_all_channels():
    x = _batch(n=12)
    out = augment_batch(x, AugmentConfig(**{**OFF, "flips": True, "rot90": True}),
                        torch.Generator().manual_seed(3))
    for i in range(len(x)):
        views = [x[i].permute(0, *perm).flip([d + 1 for d in range(3) if flips[d]])
                 for perm in itertools.permutations((1, 2, 3))
                 for flips in itertools.product((0, 1), repeat=3)]
        assert any(torch.equal(v, out[i]) for v in views)


def test_intensity_changes_touch_only_the_phase():
    x = _batch()
    out = augment_batch(x, AugmentConfig(**{**OFF, "noise_sigma": 0.01, "intensity_shift": 0.1}),
                        torch.Generator().manual_seed(0))
    assert torch.equal(out[:, MP2RAGE], x[:, MP2RAGE]) and torch.equal(out[:, MASK], x[:, MASK])
    change = out[:, PHASE] - x[:, PHASE]
    assert 0 < change.abs().max() < 0.2


def test_small_affine_moves_the_content_slightly():
    x = torch.zeros(4, 3, 12, 12, 12)
    x[:, MASK, 4:8, 4:8, 4:8] = 1
    out = augment_batch(x, AugmentConfig(**{**OFF, "max_translation": 3.0, "max_rotation_deg": 5.0}),
                        torch.Generator().manual_seed(0))
    assert not torch.equal(out, x)
    mass = out[:, MASK].sum(dim=(1, 2, 3))
    assert torch.allclose(mass, torch.full((4,), 64.0), rtol=0.2)  # the lesion stays whole
