"""The real LEMUR corpus (nn-dataset 2.1.2): what the index holds, checked against measured counts.

Uses, in order: the wheel named by $NASGRAPH_LEMUR_WHEEL, one kept in the home's lemur folder
(`nasgraph lemur pull --keep-wheel`) or in pip's HTTP cache, each indexed afresh into a temporary
folder; else a current index already in the home (`nasgraph lemur pull`). Skips when there is none:
the unit tests cover the logic, this covers the real corpus.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nasgraph.config import default_home
from nasgraph.tools import lemur
from nasgraph.tools.lemur import WHEEL
from nasgraph.tools.lemur.fetch import find_in_pip_cache, is_current

pytestmark = pytest.mark.integration

# Measured on the index of nn-dataset 2.1.2 (2026-11-27): runs with a recorded accuracy, and models
# with at least one such run. CIFAR-10 has 8,399 model folders and 35,679 epoch files, but 13,375 of
# those files are empty lists.
IMAGE_CLASSIFICATION = {
    "cifar-10": (119_330, 5_724),
    "mnist": (76_210, 2_201),
    "svhn": (74_753, 2_882),
    "cifar-100": (62_212, 1_854),
    "imagenette": (59_037, 1_834),
    "celeba-gender": (47_534, 2_145),
    "places365": (10_596, 337),
}


def _wheel() -> Path | None:
    if os.environ.get("NASGRAPH_LEMUR_WHEEL"):
        return Path(os.environ["NASGRAPH_LEMUR_WHEEL"]).expanduser()
    kept = lemur.lemur_dir(default_home()) / WHEEL.filename
    return kept if kept.is_file() else find_in_pip_cache(WHEEL)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel = _wheel()
    if wheel is not None:
        built = tmp_path_factory.mktemp("lemur")
        lemur.pull(built, wheel=wheel)
        return built
    home_root = lemur.lemur_dir(default_home())
    if is_current(home_root, WHEEL):
        return home_root
    pytest.skip(f"no {WHEEL.filename} (set NASGRAPH_LEMUR_WHEEL, or run `nasgraph lemur pull --keep-wheel`) "
                f"and no current index in {home_root} (`nasgraph lemur pull`)")


def test_corpus_totals(root: Path) -> None:
    s = lemur.stats(root)
    assert s.model_files == pytest.approx(10_482, rel=0.005)  # 10,483 files less the package's __init__.py
    assert s.stat_files == pytest.approx(105_447, rel=0.005)
    assert s.records == pytest.approx(578_595, rel=0.01)
    assert s.skipped_files == 0 and s.skipped_rows == 0 and s.parse_errors == 0
    assert s.literal_hyperparameters >= 0.99 * s.model_files
    assert 0.75 * s.model_files <= s.torch_only_models < s.model_files


def test_image_classification_per_dataset(root: Path) -> None:
    by = {d.dataset: d for d in lemur.stats(root).datasets if d.task == "img-classification"}
    assert set(by) == set(IMAGE_CLASSIFICATION)
    for name, (records, models) in IMAGE_CLASSIFICATION.items():
        d = by[name]
        assert d.records == pytest.approx(records, rel=0.01), name
        assert d.models == pytest.approx(models, rel=0.01), name
        assert 0 <= d.acc_min <= d.acc_median <= d.acc_max <= 1, name
    assert by["cifar-10"].model_folders == pytest.approx(8_399, rel=0.01)
    assert by["mnist"].acc_median > 0.9 > by["cifar-100"].acc_median


def test_queries_on_the_real_index(root: Path) -> None:
    top = lemur.list_models(root, dataset="cifar-10", limit=5)
    assert len(top) == 5 and 0.9 < top[0].series.best <= 1
    assert [r.series.best for r in top] == sorted((r.series.best for r in top), reverse=True)
    alexnet = lemur.show(root, "AlexNet")
    assert "class Net" in alexnet.code and alexnet.hyperparameters == ["dropout", "lr", "momentum"]
    assert {s.dataset for s in alexnet.series} >= {"cifar-10", "mnist", "svhn"}
    assert len(lemur.list_models(root, family="FractalNet", limit=0)) > 1000
