"""dataset=hf and the streaming path: sources, in-memory vs streamed, DDP shards, resume, errors (training on it and
a Hub id offline: tests/integration/test_hf_data_training.py)."""

import pytest
import torch
from datasets_fixtures import image_index, write_hf_dataset, write_image_folder

from vae_lab.data import VAEDataModule
from vae_lab.data.registry import RawData, load_dataset
from vae_lab.data.stream import StreamingBatches, StreamSource
from vae_lab.errors import DataError


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory):
    return write_hf_dataset(tmp_path_factory.mktemp("hf"), n_train=40, n_test=10)


def hf_module(tmp_path, path, **options) -> VAEDataModule:
    options = {"path": str(path), "num_workers": 0, **options}
    dm = VAEDataModule("hf", str(tmp_path), batch_size=8, seed=3, options=options)
    dm.setup()
    return dm


def indices(batches) -> list[int]:
    return [i for x, _ in batches for i in image_index(x)]


@pytest.mark.parametrize("source", ["disk", "parquet", "parquet_dir"])
def test_every_source_decodes_the_same_pixels_labels_and_classes(tmp_path, hf_data, source):
    raw = load_dataset("hf", tmp_path, path=str(hf_data[source]), num_workers=0)
    assert isinstance(raw, RawData)  # 40 tiny images fit: the in-memory path
    x, y = hf_data["arrays"]["train"]
    assert torch.equal(raw.train_x, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert raw.train_y.tolist() == y.tolist() and raw.class_names == ("a", "b", "c")
    if source == "parquet":  # one file: no test split
        assert raw.test_x is None
    else:
        assert torch.equal(raw.test_x, torch.from_numpy(hf_data["arrays"]["test"][0]).permute(0, 3, 1, 2))


def test_memory_limit_chooses_the_path(tmp_path, hf_data):
    need_gb = 50 * 3 * 6 * 5 / 1e9  # 40 + 10 uint8 images
    fits = load_dataset("hf", tmp_path, path=str(hf_data["disk"]), num_workers=0, memory_limit_gb=need_gb)
    over = load_dataset("hf", tmp_path, path=str(hf_data["disk"]), num_workers=0, memory_limit_gb=need_gb * 0.99)
    assert isinstance(fits, RawData) and isinstance(over, StreamSource)


def test_streamed_epochs_serve_the_in_memory_sets(tmp_path, hf_data):
    memory = hf_module(tmp_path, hf_data["disk"], in_memory=True)
    stream = hf_module(tmp_path, hf_data["disk"], in_memory=False)
    assert "in memory" in memory.describe() and "streamed" in stream.describe()
    assert memory.spec == stream.spec
    for split in ("val", "test"):
        served = [indices(getattr(dm, f"{split}_dataloader")()) for dm in (stream, memory)]
        assert served[0] == sorted(served[1])  # the same examples; streamed in row order
    train_set = sorted(indices(memory.train_dataloader()))
    batches = stream.train_dataloader()
    epochs = [indices(batches), indices(batches)]
    assert len(batches) == 5 and all(sorted(e) == train_set for e in epochs)  # 36 examples, each once per epoch
    assert epochs[0] != epochs[1]  # shards and buffer reshuffled with seed + epoch
    assert epochs[0] != train_set  # shuffled at all
    # same seed -> same batches, whatever the number of decoding workers
    again = hf_module(tmp_path, hf_data["disk"], in_memory=False, num_workers=2).train_dataloader()
    assert indices(again) == epochs[0]


def test_labels_follow_their_images(tmp_path, hf_data):
    stream = hf_module(tmp_path, hf_data["parquet_dir"], in_memory=False)
    _, y_true = hf_data["arrays"]["train"]
    for x, y in stream.train_dataloader():
        assert y.tolist() == [y_true[i] for i in image_index(x)]


def test_ddp_shards_are_disjoint_and_cover_the_data(hf_data):
    import datasets
    from datasets.distributed import split_dataset_by_node

    rows = datasets.load_from_disk(str(hf_data["disk"]))["train"].select_columns(["image", "label"])
    ids = rows.to_iterable_dataset(num_shards=8).shuffle(seed=0, buffer_size=16)
    parts = [[r["label"] for r in split_dataset_by_node(ids, rank=r, world_size=2)] for r in range(2)]
    assert sum(map(len, parts)) == 40  # the library splits whole shards

    from vae_lab.data.hf import make_decoder

    raw = rows.cast_column("image", datasets.Image(decode=False))
    decoder = make_decoder(raw, "image", "label", None, None, "test")
    for shuffle in (True, False):
        served = [indices(StreamingBatches(raw, decoder, 4, shuffle, seed=5, rank=r, world_size=2)) for r in (0, 1)]
        assert not set(served[0]) & set(served[1])
        union = set(served[0]) | set(served[1])
        if shuffle:  # equal steps on every rank (DDP would hang otherwise); each rank keeps whole shards
            lengths = [len(StreamingBatches(raw, decoder, 4, True, 5, r, 2)) for r in (0, 1)]
            assert len(served[0]) == len(served[1]) and lengths[0] == lengths[1] == len(served[0]) // 4 + 0
            assert len(union) >= 40 - 2 * 8  # at most a shard's rounding per shard is left out this epoch
        else:  # evaluation: every example exactly once
            assert union == set(range(40)) and len(served[0]) + len(served[1]) == 40


def test_resume_mid_epoch_continues_where_it_stopped(tmp_path, hf_data):
    whole = hf_module(tmp_path, hf_data["disk"], in_memory=False, shuffle_buffer=8).train_dataloader()
    next(iter(whole))  # epoch 0 consumed partly ...
    reference = [image_index(x) for x, _ in whole]  # ... epoch 1 in full is the reference
    interrupted = hf_module(tmp_path, hf_data["disk"], in_memory=False, shuffle_buffer=8).train_dataloader()
    interrupted.set_epoch(1)
    it = iter(interrupted)
    first = [image_index(next(it)[0]) for _ in range(2)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "seed": 3, "batch": 2}
    resumed = hf_module(tmp_path, hf_data["disk"], in_memory=False, shuffle_buffer=8, num_workers=1)
    batches = resumed.train_dataloader()
    batches.load_state_dict(state)
    assert first + [image_index(x) for x, _ in batches] == reference  # shuffle buffer included
    assert batches.state_dict() == {"epoch": 2, "seed": 3, "batch": 0}


def test_unknown_column_lists_the_columns(tmp_path, hf_data):
    for key in ("image_column", "label_column"):
        with pytest.raises(DataError, match=rf"{key}='pixels' is not a column of .*; columns: image, label, note"):
            load_dataset("hf", tmp_path, path=str(hf_data["disk"]), num_workers=0, **{key: "pixels"})
    # a text column is no longer refused: its names become sorted class ids (issue 30, tests/test_user_data.py)
    with pytest.raises(DataError, match=r"split='validation' is not a split of the dataset; splits: train, test"):
        load_dataset("hf", tmp_path, path=str(hf_data["disk"]), num_workers=0, split="validation")


@pytest.mark.parametrize("in_memory", [True, False])
def test_mixed_sizes_without_image_size_is_todays_line(tmp_path, in_memory):
    data = write_hf_dataset(tmp_path / "mixed", n_train=12, n_test=2, mixed=True)
    dm = VAEDataModule("hf", str(tmp_path), batch_size=4, options={"path": str(data["disk"]), "num_workers": 0,
                                                                    "in_memory": in_memory})
    with pytest.raises(DataError) as err:
        dm.setup()
        [b for b in dm.train_dataloader()]
    message = str(err.value)
    assert "\n" not in message and "images differ in size" in message and "is 5x6" in message
    assert "is 5x8 (WxH); set dataset.options.image_size=[H,W] to resize them" in message
    resized = VAEDataModule("hf", str(tmp_path), batch_size=4, options={"path": str(data["disk"]), "num_workers": 0,
                                                                         "in_memory": in_memory, "image_size": 4})
    assert resized.spec.shape == (3, 4, 4) and sum(len(x) for x, _ in resized.train_dataloader()) >= 8


def test_image_folder_streams_when_not_in_memory(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=5)
    kwargs = dict(batch_size=4, seed=0, val_fraction=0.2)
    memory = VAEDataModule("image_folder", str(tmp_path), options={"path": str(tmp_path / "imgs")}, **kwargs)
    stream = VAEDataModule("image_folder", str(tmp_path), options={"path": str(tmp_path / "imgs"),
                                                                    "in_memory": False, "num_workers": 0}, **kwargs)
    assert stream.spec == memory.spec and "streamed" in stream.describe()
    for split in ("train", "val"):
        pixels = [sorted(x.flatten().tolist() for b, _ in getattr(dm, f"{split}_dataloader")() for x in b)
                  for dm in (stream, memory)]
        assert pixels[0] == pixels[1]


def test_throughput_bench_measures_both_paths_on_the_same_data(tmp_path):
    from vae_lab.bench.data_throughput import data_throughput, synthetic_dataset

    path = synthetic_dataset(tmp_path / "ds", n=80, size=8)
    rows = data_throughput(path, workers=(0, 1), batch_size=16, max_batches=3, data_dir=str(tmp_path))
    assert [(r["path"], r["workers"]) for r in rows] == [("in_memory", 1), ("streamed", 0), ("streamed", 1)]
    assert all(r["images"] == 48 and r["images_per_s"] > 0 for r in rows)
