#!/bin/sh
# Run one scrapy-gdpr crawl for a scheduler (cron, a systemd timer, a Kubernetes
# CronJob) and act on its exit status. Run it in the Scrapy project's folder:
#
#   run-crawl.sh SPIDER [more 'scrapy crawl' arguments]
#
# Exit statuses (docs/operations.md) are passed on unchanged, so the scheduler
# records the truth:
#   0  the crawl ran
#   3  start-up refused (policy or a GDPR_* setting invalid): nothing was fetched
#   4  compliance-blocked: everything was refused, or every item dropped. Not retried:
#      the next run would be refused the same way until the policy or the site changes
#   5  face stage unavailable: images could not be checked, so none were stored. Pages
#      someone (GDPR_PAGE_COMMAND)
#
# Environment:
#   SCRAPY              the scrapy command (default: scrapy)
#   GDPR_PAGE_COMMAND   run on status 5 (and 3), with SPIDER and STATUS as arguments:
#                       your paging hook (Alertmanager, PagerDuty, an e-mail)
#   GDPR_NOTIFY_COMMAND run on status 4, with SPIDER and STATUS: a ticket, not a page
#
# This script never retries a crawl: the schedule's next run is the retry.
set -u

if [ $# -lt 1 ]; then
    echo "usage: run-crawl.sh SPIDER [scrapy crawl arguments]" >&2
    exit 2
fi
spider=$1
shift

${SCRAPY:-scrapy} crawl "$spider" "$@"
status=$?

hook() {
    # $1: the command (may be empty); runs it with the spider and the status
    if [ -n "$1" ]; then
        sh -c "$1 \"\$@\"" hook "$spider" "$status" || echo "run-crawl.sh: the alert command failed" >&2
    fi
}

case $status in
    0) ;;
    3)
        echo "run-crawl.sh: crawl of $spider refused at start-up (exit 3): fix the policy or the GDPR_* setting; scrapy gdpr-lint and scrapy gdpr-check say what is wrong" >&2
        hook "${GDPR_PAGE_COMMAND:-}"
        ;;
    4)
        echo "run-crawl.sh: crawl of $spider compliance-blocked (exit 4): not retried; read the close summary and the compliance report" >&2
        hook "${GDPR_NOTIFY_COMMAND:-}"
        ;;
    5)
        echo "run-crawl.sh: crawl of $spider ran without its face stage (exit 5): no image was stored; repair the installation" >&2
        hook "${GDPR_PAGE_COMMAND:-}"
        ;;
    *)
        echo "run-crawl.sh: crawl of $spider failed (exit $status): read the crawl log" >&2
        ;;
esac
exit $status
