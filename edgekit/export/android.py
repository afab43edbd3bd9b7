"""Android bundle: assets/NAME.tflite with TFLite model metadata (read by Android Studio's ML model binding and
the LiteRT Support Library), labels, an I/O description and a Kotlin snippet.

The metadata is written with tflite-support's own writers (installed with `pip install --no-deps
tflite-support==0.4.4`: its pinned protobuf<4 cannot live beside TensorFlow 2.21, and the metadata writers do not
need it) and verified by reading it back."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import ConfigError
from .common import ExportSource, io_description


def _tflite_support():
    try:
        from .._quiet import captured_stderr
        with captured_stderr():
            from tensorflow_lite_support.metadata import metadata_schema_py_generated as mfb
            from tensorflow_lite_support.metadata.python import metadata
            from tensorflow_lite_support.metadata.python.metadata_writers import (image_classifier, metadata_info,
                                                                                  metadata_writer, writer_utils)
    except ImportError as e:
        raise ConfigError("the android target needs tflite-support's metadata writers: "
                          "pip install --no-deps tflite-support==0.4.4 (`make install` does this)") from e
    return mfb, metadata, image_classifier, metadata_info, metadata_writer, writer_utils


def write_metadata(src: ExportSource, labels_path: Path, mean: float, std: float) -> bytes:
    mfb, _, image_classifier, info, metadata_writer, writer_utils = _tflite_support()
    buf = bytearray(src.path.read_bytes())
    general = info.GeneralMd(name=src.name, version=src.info.sha256[:12],
                             description=f"{src.name} exported by edgekit" +
                                         (f" (variant {src.variant} for {src.device})" if src.variant else ""),
                             author="edgekit")
    in_type = writer_utils.get_input_tensor_types(buf)[0]
    out_type = writer_utils.get_output_tensor_types(buf)[0]
    output = info.ClassificationTensorMd(name="probability", description="class scores",
                                         label_files=[info.LabelFileMd(file_path=str(labels_path))],
                                         tensor_type=out_type)
    shape = src.info.inputs[0].shape
    if len(shape) == 4 and shape[-1] in (1, 3):
        color = mfb.ColorSpaceType.GRAYSCALE if shape[-1] == 1 else mfb.ColorSpaceType.RGB
        image = info.InputImageTensorMd(name="image", description="input image", norm_mean=[mean], norm_std=[std],
                                        color_space_type=color, tensor_type=in_type)
        writer = image_classifier.MetadataWriter.create_from_metadata_info(buf, general, image, output)
    else:
        tensor = info.TensorMd(name="input", description=f"input of shape {shape}")
        writer = metadata_writer.MetadataWriter.create_from_metadata_info(buf, general, [tensor], [output])
    return bytes(writer.populate())


def read_back(model: bytes) -> tuple[dict, list[str]]:
    _, metadata, *_ = _tflite_support()
    shown = metadata.MetadataDisplayer.with_model_buffer(model)
    return json.loads(shown.get_metadata_json()), shown.get_packed_associated_file_list()


KOTLIN = """```kotlin
// build.gradle: implementation("com.google.ai.edge.litert:litert:1.+") (or org.tensorflow:tensorflow-lite)
import org.tensorflow.lite.Interpreter
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

fun loadModel(context: android.content.Context): Interpreter {{
    val fd = context.assets.openFd("{name}.tflite")
    val model = fd.createInputStream().channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
    return Interpreter(model, Interpreter.Options().setNumThreads({threads}))
}}

// `pixels`: {n_in} raw values in the layout {in_shape}; normalised as (x - {mean}) / {std}
fun classify(interpreter: Interpreter, pixels: FloatArray, labels: List<String>): Pair<String, Float> {{
    val input = ByteBuffer.allocateDirect({n_in} * {in_bytes}).order(ByteOrder.nativeOrder())
    for (x in pixels) {{
        val v = (x - {mean}f) / {std}f
{quantize}
    }}
    input.rewind()
    val output = ByteBuffer.allocateDirect({n_out} * {out_bytes}).order(ByteOrder.nativeOrder())
    interpreter.run(input, output)
    output.rewind()
    val scores = FloatArray({n_out}) {{
{dequantize}
    }}
    val best = scores.indices.maxByOrNull {{ scores[it] }}!!
    return labels[best] to scores[best]
}}
```"""


def _kotlin(src: ExportSource, mean: float, std: float) -> str:
    import math
    t_in, t_out = src.info.inputs[0], src.info.outputs[0]
    n_in = math.prod(max(1, d) for d in t_in.shape)
    n_out = math.prod(max(1, d) for d in t_out.shape)
    size = {"float32": 4, "int8": 1, "uint8": 1, "int16": 2}
    if t_in.dtype in ("int8", "uint8"):
        lo, hi = (-128, 127) if t_in.dtype == "int8" else (0, 255)
        quantize = (f"        val q = Math.round(v / {t_in.scale!r}f) + ({t_in.zero_point})\n"
                    f"        input.put(q.coerceIn({lo}, {hi}).toByte())")
    else:
        quantize = "        input.putFloat(v)"
    if t_out.dtype in ("int8", "uint8"):
        raw = "output.get().toInt()" if t_out.dtype == "int8" else "(output.get().toInt() and 0xFF)"
        dequantize = f"        ({raw} - ({t_out.zero_point})) * {t_out.scale!r}f"
    else:
        dequantize = "        output.getFloat()"
    return KOTLIN.format(name=src.name, threads=2, n_in=n_in, in_shape=t_in.shape, mean=mean, std=std,
                         in_bytes=size.get(t_in.dtype, 4), quantize=quantize, n_out=n_out,
                         out_bytes=size.get(t_out.dtype, 4), dequantize=dequantize)


def export_android(src: ExportSource, out: Path, mean: float | None, std: float | None) -> dict:
    if src.labels is None:
        raise ConfigError("the android target needs labels: --labels FILE (one class name per line, in output "
                          "order), or a manifest made with them (convert-for-device --labels)")
    mean = 0.0 if mean is None else mean
    std = 1.0 if std is None else std
    if std == 0:
        raise ConfigError("--std must not be 0")
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    labels_path = assets / "labels.txt"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_labels = Path(tmp) / "labels.txt"
        tmp_labels.write_text("\n".join(src.labels) + "\n")
        model = write_metadata(src, tmp_labels, mean, std)
    meta, packed = read_back(model)
    if "labels.txt" not in packed or meta.get("name") != src.name:
        raise ConfigError("the metadata written into the model did not read back as expected")
    labels_path.write_text("\n".join(src.labels) + "\n")
    (assets / f"{src.name}.tflite").write_bytes(model)
    desc = io_description(src.info)
    desc.update(name=src.name, labels="assets/labels.txt", normalization={"mean": mean, "std": std},
                metadata_verified=True)
    (out / f"{src.name}.json").write_text(json.dumps(desc, indent=2) + "\n")
    (out / "README.md").write_text(
        f"# {src.name} for Android\n\nCopy `assets/` into `app/src/main/`. `assets/{src.name}.tflite` carries TFLite "
        f"model metadata (normalization, label file) for Android Studio's ML model binding and the LiteRT Support "
        f"Library; `{src.name}.json` describes the tensors.\n\nInput `{desc['inputs'][0]['dtype']}` "
        f"{desc['inputs'][0]['shape']}, output `{desc['outputs'][0]['dtype']}` {desc['outputs'][0]['shape']}.\n\n"
        + _kotlin(src, mean, std) + "\n")
    return {"files": [f"assets/{src.name}.tflite", "assets/labels.txt", f"{src.name}.json", "README.md"],
            "metadata": {"name": meta.get("name"), "associated_files": packed,
                         "process_units": meta.get("subgraph_metadata", [{}])[0].get("input_tensor_metadata",
                                                                                       [{}])[0].get("process_units")}}
