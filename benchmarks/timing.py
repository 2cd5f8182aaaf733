"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls: robust to one slow run."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def convolution_seconds(model: torch.nn.Module, x: torch.Tensor, *, backward: bool,
                        repeats: int = 3) -> tuple[float, float]:
    """Seconds the model's 3D convolutions alone take on ``x``, and their share at full res.

    Each convolution is timed on its own, on a random input of the shape it sees in the model
    (channels-last, as the package runs them on the CPU), forward or forward + backward, and the
    times are summed: a lower bound of the model's time whatever is done about the rest (batch
    norm, activations, pooling, copies). Returns ``(total, full_resolution)`` where the second
    part is the time of the convolutions at the input's resolution (the first block).
    """
    import torch

    shapes: list[tuple[torch.nn.Conv3d, torch.Size]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape)))
             for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    with torch.no_grad():
        model(x[:1])
    for hook in hooks:
        hook.remove()
    total = full = 0.0
    for conv, shape in shapes:
        layer = torch.nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                padding=conv.padding, bias=conv.bias is not None, groups=conv.groups)
        layer = layer.to(memory_format=torch.channels_last_3d)
        inp = torch.rand(len(x), *shape[1:]).contiguous(memory_format=torch.channels_last_3d)
        inp.requires_grad_(backward and conv.in_channels > conv.groups)  # the raw input needs no gradient

        def run() -> None:
            if backward:  # a gradient in the output's layout (a broadcast one is much slower)
                out = layer(inp)  # noqa: B023 (called at once, inside the loop)
                out.backward(torch.ones_like(out))
            else:
                with torch.inference_mode():
                    layer(inp)  # noqa: B023 (called at once, inside the loop)

        run()
        seconds = median_seconds(run, repeats)
        total += seconds
        if shape[-1] == x.shape[-1]:
            full += seconds
    return total, full
