"""`gitferry run`: start the operator (`python -m gitferry run` works too)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import MutableMapping

# Kept from the GIT_* names: git never reads it, and it only says how GitPython
# reports a missing git when it is imported (raise, warn or stay quiet).
KEPT_GIT_VARIABLES = frozenset({"GIT_PYTHON_REFRESH"})


def clean_environment(environ: MutableMapping[str, str]) -> list[str]:
    """Remove every GIT_* and SSH_* variable from `environ` (the operator's own
    environment, before anything starts a git process); returns the names removed.

    The git runner builds each git's environment from scratch, but GitPython's
    `git cat-file` (and its `git version` at import) copy the operator's: an
    inherited GIT_DIR, GIT_OBJECT_DIRECTORY, GIT_CONFIG_PARAMETERS, GIT_SSL_NO_VERIFY
    or SSH_AUTH_SOCK must reach no git. GitPython's own variables go too:
    GIT_PYTHON_GIT_EXECUTABLE would make it run another git than the runner does,
    GIT_PYTHON_TRACE would log its commands; only GIT_PYTHON_REFRESH stays."""
    removed = sorted(
        name
        for name in environ
        if name.startswith(("GIT_", "SSH_")) and name not in KEPT_GIT_VARIABLES
    )
    for name in removed:
        del environ[name]
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gitferry", description="A Kubernetes GitOps operator.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only these namespaces"
    )
    run.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # Kopf and the client libraries are chatty at INFO about every watch event.
    for noisy in ("kopf.objects", "kopf.activities", "kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    # Before anything imports GitPython (which runs git at import) or starts git.
    removed = clean_environment(os.environ)
    if removed:  # names only: a value may be a credential
        logging.getLogger("gitferry").info("action=clean-environment removed=%s", ",".join(removed))

    from .settings import Settings, SettingsError

    try:  # a bad setting stops the start with one line, not a crash loop of tracebacks
        Settings.from_env()
    except SettingsError as e:
        print(f"gitferry: invalid setting: {e}", file=sys.stderr)
        return 2

    import kopf

    from . import handlers  # registers the handlers

    handlers.watching(args.namespace)

    kopf.run(
        standalone=True,  # one replica (Recreate); peering needs its own CRDs
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
