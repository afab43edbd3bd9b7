"""The isolated conversion's child: `python -m edgekit.convert.child FOLDER MODE IO` converts FOLDER/model (a
SavedModel) with the settings `tflite.finish` gives MODE and IO, calibrating on FOLDER/calibration.npy, and writes
FOLDER/model.tflite.  An error is one line on stderr starting `edgekit-child: `."""
from __future__ import annotations

import sys
from pathlib import Path


def _rebuild_qat(folder: Path) -> None:
    """FOLDER/plain.keras wrapped for QAT as the parent's QAT step did (FOLDER/qat_scheme), its weights set from
    FOLDER/qat_weights.npz, saved as FOLDER/model for the converter."""
    import numpy as np
    from ..errors import ConversionError
    from ..modelio import load_keras_model
    from ..optimize.qat import _apply
    from .isolated import _save
    qmodel, _notes = _apply(load_keras_model(folder / "plain.keras"), (folder / "qat_scheme").read_text())
    with np.load(folder / "qat_weights.npz") as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if [w.shape for w in weights] != [tuple(w.shape) for w in qmodel.weights]:
        raise ConversionError("the QAT model rebuilt for conversion does not match the trained one (weights differ "
                              "in number or shape)")
    qmodel.set_weights(weights)
    _save(qmodel, folder / "model", (folder / "static_batch").read_text() == "1")


def main(argv: list[str]) -> int:
    folder, mode, io = Path(argv[0]), argv[1], argv[2]
    import numpy as np
    from ..data import Dataset
    from ..errors import EdgekitError
    from .tflite import finish
    try:
        from .._tf import tf
        if (folder / "plain.keras").is_file():
            _rebuild_qat(folder)
        cal = folder / "calibration.npy"
        calibration = Dataset(np.load(cal), None, "calibration") if cal.is_file() else None
        data = finish(tf.lite.TFLiteConverter.from_saved_model(str(folder / "model")), mode, io, calibration,
                      (folder / "dense_per_tensor").is_file())
        tmp = folder / "model.tflite.tmp"
        tmp.write_bytes(data)
        tmp.rename(folder / "model.tflite")
        return 0
    except EdgekitError as e:
        print(f"edgekit-child: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"edgekit-child: {mode} conversion ran out of memory", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
