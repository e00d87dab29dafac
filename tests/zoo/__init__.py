"""The test zoo of issue 10: foreign models (``models``) and a float64 reference (``reference``)."""
