"""SSH boards over paramiko: verified host keys, keys/agent auth, quoted commands, atomic SFTP uploads."""
from __future__ import annotations

import logging
import getpass
import select
import time

from pathlib import Path

import paramiko

from ..errors import ConnectError, ProfileTimeout, RemoteError, TrustError
from .base import Output, Result, atomic_upload, quote_argv
from .known_hosts import KnownHosts, load as load_known_hosts


log = logging.getLogger("edgekit.remote")

class _UnknownHost(Exception):
    def __init__(self, hostname: str, key):
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


class _Revoked(Exception):
    def __init__(self, hostname: str, key):
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


class _Refuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts):
        self.known = known

    def missing_host_key(self, client, hostname, key):
        if self.known.is_revoked(key):
            raise _Revoked(hostname, key)
        raise _UnknownHost(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust on first use, explicitly asked for: record the new key in the known_hosts file (never a revoked one)."""

    def __init__(self, path: Path, known: KnownHosts):
        self.path, self.known = path, known

    def missing_host_key(self, client, hostname, key):
        if self.known.is_revoked(key):
            raise _Revoked(hostname, key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def fingerprint(key) -> str:
    import base64
    import hashlib
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class SSHConnection:
    def __init__(self, name: str, host: str, port: int = 22, user: str | None = None, identity: str | None = None,
                 known_hosts: str | Path | None = None, accept_new_host: bool = False, ask_password: bool = False,
                 timeout: float = 10.0):
        self.name, self.host, self.port, self.user = name, host, port, user or getpass.getuser()
        self.bytes_uploaded = 0
        self._sftp = None
        self.op_timeout = max(timeout, 30.0)  # longest silence of one file operation
        self._channels: set = set()  # commands running now (killed on timeout and close)
        self.known_hosts = Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
        where = f"{self.user}@{host}:{port}"
        log.debug("%s: connecting to %s (known_hosts %s)", name, where, self.known_hosts)
        client = paramiko.SSHClient()
        known = KnownHosts()
        if self.known_hosts.exists():
            try:
                known = load_known_hosts(self.known_hosts)
            except OSError as e:
                raise ConnectError(f"board {name}: cannot read known_hosts {self.known_hosts}: "
                                   f"{e.strerror or e}") from None
            known.install(client.get_host_keys())
        client.set_missing_host_key_policy(_AcceptNew(self.known_hosts, known) if accept_new_host
                                           else _Refuse(known))
        if identity and not Path(identity).expanduser().is_file():
            raise TrustError(f"board {name}: the identity key file given for this board does not exist (check "
                             f"'identity' in boards.yaml or --identity)")
        password = getpass.getpass(f"password for {where}: ") if ask_password else None
        try:
            client.connect(host, port=port, username=self.user, password=password,
                           key_filename=str(Path(identity).expanduser()) if identity else None,
                           allow_agent=True, look_for_keys=identity is None, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout)
        except _UnknownHost as e:
            client.close()
            raise TrustError(
                f"board {name}: host {e.hostname} is not in {self.known_hosts} (its {e.key.get_name()} key is "
                f"{fingerprint(e.key)}); check that fingerprint, then rerun with --accept-new-host to record it"
            ) from None
        except _Revoked as e:
            client.close()
            raise TrustError(f"board {name}: REVOKED HOST KEY for {e.hostname} ({e.key.get_name()} "
                             f"{fingerprint(e.key)} is marked @revoked in {self.known_hosts}); refusing") from None
        except paramiko.BadHostKeyException as e:
            client.close()
            if known.is_revoked(e.key):
                raise TrustError(f"board {name}: REVOKED HOST KEY for {host}:{port} ({e.key.get_name()} "
                                 f"{fingerprint(e.key)} is marked @revoked in {self.known_hosts}); refusing") from None
            raise TrustError(
                f"board {name}: HOST KEY CHANGED for {host}:{port} (known {fingerprint(e.expected_key)}, offered "
                f"{fingerprint(e.key)}); refusing. If the board was reinstalled, remove the old entry from "
                f"{self.known_hosts}") from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise TrustError(f"board {name}: authentication failed for {where} ({e})") from None
        except paramiko.SSHException as e:
            client.close()
            if "no authentication methods" not in str(e).lower():
                raise ConnectError(f"board {name}: cannot connect to {where}: {e or type(e).__name__}") from None
            raise TrustError(f"board {name}: authentication failed for {where}: no key to offer (set 'identity' "
                             f"in boards.yaml or --identity, load the key into ssh-agent, or use --ask-password)"
                             ) from None
        except (TimeoutError, OSError, EOFError) as e:
            client.close()
            raise ConnectError(f"board {name}: cannot connect to {where}: {e or type(e).__name__}") from None
        self.client = client

    # -- commands ---------------------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float | None = None, on_line=None) -> Result:
        command = quote_argv(argv)
        log.debug("%s: exec %s", self.name, command)
        try:
            transport = self.client.get_transport()
            if transport is None:
                raise EOFError("no transport")
            chan = transport.open_session()
            self._channels.add(chan)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as e:
            raise RemoteError(f"board {self.name}: connection lost ({e or type(e).__name__})") from None
        out, err = Output(on_line), Output()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:  # block in select (no busy polling: boards may share this machine's cores)
                if chan.recv_ready():
                    out.feed(chan.recv(65536))
                elif chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(65536))
                elif chan.exit_status_ready() or chan.closed or not transport.is_active():
                    break
                else:
                    wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                    if wait <= 0:
                        self._kill(chan)
                        raise ProfileTimeout(f"board {self.name}: command timed out after {timeout:.0f} s")
                    select.select([chan], [], [], wait)
            while chan.recv_ready():
                out.feed(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.feed(chan.recv_stderr(65536))
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise RemoteError(f"board {self.name}: connection lost ({e or type(e).__name__})") from None
        finally:
            self._channels.discard(chan)
        status = chan.recv_exit_status() if chan.exit_status_ready() else -1
        chan.close()
        if status == -1:
            raise RemoteError(f"board {self.name}: connection lost while running {argv[0]}")
        return Result(status, out.text(), err.text())

    # -- files ------------------------------------------------------------------------------------
    def set_timeout(self, seconds: float) -> None:
        """No file operation waits longer than this for the board to answer."""
        self.op_timeout = seconds
        if self._sftp is not None:
            self._sftp.get_channel().settimeout(seconds)

    @property
    def sftp(self):
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
                self._sftp.get_channel().settimeout(self.op_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise RemoteError(f"board {self.name}: SFTP unavailable ({e})") from None
        return self._sftp

    def put(self, local: Path, remote: str) -> int:
        sftp = self.sftp
        try:
            n = atomic_upload(local, remote, lambda tmp: sftp.put(str(local), tmp), sftp.posix_rename)
            log.debug("%s: uploaded %s -> %s (%d bytes)", self.name, Path(local).name, remote, n)
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise RemoteError(f"board {self.name}: upload of {Path(local).name} failed ({e})") from None
        self.bytes_uploaded += n
        return n

    def size(self, remote: str) -> int | None:
        try:
            return self.sftp.stat(remote).st_size
        except FileNotFoundError:
            return None
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise RemoteError(f"board {self.name}: cannot stat {remote} ({e})") from None

    def makedirs(self, remote: str) -> None:
        path = ""
        for part in remote.strip("/").split("/"):
            path += "/" + part
            try:
                self.sftp.stat(path)
            except FileNotFoundError:
                try:
                    self.sftp.mkdir(path, mode=0o700)
                except OSError as e:
                    raise RemoteError(f"board {self.name}: cannot create {path} ({e})") from None

    def home(self) -> str:
        try:
            return self.sftp.normalize(".")
        except (OSError, paramiko.SSHException) as e:
            raise RemoteError(f"board {self.name}: cannot find the home folder ({e})") from None

    @staticmethod
    def _kill(chan) -> None:
        """End a remote command: SIGKILL through the SSH "signal" request (OpenSSH >= 7.9 honours it), then close
        the channel (the runner also exits when its stdin closes, for servers that ignore the signal)."""
        try:
            m = paramiko.Message()
            m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
            m.add_int(chan.remote_chanid)
            m.add_string("signal")
            m.add_boolean(False)
            m.add_string("KILL")
            chan.transport._send_user_message(m)
        except Exception:
            pass
        chan.close()

    def close(self) -> None:
        for chan in list(self._channels):
            self._kill(chan)
        try:
            if self._sftp is not None:
                self._sftp.close()
            self.client.close()
        except Exception:  # closing a dead connection must not hide the original error
            pass
