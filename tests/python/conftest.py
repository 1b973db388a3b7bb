import pytest

from cluster import Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cairn") / "data").start()
    yield c
    c.stop()


@pytest.fixture
def ec2(cluster):
    return cluster.client("ec2")
