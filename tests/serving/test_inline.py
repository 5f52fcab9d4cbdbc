"""Which runtime calls the service runs on its event loop (``InlinePolicy``), and that answers,
errors and metrics are the same either way. Durations are fed to the policy, not measured."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

from recsys_fast import serving  # noqa: E402
from recsys_fast.errors import ParameterError  # noqa: E402
from recsys_fast.serving.http import INLINE_SPIKE, InlinePolicy, ServiceLimits, create_app  # noqa: E402

from .live import GatedRuntime, as_lists, check_answers, live_server, metric, users_of, wait_ready  # noqa: E402


def test_policy_promotes_after_measured_short_calls_and_demotes_on_slow_ones(knn):
    runtime = serving.load(knn[1])
    policy = InlinePolicy(max_s=0.001, max_users=8, warm_calls=4)
    policy.reset(1, runtime)
    assert policy.candidate(1, None) and policy.candidate(8, None)
    assert not policy.candidate(9, None) and not policy.candidate(1, {"1": [2]}) and not policy.candidate(0, None)
    for _ in range(3):
        policy.record(1, 0.0002)
        assert not policy.inline(1)  # not yet measured enough
    policy.record(1, 0.0002)
    assert policy.inline(1) and not policy.inline(2)  # another generation's runtime: never
    policy.record(2, 1.0)  # a call on an old runtime does not count
    assert policy.inline(1)
    for _ in range(8):  # a mean over the bound: back to workers
        policy.record(1, 0.003)
    assert not policy.inline(1)
    for _ in range(16):
        policy.record(1, 0.0001)
    assert policy.inline(1)
    policy.record(1, INLINE_SPIKE * 0.001 * 1.5)  # one very slow call: workers until measured again
    assert not policy.inline(1)
    policy.reset(2, runtime)
    assert not policy.inline(2) and not policy.inline(1)


def test_policy_never_inlines_other_runtimes_or_when_disabled(knn):
    gated = GatedRuntime(serving.load(knn[1]))
    policy = InlinePolicy(max_s=0.001, max_users=8, warm_calls=2)
    policy.reset(1, gated)
    for _ in range(10):
        policy.record(1, 0.0001)
    assert not policy.inline(1)
    off = InlinePolicy(max_s=0.0, max_users=8)
    assert not off.candidate(1, None)
    with pytest.raises(ParameterError, match="inline_max_s"):
        ServiceLimits(inline_max_s=1.0, timeout_s=0.5)
    with pytest.raises(ParameterError, match="inline_max_users"):
        ServiceLimits(inline_max_users=-1)


@pytest.mark.parametrize("inline", [True, False])
def test_inline_and_worker_calls_answer_alike(knn, inline):
    model, path = knn
    users = users_of(model, 30)
    limits = ServiceLimits(inline_max_s=10.0 if inline else 0.0, timeout_s=30)  # inline: whatever the machine
    with live_server(create_app(serving.load(path), limits=limits)) as client:
        wait_ready(client)
        for u in users:
            check_answers(client.post("/recommend", json={"users": [u], "k": 7}), as_lists(model.recommend([u], k=7)))
        r = client.post("/similar-items", json={"items": [int(model.item_map_.ids[0])], "k": 4})
        assert r.status_code == 200 and len(r.json()["similar"][0]["items"]) == 4
        big = users_of(model, 20)  # above inline_max_users: always a worker
        check_answers(client.post("/recommend", json={"users": big, "k": 3}), as_lists(model.recommend(big, k=3)))
        r = client.post("/recommend", json={"users": [999_999_999], "k": 3})
        assert r.status_code == 404 and r.json()["field"] == "users"
        r = client.post("/recommend", json={"users": [users[0]], "k": 1001})  # above max_k: pydantic's 422
        assert r.status_code == 422 and r.json()["field"] == "k"
        r = client.post("/recommend", content=b'{"users": [1], "k": 0}', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "k"  # validated by FastAPI's own endpoint
        text = client.get("/metrics").text
        loop = metric(text, "recsys_fast_runtime_calls_total", where="loop")
        worker = metric(text, "recsys_fast_runtime_calls_total", where="worker")
        assert (loop > 0) == inline and worker >= 1
        assert loop + worker == len(users) + 3  # + similar, big, the 404; the 422s never reach the runtime
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="200") == len(users) + 1
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="422") == 2
        assert metric(text, "recsys_fast_in_flight_requests") == 0
