"""Spatial transformer: geometry against analytically drawn objects, round trips, gradients.

Coordinates: a pixel (i, j) of an H x W image has its centre at (j + 0.5, i + 0.5) in continuous
pixel units (align_corners=False), with 0 at the left/top edge.
"""

from __future__ import annotations

import torch

from rsqair_bench.models.stn import (
    boxes_to_where,
    extract_glimpse,
    render_glimpse,
    transform_where,
    where_to_boxes,
)

H, W = 50, 60  # deliberately non-square so x/y mix-ups fail


def _pixel_centres(h: int, w: int, x0: float = 0.0, y0: float = 0.0, bw: float | None = None, bh: float | None = None):
    """Continuous canvas coordinates of the pixel centres of an h x w grid covering a box."""
    bw = float(w) if bw is None else bw
    bh = float(h) if bh is None else bh
    xs = x0 + (torch.arange(w, dtype=torch.float64) + 0.5) * bw / w  # [w]
    ys = y0 + (torch.arange(h, dtype=torch.float64) + 0.5) * bh / h  # [h]
    return ys[:, None].expand(h, w), xs[None, :].expand(h, w)  # [h, w] each


def _blob(ys: torch.Tensor, xs: torch.Tensor, cx: float, cy: float, sigma: float) -> torch.Tensor:
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


def test_transform_where_ranges() -> None:
    raw = torch.tensor([[-50.0, 0.0, 50.0, 0.0], [3.0, -3.0, -0.5, 0.5]])
    where = transform_where(raw)
    assert where.shape == raw.shape
    assert torch.all((where[:, :2] >= 0) & (where[:, :2] <= 1))
    assert torch.all((where[:, 2:] >= -1) & (where[:, 2:] <= 1))
    torch.testing.assert_close(where[1], torch.tensor([torch.sigmoid(torch.tensor(3.0)), torch.sigmoid(torch.tensor(-3.0)),
                                                       torch.tanh(torch.tensor(-0.5)), torch.tanh(torch.tensor(0.5))]))


def test_transform_where_scale_max_caps_the_box_and_leaves_the_shift() -> None:
    """model_config.where_scale_max: scale = max * sigmoid(logit), so no box exceeds that share of the frame."""
    raw = torch.tensor([[50.0, 0.0, 0.3, -0.7], [-1.0, 2.0, 0.0, 9.0]])
    capped, plain = transform_where(raw, 0.3), transform_where(raw)
    torch.testing.assert_close(capped[:, :2], 0.3 * plain[:, :2])
    torch.testing.assert_close(capped[:, 2:], plain[:, 2:])
    assert capped[:, :2].max() <= 0.3


def test_where_to_boxes_hand_computed() -> None:
    where = torch.tensor([[0.5, 0.2, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.1, 0.4, -0.5, 0.5]])
    boxes = where_to_boxes(where, (H, W))
    expected = torch.tensor([
        [15.0, 20.0, 45.0, 30.0],  # centre (30, 25), 30 x 10
        [0.0, 0.0, 60.0, 50.0],  # whole image
        [12.0, 27.5, 18.0, 47.5],  # centre (15, 37.5), 6 x 20
    ])
    torch.testing.assert_close(boxes, expected)
    torch.testing.assert_close(boxes_to_where(boxes, (H, W)), where)


def test_extract_blob_matches_analytic_glimpse() -> None:
    """A smooth blob drawn at a known box comes out centred and rescaled in the glimpse."""
    cx, cy, sigma = 20.0, 31.0, 3.0
    box = torch.tensor([[cx - 9.0, cy - 7.5, cx + 9.0, cy + 7.5]], dtype=torch.float64)  # 18 x 15 px
    ys, xs = _pixel_centres(H, W)
    canvas = _blob(ys, xs, cx, cy, sigma)[None, None]  # [1, 1, H, W]
    where = boxes_to_where(box, (H, W))
    gh, gw = 20, 24
    glimpse = extract_glimpse(canvas, where, (gh, gw))
    assert glimpse.shape == (1, 1, gh, gw)
    gys, gxs = _pixel_centres(gh, gw, x0=cx - 9.0, y0=cy - 7.5, bw=18.0, bh=15.0)
    expected = _blob(gys, gxs, cx, cy, sigma)
    err = (glimpse[0, 0] - expected).abs().max().item()
    assert err < 0.03, f"max abs error {err}"
    # The brightest glimpse pixel is at the glimpse centre (within one pixel).
    peak = torch.nonzero(glimpse[0, 0] == glimpse[0, 0].max())[0]
    assert abs(peak[0].item() + 0.5 - gh / 2) <= 1 and abs(peak[1].item() + 0.5 - gw / 2) <= 1


def test_extract_square_fills_glimpse() -> None:
    """A hard-edged square whose box is exactly its extent fills the glimpse with ones."""
    canvas = torch.zeros(1, 1, H, W)
    canvas[0, 0, 10:30, 30:50] = 1.0  # rows 10..29, cols 30..49 -> box x 30..50, y 10..30
    where = boxes_to_where(torch.tensor([[30.0, 10.0, 50.0, 30.0]]), (H, W))
    glimpse = extract_glimpse(canvas, where, (20, 20))
    torch.testing.assert_close(glimpse, torch.ones_like(glimpse))  # pixel grids align exactly
    # A box twice as large: the square occupies the central half of the glimpse.
    where2 = boxes_to_where(torch.tensor([[20.0, 0.0, 60.0, 40.0]]), (H, W))
    g2 = extract_glimpse(canvas, where2, (20, 20))[0, 0]
    assert g2[6:14, 6:14].min() > 0.99 and g2[:4].max() < 0.01 and g2[:, :4].max() < 0.01
    assert abs(g2.sum().item() - 100.0) < 2.0  # area 1/4 of the glimpse


def test_render_then_extract_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    n, gh, gw = 6, 20, 20
    # Smooth random glimpses: low-frequency cosines, so resampling blur stays small.
    ys, xs = _pixel_centres(gh, gw)
    fx = torch.rand(n, 1, 1, generator=gen, dtype=torch.float64) * 0.3
    fy = torch.rand(n, 1, 1, generator=gen, dtype=torch.float64) * 0.3
    glimpses = (0.5 + 0.5 * torch.cos(fx * xs + fy * ys))[:, None]  # [n, 1, gh, gw]
    # Boxes inside the canvas (content outside it is lost by design), scales 0.4..0.8.
    scale = 0.4 + 0.4 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
    shift = (1 - scale) * (2 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 1) * 0.9
    where = torch.cat([scale, shift], dim=-1)  # [n, 4]
    canvas = render_glimpse(glimpses, where, (H, W))
    back = extract_glimpse(canvas, where, (gh, gw))
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    err = (back[interior] - glimpses[interior]).abs().max().item()
    assert err < 0.05, f"round-trip max abs error {err}"


def test_render_area_and_support() -> None:
    where = torch.tensor([[0.5, 0.3, 0.2, -0.4], [0.25, 0.8, -0.5, 0.1]], dtype=torch.float64)
    ones = torch.ones(2, 1, 20, 20, dtype=torch.float64)
    canvas = render_glimpse(ones, where, (H, W))  # [2, 1, H, W]
    area = canvas.sum(dim=(1, 2, 3))
    expected = where[:, 0] * where[:, 1] * H * W
    torch.testing.assert_close(area, expected, rtol=0.03, atol=0.0)
    # Nothing is drawn more than a pixel outside the box.
    boxes = where_to_boxes(where, (H, W))
    ys, xs = _pixel_centres(H, W)
    for k in range(2):
        x0, y0, x1, y1 = boxes[k].tolist()
        outside = (xs < x0 - 1) | (xs > x1 + 1) | (ys < y0 - 1) | (ys > y1 + 1)
        assert canvas[k, 0][outside].abs().max() == 0.0


def test_leading_dims_and_shapes() -> None:
    imgs = torch.rand(2, 3, 1, H, W)
    where = transform_where(torch.randn(2, 3, 4))
    g = extract_glimpse(imgs, where, (8, 10))
    assert g.shape == (2, 3, 1, 8, 10)
    c = render_glimpse(g, where, (H, W))
    assert c.shape == (2, 3, 1, H, W)
    torch.testing.assert_close(g[1, 2], extract_glimpse(imgs[1, 2][None], where[1, 2][None], (8, 10))[0])


def test_gradients_flow_to_where() -> None:
    ys, xs = _pixel_centres(H, W)
    canvas = _blob(ys, xs, 25.0, 20.0, 5.0).float()[None, None]
    raw = torch.tensor([[0.0, 0.0, 0.1, -0.1]], requires_grad=True)
    glimpse = extract_glimpse(canvas, transform_where(raw), (12, 12))
    glimpse.sum().backward()
    assert raw.grad is not None and torch.isfinite(raw.grad).all() and raw.grad.abs().min() > 0
    raw2 = torch.tensor([[0.0, 0.0, 0.1, -0.1]], requires_grad=True)
    target = canvas
    rendered = render_glimpse(torch.rand(1, 1, 12, 12), transform_where(raw2), (H, W))
    ((rendered - target) ** 2).sum().backward()
    assert raw2.grad is not None and torch.isfinite(raw2.grad).all() and raw2.grad.abs().min() > 0
