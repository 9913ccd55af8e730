import pytest

from trainfail import results_tree


def test_a_tree_keeps_its_preset_and_refuses_another(tmp_path):
    results = tmp_path / "results"
    results_tree.claim(results, "quick")
    assert (results / "preset").read_text() == "quick\n"
    results_tree.claim(results, "quick")  # the same preset again: fine
    with pytest.raises(results_tree.PresetMismatch) as refused:
        results_tree.claim(results, "smoke")
    message = str(refused.value)
    assert "'quick'" in message and "'smoke'" in message and "make clean" in message and "mv " in message
    assert (results / "preset").read_text() == "quick\n"  # the refusal changes nothing
