"""The command line end to end, in-process through ``main(argv)``."""

import pandas as pd
import pytest

from recsys_fast.cli import main


def test_doctor_reports_threading_layer(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "numba threading layer in use" in out and "numba" in out


def test_doctor_in_a_fresh_process():
    """In a new process no kernel has run yet: doctor must launch a parallel one itself."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "recsys_fast.cli", "doctor"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    layer = [line for line in done.stdout.splitlines() if line.startswith("numba threading layer in use")]
    assert layer and layer[0].split()[-1] in {"omp", "tbb", "workqueue"}


def test_train_then_recommend_csv(events_csv, tmp_path, capsys):
    bundle = tmp_path / "pop"
    args = [str(events_csv), "--user-col", "uid", "--item-col", "iid", "--weight-col", "stars"]
    assert main(["train", *args, "--model", "popularity", "--out", str(bundle)]) == 0
    assert (bundle / "manifest.json").is_file()
    out_csv = tmp_path / "recs.csv"
    assert main(["recommend", str(bundle), "--users", "1,2", "--k", "3", "--out", str(out_csv)]) == 0
    recs = pd.read_csv(out_csv)
    assert list(recs.columns) == ["user", "rank", "item", "score"]
    assert recs.groupby("user").size().tolist() == [3, 3]


def test_train_rejects_unknown_parameter(events_csv, tmp_path, capsys):
    assert main(["train", str(events_csv), "--user-col", "uid", "--item-col", "iid", "--model", "popularity",
                 "--param", "bogus=1", "--out", str(tmp_path / "m")]) == 2
    assert "--param: popularity has no parameter(s) ['bogus']" in capsys.readouterr().err


def test_missing_column_is_a_clear_error(events_csv, tmp_path, capsys):
    code = main(["train", str(events_csv), "--model", "popularity", "--out", str(tmp_path / "m")])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing column" in err and "events.csv" in err


def test_unknown_user_in_recommend(events_csv, tmp_path, capsys):
    bundle = tmp_path / "pop"
    main(["train", str(events_csv), "--user-col", "uid", "--item-col", "iid", "--model", "popularity",
          "--out", str(bundle)])
    assert main(["recommend", str(bundle), "--users", "999"]) == 2
    assert "999" in capsys.readouterr().err


def test_demo_runs_on_shipped_data(ml_latest_small_path, capsys):
    assert main(["demo", "--users", "1"]) == 0
    out = capsys.readouterr().out
    for model in ("popularity", "item_knn", "user_knn"):
        assert f"\n{model} " in out
    assert "ndcg@10" in out and "top-10 for 1 users" in out


def test_evaluate_command_writes_json(ml_100k_path, tmp_path, capsys):
    import json

    out = tmp_path / "res.json"
    assert main(["evaluate", str(ml_100k_path), "--models", "popularity,item_knn", "--param", "item_knn.k=50",
                 "--k", "10", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"popularity", "item_knn"}
    assert res["item_knn"]["means"]["ndcg@10"] > res["popularity"]["means"]["ndcg@10"]


@pytest.mark.parametrize("kind", ["sasrec", "bprmf", "ease"])
def test_train_neural_model_from_cli(kind, events_csv, tmp_path, capsys):
    pytest.importorskip("torch")
    bundle = tmp_path / kind
    params = [] if kind == "ease" else ["--param", "epochs=2", "--param", "embedding_size=8",
                                        "--param", "validation_fraction=0"]
    assert main(["train", str(events_csv), "--user-col", "uid", "--item-col", "iid", "--timestamp-col", "ts",
                 "--model", kind, *params, "--out", str(bundle)]) == 0
    assert main(["recommend", str(bundle), "--users", "1", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= 5  # header + 4 ranked rows


def test_bench_prints_the_summary_table_of_a_scaling_json(tmp_path, capsys):
    import json as _json

    from recsys_fast.cli import main

    results = {"threads": 2, "repeats": 3, "load_before": [1, 1, 1], "load_after": [2, 2, 2], "sizes": [
        {"size": "S", "jobs": {"knn_scoring": {"unit": "user", "throughput": {"ours": 5e4, "implicit": 5e3},
                                               "seconds_per_unit": {"ours": 2e-5, "implicit": 2e-4},
                                               "ours_vs": {"implicit": 10.0}}}},
        {"size": "XL", "skipped": "XL needs about 9.0 GiB"}]}
    path = tmp_path / "scaling.json"
    path.write_text(_json.dumps(results))
    assert main(["bench", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "knn_scoring" in out and "implicit 10.00x" in out and "XL   skipped: XL needs about 9.0 GiB" in out
    assert main(["bench", "--json", str(tmp_path / "missing.json")]) == 2
    assert "benches/scaling.py" in capsys.readouterr().err
