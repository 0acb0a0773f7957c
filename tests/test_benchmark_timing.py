"""The benchmarks' memory figure: a process's own peak, not one inherited from the process that started it."""

import subprocess
import sys

import numpy as np

from fourm_ros.benchmarks.timing import peak_rss_gib

CHILD = "from fourm_ros.benchmarks.timing import peak_rss_gib; print(peak_rss_gib())"


def test_a_child_of_a_large_process_reports_its_own_peak():
    held = np.ones(2**30 // 8)  # 1 GiB, touched
    assert peak_rss_gib() >= 1.0
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    own = float(done.stdout)
    # getrusage's ru_maxrss, which Linux carries across fork and exec, said >= 1 GiB here.
    assert own < 0.9, f"the child reported {own:.2f} GiB, its parent's peak"
    del held
