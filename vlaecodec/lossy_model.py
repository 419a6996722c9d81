"""The lossy model: a variable-rate mean-scale hyperprior autoencoder.  No entropy coding here.

The picture comes from the latent y in one pass: ``x_hat = g_s(y_hat)``.  Its rate is set by
beta in the objective ``D + beta * R`` (D: mean squared error per pixel on the 0..255 scale,
R: bits per pixel), so a higher beta gives a smaller file.  One network serves every beta:
it is trained at a few betas at once (``BETAS``), each with its own per-channel gain on y
(Cui et al., "Asymmetric gained deep image compression", CVPR 2021), and a beta between
two trained ones interpolates their gains geometrically, so beta is a continuous dial.

The gains are arranged so that only the encoder and the synthesis depend on beta: the
hyper-synthesis ``h_s``, which gives the means and widths that the entropy coder's tables
need, sees only the decoded hyper-latent.  So the coder's tables need no beta, and
:mod:`vlaecodec.lossy_coder` runs ``h_s`` in exact integer arithmetic; the synthesis may run
in floating point.

>>> import torch
>>> m = LossyModel(LossyConfig(n=8, m=8))
>>> out = m(torch.rand(2, 3, 64, 64) * 255, torch.tensor([0, 3]))
>>> out["x_hat"].shape, out["bpp"].shape
(torch.Size([2, 3, 64, 64]), torch.Size([2]))
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .lossy_config import BETAS, SCALE_MIN, LossyConfig, beta_level, black_squares  # noqa: F401 - also named here

LIKELIHOOD_MIN = 1e-9


class GDN(nn.Module):
    """Generalized divisive normalization (Balle et al. 2016); ``inverse`` multiplies instead."""

    def __init__(self, ch: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(0.1 * torch.eye(ch))

    def forward(self, x):
        beta = self.beta.abs() + 1e-6
        gamma = self.gamma.abs()
        norm = torch.sqrt(F.conv2d(x * x, gamma[:, :, None, None], beta))
        return x * norm if self.inverse else x / norm


def conv(cin, cout, k=5, stride=2):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin, cout, k=5, stride=2):
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class UpConv(nn.Module):
    """Nearest 2x upsampling, then a 3x3 convolution: the hyper-synthesis's only layer kind
    besides ReLU, so that its integer copy stays a few lines."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class FactorizedDensity(nn.Module):
    """A learned density per channel for the hyper-latent z (Balle et al. 2018, appendix 6.1):
    a monotone MLP gives each channel's cumulative logits."""

    def __init__(self, ch: int, filters=(3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((ch, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(ch, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(ch, dims[i + 1], 1)))

    def logits_cdf(self, v):
        """v: [C, 1, K] -> cumulative logits [C, 1, K]."""
        for i, (mat, bias) in enumerate(zip(self.matrices, self.biases)):
            v = torch.matmul(F.softplus(mat), v) + bias
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i]) * torch.tanh(v)
        return v

    def likelihood(self, z):
        """z: [B, C, H, W] (noisy or rounded) -> the mass of [z - 1/2, z + 1/2] per element."""
        b, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()   # evaluate in the tail that keeps precision
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return p.reshape(c, b, h, w).permute(1, 0, 2, 3).clamp_min(LIKELIHOOD_MIN)


def gaussian_likelihood(y, mean, scale):
    """Mass of [y - 1/2, y + 1/2] under N(mean, scale), computed in the lower tail."""
    v = (y - mean).abs()
    scale = scale.clamp_min(SCALE_MIN)
    c = 1.0 / (scale * math.sqrt(2.0))
    p = 0.5 * torch.erfc((v - 0.5) * c) - 0.5 * torch.erfc((v + 0.5) * c)
    return p.clamp_min(LIKELIHOOD_MIN)


def ste_round(v: torch.Tensor) -> torch.Tensor:
    """v rounded, with the gradient of v (straight through)."""
    return v + (torch.round(v) - v).detach()


def anchors(h: int, w: int) -> torch.Tensor:
    """[1, 1, h, w]: True on the checkerboard's black squares ((row + column) even), the half
    of y coded first.

    >>> anchors(2, 3).int().tolist()
    [[[[1, 0, 1], [0, 1, 0]]]]
    """
    return torch.from_numpy(black_squares(h, w))[None, None]


class LossyModel(nn.Module):
    def __init__(self, cfg: LossyConfig):
        super().__init__()
        self.cfg = cfg
        n, m, k = cfg.n, cfg.m, len(cfg.betas)
        self.g_a = nn.Sequential(conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))
        self.g_s = nn.Sequential(deconv(m, n), GDN(n, True), deconv(n, n), GDN(n, True),
                                 deconv(n, n), GDN(n, True), deconv(n, 3))
        self.h_a = nn.Sequential(conv(m, n, 3, 1), nn.LeakyReLU(), conv(n, n), nn.LeakyReLU(), conv(n, n))
        mid = cfg.hs_width
        self.h_s = nn.Sequential(UpConv(n, n), nn.ReLU(), UpConv(n, mid), nn.ReLU(),
                                 nn.Conv2d(mid, 2 * m, 3, padding=1))
        self.z_density = FactorizedDensity(n)
        if cfg.context:
            # y's second half (the checkerboard's white squares) is coded after the first, so
            # its means and widths may also depend on the decoded first half (He et al.,
            # "Checkerboard context model", CVPR 2021).  Added to h_s's output: the last layer
            # starts at zero, so a model grown from one without context starts where it was.
            self.ctx = nn.Sequential(nn.Conv2d(m, cfg.context, 5, padding=2), nn.ReLU(),
                                     nn.Conv2d(cfg.context, 2 * m, 1))
            nn.init.zeros_(self.ctx[2].weight)
            nn.init.zeros_(self.ctx[2].bias)
        # log-gains per trained beta: on y before quantization (encoder), on y_hat before the
        # synthesis (decoder), and on z before its quantization (encoder only)
        # Started apart, so that every beta has its own rate from the first step: distortion
        # goes with the square of the quantization step, so betas spanning 100x want steps
        # spanning about 10x; gains learned from equal starts drift apart only slowly.
        spread = torch.linspace(-0.5, 0.5, k)[:, None] * math.log(max(cfg.betas) / min(cfg.betas)) / 2
        self.log_gain_y = nn.Parameter(spread.repeat(1, m))
        self.log_gain_y_inv = nn.Parameter(-spread.repeat(1, m))
        self.log_gain_z = nn.Parameter(torch.zeros(k, n))

    # -- gains -------------------------------------------------------------------------------
    def level(self, beta: float) -> float:
        """A beta as a fractional index into ``cfg.betas`` (log-linear between trained betas)."""
        return beta_level(self.cfg.betas, beta)

    def gains(self, level) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-channel gains at a (batch of) level(s): integer levels pick trained rows,
        fractional ones interpolate the log-gains (a geometric mean of the gains)."""
        level = torch.as_tensor(level, dtype=torch.float32).reshape(-1)
        lo = level.floor().long().clamp(0, len(self.cfg.betas) - 1)
        hi = (lo + 1).clamp(max=len(self.cfg.betas) - 1)
        t = (level - lo.float())[:, None]
        out = []
        for p in (self.log_gain_y, self.log_gain_y_inv, self.log_gain_z):
            out.append(torch.exp((1 - t) * p[lo] + t * p[hi])[:, :, None, None])
        return tuple(out)

    # -- the pieces the coder uses -----------------------------------------------------------
    def analysis(self, x, level):
        """Pixels 0..255 [B,3,H,W] (H, W multiples of 64) -> (y, z) before quantization."""
        gy, _, gz = self.gains(level)
        y = self.g_a(x / 127.5 - 1.0) * gy
        z = self.h_a(y) * gz
        return y, z

    def hyper_synthesis(self, z_hat):
        """z_hat -> (mean, scale) of y."""
        mean, scale = self.h_s(z_hat).chunk(2, dim=1)
        return mean, F.softplus(scale)

    def quantized(self, y, z_hat):
        """(y_hat, mean, scale): y rounded around its means (straight-through gradient), with
        the widths the entropy coder uses, after every context stage (:meth:`contexts`)."""
        y_hat, mean, raw = self.contexts(self.h_s(z_hat), lambda mean: mean + ste_round(y - mean))
        return y_hat, mean, F.softplus(raw)

    def contexts(self, hs_out, rounded):
        """(y_hat, mean, raw width) from h_s's output, stage by stage in the coder's order of
        parts (docs/FORMAT.md, lossy step 2): each context stage corrects the means and widths
        of the parts still to come from the parts before, which are rounded anew around their
        new means.  ``rounded(mean)``: y rounded around ``mean`` (only the elements whose
        means moved are taken from it)."""
        mean, raw = hs_out.chunk(2, dim=1)
        y_hat = rounded(mean)
        if self.cfg.context:   # the white squares read every black one
            black = anchors(y_hat.shape[2], y_hat.shape[3]).to(y_hat.dtype)
            d_mean, d_raw = self.ctx(y_hat * black).chunk(2, dim=1)
            mean, raw = mean + d_mean * (1 - black), raw + d_raw * (1 - black)
            y_hat = y_hat * black + rounded(mean) * (1 - black)
        return y_hat, mean, raw

    def synthesis(self, y_hat, level):
        _, gy_inv, _ = self.gains(level)
        return (self.g_s(y_hat * gy_inv) + 1.0) * 127.5

    # -- training ----------------------------------------------------------------------------
    def forward(self, x, level):
        """x: pixels 0..255 [B,3,H,W]; level: [B] indices into ``cfg.betas``.
        Rates use additive uniform noise; the synthesis sees y rounded around its mean with a
        straight-through gradient (Minnen & Singh 2020)."""
        y, z = self.analysis(x, level)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_for_hs = z + (torch.round(z) - z).detach()
        y_hat, mean, scale = self.quantized(y, z_for_hs)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        x_hat = self.synthesis(y_hat, level)
        pixels = x.shape[2] * x.shape[3]
        bits_y = -torch.log2(gaussian_likelihood(y_noisy, mean, scale)).sum((1, 2, 3))
        bits_z = -torch.log2(self.z_density.likelihood(z_noisy)).sum((1, 2, 3))
        mse = ((x_hat - x) ** 2).mean((1, 2, 3))
        return {"x_hat": x_hat, "bpp": (bits_y + bits_z) / pixels, "bpp_z": bits_z / pixels, "mse": mse}

    def loss(self, out, level):
        """(D + beta R) / beta averaged over the batch: dividing by beta gives every trained
        beta gradients of a similar size (the usual R + lambda D scaling)."""
        betas = torch.tensor(self.cfg.betas)[torch.as_tensor(level).long()]
        return (out["mse"] / betas + out["bpp"]).mean()
