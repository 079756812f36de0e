"""Dataset loaders, the in-memory batch iterable and the DataModule, on real and generated files."""

import urllib.error
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets_fixtures import copy_mnist, trust_cifar10_files, write_array_file, write_cifar10, write_image_folder
from PIL import Image

from vae_lab.data import DATASETS, DataSpec, InMemoryBatches, VAEDataModule, load_dataset
from vae_lab.errors import ConfigError, DataError


def all_batches(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def digits(**kwargs) -> VAEDataModule:
    dm = VAEDataModule("digits", data_dir="unused", **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


# ---------------------------------------------------------------- digits + DataModule


def test_digits_spec_split_and_batches():
    dm = digits(batch_size=64)
    assert dm.spec == DataSpec(shape=(1, 8, 8), num_classes=10, class_names=tuple("0123456789"), has_test=False,
                               num_train=1618)
    assert dm.spec.num_dims == 64
    train, val = dm.train_dataloader(), dm.val_dataloader()
    x, y = next(iter(train))
    assert x.dtype == torch.float32 and x.shape == (64, 1, 8, 8) and y.dtype == torch.int64 and y.shape == (64,)
    assert 0 <= x.min() and x.max() <= 1 and x.max() == 1  # 16/16 -> 255 -> 1.0
    torch.testing.assert_close(x * 255, (x * 255).round())  # exactly uint8 / 255
    train_x, train_y = all_batches(train)
    val_x, val_y = all_batches(val)
    assert len(train_x) + len(val_x) == 1797 and len(val_x) == 179
    assert set(train_y.tolist()) == set(range(10)) and val_y.min() >= 0
    assert "digits" in dm.describe() and "1x8x8" in dm.describe() and "val 179" in dm.describe()
    with pytest.raises(DataError, match="no test split"):
        dm.test_dataloader()


def test_digits_split_is_seeded():
    val = {seed: all_batches(digits(seed=seed).val_dataloader())[0] for seed in (1, 2)}
    torch.testing.assert_close(all_batches(digits(seed=1).val_dataloader())[0], val[1])
    assert not torch.equal(val[1], val[2])


def test_binarize_modes():
    def pixel_sum(batches):
        return sum(float(x.sum()) for x, _ in batches)

    dynamic = digits(binarize="dynamic")
    train, val = dynamic.train_dataloader(), dynamic.val_dataloader()
    x, _ = next(iter(train))
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert pixel_sum(train) != pixel_sum(train)  # re-sampled every epoch
    torch.testing.assert_close(all_batches(val)[0], all_batches(val)[0])  # evaluation is fixed
    assert set(all_batches(val)[0].unique().tolist()) == {0.0, 1.0}

    static = digits(binarize="static").train_dataloader()
    assert pixel_sum(static) == pixel_sum(static)  # same pixels every epoch, only the order changes
    assert set(all_batches(static)[0].unique().tolist()) == {0.0, 1.0}


def test_bad_names_are_config_errors():
    with pytest.raises(ConfigError, match="digits.*mnist"):
        VAEDataModule("svhn", data_dir="unused")
    with pytest.raises(ConfigError, match="dynamic, none, static"):
        VAEDataModule("digits", data_dir="unused", binarize="always")
    with pytest.raises(ConfigError, match="fashion_mnist"):
        load_dataset("nope", "unused")
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("digits", "unused", False, image_size=8)
    with pytest.raises(ConfigError, match="val_fraction"):
        VAEDataModule("digits", data_dir="unused", val_fraction=1.0)


def test_dataloaders_follow_the_trainer_rank():
    dm = digits(batch_size=50)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    train = dm.train_dataloader()
    assert (train.rank, train.world_size) == (1, 2) and len(train) == (1618 // 2 + 49) // 50


# ---------------------------------------------------------------- torchvision datasets


@pytest.mark.parametrize(
    ("name", "folder", "first_class"),
    [("mnist", "MNIST", "0 - zero"), ("fashion_mnist", "FashionMNIST", "T-shirt/top")],
)
def test_real_mnist_archives(tmp_path, name, folder, first_class):
    root = copy_mnist(tmp_path, folder)
    dm = VAEDataModule(name, data_dir=str(root), download=True)  # finds the archives, checks md5s, extracts
    dm.prepare_data()
    dm.setup()
    assert dm.spec.shape == (1, 28, 28) and dm.spec.num_classes == 10 and dm.spec.has_test
    assert dm.spec.class_names[0] == first_class
    assert "train 54000 / val 6000 / test 10000" in dm.describe()
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (128, 1, 28, 28) and 0 <= y.min() and y.max() <= 9


def test_mnist_archives_in_place_load_with_download_false(tmp_path, monkeypatch):
    """The .gz archives the not-found message asks for are enough offline: they are extracted, never downloaded."""
    root = copy_mnist(tmp_path)
    monkeypatch.setattr("torchvision.datasets.utils.download_url", lambda *a, **k: pytest.fail("downloaded"))
    raw = load_dataset("mnist", root, download=False)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()

    # a folder the archives cannot be extracted into: one line naming it and the fix
    other = copy_mnist(tmp_path / "other")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("torchvision.datasets.utils.extract_archive", refuse)
    with pytest.raises(DataError, match="cannot extract .*Permission denied.*writable folder"):
        load_dataset("mnist", other, download=False)


def test_missing_mnist_names_the_searched_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path / "empty", download=False)
    message = str(err.value)
    assert str((tmp_path / "empty").resolve()) in message
    assert str(tmp_path / "empty" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert "paths.data_dir" in message and "\n" not in message


def test_offline_download_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="FashionMNIST.*paths.data_dir"):
        load_dataset("fashion_mnist", tmp_path, download=True)


def test_cifar10_round_trips_pixels(tmp_path, monkeypatch):
    expected = write_cifar10(tmp_path, n_train=12, n_test=4)
    trust_cifar10_files(monkeypatch)
    raw = load_dataset("cifar10", tmp_path, download=True)  # files present: no network
    assert raw.train_x.shape == (12, 3, 32, 32) and raw.test_x.shape == (4, 3, 32, 32)
    assert np.array_equal(raw.train_x.numpy(), expected["train_x"])
    assert np.array_equal(raw.test_x.numpy(), expected["test_x"])
    assert raw.train_y.tolist() == expected["train_y"].tolist() and raw.test_y.tolist() == expected["test_y"].tolist()
    assert raw.class_names[:2] == ("airplane", "automobile")


def test_cifar10_missing_file_is_a_data_error(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    trust_cifar10_files(monkeypatch)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download=False)


# ---------------------------------------------------------------- image folder


def test_image_folder_with_classes(tmp_path):
    files = write_image_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=3, size=(6, 8))
    raw = load_dataset("image_folder", "unused", False, path=str(tmp_path / "imgs"))
    assert raw.train_x.shape == (6, 3, 6, 8) and raw.test_x is None
    assert raw.train_y.tolist() == [0, 0, 0, 1, 1, 1] and raw.class_names == ("cat", "dog")
    assert np.array_equal(raw.train_x[0].permute(1, 2, 0).numpy(), np.asarray(Image.open(files[0])))
    gray = load_dataset("image_folder", "unused", False, path=str(tmp_path / "imgs"), channels=1, image_size=[5, 7])
    assert gray.train_x.shape == (6, 1, 5, 7)


def test_image_folder_unlabelled(tmp_path):
    write_image_folder(tmp_path, classes=None, per_class=4, size=(8, 8), mode="L")
    options = {"path": str(tmp_path), "image_size": 4}
    dm = VAEDataModule("image_folder", data_dir="unused", batch_size=2, val_fraction=0.25, options=options)
    dm.setup()
    assert dm.spec.shape == (1, 4, 4) and dm.spec.num_classes is None  # grey files: channels auto -> 1
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 1, 4, 4) and y.tolist() == [-1, -1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("image_folder", "unused", False, path=str(tmp_path / "missing"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images found.*\.png"):
        load_dataset("image_folder", "unused", False, path=str(tmp_path / "empty"))
    write_image_folder(tmp_path / "bad", classes=("a",), per_class=2)
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("image_folder", "unused", False, path=str(tmp_path / "bad"))
    write_image_folder(tmp_path / "mixed" / "a", classes=None, per_class=1, size=(6, 8))
    Image.new("RGB", (9, 9)).save(tmp_path / "mixed" / "a" / "other.png")
    with pytest.raises(DataError, match=r"img_0.png.*other.png.*image_size"):
        load_dataset("image_folder", "unused", False, path=str(tmp_path / "mixed"))


# ---------------------------------------------------------------- array file


def test_array_file_layouts(tmp_path):
    rng = np.random.default_rng(0)
    nhw = rng.integers(0, 256, (5, 4, 6), dtype=np.uint8)
    raw = load_dataset("array_file", "unused", False, path=str(write_array_file(tmp_path / "a.npz", nhw, np.arange(5))))
    assert raw.train_x.shape == (5, 1, 4, 6) and np.array_equal(raw.train_x[:, 0].numpy(), nhw)
    assert raw.train_y.tolist() == [0, 1, 2, 3, 4]

    nhwc = rng.random((5, 4, 6, 3)).astype(np.float32)
    path = write_array_file(tmp_path / "b.npz", nhwc, key="images")
    raw = load_dataset("array_file", "unused", False, path=str(path))
    assert raw.train_x.shape == (5, 3, 4, 6) and raw.train_y is None
    assert raw.levels is None and np.array_equal(raw.train_x.permute(0, 2, 3, 1).numpy(), nhwc)  # never rounded
    on_grid = np.rint(nhwc * 255).astype(np.float32) / 255  # saved as x / 255: read back as the 8-bit values
    raw = load_dataset("array_file", "unused", False, path=str(write_array_file(tmp_path / "g.npz", on_grid)))
    assert raw.levels == 256 and np.array_equal(raw.train_x.permute(0, 2, 3, 1).numpy(), np.rint(nhwc * 255))

    nchw = rng.integers(0, 256, (5, 3, 7, 7), dtype=np.uint8)
    raw = load_dataset("array_file", "unused", False, path=str(write_array_file(tmp_path / "c.npy", nchw)))
    assert np.array_equal(raw.train_x.numpy(), nchw)


def test_array_file_errors(tmp_path):
    x = np.arange(48, dtype=np.uint8).reshape(3, 4, 4) * 5  # 0..235
    path = write_array_file(tmp_path / "k.npz", x, np.zeros(3, dtype=np.int64), key="pixels", label_key="target")
    with pytest.raises(DataError, match="keys present: pixels, target"):
        load_dataset("array_file", "unused", False, path=str(path))
    raw = load_dataset("array_file", "unused", False, path=str(path), key="pixels", label_key="target")
    assert raw.train_y.tolist() == [0, 0, 0]
    with pytest.raises(DataError, match=r"float64 values in \[0, 1.84"):
        load_dataset("array_file", "unused", False, path=str(write_array_file(tmp_path / "f.npy", x / 127.5)),
                     layout="nhw")  # (3, 4, 4) unlabelled reads as one RGB image unless told (issue 30)
    raw = load_dataset("array_file", "unused", False, path=str(write_array_file(tmp_path / "i.npy", x.astype(np.int64))),
                       layout="nhw")
    assert raw.train_x.dtype == torch.uint8 and np.array_equal(raw.train_x[:, 0].numpy(), x)  # int64 0..235: 8-bit
    with pytest.raises(DataError, match=r"\(3, 4, 4, 5\)"):
        path = write_array_file(tmp_path / "s.npy", np.zeros((3, 4, 4, 5), np.uint8))
        load_dataset("array_file", "unused", False, path=str(path))


# ---------------------------------------------------------------- InMemoryBatches


def indexed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label is their own index, so batches reveal which examples were served."""
    return torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n)


def test_every_index_once_per_epoch_in_a_new_order():
    batches = InMemoryBatches(*indexed(103), batch_size=10, shuffle=True, seed=0)
    epochs = [all_batches(batches)[1] for _ in range(2)]
    assert len(batches) == 11 and all(sorted(e.tolist()) == list(range(103)) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    batches.set_epoch(0)
    assert torch.equal(all_batches(batches)[1], epochs[0])


def test_resume_mid_epoch_continues_the_same_order():
    batches = InMemoryBatches(*indexed(50), batch_size=8, shuffle=True, seed=3)
    batches.set_epoch(4)
    full = [y for _, y in batches]
    batches.set_epoch(4)
    it = iter(batches)
    served = [next(it)[1] for _ in range(3)]
    state = batches.state_dict()
    assert state == {"epoch": 4, "seed": 3, "batch": 3}
    resumed = InMemoryBatches(*indexed(50), batch_size=8, shuffle=True, seed=99)
    resumed.load_state_dict(state)
    rest = [y for _, y in resumed]
    assert all(torch.equal(a, b) for a, b in zip(served + rest, full, strict=True))
    assert resumed.state_dict() == {"epoch": 5, "seed": 3, "batch": 0}


@pytest.mark.parametrize("n", [103, 104])
def test_distributed_shards(n):
    def shard(rank, shuffle):
        return all_batches(InMemoryBatches(*indexed(n), 7, shuffle, seed=5, rank=rank, world_size=2))[1].tolist()

    evaluation = [shard(r, shuffle=False) for r in (0, 1)]
    assert not set(evaluation[0]) & set(evaluation[1]) and sorted(evaluation[0] + evaluation[1]) == list(range(n))
    training = [shard(r, shuffle=True) for r in (0, 1)]
    assert len(training[0]) == len(training[1]) == n // 2  # equal steps per rank (DDP would hang otherwise)
    assert not set(training[0]) & set(training[1]) and len(set(training[0] + training[1])) == n - n % 2


def test_dynamic_binarisation_and_unlabelled():
    x = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    batches = InMemoryBatches(x, None, batch_size=16, shuffle=True, seed=0, binarize_mode="dynamic")
    xs, ys = all_batches(batches)
    assert set(xs.unique().tolist()) == {0.0, 1.0} and ys.tolist() == [-1] * 40 and len(batches) == 3
    with pytest.raises(ConfigError, match="dynamic, none"):
        InMemoryBatches(x, None, 16, True, 0, binarize_mode="static")


def test_registry_names():
    assert set(DATASETS) == {"digits", "mnist", "fashion_mnist", "cifar10", "image_folder", "array_file", "hf",
                             "sprites", "dsprites"}


# ---------------------------------------------------------------- what the pixels are: binary, 8-bit, dequantised


def test_spec_says_whether_the_pixels_are_binary():
    assert digits(binarize="dynamic").spec.binary and digits(binarize="static").spec.binary
    assert not digits().spec.binary  # grey levels
    assert digits(binarize="dynamic").spec == DataSpec(shape=(1, 8, 8), num_classes=10, class_names=tuple(
        "0123456789"), has_test=False, binary=True, num_train=1618)


def test_array_of_binary_pixels_is_binary_without_binarising(tmp_path):
    x = (np.random.default_rng(0).random((20, 5, 5)) > 0.5).astype(np.uint8) * 255
    path = write_array_file(tmp_path / "bits.npz", x)
    dm = VAEDataModule("array_file", data_dir="unused", options={"path": str(path)})
    assert dm.spec.binary


def test_uniform_dequantisation_puts_each_pixel_uniformly_inside_its_level_bin():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 5, 5), generator=g, dtype=torch.uint8)
    x[0] = 255  # the top level stays below 1
    evaluation = InMemoryBatches(x, None, 16, shuffle=False, seed=3, dequantize="uniform")
    y = all_batches(evaluation)[0]
    torch.testing.assert_close(all_batches(evaluation)[0], y, rtol=0, atol=0)  # the same noise every pass
    assert torch.equal(torch.floor(y * 256).to(torch.uint8), x) and y.max() < 1  # (k + u)/256 in [k, k+1)/256
    u = (y * 256 - x.float()).flatten()  # 1600 draws of U[0, 1)
    assert abs(u.mean().item() - 0.5) < 4 * (1 / 12) ** 0.5 / 40 and abs(u.var().item() - 1 / 12) < 0.01

    training = InMemoryBatches(x, torch.arange(64), 16, shuffle=True, seed=3, dequantize="uniform")
    epochs = []
    for _ in range(2):
        y, idx = all_batches(training)
        assert torch.equal(torch.floor(y * 256).to(torch.uint8), x[idx])
        epochs.append(y[idx.argsort()])
    assert not torch.equal(epochs[0], epochs[1])  # fresh noise every epoch


def test_dequantisation_is_refused_for_binarised_pixels():
    with pytest.raises(ConfigError, match="dataset.dequantize='uniform' is invalid: must be none with dataset.binarize"):
        VAEDataModule("digits", data_dir="unused", binarize="dynamic", dequantize="uniform")
    with pytest.raises(ConfigError, match="none, uniform"):
        VAEDataModule("digits", data_dir="unused", dequantize="gaussian")
    dm = digits(dequantize="uniform", batch_size=500)
    x, _ = next(iter(dm.val_dataloader()))
    assert not torch.equal(x * 255, (x * 255).round())  # no longer on the k/255 grid


def test_dynamic_binarisation_is_bernoulli_of_the_grey_level():
    """Oracle: over many epochs each pixel is 1 with probability k/255 (within 5 standard errors); level 0 is always
    0 and level 255 always 1; each epoch draws afresh and a resumed epoch draws the same pixels."""
    levels = torch.tensor([0, 1, 32, 64, 128, 191, 254, 255], dtype=torch.uint8)
    x = levels.repeat(64).reshape(64, 1, 1, 8)  # 64 examples, each with every level once
    batches = InMemoryBatches(x, None, batch_size=16, shuffle=False, seed=3, binarize_mode="dynamic")
    epochs = 400
    ones = torch.zeros(8, dtype=torch.float64)
    for _ in range(epochs):
        xs, _ = all_batches(batches)
        assert set(xs.unique().tolist()) <= {0.0, 1.0}
        ones += xs.reshape(-1, 8).double().sum(0)
    freq, p, n = ones / (epochs * 64), levels.double() / 255, epochs * 64
    tolerance = 5 * torch.sqrt(p * (1 - p) / n)
    assert freq[0] == 0.0 and freq[-1] == 1.0
    assert torch.all((freq - p).abs() <= tolerance.clamp(min=1e-12)), (freq, p)
    batches.set_epoch(7)
    first = all_batches(batches)[0]
    batches.set_epoch(7)
    torch.testing.assert_close(all_batches(batches)[0], first, rtol=0, atol=0)
