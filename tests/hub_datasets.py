"""A real Hugging Face datasets cache holding a small hub data set, as `datasets.load_dataset(NAME)` leaves it.

No hub is reachable here, so the data set is prepared by datasets' own Parquet builder (arrow files and
dataset_info.json) and placed where the offline loader looks: <cache>/<owner>___<name>/<subset>/<version>/<hash>/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd


def cache_hub_dataset(
    cache: Path, repo_id: str, splits: dict[str, pd.DataFrame], *, subset: str = "default", work: Path
) -> Path:
    """Write `splits` as hub data set `repo_id` (subset `subset`) into the datasets cache `cache`; its directory."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    name = repo_id.split("/")[-1]
    files = {}
    for split, df in splits.items():
        files[split] = str(work / f"{name}-{subset}-{split}.parquet")
        df.to_parquet(files[split])
    builder = Parquet(
        cache_dir=str(work / "prepare"), dataset_name=name, data_files=files, hash="0123abcd", config_name=subset
    )
    builder.download_and_prepare()
    cached = cache / "___".join(repo_id.split("/")) / subset / str(builder.config.version) / "0123abcd"
    shutil.copytree(builder.cache_dir, cached)
    return cached
