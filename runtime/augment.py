"""Batched DARTS augmentation on uint8 tensors, on whatever device the batch lives on.

torchvision is not a dependency, and per-image PIL transforms would make the
data loader the bottleneck of a search on a GPU anyway. So the DARTS pipeline
`RandomCrop(pad) -> RandomHorizontalFlip -> ToTensor -> Normalize -> Cutout` is
redone here on whole batches. The order is kept: cropping happens on pixels,
so the padding is black (pixel 0) exactly as torchvision pads a PIL image, and
cutout happens after normalisation, so the hole is 0 in normalised space, as in
DARTS `utils.Cutout`.

Random draws come from `generator` when given (on the generator's own device,
then moved), which makes an augmented batch a pure function of the seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from nasc.errors import DataError

if TYPE_CHECKING:
    from nasc.runtime.data import Dataset


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """`n` integers in [0, high), drawn where the generator lives, returned on `device`."""
    where = generator.device if generator is not None else device
    return torch.randint(high, (n,), generator=generator, device=where).to(device)


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    where = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=where).to(device)


def random_crop(x: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by `pad` on every side and crop back to (H, W) at a random offset per image."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    oy = _randint(2 * pad + 1, b, generator, x.device)  # (B,)
    ox = _randint(2 * pad + 1, b, generator, x.device)  # (B,)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    mask = _rand(x.shape[0], generator, x.device) < 0.5  # (B,)
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def cutout_mask(h: int, w: int, cy: Tensor, cx: Tensor, length: int) -> Tensor:
    """(B, H, W) bool, True inside the `length`-sided square at each centre, clipped at the borders.

    The square spans [c - length//2, c - length//2 + length), which for even
    lengths is exactly DARTS `utils.Cutout` (`clip(c -/+ length // 2)`).
    """
    lo_y, lo_x = cy - length // 2, cx - length // 2  # (B,)
    ys = torch.arange(h, device=cy.device)
    xs = torch.arange(w, device=cx.device)
    in_y = (ys >= lo_y[:, None]) & (ys < lo_y[:, None] + length)  # (B, H)
    in_x = (xs >= lo_x[:, None]) & (xs < lo_x[:, None] + length)  # (B, W)
    return in_y[:, :, None] & in_x[:, None, :]  # (B, H, W)


def cutout(x: Tensor, length: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero one square per image (all channels), its centre uniform over the image."""
    if length == 0:
        return x
    b, _, h, w = x.shape
    cy = _randint(h, b, generator, x.device)  # (B,)
    cx = _randint(w, b, generator, x.device)  # (B,)
    return x.masked_fill(cutout_mask(h, w, cy, cx, length)[:, None], 0.0)  # (B, C, H, W)


class Augment:
    """uint8 batch -> normalised float batch, with DARTS train-time augmentation when `train`.

    `crop_pad` and `flip` default to the dataset's own choice (no flips for
    digits, smaller padding for small images); pass them to override.
    """

    def __init__(self, dataset: Dataset, *, crop_pad: int | None = None, flip: bool | None = None,
                 cutout: int = 0, train: bool = True):
        self.crop_pad = dataset.crop_pad if crop_pad is None else crop_pad
        self.flip = dataset.flip if flip is None else flip
        self.cutout = cutout
        self.train = train
        self.channels = dataset.shape[0]
        if self.crop_pad < 0 or self.cutout < 0:
            raise DataError(f"crop_pad and cutout must be >= 0, got {self.crop_pad} and {self.cutout}")
        self._mean = torch.tensor(dataset.mean, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
        self._std = torch.tensor(dataset.std, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Cached per device so a GPU loop does not copy mean/std host-to-device every batch.
        if device not in self._stats:
            self._stats[device] = (self._mean.to(device), self._std.to(device))
        return self._stats[device]

    def normalise(self, images: Tensor) -> Tensor:
        """(x / 255 - mean) / std as float32."""
        mean, std = self._on(images.device)
        return (images.float() / 255.0 - mean) / std  # (B, C, H, W)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != self.channels:
            raise DataError(f"Augment expects uint8 (B, {self.channels}, H, W) images, "
                            f"got {images.dtype} {tuple(images.shape)}")
        x = images
        if self.train:
            x = random_crop(x, self.crop_pad, generator)
            if self.flip:
                x = random_flip(x, generator)
        x = self.normalise(x)  # (B, C, H, W) float
        if self.train:
            x = cutout(x, self.cutout, generator)
        return x
