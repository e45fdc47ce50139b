#!/usr/bin/env python3
"""kseg's three networks written directly in PyTorch, the yardstick of ``benchmarks/bench.py``.

Each class is a layer-for-layer transcription of the Keras builder of the same name
(``kseg/models/segnet.py``, ``kseg/models/unet.py``, ``kseg.layers.conv_block``), in NCHW:

* every block is ``conv_block``: Conv 3x3 (padding 1, bias) -> ReLU -> BatchNorm, BatchNorm
  after the ReLU as in kseg, with eps 1e-5 and torch momentum 0.1 (= Keras momentum 0.9);
* level widths f_i = base * 2**i, i = 0 .. depth-1;
* segnet: two blocks per encoder level, then a 2x2 max-pool that keeps its argmax; a bottleneck
  block(2 f_last), block(f_last); decoder level i (deepest first) max-unpools by level i's
  argmax, then block(f_i), block(f_{i-1}) with f_{-1} = base // 2;
* unet: two blocks per encoder level (kept as the skip), 2x2 max-pool; bottleneck two blocks of
  base * 2**depth; decoder level i: nearest 2x up-sampling, concat [up, skip], two blocks of f_i;
* unet2: unet with learned resampling, Conv2d(f_i, f_i, 2, stride 2) down and
  ConvTranspose2d(c, f_i, 2, stride 2) up, neither followed by BatchNorm or ReLU;
* head: 1x1 conv to one logit per pixel.

Trainable parameters therefore equal the Keras models' (BatchNorm running statistics are buffers
here and non-trainable weights there). ``forward_flops`` counts the forward pass analytically
(multiply-adds of every conv and transposed conv, x2; the convention of ``FlopCounterMode``), and
``measured_forward_flops`` counts it with ``torch.utils.flop_counter.FlopCounterMode``; the script
asserts the two agree before it times anything.

As a script it times training (Adam 1e-4, BCE with logits) and inference on random data in up to
four modes and prints one JSON object per mode:

    python benchmarks/torch_twin.py --model unet --image-size 128 --base 32 --batch 16 \
        [--modes fp32,fp32-cl,bf16,bf16-cl] [--steps 4 --warmup 2 --budget 5] [--threads N]

fp32: float32; bf16: ``torch.autocast("cpu", torch.bfloat16)``; ``-cl``: channels-last memory
format for the model and the input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _timing, also when loaded by path
from _timing import median_seconds  # noqa: E402

MODELS = ("segnet", "unet", "unet2")
MODES = ("fp32", "fp32-cl", "bf16", "bf16-cl")
# Keras' BatchNormalization momentum m weights the old running value; torch's weights the new one.
KERAS_BN_MOMENTUM = 0.9
BN_MOMENTUM = 1.0 - KERAS_BN_MOMENTUM
BN_EPSILON = 1e-5


def level_widths(base: int, depth: int) -> list[int]:
    return [base * 2**level for level in range(depth)]


class ConvBlock(nn.Sequential):
    """kseg.layers.conv_block: Conv 3x3 'same' -> ReLU -> BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


def _two_blocks(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(ConvBlock(in_channels, mid_channels), ConvBlock(mid_channels, out_channels))


class SegNet(nn.Module):
    """kseg.models.segnet: the decoder puts values back where the encoder's maxima were."""

    def __init__(self, base: int = 64, depth: int = 4, in_channels: int = 3):
        super().__init__()
        widths = level_widths(base, depth)
        inputs = [in_channels] + widths[:-1]
        self.encoder = nn.ModuleList(_two_blocks(c, f, f) for c, f in zip(inputs, widths))
        self.bottleneck = _two_blocks(widths[-1], 2 * widths[-1], widths[-1])
        # decoder[i] is level i; it receives f_i channels (from level i + 1 or the bottleneck)
        # and hands f_{i-1} to the level above.
        outputs = [base // 2] + widths[:-1]
        self.decoder = nn.ModuleList(_two_blocks(f, f, o) for f, o in zip(widths, outputs))
        self.head = nn.Conv2d(outputs[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        argmaxes = []
        for stage in self.encoder:
            x, where = F.max_pool2d(stage(x), 2, return_indices=True)
            argmaxes.append(where)
        x = self.bottleneck(x)
        for level in reversed(range(len(self.decoder))):
            x = self.decoder[level](F.max_unpool2d(x, argmaxes[level], 2))
        return self.head(x)


class UNet(nn.Module):
    """kseg.models.unet (``learned_resampling=False``) and kseg.models.unet2 (True)."""

    def __init__(self, base: int = 64, depth: int = 4, learned_resampling: bool = False, in_channels: int = 3):
        super().__init__()
        self.learned_resampling = learned_resampling
        widths = level_widths(base, depth)
        inputs = [in_channels] + widths[:-1]
        self.encoder = nn.ModuleList(_two_blocks(c, f, f) for c, f in zip(inputs, widths))
        bottleneck = base * 2**depth
        self.bottleneck = _two_blocks(widths[-1], bottleneck, bottleneck)
        # Level i of the decoder receives the bottleneck's channels (deepest level) or f_{i+1}.
        incoming = widths[1:] + [bottleneck]
        if learned_resampling:
            self.down = nn.ModuleList(nn.Conv2d(f, f, 2, stride=2) for f in widths)
            self.up = nn.ModuleList(nn.ConvTranspose2d(c, f, 2, stride=2) for c, f in zip(incoming, widths))
            up_channels = widths
        else:
            self.down = self.up = None  # max-pool and nearest up-sampling have no weights
            up_channels = incoming
        self.decoder = nn.ModuleList(_two_blocks(u + f, f, f) for u, f in zip(up_channels, widths))
        self.head = nn.Conv2d(base, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, stage in enumerate(self.encoder):
            x = stage(x)
            skips.append(x)
            x = self.down[level](x) if self.learned_resampling else F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for level in reversed(range(len(self.decoder))):
            x = self.up[level](x) if self.learned_resampling else F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.decoder[level](torch.cat([x, skips[level]], dim=1))
        return self.head(x)


def build(name: str, base: int = 64, depth: int = 4) -> nn.Module:
    """The twin of ``kseg.models.build(name, base_filters=base, depth=depth)``."""
    if name == "segnet":
        return SegNet(base, depth)
    if name in ("unet", "unet2"):
        return UNet(base, depth, learned_resampling=name == "unet2")
    raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")


def param_count(model: nn.Module) -> int:
    """Trainable parameters (Keras' ``trainable_weights``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Conv(NamedTuple):
    """One convolution of a forward pass, for counting: ``spatial`` is the side of the output
    (a conv) or of the input (a transposed conv), the grid its kernel is applied over."""

    in_channels: int
    out_channels: int
    kernel: int
    spatial: int
    transposed: bool = False

    @property
    def macs(self) -> int:
        return self.spatial**2 * self.kernel**2 * self.in_channels * self.out_channels


def convolutions(name: str, size: int, base: int = 64, depth: int = 4, in_channels: int = 3) -> Iterator[Conv]:
    """Every convolution of one forward pass of a ``size`` x ``size`` image, from the architecture
    alone (no module is built or run)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    if size % 2**depth:
        raise ValueError(f"image size {size} is not divisible by 2**depth = {2**depth}")
    widths = level_widths(base, depth)
    side, c = size, in_channels
    for f in widths:  # encoder: two 3x3 blocks at this level's resolution, then halve it
        yield Conv(c, f, 3, side)
        yield Conv(f, f, 3, side)
        if name == "unet2":
            yield Conv(f, f, 2, side // 2)
        side, c = side // 2, f
    if name == "segnet":
        yield Conv(c, 2 * c, 3, side)
        yield Conv(2 * c, c, 3, side)
        outputs = [base // 2] + widths[:-1]
        for level in reversed(range(depth)):
            side *= 2  # unpooling: no arithmetic counted
            yield Conv(c, widths[level], 3, side)
            yield Conv(widths[level], outputs[level], 3, side)
            c = outputs[level]
    else:
        bottleneck = base * 2**depth
        yield Conv(c, bottleneck, 3, side)
        yield Conv(bottleneck, bottleneck, 3, side)
        c = bottleneck
        for level in reversed(range(depth)):
            f = widths[level]
            if name == "unet2":
                yield Conv(c, f, 2, side, transposed=True)
                c = f
            side *= 2
            yield Conv(c + f, f, 3, side)  # after the concat with the skip
            yield Conv(f, f, 3, side)
            c = f
    yield Conv(c, 1, 1, size)  # the logit head


def forward_flops(name: str, size: int, base: int = 64, depth: int = 4, batch: int = 1) -> int:
    """Analytic forward FLOPs: 2 x the multiply-adds of every conv and transposed conv (bias,
    BatchNorm, ReLU, pooling, up-sampling and concatenation are not counted)."""
    return 2 * batch * sum(conv.macs for conv in convolutions(name, size, base, depth))


def forward_gflops(name: str, size: int, base: int = 64, depth: int = 4) -> float:
    """``forward_flops`` of one image in GFLOPs (unrounded), the figure bench.py compares with the
    count read from the Keras layers."""
    return forward_flops(name, size, base, depth) / 1e9


def measured_forward_flops(model: nn.Module, size: int, batch: int = 1) -> int:
    """Forward FLOPs of ``model`` on a ``batch`` of ``size`` x ``size`` images as counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (runs one forward pass in eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(batch, 3, size, size))
    model.train(was_training)
    return counter.get_total_flops()


def time_mode(args: argparse.Namespace, mode: str) -> dict:
    """Trains and infers ``args.model`` in one mode; the JSON row."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
    torch.manual_seed(0)
    model = build(args.model, args.base, args.depth)
    gflops = forward_gflops(args.model, args.image_size, args.base, args.depth)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size)
    y = (torch.rand(args.batch, 1, args.image_size, args.image_size) > 0.5).float()
    if mode.endswith("-cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    bf16 = mode.startswith("bf16")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    budget = args.budget if args.budget and args.budget > 0 else float("inf")

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    model.train()
    train_s, train_times = median_seconds(train_step, args.warmup, args.steps, budget)
    model.eval()
    infer_s, infer_times = median_seconds(infer_step, args.warmup, args.steps, budget)
    return {
        "framework": f"torch-twin {torch.__version__}",
        "model": args.model,
        "mode": mode,
        "image_size": args.image_size,
        "base": args.base,
        "depth": args.depth,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "params": param_count(model),
        "gflops_fwd_per_image": gflops,
        "train_steps_timed": len(train_times),
        "infer_steps_timed": len(infer_times),
        "train_img_s": args.batch / train_s,
        "infer_img_s": args.batch / infer_s,
        "train_gflop_s": 3 * gflops * args.batch / train_s,  # backward counted as 2x forward
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="unet", choices=MODELS)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="timed steps; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument(
        "--budget", type=float, default=0, help="cap, in seconds, on each timed phase (min 3 steps); 0: none"
    )
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # The FLOP count every GFLOP/s figure rests on: the analytic one must be torch's own.
    count_size = 2**args.depth * 2  # small: the count scales exactly with the pixel count
    analytic = forward_flops(args.model, count_size, args.base, args.depth)
    measured = measured_forward_flops(build(args.model, args.base, args.depth), count_size)
    assert analytic == measured, f"{args.model}: analytic {analytic} FLOPs != FlopCounterMode {measured}"
    rows = [time_mode(args, mode) for mode in args.modes.split(",") if mode]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
