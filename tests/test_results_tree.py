import pytest

from trainfail.pipeline import results_tree


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


def test_checking_a_tree_writes_nothing(tmp_path):
    """What Snakemake does when it reads the workflow (a dry run too): refuse, or nothing."""
    results = tmp_path / "results"
    results_tree.check(results, "quick")
    assert not results.exists()  # claimed only when a real run starts (the workflow's onstart)
    results_tree.claim(results, "smoke")
    results_tree.check(results, "smoke")
    with pytest.raises(results_tree.PresetMismatch):
        results_tree.check(results, "quick")
    assert (results / "preset").read_text() == "smoke\n"
