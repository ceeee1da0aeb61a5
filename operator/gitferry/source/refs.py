"""Ref and semver policy: what a branch, tag, commit pin or npm range may be,
and which ref of a remote's `ls-remote` answer it selects."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from semantic_version import NpmSpec, Version

from .errors import InvalidRef, RevisionMissing
from .urls import redact_url


@dataclass(frozen=True)
class GitRef:
    """At most one of branch, tag, semver, commit (commit may join branch); none
    selects the remote's default branch."""

    branch: str | None = None
    tag: str | None = None
    semver: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class RefsAnswer:
    """One `git ls-remote --symref` answer."""

    refs: dict[str, str]  # full ref name -> object it points at (a tag object for annotated tags)
    peeled: dict[str, str]  # tag ref name -> commit, for annotated tags
    head: str | None  # the ref HEAD points at, e.g. refs/heads/main
    at: float  # time.monotonic() when asked

    def commit_of(self, refname: str) -> str | None:
        return self.peeled.get(refname) or self.refs.get(refname)


_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{40}$")
_REF_BAD_CHARS = frozenset(" ~^:?*[\\")


def ref_name_problem(name: str) -> str | None:
    """Why `name` is not a valid branch or tag name (git check-ref-format), or None."""
    if not name:
        return "is empty"
    if name.startswith("-"):
        return "starts with '-'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in _REF_BAD_CHARS for c in name):
        return "contains a space, a control character or one of ~ ^ : ? * [ \\"
    if ".." in name:
        return "contains '..'"
    if "@{" in name or name == "@":
        return "contains '@{' or is '@'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "has an empty path component"
    if name.endswith("."):
        return "ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "has a component starting with '.'"
        if part.endswith(".lock"):
            return "has a component ending with '.lock'"
    return None


@dataclass(frozen=True)
class Want:
    """What to resolve, after validation."""

    branch: str | None = None
    tag: str | None = None
    semver: tuple[Clause, ...] | None = None
    semver_text: str | None = None
    commit: str | None = None


def validate_ref(ref: GitRef) -> None:
    """InvalidRef when a branch, tag, commit or semver range cannot be valid."""
    want_of(ref)


def want_of(ref: GitRef) -> Want:
    for kind, value in (("branch", ref.branch), ("tag", ref.tag)):
        if value is not None:
            problem = ref_name_problem(value)
            if problem:
                raise InvalidRef(f"spec.ref.{kind} {value!r} {problem}")
    commit = None
    if ref.commit is not None:
        if not _COMMIT_RE.match(ref.commit):
            raise InvalidRef(
                f"spec.ref.commit {ref.commit!r} is not a full 40-character commit SHA"
            )
        commit = ref.commit.lower()
    clauses = parse_semver_range(ref.semver) if ref.semver is not None else None
    return Want(
        branch=ref.branch,
        tag=ref.tag,
        semver=clauses,
        semver_text=ref.semver,
        commit=commit,
    )


# --- semver ----------------------------------------------------------------
# npm accepts "v1.2.3" and "=1.2.3" inside ranges; NpmSpec does not take the v.
_RANGE_V_RE = re.compile(r"(^|[\s<>=~^|])[vV](?=\d)")
_OPERATOR_SPACE_RE = re.compile(r"(>=|<=|>|<|=|~|\^)\s+(?=[vV]?\d)")
_PRERELEASE_IN_RANGE_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)-[0-9A-Za-z]")


@dataclass(frozen=True)
class Clause:
    """One `||` alternative of an npm range, with the versions whose prereleases it admits."""

    spec: NpmSpec
    prerelease_of: frozenset[tuple[int, int, int]]


def parse_semver_range(text: str) -> tuple[Clause, ...]:
    """The range as npm reads it; InvalidRef when it is not one."""
    if any(ord(c) < 0x20 for c in text):
        raise InvalidRef(f"spec.ref.semver {text!r} contains a control character")
    clauses = []
    for alternative in text.split("||"):
        # npm allows a space between an operator and its version (">= 1.0.0").
        joined = _OPERATOR_SPACE_RE.sub(r"\1", alternative)
        cleaned = _RANGE_V_RE.sub(r"\1", joined).strip() or "*"
        try:
            spec = NpmSpec(cleaned)
        except ValueError as e:
            raise InvalidRef(f"spec.ref.semver {text!r} is not an npm version range: {e}") from None
        named = frozenset(
            (int(a), int(b), int(c)) for a, b, c in _PRERELEASE_IN_RANGE_RE.findall(cleaned)
        )
        clauses.append(Clause(spec=spec, prerelease_of=named))
    return tuple(clauses)


def tag_version(tag: str) -> Version | None:
    """The semantic version a tag names ("v1.2.3" and "1.2.3" alike), or None."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    try:
        return Version(text)
    except ValueError:
        return None


def range_matches(clauses: Sequence[Clause], version: Version) -> bool:
    """npm's rule: a prerelease matches only an alternative that names a prerelease of
    the same major.minor.patch. NpmSpec alone lets `<2.0.0` match 2.0.0-rc.1."""
    for clause in clauses:
        if version.prerelease and (
            (version.major, version.minor, version.patch) not in clause.prerelease_of
        ):
            continue
        if clause.spec.match(version):
            return True
    return False


def select_semver_tag(range_text: str, tags: Iterable[str]) -> str | None:
    """The tag with the highest version in the range (tags that are no version are
    ignored; a tie between "v1.0.0" and "1.0.0" goes to the later name)."""
    clauses = parse_semver_range(range_text)
    best: tuple[tuple[object, ...], str] | None = None
    for tag in tags:
        version = tag_version(tag)
        if version is None or not range_matches(clauses, version):
            continue
        key = (version.precedence_key, tag)
        if best is None or key > best:
            best = key
    return best[1] if best else None


def parse_ls_remote(output: str) -> RefsAnswer:
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    head: str | None = None
    for line in output.splitlines():
        left, _, name = line.partition("\t")
        if left.startswith("ref: "):
            if name == "HEAD":
                head = left[len("ref: ") :]
            continue
        if name.endswith("^{}"):
            peeled[name[:-3]] = left
        elif name:
            refs[name] = left
    return RefsAnswer(refs=refs, peeled=peeled, head=head, at=time.monotonic())


@dataclass(frozen=True)
class Resolved:
    refname: str  # where the mirror keeps it
    want: str  # the object to fetch (a tag object for annotated tags)
    commit: str | None  # the commit, when known before fetching
    label: str | None  # "main", "v1.2.0", None for a bare commit pin
    wanted: str  # for messages: "branch main"


def resolve(answer: RefsAnswer, want: Want, url: str) -> Resolved:
    where = redact_url(url)
    if want.branch is not None:
        refname = f"refs/heads/{want.branch}"
        label, wanted = want.branch, f"branch {want.branch!r}"
    elif want.tag is not None:
        refname = f"refs/tags/{want.tag}"
        label, wanted = want.tag, f"tag {want.tag!r}"
    elif want.semver is not None:
        tags = [r[len("refs/tags/") :] for r in answer.refs if r.startswith("refs/tags/")]
        chosen = select_semver_tag(want.semver_text or "", tags)
        if chosen is None:
            raise RevisionMissing(
                f"no tag of {where} matches the semver range {want.semver_text!r} "
                f"({len(tags)} tags)"
            )
        refname = f"refs/tags/{chosen}"
        label, wanted = chosen, f"tag {chosen!r}"
    else:
        if answer.head is None or not answer.head.startswith("refs/heads/"):
            if "HEAD" in answer.refs:  # a detached HEAD on the server
                sha = answer.refs["HEAD"]
                return Resolved("refs/gitferry/HEAD", sha, sha, "HEAD", "the default branch")
            raise RevisionMissing(f"{where} has no default branch (HEAD)")
        refname = answer.head
        label = refname[len("refs/heads/") :]
        wanted = f"the default branch {label!r}"
    obj = answer.refs.get(refname)
    commit = answer.commit_of(refname)
    if obj is None or commit is None:
        if want.branch is None and want.tag is None and want.semver is None:
            raise RevisionMissing(f"the default branch {label!r} of {where} has no commits")
        raise RevisionMissing(f"{wanted} not found in {where}")
    return Resolved(refname, obj, commit, label, wanted)
