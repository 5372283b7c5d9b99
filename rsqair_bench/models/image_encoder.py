"""Discovery's whole-image encoder: the reference's MLP on raw pixels, or a small CNN (ours).

Why a CNN is offered: at CPU scale, discovery's boxes in the first frame land a median 8-10 px from
the nearest ball (a ball has a 4 px radius), and almost every later ghost object was born such a
ghost; the MLP has to learn a separate ball detector for every image position. Convolutions share
one detector across positions; a dense readout keeps where the balls are. Tried, not adopted: it did
not raise coverage (docs/sqair.md, "Switches").
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from rsqair_bench.models.air import mlp

ImageEncoderKind = Literal["mlp", "conv"]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvImageEncoder(nn.Module):
    """Three strided convolutions (16, 32, 32 channels; ELU) then the same MLP as the reference's encoder.

    Sizes are ours: at 50x50 the feature map is 7x7, about 1,600 features for the dense readout.
    """

    def __init__(self, image_size: int, hiddens: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 1, image_size
        for out, kernel, stride, padding in ((16, 5, 2, 2), (32, 3, 2, 1), (32, 3, 2, 1)):
            layers += [nn.Conv2d(channels, out, kernel, stride, padding), nn.ELU()]
            channels, size = out, _conv_out(size, kernel, stride, padding)
        self.convs = nn.Sequential(*layers)
        self.readout = mlp(channels * size * size, hiddens)

    def forward(self, images: Tensor) -> Tensor:
        """images [..., 1, H, W] -> [..., hidden]."""
        lead = images.shape[:-3]
        features = self.convs(images.reshape(-1, *images.shape[-3:]))  # [M, C, h, w]
        return self.readout(features.flatten(1)).reshape(*lead, -1)


class MLPImageEncoder(nn.Sequential):
    """The reference's encoder (sqair ref): an MLP on the flattened image.

    A Sequential of the MLP's own layers, so its parameter names (and older checkpoints) are unchanged.
    """

    def __init__(self, image_size: int, hiddens: list[int]) -> None:
        super().__init__(*mlp(image_size ** 2, hiddens))

    def forward(self, images: Tensor) -> Tensor:
        """images [..., 1, H, W] -> [..., hidden]."""
        return super().forward(images.flatten(-3))


def image_encoder(kind: ImageEncoderKind, image_size: int, hiddens: list[int]) -> nn.Module:
    if kind == "conv":
        return ConvImageEncoder(image_size, hiddens)
    return MLPImageEncoder(image_size, hiddens)
