"""Throwaway PKI for the dev cluster: a CA, serving and client certificates, SA keys.

Everything is generated fresh per cluster and written as PEM files into a
directory; nothing here is meant to be secure beyond "works on 127.0.0.1".
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)

#: Subject alternative names of the apiserver serving certificate.
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertKey:
    """Paths of a PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """All the files the control plane components need."""

    ca: CertKey
    apiserver: CertKey
    front_proxy_ca: CertKey
    front_proxy_client: CertKey
    service_account_key: Path
    service_account_pub: Path
    clients: dict[str, CertKey]


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *, ca: bool
) -> x509.CertificateBuilder:
    """What the CA and every leaf share: validity, basic constraints and key usage."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


class _Authority:
    """A self-signed CA that can issue leaf certificates."""

    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            _builder(name, name, self.key.public_key(), ca=True)
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def save(self, directory: Path, stem: str) -> CertKey:
        pair = CertKey(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
        _write_cert(pair.cert, self.cert)
        _write_key(pair.key, self.key)
        return pair

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        server: bool = False,
        client: bool | None = None,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
    ) -> CertKey:
        """A leaf certificate for a server or (the default) a client; ``client=True`` with ``server=True``
        for both ends of a mutual-TLS link."""
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        if client if client is not None else not server:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            _builder(_name(common_name, organizations), self.cert.subject, key.public_key(), ca=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if dns_names or ip_addresses:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = CertKey(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
        _write_cert(pair.cert, cert)
        _write_key(pair.key, key)
        return pair


def generate(
    directory: Path,
    clients: dict[str, tuple[str, tuple[str, ...]]],
    *,
    service_ip: str = "10.96.0.1",
    apiserver_ips: tuple[str, ...] = (),
) -> ClusterPKI:
    """Write a fresh PKI into ``directory``.

    ``clients`` maps a file stem to ``(common name, organizations)`` for each
    client certificate to issue (the user name and groups the apiserver sees).
    ``apiserver_ips`` are more addresses the apiserver serves on (besides
    127.0.0.1 and the ``kubernetes`` Service IP).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Authority("moorage-devcluster-ca")
    front_proxy = _Authority("moorage-devcluster-front-proxy-ca")

    apiserver = ca.issue(
        directory,
        "apiserver",
        "kube-apiserver",
        server=True,
        dns_names=APISERVER_DNS_NAMES,
        ip_addresses=("127.0.0.1", service_ip, *apiserver_ips),
    )
    issued = {stem: ca.issue(directory, stem, cn, organizations=orgs) for stem, (cn, orgs) in clients.items()}
    front_proxy_client = front_proxy.issue(directory, "front-proxy-client", "front-proxy-client")

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key_path = directory / "sa.key"
    sa_pub_path = directory / "sa.pub"
    _write_key(sa_key_path, sa_key)
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ClusterPKI(
        ca=ca.save(directory, "ca"),
        apiserver=apiserver,
        front_proxy_ca=front_proxy.save(directory, "front-proxy-ca"),
        front_proxy_client=front_proxy_client,
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
        clients=issued,
    )


def mutual_tls(
    directory: Path, common_name: str, *, dns_names: tuple[str, ...], ip_addresses: tuple[str, ...]
) -> Path:
    """A fresh CA and one certificate it signs for both ends of a mutual-TLS link (server and client
    auth), written as ``ca.crt``, ``tls.crt`` and ``tls.key``: a ``kubernetes.io/tls`` Secret's files with
    its CA, the layout KEDA reads from its certificate directory. Returns the CA certificate's path."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = _Authority(f"{common_name}-ca")
    _write_cert(directory / "ca.crt", authority.cert)
    authority.issue(
        directory,
        "tls",
        common_name,
        server=True,
        client=True,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )
    return directory / "ca.crt"


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, client: CertKey) -> Path:
    """Write a kubeconfig (mode 0600) for ``user`` authenticating with a client certificate."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}],
        "current-context": "devcluster",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
