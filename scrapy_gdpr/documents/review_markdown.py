"""The review document as Markdown, for a repository next to the policy file.
"""

from __future__ import annotations

from typing import Any

from scrapy_gdpr.documents.vocabulary import _cap, _contact_line


def _md(value: Any) -> str:
    text = "" if value is None else str(value)
    for ch in "\\|*_`<>[]":
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", " ")


def _mdc(value: Any) -> str:
    text = str(value).replace("|", "\\|")
    return f"`{text}`"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def render_review_markdown(doc: dict[str, Any]) -> str:
    """The review document as Markdown (for a ticket, a wiki or version control)."""
    pol, rec = doc["policy"], doc["record"]
    L: list[str] = [
        f"# Policy review: {_md(pol['title'])}",
        "",
        f"- Policy: {_mdc(pol['id'])}",
        f"- File: {_mdc(pol['file'])}",
        f"- Fingerprint: {_mdc(pol['fingerprint'])}",
        f"- Generated on {doc['generated_on']} by {_md(doc['generator'])}"
        + (f"; dates checked as of {doc['checked_as_of']}" if doc["checked_as_of"] != doc["generated_on"] else ""),
        f"- Open items: {len(doc['checklist'])} (see the checklist at the end)",
        "",
        "## 1. Record of processing (Art. 30)",
        "",
        "### Who is responsible",
        "",
        f"- Controller: {_md(_contact_line(rec['controller']))}",
        f"- Representative in the EU (Art. 27): {_md(_contact_line(rec['representative'])) or 'not recorded'}",
        f"- Data protection officer: {_md(_contact_line(rec['dpo'])) or 'not recorded'}",
        "",
        "### Purposes and lawful basis (Art. 6)",
        "",
    ]
    L += _md_table(
        ["Purpose", "Lawful basis", "Documentation", "Review"],
        [[f"{_md(p['description'])} ({_mdc(p['id'])})",
          f"{_md(_cap(p['lawful_basis_words']))} ({p['lawful_basis_article']})",
          f"Basis: {_md(p['basis_reference'] or 'none recorded')}; DPIA: {_md(p['dpia_reference'] or 'none recorded')}",
          f"Reviewed by {_md(p['reviewed_by'])} on {p['reviewed_on']}; due {p['review_due']}"]
         for p in rec["purposes"]],
    )
    L += ["### People and data concerned", ""]
    L.append("- Data subjects: " + (", ".join(_md(s["words"]) for s in rec["data_subjects"]) or "none recorded"))
    L.append("- Personal data: " + (", ".join(f"{_md(c['words'])} ({_mdc(c['value'])})" for c in rec["data_categories"]) or "none recorded"))
    sc = rec["special_categories"]
    L.append("- Special categories (Art. 9): " + (
        _md(f"{sc['category']}: {sc['words']} ({sc['article']}), documented in {sc['reference']}, "
            f"reviewed by {sc['reviewed_by']} on {sc['reviewed_on']}") if sc
        else "none: no Art. 9 condition is documented, so no biometric data is kept"))
    L += ["", "### Recipients and transfers", ""]
    if rec["recipients"]:
        L += _md_table(["Recipient", "Role", "Purpose"],
                       [[_md(r["name"]), _md(r["role_words"]), _md(r.get("purpose") or "")] for r in rec["recipients"]])
    else:
        L += ["No recipients are recorded.", ""]
    if rec["transfers"]:
        L += _md_table(["Country", "Recipient", "Safeguard", "Reference"],
                       [[_md(t["country"]), _md(t.get("recipient") or ""), _md(t["safeguard_words"]), _md(t.get("reference") or "")]
                        for t in rec["transfers"]])
    else:
        L += ["No transfers outside the EEA are recorded.", ""]
    L += ["### How long data is kept", ""]
    L += _md_table(["What", "Kept for", "Policy value"],
                   [[_md(_cap(r["what"])), f"**{_md(r['words'])}**", f"{_mdc(r['key'])} = {_mdc(r['period'])}"]
                    for r in rec["retention"]])
    L += ["### Measures the extension enforces (Art. 32)", ""]
    L += [f"- {_md(m)}" for m in rec["security_measures"]]
    L += ["", "## 2. Domains and their terms reviews", ""]
    if not doc["domains"]:
        L += ["No domains are listed: the crawler will not fetch anything.", ""]
    for d in doc["domains"]:
        t = d["terms"]
        L += [f"### {_md(d['domain'])}", "", f"- Status: **{_md(d['status'])}**",
              f"- Subdomains: {'included' if d['include_subdomains'] else 'not included'}",
              f"- Allowed paths: {', '.join(_mdc(p) for p in d['allow_paths']) or 'all'}",
              f"- Denied paths: {', '.join(_mdc(p) for p in d['deny_paths']) or 'none'}",
              f"- Rate limit: {_md(d['rate_limit']['words'])}"]
        if t is None:
            L.append("- Terms review: **none recorded**")
        else:
            L += [f"- Terms: <{t['url']}>",
                  f"- Verdict: **{t['verdict']}** ({_md(t['verdict_words'])})",
                  f"- Conditions: {'; '.join(_md(c) for c in t['conditions']) or 'none'}",
                  f"- Reviewed by {_md(t['reviewed_by'])} on {t['reviewed_on']}",
                  f"- Fingerprint: {_mdc(t['fingerprint']) if t['fingerprint'] else '**none recorded**'}"]
        L.append("")
    h = doc["handling"]
    L += ["## 3. What the crawler does with pages, images and faces", "", "### Pages", ""]
    L += [f"- {_md(x)}" for x in h["pages"]]
    L += ["", "### Images", ""]
    L += [f"- {_md(x)}" for x in h["images"]]
    L += ["", "### Faces", "", f"**{_md(h['faces']['words'])}** {_md(h['faces']['art9'])}", "",
          f"- Action: {_mdc(h['faces']['action'])}",
          f"- Detection sensitivity: {_md(h['faces']['sensitivity_words'])}",
          f"- Margin around a face: {_md(h['faces']['margin_words'])}", "",
          "## 4. Opt-out signals honoured", ""]
    L += _md_table(["Signal", "Honoured", "Example"],
                   [[_md(s["signal"]), "yes" if s["honoured"] else "**no**", _mdc(s["example"])] for s in doc["opt_out"]])
    L += ["robots.txt is always obeyed; it cannot be switched off.", "",
          (f"Deny lists (domains never contacted, with their subdomains): "
          f"{', '.join(_mdc(d) for d in doc['deny_lists']) or 'none'}"), "",
          "Per-purpose robots.txt product tokens (a page is kept for the purpose only when the token may fetch it): "
          + (", ".join(f"{_mdc(t['token'])} ({_md(t['purpose'])})" for t in doc["purpose_tokens"]) or "none"), "",
          "RSL usage types each purpose needs a site's licence to grant: "
          + "; ".join(f"{_md(u['purpose'])}: {', '.join(_mdc(x) for x in u['usage']) or 'none'}"
                      for u in doc["rsl_usage"]), "",
          "RSL licences held: " + (", ".join(
              f"{_mdc(h['document'])} ({_md(', '.join(h['usage']))}; {_md(h['reference'])}, {_md(h['obtained_on'])}"
              + (f" to {_md(h['expires_on'])}" if h["expires_on"] else "") + ")" for h in doc["rsl_licences"])
              or "none"), "",
          "## 5. Excluded jurisdictions", "",
          f"- Top-level domains: {', '.join(_mdc(t) for t in doc['jurisdictions']['exclude_tlds']) or 'none'}",
          f"- Domains: {', '.join(_mdc(t) for t in doc['jurisdictions']['exclude_domains']) or 'none'}"]
    if doc["jurisdictions"]["note"]:
        L.append(f"- Note: {_md(doc['jurisdictions']['note'])}")
    L += ["", "## 6. Objections", "",
          f"Objections and erasure requests are kept in {_mdc(doc['objections']['path'])}; every request and "
          "every record is checked against it."
          + (f" The project's settings also name an objection list, `GDPR_OBJECTIONS = "
             f"{doc['objections']['setting']}`; a crawl with these settings checks that list, which this review "
             "does not cover." if doc["objections"].get("setting") else ""),
          "", "## 7. Checklist of open items", ""]
    if doc["checklist"]:
        L += [f"- [ ] **{i['kind']}** {'line ' + str(i['line']) + ' ' if i['line'] else ''}{(_mdc(i['path']) + ': ') if i['path'] else ''}"
              f"{_md(i['text'])} (fix: {_md(i['fix'])})" for i in doc["checklist"]]
    else:
        L.append("No open items.")
    L += ["", "## 8. Sign-off", "", f"I have reviewed policy {_mdc(pol['id'])} with fingerprint {_mdc(pol['fingerprint'])}.", "",
          "- Decision (approved / approved with conditions / not approved):", "- Conditions:", "- Name:", "- Date:",
          "- Signature:", ""]
    return "\n".join(L)
