"""`fercore bench` runs the four loops on the same model and reports honest, comparable figures."""
from pytest import approx

from fercore.bench import precision_parity, run_benchmark


def test_quick_benchmark_reports_the_four_loops_their_ratios_and_the_csv_import():
    res = run_benchmark(epochs=1, batch_size=64, quick=True, csv=True)
    for loop in ("lab", "plain", "textbook", "textbook_amp_cl"):
        assert res[f"{loop}_images_per_s"] > 0, loop
    # (the ratios are of the unrounded rates)
    assert res["lab_vs_plain"] == approx(res["lab_images_per_s"] / res["plain_images_per_s"], abs=0.011)
    assert res["lab_vs_textbook"] == approx(res["lab_images_per_s"] / res["textbook_images_per_s"], abs=0.011)
    assert res["csv_rows"] == res["train_images"] + 2 * 70   # train + val + val again as PrivateTest
    assert res["csv_import_s"] > 0 and res["csv_cached_load_s"] < res["csv_import_s"]
    assert res["device"].startswith("cpu (") and res["preset"] == "cpu-starter"
    # the reference: the plain loop in the lab's precision, both layouts, one epoch before the lab's and one after each
    ref = res["plain_same_precision_images_per_s"]
    assert ref > 0 and res["plain_same_precision_layout"] in ("nchw", "channels_last")
    assert res["lab_best_vs_plain_best_same_precision"] == approx(res["lab_images_per_s"] / ref, abs=0.002)
    rates = res["epoch_rates"]
    around = rates[f"plain_{res['plain_same_precision_layout']}"]
    assert res["lab_vs_plain_same_precision"] == approx(rates["lab"][0] / (sum(around) / 2), abs=0.01)
    assert len(res["epoch_rates"]["plain_nchw"]) == len(res["epoch_rates"]["lab"]) + 1 == 2
    assert res["lab_precision"] in res["device"] and len(res["load_1min"]) == 2


def test_the_benchmark_can_compare_in_fp32_on_a_bf16_cpu():
    res = run_benchmark(epochs=1, batch_size=64, quick=True, csv=False, precision="fp32")
    assert res["lab_precision"] == "fp32" and res["device"].startswith("cpu (fp32")


def test_precision_parity_trains_the_same_recipe_in_fp32_and_in_bf16():
    res = precision_parity(epochs=1, quick=True, fraction=0.5)
    assert res["fp32"]["device"].startswith("cpu (fp32") and res["bf16"]["device"].startswith("cpu (bf16")
    assert res["fp32"]["last_val_loss"] != res["bf16"]["last_val_loss"], "bf16 arithmetic really ran"
    assert res["bf16_minus_fp32_points"] == round(100 * (res["bf16"]["val_acc"] - res["fp32"]["val_acc"]), 2)
    assert res["preset"] == "cpu-starter" and isinstance(res["bf16_native"], bool)
