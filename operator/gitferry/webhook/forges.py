"""The forges a push webhook may come from, by the name in its URL path."""

from __future__ import annotations

from .errors import UnknownForge

GITHUB = "github"
GITLAB = "gitlab"
GITEA = "gitea"  # Forgejo too: it sends Gitea's headers as well as its own
BITBUCKET_SERVER = "bitbucket-server"  # Bitbucket Server and Data Center
BITBUCKET_CLOUD = "bitbucket-cloud"
GENERIC = "generic"  # gitferry's own: README "Push webhooks"

FORGES = (GITHUB, GITLAB, GITEA, BITBUCKET_SERVER, BITBUCKET_CLOUD, GENERIC)


def check_forge(forge: str) -> str:
    """`forge`, or UnknownForge."""
    if forge not in FORGES:
        raise UnknownForge(f"unknown forge {forge[:40]!r}; one of {', '.join(FORGES)}")
    return forge
