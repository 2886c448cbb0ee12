"""Self-made TLS certificates for tests: a CA and a certificate and key it signed,
made with the ``cryptography`` package, else with the ``openssl`` command."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from pathlib import Path


def tls_maker() -> str | None:
    """What can make certificates here: "cryptography", "openssl", or None."""
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return "openssl" if shutil.which("openssl") else None
    return "cryptography"


def make_certificates(directory: Path, name: str) -> dict[str, str]:
    """A new CA and a certificate and key it signed (for 127.0.0.1 and localhost),
    as PEM files ``<name>-ca.pem``, ``<name>-cert.pem``, ``<name>-key.pem``; returns
    their paths under the ``dask_security`` keys."""
    paths = {
        "tls_ca_file": directory / f"{name}-ca.pem",
        "tls_client_cert": directory / f"{name}-cert.pem",
        "tls_client_key": directory / f"{name}-key.pem",
    }
    if tls_maker() == "cryptography":
        _with_cryptography(name, *paths.values())
    else:
        _with_openssl(directory, name, *paths.values())
    return {key: str(path) for key, path in paths.items()}


def _with_cryptography(name: str, ca_path: Path, cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def subject(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject(f"{name} test CA"))
        .issuer_name(subject(f"{name} test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject(f"{name} test node"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _with_openssl(
    directory: Path, name: str, ca_path: Path, cert_path: Path, key_path: Path
) -> None:
    ca_key = directory / f"{name}-ca-key.pem"
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *curve, "-keyout", ca_key, "-out", ca_path, "-days", "1"]
        + ["-subj", f"/CN={name} test CA", "-addext", "basicConstraints=critical,CA:TRUE"],
        ["req", *curve, "-keyout", key_path, "-out", request, "-subj", f"/CN={name} test node"],
        ["x509", "-req", "-in", request, "-CA", ca_path, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", cert_path, "-days", "1", "-extfile", extensions],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
