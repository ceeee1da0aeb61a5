"""Which cluster the tests run on: the local control plane unless the environment
asks for another, and one clear line when what it asks for cannot be had.
No Docker needed: the Docker and kind commands are stood in for."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import cluster_fixtures
from tests.harness.cluster_fixtures import (
    ClusterChoiceError,
    GivenKubeconfig,
    Kind,
    KindCluster,
    LocalControlPlane,
    choose_cluster,
    pick_node_image,
)


# --- choose_cluster -----------------------------------------------------------
@pytest.mark.parametrize(
    "env",
    [
        {},
        {"GITFERRY_TEST_CLUSTER": ""},
        {"GITFERRY_TEST_CLUSTER": "local"},
        {"GITFERRY_TEST_KUBECONFIG": "", "GITFERRY_KIND_NODE_IMAGE": " "},
        # Docker running changes nothing; unrelated variables neither.
        {"DOCKER_HOST": "unix:///var/run/docker.sock", "KUBECONFIG": "/somewhere"},
    ],
)
def test_the_local_control_plane_is_the_default(env: dict[str, str]) -> None:
    assert choose_cluster(env) == LocalControlPlane()


def test_a_given_kubeconfig_is_used_as_it_is() -> None:
    chosen = choose_cluster({"GITFERRY_TEST_KUBECONFIG": "/tmp/kube/config"})
    assert chosen == GivenKubeconfig(Path("/tmp/kube/config"))


def test_a_given_kubeconfig_may_start_with_a_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/dev")
    chosen = choose_cluster({"GITFERRY_TEST_KUBECONFIG": "~/.kube/config"})
    assert chosen == GivenKubeconfig(Path("/home/dev/.kube/config"))


def test_kind_with_a_node_image_present_locally() -> None:
    assert choose_cluster({"GITFERRY_TEST_CLUSTER": "kind"}) == Kind(node_image=None)


def test_kind_with_the_users_node_image() -> None:
    env = {"GITFERRY_TEST_CLUSTER": "kind", "GITFERRY_KIND_NODE_IMAGE": "kindest/node:v1.37.0"}
    assert choose_cluster(env) == Kind(node_image="kindest/node:v1.37.0")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GITFERRY_TEST_CLUSTER": "knid"}, "GITFERRY_TEST_CLUSTER='knid' is not a cluster"),
        ({"GITFERRY_TEST_CLUSTER": "docker"}, "use GITFERRY_TEST_CLUSTER=kind"),
        ({"GITFERRY_TEST_CLUSTER": "Kind"}, "is not a cluster this suite knows"),
        (
            {"GITFERRY_TEST_KUBECONFIG": "/k", "GITFERRY_TEST_CLUSTER": "kind"},
            "are both set; set only one of them",
        ),
        (
            {"GITFERRY_TEST_KUBECONFIG": "/k", "GITFERRY_TEST_CLUSTER": "local"},
            "are both set",
        ),
        (
            {"GITFERRY_KIND_NODE_IMAGE": "kindest/node:v1.37.0"},
            "GITFERRY_KIND_NODE_IMAGE is set but GITFERRY_TEST_CLUSTER is not kind",
        ),
    ],
)
def test_what_cannot_be_honoured_is_one_clear_line(env: dict[str, str], says: str) -> None:
    with pytest.raises(ClusterChoiceError) as e:
        choose_cluster(env)
    assert says in str(e.value)
    assert "\n" not in str(e.value)


# --- the node image -----------------------------------------------------------
def test_the_newest_tagged_node_image_present_is_picked() -> None:
    listed = [
        "kindest/node:v1.35.1",
        "kindest/node:<none>",
        "kindest/node:v1.37.0",
        "kindest/node:v1.9.11",
        "",
    ]
    assert pick_node_image(listed) == "kindest/node:v1.37.0"


def test_no_tagged_node_image_means_none() -> None:
    assert pick_node_image([]) is None
    assert pick_node_image(["kindest/node:<none>", "other/image:v9"]) is None


def test_a_tag_that_is_no_version_still_counts() -> None:
    assert pick_node_image(["kindest/node:dev"]) == "kindest/node:dev"
    assert pick_node_image(["kindest/node:dev", "kindest/node:v1.30.0"]) == "kindest/node:v1.30.0"


def test_the_pinned_kind_version_is_read_from_the_build_script() -> None:
    assert re.fullmatch(r"v\d+\.\d+\.\d+", cluster_fixtures._kind_version())


# --- kind asked for but unavailable: one line each, nothing pulled -------------
class FakeCommands:
    """Stands in for `docker` and `kind`: canned results, every argv recorded."""

    def __init__(self, **results: tuple[int, str, str]) -> None:
        self.results = results
        self.ran: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        self.ran.append(argv)
        # docker info / docker image inspect|ls / bash hack/kind/build.sh / kind create|delete
        if argv[0] == "bash":
            key = "build"
        elif argv[:2] == ["docker", "image"]:
            key = argv[2]
        else:
            key = argv[1]
        code, out, err = self.results.get(key, (0, "", ""))
        return subprocess.CompletedProcess(argv, code, out, err)


DAEMON_DOWN = (
    1,
    "",
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?\n",
)


def create_kind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeCommands, choice: Kind
) -> str:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cluster_fixtures, "_run", fake)
    with pytest.raises(ClusterChoiceError) as e:
        KindCluster.create(choice, tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert not any("pull" in argv for argv in fake.ran), "an image was pulled"
    return message


def test_no_docker_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ClusterChoiceError) as e:
        KindCluster.create(Kind(), tmp_path)
    assert str(e.value).startswith("GITFERRY_TEST_CLUSTER=kind needs Docker")
    assert "\n" not in str(e.value)


def test_no_docker_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = create_kind(monkeypatch, tmp_path, FakeCommands(info=DAEMON_DOWN), Kind())
    assert "needs a running Docker daemon" in message
    assert "Is the docker daemon running?" in message


def test_no_node_image_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeCommands(ls=(0, "kindest/node:<none>\n", ""))
    message = create_kind(monkeypatch, tmp_path, fake, Kind())
    assert "needs a kindest/node image in the local Docker and there is none" in message
    assert "GITFERRY_KIND_NODE_IMAGE=<image>" in message
    assert not any(argv[0] == "bash" for argv in fake.ran), "kind was built for nothing"


def test_the_users_node_image_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeCommands(inspect=(1, "", "Error: No such image: kindest/node:v9\n"))
    message = create_kind(monkeypatch, tmp_path, fake, Kind("kindest/node:v9"))
    assert message.startswith("GITFERRY_KIND_NODE_IMAGE=kindest/node:v9 is not in the local")


def test_kind_does_not_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeCommands(
        ls=(0, "kindest/node:v1.37.0\n", ""),
        build=(1, "", "building kind\ngo: sigs.k8s.io/kind@v0.33.0: connection refused\n"),
    )
    message = create_kind(monkeypatch, tmp_path, fake, Kind())
    assert "from the Go module proxy failed (go: sigs.k8s.io/kind@v0.33.0: connection" in message


def test_kind_cannot_create_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeCommands(
        ls=(0, "kindest/node:v1.37.0\n", ""),
        build=(0, "/cache/kind-v0.33.0/kind\n", ""),
        create=(1, "", "Creating cluster\nERROR: failed to create cluster: no space\n"),
    )
    message = create_kind(monkeypatch, tmp_path, fake, Kind())
    assert "`kind create cluster --image kindest/node:v1.37.0` failed" in message
    assert "no space" in message
    create = next(argv for argv in fake.ran if argv[1:2] == ["create"])
    delete = next(argv for argv in fake.ran if argv[1:2] == ["delete"])
    assert delete[-1] == create[create.index("--name") + 1], "deletes the cluster it created"


def test_kind_creates_a_fresh_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeCommands(
        ls=(0, "kindest/node:v1.36.2\nkindest/node:v1.37.0\n", ""),
        build=(0, "/cache/kind-v0.33.0/kind\n", ""),
    )
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cluster_fixtures, "_run", fake)
    kind = KindCluster.create(Kind(), tmp_path)
    create = fake.ran[-1]
    assert create[:3] == ["/cache/kind-v0.33.0/kind", "create", "cluster"]
    assert create[create.index("--image") + 1] == "kindest/node:v1.37.0"
    assert create[create.index("--kubeconfig") + 1] == str(tmp_path / "kubeconfig")
    assert kind.name.startswith("gitferry-test-")
    kind.delete()
    assert fake.ran[-1] == ["/cache/kind-v0.33.0/kind", "delete", "cluster", "--name", kind.name]
