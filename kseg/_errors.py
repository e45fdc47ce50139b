"""kseg's one style of error message, Keras's: what was expected, then ``Received: ...``."""

from __future__ import annotations

from typing import Any, Iterable


def unknown_name(kind: str, value: Any, choices: Iterable[Any]) -> ValueError:
    """``Unknown model 'x'. Expected one of: segnet, unet, unet2. Received: model='x'``."""
    return ValueError(
        f"Unknown {kind} {value!r}. Expected one of: {', '.join(map(str, choices))}. Received: {kind}={value!r}"
    )


def invalid_value(name: str, expected: str, value: Any) -> ValueError:
    """``` `ema` must be a momentum in [0, 1). Received: ema=1.5```."""
    return ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
