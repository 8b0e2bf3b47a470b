"""Member identity over mutual TLS: a dev CA, certificates per party, gRPC credentials
and the ssl contexts of the HTTP servers (the JSON API)."""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import ssl
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from txverify.banks import is_member_code

log = logging.getLogger(__name__)

HUB = "hub"
OPERATOR = "operator"
# The simulated banks' control API (BankSimulator) serves with this certificate,
# and accepts callers presenting the operator's or QA's (CONTROL_CALLERS).
SIMULATOR = "simulator"
QA = "qa"  # a client certificate for QA tools: drives the simulator, not the registry
CONTROL_CALLERS = frozenset({OPERATOR, QA})
# Names only one certificate carries; clients pin them (channel_options), so no other
# certificate of the CA (a member's, valid for its own name only) passes for the server.
HUB_DNS = "hub.txverify"
SIMULATOR_DNS = "simulator.txverify"
OPERATOR_DNS = "operator.txverify"
QA_DNS = "qa.txverify"
CA_COMMON_NAME = "txverify dev CA"
_NAMES = (HUB, OPERATOR, SIMULATOR, QA)  # the leaves init_dev_pki issues besides members

# The CA outlives the leaves issued with it (at least this long), so that a
# leaf added years later (init_dev_pki keeps an existing CA) still chains to it.
CA_DAYS = 3650
# Validity starts in the past so that a peer whose clock is a little behind
# does not reject a certificate made a moment ago.
CLOCK_SKEW = timedelta(hours=1)
# The auth_context key gRPC fills with the subject CN of the verified peer certificate.
_COMMON_NAME_KEY = "x509_common_name"


def member_dns_name(code: str) -> str:
    """The DNS name a member's certificate carries, e.g. 014.members.txverify."""
    return f"{code}.members.txverify"


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key, both PEM."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A directory laid out by init_dev_pki: ca.pem, ca-key.pem, <name>.pem, <name>-key.pem."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    def files(self, name: str) -> CertFiles:
        """The files of "hub", "operator", "simulator", "qa" or a member code."""
        _check_name(name)
        return CertFiles(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")


def _check_name(name: str) -> None:
    # Names become file names: only the known ones, so nothing like "../x" gets through.
    if name not in _NAMES and not is_member_code(name):
        raise ValueError(
            f"certificate names are {', '.join(map(repr, _NAMES))} or a member code "
            f"(3 ASCII digits), got {name!r}"
        )


# --- the dev PKI -------------------------------------------------------------


def init_dev_pki(
    directory: Path,
    members: Sequence[str],
    *,
    days: int = 825,
    overwrite: bool = False,
    not_after: datetime | None = None,
) -> Pki:
    """Make (or complete) a dev PKI in `directory`: a CA, then hub, operator, simulator,
    QA and member leaves.

    Without `overwrite`, an existing CA is kept and only leaves whose certificate
    or key file is missing are issued; a kept leaf that the CA did not sign is an
    error. With `overwrite`, the CA and every leaf named here are made anew (files
    of other members are left alone and no longer chain to the new CA).
    `not_after` (aware or UTC) ends the validity of the leaves issued now;
    the default is now + `days`.
    """
    if isinstance(members, str):  # "014" would otherwise be three one-digit codes
        raise ValueError(f"members must be a sequence of codes, got the string {members!r}")
    codes = list(dict.fromkeys(members))
    bad = [c for c in codes if not is_member_code(c)]
    if bad:
        raise ValueError(f"member codes are 3 ASCII digits, got {', '.join(map(repr, bad))}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    pki = Pki(directory)
    now = datetime.now(UTC)
    try:
        end = now + timedelta(days=days) if not_after is None else _as_utc(not_after)
    except OverflowError:
        raise ValueError(f"{days} days is beyond the calendar") from None

    have_ca = pki.ca.exists() or pki.ca_key.exists()
    if have_ca and not overwrite:
        ca_cert, ca_key = _load_ca(pki)
    else:
        ca_cert, ca_key = _new_ca(now, max(CA_DAYS, days))
        _write_key(pki.ca_key, ca_key)
        _write_cert(pki.ca, ca_cert)

    # A leaf that outlived its CA would fail verification from the CA's end on.
    end = min(end, ca_cert.not_valid_after_utc)
    for name in (*_NAMES, *codes):
        files = pki.files(name)
        if not overwrite and files.cert.exists() and files.key.exists():
            _check_issued_by(files.cert, ca_cert)
            continue
        cert, key = _new_leaf(name, ca_cert, ca_key, now, end)
        _write_key(files.key, key)
        _write_cert(files.cert, cert)
    return pki


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_ca(now: datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_COMMON_NAME))
        .issuer_name(_name(CA_COMMON_NAME))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        # path_length=0: the dev CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf_profile(name: str) -> tuple[list[x509.GeneralName], list[x509.ObjectIdentifier]]:
    """Subject alternative names and extended key usages of a leaf."""
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    if name == HUB:
        # The loopback names serve clients that dial 127.0.0.1 without pinning HUB_DNS
        # (grpcurl, a quick script): only the hub's certificate carries them.
        loopback: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        return [x509.DNSName(HUB_DNS), *loopback], [server, client]
    if name == SIMULATOR:
        # It only ever serves (the control API); it must not be able to call the hub.
        return [x509.DNSName(SIMULATOR_DNS)], [server]
    if name in (OPERATOR, QA):
        # They only ever call; they must not be able to pose as a server.
        return [x509.DNSName(OPERATOR_DNS if name == OPERATOR else QA_DNS)], [client]
    # A member calls the hub (client) and answers the hub's inquiries as issuer (server).
    # Its own name only, no loopback names: the hub dials an issuer pinning that name,
    # and a member's certificate must never pass for the hub's on 127.0.0.1.
    return [x509.DNSName(member_dns_name(name))], [server, client]


def _new_leaf(
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    end: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = now - CLOCK_SKEW
    if end <= start:
        # An already-expired leaf (tests): the builder insists start < end.
        start = end - timedelta(days=1)
    sans, usages = _leaf_profile(name)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not (pki.ca.exists() and pki.ca_key.exists()):
        missing = pki.ca if not pki.ca.exists() else pki.ca_key
        raise ValueError(
            f"{missing} is missing: a CA needs both ca.pem and ca-key.pem "
            "(overwrite to make a new CA and new certificates)"
        )
    try:
        cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except ValueError as exc:
        raise ValueError(f"cannot read the CA in {pki.directory}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ValueError(f"{pki.ca_key} is not the key of {pki.ca}")
    return cert, key


def _check_issued_by(cert_file: Path, ca_cert: x509.Certificate) -> None:
    try:
        x509.load_pem_x509_certificate(cert_file.read_bytes()).verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ValueError(
            f"{cert_file} was not issued by {CA_COMMON_NAME!r} in this directory "
            "(overwrite to issue everything anew)"
        ) from exc


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # Write aside, then rename: a server reloading its files (server_credentials)
    # sees the old file or the new one, never half of one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)  # mkstemp already made it 0600; a cert is public
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # a dev PKI; the file mode is the protection
    )
    _write_atomically(path, pem, stat.S_IRUSR | stat.S_IWUSR)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


# --- gRPC credentials --------------------------------------------------------

_Signature = tuple[tuple[int, int, int, int], ...]


class _ReloadingFetcher:
    """gRPC's certificate fetcher: a new configuration when the files changed, else None.

    grpc calls it before every new TLS handshake (from a core thread, hence the
    lock); established connections keep the configuration they were made with.
    """

    def __init__(self, ca: Path, files: CertFiles, require_client_auth: bool) -> None:
        self._paths = (ca, files.cert, files.key)
        self._require_client_auth = require_client_auth
        self._lock = threading.Lock()
        self._seen: _Signature | None = None
        self._refused: _Signature | None = None

    def initial(self) -> grpc.ServerCertificateConfiguration:
        with self._lock:
            signature = _signature(self._paths)
            config = self._load()
            self._seen = signature
            return config

    def _load(self) -> grpc.ServerCertificateConfiguration:
        ca, cert_file, key_file = (p.read_bytes() for p in self._paths)
        cert = x509.load_pem_x509_certificate(cert_file)
        key = serialization.load_pem_private_key(key_file, password=None)
        x509.load_pem_x509_certificates(ca)  # fails on a half-copied CA file
        if key.public_key() != cert.public_key():
            # The cert was replaced and its key not yet (or the other way round).
            raise ValueError(f"{self._paths[2]} is not the key of {self._paths[1]}")
        return grpc.ssl_server_certificate_configuration(
            [(key_file, cert_file)],
            root_certificates=ca if self._require_client_auth else None,
        )

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                signature = _signature(self._paths)
            except OSError as exc:  # a file removed before its replacement is in place
                log.warning("keeping the current TLS certificates: %s", exc)
                return None
            if signature in (self._seen, self._refused):
                return None  # unchanged: grpc keeps the current configuration
            try:
                config = self._load()
            except (OSError, ValueError, TypeError) as exc:
                # Mid-replacement or broken files: keep serving with what works,
                # and try again once the files change (one warning per change).
                self._refused = signature
                log.warning("keeping the current TLS certificates: %s", exc)
                return None
            self._seen, self._refused = signature, None
            log.info("TLS certificates reloaded from %s", self._paths[1].parent)
            return config


def server_credentials(
    pki: Pki, name: str, *, require_client_auth: bool = True
) -> grpc.ServerCredentials:
    """Server TLS as `name` ("hub", "simulator" or a member code), re-reading the files
    when they change.

    The CA, certificate and key are checked before each new TLS handshake (a stat
    of three files) and re-read when one changed; connections already made keep
    their certificates. Clients must present a certificate from the CA unless
    `require_client_auth` is False (then none is asked for and peer_identity is None).
    """
    fetcher = _ReloadingFetcher(pki.ca, pki.files(name), require_client_auth)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial(),
        # grpc documents None as "no change"; its type stubs only allow a configuration.
        cast(Callable[[], grpc.ServerCertificateConfiguration], fetcher),
        require_client_authentication=require_client_auth,
    )


class _ReloadingContext:
    """An ssl.SSLContext for a server, swapped for a fresh one when the files change.

    The HTTP counterpart of _ReloadingFetcher: Python's ssl calls the SNI callback
    of every new handshake, which checks the files (three stats) and hands the
    connection the current context; established connections keep theirs.
    """

    def __init__(self, ca: Path, files: CertFiles, require_client_auth: bool) -> None:
        self._paths = (ca, files.cert, files.key)
        self._require_client_auth = require_client_auth
        self._lock = threading.Lock()
        self._seen = _signature(self._paths)
        self.context = self._load()
        self._refused: _Signature | None = None

    def _load(self) -> ssl.SSLContext:
        ca, cert, key = self._paths
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)  # refuses a key that is not the certificate's
        context.verify_mode = ssl.CERT_REQUIRED if self._require_client_auth else ssl.CERT_NONE
        context.set_alpn_protocols(["h2", "http/1.1"])
        context.sni_callback = self._handshake
        return context

    def _handshake(self, connection: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
        with self._lock:
            try:
                signature = _signature(self._paths)
            except OSError as exc:
                log.warning("keeping the current TLS certificates: %s", exc)
                return
            if signature not in (self._seen, self._refused):
                try:
                    context = self._load()
                except (OSError, ValueError, ssl.SSLError) as exc:
                    self._refused = signature
                    log.warning("keeping the current TLS certificates: %s", exc)
                else:
                    self.context, self._seen, self._refused = context, signature, None
                    log.info("TLS certificates reloaded from %s", self._paths[1].parent)
        connection.context = self.context


def server_ssl_context(pki: Pki, name: str, *, require_client_auth: bool = True) -> ssl.SSLContext:
    """An HTTP server's TLS as `name` (HTTP/2 and HTTP/1.1 by ALPN), re-reading the files
    when they change, as server_credentials does for gRPC. Clients must present a
    certificate from the CA unless `require_client_auth` is False."""
    return _ReloadingContext(pki.ca, pki.files(name), require_client_auth).context


def certificate_identity(peer_certificate: dict[str, Any] | None) -> str | None:
    """The CN of a verified peer certificate as ssl gives it (SSLObject.getpeercert()),
    the identity peer_identity reads from gRPC; None without exactly one CN."""
    if not peer_certificate:
        return None
    names = [
        value
        for rdn in peer_certificate.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    ]
    return names[0] if len(names) == 1 else None


def _signature(paths: Sequence[Path]) -> _Signature:
    # mtime alone can miss a replacement made within the file system's
    # timestamp granularity; a rename (new inode) or a new size cannot hide,
    # and ctime also moves on chmod (a key made readable again).
    stats = [p.stat() for p in paths]
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats)


def channel_credentials(pki: Pki, name: str) -> grpc.ChannelCredentials:
    """Client TLS as `name`: its certificate and key, trusting only the PKI's CA."""
    files = pki.files(name)
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )


def channel_options(server_name: str) -> tuple[tuple[str, str], ...]:
    """Channel options that make the client check the server's certificate names `server_name`."""
    # Every party connects by address (an IP, often) but must check that the
    # certificate names the server it meant: the hub an issuer's
    # member_dns_name(code), so bank 002 cannot answer for 014; members and the
    # operator HUB_DNS, and the simulator's clients SIMULATOR_DNS, so no other
    # certificate of the CA passes for the hub or the simulator. The address
    # never decides which certificate is accepted; the name does.
    return (("grpc.ssl_target_name_override", server_name),)


def plaintext_host_error(host: str, why: str, remedy: str = "--tls") -> str | None:
    """Why a plaintext server may not listen on `host` (None: loopback, it may).

    `why` says what a plaintext port would expose, e.g. "dev mode trusts a header
    for identity"; `remedy` is the option that turns TLS on.
    """
    if is_loopback_host(host):
        return None
    return f"{why}, so it listens on loopback only, not {host!r}: use {remedy} to serve other hosts"


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The CN of the caller's verified client certificate ("hub", "operator", "014"), else None.

    None on an insecure port or a TLS port that does not require client certificates.
    """
    # With client auth required, the handshake has verified the certificate
    # against the CA before any RPC runs, so its CN is the caller's identity.
    values = list(context.auth_context().get(_COMMON_NAME_KEY, ()))
    if len(values) != 1:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        return None


def peer_is_loopback(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """Whether the caller connected over loopback (127.0.0.0/8 or ::1)."""
    return is_loopback_peer(context.peer())


@functools.lru_cache(maxsize=4096)  # a pure function of the peer, asked at every RPC
def is_loopback_peer(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:%5B::1%5D:5000") is loopback.

    Unix sockets and anything unparsed count as not loopback.
    """
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return False
    # grpc 1.85 percent-encodes the brackets of IPv6 peers ("ipv6:%5B::1%5D:5000").
    host, _, port = unquote(rest).rpartition(":")
    if not host or not port.isdigit():
        return False
    return is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """Whether a host is loopback: "localhost", 127.0.0.0/8, ::1 (bracketed or not, or v4-mapped).

    Other names are not resolved, so they are not loopback.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
