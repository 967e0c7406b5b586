"""Test sets other than the bundled one, made at test time in their original formats, and the per-image table
streamed from them into the Parquet store: resumed after a kill, reused, sharded over torchrun processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from routescope.analysis.core import table_store
from routescope.analysis.core.table import dataset_table, load_test_images
from routescope.analysis.core.table_store import build_parts, merge_parts, stored_table, table_path
from routescope.analysis.core.testsets import TestSet, default_test_set, label_map, open_test_set
from routescope.analysis.table import main as table_main
from routescope.models import create_model
from routescope.models.checkpoint import load_checkpoint, save_checkpoint
from routescope.models.data import DataNotFoundError

from helpers import CIFAR_META, REPO, TINY_META, write_cifar10


def tiny_model(meta: dict) -> torch.nn.Module:
    model = create_model("resnet8", num_classes=len(meta["classes"]), in_chans=meta["input_size"][0]).eval()
    model.meta = meta
    return model


def write_images(folder, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", size, (20 * i % 256, 100, 200)).save(folder / name)


def test_cifar_batches_open_with_their_labels(tmp_path):
    images, labels = write_cifar10(tmp_path)
    data = open_test_set(TestSet("cifar10", str(tmp_path)), CIFAR_META)
    assert len(data) == 12 and data.labelled
    image, label = data[3]
    assert label == labels[3] and torch.equal(image, torch.from_numpy(images[3]))
    table = stored_table(tiny_model(CIFAR_META), data, root=tmp_path / "store")
    assert list(table["label"]) == labels and table["correct"].notna().all()


def test_svhn_mat_opens_with_zero_as_label_0(tmp_path):
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    x = np.random.default_rng(1).integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [3], [4]])})
    meta = {**CIFAR_META, "dataset": "svhn", "classes": [str(d) for d in range(10)]}
    data = open_test_set(TestSet("svhn", str(tmp_path)), meta)
    assert [data[i][1] for i in range(5)] == [0, 1, 2, 3, 4]
    assert torch.equal(data[0][0], torch.from_numpy(x[..., 0]).permute(2, 0, 1))


def test_imagefolder_labels_by_class_name_and_unmatched_folders_unlabelled(tmp_path):
    write_images(tmp_path / "val" / "Airplane", ["a.png", "b.jpg"])
    write_images(tmp_path / "val" / "automobile", ["c.png"])
    write_images(tmp_path / "val" / "spaceship", ["d.png"])  # not a class of the model
    data = open_test_set(TestSet("imagefolder", str(tmp_path)), CIFAR_META)
    assert data.classes == ("Airplane", "automobile", "spaceship")
    assert [data[i][1] for i in range(len(data))] == [0, 0, 1, -1]
    table = stored_table(tiny_model(CIFAR_META), data, root=tmp_path / "store")
    assert table["correct"].isna().sum() == 1 and pd.isna(table.loc[3, "class"]) and table.loc[0, "class"] == "airplane"


def test_a_plain_folder_at_224_is_unlabelled_routing_and_cost(tmp_path):
    write_images(tmp_path / "photos", ["x.png", "y.jpg", "z.webp"], size=(300, 200))
    meta = {**CIFAR_META, "input_size": [3, 224, 224], "crop_pct": 0.875, "dataset": "imagenet"}
    data = open_test_set(TestSet("folder", str(tmp_path / "photos")), meta)
    assert len(data) == 3 and not data.labelled and data[0][0].shape == (3, 224, 224)
    table = stored_table(tiny_model(meta), data, root=tmp_path / "store")
    assert len(table) == 3 and table["correct"].isna().all() and (table["macs"] > 0).all()


def test_fashion_mnist_for_a_cifar_model_is_converted_and_unlabelled():
    data = open_test_set(TestSet(), CIFAR_META)
    image, label = data[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == -1
    assert label_map(["T-shirt/top", "ankle_boot"], TINY_META["classes"]) == [0, 9]


def test_default_is_the_checkpoints_own_set_where_found_else_the_bundled_one(tmp_path):
    assert default_test_set(CIFAR_META) == TestSet()  # no CIFAR-10 on this machine's default paths
    write_cifar10(tmp_path)
    assert default_test_set(CIFAR_META, str(tmp_path)) == TestSet("cifar10", str(tmp_path))
    assert default_test_set(TINY_META) == TestSet()  # a Fashion-MNIST model: the bundled subset
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        open_test_set(TestSet("cifar10", str(tmp_path / "nothing")), CIFAR_META)


def test_the_stored_table_is_the_in_memory_table_and_is_reused(tmp_path, loaded_checkpoint, monkeypatch):
    model = loaded_checkpoint(REPO / "models" / "pretrained" / "skipnet_resnet20_fmnist_a0.75_fta6kd.pt")
    data = open_test_set(TestSet(), model.meta)
    table = stored_table(model, data, root=tmp_path, chunk=200)
    pd.testing.assert_frame_equal(table, dataset_table(model, *load_test_images()), check_dtype=False)
    stricter = stored_table(model, data, knobs={"threshold": 0.9}, root=tmp_path, chunk=200)
    assert stricter["macs"].mean() < table["macs"].mean()  # a knob value is its own table
    monkeypatch.setattr(table_store, "build_parts", lambda *a, **k: pytest.fail("traced again"))
    pd.testing.assert_frame_equal(stored_table(model, data, root=tmp_path, chunk=200), table)
    assert len(list(tmp_path.rglob("*.parquet"))) == 2


def test_a_killed_build_resumes_at_the_first_missing_chunk(tmp_path, monkeypatch):
    model = tiny_model(TINY_META)
    data = open_test_set(TestSet(), TINY_META)
    out = table_path(model, data, root=tmp_path)
    original, calls = table_store.table_rows, {"n": 0}

    def dies_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(table_store, "table_rows", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        build_parts(model, data, out, batch_size=100, chunk=100)
    assert len(list(out.with_suffix(".parts").glob("part-*.parquet"))) == 2
    monkeypatch.setattr(table_store, "table_rows", original)
    assert build_parts(model, data, out, batch_size=100, chunk=100) == 300  # chunks 3-5 only
    resumed = merge_parts(model, data, out, chunk=100)
    pd.testing.assert_frame_equal(resumed, dataset_table(model, *load_test_images()), check_dtype=False)
    assert not out.with_suffix(".parts").exists() and out.exists()


def test_table_command_writes_parquet_and_names_a_missing_data_set(tmp_path, capsys):
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, create_model("resnet8", in_chans=1), TINY_META)
    store = ["--store", str(tmp_path / "store"), "--no-progress"]
    assert table_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "t.parquet"), *store]) == 0
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == 500
    assert table_main(["--checkpoint", str(checkpoint), "--dataset", "svhn", "--data-dir", str(tmp_path), *store]) == 2
    assert "SVHN not found" in capsys.readouterr().err


@pytest.mark.heavy
def test_torchrun_shards_the_set_and_merges_the_same_table(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, create_model("resnet8", in_chans=1), TINY_META)
    common = ["-m", "analysis.table", "--checkpoint", str(checkpoint), "--no-progress", "--batch-size", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, *common, "--store", str(tmp_path / "a"), "--out", str(tmp_path / "a.pq")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    sharded = subprocess.run(
        [*torchrun, *common, "--store", str(tmp_path / "b"), "--out", str(tmp_path / "b.pq")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert sharded.returncode == 0, sharded.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.pq"), pd.read_parquet(tmp_path / "b.pq"))


def test_bench_and_experiments_take_a_test_set(tmp_path, capsys):
    """``tools.bench`` times a CIFAR model on CIFAR images; ``analysis.experiments --dataset`` measures the runs'
    accuracy again on a chosen set (the recorded one otherwise)."""
    from routescope.analysis import experiments
    from tools import bench

    write_cifar10(tmp_path, n=8)
    checkpoint = tmp_path / "runs" / "tiny_cifar_skipnet.pt"
    model = create_model("skipnet_resnet8", num_classes=10, in_chans=3)
    meta = {**CIFAR_META, "name": "tiny_cifar_skipnet", "method": "skipnet", "metrics": {"test_acc": 0.5}}
    save_checkpoint(checkpoint, model, meta)
    data = ["--dataset", "cifar10", "--data-dir", str(tmp_path)]
    assert bench.main(["--checkpoint", str(checkpoint), "--images", "4", "--rounds", "1", "--json", *data]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["image_size"] == 32 for row in rows)
    assert bench.main(["--checkpoint", str(checkpoint), "--images", "4", "--dataset", "svhn"]) == 2

    assert experiments.main([str(tmp_path / "runs"), "--json"]) == 0
    (recorded,) = json.loads(capsys.readouterr().out)
    assert recorded["test_acc_mean"] == 0.5
    assert experiments.main([str(tmp_path / "runs"), "--json", *data]) == 0
    out = capsys.readouterr()
    (measured,) = json.loads(out.out)
    table = dataset_table(load_checkpoint(checkpoint), *load_test_images("cifar10", str(tmp_path)))
    assert measured["test_acc_mean"] == pytest.approx(table["correct"].astype(float).mean())
    assert "measured on cifar10" in out.err


def test_progress_hands_over_each_batch_and_large_inputs_come_in_small_batches(tmp_path):
    """The app shows the first traced rows under its progress bar; 224x224 images are traced 8 at a time, so the
    first rows come after 8 images, not 256."""
    model = tiny_model(TINY_META)
    images = open_test_set(TestSet("fashion-mnist-subset"), TINY_META)
    seen = []
    table = stored_table(model, images, root=tmp_path, progress=seen.append)
    assert [p.done for p in seen][:2] == [256, 500] and len(seen[0].rows) == 256
    assert [row["index"] for row in seen[0].rows[:3]] == [0, 1, 2]
    assert seen[0].rows[5]["macs"] == table.loc[5, "macs"]
    write_images(tmp_path / "photos", ["a.png", "b.png"])
    large = open_test_set(TestSet("folder", str(tmp_path / "photos")), {**CIFAR_META, "input_size": [3, 224, 224]})
    assert table_store.batch_size_for(large) == 8 and table_store.batch_size_for(images) == 256
