"""The documents people read, on the one HTML/CSS base (:mod:`scrapy_gdpr._html`).

* :mod:`.review`: the review document and the public crawler information page.
* :mod:`.report`: the per-crawl compliance report.
"""
