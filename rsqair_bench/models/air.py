"""Building blocks of the AIR step shared by SQAIR's discovery and propagation.

Structure and defaults follow the SQAIR reference implementation (akosiorek/sqair,
`neural.py`, `modules.py`); see docs/sqair.md for the mapping and our departures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsqair_bench.models.stn import extract_glimpses, render_sum, transform_where

# A presence logit this low means "absent with probability 1" (sqair ref: StepsPredictor masks with -88).
MASKED_LOGIT = -88.0


def linear(n_in: int, n_out: int) -> nn.Linear:
    """Linear layer with Sonnet's default init (truncated normal, std 1/sqrt(fan_in); zero bias),
    which the reference's every MLP uses; PyTorch's default uniform init is about 1.7x smaller."""
    layer = nn.Linear(n_in, n_out)
    std = 1.0 / math.sqrt(n_in)
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(n_in: int, hiddens: list[int], n_out: int | None = None) -> nn.Sequential:
    """Linear layers with ELU after every hidden layer; a final Linear without activation if n_out is given."""
    layers: list[nn.Module] = []
    for width in hiddens:
        layers += [linear(n_in, width), nn.ELU()]
        n_in = width
    if n_out is not None:
        layers.append(linear(n_in, n_out))
    return nn.Sequential(*layers)


def softplus_scale(raw: Tensor) -> Tensor:
    """Positive std as in the reference: softplus + 0.01."""
    return F.softplus(raw) + 0.01


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def normal_log_prob(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """log N(x; loc, scale) summed over the last dimension.

    Written out rather than through `torch.distributions.Normal`, whose construction and
    argument broadcasting cost more operator calls than the density itself.
    """
    z = (x - loc) / scale
    return (-0.5 * z * z - scale.log()).sum(-1) - _HALF_LOG_2PI * x.shape[-1]


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)), elementwise, stable for masked (-88) logits."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def sample_normal(loc: Tensor, scale: Tensor, generator: torch.Generator | None) -> Tensor:
    """Reparameterised sample drawn from an explicit generator (no global RNG)."""
    noise = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
    return loc + scale * noise


def sample_bernoulli(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    return bernoulli_from_uniform(logits, uniform)


def bernoulli_from_uniform(logits: Tensor, uniform: Tensor) -> Tensor:
    """A Bernoulli(sigmoid(logits)) draw from pre-drawn U(0, 1) noise (same shape)."""
    return (uniform < torch.sigmoid(logits)).to(logits.dtype)


def init_bias(linear: nn.Module, value: float | list[float]) -> None:
    layer = linear[-1] if isinstance(linear, nn.Sequential) else linear
    with torch.no_grad():
        layer.bias.copy_(torch.as_tensor(value, dtype=layer.bias.dtype))


class GaussianHead(nn.Module):
    """Linear -> (loc, softplus scale + 0.01) (sqair ref: GaussianFromParamVec)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = linear(n_in, 2 * n_out)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.linear(h).chunk(2, dim=-1)
        return loc, softplus_scale(raw)


class WhereHead(nn.Module):
    """MLP -> loc and scale of the 4 where logits; the std logit has a trainable offset
    initialised to transform_var_bias (sqair ref: StochasticTransformParam)."""

    def __init__(self, n_in: int, hiddens: list[int], var_bias: float, extra_offset: float = 0.0) -> None:
        super().__init__()
        self.net = mlp(n_in, hiddens, 8)
        self.offset = nn.Parameter(torch.tensor(float(var_bias)))
        self.extra_offset = extra_offset  # prop: -1 more (sqair ref: propagate.py)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.net(h).chunk(2, dim=-1)
        return loc, softplus_scale(raw + self.offset + self.extra_offset)


class PresenceHead(nn.Module):
    """MLP[128] -> presence logit with a step bias; masked to 'absent' when the gate is 0
    (sqair ref: StepsPredictor: logit = gate * logit + (gate - 1) * 88)."""

    def __init__(self, n_in: int, bias: float, hidden: int = 128) -> None:
        super().__init__()
        self.net = mlp(n_in, [hidden], 1)
        init_bias(self.net, [bias])

    def forward(self, h: Tensor, gate: Tensor) -> Tensor:
        logit = self.net(h).squeeze(-1)
        return gate * logit + (1.0 - gate) * MASKED_LOGIT


class GlimpseEncoder(nn.Module):
    """Glimpse at `where` (optionally masked) -> q(what) loc and scale (sqair ref: AIREncoder).

    One instance is shared by discovery and propagation, as in the reference.
    """

    def __init__(self, glimpse_size: int, hiddens: list[int], z_what: int, scale_max: float = 1.0,
                 shift_max: float = 1.0) -> None:
        super().__init__()
        self.glimpse_size = glimpse_size
        self.scale_max = scale_max  # model_config.where_scale_max
        self.shift_max = shift_max  # model_config.where_shift_max
        self.net = mlp(glimpse_size * glimpse_size, hiddens)
        self.head = GaussianHead(hiddens[-1], z_what)

    def forward(self, image: Tensor, where_raw: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """image [N, 1, H, W]; where_raw [N, 4] or [N, K, 4] (K boxes per image, one grid_sample);
        mask like the glimpses, [N, (K,) g*g] -> loc, scale [N, (K,) z_what]."""
        size = (self.glimpse_size, self.glimpse_size)
        boxes = where_raw if where_raw.dim() == 3 else where_raw.unsqueeze(1)  # [N, K, 4]
        glimpse = extract_glimpses(image, transform_where(boxes, self.scale_max, self.shift_max), size).flatten(2)  # [N, K, g*g]
        if where_raw.dim() == 2:
            glimpse = glimpse.squeeze(1)
        if mask is not None:
            glimpse = glimpse * mask
        return self.head(self.net(glimpse))


class GlimpseDecoder(nn.Module):
    """what -> glimpse, scaled by a trainable output_scale (sqair ref: AIRDecoder), and the
    composition of all objects onto the canvas with the learned mean image under a soft mask."""

    def __init__(self, z_what: int, hiddens: list[int], glimpse_size: int, image_size: int, output_scale: float,
                 scale_max: float = 1.0, shift_max: float = 1.0):
        super().__init__()
        self.glimpse_size = glimpse_size
        self.scale_max = scale_max  # model_config.where_scale_max
        self.shift_max = shift_max  # model_config.where_shift_max
        self.image_size = image_size
        self.net = mlp(z_what, hiddens, glimpse_size * glimpse_size)
        self.output_scale = nn.Parameter(torch.tensor(float(output_scale)))
        # sqair ref initialises this to the mean training frame; we start at 0 (balls are sparse, see docs/sqair.md).
        self.mean_image = nn.Parameter(torch.zeros(1, image_size, image_size))

    def forward(self, what: Tensor, where_raw: Tensor, pres: Tensor) -> Tensor:
        # what [N, K, Dw], where_raw [N, K, 4], pres [N, K] -> canvas [N, 1, H, W]
        objects, footprint = self._render(what, where_raw, pres)
        soft_mask = torch.sigmoid(-10.0 + 20.0 * footprint)
        return objects + self.mean_image * soft_mask

    def objects(self, what: Tensor, where_raw: Tensor, pres: Tensor) -> Tensor:
        """The objects alone, without the mean image: what discovery subtracts under
        `disc_input: residual` (what the objects found so far already explain)."""
        return self._render(what, where_raw, pres)[0]

    def _render(self, what: Tensor, where_raw: Tensor, pres: Tensor) -> tuple[Tensor, Tensor]:
        n, k = pres.shape
        g, size = self.glimpse_size, (self.image_size, self.image_size)
        glimpses = self.net(what).view(n, k, g, g) * self.output_scale
        return render_sum(glimpses, transform_where(where_raw, self.scale_max, self.shift_max), pres, size)  # [N, 1, H, W] each


def stable_present_first(pres: Tensor, keep: int) -> Tensor:
    """Indices that move present slots first, keeping relative order, truncated to `keep`.

    pres [N, S] in {0, 1} -> index [N, keep] (sqair ref: index.select_present).
    """
    s = pres.shape[1]
    order_key = (1.0 - pres) * s + torch.arange(s, device=pres.device, dtype=pres.dtype)
    return order_key.argsort(dim=1)[:, :keep]


def gather_slots(x: Tensor, index: Tensor) -> Tensor:
    """x [N, S, ...], index [N, K] -> [N, K, ...]."""
    shape = index.shape + (1,) * (x.dim() - 2)
    return x.gather(1, index.view(shape).expand(*index.shape, *x.shape[2:]))
