"""Test certificates for Flower's TLS and SuperNode authentication, made with ``cryptography``.

For trying the deployment on one machine only: a self-signed CA, a SuperLink certificate valid
for 127.0.0.1 / localhost, and one P-384 key pair per SuperNode in OpenSSH format (what
``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read). A real
deployment uses certificates from its own CA (docs/deploy.md).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ffm_private.flower.errors import FlowerDeploymentError
from ffm_private.flower.local import Tls

CA_CERT, SERVER_CERT, SERVER_KEY = "ca.crt", "server.pem", "server.key"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def write_test_certificates(out: str | Path, nodes: int, *, days: int = 7) -> Tls:
    """Write the CA, the SuperLink's certificate and key, and ``nodes`` SuperNode key pairs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (x509.CertificateBuilder().subject_name(_name("ffm-private test CA"))
          .issuer_name(_name("ffm-private test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA384()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA384()))
    pem = serialization.Encoding.PEM
    ca_path = _write(out / CA_CERT, ca.public_bytes(pem))
    cert_path = _write(out / SERVER_CERT, cert.public_bytes(pem))
    key_path = _write(out / SERVER_KEY, key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), private=True)
    node_keys, node_pubs = [], []
    for i in range(nodes):
        nk = ec.generate_private_key(ec.SECP384R1())
        node_keys.append(_write(out / f"node-{i}.key", nk.private_bytes(
            pem, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()),
            private=True))
        node_pubs.append(_write(out / f"node-{i}.pub", nk.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"))
    return Tls(ca_path, cert_path, key_path, tuple(node_keys), tuple(node_pubs))


def load_tls(folder: str | Path, nodes: int) -> Tls:
    """The files :func:`write_test_certificates` wrote; names the first one missing."""
    folder = Path(folder)
    files = [folder / CA_CERT, folder / SERVER_CERT, folder / SERVER_KEY]
    keys = [folder / f"node-{i}.key" for i in range(nodes)]
    pubs = [folder / f"node-{i}.pub" for i in range(nodes)]
    for path in files + keys + pubs:
        if not path.is_file():
            raise FlowerDeploymentError(f"--tls {folder}: {path.name} is missing (write the "
                                        f"files with: ffm-private flower certs --out {folder} "
                                        f"--nodes {nodes})")
    return Tls(files[0], files[1], files[2], tuple(keys), tuple(pubs))
