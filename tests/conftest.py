"""Session-wide test environment: real data from the shared read-only copy, never a download, and one
decoded-array cache for the whole run (and later runs) so each dataset is decoded only once. Set
DISTILSHOT_CACHE yourself to share your own cache instead; tests that need an empty cache use a tmp_path.

Markers are applied here, by module and test name, so test files need no edits: `slow` (trains or exports
a model, or runs for more than a few seconds), `browser` (Playwright), `gpu` (skipped, with its reason, on
a machine without CUDA), `gpu_offline` (the GPU code paths against strict fakes of CUDA, TensorRT and
ONNX Runtime's GPU providers; they run everywhere).
`make test-fast` runs `pytest -m "not slow and not browser"`."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("DISTILSHOT_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("DISTILSHOT_CACHE", str(REPO / ".pytest_cache" / "distilshot-cache"))
os.environ["DISTILSHOT_OFFLINE"] = "1"

from device_fixtures import cpu_only, no_cuda_reason  # noqa: E402, F401 (fixtures for every module)
from postgres_fixture import postgres_server, postgres_url, store_backend  # noqa: E402, F401
from trained_fixture import trained_run  # noqa: E402, F401


@pytest.fixture(scope="module")
def omniglot_train():
    """Omniglot's training split (decoded once per run into the cache above), loaded once per module."""
    from distilshot.train.data.registry import load_split

    return load_split("omniglot", "train")


# Every test of these modules trains or exports a model (or shares a module fixture that does).
SLOW_MODULES = {
    "test_deploy_formats",
    "test_distributed",
    "test_generator_adapt_bundles",
    "test_http_schema",
    "test_method_bml",
    "test_method_grdd",
    "test_method_refilled",
    "test_method_skd",
    "test_pipeline_e2e",
    "test_serve_crash",
    "test_serve_replicas",
    "test_training",
    "test_web_app",
}
# Single slow tests in otherwise fast modules (a test name matches all its parametrisations).
SLOW_TESTS = {
    "test_adapt": {"test_a_task_student_fits_its_support_set"},
    "test_export_parity": {"test_a_wrong_head_or_another_model_is_not_faithful"},
    "test_generator": {"test_training_lowers_the_loss_on_real_features"},
    "test_serve_concurrency": {
        "test_sixteen_clients_fifty_mixed_requests_each",
        "test_processes_write_one_store_file_at_once",
    },
    "test_recipes": {
        "test_stages_run_in_order_with_teacher_and_init",
        "test_a_given_teacher_replaces_the_teaching_stage",
    },
    "test_train_cli": {"test_ctrl_c_says_how_to_resume_and_a_running_run_refuses_a_second_process"},
    "test_training_speed": {
        "test_channels_last_gives_the_nchw_loss_and_gradients",
        "test_the_trainer_trains_in_its_layout_and_saves_contiguous_checkpoints",
    },
    "test_within_alphabet": {"test_a_briefly_trained_model_beats_chance_within_alphabet"},
}
# Tests asking for these fixtures (directly or through others) are slow: the fixture trains or exports.
SLOW_FIXTURES = {"trained_run"}
SLOW_MODULE_FIXTURES = {"test_calibration": {"exported"}}
BROWSER_MODULES = {"test_demo_browser", "test_web_app"}
GPU_OFFLINE_MODULES = {"test_engines_gpu_offline"}
GPU_TESTS: dict[str, set[str]] = {
    "test_engines_gpu_offline": {"test_the_cuda_backend_runs_the_graph_on_a_real_gpu"},
}
# Known long tests get a limit of their own (seconds) instead of the 600 s default; the first test to
# ask for the session's trained model pays for its training (see trained_fixture.py).
TIMEOUTS = {
    "test_deploy_formats": 900,
    "test_pipeline_e2e": 900,
    "test_serve_crash": 420,
    "test_serve_concurrency": 420,
    "test_serve_replicas": 420,
    "test_web_app": 900,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = no_cuda_reason()
    for item in items:
        module = item.path.stem
        name = getattr(item, "originalname", item.name)
        fixtures = set(getattr(item, "fixturenames", ()))
        slow_fixtures = SLOW_FIXTURES | SLOW_MODULE_FIXTURES.get(module, set())
        if module in SLOW_MODULES or name in SLOW_TESTS.get(module, ()) or fixtures & slow_fixtures:
            item.add_marker(pytest.mark.slow)
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        if name in GPU_TESTS.get(module, ()):
            item.add_marker(pytest.mark.gpu)
        elif module in GPU_OFFLINE_MODULES:
            item.add_marker(pytest.mark.gpu_offline)
        if item.get_closest_marker("gpu") and skip_gpu:
            item.add_marker(pytest.mark.skip(reason=skip_gpu))
        if module in TIMEOUTS and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUTS[module]))
