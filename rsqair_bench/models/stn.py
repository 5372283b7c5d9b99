"""Spatial transformer: cut glimpses out of frames and paste decoded glimpses back.

SQAIR's z_where is four numbers (sx, sy, tx, ty). The box it describes has its centre at
(tx, ty) in normalised image coordinates ([-1, 1], x then y, -1 = left/top image edge) and
width sx * W, height sy * H. We use `align_corners=False` throughout, so -1 and 1 are the
outer pixel edges and a scale of 1 covers the whole image exactly; pixel boxes then follow
from the normalised ones by a plain affine map (see `where_to_boxes`).

Every function accepts any leading dimensions: they are flattened to N for the affine grid
and restored on the way out, so callers can pass [B, P, K, ...] without reshaping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Smallest scale we divide by when inverting the transform: a glimpse squeezed to nothing
# would otherwise give inf/NaN in the render and its gradient.
_MIN_SCALE = 1e-4


def transform_where(raw: Tensor, scale_max: float = 1.0, shift_max: float = 1.0) -> Tensor:
    """Unconstrained (sx, sy, tx, ty) -> valid where: scale in (0, scale_max), shift in (-shift_max, shift_max).

    Scale via sigmoid and shift via tanh, as in SQAIR, keeps boxes inside a sensible range
    so the glimpse never exceeds the frame. `scale_max` < 1 (model_config.where_scale_max) caps the
    box at that fraction of the frame. `shift_max` > 1 (model_config.where_shift_max) lets a box
    centre leave the frame by up to (shift_max - 1) half-frames: with 1 (SQAIR) a ball whose centre has
    left the crop cannot be tracked to where it is (docs/sqair.md, "Switches").
    """
    scale = torch.sigmoid(raw[..., :2])  # [..., 2]
    if scale_max != 1.0:
        scale = scale * scale_max
    return torch.cat([scale, where_shift(raw, shift_max)], dim=-1)  # [..., 4]


def where_shift(raw: Tensor, shift_max: float = 1.0) -> Tensor:
    """The box centre (tx, ty) in normalised coordinates of raw where logits [..., 4] -> [..., 2]."""
    shift = torch.tanh(raw[..., 2:])
    return shift * shift_max if shift_max != 1.0 else shift


# How close to the edge of its range `shift_logits` places a shift: atanh's slope there is
# 1 / (1 - 0.98^2) = 25, large but finite, so a gradient through it stays usable.
_SHIFT_EDGE = 0.98


def shift_logits(shift: Tensor, shift_max: float = 1.0, edge: float = _SHIFT_EDGE) -> Tensor:
    """The inverse of `where_shift`: box centres in normalised coordinates [..., 2] -> raw logits.

    Shifts beyond `edge` of the range are clamped there first, so the result is finite."""
    return torch.atanh((shift / shift_max).clamp(-edge, edge))


def _check_where(where: Tensor) -> None:
    if where.shape[-1] != 4:
        raise ValueError(f"where must end in 4 values (sx, sy, tx, ty), found shape {tuple(where.shape)}")


def _pixel_centres(n: int, like: Tensor) -> Tensor:
    """[n] pixel centres in normalised coordinates for align_corners=False: -1 + (2i + 1) / n."""
    return (torch.arange(n, device=like.device, dtype=like.dtype) * 2 + 1) / n - 1


def _tent(coords: Tensor, size: int) -> Tensor:
    """Bilinear interpolation weights along one axis.

    coords [..., m] normalised sample positions (-1/1 = outer pixel edges) -> weights [..., m, size].
    Pixel i has its centre at position i of p = ((coord + 1) * size - 1) / 2 and weight
    max(0, 1 - |p - i|): the two nearest pixels share the sample, and pixels beyond the edge do not
    exist, which is `grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`.
    """
    p = ((coords + 1) * size - 1) * 0.5
    index = torch.arange(size, device=coords.device, dtype=coords.dtype)
    return torch.relu(1 - (p.unsqueeze(-1) - index).abs())


# Why matrices instead of grid_sample: SQAIR's boxes are axis-aligned (scale and shift only), so the
# bilinear warp factorises into a row and a column interpolation, out = A_y @ src @ A_x^T. For rendering,
# where the gradient flows into the glimpses, two small batched matmuls compute exactly what grid_sample
# would, 2.5-6x faster forward+backward on CPU (tests/test_bench_step.py, group "render"), and a box's
# footprint (the warp of an all-ones glimpse) becomes an outer product of two weight sums.
def _axis_weights(where: Tensor, out_hw: tuple[int, int], src_hw: tuple[int, int], inverse: bool):
    """Row and column weights [..., out_h, src_h] and [..., out_w, src_w] of the warp through `where`.

    Forward (extract): output point u reads source point s * u + t. Inverse (render): output point
    x reads source point (x - t) / s.
    """
    cols = _pixel_centres(int(out_hw[1]), where)  # [out_w]
    rows = _pixel_centres(int(out_hw[0]), where)  # [out_h]
    sx, sy, tx, ty = (v.unsqueeze(-1) for v in where.unbind(-1))  # each [..., 1]
    if inverse:
        inv_x, inv_y = 1.0 / sx.clamp(min=_MIN_SCALE), 1.0 / sy.clamp(min=_MIN_SCALE)
        x, y = cols * inv_x - tx * inv_x, rows * inv_y - ty * inv_y
    else:
        x, y = cols * sx + tx, rows * sy + ty
    return _tent(y, int(src_hw[0])), _tent(x, int(src_hw[1]))


def extract_glimpses(images: Tensor, where: Tensor, size: tuple[int, int]) -> Tensor:
    """Cut K boxes out of each image with one `grid_sample`.

    images [N, C, H, W], where [N, K, 4] -> glimpses [N, K, C, h, w]. Glimpse pixel (u, v) reads image
    point (sx * u + tx, sy * v + ty); outside the image reads zeros. The K sampling grids are stacked
    along the output height, so the image is read once and never copied per box. (Reading is the one
    warp where grid_sample beats the separable matrices: no gradient flows into the frames.)
    """
    _check_where(where)
    n, k = where.shape[:2]
    c = images.shape[1]
    h, w = int(size[0]), int(size[1])
    base = torch.stack(torch.meshgrid(_pixel_centres(w, where), _pixel_centres(h, where), indexing="xy"), -1)
    grid = base * where[:, :, None, None, :2] + where[:, :, None, None, 2:]  # [N, K, h, w, 2] (x, y)
    out = F.grid_sample(images, grid.reshape(n, k * h, w, 2).to(images.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=False)  # [N, C, K*h, w]
    return out.view(n, c, k, h, w).transpose(1, 2)  # [N, K, C, h, w]


def extract_glimpse(images: Tensor, where: Tensor, size: tuple[int, int]) -> Tensor:
    """Cut the box described by `where` out of `images` and resample it to `size` = (h, w).

    images [..., C, H, W], where [..., 4] (same leading dims) -> glimpses [..., C, h, w].
    Outside the image the glimpse reads zeros (empty background).
    """
    lead = _check_lead(images, where, "images")
    c, hh, ww = images.shape[-3:]
    out = extract_glimpses(images.reshape(-1, c, hh, ww), where.reshape(-1, 1, 4), size)  # [N, 1, C, h, w]
    return out.reshape(*lead, c, int(size[0]), int(size[1]))


def render_glimpse(glimpses: Tensor, where: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Paste `glimpses` into the boxes described by `where` on empty canvases of `image_size`.

    glimpses [..., C, h, w], where [..., 4] -> canvases [..., C, H, W]; zero outside the box.
    Canvas point (x, y) reads glimpse point ((x - tx) / sx, (y - ty) / sy): the inverse of
    `extract_glimpse` (up to resampling blur).
    """
    canvas, _ = render_with_footprint(glimpses, where, image_size)
    return canvas


def render_with_footprint(glimpses: Tensor, where: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """`render_glimpse` plus each box's footprint, the render of an all-ones glimpse.

    glimpses [..., C, h, w], where [..., 4] -> canvases [..., C, H, W] and footprints [..., 1, H, W].
    """
    lead = _check_lead(glimpses, where, "glimpses")
    c, h, w = glimpses.shape[-3:]
    out_h, out_w = int(image_size[0]), int(image_size[1])
    r_y, r_x = _axis_weights(where.reshape(-1, 4), (out_h, out_w), (h, w), inverse=True)  # [M, H, h], [M, W, w]
    r_y, r_x = r_y.to(glimpses.dtype).unsqueeze(1), r_x.to(glimpses.dtype).unsqueeze(1)  # [M, 1, H, h], [M, 1, W, w]
    canvas = r_y @ glimpses.reshape(-1, c, h, w) @ r_x.transpose(-1, -2)  # [M, C, H, W]
    footprint = r_y.sum(-1).unsqueeze(-1) * r_x.sum(-1).unsqueeze(-2)  # [M, 1, H, W]
    return canvas.reshape(*lead, c, out_h, out_w), footprint.reshape(*lead, 1, out_h, out_w)


def render_sum(glimpses: Tensor, where: Tensor, weights: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The weighted sum of K rendered glimpses per canvas, and of their footprints, in one matmul each.

    glimpses [N, K, h, w] (one channel), where [N, K, 4], weights [N, K] -> canvas [N, 1, H, W] and
    footprint [N, 1, H, W]. sum_k w_k R_y,k G_k R_x,k^T = [R_y,1 .. R_y,K] @ [w_1 G_1 R_x,1^T; ..; w_K G_K R_x,K^T]:
    stacking the K boxes along the inner dimension sums them inside the matmul, so no [N, K, H, W]
    tensor is ever built.
    """
    _check_where(where)
    n, k, h, w = glimpses.shape
    out_h, out_w = int(image_size[0]), int(image_size[1])
    r_y, r_x = _axis_weights(where, (out_h, out_w), (h, w), inverse=True)  # [N, K, H, h], [N, K, W, w]
    r_y, r_x = r_y.to(glimpses.dtype), r_x.to(glimpses.dtype)
    right = (glimpses * weights[:, :, None, None]) @ r_x.transpose(-1, -2)  # [N, K, h, W]
    left = r_y.permute(0, 2, 1, 3).reshape(n, out_h, k * h)  # [N, H, K*h]
    canvas = torch.bmm(left, right.reshape(n, k * h, out_w))  # [N, H, W]
    footprint = torch.bmm(r_y.sum(-1).transpose(1, 2), r_x.sum(-1) * weights.unsqueeze(-1))  # [N, H, K] @ [N, K, W]
    return canvas.unsqueeze(1), footprint.unsqueeze(1)


def _check_lead(src: Tensor, where: Tensor, name: str) -> torch.Size:
    _check_where(where)
    lead = src.shape[:-3]
    if where.shape[:-1] != lead:
        raise ValueError(f"{name} leading dims {tuple(lead)} do not match where leading dims {tuple(where.shape[:-1])}")
    return lead


def where_to_boxes(where: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Normalised where [..., 4] -> pixel boxes [..., 4] as (x0, y0, x1, y1).

    Pixel coordinates are continuous with 0 at the left/top image edge and W (H) at the
    right/bottom edge, matching align_corners=False: centre_x = (tx + 1) / 2 * W and
    width = sx * W.
    """
    _check_where(where)
    hgt, wid = float(image_size[0]), float(image_size[1])
    sx, sy, tx, ty = where.unbind(-1)  # each [...]
    cx = (tx + 1.0) * 0.5 * wid
    cy = (ty + 1.0) * 0.5 * hgt
    half_w = sx * 0.5 * wid
    half_h = sy * 0.5 * hgt
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)  # [..., 4]


def boxes_to_where(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Inverse of `where_to_boxes`: pixel boxes (x0, y0, x1, y1) [..., 4] -> where [..., 4]."""
    hgt, wid = float(image_size[0]), float(image_size[1])
    x0, y0, x1, y1 = boxes.unbind(-1)  # each [...]
    sx = (x1 - x0) / wid
    sy = (y1 - y0) / hgt
    tx = (x0 + x1) / wid - 1.0
    ty = (y0 + y1) / hgt - 1.0
    return torch.stack([sx, sy, tx, ty], dim=-1)  # [..., 4]
