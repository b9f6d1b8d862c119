"""``tmrl tls``: generate and inspect the tlspyo transport's credentials (mounted by the plugin as a command group)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tmrl_core.cli import set_option, settings_from_cli
from tmrl_tlspyo.credentials import credentials_dir, describe
from tmrl_tlspyo.credentials import generate as generate_files

OptPath = Optional[Path]  # noqa: UP045 - typer needs Optional on python 3.10

app = typer.Typer(no_args_is_help=True, help="Generate and inspect TLS credentials for the tlspyo transport.")


def _directory(directory: Path | None, sets: list[str]) -> tuple[Path, str]:
    """The folder to use and the TLS host name from the settings."""
    settings = settings_from_cli(sets=sets)
    return (directory.expanduser() if directory else credentials_dir(settings.server)), settings.server.tls_hostname


@app.command("generate")
def generate(
    directory: OptPath = typer.Option(
        None, "--dir", help="Where to write the files (default: server.tls_credentials_directory, else <data>/tls)."
    ),
    hostname: Optional[str] = typer.Option(  # noqa: UP045
        None, "--hostname", help="Name the clients check in the certificate (default: server.tls_hostname)."
    ),
    days: int = typer.Option(3650, "--days", min=1, help="Validity of the certificate, in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing credentials."),
    sets: list[str] = set_option(),
) -> None:
    """Generate the server's TLS key and certificate and the trainer's weights-signing key pair."""
    folder, configured_hostname = _directory(directory, sets)
    paths = generate_files(folder, hostname=hostname or configured_hostname, days=days, overwrite=force)
    typer.echo(f"Credentials written to {folder}:")
    roles = {
        "key.pem": "server machine only (secret)",
        "certificate.pem": "every machine",
        "weights-signing-key.pem": "trainer machine only (secret)",
        "weights-signing-public.pem": "every worker machine",
    }
    for path in paths:
        typer.echo(f"  {path.name:28} -> {roles[path.name]}")
    typer.echo(
        "On each machine, put its files in <data>/tls (or set server.tls_credentials_directory), and turn TLS on "
        "with server.tls=true."
    )


@app.command("show")
def show(
    directory: OptPath = typer.Option(None, "--dir", help="The credentials folder (default as for generate)."),
    sets: list[str] = set_option(),
) -> None:
    """Show which credential files are present, the certificate's host names and expiry, and fingerprints."""
    folder, _ = _directory(directory, sets)
    info = describe(folder)
    typer.echo(f"Credentials folder: {folder}")
    for name, present in info.present.items():
        typer.echo(f"  {name:28} {'present' if present else 'missing'}")
    if info.certificate_sha256:
        typer.echo(f"certificate host names: {', '.join(info.hostnames) or '(none)'}")
        typer.echo(f"certificate valid until: {info.not_after:%Y-%m-%d}")
        typer.echo(f"certificate SHA-256: {info.certificate_sha256}")
    if info.signing_public_sha256:
        typer.echo(f"weights-signing public key SHA-256: {info.signing_public_sha256}")
    typer.echo("Fingerprints must match on every machine.")
