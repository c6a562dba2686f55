"""`fercore bench` runs the four loops on the same model and reports honest, comparable figures."""
from fercore.bench import precision_parity, run_benchmark


def test_quick_benchmark_reports_the_four_loops_their_ratios_and_the_csv_import():
    res = run_benchmark(epochs=1, batch_size=64, quick=True, csv=True)
    for loop in ("lab", "plain", "textbook", "textbook_amp_cl"):
        assert res[f"{loop}_images_per_s"] > 0, loop
    assert res["lab_vs_plain"] == round(res["lab_images_per_s"] / res["plain_images_per_s"], 2)
    assert res["lab_vs_textbook"] == round(res["lab_images_per_s"] / res["textbook_images_per_s"], 2)
    assert res["csv_rows"] == res["train_images"] + 2 * 70   # train + val + val again as PrivateTest
    assert res["csv_import_s"] > 0 and res["csv_cached_load_s"] < res["csv_import_s"]
    assert res["device"].startswith("cpu (") and res["preset"] == "cpu-starter"


def test_precision_parity_trains_the_same_recipe_in_fp32_and_in_bf16():
    res = precision_parity(epochs=1, quick=True, fraction=0.5)
    assert res["fp32"]["device"].startswith("cpu (fp32") and res["bf16"]["device"].startswith("cpu (bf16")
    assert res["fp32"]["last_val_loss"] != res["bf16"]["last_val_loss"], "bf16 arithmetic really ran"
    assert res["bf16_minus_fp32_points"] == round(100 * (res["bf16"]["val_acc"] - res["fp32"]["val_acc"]), 2)
    assert res["preset"] == "cpu-starter" and isinstance(res["bf16_native"], bool)
