"""``python -m kseg.models``: the model family's tables for docs/models.md, read off the registries.

    python -m kseg.models                                   # the decoders
    python -m kseg.models --costs egeunet@8 unext@16 unet   # parameters and forward GFLOPs

``NAME@WIDTH`` builds that model at base width WIDTH (a light network at its paper's width).
"""

from __future__ import annotations

import argparse


def decoder_table() -> str:
    """One row per registered decoder: what it does, the encoders it pairs with, its default one
    and whether it has side outputs for ``--deep-supervision``."""
    from kseg.models import decoders

    lines = [
        "| decoder | what it does | pairs with | default encoder | side outputs |",
        "|---|---|---|---|---|",
    ]
    for name, decoder in decoders.REGISTRY.items():
        pairs = ", ".join(f"`{e}`" for e in decoder.encoders) if decoder.encoders else "any encoder"
        sides = "yes" if decoder.side_outputs else ""
        lines.append(f"| `{name}` | {decoder.summary} | {pairs} | `{decoder.default_encoder}` | {sides} |")
    return "\n".join(lines)


def cost_table(specs: list[str], image_size: int, base_filters: int) -> str:
    """Trainable parameters (what papers print) and one image's forward multiply-accumulates
    (what the light networks' papers print as "GFLOPs") and FLOPs (2 per MAC: kseg's rows and
    benchmarks), counted from the layers (:mod:`kseg.models.cost`)."""
    from kseg import models
    from kseg.models import cost

    lines = [
        f"| model | trainable parameters | GMACs at {image_size} px | GFLOPs at {image_size} px |",
        "|---|---|---|---|",
    ]
    for spec in specs:
        name, _, width = spec.partition("@")
        model = models.build(name, input_shape=(image_size, image_size, 3), base_filters=int(width or base_filters))
        macs, parameters = cost.forward_macs(model) / 1e9, cost.trainable_parameter_count(model)
        lines.append(f"| `{spec}` | {parameters:,} | {macs:.4f} | {2 * macs:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kseg.models", description=__doc__.split("\n\n")[0])
    p.add_argument("--costs", nargs="+", metavar="NAME[@WIDTH]", help="the cost table of these models instead")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--base-filters", type=int, default=16, help="the width of a NAME without @WIDTH")
    args = p.parse_args(argv)
    print(cost_table(args.costs, args.image_size, args.base_filters) if args.costs else decoder_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
