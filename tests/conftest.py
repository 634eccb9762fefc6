from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own array cache: none writes into ~/.cache."""
    monkeypatch.setenv("LEUKOLEARN_CACHE", str(tmp_path / "leukolearn-cache"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the repository, or skip: it is absent on users' machines."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture
def cell_image():
    """cell_image(seed, h=80, w=80) -> a uint8 (h, w, 3) image of random discs on a
    background: distinct seeds give images that no perceptual hash confuses."""
    def make(seed: int, h: int = 80, w: int = 80) -> np.ndarray:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:h, :w]
        img = np.empty((h, w, 3))
        img[:] = rng.uniform(150, 240, 3)
        for _ in range(8):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.08, 0.3) * min(h, w)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(20, 220, 3)
        return img.astype(np.uint8)
    return make
