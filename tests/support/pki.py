"""A test PKI made with the openssl command line: a CA, a server certificate for
127.0.0.1/localhost and client certificates, each valid for two days."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # subject CN "lab-client"
    client_key: Path

    def client(self, common_name: str) -> tuple[Path, Path]:
        """Another client certificate and key, signed by the CA, with subject CN ``common_name``."""
        return _signed(self.folder, common_name, common_name)


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _signed(folder: Path, name: str, common_name: str) -> tuple[Path, Path]:
    _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem")
    return folder / f"{name}.pem", folder / f"{name}.key"


def make_pki(folder: Path) -> Pki:
    """Create the CA, the server certificate and the "lab-client" certificate in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hemex-test-ca",
             "-keyout", "ca.key", "-out", "ca.pem")
    server_cert, server_key = _signed(folder, "server", "localhost")
    client_cert, client_key = _signed(folder, "client", "lab-client")
    return Pki(folder, folder / "ca.pem", server_cert, server_key, client_cert, client_key)
