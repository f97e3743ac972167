"""The face stage's pure image code: no Scrapy imports, bytes in, verdict out.

* :mod:`.detector`: face detectors behind one interface (``FaceDetector``).
* :mod:`.redact`: blur, pixelate and fill with a margin around each box.
* :mod:`.imageio`: sniff, decode within limits, and re-encode without metadata.
* :mod:`.stage`: decode, check, redact, strip metadata and re-encode one image.
"""
