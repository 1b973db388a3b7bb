import pytest

from cluster import Cluster
from util import AZ_A, AZ_B, E2E_ACCOUNT, E2E_ARGS, E2E_REGION


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cairn") / "data", E2E_ARGS).start()
    assert c.env["AWS_REGION"] == E2E_REGION and c.zones == [AZ_A, AZ_B], c.env
    assert c.env["CAIRN_ACCOUNT_ID"] == E2E_ACCOUNT
    yield c
    c.stop()


@pytest.fixture
def ec2(cluster):
    return cluster.client("ec2")
