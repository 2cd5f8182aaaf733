import copy

import pytest
import torch
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.model.losses import focal_loss
from napari_deep_prl.model.network import (
    FUSIONS,
    PRESETS,
    DeepPRL,
    ModelConfig,
    PairwiseMaxPool3d,
    _block,
    count_parameters,
    flops_per_patch,
    inference_copy,
    model_config,
)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_gives_one_logit_per_patch(fusion):
    model = DeepPRL(model_config("default", widths=(2, 4), fusion=fusion), SIZE)
    assert model(torch.rand(3, 3, SIZE, SIZE, SIZE)).shape == (3,)


def test_presets_meet_their_flop_targets():
    default, paper = flops_per_patch(PRESETS["default"]), flops_per_patch(PRESETS["paper"])
    assert default <= 0.3e9
    assert 7e9 <= paper <= 10e9  # "about 8 GFLOP per patch"
    assert 2 * default < flops_per_patch(PRESETS["default"], training=True) < 3 * default
    assert count_parameters(DeepPRL(PRESETS["paper"])) > count_parameters(DeepPRL(PRESETS["default"]))


def test_concat_fusion_feeds_mask_features_to_the_image_branches():
    concat, none = DeepPRL(TINY, SIZE), DeepPRL(model_config("default", widths=(2, 4), reduction=2,
                                                              fc=(8,), fusion="none"), SIZE)
    assert concat.phase_branch.blocks[1][0].in_channels == 4
    assert none.phase_branch.blocks[1][0].in_channels == 2


@pytest.mark.parametrize("fusion", FUSIONS)
def test_the_inference_copy_computes_the_same_logits(fusion):
    """Batch norms folded into the convolutions, the three first blocks run as one grouped block."""
    model = DeepPRL(model_config("default", widths=(2, 4), reduction=2, fc=(8,), fusion=fusion), SIZE)
    for _ in range(3):  # batch-norm statistics away from their initial 0 / 1
        model(torch.rand(4, 3, SIZE, SIZE, SIZE) * 3 - 1)
    model.eval()
    fast = inference_copy(model, torch.device("cpu"))
    assert fast.grouped_first_blocks is not None and model.grouped_first_blocks is None
    assert fast.grouped_first_blocks[0].groups == 3
    assert not any(isinstance(m, torch.nn.MaxPool3d) for m in fast.modules())
    x = torch.rand(5, 3, SIZE, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
        grouped = fast.grouped_first_blocks(x).split(2, dim=1)
        for channel, branch in enumerate((fast.mp2rage_branch, fast.phase_branch, fast.mask_branch)):
            assert torch.allclose(grouped[channel], branch.blocks[0](x[:, channel:channel + 1]), atol=1e-5)
    with pytest.raises(InputError, match="fold batch norms"):
        DeepPRL(TINY, SIZE).group_first_blocks()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pairwise_max_pooling_equals_max_pool3d_on_odd_sizes_and_nan(layout, dtype):
    x = torch.randn(2, 3, 7, 8, 5).to(dtype).contiguous(memory_format=layout)
    x[0, 1, 2, 3, 3] = float("nan")
    x[1, 0, :2, :2, :2] = 1.0  # a window of ties
    pooled = PairwiseMaxPool3d()(x)
    assert torch.allclose(pooled, torch.nn.MaxPool3d(2)(x), rtol=0, atol=0, equal_nan=True)
    assert pooled.shape == (2, 3, 3, 4, 2) and pooled[0, 1, 1, 1, 1].isnan()


def test_config_round_trip_and_errors():
    assert ModelConfig.from_dict(PRESETS["paper"].to_dict()) == PRESETS["paper"]
    with pytest.raises(InputError, match="fusion"):
        ModelConfig(fusion="add")
    with pytest.raises(InputError, match="preset"):
        model_config("huge")
    with pytest.raises(InputError, match="too small"):
        DeepPRL(PRESETS["default"], patch_size=4)


def test_focal_loss_weights_positives_with_alpha():
    logits, pos, neg = torch.zeros(4), torch.ones(4), torch.zeros(4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, pos)
    assert torch.isclose(focal_loss(logits, pos, gamma=0, alpha=0.2), 0.2 * bce)
    assert torch.isclose(focal_loss(logits, neg, gamma=0, alpha=0.2), 0.8 * bce)
    # gamma shrinks the loss of confident, correct predictions far more than of wrong ones
    confident = torch.full((4,), 4.0)
    assert focal_loss(confident, pos) < 1e-3 * focal_loss(-confident, pos)


def test_blocks_pool_before_their_last_relu_with_the_same_outputs_and_gradients():
    block = _block(2, 4, 2).train()
    assert isinstance(block[-2], torch.nn.MaxPool3d) and isinstance(block[-1], torch.nn.ReLU)
    as_drawn = torch.nn.Sequential(*block[:-2], block[-1], block[-2])  # ReLU, then pooling
    x = torch.randn(3, 2, 8, 8, 8)
    grads = []
    for net in (block, as_drawn):
        inp = x.clone().requires_grad_(True)
        out = net(inp)
        out.square().sum().backward()
        grads.append((out.detach(), inp.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_a_channels_last_model_trains_as_a_contiguous_one_handing_back_contiguous_gradients():
    torch.manual_seed(0)
    model = DeepPRL(TINY, SIZE).train()
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    x = torch.randn(4, 3, SIZE, SIZE, SIZE)
    layouts = []  # of the gradients the convolutions hand back to the ReLU / batch norm before them
    for net, layout in ((model, torch.contiguous_format), (channels_last, torch.channels_last_3d)):
        hooks = [m.register_full_backward_hook(lambda m, g_in, g_out: layouts.append(g_in[0].is_contiguous()))
                 for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
        net(x.contiguous(memory_format=layout).requires_grad_(True)).square().sum().backward()
        for hook in hooks:
            hook.remove()
    assert len(layouts) > 10 and all(layouts)
    for (name, a), b in zip(model.named_parameters(), channels_last.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5), name
