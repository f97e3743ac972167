"""State that several crawl machines share (``GDPR_STATE_URL``): politeness bookings,
Retry-After blocks, fetch-once leases and caches (:mod:`.state`), and the scrapy-redis
queue with JSON entries (:mod:`.queue`). The objection list kept beside the shared
ledger is the gate's (:mod:`scrapy_gdpr.gate.shared_objections`). With
``GDPR_STATE_URL`` unset, the state is in-process."""
