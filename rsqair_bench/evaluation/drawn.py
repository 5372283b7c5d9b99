"""Where an object draws its ball: the centre of mass of what it alone renders, its *drawn centre*.

Why: evaluation first located an object by its box centre, but SQAIR's glimpse decoder may draw the ball
anywhere inside the box: the likelihood sees pixels, never the box. On the study's three seed-0 checkpoints
the box centre sat 0.6-1.5 px (median) from its ball on the inferred frames while the drawn centre sat
0.3-0.5 px from it (`tools/drawn_centres.py`; docs/metrics.md, "Drawn centres"). A box-centre error
therefore carries a box-to-ball offset that no prediction has to remove, and a relation's gain of a few
tenths of a pixel is buried in it. The drawn centre takes it out.

An object is rendered alone with the model's own decoder: its glimpse (`decoder.net(what)` times
`decoder.output_scale`), pasted into its box by the transform every render uses (`stn.render_with_footprint`,
which is `render_sum` with one object), without the decoder's mean image. Negative pixels are clamped to
zero: a centre of mass needs non-negative mass, and a negative glimpse pixel darkens a frame whose balls
are bright. Pixel i has its centre at i + 0.5 (continuous coordinates, as `stn.where_to_boxes`), so a drawn
centre and a box centre are in the same crop pixels. An object whose render sums to less than
`MIN_DRAWN_MASS` draws (almost) nothing and has no drawn centre: `locate` then falls back to its box centre
and says which objects did.

One owner: `evaluation/prior_error.py` (the `*_drawn` blocks) and `tools/drawn_centres.py` import these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rsqair_bench.models.stn import render_with_footprint

# A ball of the generated data sets sums to about 50 (radius 4 px, intensity up to 1, in the 50x50 crop): an
# object rendering under a tenth of that draws no ball (tools/drawn_centres.py counts such objects "empty").
MIN_DRAWN_MASS = 5.0
RENDER_CHUNK = 1024  # objects rendered at once: 1024 x 50 x 50 float64 is 20 MB


def object_images(decoder: nn.Module, what: Tensor, where: Tensor) -> Tensor:
    """Each object rendered alone, clamped non-negative: what [..., Dw], where [..., 4] (transformed, as
    `Generation.where`) -> [..., H, W] in the decoder's image size."""
    g, size = decoder.glimpse_size, decoder.image_size
    glimpses = decoder.net(what).unflatten(-1, (1, g, g)) * decoder.output_scale  # [..., 1, g, g]
    canvas, _ = render_with_footprint(glimpses, where.to(glimpses.dtype), (size, size))  # [..., 1, H, W]
    return canvas[..., 0, :, :].clamp(min=0)


def centres_of_mass(images: Tensor) -> tuple[Tensor, Tensor]:
    """images [..., H, W] (non-negative) -> centres [..., 2] (x, y) in pixels and mass [...], in float64.
    A centre is NaN where the mass is 0."""
    images = images.double()
    h, w = images.shape[-2:]
    xs = torch.arange(w, dtype=images.dtype, device=images.device) + 0.5  # pixel centres
    ys = torch.arange(h, dtype=images.dtype, device=images.device) + 0.5
    mass = images.sum((-2, -1))
    x = (images.sum(-2) * xs).sum(-1) / mass
    y = (images.sum(-1) * ys).sum(-1) / mass
    return torch.stack([x, y], -1), mass


@dataclass
class Drawn:
    """Drawn centres of a set of objects, numpy: centres [..., 2] px (NaN where not rendered) and the mass
    [...] each rendered (0 where not rendered)."""

    centres: np.ndarray
    mass: np.ndarray


def drawn_centres(decoder: nn.Module, what: Tensor, where: Tensor, rendered: Tensor,
                  chunk: int = RENDER_CHUNK) -> Drawn:
    """what [..., Dw], where [..., 4] (transformed), rendered [...] bool: the objects to render (the others
    are left NaN / 0, which saves the renders of absent slots and of frames nobody scores)."""
    lead = tuple(rendered.shape)
    centres = torch.full((*lead, 2), float("nan"), dtype=torch.float64, device=what.device)
    mass = torch.zeros(lead, dtype=torch.float64, device=what.device)
    flat_what, flat_where = what.reshape(-1, what.shape[-1]), where.reshape(-1, 4)  # [M, Dw], [M, 4]
    flat_centres, flat_mass = centres.view(-1, 2), mass.view(-1)
    index = rendered.reshape(-1).nonzero().squeeze(1)  # [M'] objects to render
    with torch.no_grad():
        for start in range(0, len(index), chunk):
            part = index[start:start + chunk]
            flat_centres[part], flat_mass[part] = centres_of_mass(object_images(decoder, flat_what[part],
                                                                                flat_where[part]))
    return Drawn(centres.cpu().numpy(), mass.cpu().numpy())


def locate(drawn: Drawn, box: np.ndarray, min_mass: float = MIN_DRAWN_MASS) -> tuple[np.ndarray, np.ndarray]:
    """The drawn centre where the object draws at least `min_mass`, else its box centre [..., 2] (same
    layout as `drawn.centres`), and where it fell back [...] bool (also every object not rendered)."""
    fell_back = ~(drawn.mass >= min_mass)
    return np.where(fell_back[..., None], box, drawn.centres), fell_back
