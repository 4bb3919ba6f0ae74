"""Swarm tables (olmix, olmix run_id and RegMix layouts): round trip, name keying, renormalization of
rounded rows, and bad inputs that must be named (file, line, column) with nothing written."""

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
    with pytest.raises(DataError, match=r"r\.csv:3: weights of run 'y' sum to 1\.1, not 1 \(tolerance 0\.01\)"):
        io.read_ratios(r)
    t = io.read_ratios(r, tolerance=0.2)  # a looser tolerance accepts it, renormalized
    np.testing.assert_allclose(t.values[1], [0.5 / 1.1, 0.6 / 1.1])
    assert t.renormalized.rows == 1 and t.renormalized.worst == pytest.approx(0.1)


def test_rounded_rows_are_renormalized_and_counted(tmp_path):
    r = _write(tmp_path / "r.csv", "run,name,index,a,b,c\n"
               "x,x,0,0.333,0.333,0.333\n"   # 0.999
               "y,y,1,0.5,0.25,0.25\n"       # exact
               "z,z,2,0.334,0.334,0.334\n")  # 1.002: the worst
    t = io.read_ratios(r)
    np.testing.assert_allclose(t.values.sum(axis=1), 1.0, atol=1e-15)
    np.testing.assert_array_equal(t.values[1], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(t.values[0], [1 / 3] * 3)
    n = t.renormalized
    assert (n.rows, n.of, n.worst_run, n.worst_line) == (2, 3, "z", 4)
    assert n.worst == pytest.approx(0.002) and n.worst_sum == pytest.approx(1.002)
    assert "renormalized 2 of 3 rows" in n.message() and "run 'z' (line 4) sums to 1.002" in n.message()
    exact = _write(tmp_path / "e.csv", "run,name,index,a,b\nx,x,0,0.25,0.75\n")
    assert io.read_ratios(exact).renormalized is None


REGMIX_DOMAINS = ["arxiv", "freelaw", "pile_cc"]


def _regmix(tmp_path):
    r = _write(tmp_path / "train_mixture_1m.csv",
               "index," + ",".join(f"train_the_pile_{d}" for d in REGMIX_DOMAINS) + "\n"
               "1,0.0,0.213,0.787\n2,0.679,0.044,0.276\n3,0.5,0.25,0.25\n")
    m = _write(tmp_path / "train_pile_loss_1m.csv",
               "index,metric/the_pile_arxiv_val_loss,metric/the_pile_pile_cc_val_loss\n"
               "3,4.5,5.0\n1.0,7.03,5.17\n2,3.73,5.51\n")  # other row order; 1.0 is index 1
    return r, m


def test_regmix_layout_keyed_by_index_and_domain_name(tmp_path):
    r, m = _regmix(tmp_path)
    data = io.read_swarm(r, m)
    assert data.domains == ["the_pile_arxiv", "the_pile_freelaw", "the_pile_pile_cc"]
    assert data.metric_names == ["the_pile_arxiv_val_loss", "the_pile_pile_cc_val_loss"]
    assert data.runs == ["1", "2", "3"]
    np.testing.assert_array_equal(data.metrics[:, 0], [7.03, 3.73, 4.5])
    assert data.renormalized.rows == 1 and data.renormalized.worst_run == "2"  # 0.999
    np.testing.assert_allclose(data.weights[1], np.array([0.679, 0.044, 0.276]) / 0.999)


def test_olmix_run_id_layout(tmp_path):
    r = _write(tmp_path / "r.csv", "run_id,name,web,code\na,A,0.4,0.6\nb,B,1.0,0.0\n")
    m = _write(tmp_path / "m.csv", "run_id,acc\nb,0.5\na,0.25\n")
    data = io.read_swarm(r, m)
    assert data.runs == ["a", "b"] and data.names == ["A", "B"] and data.domains == ["web", "code"]
    np.testing.assert_array_equal(data.metrics[:, 0], [0.25, 0.5])


def test_mixed_keys_say_so(tmp_path):
    r, _ = _regmix(tmp_path)
    m = _write(tmp_path / "m.csv", "run,name,index,loss\nr1,r1,0,3.0\n")
    with pytest.raises(DataError, match=r"matched by .*train_mixture_1m\.csv by `index`, .*m\.csv by `run`"):
        io.read_swarm(r, m)


def test_domain_missing_from_priors(tmp_path):
    r = _write(tmp_path / "r.csv", "run,name,index,web,code\nx,x,0,0.25,0.75\n")
    with pytest.raises(DataError, match=r"r\.csv:1: domain column\(s\) \['code'\] are not in the priors"):
        io.read_ratios(r, priors={"web": 0.5, "math": 0.5})


def test_non_numeric_cell_names_column_and_line(tmp_path):
    m = _write(tmp_path / "m.csv", "run,name,index,loss\nx,x,0,3.0\ny,y,1,oops\n")
    with pytest.raises(DataError, match=r"m\.csv:3: column 4 `loss`: 'oops' is not a number \(run 'y'\)"):
        io.read_metrics(m)


@pytest.mark.parametrize("name, text, pattern", [
    ("ratios", "index,train_a,train_b\n1,0.5,0.5\n2,0.7,0.32\n",       # off by 0.02 > 0.01
     r"r\.csv:3: weights of index '2' sum to 1\.02, not 1 \(tolerance 0\.01\)"),
    ("ratios", "index,train_a,train_b\n1,0.5,0.5\n2,1.01,-0.01\n",
     r"r\.csv:3: column 3 `train_b`: negative weight -0\.01 \(index '2'\)"),
    ("ratios", "run,name,index,pile_cc,web,Pile-CC\nx,x,0,0.2,0.6,0.2\n",
     r"r\.csv:1: column 6 `Pile-CC` and column 4 `pile_cc` are a domain spelled two ways"),
    ("ratios", "index,train_the_pile_arxiv,the_pile_arxiv,x\n1,0.2,0.3,0.5\n",
     r"r\.csv:1: column 3 `the_pile_arxiv` and column 2 `train_the_pile_arxiv` are a domain spelled two ways"),
    ("metrics", "index,metric/loss,acc\n1,3.0,0.5\n2,nan,0.4\n",
     r"m\.csv:3: column 2 `metric/loss`: 'nan' is not finite \(index '2'\)"),
    ("metrics", "index,metric/loss,loss\n1,3.0,3.0\n", r"m\.csv:1: column 3 `loss` and column 2 `metric/loss` are the same metric"),
])
def test_bad_input_names_file_line_column_and_writes_nothing(tmp_path, name, text, pattern):
    from mixlab.mixopt.fit import fit

    good_r = "index,train_a,train_b\n1,0.5,0.5\n2,0.25,0.75\n3,1.0,0.0\n"
    good_m = "index,metric/loss\n1,3.0\n2,2.5\n3,2.0\n"
    r = _write(tmp_path / "r.csv", text if name == "ratios" else good_r)
    m = _write(tmp_path / "m.csv", text if name == "metrics" else good_m)
    with pytest.raises(DataError, match=pattern):
        fit(r, m, "linear", tmp_path / "fit", folds=2)
    assert not (tmp_path / "fit").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "r.csv"]


@pytest.mark.parametrize("text, pattern", [
    ("name,a\nx,1\n", "header has none of `run`, `run_id`, `index`"),
    ("index,a\nfirst,1\n", r"column 1 `index`: 'first' is not an integer"),
    ("index,a\n1,1\n1.0,1\n", r"`index` '1' appears twice \(also on line 2\)"),
    ("run,name,index,a,a\nx,x,0,0.5,0.5\n", "duplicate column"),
    ("run,name,index,a\nx,x,0,1\nx,x,1,1\n", "appears twice"),
    ("run,name,index,a,b\nx,x,0,-0.5,1.5\n", "negative weight"),
    ("run,name,index,a,b\nx,x,0,0.5\n", "row has 4 cells"),
])
def test_bad_tables(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern):
        io.read_ratios(_write(tmp_path / "r.csv", text))
