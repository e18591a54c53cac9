"""The ``FLUX_SSH`` program that reaches a child instance without ssh.

Flux's ssh connector opens ``ssh://HOST/PATH`` by running
``$FLUX_SSH [-p PORT] HOST "<flux> relay PATH"`` and speaking Flux's message
protocol over that program's stdin/stdout. This program runs the quoted
command on a broker rank of the *enclosing* instance through its ``rexec``
service (RFC 42, the service behind ``flux exec``) and carries stdin and stdout
as bytes, both ways, over the enclosing instance's overlay tree: no ssh, no
child's local socket on this node, nothing cut at a NUL byte (stock
``flux exec`` stops its output at the first NUL, so it cannot carry Flux
messages).

``HOST`` names the rank: ``matensemble-rank-<N>`` (see :func:`rank_host`). Any
other host is handed to the ssh command this one replaced, so that setting
``FLUX_SSH`` process-wide leaves ordinary ``ssh://`` URIs working.

The enclosing instance's URI is given explicitly (``--parent``), never read
from ``FLUX_URI``: a process whose ``FLUX_URI`` names a child would otherwise
reach the child through itself.

Run as ``python carrier.py
--parent URI [--fallback SSH] [-p PORT] HOST COMMAND``.
"""

from __future__ import annotations

import argparse
import base64
import errno
import os
import re
import shlex
import sys
from collections.abc import Sequence
from typing import Any

#: Host part of a child URI that names a broker rank of the enclosing instance.
RANK_HOST = re.compile(r"^matensemble-rank-(\d+)$")

# RFC 42 exec flags: stream stdout and stderr back; flow control on stdin.
REXEC_STDOUT = 1
REXEC_STDERR = 2
REXEC_WRITE_CREDIT = 8
READ_CHUNK = 1 << 16
# Environment a relay must not inherit from this side (the broker sets its own
# FLUX_URI; the rest would point back at this process's instances).
DROPPED_ENV = ("FLUX_URI", "FLUX_SSH", "FLUX_SSH_RCMD", "FLUX_PROXY_REMOTE", "FLUX_KVS_NAMESPACE")


def rank_host(rank: int) -> str:
    """The URI host that makes this carrier start the command on ``rank``."""
    return f"matensemble-rank-{int(rank)}"


def host_rank(host: str) -> int | None:
    """The enclosing-instance rank ``host`` names, or None for an ordinary host."""
    user_host = host.rsplit("@", 1)[-1]
    match = RANK_HOST.match(user_host)
    return int(match.group(1)) if match else None


def relay_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment the remote command gets: ours, less what would recurse."""
    return {key: value for key, value in environ.items() if key not in DROPPED_ENV}


def decode_io(io: dict[str, Any]) -> bytes:
    """The bytes of one RFC 42 I/O object (base64 or UTF-8 text)."""
    data = io.get("data")
    if not data:
        return b""
    if io.get("encoding") == "base64":
        return base64.b64decode(data)
    return data.encode("utf-8", errors="surrogateescape")


class RexecStream:
    """One remote process on ``rank`` whose stdin/stdout are this process's.

    Runs in the handle's reactor; :meth:`run` returns the remote exit code.
    """

    def __init__(self, handle: Any, rank: int, command: list[str], cwd: str = "/") -> None:
        self.handle = handle
        self.rank = rank
        self.command = command
        self.cwd = cwd
        self.exit_code = 255
        self._credit = 0
        self._pending_in = bytearray()
        self._stdin_eof = False
        self._eof_sent = False
        self._out = bytearray()
        self._out_watcher: Any = None
        self._in_watcher: Any = None
        self._future: Any = None
        self._matchtag = 0
        self._finished = False

    def run(self) -> int:
        import flux.constants
        from flux.core.inner import raw

        os.set_blocking(1, False)
        payload = {
            "cmd": {
                "cmdline": self.command,
                "cwd": self.cwd,
                "env": relay_environment(dict(os.environ)),
                "opts": {"stdout_LINE_BUFFER": "false", "stderr_LINE_BUFFER": "false"},
                "channels": [],
            },
            "flags": REXEC_STDOUT | REXEC_STDERR | REXEC_WRITE_CREDIT,
        }
        self._future = self.handle.rpc(
            "rexec.exec", payload, nodeid=self.rank, flags=flux.constants.FLUX_RPC_STREAMING
        )
        self._matchtag = raw.flux_rpc_get_matchtag(self._future.pimpl.handle)
        self._future.then(self._on_response)
        self._in_watcher = self.handle.fd_watcher_create(
            0, self._on_stdin, events=flux.constants.FLUX_POLLIN
        )
        self._out_watcher = self.handle.fd_watcher_create(
            1, self._on_stdout_writable, events=flux.constants.FLUX_POLLOUT
        )
        self.handle.reactor_run()
        self._drain_stdout_blocking()
        return self.exit_code

    # -- responses from the remote process -------------------------------------------------
    def _on_response(self, future: Any) -> None:
        try:
            response = future.get()
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # ENODATA: the normal end of the stream
                sys.stderr.write(f"matensemble carrier: rank {self.rank}: {exc}\n")
            self.handle.reactor_stop()
            return
        kind = response.get("type")
        if kind == "add-credit":
            self._credit += int(response.get("channels", {}).get("stdin", 0))
            self._send_stdin()
        elif kind == "output":
            self._on_output(response["io"])
        elif kind == "finished":
            self._finished = True
            status = int(response.get("status", 0))
            self.exit_code = os.waitstatus_to_exitcode(status) if status >= 0 else 255
            self.exit_code = self.exit_code if self.exit_code >= 0 else 128 - self.exit_code
        future.reset()

    def _on_output(self, io: dict[str, Any]) -> None:
        data = decode_io(io)
        if io.get("stream") == "stderr":
            if data:
                os.write(2, data)
            return
        if data:
            self._out += data
            self._flush_stdout()

    # -- stdout (non-blocking: the other end may be busy writing to us) --------------------
    def _flush_stdout(self) -> None:
        while self._out:
            try:
                written = os.write(1, self._out)
            except BlockingIOError:
                self._out_watcher.start()
                return
            except BrokenPipeError:
                self._out.clear()
                self.handle.reactor_stop()
                return
            del self._out[:written]
        self._out_watcher.stop()

    def _on_stdout_writable(self, *_: Any) -> None:
        self._flush_stdout()

    def _drain_stdout_blocking(self) -> None:
        os.set_blocking(1, True)
        try:
            while self._out:
                del self._out[: os.write(1, self._out)]
        except OSError:
            pass

    # -- stdin (within the credit the server grants) ---------------------------------------
    def _on_stdin(self, *_: Any) -> None:
        try:
            data = os.read(0, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._pending_in += data
        else:
            self._stdin_eof = True
            self._in_watcher.stop()
        self._send_stdin()
        if len(self._pending_in) >= READ_CHUNK * 16:
            self._in_watcher.stop()  # back pressure: wait for credit

    def _send_stdin(self) -> None:
        import flux.constants

        while (self._pending_in and self._credit > 0) or self._eof_due():
            size = min(len(self._pending_in), self._credit)
            chunk = bytes(self._pending_in[:size])
            del self._pending_in[:size]
            self._credit -= size
            eof = self._eof_due()
            io: dict[str, Any] = {"stream": "stdin", "rank": str(self.rank), "eof": eof}
            if chunk:
                io["data"] = base64.b64encode(chunk).decode("ascii")
                io["encoding"] = "base64"
            self.handle.rpc(
                "rexec.write",
                {"matchtag": self._matchtag, "io": io},
                nodeid=self.rank,
                flags=flux.constants.FLUX_RPC_NORESPONSE,
            )
            self._eof_sent = self._eof_sent or eof
        if not self._stdin_eof and len(self._pending_in) < READ_CHUNK * 16:
            self._in_watcher.start()

    def _eof_due(self) -> bool:
        return self._stdin_eof and not self._pending_in and not self._eof_sent


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="matensemble-flux-carrier")
    parser.add_argument("--parent", required=True, help="URI of the enclosing Flux instance")
    parser.add_argument("--fallback", default="ssh", help="ssh command for other hosts")
    parser.add_argument("-p", dest="port", default=None)
    parser.add_argument("host")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_arguments(argv)
    rank = host_rank(args.host)
    command = shlex.split(" ".join(args.command))
    if rank is None:
        port = ["-p", args.port] if args.port else []
        fallback = shlex.split(args.fallback)
        os.execvp(fallback[0], [*fallback, *port, args.host, *args.command])
    if not command:
        sys.stderr.write("matensemble carrier: no command to run\n")
        return 2
    import flux

    handle = flux.Flux(args.parent)
    return RexecStream(handle, rank, command).run()


if __name__ == "__main__":
    sys.exit(main())
