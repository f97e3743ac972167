"""The review document and the public crawler information page as HTML, on the one base
(:mod:`scrapy_gdpr._html`).
"""

from __future__ import annotations

from typing import Any

from scrapy_gdpr._html import c as _c
from scrapy_gdpr._html import e as _e
from scrapy_gdpr._html import kv as _kv
from scrapy_gdpr._html import page as _page
from scrapy_gdpr._html import table as _table
from scrapy_gdpr._html import ul as _ul
from scrapy_gdpr.documents.vocabulary import _cap


def _contact_html(contact: dict[str, Any] | None) -> str:
    if not contact:
        return "<span class='small'>not recorded</span>"
    out = [f"<strong>{_e(contact['name'])}</strong>"]
    if contact.get("email"):
        out.append(f"<a href='mailto:{_e(contact['email'])}'>{_e(contact['email'])}</a>")
    if contact.get("phone"):
        out.append(_e(contact["phone"]))
    if contact.get("url"):
        out.append(f"<a href='{_e(contact['url'])}'>{_e(contact['url'])}</a>")
    if contact.get("address"):
        out.append(_e(contact["address"]))
    return "<br>".join(out)


def render_review_html(doc: dict[str, Any]) -> str:
    """The review document for the privacy officer, as one self-contained HTML page."""
    pol, rec = doc["policy"], doc["record"]
    errors = [i for i in doc["checklist"] if i["kind"] == "error"]
    parts = [
        "<header class='doc'><p class='kicker'>Policy review &middot; record of processing (Art. 30 GDPR)</p>",
        f"<h1>{_e(pol['title'])}</h1>",
        f"<p class='meta'>Policy {_c(pol['id'])} &middot; file {_c(pol['file'])}</p>",
        f"<p class='meta'>Fingerprint {_c(pol['fingerprint'])}</p>",
        f"<p class='meta'>Generated on {_e(doc['generated_on'])} by {_e(doc['generator'])}"
        + (f"; dates checked as of {_e(doc['checked_as_of'])}" if doc["checked_as_of"] != doc["generated_on"] else "")
        + "</p></header>",
        "<div class='box ok'><p>This document describes, in plain language, what the crawler configured by this "
        "policy file does with personal data. A crawl records the fingerprint above; if it differs, the policy "
        "was changed after this review.</p>"
        f"<p><strong>{len(doc['checklist'])}</strong> open item(s) in the checklist at the end"
        + (f", <strong>{len(errors)}</strong> of them errors" if errors else "")
        + ".</p></div>",
        "<h2 id='record'>1. Record of processing</h2>",
        "<h3>Who is responsible</h3>",
        _kv([
            ("Controller", _contact_html(rec["controller"])),
            ("Representative in the EU (Art. 27)", _contact_html(rec["representative"])),
            ("Data protection officer", _contact_html(rec["dpo"])),
        ]),
        "<h3>Purposes and lawful basis (Art. 6)</h3>",
        _table(
            ["Purpose", "Lawful basis", "Documentation", "Review"],
            [
                [
                    (f"<strong>{_e(p['description'])}</strong><br><span class='small'>id {_c(p['id'])}; opt-out purposes: "
                    f"{_e(', '.join(p['signal_purposes_words']))}</span>"),
                    f"{_e(_cap(p['lawful_basis_words']))} <span class='small'>({_e(p['lawful_basis_article'])})</span>",
                    f"Basis: {_e(p['basis_reference'] or 'none recorded')}<br>DPIA: {_e(p['dpia_reference'] or 'none recorded')}",
                    (f"Reviewed by {_e(p['reviewed_by'])} on {_e(p['reviewed_on'])}<br>Next review due "
                    f"<strong>{_e(p['review_due'])}</strong>"),
                ]
                for p in rec["purposes"]
            ],
        ),
        "<h3>People and data concerned</h3>",
        _kv([
            ("Categories of data subjects", _ul([_e(s["words"]) for s in rec["data_subjects"]])),
            ("Categories of personal data", _ul([f"{_e(c['words'])} <span class='small'>{_c(c['value'])}</span>"
                                                  for c in rec["data_categories"]])),
            ("Special categories (Art. 9)", _e(
                f"{rec['special_categories']['category']}: {rec['special_categories']['words']} "
                f"({rec['special_categories']['article']}), documented in {rec['special_categories']['reference']}, "
                f"reviewed by {rec['special_categories']['reviewed_by']} on {rec['special_categories']['reviewed_on']}"
            ) if rec["special_categories"] else "None: no Art. 9 condition is documented, so no biometric data is kept."),
        ]),
        "<h3>Recipients and transfers</h3>",
        _table(["Recipient", "Role", "Purpose"],
               [[_e(r["name"]), _e(r["role_words"]), _e(r.get("purpose") or "")] for r in rec["recipients"]])
        if rec["recipients"] else "<p>No recipients are recorded: the data is not disclosed to anyone.</p>",
        _table(["Country", "Recipient", "Safeguard", "Reference"],
               [[_e(t["country"]), _e(t.get("recipient") or ""), _e(t["safeguard_words"]), _e(t.get("reference") or "none recorded")]
                for t in rec["transfers"]])
        if rec["transfers"] else "<p>No transfers outside the EEA are recorded.</p>",
        "<h3>How long data is kept</h3>",
        _table(["What", "Kept for", "Policy value"],
               [[_e(_cap(r["what"])), f"<strong>{_e(r['words'])}</strong>", f"{_c(r['key'])} = {_c(r['period'])}"]
                for r in rec["retention"]]),
        "<h3>Technical and organisational measures the extension enforces (Art. 32)</h3>",
        _ul([_e(m) for m in rec["security_measures"]]),
        "<h2 id='domains'>2. Domains and their terms reviews</h2>",
    ]
    if not doc["domains"]:
        parts.append("<div class='box bad'><p>No domains are listed: the crawler will not fetch anything.</p></div>")
    for d in doc["domains"]:
        t = d["terms"]
        rows = [
            ("Status", f"<span class='tag {'yes' if d['crawled'] else 'no'}'>{'crawled' if d['crawled'] else 'not crawled'}</span> "
             + _e(d["status"].split(": ", 1)[1] if ": " in d["status"] else d["status"].removeprefix("crawled").strip())),
            ("Subdomains", "included" if d["include_subdomains"] else "not included"),
            ("Allowed paths", ", ".join(_c(p) for p in d["allow_paths"]) or "all"),
            ("Denied paths", ", ".join(_c(p) for p in d["deny_paths"]) or "none"),
            ("Rate limit", _e(d["rate_limit"]["words"]) + (" <span class='small'>(policy default)</span>" if d["rate_limit"]["from_policy_default"] else "")),
        ]
        if d["allow_private_network"]:
            rows.append(("Private network", "allowed (local test sites only)"))
        if t is None:
            rows.append(("Terms review", "<strong>none recorded</strong>"))
        else:
            rows += [
                ("Terms", f"<a href='{_e(t['url'])}'>{_e(t['url'])}</a>"),
                ("Verdict", f"<strong>{_e(t['verdict'])}</strong>: {_e(t['verdict_words'])}"),
                ("Conditions", _ul([_e(c) for c in t["conditions"]]) if t["conditions"] else "none"),
                ("Reviewed", f"by {_e(t['reviewed_by'])} on {_e(t['reviewed_on'])}"),
                ("Fingerprint", _c(t["fingerprint"]) if t["fingerprint"] else "<strong>none recorded</strong>"),
            ]
        parts += [f"<h3>{_e(d['domain'])}</h3>", _kv(rows)]
    h = doc["handling"]
    parts += [
        "<h2 id='handling'>3. What the crawler does with pages, images and faces</h2>",
        "<h3>Pages</h3>", _ul([_e(x) for x in h["pages"]]),
        "<h3>Images</h3>", _ul([_e(x) for x in h["images"]]),
        "<h3>Faces</h3>",
        (f"<div class='box{' bad' if h['faces']['action'] == 'keep' else ''}'><p><strong>{_e(h['faces']['words'])}</strong></p>"
        f"<p>{_e(h['faces']['art9'])}</p></div>"),
        _kv([
            ("Action", _c(h["faces"]["action"])),
            ("Detection sensitivity", _e(h["faces"]["sensitivity_words"])),
            ("Margin around a face", _e(h["faces"]["margin_words"])),
            ("Minimum confidence", _e(h["faces"]["min_confidence"] if h["faces"]["min_confidence"] is not None
                                       else "the sensitivity's default")),
        ]),
        "<h2 id='optout'>4. Opt-out signals honoured</h2>",
        _table(["Signal", "Honoured", "Example"],
               [[_e(s["signal"]), f"<span class='tag {'yes' if s['honoured'] else 'no'}'>{'yes' if s['honoured'] else 'no'}</span>",
                 _c(s["example"])] for s in doc["opt_out"]]),
        "<p>robots.txt is always obeyed; it cannot be switched off.</p>",
        (f"<p>Deny lists (domains never contacted, with their subdomains): "
        f"{', '.join(_c(d) for d in doc['deny_lists']) or 'none'}</p>"),
        "<p>Per-purpose robots.txt product tokens (a page is kept for the purpose only when the token may "
        "fetch it): " + (", ".join(f"{_c(t['token'])} ({_e(t['purpose'])})" for t in doc["purpose_tokens"]) or "none")
        + "</p>",
        "<p>RSL usage types each purpose needs a site's licence to grant: "
        + "; ".join(f"{_e(u['purpose'])}: {', '.join(_c(x) for x in u['usage']) or 'none'}" for u in doc["rsl_usage"])
        + "</p>",
        "<p>RSL licences held (a usage a site licenses only for a fee or to registered clients is allowed with "
        "one of these): " + (", ".join(
            f"{_c(h['document'])} ({_e(', '.join(h['usage']))}; {_e(h['reference'])}, {_e(h['obtained_on'])}"
            + (f" to {_e(h['expires_on'])}" if h["expires_on"] else "") + ")" for h in doc["rsl_licences"]) or "none")
        + "</p>",
        "<h2 id='jurisdictions'>5. Excluded jurisdictions</h2>",
        _kv([
            ("Top-level domains", ", ".join(_c(t) for t in doc["jurisdictions"]["exclude_tlds"]) or "none"),
            ("Domains", ", ".join(_c(t) for t in doc["jurisdictions"]["exclude_domains"]) or "none"),
            ("Note", _e(doc["jurisdictions"]["note"] or "")),
        ]),
        "<h2 id='objections'>6. Objections</h2>",
        (f"<p>Objections and erasure requests are kept in {_c(doc['objections']['path'])} "
        f"(<code>objections.path: {_e(doc['objections']['as_written'])}</code>, relative to the policy file). "
        "Every request and every record is checked against it.</p>"),
        (f"<div class='box bad'><p>The project's settings also name an objection list: "
         f"<code>GDPR_OBJECTIONS = {_e(doc['objections']['setting'])}</code>. A crawl with these settings checks "
         "that list, which this review does not cover.</p></div>") if doc["objections"].get("setting") else "",
        "<h2 id='checklist'>7. Checklist of open items</h2>",
    ]
    if doc["checklist"]:
        parts.append(_table(
            ["", "Item", "Line", "What to do"],
            [[f"<span class='tag {_e(i['kind'])}'>{_e(i['kind'])}</span>",
              (f"{_c(i['path'])}: " if i["path"] else "") + _e(i["text"]),
              f"line&nbsp;{i['line']}" if i["line"] else "<span class='small'>not in the file</span>", _e(i["fix"])]
             for i in doc["checklist"]],
        ))
    else:
        parts.append("<p>No open items.</p>")
    parts += [
        "<h2 id='signoff'>8. Sign-off</h2>",
        f"<p>I have reviewed policy {_c(pol['id'])} with fingerprint {_c(pol['fingerprint'])}.</p>",
        "<table class='kv signoff'><tbody>"
         "<tr><th scope='row'>Decision</th><td class='small'>approved &nbsp;/&nbsp; approved with conditions "
        "&nbsp;/&nbsp; not approved</td></tr>"
        + "".join(f"<tr><th scope='row'>{k}</th><td></td></tr>" for k in ("Conditions", "Name", "Date", "Signature"))
        + "</tbody></table>",
        f"<footer>Policy {_c(pol['id'])} &middot; {_c(pol['file'])} &middot; {_c(pol['fingerprint'])}</footer>",
    ]
    return _page(f"Policy review: {pol['title']}", "\n".join(parts))


def render_notice_html(doc: dict[str, Any]) -> str:
    """The public crawler information page (Art. 14 notice)."""
    n = doc["notice"]
    who = n["who"]
    what = n["what"]
    rights_contact = n["rights"]["contact"]
    parts = [
        "<header class='doc'><p class='kicker'>Crawler information</p>",
        f"<h1>{_e(n['title'])}</h1>",
        f"<p class='meta'>User-Agent: {_c(n['user_agent'])}</p>",
        f"<p class='meta'>robots.txt product token: {_c(n['product_token'])}</p></header>",
        (f"<p>{_e(n['product_token'])} is a web crawler: a program that visits public web pages and keeps some of "
        "what it finds. Pages can contain personal data, such as names and photos of people. This page explains "
        "what we do with it, how to keep the crawler away, and how to use your rights.</p>"),
        "<h2 id='who'>Who runs this crawler</h2>",
        _kv([("Controller", _contact_html(who["controller"]))]
            + ([("Representative in the EU", _contact_html(who["representative"]))] if who["representative"] else [])
            + ([("Data protection officer", _contact_html(who["dpo"]))] if who["dpo"] else [])),
        "<h2 id='why'>Why we crawl</h2>",
        _ul([f"{_e(w['purpose'].rstrip('.'))}. <span class='small'>We may do this because {_e(w['basis'])} "
             f"({_e(w['article'])} GDPR).</span>" for w in n["why"]]),
        "<h2 id='what'>What we collect and how long we keep it</h2>",
        f"<p>{_e(what['pages'])}</p>",
    ]
    if what["data_categories"]:
        parts.append("<p>This can include: " + _e(", ".join(what["data_categories"])) + ".</p>")
    if what["data_subjects"]:
        parts.append("<p>It can concern: " + _e(", ".join(what["data_subjects"])) + ".</p>")
    parts += [
        f"<div class='box'><p><strong>{_e(what['faces'])}</strong></p><p>{_e(what['faces_detail'])}</p></div>",
        "<h3>How long we keep it</h3>",
        _ul([_e(r[0].upper() + r[1:]) for r in what["retention"]]),
        "<p>After that, it is deleted automatically.</p>",
    ]
    if what["recipients"]:
        parts += ["<h3>Who receives it</h3>", _ul([_e(r) for r in what["recipients"]])]
    if what["transfers"]:
        parts += ["<h3>Transfers outside the EEA</h3>", _ul([_e(t) for t in what["transfers"]])]
    block = n["block"]
    parts += [
        "<h2 id='block'>How to block the crawler</h2>",
        (f"<p>Add these lines to the <code>robots.txt</code> file at the root of your site to keep "
        f"{_e(n['product_token'])} out of the whole site:</p>"),
        f"<pre><code>{_e(block['robots_txt_all'])}</code></pre>",
        "<p>or out of part of it:</p>",
        f"<pre><code>{_e(block['robots_txt_some'])}</code></pre>",
        f"<p>{_e(block['note'])}</p>",
    ]
    for t in block["purpose_tokens"]:
        parts += [
            (f"<p>To let {_e(n['product_token'])} fetch your pages but keep them out of one use only "
            f"({_e(t['purpose'].rstrip('.'))}), name that use's own token:</p>"),
            f"<pre><code>{_e(t['robots_txt'])}</code></pre>",
        ]
    if block["signals"]:
        parts += [
            "<p>The crawler also honours these signals, on a page or for a whole site:</p>",
            _table(["Signal", "Example"], [[_e(s["signal"]), _c(s["example"])] for s in block["signals"]]),
        ]
    parts += [
        "<h2 id='machine'>For programs</h2>",
        (f"<p>A machine-readable description of this crawler (its product tokens per purpose, User-Agent, contact "
        f"and the signals it honours) is published next to this page: "
        f"<a rel='alternate' type='application/json' href='{_e(n['description_file'])}'>"
        f"{_e(n['description_file'])}</a>.</p>"),
        "<h2 id='rights'>How to object, or ask for access or erasure</h2>",
        _ul([_e(x) for x in n["rights"]["how"]]),
        _kv([("Contact", _contact_html(rights_contact))]),
    ]
    parts.append(
        f"<footer>Crawler information for {_e(n['product_token'])} &middot; {_e(n['info_url'])} &middot; "
        f"last updated {_e(doc['generated_on'])}</footer>"
    )
    return _page(n["title"], "\n".join(parts))
