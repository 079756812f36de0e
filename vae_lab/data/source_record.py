"""Which data a number was computed on, for evaluation.json: the source's path, keys, split and a fingerprint."""

import hashlib
from pathlib import Path

HASH_LIMIT = 1 << 30  # files up to 1 GiB are hashed (sha256); larger ones are recorded by size and mtime only
_KEYS = ("key", "label_key", "split", "test_split", "config_name", "revision", "image_column", "label_column")


def data_source(name: str, options: dict, split: str, data_dir: str) -> dict:
    """{dataset, split scored, path, keys given, bytes, sha256 | files} of a dataset and its options."""
    record = {"dataset": name, "split": split}
    record.update({f"option_{k}": options[k] for k in _KEYS if options.get(k) is not None})
    path = options.get("path")
    if path is None:  # a built-in: its files under data_dir
        return record | {"data_dir": data_dir}
    p = Path(path).expanduser().resolve()
    record["path"] = str(p)
    if p.is_file():
        stat = p.stat()
        record.update(bytes=stat.st_size, mtime=int(stat.st_mtime))
        if stat.st_size <= HASH_LIMIT:
            digest = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            record["sha256"] = digest.hexdigest()
    elif p.is_dir():  # a folder (images, save_to_disk): how many files and bytes, not a hash of all of them
        files = [f for f in p.rglob("*") if f.is_file()]
        record.update(files=len(files), bytes=sum(f.stat().st_size for f in files))
    return record
