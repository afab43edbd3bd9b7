"""`edgekit demo`: train the digits CNN, then convert it for rpi4 and coral-usb."""
from __future__ import annotations

import logging

import time
from pathlib import Path

from .report_text import manifest_table


def run_demo(out: Path, devices=("rpi4", "coral-usb"), log=None) -> tuple[list, str]:
    """Returns the manifests and the summary the command prints (tables per device and what to try next)."""
    log = log or logging.getLogger("edgekit.demo").info
    from .examples import train_digits_model, write_digits_npz
    from .pipeline import convert_for_device
    t0 = time.perf_counter()
    train, test = write_digits_npz(out / "data")
    log(f"[demo] data     digits: {train} (1437 samples), {test} (360 samples)")
    model = train_digits_model(out)
    log(f"[demo] train    {time.perf_counter() - t0:6.1f} s  -> {model}")
    manifests = []
    for device in devices:
        m = convert_for_device(model, device, train=train, eval=test, out=out / device, log=log)
        manifests.append(m)
    text = [f"\n{m.device}: reference Keras accuracy {m.reference_keras_accuracy:.4f}  ({out / m.device})\n"
            + manifest_table(m) for m in manifests]
    text.append(f"\ndemo finished in {time.perf_counter() - t0:.1f} s; next: "
                f"edgekit inspect {out / devices[0] / 'int8.tflite'} --device {devices[0]}")
    return manifests, "\n".join(text)
