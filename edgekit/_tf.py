"""The only module that imports TensorFlow, tf_keras and TF-MOT.

TF-MOT needs Keras 2 (tf_keras); TF_USE_LEGACY_KERAS must be set before the first
``import tensorflow``.  Everything else imports from here, lazily, so commands that do not
need TensorFlow (inspect, profile, select) never pay its import.
"""
import os
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ._quiet import captured_stderr

with warnings.catch_warnings(), captured_stderr():  # TF's C++ start-up chatter (oneDNN, CUDA probes)
    warnings.simplefilter("ignore", DeprecationWarning)
    import tensorflow as tf
    import tf_keras as keras
    import tensorflow_model_optimization as tfmot
    tf.config.list_physical_devices()  # probes CUDA now, inside the capture, not on first model load

tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "tf", "tfmot"]
