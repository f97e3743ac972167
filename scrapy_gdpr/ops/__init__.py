"""Watching crawls: the compliance figures of a crawl (:mod:`.figures`), Prometheus
metrics (:mod:`.metrics`) and Spidermon monitors (:mod:`.monitors`)."""
