"""The documents people read, on one HTML/CSS base (:mod:`.base`).

* :mod:`.review`: the review document and the public crawler information page.
* :mod:`.report`: the per-crawl compliance report.
"""
