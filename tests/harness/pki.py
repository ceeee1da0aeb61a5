"""A throw-away certificate authority for tests and local control planes.

Keys are ECDSA P-256: fast to generate on a slow machine and accepted by
OpenSSL, curl, Python's ssl and Go's crypto/tls (kube-apiserver, etcd).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Backdated so that a clock a little behind on another process does not reject the cert.
_BACKDATE = datetime.timedelta(hours=1)
_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertPair:
    """PEM files of one issued certificate, its private key and the CA that signed it."""

    name: str
    cert: Path
    key: Path
    ca_cert: Path

    def read_cert(self) -> bytes:
        return self.cert.read_bytes()

    def read_key(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class CA:
    """A CA whose certificate and key live in PEM files (so another process can reuse them)."""

    name: str
    cert: Path
    key: Path

    @classmethod
    def load(cls, cert: Path, key: Path) -> CA:
        subject = x509.load_pem_x509_certificate(cert.read_bytes()).subject
        cn = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return cls(name=str(cn[0].value) if cn else "", cert=cert, key=key)

    def issue(
        self,
        dir: Path,
        name: str,
        hosts: Sequence[str] = (),
        client: bool = False,
        organizations: Sequence[str] = (),
    ) -> CertPair:
        """Issue `<dir>/<name>.crt` and `<dir>/<name>.key`.

        `hosts` become SANs (IP addresses as IP SANs, the rest as DNS names). A client
        cert gets the clientAuth usage and can carry Organizations (Kubernetes reads
        them as groups, the CN as the user name).
        """
        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"CA key {self.key} is not an EC key")
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())

        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        dir.mkdir(parents=True, exist_ok=True)
        cert_path = dir / f"{name}.crt"
        key_path = dir / f"{name}.key"
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return CertPair(name=name, cert=cert_path, key=key_path, ca_cert=self.cert)


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signatures for every certificate; certificate and CRL signing for the CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(dir: Path, name: str) -> CA:
    """Create a self-signed CA as `<dir>/<name>.crt` and `<dir>/<name>.key`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    dir.mkdir(parents=True, exist_ok=True)
    cert_path = dir / f"{name}.crt"
    key_path = dir / f"{name}.key"
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(name=name, cert=cert_path, key=key_path)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start: some consumers (etcd, ssh-style checks) refuse open keys.
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(pem)
