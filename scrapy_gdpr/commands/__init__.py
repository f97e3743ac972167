"""``scrapy gdpr-*`` commands, registered through the ``scrapy.commands`` entry points."""
