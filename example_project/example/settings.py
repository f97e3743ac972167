# Scrapy settings for the scrapy-gdpr example project.
import importlib.util

BOT_NAME = "example"
SPIDER_MODULES = ["example.spiders"]
NEWSPIDER_MODULE = "example.spiders"

# The one line that makes the crawl lawful and polite by default.
ADDONS = {"scrapy_gdpr.Addon": 0}

# Each spider's policy file (%(name)s is the spider's name): what a privacy
# officer reads, lints and signs off. Every privacy decision lives there.
GDPR_POLICY = "policies/%(name)s.yaml"

# Where this crawl writes things (operational settings only).
GDPR_AUDIT_LOG = "output/audit/%(name)s.jsonl"
GDPR_REPORT_DIR = "output/reports"
GDPR_LEDGER = "sqlite:///output/ledger.sqlite3"
IMAGES_STORE = "output/images"
IMAGES_THUMBS = {"small": (120, 120)}
FEEDS = {
    "output/items/%(name)s.jsonl": {"format": "jsonlines", "encoding": "utf8", "overwrite": False},
}

LOG_LEVEL = "INFO"

# Monitors and metrics for ops (optional extras, installed by `make demo`):
# the scrapy-gdpr Spidermon suite runs when the spider closes (its results are in
# the crawl log), and the same figures go to a node-exporter textfile.
if importlib.util.find_spec("spidermon") is not None:
    SPIDERMON_ENABLED = True
    EXTENSIONS = {"spidermon.contrib.scrapy.extensions.Spidermon": 500}
    SPIDERMON_SPIDER_CLOSE_MONITORS = ("scrapy_gdpr.monitors.GdprMonitorSuite",)
if importlib.util.find_spec("prometheus_client") is not None:
    GDPR_METRICS_TEXTFILE = "output/metrics/scrapy_gdpr_%(name)s.prom"
