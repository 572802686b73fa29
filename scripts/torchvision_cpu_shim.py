"""Installed into the dev virtualenv by `make setup` (TORCH=cpu only; a .pth file imports it at start-up).

The registry has the CPU build of torch 2.13 but only a CUDA-linked torchvision 0.28: its C extension needs
libtorch_cuda, fails to load beside the CPU torch, and `import torchvision` then stops with "operator
torchvision::nms does not exist" (it registers fake kernels for nms and qnms without checking the extension).
Defining those two schemas before torchvision is imported lets it import; its C ops stay unavailable (calling
them raises). open_clip and this project use only torchvision's pure-Python transforms. Costs nothing until
something imports torchvision."""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    done = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torchvision" and not self.done:
            self.done = True
            import torch

            if torch.version.cuda is None:  # the CPU build: torchvision's CUDA-linked extension cannot load
                for op in ("nms", "qnms"):
                    torch.library.define(f"torchvision::{op}", _SCHEMA)
        return None  # the regular finders import torchvision


sys.meta_path.insert(0, _BeforeTorchvision())
