"""Running crawls: the figures of a crawl (:mod:`.figures`), Prometheus metrics
(:mod:`.metrics`), Spidermon monitors (:mod:`.monitors`) and what a scheduler may pass
(:mod:`.scheduling`)."""
