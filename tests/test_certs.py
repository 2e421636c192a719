"""Development CA and mutual TLS 1.3 contexts (ringlet.comm.certs)."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ringlet.comm.certs import client_context, make_dev_certs, make_self_signed, peer_name, server_context


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_dev_certs(tmp_path_factory.mktemp("certs"), ["alice", "bob"])


def _load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext):
    """Handshake over a socketpair, client in a thread; returns (server, client) outcomes: the
    peer's CN after a ping/pong exchange, or the exception raised."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    out: dict[str, object] = {}

    def client() -> None:
        try:
            with client_ctx.wrap_socket(b) as s:
                name = peer_name(s.getpeercert())
                s.sendall(b"ping")
                assert s.recv(4) == b"pong"
                out["client"] = name
        except (OSError, AssertionError) as e:  # ssl.SSLError is an OSError
            out["client"] = e

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        with server_ctx.wrap_socket(a, server_side=True) as s:
            name = peer_name(s.getpeercert())
            assert s.recv(4) == b"ping"
            s.sendall(b"pong")
            server = name
    except OSError as e:
        server = e
    finally:
        a.close()
        thread.join(5)
    assert not thread.is_alive()
    return server, out["client"]


def _ctx(kind, certs, name):
    ca = certs["ca"][0]
    return kind(ca, *certs[name])


def test_files_and_returned_paths(certs):
    assert set(certs) == {"ca", "alice", "bob"}
    out = certs["ca"][0].parent
    assert certs["ca"] == (out / "ca.pem", out / "ca.key")
    assert certs["bob"] == (out / "bob.pem", out / "bob.key")
    for cert_path, key_path in certs.values():
        assert cert_path.is_file()
        assert os.stat(key_path).st_mode & 0o777 == 0o600
        assert b"BEGIN PRIVATE KEY" in key_path.read_bytes()  # unencrypted PKCS#8


def test_ca_certificate(certs):
    ca = _load(certs["ca"][0])
    assert ca.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    ca.verify_directly_issued_by(ca)


def test_party_certificate(certs):
    ca = _load(certs["ca"][0])
    cert = _load(certs["alice"][0])
    cert.verify_directly_issued_by(ca)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["alice"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["alice", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_existing_files_and_ca_reuse(tmp_path):
    first = make_dev_certs(tmp_path, ["alice"])
    ca_pem = first["ca"][0].read_bytes()
    with pytest.raises(FileExistsError, match="alice"):
        make_dev_certs(tmp_path, ["alice"])
    with pytest.raises(FileExistsError, match="alice"):  # nothing written for carol either
        make_dev_certs(tmp_path, ["carol", "alice"])
    assert not (tmp_path / "carol.pem").exists()
    # the CA is there and only new parties are asked: it signs them
    second = make_dev_certs(tmp_path, ["bob"])
    assert second["ca"] == first["ca"] and first["ca"][0].read_bytes() == ca_pem
    _load(second["bob"][0]).verify_directly_issued_by(_load(first["ca"][0]))
    certs = {**first, **second}
    assert _handshake(_ctx(server_context, certs, "alice"),
                      _ctx(client_context, certs, "bob")) == ("bob", "alice")
    # overwrite makes everything anew, the CA included
    third = make_dev_certs(tmp_path, ["alice"], overwrite=True)
    assert third["ca"][0].read_bytes() != ca_pem
    assert os.stat(third["alice"][1]).st_mode & 0o777 == 0o600


def test_half_a_ca_is_not_reused(tmp_path):
    make_dev_certs(tmp_path, ["alice"])
    (tmp_path / "ca.key").unlink()
    with pytest.raises(FileExistsError, match="ca.pem"):
        make_dev_certs(tmp_path, ["bob"])


@pytest.mark.parametrize("bad", ["", "-alice", ".x", "a/b", "../x", "a b", "a" * 65, "alice\n",
                                 "é", "ca", "CA"])
def test_bad_names_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="bad party name") as info:
        make_dev_certs(tmp_path / "out", ["alice", bad])
    assert repr(bad) in str(info.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError):
        make_self_signed(tmp_path, bad)


def test_good_names_and_duplicates(tmp_path):
    names = ["a", "B2", "party_1.example-x", "x" * 64]
    assert set(make_dev_certs(tmp_path, names)) == {"ca", *names}
    with pytest.raises(ValueError, match="duplicate"):
        make_dev_certs(tmp_path / "dup", ["bob", "Bob"])
    with pytest.raises(ValueError, match="days"):
        make_dev_certs(tmp_path / "days", ["bob"], days=0)


def test_mutual_tls13_handshake(certs):
    server = _ctx(server_context, certs, "alice")
    client = _ctx(client_context, certs, "bob")
    for ctx in (server, client):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert not client.check_hostname
    assert _handshake(server, client) == ("bob", "alice")


def test_impostor_client_rejected(certs, tmp_path):
    cert, key = make_self_signed(tmp_path, "bob")  # claims to be bob, signed by another CA
    with pytest.raises(FileExistsError):
        make_self_signed(tmp_path, "bob")
    impostor = client_context(certs["ca"][0], cert, key)
    server, client = _handshake(_ctx(server_context, certs, "alice"), impostor)
    assert isinstance(server, ssl.SSLError)
    assert isinstance(client, OSError)  # the impostor never gets the pong


def test_impostor_server_rejected(certs, tmp_path):
    cert, key = make_self_signed(tmp_path, "alice")
    impostor = server_context(certs["ca"][0], cert, key)
    _, client = _handshake(impostor, _ctx(client_context, certs, "bob"))
    assert isinstance(client, ssl.SSLCertVerificationError)


def test_peer_name_forms(certs):
    der = ssl.PEM_cert_to_DER_cert(certs["bob"][0].read_text())
    assert peer_name(der) == "bob"
    parsed = {"subject": ((("countryName", "XX"),), (("commonName", "carol"),))}
    assert peer_name(parsed) == "carol"
    for bad in ({}, None, {"subject": ((("organizationName", "x"),),)}):
        with pytest.raises(ValueError):
            peer_name(bad)


def test_context_file_errors(certs, tmp_path):
    ca, (cert, key) = certs["ca"][0], certs["alice"]
    missing = tmp_path / "nope.pem"
    for args in ((missing, cert, key), (ca, missing, key), (ca, cert, missing)):
        with pytest.raises(FileNotFoundError, match="nope.pem"):
            server_context(*args)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="garbage.pem"):
        client_context(garbage, cert, key)
    with pytest.raises(ValueError, match="alice.pem"):  # bob's key does not fit alice's cert
        client_context(ca, cert, certs["bob"][1])
