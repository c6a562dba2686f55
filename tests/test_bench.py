"""`fercore bench` runs both loops on the same model and reports honest, comparable figures."""
from fercore.bench import run_benchmark


def test_quick_benchmark_reports_both_loops_and_the_csv_import():
    res = run_benchmark(epochs=1, batch_size=64, quick=True, csv=True)
    assert res["lab_images_per_s"] > 0 and res["textbook_images_per_s"] > 0
    assert res["speedup"] == round(res["lab_images_per_s"] / res["textbook_images_per_s"], 2)
    assert res["csv_rows"] == res["train_images"] + 2 * 70   # train + val + val again as PrivateTest
    assert res["csv_import_s"] > 0 and res["csv_cached_load_s"] < res["csv_import_s"]
    assert res["device"] == "cpu"
