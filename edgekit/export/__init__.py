"""Export bundles for the consumers of a chosen model: Android apps, embedded C (TFLite Micro), Linux apps."""
