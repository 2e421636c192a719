"""TLS certificates and contexts for party-to-party links: a development CA for ``ringlet certs``.

``make_dev_certs`` makes a throwaway CA plus one key and certificate per party (ECDSA P-256, keys
as unencrypted PEM with mode 0o600), good for tests, demos and private clusters. Production
deployments bring their own PKI: ``server_context``/``client_context`` accept any CA, certificate
and key files. Both contexts speak TLS 1.3 only and require a certificate from the other side
(mutual authentication); the peer's identity is its subject CN, read with ``peer_name``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes, PrivateKeyTypes

StrPath = str | os.PathLike[str]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SKEW = datetime.timedelta(minutes=5)  # backdate notBefore a little for clock skew between hosts
_NO_USAGE = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                 encipher_only=False, decipher_only=False)


def _check_names(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"bad party name {name!r}: must match {_NAME.pattern} (at most 64 "
                             "letters, digits, '_', '.', '-'; starting with a letter or digit)")
        if name.lower() == "ca":
            raise ValueError(f"bad party name {name!r}: 'ca' is reserved for the CA's own files")
        if name.lower() in seen:  # case-insensitive: the files would clash on macOS/Windows
            raise ValueError(f"duplicate party name {name!r}")
        seen.add(name.lower())


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    # not_valid_after_utc is cryptography >= 42; the naive not_valid_after is UTC
    utc = getattr(cert, "not_valid_after_utc", None)
    return utc or cert.not_valid_after.replace(tzinfo=datetime.UTC)


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # an overwritten file keeps its old mode otherwise; umask aside
        os.write(fd, data)
    finally:
        os.close(fd)


def _save(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path,
          key_path: Path, overwrite: bool) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write(key_path, pem, 0o600, overwrite)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, overwrite)


def _new_ca(days: int, cn: str = "ringlet development CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(**{**_NO_USAGE, "key_cert_sign": True, "crl_sign": True}),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKeyTypes]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as e:
        raise ValueError(f"cannot read the CA certificate {cert_path}: {e}") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:  # TypeError: the key is encrypted
        raise ValueError(f"cannot read the CA key {key_path} (unencrypted PEM expected): {e}") \
            from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ValueError(f"the CA key {key_path} does not belong to the certificate {cert_path}")
    if _not_after(cert) <= datetime.datetime.now(datetime.UTC):
        raise ValueError(f"the CA certificate {cert_path} has expired; make a new one (overwrite)")
    return cert, key


def _party_cert(name: str, days: int, ca_cert: x509.Certificate,
                ca_key: Any) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # a certificate outliving its issuer would only fail later; end it with the CA
    until = min(now + datetime.timedelta(days=days), _not_after(ca_cert))
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        # a CA's key signs: never one of the key-agreement types public_key() may also return
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            cast("CertificateIssuerPublicKeyTypes", ca_cert.public_key()))
    san = x509.SubjectAlternativeName([x509.DNSName(name), x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(**{**_NO_USAGE, "digital_signature": True}), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(san, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(aki, critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def make_dev_certs(out_dir: StrPath, names: list[str], days: int = 365,
                   overwrite: bool = False) -> dict[str, tuple[Path, Path]]:
    """Make a development CA and one certificate per party in ``out_dir``; returns the paths.

    Writes ``ca.pem``/``ca.key`` and ``<name>.pem``/``<name>.key`` for each name (the certificate's
    CN; SANs ``<name>``, ``localhost``, ``127.0.0.1``; usable as TLS server and client). Returns
    ``{name: (cert_path, key_path)}`` plus ``"ca": (ca.pem, ca.key)``.

    Existing files: with ``overwrite=False`` an existing party file is a ``FileExistsError``, but
    an existing, complete CA (both ``ca.pem`` and ``ca.key``) is REUSED to sign the new parties,
    so parties can be added later and still trust each other. With ``overwrite=True`` everything,
    the CA included, is made anew; certificates signed by the old CA then stop being trusted.
    Nothing is written unless all the checks pass.
    """
    if isinstance(names, str):
        raise TypeError("names must be a list of party names, not one string")
    _check_names(list(names))
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    out = Path(out_dir)
    ca_paths = (out / "ca.pem", out / "ca.key")
    party_paths = {n: (out / f"{n}.pem", out / f"{n}.key") for n in names}
    ca: tuple[x509.Certificate, Any] | None = None  # (certificate, private key)
    if not overwrite:
        for path in (p for pair in party_paths.values() for p in pair):
            if path.exists():
                raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
        present = [p for p in ca_paths if p.exists()]
        if len(present) == 2:
            ca = _load_ca(*ca_paths)
        elif present:
            raise FileExistsError(f"{present[0]} already exists without its pair; cannot reuse "
                                  "the CA (pass overwrite=True to make a new one)")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if ca is None:
        ca = _new_ca(days)
        _save(*ca, *ca_paths, overwrite)
    for name, (cert_path, key_path) in party_paths.items():
        _save(*_party_cert(name, days, *ca), cert_path, key_path, overwrite)
    return {"ca": ca_paths, **party_paths}


def make_self_signed(out_dir: StrPath, name: str, days: int = 365,
                     overwrite: bool = False) -> tuple[Path, Path]:
    """Make ``<name>.pem``/``<name>.key`` signed by a throwaway CA that is not saved anywhere.

    The certificate looks like a party's (same CN, SANs and usages) but no one trusts its issuer:
    an impostor for tests. Returns ``(cert_path, key_path)``.
    """
    _check_names([name])
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = (out / f"{name}.pem", out / f"{name}.key")
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    _save(*_party_cert(name, days, *_new_ca(days, "ringlet impostor CA")), *paths, overwrite)
    return paths


def peer_name(cert: bytes | dict[str, Any] | None) -> str:
    """The subject CN of a peer certificate: ``SSLSocket.getpeercert()`` (dict) or its DER bytes.

    Raises ``ValueError`` if there is no certificate (an empty dict: not verified) or it has no
    CN, or more than one.
    """
    if isinstance(cert, (bytes, bytearray, memoryview)):
        attrs = x509.load_der_x509_certificate(bytes(cert)).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)
        cns = [str(a.value) for a in attrs]
    elif isinstance(cert, dict) and cert:
        cns = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    else:
        raise ValueError("no verified peer certificate (handshake not done, or not verified)")
    if len(cns) != 1:
        raise ValueError(f"peer certificate must have exactly one subject CN, has {len(cns)}")
    return cns[0]


def _context(protocol: int, ca: StrPath, cert: StrPath, key: StrPath) -> ssl.SSLContext:
    for what, path in (("CA certificate", ca), ("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"TLS {what} file not found: {path}")
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca))
    except ssl.SSLError as e:
        raise ValueError(f"cannot load the TLS CA certificate {ca}: {e}") from None
    try:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    except ssl.SSLError as e:
        raise ValueError(f"cannot load the TLS certificate {cert} with key {key} (unencrypted "
                         f"PEM, matching pair expected): {e}") from None
    return ctx


def server_context(ca: StrPath, cert: StrPath, key: StrPath) -> ssl.SSLContext:
    """TLS 1.3 context for the accepting side: presents ``cert``, requires a client certificate
    signed by ``ca`` (mutual authentication). Check who connected with ``peer_name``."""
    return _context(ssl.PROTOCOL_TLS_SERVER, ca, cert, key)


def client_context(ca: StrPath, cert: StrPath, key: StrPath) -> ssl.SSLContext:
    """TLS 1.3 context for the connecting side: presents ``cert``, requires a server certificate
    signed by ``ca``. ``check_hostname`` is off: parties are named, not addressed, so the caller
    must itself compare ``peer_name(sock.getpeercert())`` with the party it expects to reach."""
    return _context(ssl.PROTOCOL_TLS_CLIENT, ca, cert, key)
