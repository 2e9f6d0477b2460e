"""``llava-df demo``'s flags, checked before torch or Gradio loads (llava_df.apps.demo serves the page).

A bad value, a port in use, a host this machine cannot serve on or Gradio missing is one ``error:`` line at once.

How to call::

    args = parse(["--run_dir", "outputs/run", "--port", "7860"])   # DemoArguments, host without brackets
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from llava_df.apps.predict_flags import FACE_CROP_HELP, check_mode
from llava_df.cli_args import install_command, parse_verb
from llava_df.errors import UsageError
from llava_df.spec.ranges import check_threshold

DESCRIPTION = "a local web page that says whether an uploaded face is fake (Gradio)."
MAX_UPLOAD_MB = 25  # default --max_upload_mb: a camera's full-size JPEG is 5-15 MB; a face crop far less
HOST_EXAMPLES = "127.0.0.1 (this machine only, the default), ::1 (IPv6) or 0.0.0.0 (every interface)"


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    """(family, socket address) that the server will bind for ``host``; UsageError naming it when it is
    neither an IP address nor a name this machine resolves."""
    try:
        ipaddress.ip_address(host)
        numeric = socket.AI_NUMERICHOST  # an address: no name lookup
    except ValueError:
        if host.replace(".", "").isdigit():  # 999.1.1.1 would otherwise go to a DNS server as a name
            raise UsageError(f"--host {host}: not a valid IP address. Pass {HOST_EXAMPLES}.") from None
        numeric = 0
    # The server (uvicorn) binds IPv6 when the host holds a colon, else IPv4: the check does the same.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE | numeric)
    except socket.gaierror as err:
        raise UsageError(
            f"--host {host}: not an address or name this machine can serve on ({err.strerror}). Pass {HOST_EXAMPLES}."
        ) from None
    return infos[0][0], infos[0][4]


def check_port(host: str, port: int) -> None:
    """UsageError now, before the model loads, when ``host`` is not valid here or ``port`` cannot be bound."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: expected a TCP port in 1..65535, e.g. 7860.")
    family, address = _address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the server does: a port left in TIME_WAIT by a stopped server is free, a listening one is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"--port {port} on {host} is not free ({err.strerror}): another server uses it. Pass --port with a "
                    f"free port (e.g. {port + 1}) or stop the other server."
                ) from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise UsageError(
                    f"--host {host} is not an address of this machine ({err.strerror}). Pass {HOST_EXAMPLES}."
                ) from None
            if err.errno == errno.EACCES:
                raise UsageError(
                    f"--port {port} on {host}: {err.strerror} (ports below 1024 need root). Pass --port 7860 or another "
                    "port above 1023."
                ) from None
            raise UsageError(
                f"--host {host} --port {port}: cannot serve there ({err.strerror}). Pass {HOST_EXAMPLES}, and a free "
                "port."
            ) from None


@dataclass
class DemoArguments:
    """``llava-df demo``'s flags."""

    run_dir: str | None = field(default=None, metadata={"help": "A training run's --output_dir."})
    model_dir: str | None = field(
        default=None, metadata={"help": "A `llava-df merge` output, instead of --run_dir."}
    )
    weights: Literal["best", "final"] = field(default="best", metadata={"help": "Which weights of the run."})
    threshold: float | None = field(
        default=None, metadata={"help": "Cut on P(Fake); None: the run's threshold.json."}
    )
    host: str = field(
        default="127.0.0.1",
        metadata={
            "help": "Interface to serve on (127.0.0.1: this machine only; ::1 for IPv6, 0.0.0.0 for all)."
        },
    )
    port: int = field(default=7860, metadata={"help": "TCP port of the page."})
    max_upload_mb: float = field(default=MAX_UPLOAD_MB, metadata={"help": "Largest upload accepted, in MiB."})
    face_crop: str = field(default="auto", metadata={"help": FACE_CROP_HELP})  # llava_df.apps.face_check


def parse(argv: list[str]) -> DemoArguments:
    """The flags of ``argv``, every value checked (UsageError) before the model or Gradio loads."""
    args, _ = parse_verb(DemoArguments, argv, prog="llava-df demo", description=DESCRIPTION)
    if find_spec("gradio") is None:
        raise UsageError(f"the demo page needs Gradio, which is not installed: {install_command('demo')}.")
    if not 0 < args.max_upload_mb <= 4096:
        raise UsageError(
            f"--max_upload_mb {args.max_upload_mb}: expected a size in MiB in (0, 4096], e.g. 25."
        )
    if args.threshold is not None:
        check_threshold(args.threshold)
    check_mode(args.face_crop)
    if (args.run_dir is None) == (args.model_dir is None):
        raise UsageError(
            "pass exactly one of --run_dir (a training run) and --model_dir (a merged checkpoint)."
        )
    for flag, folder in (("--run_dir", args.run_dir), ("--model_dir", args.model_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(
                f"{flag} {folder}: no such folder. Pass a training run's --output_dir or a merge output."
            )
    if args.host.startswith("[") and args.host.endswith("]"):  # [::1]
        args.host = args.host[1:-1]
    check_port(args.host, args.port)
    return args
