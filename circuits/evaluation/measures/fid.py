"""FID and KID of a generation folder against a folder of reference images (COCO-30k in the papers).

**Why neither torchmetrics nor clean-fid.** Both take their Inception network from packages that
require torchvision (torch-fidelity; clean-fid itself), which circuits must not install (it would
replace the CPU torch build). Both also fetch weights over the network by default. The Inception
they and StyleGAN use for "clean" FID is one TorchScript file, NVIDIA's
``inception-2015-12-05.pt`` (the TF FID graph's weights): ``torch.jit.load`` reads it with torch
alone, from a local path. The statistics are a few lines of numpy/scipy, written here and tested
against closed-form Gaussians:

* **FID** (Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` over the 2048-d
  pool features; the matrix square root by ``scipy.linalg.sqrtm``, with pytorch-fid's guard (add
  ``eps * I`` when the product is singular, drop an imaginary part that is rounding).
* **KID** (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  ``(x.y / d + 1)^3``, averaged over ``subsets`` random subsets of ``subset_size`` (clean-fid's and
  torchmetrics' defaults: 100 x 1000, capped by the folder sizes), with its standard deviation.

Images go to the network as uint8 RGB tensors ``[N, 3, H, W]`` in 0..255 (the file resizes to
299 px inside, as clean-fid feeds it); ``features=`` takes any other callable for tests.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from circuits.evaluation.measures.common import package_version, records, require, weights_sha256

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
_HOW = f"download {INCEPTION_URL} (the Inception clean-fid and StyleGAN use) and pass its path (--inception)"
#: kernel entries up to which KID computes the whole kernel matrices once (about 400 MB of float64)
KID_FULL_KERNEL_MAX = 50_000_000
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

Features = Callable[[Sequence[Any]], np.ndarray]


def frechet_distance(
    mu1: Float[np.ndarray, " d"], sigma1: Float[np.ndarray, "d d"], mu2: Float[np.ndarray, " d"],
    sigma2: Float[np.ndarray, "d d"], eps: float = 1e-6,
) -> float:  # fmt: skip
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: means {mu1.shape}/{mu2.shape} and covariances {sigma1.shape}/"
                         f"{sigma2.shape} must describe Gaussians of one dimension")  # fmt: skip
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # a singular product is handled just below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def statistics(features: Float[np.ndarray, "n d"]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as pytorch-fid's ``np.cov(rowvar=False)``)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"statistics: need features [n >= 2, d], got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(a: Float[np.ndarray, "n d"], b: Float[np.ndarray, "m d"]) -> float:
    return frechet_distance(*statistics(a), *statistics(b))


def kid_from_features(
    a: Float[np.ndarray, "n d"], b: Float[np.ndarray, "m d"], *, subsets: int = 100, subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """KID mean and standard deviation over ``subsets`` subsets (unbiased MMD^2, cubic polynomial kernel)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"kid: need at least 2 images on each side, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    kernel = lambda x, y: (x @ y.T / d + 1) ** 3
    # small sets: the kernel matrices once, each subset indexes them (same numbers, a fraction of the work);
    # COCO-30k-sized sets: per subset, as clean-fid does, to stay within memory
    full = len(a) * len(a) + len(b) * len(b) + len(a) * len(b) <= KID_FULL_KERNEL_MAX
    if full:
        kaa, kbb, kab = kernel(a, a), kernel(b, b), kernel(a, b)
    values = []
    for _ in range(subsets):
        ia, ib = rng.choice(len(a), size, replace=False), rng.choice(len(b), size, replace=False)
        if full:
            kxx, kyy, kxy = kaa[np.ix_(ia, ia)], kbb[np.ix_(ib, ib)], kab[np.ix_(ia, ib)]
        else:
            x, y = a[ia], b[ib]
            kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        m = size
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def inception_features(path: str | os.PathLike[str] | None, *, batch_size: int = 32, device: str = "cpu") -> Features:
    """A feature function over PIL images from the TorchScript Inception at ``path``."""
    import torch

    file = require(path, "Inception weights (--inception)", _HOW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated but reads the file everyone uses
        network = torch.jit.load(str(file), map_location=device).eval()

    def features(images: Sequence[Any]) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [np.asarray(image.convert("RGB")) for image in images[start : start + batch_size]]
            batch = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).to(device)
            with torch.no_grad():
                out.append(network(batch, return_features=True).float().cpu().numpy())
        return np.concatenate(out)

    features.provenance = {"weights": file.name, "weights_sha256": weights_sha256(file)}  # type: ignore[attr-defined]
    return features


def reference_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under a reference folder (sorted), at least two."""
    folder = require(folder, "reference image folder (--reference)", "give a folder of real images (e.g. COCO-30k)")
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"reference folder {folder} holds {len(files)} images; FID needs at least 2")
    return files


def extract(features: Features, files: Sequence[str | os.PathLike[str]], *, size: int | None = None,
            chunk: int = 256) -> np.ndarray:  # fmt: skip
    """``features`` of the images in ``files``, read ``chunk`` at a time (COCO-30k never sits in memory whole);
    ``size`` resizes each (bicubic) first."""
    from PIL import Image

    out = []
    for start in range(0, len(files), chunk):
        images = []
        for file in files[start : start + chunk]:
            with Image.open(file) as image:
                image = image.convert("RGB")
                images.append(image.resize((size, size), Image.BICUBIC) if size is not None else image)
        out.append(np.asarray(features(images)))
    return np.concatenate(out)


def fid(
    folder: str | os.PathLike[str], *, reference: str | os.PathLike[str],
    inception: str | os.PathLike[str] | None = None, features: Features | None = None, kid_subsets: int = 100,
    kid_subset_size: int = 1000, size: int | None = None, device: str = "cpu",
) -> dict[str, Any]:  # fmt: skip
    """FID and KID of the folder's images against ``reference``'s. ``size`` resizes both sides first
    (bicubic), as papers do when their generations and references differ in size. ``features`` (a
    function of a list of PIL images) replaces the Inception file."""
    features = features or inception_features(inception, device=device)
    generated = [row["path"] for row in records(folder)]
    real = reference_files(reference)
    a, b = extract(features, generated, size=size), extract(features, real, size=size)
    kid_mean, kid_std = kid_from_features(a, b, subsets=kid_subsets, subset_size=kid_subset_size)
    return {
        "values": {"fid": fid_from_features(a, b), "kid": kid_mean, "kid_std": kid_std},
        "images": len(generated),
        "per_image": {},
        "provenance": {"package": "circuits (numpy/scipy)", "scipy": package_version("scipy"),
                       **getattr(features, "provenance", {"features": "custom"}), "reference": str(reference),
                       "reference_images": len(real), "feature_dim": int(a.shape[1]), "resize": size,
                       "kid": {"kernel": "(x.y/d + 1)^3", "subsets": kid_subsets,
                               "subset_size": min(kid_subset_size, len(a), len(b))}},
    }  # fmt: skip
