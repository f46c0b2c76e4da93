"""The `hemex` console script. It only parses arguments and wires; each command's work
lives in its own module. Nothing here imports Keras or TensorFlow: every command but
``serve``, ``train`` and ``evaluate`` answers in well under a second."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from daemon.config import Settings, load_settings
from daemon.training_commands import add_evaluate_parser, add_train_parser
from domain.errors import ConfigurationError, ModelError
from domain.version import __version__

log = logging.getLogger("hemex")

DESCRIPTION = ("hemex: a DICOM node that measures intracerebral hemorrhage on head CT, reports to PACS"
               " and alerts on-call staff. Every command takes --config FILE (default: the embedded"
               " defaults); HEMEX_<SECTION>__<KEY> environment variables override the file.")


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None,
        help="TOML configuration file (default: embedded defaults; HEMEX_* variables override)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="override data_dir")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"data_dir": args.data_dir} if getattr(args, "data_dir", None) else {}
    return load_settings(args.config, **overrides)


def _serve(args: argparse.Namespace) -> int:
    from daemon.app import Node, Role
    from daemon.logging_setup import configure_logging
    from daemon.memory_tuning import retain_freed_memory

    settings = _settings(args)
    configure_logging(settings.logging, settings.log_dir)
    log.info("hemex %s starting settings=%s", __version__, json.dumps(settings.redacted()))
    retain_freed_memory(settings.memory.retain_freed_mb)  # before any thread of the node starts
    node = Node(settings, frozenset(Role(r) for r in (args.role or ["all"])))
    node.handle_shutdown_signals()  # before the ports open: a reachable node honours SIGTERM
    try:
        node.start()
    except ConfigurationError:
        node.stop()  # a port that cannot be bound: close what had opened, then exit 2
        raise
    node.wait_for_shutdown_signal()
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(json.dumps(settings.redacted(), indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    from daemon.ops.node_status import node_status

    print(json.dumps(node_status(_settings(args)), indent=2))
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from daemon.ops.node_status import dead_letters

    for item in dead_letters(_settings(args)):
        print(json.dumps(item))
    return 0


def _retry_dead(args: argparse.Namespace) -> int:
    from daemon.ops.node_status import retry_dead

    count = retry_dead(_settings(args), args.ids or None)
    print(f"{count} item(s) queued for delivery again")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from daemon.ops.node_status import replay_study

    try:
        handle = replay_study(_settings(args), args.study_uid)
    except KeyError:
        print(f"hemex replay: the node holds no study {args.study_uid}", file=sys.stderr)
        return 1
    print(f"study {handle} queued for analysis again; the running node picks it up")
    return 0


def _echo(args: argparse.Namespace) -> int:
    from daemon.deliver.dicom_sender import echo_destination

    settings = _settings(args)
    ok = echo_destination(settings, args.destination)
    print(f"C-ECHO {args.destination}: {'success' if ok else 'FAILED'}")
    return 0 if ok else 1


def _date(text: str) -> datetime:
    """A --since/--until value: an ISO date or date and time (local)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD[THH:MM]): {text!r}") from exc


def _performance(args: argparse.Namespace) -> int:
    from daemon.ops.node_status import open_database
    from daemon.ops.site_performance import format_report, site_performance, write_plots

    settings = _settings(args)
    db = open_database(settings)
    with db.reading() as repos:
        outcomes = repos.followups.outcomes(args.since, args.until)
        awaiting = repos.followups.baselines_without_outcome(args.since, args.until)
    report = site_performance(outcomes, settings, awaiting, args.since, args.until,
                              n_boot=args.bootstrap, seed=args.seed)
    print(format_report(report))
    written = write_plots(report, args.out) if report.models or report.brain else []
    if written:
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _export_training_set(args: argparse.Namespace) -> int:
    from daemon.ops.training_export import export_training_set

    summary = export_training_set(_settings(args), args.dir, args.since, args.until, args.keep_identifiers)
    left = ", ".join(f"{n} {reason}" for reason, n in sorted(summary.left_out.items())) or "none"
    print(f"{summary.cases} case(s) written to {summary.manifest} (left out: {left})")
    print(f"train with: hemex train --data {summary.manifest} --out MODEL_DIR")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    import time

    from daemon.ops.alert_acknowledgement import acknowledge_code, format_group, list_groups
    from daemon.ops.node_status import open_database

    db = open_database(_settings(args))
    if args.ack:
        changed, group = acknowledge_code(db, args.ack, args.by, time.time())
        if group is None:
            print(f"hemex alerts: no alert with code {args.ack}", file=sys.stderr)
            return 1
        print(("acknowledged: " if changed else "already acknowledged: ") + format_group(group))
        return 0
    groups = list_groups(db, args.limit)
    print("\n\n".join(format_group(g) for g in groups) if groups else "no alerts")
    return 0


def _console_user(args: argparse.Namespace) -> int:
    from daemon.console.accounts import AccountsFile

    settings = _settings(args)
    accounts = AccountsFile(settings.console_accounts_path)
    if args.action == "list":
        for account in accounts.accounts().values():
            print(f"{account.name}\t{account.role}")
        return 0
    if not args.name:
        print(f"hemex console-user {args.action}: give the account's name", file=sys.stderr)
        return 2
    if args.action == "remove":
        if not accounts.remove(args.name):
            print(f"hemex console-user: no account {args.name} in {accounts.path}", file=sys.stderr)
            return 1
        print(f"account {args.name} removed from {accounts.path}; its sessions end at their next request")
        return 0
    password = _new_password(args.password_stdin)
    try:
        accounts.set(args.name, args.role, password)
    except ValueError as exc:
        print(f"hemex console-user: {exc}", file=sys.stderr)
        return 2
    print(f"account {args.name} ({args.role}) saved in {accounts.path}")
    if settings.console.auth != "accounts":
        print('note: the console uses it once [console] auth = "accounts"')
    return 0


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise ConfigurationError("the two passwords differ; nothing was changed")
    return first


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hemex", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"hemex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the node (DICOM and HL7 listeners, analysis, delivery)")
    _add_config_argument(serve)
    serve.add_argument("--role", action="append", choices=("receive", "analyse", "deliver", "all"),
                       default=None, help="what this node does (repeatable; default all). Several nodes on one"
                       " PostgreSQL database may each take some roles (docs/deploy-ha.md)")
    serve.set_defaults(func=_serve, role=None)

    check = commands.add_parser("check-config", help="validate the configuration and print it (secrets masked)")
    _add_config_argument(check)
    check.set_defaults(func=_check_config)

    status = commands.add_parser("status", help="counts of studies, jobs and deliveries by state")
    _add_config_argument(status)
    status.set_defaults(func=_status)

    dead = commands.add_parser("dead-letters", help="list deliveries that permanently failed")
    _add_config_argument(dead)
    dead.set_defaults(func=_dead_letters)

    retry = commands.add_parser("retry-dead", help="queue dead-letter deliveries again")
    _add_config_argument(retry)
    retry.add_argument("ids", nargs="*", type=int, help="outbox ids (default: all)")
    retry.set_defaults(func=_retry_dead)

    replay = commands.add_parser("replay", help="analyse a study again from its stored images"
                                 " (after a failure, or a changed configuration)")
    _add_config_argument(replay)
    replay.add_argument("study_uid", help="Study Instance UID")
    replay.set_defaults(func=_replay)

    echo = commands.add_parser("echo", help="C-ECHO a configured DICOM destination")
    _add_config_argument(echo)
    echo.add_argument("destination", help="destination name from [[destinations]]")
    echo.set_defaults(func=_echo)

    performance = commands.add_parser(
        "performance", help="the site's observed accuracy: each prediction against its follow-up CT")
    _add_config_argument(performance)
    performance.add_argument("--since", type=_date, default=None, help="baselines acquired from (ISO date)")
    performance.add_argument("--until", type=_date, default=None, help="baselines acquired before (ISO date)")
    performance.add_argument("--out", type=Path, default=Path("hemex-performance"),
                             help="folder for the ROC and calibration PNGs (default ./hemex-performance)")
    performance.add_argument("--bootstrap", type=int, default=None,
                             help="bootstrap resamples for the AUC CI (default [performance] bootstrap)")
    performance.add_argument("--seed", type=int, default=0)
    performance.set_defaults(func=_performance)

    export = commands.add_parser("export-training-set",
                                 help="write the labelled baselines as a training set for hemex train")
    _add_config_argument(export)
    export.add_argument("dir", type=Path, help="output folder (manifest.csv, cases/)")
    export.add_argument("--since", type=_date, default=None, help="baselines acquired from (ISO date)")
    export.add_argument("--until", type=_date, default=None, help="baselines acquired before (ISO date)")
    export.add_argument("--keep-identifiers", action="store_true",
                        help="write Study Instance UIDs and patient IDs instead of pseudonyms")
    export.set_defaults(func=_export_training_set)

    alerts = commands.add_parser("alerts", help="alerts with every step (queued, sent, delivered,"
                                 " acknowledged, escalated); --ack CODE acknowledges one")
    _add_config_argument(alerts)
    alerts.add_argument("--ack", metavar="CODE", default=None, help="acknowledge the alert with this short code")
    alerts.add_argument("--by", default="", help="who acknowledges (with --ack)")
    alerts.add_argument("--limit", type=int, default=20, help="how many alert groups to list")
    alerts.set_defaults(func=_alerts)
    users = commands.add_parser("console-user", help="add, change, remove or list the web console's local accounts")
    _add_config_argument(users)
    users.add_argument("action", choices=("set", "remove", "list"),
                       help="set: add an account or change its role and password")
    users.add_argument("name", nargs="?", help="account name (letters, digits, . _ @ -)")
    users.add_argument("--role", choices=("viewer", "admin"), default="viewer",
                       help="viewer: sees everything; admin: may also retry dead letters (default viewer)")
    users.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    users.set_defaults(func=_console_user)

    add_train_parser(commands)
    add_evaluate_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigurationError, ModelError) as exc:
        # What the administrator must fix before the node can start: exit 2, which the
        # systemd unit does not restart on (RestartPreventExitStatus=2).
        print(f"hemex: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"hemex: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
