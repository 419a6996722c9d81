"""What the coder needs to know of a VLAE without torch: its configuration, the geometry of
its pixel window, the clamps of its log scales and the order of its channel embeddings.

Coding runs the exact integer copy of the network (:mod:`vlaecodec.exact`), which needs only
these and the weights, so a process that only codes never imports torch; the float network
(:mod:`vlaecodec.model`, for training) imports them from here.

>>> window_offsets([3, 1])
[(-1, -1), (-1, 0), (-1, 1), (0, -1)]
>>> VLAEConfig.from_dict({"hidden": 8, "unknown": 1}).hidden
8
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

LOGSCALE_MIN, LOGSCALE_MAX = -7.0, 2.0                      # q(z|x): log sigma of a latent
LOGISTIC_LOGSCALE_MIN, LOGISTIC_LOGSCALE_MAX = -7.0, 3.0    # p(x|z): log scale of a mixture component


@dataclass
class VLAEConfig:
    channels: int = 3            # 1 (grey / binary) or 3 (RGB)
    levels: int = 256            # values per subpixel: 256 (8-bit) or 2 (binary)
    z_channels: int = 8          # latent channels per 4x4 block of pixels
    hidden: int = 64             # width of encoder and z-decoder
    res_blocks: int = 2          # residual blocks at each latent-resolution stage
    pixel_hidden: int = 64       # width of the pixel decoder
    pixel_blocks: int = 2        # per-pixel residual blocks after the window
    decoder: str = "local"       # "local" | "full" | "factorized"
    window: list[int] = field(default_factory=lambda: [7, 4])  # [A wide, B rows up]
    full_layers: int = 12        # masked layers of the "full" decoder
    prior: str = "normal"        # "normal" | "ar"
    likelihood: str = "categorical"  # "categorical" | "logistic" (discretized logistic mixture)
    mixtures: int = 5            # components of the logistic mixture
    inner: int = 0               # width inside the encoder's and z-decoder's layers (0: hidden)
    pixel_inner: int = 0         # width inside the pixel decoder's blocks and heads (0: pixel_hidden)
    latent: bool = True          # False: z = 0 everywhere, no posterior, no rate (a local model)

    # ``latent=False`` makes the pixel decoder a local autoregressive model on its own (as
    # NeLLoC's): its z-features are the z-decoder's output for z = 0, the encoder is never run,
    # and the coder sends no z and needs no bits-back (vlaecodec.bands), so a decoder skips the
    # posterior and the z-decoder, about two-fifths of a lossless decode's work.
    #
    # The residual streams (``hidden``, ``pixel_hidden``) carry what the layers share; the
    # layers' own hidden units (``inner``, ``pixel_inner``) can be fewer: most of the
    # multiply-adds are theirs, and a model cut out of a wider one (:mod:`vlaecodec.prune`)
    # keeps its streams whole.
    @property
    def inner_width(self) -> int:
        return self.inner or self.hidden

    @property
    def pixel_inner_width(self) -> int:
        return self.pixel_inner or self.pixel_hidden

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VLAEConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def window_offsets(window: list[int]) -> list[tuple[int, int]]:
    """(dy, dx) of the causal window: B rows above, A pixels wide, (A-1)//2 to the left in the
    current row.  The pixel itself is excluded."""
    a, b = window
    left = (a - 1) // 2
    right = a - 1 - left
    offs = [(dy, dx) for dy in range(-b, 0) for dx in range(-left, right + 1)]
    return offs + [(0, dx) for dx in range(-left, 0)]


def embed_index(c: int, prev: int) -> int:
    """Index of the embedding of channel ``prev`` used by the head of channel ``c``."""
    return c * (c - 1) // 2 + prev
