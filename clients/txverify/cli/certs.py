"""`txverify certs init`: a dev CA and certificates for the hub, the operator, the
simulator's control API, QA and members."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.x509.oid import NameOID
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from txverify.banks import is_member_code
from txverify.runtime import tls

out = Console()
err = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    help="Dev certificates for mutual TLS between the hub, members, the operator, QA and "
    "the simulated banks."
)

_Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    # Tells a file this run wrote (new inode or mtime) from one it kept.
    try:
        s = path.stat()
    except OSError:  # missing, or the directory is not one (init_dev_pki says so)
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns)


def init(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Directory for ca.pem, <name>.pem and <name>-key.pem (made if missing)."
        ),
    ],
    members: Annotated[
        str, typer.Option(help="Member codes to issue certificates for (900 = the e-wallet).")
    ] = "002,004,006,014,025,900",
    days: Annotated[int, typer.Option(help="Days the new certificates stay valid.")] = 825,
    overwrite: Annotated[
        bool,
        typer.Option(help="Make a new CA and reissue every certificate named (default: keep)."),
    ] = False,
) -> None:
    """Make a dev CA and certificates; existing ones are kept, missing ones added."""
    codes = [c.strip() for c in members.split(",") if c.strip()]
    bad = [c for c in codes if not is_member_code(c)]
    if bad:
        err.print(
            f"[red]certs init: member codes are 3 ASCII digits, got {escape(', '.join(bad))}[/]"
        )
        raise typer.Exit(1)
    pki = tls.Pki(directory)
    names = (tls.HUB, tls.OPERATOR, tls.SIMULATOR, tls.QA, *codes)
    certs = {"ca": pki.ca} | {n: pki.files(n).cert for n in names}
    before = {name: _stamp(path) for name, path in certs.items()}
    try:
        tls.init_dev_pki(directory, codes, days=days, overwrite=overwrite)
        table = Table(title=f"Certificates in {escape(str(directory))}", title_justify="left")
        for column in ("name", "CN", "expires (UTC)", "file", ""):
            table.add_column(column)
        for name, path in certs.items():
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            table.add_row(
                name,
                str(common_name[0].value) if common_name else "",
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}",
                path.name,
                "[dim]kept[/]" if before[name] == _stamp(path) else "[green]new[/]",
            )
        stale = _loopback_members(pki, codes)
    except (ValueError, OSError) as exc:
        err.print(f"[red]certs init: {escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    out.print(table)
    out.print(
        "Each name's key is <name>-key.pem beside it: unencrypted, mode 0600, for development only."
    )
    out.print("\nThe network runs with mutual TLS from this directory:")
    out.print(f"  txverify up --tls --certs {directory}", markup=False, soft_wrap=True)
    out.print(
        "Members and the operator authenticate with their certificates; the hub takes a "
        "caller's member code from its certificate's CN and checks each issuer's server "
        f"certificate names it ({tls.member_dns_name('CODE')}). Clients accept only the "
        f"hub's certificate as the hub ({tls.HUB_DNS}) and the simulator's as the simulated "
        f"banks' control API ({tls.SIMULATOR_DNS}), which takes the operator's or QA's."
    )
    if stale:
        out.print(
            f"[yellow]The certificates of {', '.join(stale)} (made by an older txverify) "
            "also name localhost and 127.0.0.1[/]: clients pin the hub's name, but to make "
            "them valid for their own names only, remove them (CODE.pem and CODE-key.pem) "
            "and run this again (the CA is kept)."
        )


def _loopback_members(pki: tls.Pki, codes: list[str]) -> list[str]:
    """Members whose certificate here carries a loopback name (as made before the hub's
    name was pinned by clients): valid for 127.0.0.1, so for the hub's address too."""
    found = []
    for code in codes:
        cert = x509.load_pem_x509_certificate(pki.files(code).cert.read_bytes())
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            continue
        names = sans.get_values_for_type(x509.DNSName)
        if sans.get_values_for_type(x509.IPAddress) or "localhost" in names:
            found.append(code)
    return found


app.command("init")(init)
