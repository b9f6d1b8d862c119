"""Credentials of the tlspyo transport: the server's TLS key and certificate, and the trainer's weights-signing key.

``tmrl tls generate`` writes four files into one folder (``<data>/tls`` unless told otherwise):

=============================== ============================================= ==========================
file                            what                                          copy it to
=============================== ============================================= ==========================
``key.pem``                     the server's TLS private key (ECDSA P-256)    the server machine only
``certificate.pem``             the server's self-signed TLS certificate      every machine
``weights-signing-key.pem``     the trainer's Ed25519 private key             the trainer machine only
``weights-signing-public.pem``  the matching public key                       every worker machine
=============================== ============================================= ==========================

``key.pem`` and ``certificate.pem`` are named and formatted as tlspyo reads them (``keys_dir``). They are generated
here with ``cryptography`` rather than with ``python -m tlspyo --generate``, which fails with pyOpenSSL 26.2 and later.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmrl_core.errors import TransportError
from tmrl_core.paths import data_dir

if TYPE_CHECKING:
    from tmrl_core.settings import ServerSettings

TLS_KEY = "key.pem"
TLS_CERTIFICATE = "certificate.pem"
SIGNING_KEY = "weights-signing-key.pem"
SIGNING_PUBLIC_KEY = "weights-signing-public.pem"
ALL_FILES = (TLS_KEY, TLS_CERTIFICATE, SIGNING_KEY, SIGNING_PUBLIC_KEY)

_GENERATE_HINT = "run `tmrl tls generate` (and copy the files to each machine as `tmrl tls show` says)"


def credentials_dir(settings: ServerSettings | None = None) -> Path:
    """The folder of the credentials: ``server.tls_credentials_directory``, else ``<data>/tls``."""
    configured = getattr(settings, "tls_credentials_directory", None)
    if configured:
        return Path(configured).expanduser()
    return data_dir() / "tls"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only (created with those permissions: never world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)


def generate(directory: Path, *, hostname: str = "default", days: int = 3650, overwrite: bool = False) -> list[Path]:
    """Generate the four credential files in ``directory`` (created if needed); returns their paths.

    Args:
        hostname: the name clients check in the certificate (``server.tls_hostname``); an IP address is also
            accepted and added as such.
        days: validity of the certificate.
        overwrite: replace existing files (otherwise existing files are an error: replacing them silently would
            lock out every machine that holds the old ones).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID

    directory = Path(directory).expanduser()
    existing = [directory / name for name in ALL_FILES if (directory / name).exists()]
    if existing and not overwrite:
        raise TransportError(
            f"credentials already exist in {directory}: {', '.join(p.name for p in existing)}",
            hint="pass --force to replace them (every machine then needs the new files), or choose --dir",
        )
    directory.mkdir(parents=True, exist_ok=True)

    tls_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    except ValueError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # the certificate is its own authority: clients load it as their trust root
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(tls_key, hashes.SHA256())
    )
    signing_key = ed25519.Ed25519PrivateKey.generate()

    pkcs8 = serialization.PrivateFormat.PKCS8
    _write_private(
        directory / TLS_KEY,
        tls_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    )
    (directory / TLS_CERTIFICATE).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(
        directory / SIGNING_KEY,
        signing_key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()),
    )
    (directory / SIGNING_PUBLIC_KEY).write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return [directory / name for name in ALL_FILES]


# -- checks and loading ---------------------------------------------------------------------------------------------


def require(directory: Path, names: tuple[str, ...], *, role: str) -> None:
    """Raise a clear TransportError if any of ``names`` is missing from ``directory``."""
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise TransportError(
            f"the {role} needs {', '.join(missing)} in {directory}, which is missing",
            hint=f"{_GENERATE_HINT}; or point server.tls_credentials_directory to the folder that holds them",
        )


_SIGNATURE_CONTEXT = b"tmrl-weights-v1\x00"


def signed_bytes(run: str, sequence: int, payload: bytes) -> bytes:
    """What the trainer signs for weights message ``sequence`` of ``run`` (workers and the relay verify it)."""
    return b"".join((_SIGNATURE_CONTEXT, run.encode(), b"\x00", sequence.to_bytes(8, "little"), payload))


class WeightsSigner:
    """Signs weights with the trainer's Ed25519 key."""

    def __init__(self, directory: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        require(directory, (SIGNING_KEY,), role="trainer")
        try:
            key = serialization.load_pem_private_key((directory / SIGNING_KEY).read_bytes(), password=None)
        except ValueError as exc:
            raise TransportError(f"{directory / SIGNING_KEY} is not a valid key: {exc}", hint=_GENERATE_HINT) from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise TransportError(f"{directory / SIGNING_KEY} is not an Ed25519 key", hint=_GENERATE_HINT)
        self._key = key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class WeightsVerifier:
    """Verifies the trainer's signature on weights with its Ed25519 public key."""

    def __init__(self, directory: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        require(directory, (SIGNING_PUBLIC_KEY,), role="worker")
        path = directory / SIGNING_PUBLIC_KEY
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except ValueError as exc:
            raise TransportError(f"{path} is not a valid public key: {exc}", hint=_GENERATE_HINT) from exc
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise TransportError(f"{path} is not an Ed25519 public key", hint=_GENERATE_HINT)
        self._key = key

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class CredentialsInfo:
    """What ``tmrl tls show`` prints."""

    directory: Path
    present: dict[str, bool]
    hostnames: list[str]
    not_after: datetime.datetime | None
    certificate_sha256: str | None
    signing_public_sha256: str | None


def describe(directory: Path) -> CredentialsInfo:
    """Fingerprints and validity of the credentials in ``directory`` (compare fingerprints across machines)."""
    from cryptography import x509

    present = {name: (directory / name).is_file() for name in ALL_FILES}
    hostnames: list[str] = []
    not_after = cert_fp = public_fp = None
    if present[TLS_CERTIFICATE]:
        data = (directory / TLS_CERTIFICATE).read_bytes()
        certificate = x509.load_pem_x509_certificate(data)
        not_after = certificate.not_valid_after_utc
        cert_fp = hashlib.sha256(certificate.public_bytes(_der())).hexdigest()
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            hostnames = [str(v) for v in san.get_values_for_type(x509.DNSName)]
            hostnames += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
    if present[SIGNING_PUBLIC_KEY]:
        public_fp = hashlib.sha256((directory / SIGNING_PUBLIC_KEY).read_bytes()).hexdigest()
    return CredentialsInfo(directory, present, hostnames, not_after, cert_fp, public_fp)


def _der() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER
