import re
import time

import pytest

from tests.dagster_dev import DagsterDev


@pytest.mark.slow
def test_dagster_dev_loads_the_code_location_without_warnings(home, tmp_path):
    with DagsterDev(home, tmp_path / "dagster_dev.log") as dev:
        entries = dev.wait_loaded()
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
            ("lineage_forge", "RepositoryLocation")]
        assets = dev.graphql("{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
        assert {"raw_docs"} <= {"/".join(a["assetKey"]["path"]) for a in assets}
        time.sleep(3)  # let the daemon start its loops and log anything it has to say
        log = dev.log_text()
    assert "Started Dagster code server" in log or "Serving dagster-webserver" in log
    # Dagster's own notice that `dagster dev` is superseded by `dg dev` is about the command, not us
    warnings = [line for line in log.splitlines()
                if re.search(r"warn", line, re.I) and "Function `dev_command` is superseded" not in line]
    assert warnings == []
