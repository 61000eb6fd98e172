"""The dataset format (``format``) and the training pair loader (``pairs``)."""
from gagavatar.data.format import (
    FORMAT_VERSION, Dataset, DatasetError, DatasetIndex, MissingFileError, VideoInfo,
    VideoParams, VideoRecord, VideoWriter, composite, default_params, image_to_tensor, read_params,
    update_index, validate_params, write_video,
)
from gagavatar.data.pairs import PairDataset

__all__ = [
    "FORMAT_VERSION", "Dataset", "DatasetError", "DatasetIndex", "MissingFileError",
    "VideoInfo", "VideoParams", "VideoRecord", "VideoWriter", "composite", "default_params",
    "image_to_tensor", "read_params", "update_index", "validate_params", "write_video", "PairDataset",
]
