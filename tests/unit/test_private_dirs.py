"""The worker refuses a data directory others may write (D7): its snapshot is read from there at start."""

import os
import subprocess
import sys
from pathlib import Path


def test_the_worker_refuses_to_start_on_a_world_writable_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    env = {**os.environ, "CASELINK_CONFIG": "/nonexistent", "CASELINK_WORKER__DATA_DIR": str(data),
           "CASELINK_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # never reached
    done = subprocess.run([sys.executable, "-m", "caselink.cli", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "world-writable" in done.stderr
    data.chmod(0o755)  # merely loose: made private, then the start goes on (to the unreachable broker)
    from caselink.core.private import ensure_private_dir

    ensure_private_dir(data)
    assert (data.stat().st_mode & 0o777) == 0o700
