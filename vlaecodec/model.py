"""The VLAE model family: networks and the D + beta*R loss.  No entropy coding here.

One family, configured by :class:`VLAEConfig`:

* encoder q(z|x): conv net, 4x downsampling, diagonal Gaussian over a latent grid;
* prior p(z): standard normal (``prior="normal"``) or an autoregressive Gaussian prior over
  the latent grid (``prior="ar"``, an affine autoregressive flow of a standard normal);
* decoder p(x|z): ``"factorized"`` (no autoregression), ``"full"`` (a PixelCNN whose
  receptive field covers every earlier pixel) or ``"local"`` (the VLAE decoder: one masked
  window convolution, then per-pixel layers, so the receptive field is exactly the window).

Every subpixel gets a ``levels``-way categorical (256 for 8-bit images, 2 = Bernoulli for
binarized ones); inside a pixel R -> G -> B through embeddings of the earlier channels.
The networks use only convolutions, ReLU, nearest upsampling and embeddings, so that
:mod:`vlaecodec.exact` can run them in exact integer arithmetic for coding.

>>> import torch
>>> model = VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1))
>>> x = torch.randint(0, 256, (2, 3, 8, 8))
>>> out = model(x)
>>> sorted(out)[:3], out["distortion"].shape
(['bpd', 'dims', 'distortion'], torch.Size([2]))
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# the configuration and the constants the torch-free coder shares with the float network
from .config import (  # noqa: F401  (re-exported: model.VLAEConfig etc. stay importable)
    LOGISTIC_LOGSCALE_MAX,
    LOGISTIC_LOGSCALE_MIN,
    LOGSCALE_MAX,
    LOGSCALE_MIN,
    VLAEConfig,
    embed_index,
    window_offsets,
)

LOG2 = math.log(2.0)


def normalize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer pixels 0..levels-1 -> floats in [-1, 1]."""
    return x.float() * (2.0 / (levels - 1)) - 1.0


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int = 3, inner: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, inner or ch, k, padding=k // 2)
        self.conv2 = nn.Conv2d(inner or ch, ch, k, padding=k // 2)

    def forward(self, h):
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class Encoder(nn.Module):
    """x -> (mean, log std) of q(z|x) on a grid 4x smaller than the image."""

    def __init__(self, cfg: VLAEConfig):
        super().__init__()
        h, i = cfg.hidden, cfg.inner_width
        self.inp = nn.Conv2d(cfg.channels, i, 3, padding=1)
        self.down1 = nn.Conv2d(i, i, 4, stride=2, padding=1)
        self.down2 = nn.Conv2d(i, h, 4, stride=2, padding=1)
        self.blocks = nn.ModuleList(ResBlock(h, inner=i) for _ in range(cfg.res_blocks))
        self.out = nn.Conv2d(h, 2 * cfg.z_channels, 1)
        self.levels = cfg.levels

    def forward(self, x):
        h = F.relu(self.inp(normalize(x, self.levels)))
        h = F.relu(self.down1(h))
        h = self.down2(h)
        for b in self.blocks:
            h = b(h)
        mean, logscale = self.out(F.relu(h)).chunk(2, dim=1)
        return mean, logscale.clamp(LOGSCALE_MIN, LOGSCALE_MAX)


class ZDecoder(nn.Module):
    """z -> per-pixel conditioning features at full resolution.

    The last convolution runs at half resolution and is upsampled by repetition: z carries
    global structure, the window carries the detail, and the decoder stays cheap per pixel."""

    def __init__(self, cfg: VLAEConfig):
        super().__init__()
        h, i = cfg.hidden, cfg.inner_width
        self.inp = nn.Conv2d(cfg.z_channels, h, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(h, inner=i) for _ in range(cfg.res_blocks))
        self.up1 = nn.Conv2d(h, i, 3, padding=1)
        self.up2 = nn.Conv2d(i, cfg.pixel_hidden, 1)

    def forward(self, z):
        h = self.inp(z)
        for b in self.blocks:
            h = b(h)
        h = F.interpolate(F.relu(h), scale_factor=2, mode="nearest")
        h = self.up2(F.relu(self.up1(h)))
        return F.interpolate(h, scale_factor=2, mode="nearest")


class WindowConv(nn.Module):
    """A convolution that sees exactly the causal window of each pixel (all channels)."""

    def __init__(self, cin: int, cout: int, window: list[int]):
        super().__init__()
        a, b = window
        self.left = (a - 1) // 2
        self.right = a - 1 - self.left
        self.up = b
        self.conv = nn.Conv2d(cin, cout, (b + 1, a))
        mask = torch.zeros(b + 1, a)
        for dy, dx in window_offsets(window):
            mask[b + dy, self.left + dx] = 1.0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        x = F.pad(x, (self.left, self.right, self.up, 0))
        return F.conv2d(x, self.conv.weight * self.mask, self.conv.bias)


class FullContext(nn.Module):
    """Blind-spot-free PixelCNN (vertical + horizontal stacks): every earlier pixel is seen."""

    def __init__(self, cin: int, ch: int, layers: int, half: int = 3, rows: int = 3):
        super().__init__()
        self.half, self.rows = half, rows
        self.v_first = nn.Conv2d(cin, ch, (rows, 2 * half + 1))
        self.h_first = nn.Conv2d(cin, ch, (1, half))
        self.v = nn.ModuleList(nn.Conv2d(ch, ch, (rows + 1, 2 * half + 1)) for _ in range(layers - 1))
        self.h = nn.ModuleList(nn.Conv2d(ch, ch, (1, half + 1)) for _ in range(layers - 1))
        self.v2h = nn.ModuleList(nn.Conv2d(ch, ch, 1) for _ in range(layers))

    def forward(self, x):
        H, W = x.shape[-2:]
        r, k = self.rows, self.half
        v = self.v_first(F.pad(x, (k, k, r, 0)))[..., :H, :]      # rows strictly above
        h = self.h_first(F.pad(x, (k, 0, 0, 0)))[..., :, :W]      # strictly left, same row
        h = h + self.v2h[0](F.relu(v))
        for conv_v, conv_h, v2h in zip(self.v, self.h, self.v2h[1:]):
            v = v + conv_v(F.pad(F.relu(v), (k, k, r, 0)))
            h = h + conv_h(F.pad(F.relu(h), (k, 0, 0, 0))) + v2h(F.relu(v))
        return h


class PixelHeads(nn.Module):
    """Per-pixel layers and one head per channel; channel c also sees the values of channels
    < c of the same pixel, through embeddings (R -> G -> B) and, for the logistic mixture,
    linear shifts of the component means as in PixelCNN++.

    A categorical head gives ``levels`` logits; a logistic head gives, per component k,
    (weight logit, mean, log scale) and one mean coefficient per earlier channel."""

    def __init__(self, cfg: VLAEConfig, autoregressive_channels: bool):
        super().__init__()
        ph, pi = cfg.pixel_hidden, cfg.pixel_inner_width
        self.channels, self.levels = cfg.channels, cfg.levels
        self.logistic = cfg.likelihood == "logistic"
        self.K = cfg.mixtures
        self.autoregressive = autoregressive_channels
        self.trunk = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(ph, pi, 1), nn.ReLU(), nn.Conv2d(pi, ph, 1))
            for _ in range(cfg.pixel_blocks))
        n_emb = cfg.channels * (cfg.channels - 1) // 2 if autoregressive_channels else 0
        self.embed = nn.ModuleList(nn.Embedding(cfg.levels, ph) for _ in range(n_emb))
        self.hidden = nn.ModuleList(nn.Conv2d(ph, pi, 1) for _ in range(cfg.channels))
        self.out = nn.ModuleList(nn.Conv2d(pi, self.n_params(c), 1) for c in range(cfg.channels))

    def n_params(self, c: int) -> int:
        if not self.logistic:
            return self.levels
        return self.K * (3 + (c if self.autoregressive else 0))

    embed_index = staticmethod(embed_index)

    def trunk_forward(self, ctx):
        for block in self.trunk:
            ctx = ctx + block(ctx)
        return ctx

    def head(self, c: int, t, x):
        """Raw head output of channel c given trunk features t and the integer image x (c' < c)."""
        u = t
        if self.embed:
            for prev in range(c):
                u = u + self.embed[self.embed_index(c, prev)](x[:, prev]).permute(0, 3, 1, 2)
        return self.out[c](F.relu(self.hidden[c](F.relu(u))))

    def split_logistic(self, c: int, params, x):
        """(weight logits, means, log scales) [B,K,H,W] of channel c; means shifted by earlier channels."""
        K = self.K
        logit_w, mean, logscale = params[:, :K], params[:, K:2 * K], params[:, 2 * K:3 * K]
        if self.autoregressive:
            for prev in range(c):
                coef = params[:, (3 + prev) * K:(4 + prev) * K]
                mean = mean + coef * normalize(x[:, prev:prev + 1], self.levels)
        return logit_w, mean, logscale.clamp(LOGISTIC_LOGSCALE_MIN, LOGISTIC_LOGSCALE_MAX)

    def nll(self, ctx, x):
        """-log p(x|ctx) in nats per subpixel, [B,C,H,W]."""
        return self.nll_from_trunk(self.trunk_forward(ctx), x)

    def nll_from_trunk(self, t, x):
        """The same from the trunk's features t."""
        out = []
        for c in range(self.channels):
            params = self.head(c, t, x).float()
            if self.logistic:
                out.append(-logistic_mixture_logprob(*self.split_logistic(c, params, x), x[:, c], self.levels))
            else:
                out.append(F.cross_entropy(params, x[:, c].long(), reduction="none"))
        return torch.stack(out, dim=1)

    def sample(self, c: int, t, x, generator=None, greedy: bool = False):
        """Channel c's values at every position, drawn from (or the mode of) its distribution."""
        params = self.head(c, t, x).float()
        if self.logistic:
            probs = logistic_mixture_probs(*self.split_logistic(c, params, x), self.levels)
        else:
            probs = params.softmax(1)
        if greedy:
            return probs.argmax(1)
        B, L, H, W = probs.shape
        flat = probs.permute(0, 2, 3, 1).reshape(-1, L)
        return torch.multinomial(flat, 1, generator=generator).reshape(B, H, W)


def logistic_mixture_logprob(logit_w, mean, logscale, x, levels: int):
    """log P(x) of a discretized logistic mixture on [-1, 1] with ``levels`` bins, [B,H,W]."""
    xs = normalize(x, levels)[:, None]                 # B,1,H,W
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-logscale)
    plus, minus = (xs + half - mean) * inv_s, (xs - half - mean) * inv_s
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_cdf_plus = F.logsigmoid(plus)                   # for x = 0: P = cdf(plus)
    log_one_minus_cdf_minus = -F.softplus(minus)        # for x = L-1: P = 1 - cdf(minus)
    mid = (xs - mean) * inv_s
    log_pdf_mid = mid - logscale - 2 * F.softplus(mid) + math.log(2 * half)
    log_delta = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid)
    logp = torch.where(xs < -0.999, log_cdf_plus,
                       torch.where(xs > 0.999, log_one_minus_cdf_minus, log_delta))
    return torch.logsumexp(logp + F.log_softmax(logit_w, dim=1), dim=1)


def logistic_mixture_probs(logit_w, mean, logscale, levels: int):
    """Probabilities [B, levels, H, W] of every value (for sampling and figures)."""
    edges = torch.linspace(-1, 1, levels, device=mean.device)[:-1] + 1.0 / (levels - 1)
    t = (edges.view(1, 1, -1, 1, 1) - mean[:, :, None]) * torch.exp(-logscale)[:, :, None]
    cdf = torch.sigmoid(t)
    zeros, ones = torch.zeros_like(cdf[:, :, :1]), torch.ones_like(cdf[:, :, :1])
    mass = torch.diff(torch.cat([zeros, cdf, ones], dim=2), dim=2)  # B,K,L,H,W
    return (mass * logit_w.softmax(1)[:, :, None]).sum(1)


class ARPrior(nn.Module):
    """Autoregressive Gaussian prior over the latent grid (raster order over positions; the
    channels of one position are independent given earlier positions)."""

    def __init__(self, cfg: VLAEConfig):
        super().__init__()
        h = cfg.hidden
        self.ctx = WindowConv(cfg.z_channels, h, [5, 2])
        self.mid = nn.Conv2d(h, h, 1)
        self.out = nn.Conv2d(h, 2 * cfg.z_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z):
        mean, logscale = self.out(F.relu(self.mid(F.relu(self.ctx(z))))).chunk(2, dim=1)
        return mean, logscale.clamp(LOGSCALE_MIN, LOGSCALE_MAX)


def gaussian_logpdf(z, mean, logscale):
    return -0.5 * ((z - mean) * torch.exp(-logscale)) ** 2 - logscale - 0.5 * math.log(2 * math.pi)


class VLAE(nn.Module):
    def __init__(self, cfg: VLAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.zdecoder = ZDecoder(cfg)
        if cfg.decoder == "local":
            self.context = WindowConv(cfg.channels, cfg.pixel_hidden, cfg.window)
        elif cfg.decoder == "full":
            self.context = FullContext(cfg.channels, cfg.pixel_hidden, cfg.full_layers)
        elif cfg.decoder != "factorized":
            raise ValueError(f"unknown decoder {cfg.decoder!r}")
        self.heads = PixelHeads(cfg, autoregressive_channels=cfg.decoder != "factorized")
        self.prior = ARPrior(cfg) if cfg.prior == "ar" else None

    # --- the pieces -------------------------------------------------------------------
    def posterior(self, x):
        return self.encoder(x)

    def zero_latent(self, x):
        """z = 0 for images x [B, C, H, W]: the shape the posterior gives, [B, zc, H/4, W/4]."""
        return x.new_zeros((x.shape[0], self.cfg.z_channels, x.shape[2] // 4, x.shape[3] // 4), dtype=torch.float32)

    def pixel_context(self, x, z):
        """Per-pixel features before the heads: z features plus (causal) window features."""
        ctx = self.zdecoder(z)
        if self.cfg.decoder != "factorized":
            ctx = ctx + self.context(normalize(x, self.cfg.levels))
        return ctx

    def pixel_nll(self, x, z):
        """-log p(x|z) in nats per subpixel [B,C,H,W] for integer images x [B,C,H,W]."""
        return self.heads.nll(self.pixel_context(x, z), x)

    def kl(self, z, mean, logscale):
        """KL(q||p) per latent dimension: analytic for the normal prior, one-sample otherwise."""
        if self.prior is None:
            return 0.5 * (mean ** 2 + torch.exp(2 * logscale)) - logscale - 0.5
        pm, pl = self.prior(z)
        return gaussian_logpdf(z, mean, logscale) - gaussian_logpdf(z, pm, pl)

    def log_prior(self, z):
        if self.prior is None:
            return gaussian_logpdf(z, torch.zeros_like(z), torch.zeros_like(z))
        return gaussian_logpdf(z, *self.prior(z))

    def forward(self, x, beta: float = 1.0, valid=None, sample: bool = True):
        """Loss terms per image, in nats unless named *_bpd.  ``valid`` [B,1,H,W] masks padding."""
        if self.cfg.latent:
            mean, logscale = self.posterior(x)
            z = mean + torch.exp(logscale) * torch.randn_like(mean) if sample else mean
        else:   # no latent: z = 0 (the prior's mean) and no rate; the encoder is not run
            mean = logscale = z = self.zero_latent(x)
        trunk = self.heads.trunk_forward(self.pixel_context(x, z))
        nll = self.heads.nll_from_trunk(trunk, x)  # B,C,H,W
        if valid is not None:
            nll = nll * valid
            dims = valid.sum(dim=(1, 2, 3)) * x.shape[1]
        else:
            dims = torch.full((x.shape[0],), float(x[0].numel()), device=x.device)
        distortion = nll.sum(dim=(1, 2, 3))
        kl_map = self.kl(z, mean, logscale).float() if self.cfg.latent else torch.zeros_like(z)
        rate = kl_map.sum(dim=(1, 2, 3))
        loss = (distortion + beta * rate) / dims
        return {
            "loss": loss.mean(),
            "distortion": distortion,
            "rate": rate,
            "dims": dims,
            "bpd": (distortion + rate) / (dims * LOG2),
            "kl_per_dim": kl_map.mean(dim=(2, 3)),  # B, z_channels
            "mean": mean, "logscale": logscale,      # q(z|x), for distillation
            "z": z, "trunk": trunk,                  # the sample and the pixel features, likewise
        }

    @torch.no_grad()
    def iw_nll(self, x, k: int = 16):
        """Importance-weighted bound on -log p(x) in nats per image, with k samples (exact,
        -log p(x | z = 0), for a model without a latent)."""
        if not self.cfg.latent:
            return self.pixel_nll(x, self.zero_latent(x)).sum(dim=(1, 2, 3))
        mean, logscale = self.posterior(x)
        terms = []
        for _ in range(k):
            z = mean + torch.exp(logscale) * torch.randn_like(mean)
            logpx = -self.pixel_nll(x, z).sum(dim=(1, 2, 3))
            logw = logpx + (self.log_prior(z) - gaussian_logpdf(z, mean, logscale)).sum(dim=(1, 2, 3))
            terms.append(logw)
        return -(torch.logsumexp(torch.stack(terms), 0) - math.log(k))

    @torch.no_grad()
    def sample_pixels(self, z, shape, generator=None, greedy: bool = False):
        """Decode pixels given z, pixel by pixel in raster order (slow; for figures)."""
        B, C, H, W = shape
        x = torch.zeros(shape, dtype=torch.long, device=z.device)
        for y in range(H):
            for xx in range(W):
                t = self.heads.trunk_forward(self.pixel_context(x, z))
                for c in range(C):
                    x[:, c, y, xx] = self.heads.sample(c, t, x, generator, greedy)[:, y, xx]
        return x


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
