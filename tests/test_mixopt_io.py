"""olmix-layout ratios/metrics CSVs: round trip, name keying, and bad inputs that must be named."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.errors import DataError
from mixlab.mixopt import io


def _write(path, text):
    path.write_text(text)
    return path


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), size=5)
    M = rng.normal(size=(5, 2))
    runs = [f"run-{i}" for i in range(5)]
    io.write_ratios(tmp_path / "ratios.csv", runs, runs, ["web", "code", "math"], W)
    io.write_metrics(tmp_path / "metrics.csv", runs, runs, ["loss", "acc"], M)
    data = io.read_swarm(tmp_path / "ratios.csv", tmp_path / "metrics.csv")
    assert data.domains == ["web", "code", "math"] and data.metric_names == ["loss", "acc"]
    np.testing.assert_array_equal(data.weights, W)  # repr() floats read back bit-exact
    np.testing.assert_array_equal(data.metrics, M)
    assert (tmp_path / "ratios.csv").read_text().splitlines()[0] == "run,name,index,web,code,math"


def test_rows_matched_by_run_and_columns_by_name(tmp_path):
    r = _write(tmp_path / "r.csv", "run,name,index,a,b\nx,x,0,0.25,0.75\ny,y,1,0.5,0.5\n")
    m = _write(tmp_path / "m.csv", "index,loss,run,name\n1,2.0,y,y\n0,3.0,x,x\n")
    data = io.read_swarm(r, m)
    assert data.runs == ["x", "y"]
    np.testing.assert_array_equal(data.metrics[:, 0], [3.0, 2.0])


def test_unmatched_rows_name_both_files(tmp_path):
    r = _write(tmp_path / "r.csv", "run,name,index,a,b\nx,x,0,0.25,0.75\ny,y,1,0.5,0.5\n")
    m = _write(tmp_path / "m.csv", "run,name,index,loss\nx,x,0,3.0\nz,z,1,2.0\n")
    with pytest.raises(DataError) as e:
        io.read_swarm(r, m)
    msg = str(e.value)
    assert "['y']" in msg and "['z']" in msg and "r.csv" in msg and "m.csv" in msg and "line 3" in msg


def test_weights_not_summing_to_one(tmp_path):
    r = _write(tmp_path / "r.csv", "run,name,index,a,b\nx,x,0,0.25,0.75\ny,y,1,0.5,0.6\n")
    with pytest.raises(DataError, match=r"r\.csv:3: weights of run 'y' sum to 1\.1"):
        io.read_ratios(r)
    io.read_ratios(r, tolerance=0.2)  # a looser tolerance accepts it


def test_domain_missing_from_priors(tmp_path):
    r = _write(tmp_path / "r.csv", "run,name,index,web,code\nx,x,0,0.25,0.75\n")
    with pytest.raises(DataError, match=r"r\.csv:1: domain column\(s\) \['code'\] are not in the priors"):
        io.read_ratios(r, priors={"web": 0.5, "math": 0.5})


def test_non_numeric_cell_names_column_and_line(tmp_path):
    m = _write(tmp_path / "m.csv", "run,name,index,loss\nx,x,0,3.0\ny,y,1,oops\n")
    with pytest.raises(DataError, match=r"m\.csv:3: column `loss`: 'oops' is not a number"):
        io.read_metrics(m)


@pytest.mark.parametrize("text, pattern", [
    ("name,index,a\nx,0,1\n", "lacks column"),
    ("run,name,index,a,a\nx,x,0,0.5,0.5\n", "duplicate column"),
    ("run,name,index,a\nx,x,0,1\nx,x,1,1\n", "appears twice"),
    ("run,name,index,a,b\nx,x,0,-0.5,1.5\n", "negative weight"),
    ("run,name,index,a,b\nx,x,0,0.5\n", "row has 4 cells"),
])
def test_bad_tables(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern):
        io.read_ratios(_write(tmp_path / "r.csv", text))
