"""``fieldc2`` commands: a thin layer over the library.

Only this module and :mod:`fieldc2.config` read files and the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from fieldc2 import __version__
from fieldc2.config import DEFAULT_TOML, Config, load_config
from fieldc2.errors import ConfigError, FieldC2Error
from fieldc2.users import ROLES

log = logging.getLogger("fieldc2")


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration (write one with `fieldc2 init`)")
    parser.add_argument("--bind", metavar="ADDR",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    parser.add_argument("--tcp-port", type=int, metavar="N",
                        help="CoT over TCP port (default 8087)")
    parser.add_argument("--tls-port", type=int, metavar="N",
                        help="CoT over mutual TLS port (default 8089)")
    parser.add_argument("--no-tls", dest="tls", action="store_false", default=None,
                        help="do not serve CoT over TLS")
    parser.add_argument("--http-port", type=int, metavar="N",
                        help="Marti API port (default 8443)")
    parser.add_argument("--enrollment-port", type=int, metavar="N",
                        help="certificate enrollment port (default 8446)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="where the database lives (default ./fieldc2-data)")
    parser.add_argument("--multicast", action="store_true", default=None,
                        help="bridge mesh SA on 239.2.3.1:6969 (off by default)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"], help="default: info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldc2",
        description="Command and control for field teams on bad networks. "
                    "TAK clients (ATAK, WinTAK, iTAK) connect unchanged.")
    parser.add_argument("--version", action="version", version=f"fieldc2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a command post",
                           description="Run a command post: CoT streaming on TCP, the Marti "
                                       "API, the picture stored in SQLite. Ctrl+C stops it.")
    _server_flags(serve)

    init = sub.add_parser("init", help="write a commented default configuration",
                          description="Write a commented default TOML configuration.")
    init.add_argument("path", nargs="?", type=Path, default=Path("fieldc2.toml"),
                      help="where to write it (default ./fieldc2.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    ca = sub.add_parser("ca", help="the built-in certificate authority",
                        description="Create or show the command post's certificate authority.")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    for action, text in (("init", "create the CA and the server certificate"),
                         ("show", "print the CA's and the server's fingerprints")):
        one = ca_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        one.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
        one.add_argument("--data-dir", type=Path, metavar="DIR",
                         help="where the CA lives (default ./fieldc2-data)")
        if action == "init":
            one.add_argument("--key-type", choices=["rsa2048", "p256"],
                             help="key type (default rsa2048, what every TAK client imports)")

    user = sub.add_parser("user", help="user accounts, groups and roles",
                          description="Manage the accounts that log in (enrollment, <auth>) "
                                      "and the groups that decide who sees what.")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser("add", help="add a user", description="Add a user.")
    add.add_argument("name")
    add.add_argument("--group", action="append", required=True,
                     help="a group the user belongs to (repeat for several)")
    add.add_argument("--role", choices=list(ROLES), default="member",
                     help="admin sees all groups; operator and planner may edit, solve and "
                          "publish plans (REST /api/plan); member (default)")
    for action, text in (("passwd", "set a user's password"), ("disable", "disable a user"),
                         ("enable", "enable a disabled user")):
        one = user_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        one.add_argument("name")
    for one in (add, user_sub.choices["passwd"]):
        one.add_argument("--password-stdin", action="store_true",
                         help="read the password from standard input instead of prompting")
    user_sub.add_parser("list", help="list users", description="List users.")
    for one in user_sub.choices.values():
        one.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
        one.add_argument("--data-dir", type=Path, metavar="DIR",
                         help="where users.json lives (default ./fieldc2-data)")

    cert = sub.add_parser("cert", help="client certificates",
                          description="Issue client certificates signed by the built-in CA.")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    issue = cert_sub.add_parser(
        "issue", help="issue a client certificate (.pem, .key and .p12)",
        description="Issue a client certificate and key as PEM and as a .p12 for TAK clients.")
    issue.add_argument("name", help="the client's name (certificate CN)")
    issue.add_argument("--days", type=int, default=365, help="validity (default 365)")
    issue.add_argument("--passphrase", default="atakatak",
                       help="the .p12 passphrase (default atakatak, the TAK default)")
    issue.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
    issue.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="where the CA lives (default ./fieldc2-data)")
    from fieldc2.crypto.revocation import add_cert_actions
    add_cert_actions(cert_sub)

    from fieldc2 import audit

    audit.add_parser(sub)
    from fieldc2.package import add_parser as add_package_parser

    add_package_parser(sub)
    from fieldc2.plan_cli import add_parser as add_plan_parser

    add_plan_parser(sub)
    from fieldc2 import radio_cli

    radio_cli.add_parser(sub)
    from fieldc2 import relay_cli

    relay_cli.add_parser(sub)

    demo = sub.add_parser("demo", help="plan an incident, send orders to simulated teams, "
                                       "follow them live",
                          description="Start a command post on the embedded defaults, connect "
                                      "simulated field teams over TCP, plan the example "
                                      "incident, publish the orders to the teams' devices and "
                                      "follow them live (receipts, progress, an overdue "
                                      "alert); write the exports to <data-dir>/exports at "
                                      "the end. Ctrl+C stops it.")
    _server_flags(demo)
    demo.add_argument("--units", type=int, default=6,
                      help="simulated devices in all: the teams' devices, then walkers "
                           "(default 6)")
    demo.add_argument("--duration", type=float, default=0.0,
                      help="stop after this many seconds (default: run until Ctrl+C)")
    demo.add_argument("--no-live", action="store_true",
                      help="print a summary line every few seconds instead of the live view")
    demo.add_argument("--incident", type=Path, metavar="FILE",
                      help="incident to plan (default: examples/incident.yaml)")
    demo.add_argument("--speedup", type=float, default=60.0,
                      help="scenario seconds per real second for the teams (default 60: a "
                           "minute is an hour of the operation)")
    demo.add_argument("--solve-time", type=float, default=3.0, metavar="S",
                      help="solver time limit, seconds (default 3)")
    demo.add_argument("--ack-timeout", type=float, default=20.0, metavar="S",
                      help="seconds before an unacknowledged order raises the alert "
                           "(default 20)")
    demo.add_argument("--no-plan", action="store_true",
                      help="only simulated units reporting: no planning, no orders")
    demo.add_argument("--radio", type=int, default=0, metavar="N",
                      help="also N LoRa field nodes (UDP on localhost, LongFast airtime) "
                           "through a relay; the first is a team device (default 0: none)")
    return parser


#: Where `fieldc2 demo` keeps its data unless told otherwise.
DEMO_DATA_DIR = "fieldc2-demo"


def _config(args: argparse.Namespace) -> Config:
    if args.command in ("ca", "cert", "user", "audit", "package", "radio",
                        "plan"):
        return load_config(args.config, data_dir=str(args.data_dir) if args.data_dir else None,
                           **{"tls.key_type": getattr(args, "key_type", None)})
    data_dir = str(args.data_dir) if args.data_dir else None
    if (args.command == "demo" and data_dir is None and args.config is None
            and "FIELDC2_DATA_DIR" not in os.environ):
        data_dir = DEMO_DATA_DIR  # the demo supersedes open orders: never in a real post's data
    return load_config(
        args.config,
        bind=args.bind,
        data_dir=data_dir,
        **{"stream.tcp_port": args.tcp_port, "http.port": args.http_port,
           "enrollment.port": args.enrollment_port,
           "tls.port": args.tls_port, "tls.enabled": args.tls,
           "multicast.enabled": args.multicast},
    )


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - Windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


async def _serve(config: Config) -> None:
    from fieldc2.server import CommandPost

    post = CommandPost(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before start: a signal during start counts
        loop.add_signal_handler(sig, post.request_stop)
    async with post:
        log.info("command post ready; data in %s; Ctrl+C stops it", config.data_dir)
        await post.serve_forever()
        log.info("shutting down")


def cmd_init(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        print(f"fieldc2: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    path.write_text(DEFAULT_TOML)
    print(f"wrote {path}; start with: fieldc2 serve --config {path}")
    return 0


def cmd_ca(args: argparse.Namespace, config: Config) -> int:
    import datetime as dt

    from fieldc2.crypto.ca import CertificateAuthority, fingerprint

    directory = config.data_dir / "ca"
    now = dt.datetime.now(dt.UTC)
    if args.ca_command == "init":
        ca = CertificateAuthority.create(directory, now=now, key_type=config.tls.key_type)
        ca.server_credentials(config.tls.hostnames, config.tls.ips, now=now)
        print(f"created a {ca.key_type} CA in {directory}")
    else:
        ca = CertificateAuthority.load(directory)
    from cryptography import x509

    print(f"CA      {ca.cert.subject.rfc4514_string()}")
    print(f"        SHA-256 {fingerprint(ca.cert)}")
    print(f"        valid until {ca.cert.not_valid_after_utc:%Y-%m-%d}")
    server_pem = directory / "server.pem"
    if server_pem.exists():
        server = x509.load_pem_x509_certificate(server_pem.read_bytes())
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
        print(f"server  {server.subject.rfc4514_string()} for {', '.join(names)}")
        print(f"        SHA-256 {fingerprint(server)}")
        print(f"        valid until {server.not_valid_after_utc:%Y-%m-%d}")
    return 0


def cmd_cert(args: argparse.Namespace, config: Config) -> int:
    import datetime as dt

    from fieldc2.audit import AuditLog
    from fieldc2.crypto.ca import CertificateAuthority

    if args.cert_command != "issue":
        from fieldc2.crypto.revocation import run_cert
        return run_cert(args, config, now=dt.datetime.now(dt.UTC))
    ca = CertificateAuthority.load(config.data_dir / "ca")
    now = dt.datetime.now(dt.UTC)
    paths = ca.write_client(args.name, now=now, days=args.days, passphrase=args.passphrase)
    with AuditLog(config.data_dir / "audit.log") as log_:
        log_.append("cert_issued", "cli", args.name, now.timestamp(), days=str(args.days))
    for kind, path in paths.items():
        print(f"{kind:5} {path}")
    print(f"CA    {ca.cert_path}")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the passwords do not match")
    return first


def cmd_user(args: argparse.Namespace, config: Config) -> int:
    from fieldc2.users import UserStore

    users = UserStore(config.data_dir / "users.json")
    action = args.user_command
    if action == "add":
        password = _read_password(args) if args.password_stdin or sys.stdin.isatty() else None
        user = users.add(args.name, tuple(args.group), args.role, password)
        note = "" if user.password else " (no password: certificate-only)"
        print(f"added {user.name} ({user.role}) in {', '.join(user.groups)}{note}")
    elif action == "passwd":
        users.set_password(args.name, _read_password(args))
        print(f"password of {args.name} changed")
    elif action in ("disable", "enable"):
        users.set_disabled(args.name, action == "disable")
        print(f"{args.name} {action}d")
    else:
        for u in users.all():
            state = "disabled" if u.disabled else "active"
            login = "password" if u.password else "certificate only"
            print(f"{u.name:24} {u.role:9} {state:9} {login:17} {', '.join(u.groups)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO) if "log_level" in args
        else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        if args.command == "init":
            return cmd_init(args)
        if args.command in ("relay", "node"):
            from fieldc2 import relay_cli

            return relay_cli.run(args)
        config = _config(args)
        if args.command == "ca":
            return cmd_ca(args, config)
        if args.command == "cert":
            return cmd_cert(args, config)
        if args.command == "user":
            return cmd_user(args, config)
        if args.command == "audit":
            from fieldc2 import audit

            return audit.run(args, config)
        if args.command == "radio":
            from fieldc2 import radio_cli

            return radio_cli.run(args, config)
        if args.command == "package":
            from fieldc2.package import run as run_package

            return run_package(args, config)
        if args.command == "plan":
            from fieldc2.plan_cli import run as run_plan

            return run_plan(args, config)
        if args.command == "serve":
            _run(_serve(config))
        elif args.command == "demo":
            from fieldc2.demo import DemoOptions, demo_main
            options = DemoOptions(
                units=args.units, duration=args.duration, live=not args.no_live,
                incident=args.incident, plan=not args.no_plan, speedup=args.speedup,
                solve_time=args.solve_time, ack_timeout=args.ack_timeout)
            if args.radio:
                from fieldc2.demo_radio import radio_demo_main
                _run(radio_demo_main(config, options, args.radio))
            else:
                _run(demo_main(config, options))
    except FieldC2Error as exc:
        print(f"fieldc2: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fieldc2: {exc} (is another server on that port? try --tcp-port/--http-port)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
