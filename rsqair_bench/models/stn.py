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


def transform_where(raw: Tensor) -> Tensor:
    """Unconstrained (sx, sy, tx, ty) -> valid where: scale in (0, 1), shift in (-1, 1).

    Scale via sigmoid and shift via tanh, as in SQAIR, keeps boxes inside a sensible range
    so the glimpse never exceeds the frame and its centre never leaves it.
    """
    scale = torch.sigmoid(raw[..., :2])  # [..., 2]
    shift = torch.tanh(raw[..., 2:])  # [..., 2]
    return torch.cat([scale, shift], dim=-1)  # [..., 4]


def _check_where(where: Tensor) -> None:
    if where.shape[-1] != 4:
        raise ValueError(f"where must end in 4 values (sx, sy, tx, ty), found shape {tuple(where.shape)}")


def _extract_theta(where: Tensor) -> Tensor:
    """Affine map glimpse coords -> image coords: x = sx * u + tx, y = sy * v + ty."""
    sx, sy, tx, ty = where.unbind(-1)  # each [N]
    zero = torch.zeros_like(sx)
    row_x = torch.stack([sx, zero, tx], dim=-1)  # [N, 3]
    row_y = torch.stack([zero, sy, ty], dim=-1)  # [N, 3]
    return torch.stack([row_x, row_y], dim=-2)  # [N, 2, 3]


def _render_theta(where: Tensor) -> Tensor:
    """Inverse map image coords -> glimpse coords: u = (x - tx) / sx, v = (y - ty) / sy."""
    sx, sy, tx, ty = where.unbind(-1)  # each [N]
    inv_sx = 1.0 / sx.clamp(min=_MIN_SCALE)
    inv_sy = 1.0 / sy.clamp(min=_MIN_SCALE)
    zero = torch.zeros_like(sx)
    row_x = torch.stack([inv_sx, zero, -tx * inv_sx], dim=-1)  # [N, 3]
    row_y = torch.stack([zero, inv_sy, -ty * inv_sy], dim=-1)  # [N, 3]
    return torch.stack([row_x, row_y], dim=-2)  # [N, 2, 3]


def _sample(src: Tensor, theta: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Bilinear resampling of src [N, C, h, w] through theta [N, 2, 3] onto an out_hw grid."""
    n, c = src.shape[:2]
    h, w = int(out_hw[0]), int(out_hw[1])
    theta = theta.to(src.dtype)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)  # [N, h, w, 2]
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # [N, C, h, w]


def extract_glimpse(images: Tensor, where: Tensor, size: tuple[int, int]) -> Tensor:
    """Cut the box described by `where` out of `images` and resample it to `size` = (h, w).

    images [..., C, H, W], where [..., 4] (same leading dims) -> glimpses [..., C, h, w].
    Outside the image the glimpse reads zeros (empty background).
    """
    return _warp(images, where, _extract_theta, size, "images")


def render_glimpse(glimpses: Tensor, where: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Paste `glimpses` into the boxes described by `where` on empty canvases of `image_size`.

    glimpses [..., C, h, w], where [..., 4] -> canvases [..., C, H, W]; zero outside the box.
    This is the inverse of `extract_glimpse` (up to resampling blur).
    """
    return _warp(glimpses, where, _render_theta, image_size, "glimpses")


def _warp(src: Tensor, where: Tensor, theta_fn, out_size: tuple[int, int], name: str) -> Tensor:
    """Flatten leading dims, resample `src` [..., C, h, w] with theta_fn(where), restore leading dims."""
    _check_where(where)
    lead = src.shape[:-3]
    if where.shape[:-1] != lead:
        raise ValueError(f"{name} leading dims {tuple(lead)} do not match where leading dims {tuple(where.shape[:-1])}")
    c, h, w = src.shape[-3:]
    out = _sample(src.reshape(-1, c, h, w), theta_fn(where.reshape(-1, 4)), out_size)  # [N, C, *out_size]
    return out.reshape(*lead, c, int(out_size[0]), int(out_size[1]))


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
