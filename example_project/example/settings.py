# Scrapy settings for the scrapy-gdpr example project.
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
