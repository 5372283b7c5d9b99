"""Graph passes for `model_config.compile` (inductor, CPU).

Why: on CPU, inductor turns every `linear` with a bias into one `addmm` call. The bias is first
copied into the output buffer (expand, as_strided and copy_ events), and each call adds more
dispatcher events. Half of a compiled training step's 21k profiler events came from the wrapper
around about 2,200 of these calls (docs/sqair.md, "Step speed"). A plain `mm` followed by the bias
add lets inductor fuse the add into the pointwise kernel that already reads the product (the ELU,
tanh or sigmoid after the layer). On GPUs, inductor already makes this choice itself
(`should_prefer_unfused_addmm`), so the pass is used on CPU only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

_aten = torch.ops.aten


class UnfuseBiasAddmm(CustomGraphPass):
    """Rewrite `addmm(bias, a, b)` (alpha = beta = 1) as `mm(a, b) + bias` in inductor's post-grad graph."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in list(graph.find_nodes(op="call_function", target=_aten.addmm.default)):
            bias, mat1, mat2 = node.args[:3]
            if node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("beta", 1) != 1 or len(node.args) > 3:
                continue
            with graph.inserting_before(node):
                product = graph.call_function(_aten.mm.default, (mat1, mat2))
                total = graph.call_function(_aten.add.Tensor, (product, bias))
            total.meta.update(node.meta)  # same shape, dtype and strides as the addmm it replaces
            node.replace_all_uses_with(total)
            graph.erase_node(node)

    def uuid(self) -> Any:
        """Inductor's compile cache key for this pass: the hash of this file."""
        return get_hash_for_files((__file__,))
