"""The media pipelines (:mod:`.pipelines`) that run every image through the face stage,
on a bounded pool of worker threads (:mod:`.facepool`) off the reactor."""
