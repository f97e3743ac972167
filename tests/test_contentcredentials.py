"""C2PA / CAWG training-and-mining assertions: real manifests signed in the test with c2pa-python."""

from __future__ import annotations

import datetime
import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image

from scrapy_gdpr.contentcredentials import read_training_mining
from tests.conftest import MockServer
from tests.test_optout import run, write_policy
from tests.utils import coroutine_test

if TYPE_CHECKING:
    from pathlib import Path

c2pa = pytest.importorskip("c2pa")


def _signer() -> Any:
    """An ES256 signer with a certificate chain made here (a CA and a leaf: C2PA refuses self-signed leaves)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tests")])

    def usage(**on: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        return x509.KeyUsage(**{**flags, **on})

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    base = x509.CertificateBuilder().not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(
        now + datetime.timedelta(days=30))
    ca = (base.subject_name(name("Test CA")).issuer_name(name("Test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (base.subject_name(name("Test signer")).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    certs = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", certs, pem, None))


def signed_image(entries: dict[str, Any] | None, label: str = "cawg.training-mining", fmt: str = "JPEG") -> bytes:
    """A real image with an embedded, signed C2PA manifest carrying ``entries`` (None: no such assertion)."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (40, 90, 160)).save(buf, fmt)
    assertions: list[dict[str, Any]] = [{"label": "c2pa.actions", "data": {"actions": [
        {"action": "c2pa.created", "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}]}}]
    if entries is not None:
        assertions.append({"label": label, "data": {"entries": entries}})
    manifest = {"claim_generator_info": [{"name": "scrapy-gdpr tests", "version": "1"}], "title": "test",
                "assertions": assertions}
    out = io.BytesIO()
    mime = {"JPEG": "image/jpeg", "PNG": "image/png"}[fmt]
    c2pa.Builder(json.dumps(manifest)).sign(_signer(), mime, io.BytesIO(buf.getvalue()), out)
    return out.getvalue()


def test_reads_the_assertion():
    data = signed_image({"cawg.ai_training": {"use": "notAllowed"}, "cawg.ai_inference": {"use": "allowed"},
                         "cawg.data_mining": {"use": "constrained", "constraint_info": "ask us"}})
    found = read_training_mining(data, "image/jpeg")
    assert found.problems == []
    assert found.reservations == [(("ai-train",), "C2PA cawg.training-mining: cawg.ai_training notAllowed"),
                                  (("ai-train", "ai-input"), "C2PA cawg.training-mining: cawg.data_mining constrained")]
    # the format comes from the bytes, whatever the Content-Type says
    assert read_training_mining(data, "application/octet-stream").reservations == found.reservations
    png = signed_image({"c2pa.ai_inference": {"use": "notAllowed"}}, label="c2pa.training-mining", fmt="PNG")
    assert read_training_mining(png).reservations == [
        (("ai-input",), "C2PA c2pa.training-mining: c2pa.ai_inference notAllowed")]


def test_allowed_absent_and_malformed():
    assert read_training_mining(signed_image({"cawg.ai_training": {"use": "allowed"}})).reservations == []
    assert read_training_mining(signed_image(None)).reservations == []  # a manifest without the assertion
    maybe = read_training_mining(signed_image({"cawg.ai_generative_training": {"use": "maybe"}}))
    assert maybe.problems and maybe.reservations[0][0] == ("ai-train",)  # malformed: reserved, in doubt
    # a damaged manifest store: cannot be read, so a problem (reserved in doubt by the middleware)
    damaged = read_training_mining(damaged_image())
    assert damaged.problems and "cannot be read" in damaged.problems[0]  # never silently allowed
    assert read_training_mining(b"\xff\xd8\xff c2pa by chance").problems == []


def damaged_image() -> bytes:
    data = bytearray(signed_image({"cawg.ai_training": {"use": "notAllowed"}}))
    at = data.find(b"jumb")
    data[at + 4: at + 64] = b"\x00" * 60
    return bytes(data)


@pytest.fixture
def c2pa_site(tmp_path):
    site = tmp_path / "site"
    host = site / "hosts" / "c2pa"
    host.mkdir(parents=True)
    (site / "default").mkdir()
    (host / "no-training.jpg").write_bytes(signed_image({"cawg.ai_training": {"use": "notAllowed"}}))
    (host / "allowed.jpg").write_bytes(signed_image({"cawg.ai_training": {"use": "allowed"},
                                                     "cawg.ai_inference": {"use": "allowed"}}))
    (host / "maybe.jpg").write_bytes(signed_image({"cawg.ai_inference": {"use": "perhaps"}}))
    (host / "damaged.jpg").write_bytes(damaged_image())
    with MockServer(site=site) as server:
        yield server


async def _refused(tmp_path: Path, server: Any, purposes: list[str], **opt_out: Any) -> dict[str, str]:
    names = ["no-training.jpg", "allowed.jpg", "maybe.jpg", "damaged.jpg"]
    urls = {n: server.url(f"/{n}", host="c2pa.test") for n in names}
    crawler = await run(tmp_path, list(urls.values()),
                        write_policy(tmp_path, signal_purposes=purposes, opt_out=opt_out or None))
    return {n: str(crawler.spider.failures[u]) for n, u in urls.items() if u in crawler.spider.failures}


@coroutine_test
async def test_crawl_refuses_images_whose_manifest_reserves_the_purpose(tmp_path, c2pa_site):
    refused = await _refused(tmp_path, c2pa_site, ["ai-train"])
    assert set(refused) == {"no-training.jpg", "damaged.jpg"}
    assert "ai-train reserved by C2PA cawg.training-mining: cawg.ai_training notAllowed" in refused["no-training.jpg"]
    refused = await _refused(tmp_path, c2pa_site, ["ai-input"])
    assert set(refused) == {"maybe.jpg", "damaged.jpg"} and "in doubt" in refused["maybe.jpg"]
    refused = await _refused(tmp_path, c2pa_site, ["search"])  # an unreadable manifest store: every purpose
    assert set(refused) == {"damaged.jpg"} and "every purpose reserved, in doubt" in refused["damaged.jpg"]
    assert await _refused(tmp_path, c2pa_site, ["ai-train", "ai-input"], content_credentials=False) == {}
