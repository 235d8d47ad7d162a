"""Random RRDBNet weights in the official Real-ESRGAN file layout.

RealESRGAN_x4plus / x2plus are 67 MB downloads we cannot fetch here; these files
have the same keys and shapes (``{"params_ema": state_dict}``), so they exercise
the real loading path and the real network, with random values.
"""

from __future__ import annotations

from pathlib import Path

import torch

NUM_FEAT = 64
GROW = 32
BLOCKS = 23


def _conv(state: dict[str, torch.Tensor], name: str, out_ch: int, in_ch: int, gen: torch.Generator) -> None:
    std = 0.1 * (2.0 / (in_ch * 9)) ** 0.5
    state[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std
    state[f"{name}.bias"] = torch.zeros(out_ch)


def rrdbnet_state(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of basicsr's RRDBNet(num_in_ch=3, num_out_ch=3, scale=scale, 23 blocks)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    in_ch = 3 * {4: 1, 2: 4, 1: 16}[scale]  # pixel-unshuffled input for x2 and x1
    _conv(state, "conv_first", NUM_FEAT, in_ch, gen)
    for block in range(BLOCKS):
        for rdb in (1, 2, 3):
            prefix = f"body.{block}.rdb{rdb}"
            for index in range(1, 5):
                _conv(state, f"{prefix}.conv{index}", GROW, NUM_FEAT + (index - 1) * GROW, gen)
            _conv(state, f"{prefix}.conv5", NUM_FEAT, NUM_FEAT + 4 * GROW, gen)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(state, name, NUM_FEAT, NUM_FEAT, gen)
    _conv(state, "conv_last", 3, NUM_FEAT, gen)
    return state


def write_rrdbnet(path: Path, scale: int, seed: int = 0) -> None:
    torch.save({"params_ema": rrdbnet_state(scale, seed)}, path)
