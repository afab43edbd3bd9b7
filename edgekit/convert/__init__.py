"""Keras -> TFLite conversion and the Edge TPU compiler step."""
