"""The face stage's pure image code: no Scrapy imports, bytes in, verdict out.

* :mod:`.detector`: face detectors behind one interface (``FaceDetector``).
* :mod:`.redact`: blur, pixelate and fill with a margin around each box.
* :mod:`.imageio`: sniff, decode within limits, and re-encode without metadata.
* :mod:`.stage`: decode, check, redact, strip metadata and re-encode one image.
"""

#: A face box under this height (px) is redacted over a margin of at least
#: SMALL_FACE_MARGIN (see :func:`.redact.redact`). Here, not in :mod:`.redact`, so that
#: the documents that state it need not import OpenCV.
SMALL_FACE_HEIGHT = 40.0
SMALL_FACE_MARGIN = 0.5
