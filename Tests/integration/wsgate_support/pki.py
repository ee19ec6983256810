"""Throw-away certificates for the wss:// tests, made with the ``openssl`` command, and the TLS
contexts and peer facts the tests build from them."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
import subprocess
from pathlib import Path

# A fresh EC P-256 key without a passphrase, for ``openssl req``.
_NEW_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


class TestPKI:
    """A CA and leaves made with ``openssl`` in ``directory``, trusted by no one but the tests.

    Every leaf is issued by ``openssl ca`` from a minimal config, so the serial number and the
    validity window (``not_before`` / ``not_after``) can be chosen. Keys are EC P-256.
    ``parent`` makes this CA an intermediate signed by another ``TestPKI``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, parent: "TestPKI | None" = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        (self.dir / "newcerts").mkdir(exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "index.txt.attr").write_text("unique_subject = no\n")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "ca-req.cnf").write_text(
            "[ req ]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n"
            "[ dn ]\nCN = wsgate throw-away test CA\nO = wsgate tests\n"
            "[ v3_ca ]\nbasicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n")
        (self.dir / "leaf-req.cnf").write_text("[ req ]\ndistinguished_name = dn\n[ dn ]\n")
        (self.dir / "ca.cnf").write_text(
            "[ ca ]\ndefault_ca = testca\n"
            "[ testca ]\n"
            f"database = {self.dir}/index.txt\n"
            f"new_certs_dir = {self.dir}/newcerts\n"
            f"certificate = {self.ca_cert}\n"
            f"private_key = {self.ca_key}\n"
            f"serial = {self.dir}/serial\n"
            "default_md = sha256\npolicy = policy_any\nemail_in_dn = no\n"
            "unique_subject = no\ncopy_extensions = none\n"
            "[ policy_any ]\ncommonName = supplied\norganizationName = optional\n")
        if parent is None:
            self._openssl("req", "-x509", "-config", "ca-req.cnf", *_NEW_EC_KEY, "-days", "3",
                          "-keyout", "ca.key", "-out", "ca.pem")
        else:
            self._new_request(f"/CN=wsgate throw-away intermediate {self.dir.name}", "ca.key", "ca.csr")
            ext = self.dir / "ca.ext"
            ext.write_text("basicConstraints = critical, CA:TRUE, pathlen:0\n"
                           "keyUsage = critical, keyCertSign, cRLSign\n"
                           "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
            parent._sign(str(self.dir / "ca.csr"), str(self.ca_cert), str(ext), "-days", "3")

    def _openssl(self, *args: str) -> str:
        proc = subprocess.run(["openssl", *args], cwd=self.dir, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")
        return proc.stdout

    def _new_request(self, subject: str, key: str, csr: str) -> None:
        """A new EC key in ``key`` and a certificate request for ``subject`` in ``csr``."""
        self._openssl("req", "-new", "-config", "leaf-req.cnf", *_NEW_EC_KEY,
                      "-subj", subject, "-keyout", key, "-out", csr)

    def _sign(self, csr: str, cert: str, extfile: str, *validity: str) -> None:
        """Issue ``cert`` for the request ``csr`` with this CA, extensions from ``extfile``."""
        self._openssl("ca", "-batch", "-config", "ca.cnf", "-notext", *validity,
                      "-in", csr, "-out", cert, "-extfile", extfile)

    @staticmethod
    def _asn1_time(moment: datetime.datetime) -> str:
        return moment.astimezone(datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")

    def leaf(self, name: str, cn: str = "localhost",
             sans: tuple[str, ...] = ("DNS:localhost", "IP:127.0.0.1"),
             serial: int | None = None,
             not_before: datetime.datetime | None = None,
             not_after: datetime.datetime | None = None) -> tuple[Path, Path]:
        """Issue a server certificate; returns ``(name-cert.pem, name-key.pem)``.

        The validity defaults to one hour ago until two days from now.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        not_before = not_before or now - datetime.timedelta(hours=1)
        not_after = not_after or now + datetime.timedelta(days=2)
        cert, key, csr, ext = (self.dir / f"{name}-cert.pem", self.dir / f"{name}-key.pem",
                               self.dir / f"{name}.csr", self.dir / f"{name}.ext")
        if serial is not None:
            (self.dir / "serial").write_text(f"{serial:04X}\n")
        ext.write_text("basicConstraints = CA:FALSE\n"
                       "keyUsage = critical, digitalSignature\n"
                       "extendedKeyUsage = serverAuth\n"
                       "subjectKeyIdentifier = hash\n"
                       "authorityKeyIdentifier = keyid\n"
                       + (f"subjectAltName = {', '.join(sans)}\n" if sans else ""))
        self._new_request(f"/CN={cn}/O=wsgate tests {name}", key.name, csr.name)
        self._sign(csr.name, cert.name, ext.name,
                   "-startdate", self._asn1_time(not_before), "-enddate", self._asn1_time(not_after))
        return cert, key

    def encrypted_key(self, key: Path, passphrase: str = "secret") -> Path:
        """A copy of ``key`` encrypted with a passphrase (PEM ``ENCRYPTED PRIVATE KEY``)."""
        out = key.with_name(key.stem + "-encrypted.pem")
        self._openssl("pkey", "-in", str(key), "-aes256", "-passout", f"pass:{passphrase}", "-out", str(out))
        return out

    def serial_of(self, cert: Path) -> int:
        out = self._openssl("x509", "-in", str(cert), "-noout", "-serial")
        return int(out.strip().split("=", 1)[1], 16)

    def spki_sha256_base64(self, cert: Path) -> str:
        """base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's SPKI pin)."""
        pub = self._openssl("x509", "-in", str(cert), "-noout", "-pubkey")
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.encode(),
                             capture_output=True, check=True).stdout
        return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")

    def client_context(self, check_hostname: bool = True) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.check_hostname = check_hostname
        return context


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


def peer_serial(ssl_object) -> int:
    """Serial number of the certificate the server presented (a verified connection)."""
    return int(ssl_object.getpeercert()["serialNumber"], 16)
