"""The Deep-PRL network: one 3D branch per image contrast, with a mask attention branch.

Input: patches ``(n, c, s, s, s)`` whose channels are the network's ``contrasts`` and the
dilated lesion mask (:attr:`napari_deep_prl.data.patches.PatchConfig.channels`: the research
protocol's MP2RAGE, phase, mask; a clinical site's e.g. T1w, FLAIR, phase, mask). Output: one
logit per patch (PRL vs not).

Each branch (the mask's, and one per contrast, named ``<contrast>_branch``) is a stack of
blocks; a block is ``convs_per_block`` 3×3×3 convolutions (batch norm, ReLU) followed by 2×
max-pooling. The *attention branch* of the paper is the fusion of the mask branch's first-block
features into every image branch before its second block, so the deeper image layers see where
the lesion (and its rim) is:

- ``fusion="concat"`` (the paper): mask features are concatenated to the image features;
- ``fusion="none"``: no fusion (the ablation);
- ``fusion="gate"``: the mask features, through a 1×1×1 convolution and a sigmoid, multiply
  the image features channel-wise (a multiplicative gating variant).

Each branch ends in a 1×1×1 reduction to ``reduction`` channels; the flattened outputs are
concatenated and go through fully connected layers ``fc`` to one logit. The research protocol's
contrasts (MP2RAGE, phase) give the paper's three branches, with the same parameters in the same
order as before models took other contrasts, so their checkpoints load and score unchanged.

Presets (patch 28³, MP2RAGE and phase, forward cost; each further contrast adds a branch; run
``python -m napari_deep_prl.model.network`` to print them):

- ``paper``: widths 32/64/128, reduction 32, fc 128→32, about 8.8 GFLOP per patch: a GPU model.
- ``default``: widths 4/12/32, reduction 8, fc 32→8, about 0.25 GFLOP per patch: the same
  structure sized for CPU training (≈ 35× cheaper). The first block, at full resolution, is
  kept narrow because on a CPU it is the slowest per FLOP; width goes to the coarse blocks.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.contrasts import DEFAULT_MODEL_CONTRASTS, model_contrasts

FUSIONS = ("concat", "none", "gate")
#: Index of the susceptibility channel in a patch: the last image channel, before the mask
#: (:func:`~napari_deep_prl.data.contrasts.model_contrasts` puts it there).
SUSCEPTIBILITY_CHANNEL = -2


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; stored in every checkpoint."""

    widths: tuple[int, ...] = (4, 12, 32)
    convs_per_block: int = 2
    fusion: str = "concat"
    reduction: int = 8
    fc: tuple[int, ...] = (32, 8)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "fc", tuple(int(f) for f in self.fc))
        if self.fusion not in FUSIONS:
            raise InputError(f"fusion {self.fusion!r} is unknown; use one of {', '.join(FUSIONS)}")
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise InputError(f"widths {self.widths}: need at least two positive block widths "
                             "(the mask fusion enters before the second block)")
        if self.convs_per_block < 1 or self.reduction < 1 or not 0 <= self.dropout < 1:
            raise InputError("convs_per_block and reduction must be >= 1 and dropout in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


PRESETS: dict[str, ModelConfig] = {
    "default": ModelConfig(),
    "paper": ModelConfig(widths=(32, 64, 128), reduction=32, fc=(128, 32)),
}


def model_config(preset: str = "default", **overrides: Any) -> ModelConfig:
    """A preset's configuration with some fields replaced (e.g. ``fusion="none"``)."""
    if preset not in PRESETS:
        raise InputError(f"model preset {preset!r} is unknown; use one of {', '.join(PRESETS)}")
    return replace(PRESETS[preset], **overrides)


class BatchNorm3d(nn.BatchNorm3d):
    """Batch norm computed on a contiguous (NCDHW) copy of channels-last input.

    On the CPU the convolutions run channels-last (oneDNN's fast layout for 3D), but PyTorch's
    channels-last 3D batch norm is several times slower than the contiguous one at these widths
    (about 1.5 s vs 0.3 s of a 3.8 s default-preset training step): converting around it makes
    training about 1.35 × faster. Elsewhere ``contiguous()`` is a no-op.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous())


class _ToChannelsLast(torch.autograd.Function):
    """Channels-last copy whose backward hands the gradient back contiguous."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class Conv3d(nn.Conv3d):
    """A convolution that takes its input channels-last, and gives gradients back contiguous.

    A channels-last model (the CPU, see :class:`BatchNorm3d`) copies each convolution's
    contiguous input to channels-last anyway; doing it here also puts the input gradient back
    in the layout the ReLU and batch norm before it saved theirs in. Left channels-last, it meets
    their contiguous tensors in a mixed-layout backward pass that PyTorch runs about 25 × slower
    than a same-layout one (ReLU's at full resolution: 7.8 ms against 0.3 ms per branch and
    batch); training about 10 % faster. Elsewhere (a contiguous model, e.g. on a GPU) a plain
    convolution, as are those whose weights look alike in both layouts (a single input
    channel; 1×1×1 kernels). The parameters are nn.Conv3d's, so checkpoints load either way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        # contiguous first: under vmap (stacked training) only that layout may be queried
        if not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last_3d):
            x = _ToChannelsLast.apply(x)
        return super().forward(x)


class PairwiseMaxPool3d(nn.Module):
    """2× max-pooling as three pairwise maxima, one axis at a time; for inference copies.

    The same values as ``nn.MaxPool3d(2)`` (odd sizes are floored alike, NaN propagates) about
    5 × faster on a CPU (1.3 against 6.3 ms for 32 patches of 4 × 28³ in bfloat16), as PyTorch's
    max-pooling computes the indices its backward pass needs even without gradients. Without
    them a backward pass here is slower than the native one, so training keeps ``nn.MaxPool3d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dim in (2, 3, 4):
            pairs = x.narrow(dim, 0, x.shape[dim] // 2 * 2).unflatten(dim, (-1, 2))
            x = torch.maximum(pairs.select(dim + 1, 0), pairs.select(dim + 1, 1))
        return x


def _block(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` × (convolution, batch norm, ReLU), then 2× max-pooling.

    The last ReLU runs after the pooling: ReLU and max commute, so the block computes the same
    function (and gradients), with the last ReLU and its backward pass on an eighth of the
    voxels (training about 5 % faster). The parameter-free layers swap places only, so
    checkpoints load either way.
    """
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [Conv3d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                   BatchNorm3d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1], nn.MaxPool3d(2), layers[-1])


class _Branch(nn.Module):
    """One input's blocks and its 1×1×1 reduction; ``fused`` extra channels enter block 2."""

    def __init__(self, config: ModelConfig, fused: int) -> None:
        super().__init__()
        w, n = config.widths, config.convs_per_block
        inputs = [1, w[0] + fused, *w[1:-1]]
        self.blocks = nn.ModuleList(_block(c_in, c_out, n) for c_in, c_out in zip(inputs, w))
        self.reduce = nn.Sequential(Conv3d(w[-1], config.reduction, 1, bias=False),
                                    BatchNorm3d(config.reduction), nn.ReLU(inplace=True))

    def forward(self, first: torch.Tensor, mask_features: torch.Tensor | None = None,
                gate: nn.Module | None = None) -> torch.Tensor:
        """Flattened reduced features from the first block's output (and the mask's)."""
        h = first
        if gate is not None:
            h = h * torch.sigmoid(gate(mask_features))
        elif mask_features is not None:
            h = torch.cat([h, mask_features], dim=1)
        for block in self.blocks[1:]:
            h = block(h)
        return self.reduce(h).flatten(1)


class DeepPRL(nn.Module):
    """Deep-PRL classifier: ``forward(x)`` maps ``(n, c, s, s, s)`` patches to ``(n,)`` logits,
    ``c`` = one channel per contrast, then the mask."""

    def __init__(self, config: ModelConfig = PRESETS["default"], patch_size: int = 28,
                 contrasts: Sequence[str] = DEFAULT_MODEL_CONTRASTS) -> None:
        super().__init__()
        side = patch_size // 2 ** len(config.widths)
        if side < 1:
            raise InputError(f"patch size {patch_size} is too small for {len(config.widths)} "
                             f"pooling blocks; use at least {2 ** len(config.widths)}")
        self.config, self.patch_size = config, patch_size
        self.contrasts = model_contrasts(contrasts, "the network's contrasts")
        fused = config.widths[0] if config.fusion == "concat" else 0
        # Created in this order (mask first), as the seeded initial weights and the checkpoints'
        # parameter names of the three-branch network always were.
        self.mask_branch = _Branch(config, 0)
        for contrast in self.contrasts:
            setattr(self, f"{contrast}_branch", _Branch(config, fused))
        self.gates = (nn.ModuleList(nn.Conv3d(config.widths[0], config.widths[0], 1) for _ in self.contrasts)
                      if config.fusion == "gate" else None)
        sizes = [(len(self.contrasts) + 1) * config.reduction * side ** 3, *config.fc]
        head: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            head += [nn.Dropout(config.dropout), nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.head = nn.Sequential(*head, nn.Dropout(config.dropout), nn.Linear(sizes[-1], 1))
        #: The first blocks as one grouped block, on inference copies only (see below).
        self.grouped_first_blocks: nn.Sequential | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *images, mask = self._first_blocks(x)
        fuse = None if self.config.fusion == "none" else mask
        gates = self.gates if self.gates is not None else (None,) * len(images)
        branches = self._branches()[:-1]
        features = torch.cat([self.mask_branch(mask), *(branch(first, fuse, gate) for branch, first, gate
                                                         in zip(branches, images, gates))], dim=1)
        if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
            # The small head stays in float32: bfloat16's 8-bit mantissa would round close
            # logits together (ties in rankings and in the TTA spread).
            with torch.autocast(x.device.type, enabled=False):
                return self.head(features.float()).squeeze(1)
        return self.head(features).squeeze(1)

    def _first_blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The first-block outputs of each branch, in channel order (the images', the mask's)."""
        if self.grouped_first_blocks is not None:
            return self.grouped_first_blocks(x).split(self.config.widths[0], dim=1)
        return tuple(branch.blocks[0](x[:, i:i + 1]) for i, branch in enumerate(self._branches()))

    def _branches(self) -> tuple[_Branch, ...]:
        """The branches in input-channel order: one per contrast, then the mask's."""
        return (*(getattr(self, f"{contrast}_branch") for contrast in self.contrasts), self.mask_branch)

    def group_first_blocks(self) -> None:
        """Run the first blocks as one convolution per layer over the whole patch.

        Each group of the grouped convolutions sees one input channel and holds that branch's
        weights, so the network computes the same function; at full resolution one grouped
        convolution is cheaper on a CPU than one per branch on single-channel copies of the patch
        (inference about 1.25 × faster). Training keeps the separate blocks: their backward
        pass is the faster one. Batch norms must be folded into the convolutions first
        (:func:`inference_copy` does both).
        """
        blocks = [branch.blocks[0] for branch in self._branches()]
        self.grouped_first_blocks = nn.Sequential(*(_grouped(layers) for layers in zip(*blocks)))


def _grouped(layers: tuple[nn.Module, ...]) -> nn.Module:
    """One layer doing the work of ``layers`` (one per branch) side by side on stacked channels."""
    first = layers[0]
    if isinstance(first, nn.Conv3d):
        conv = nn.Conv3d(first.in_channels * len(layers), first.out_channels * len(layers),
                         first.kernel_size, padding=first.padding, groups=len(layers),
                         bias=first.bias is not None).to(first.weight.device)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([layer.weight for layer in layers]))
            if conv.bias is not None:
                conv.bias.copy_(torch.cat([layer.bias for layer in layers]))
        return conv
    if isinstance(first, (nn.ReLU, nn.Identity, nn.MaxPool3d, PairwiseMaxPool3d)):  # no parameters: shared
        return first
    raise InputError(f"cannot group a {type(first).__name__} layer; fold batch norms into the "
                     "convolutions first (inference_copy)")


def inference_copy(model: DeepPRL, device: torch.device) -> DeepPRL:
    """An eval-mode copy on ``device``, the same function computed faster.

    Each batch norm is folded into the preceding convolution (one pass less over every feature
    map), max-pooling runs without indices (:class:`PairwiseMaxPool3d`) and the branches'
    first blocks run as one grouped block (:meth:`DeepPRL.group_first_blocks`).
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv3d) and isinstance(module[i + 1], nn.BatchNorm3d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
            for i, layer in enumerate(module):
                if isinstance(layer, nn.MaxPool3d):  # every pooling of the model is 2×
                    module[i] = PairwiseMaxPool3d()
    fused.group_first_blocks()
    fused.to(device)
    return fused.to(memory_format=torch.channels_last_3d) if device.type == "cpu" else fused


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def flops_per_patch(config: ModelConfig, patch_size: int = 28, *, training: bool = False,
                    contrasts: Sequence[str] = DEFAULT_MODEL_CONTRASTS) -> int:
    """FLOPs of one patch through the convolutions and linear layers (2 per multiply-add).

    ``training=True`` adds the backward pass: weight gradients cost as much as the forward
    pass; input gradients too, except for the layers fed by the raw input, which need none.
    Batch norm, activations and pooling (memory-bound, a few % of the FLOPs) are not counted.
    """
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = DeepPRL(config, patch_size, contrasts)
    total = 0

    def count(layer: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        weight = layer.weight
        macs = output[0].numel() * weight[0].numel() if isinstance(layer, nn.Conv3d) else weight.numel()
        factor = (3 if inputs[0].requires_grad else 2) if training else 1
        total += 2 * macs * factor

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv3d, nn.Linear))]
    model.eval()  # autograd stays on: it tells which layers' inputs need gradients
    model(torch.zeros(1, len(model.contrasts) + 1, patch_size, patch_size, patch_size, device="meta"))
    for hook in hooks:
        hook.remove()
    return total


if __name__ == "__main__":  # pragma: no cover - prints the preset table for the docs
    for name, cfg in PRESETS.items():
        print(f"{name}: {count_parameters(DeepPRL(cfg)):,} parameters, "
              f"{flops_per_patch(cfg) / 1e9:.3f} GFLOP forward, "
              f"{flops_per_patch(cfg, training=True) / 1e9:.3f} GFLOP training per 28³ patch")
