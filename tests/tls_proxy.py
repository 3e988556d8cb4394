"""A throwaway PKI and a TLS-terminating TCP proxy in front of a Temporal dev server, standing in for a cluster
that requires TLS (and client certificates), as Temporal Cloud does. The proxy keeps what clients sent, so a test
can read the gRPC metadata (HTTP/2 headers) a server would see."""

import asyncio
import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import hpack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "temporal.test"  # the server certificate names only this: clients must override the server name


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _cert(path: Path, name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, usage: x509.ObjectIdentifier | None = None,
          dns: str | None = None) -> x509.Name:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return subject


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate for SERVER_NAME and a client certificate, all signed by that CA."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
              folder / "client.key")
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throwaway test CA")])
    _cert(pki.ca, "throwaway test CA", ca_key, ca_name, ca_key, ca=True)
    _cert(pki.server_cert, SERVER_NAME, server_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
          dns=SERVER_NAME)
    _cert(pki.client_cert, "followthrough worker", client_key, ca_name, ca_key,
          usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_key(pki.server_key, server_key)
    _write_key(pki.client_key, client_key)
    return pki


class TlsProxy:
    """TLS on 127.0.0.1 (client certificate required), plain TCP to ``upstream``; ``received`` holds, per
    connection, the bytes clients sent after the handshake."""

    def __init__(self, pki: Pki, upstream: str) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.set_alpn_protocols(["h2"])
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.received: list[bytearray] = []
        self.address = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "TlsProxy":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.address = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = bytearray()
        self.received.append(seen)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
            try:
                while data := await src.read(65536):
                    if keep is not None and len(keep) < 1 << 20:
                        keep += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, seen), pipe(up_reader, writer, None))

    def headers(self) -> list[list[tuple[str, str]]]:
        """Every HTTP/2 header block clients sent, decoded: one list of (name, value) per request."""
        return [block for seen in self.received for block in _header_blocks(bytes(seen))]


def _header_blocks(data: bytes) -> list[list[tuple[str, str]]]:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    if not data.startswith(preface):
        return []
    decoder, blocks, pending, at = hpack.Decoder(), [], b"", len(preface)
    while at + 9 <= len(data):
        length, kind, flags = int.from_bytes(data[at:at + 3], "big"), data[at + 3], data[at + 4]
        payload, at = data[at + 9:at + 9 + length], at + 9 + length
        if len(payload) < length:
            break
        if kind == 0x1:  # HEADERS: drop padding and priority fields
            pad = payload[0] if flags & 0x8 else 0
            payload = payload[(1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0):len(payload) - pad]
        if kind in (0x1, 0x9):  # HEADERS, CONTINUATION
            pending += payload
            if flags & 0x4:  # END_HEADERS
                blocks.append(decoder.decode(pending))
                pending = b""
    return blocks
