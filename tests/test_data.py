import numpy as np
import pytest

from edgekit.data import check_calibration, check_fits, load_data
from edgekit.errors import CalibrationError, DataError


def test_image_folder_is_loaded_resized_and_labelled(tmp_path):
    from PIL import Image
    for label, value in (("cat", 0), ("dog", 255)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((20, 16), value, np.uint8)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    d = load_data(tmp_path, (None, 8, 8, 1))
    assert d.x.shape == (6, 8, 8, 1) and d.x.dtype == np.float32
    assert list(d.y) == [0, 0, 0, 1, 1, 1] and d.x[:3].max() == 0 and d.x[3:].min() == 1.0
    check_fits(d, (None, 8, 8, 1), "train")


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "noy.npz", x=np.zeros((3, 4), np.float32))
    assert load_data(tmp_path / "noy.npz").y is None
    np.savez(tmp_path / "nox.npz", images=np.zeros((3, 4)))
    with pytest.raises(DataError, match="has no array 'x'"):
        load_data(tmp_path / "nox.npz")
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 4)), y=np.zeros(2))
    with pytest.raises(DataError, match="3 samples but 'y' has 2"):
        load_data(tmp_path / "mismatch.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot read as \.npz"):
        load_data(tmp_path / "junk.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_data(tmp_path / "empty")


def test_calibration_with_nan_is_refused(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.full((2, 8, 8, 1), np.nan, np.float32))
    with pytest.raises(CalibrationError, match="NaN"):
        check_calibration(load_data(tmp_path / "c.npz"), (None, 8, 8, 1))
